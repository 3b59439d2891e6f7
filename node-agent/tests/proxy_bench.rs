//! Benchmark of the rule engine alone (no API server): in a throwaway network
//! namespace, the time to program N ClusterIP Services × 2 endpoints in one
//! full sync, linear dispatch (kube-proxy's shape) against /24-split dispatch,
//! and afterwards: adding one Service (a partial sync: its restore, its
//! model-and-plan share and how many service ports it planned, what planning
//! everything again would cost, building the model alone, the canary check,
//! the listing of nat NC-SERVICES), a periodic full resync, and an agent restart
//! (rules read back, nothing rewritten). "walk" is the number of dispatch rules
//! a first packet to the worst-placed Service passes. Prints figures, asserts
//! nothing about time.
//!
//! ```sh
//! cargo test -p node-agent --release --test proxy_bench -- --ignored --nocapture
//! NC_BENCH_SIZES=1000,5000 NC_BENCH_BACKEND=legacy cargo test ... # iptables-legacy-*
//! NC_BENCH_DISPATCH=24 cargo test ...   # only the /24 split (`linear` for the other)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_agent::proxy::iptables::Iptables;
use node_agent::proxy::model::SERVICE_NAME_LABEL;
use node_agent::proxy::plan::plan;
use node_agent::proxy::{
    render_restore_input, Dispatch, IptablesCommand, Model, NodeInfo, Proxier, ProxyConfig,
    ProxyInputs, SyncMode, Table,
};

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("nc-proxytest-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} (needs root)");
        Self(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// ClusterIPs spread at random over 10.96.0.0/16, as the allocator does (fixed seed).
fn cluster_ips(n: usize) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let (c, d) = ((state >> 8) as u8, (state >> 16) as u8);
        if d == 0 || d == 255 || !seen.insert((c, d)) {
            continue;
        }
        out.push(format!("10.96.{c}.{d}"));
    }
    out
}

fn objects(i: usize, ip: &str) -> (Service, EndpointSlice) {
    let name = format!("svc-{i}");
    let svc = Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Two endpoints on other nodes, unique per Service: 10.128.x.y and 10.192.x.y.
    let endpoint = |base: usize| Endpoint {
        addresses: vec![format!(
            "10.{}.{}.{}",
            base + i / 65536,
            (i / 256) % 256,
            i % 256
        )],
        node_name: Some(format!("node-{base}")),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("{name}-1")),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), name)])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![endpoint(128), endpoint(192)]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    };
    (svc, slice)
}

fn backend(ns: &Netns) -> IptablesCommand {
    let cmd = IptablesCommand::in_netns(ns.path());
    match std::env::var("NC_BENCH_BACKEND").as_deref() {
        Ok("legacy") => cmd.with_binaries(
            "iptables-legacy-restore",
            "iptables-legacy-save",
            "iptables-legacy",
        ),
        _ => cmd,
    }
}

#[test]
#[ignore = "benchmark: minutes of iptables work; run with --ignored --nocapture"]
fn rule_engine_full_and_partial_sync() {
    let sizes: Vec<usize> = std::env::var("NC_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let node = NodeInfo {
        name: "node-0".into(),
        ips: vec!["192.168.1.10".parse().unwrap()],
        zone: None,
    };
    let version = backend(&Netns::new("version"))
        .version()
        .unwrap_or_default();
    println!(
        "backend: {version}; cores: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:>6} {:>6} {:>6} {:>6} {:>8} {:>8} | {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} | {:>8} {:>8} | {:>5}",
        "svcs",
        "disp",
        "rules",
        "chains",
        "MB",
        "full s",
        "add1 s",
        "bytes",
        "restore",
        "plan s",
        "planned",
        "model s",
        "replan s",
        "canary",
        "list",
        "resync s",
        "restart",
        "walk"
    );
    for &n in &sizes {
        let ips = cluster_ips(n + 1);
        let only = std::env::var("NC_BENCH_DISPATCH").ok();
        for dispatch in [Dispatch::Linear, Dispatch::ByPrefix24] {
            let name = if dispatch == Dispatch::Linear {
                "linear"
            } else {
                "24"
            };
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let (mut services, mut slices): (Vec<_>, Vec<_>) = ips[..n]
                .iter()
                .enumerate()
                .map(|(i, ip)| objects(i, ip))
                .unzip();
            let ns = Netns::new(&format!("bench-{n}-{dispatch:?}"));
            let cfg = ProxyConfig {
                dispatch,
                cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
                ..ProxyConfig::default()
            };
            let mut proxier = Proxier::new(backend(&ns));
            // One set of inputs throughout, as the proxy loop keeps it.
            let mut watched = ProxyInputs::from_objects(&services, &slices);
            let started = Instant::now();
            let full = proxier
                .sync(&mut watched, &node, &cfg, true)
                .expect("full sync");
            let full_secs = started.elapsed().as_secs_f64();

            // One more Service: a partial sync.
            let (svc, slice) = objects(n, &ips[n]);
            let started = Instant::now();
            watched.apply_service(&svc);
            watched.apply_slice(&slice);
            services.push(svc);
            slices.push(slice);
            let partial = proxier
                .sync(&mut watched, &node, &cfg, false)
                .expect("partial sync");
            let partial_secs = started.elapsed().as_secs_f64();

            // What the in-process part costs when everything is planned again:
            // model, plan, render.
            let started = Instant::now();
            let model = Model::build(&services, &slices);
            let planned = plan(&model, &node, &cfg);
            let _ = render_restore_input(
                &planned.rules,
                proxier.applied().expect("applied"),
                SyncMode::Partial,
            );
            let plan_secs = started.elapsed().as_secs_f64();

            let started = Instant::now();
            let _ = Model::build(&services, &slices);
            let model_secs = started.elapsed().as_secs_f64();

            let started = Instant::now();
            assert!(proxier.iptables_mut().canary_present().unwrap());
            let canary_secs = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let listed = proxier
                .iptables_mut()
                .chain_rules(Table::Nat, "NC-SERVICES")
                .unwrap()
                .unwrap_or_default();
            let list_secs = started.elapsed().as_secs_f64();
            assert_eq!(
                Some(&listed),
                proxier.applied().unwrap().nat.chains.get("NC-SERVICES")
            );

            // The periodic full sync: every chain rewritten, nothing read back.
            let started = Instant::now();
            proxier
                .sync(&mut watched, &node, &cfg, true)
                .expect("full resync");
            let resync_secs = started.elapsed().as_secs_f64();

            // An agent restart: the rules are read back, nothing needs writing.
            let mut restarted = Proxier::new(backend(&ns));
            let started = Instant::now();
            let report = restarted
                .sync(
                    &mut ProxyInputs::from_objects(&services, &slices),
                    &node,
                    &cfg,
                    false,
                )
                .expect("restart sync");
            let restart_secs = started.elapsed().as_secs_f64();
            assert_eq!(report.restore_bytes, 0, "rules read back equal");

            // Rules a first packet to the last-listed Service walks in dispatch.
            let rules = proxier.applied().expect("applied");
            let services_chain = &rules.nat.chains["NC-SERVICES"];
            let biggest_prefix = rules
                .nat
                .chains
                .iter()
                .filter(|(k, _)| k.starts_with("NC-SVCS-"))
                .map(|(_, v)| v.len())
                .max()
                .unwrap_or(0);
            let walk = services_chain.len() - 1 + biggest_prefix;
            println!(
                "{:>6} {:>6} {:>6} {:>6} {:>8.1} {:>8.2} | {:>7.3} {:>6} {:>7.3} {:>7.3} {:>7} {:>7.3} {:>7.3} {:>6.3} {:>6.3} | {:>8.2} {:>8.2} | {:>5}",
                n,
                if dispatch == Dispatch::Linear { "linear" } else { "/24" },
                full.rules,
                full.chains,
                full.restore_bytes as f64 / 1e6,
                full_secs,
                partial_secs,
                partial.restore_bytes,
                partial.restore_duration.as_secs_f64(),
                partial.plan_duration.as_secs_f64(),
                partial.ports_planned,
                model_secs,
                plan_secs,
                canary_secs,
                list_secs,
                resync_secs,
                restart_secs,
                walk,
            );
        }
    }
}
