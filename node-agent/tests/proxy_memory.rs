//! Measurement of the proxy's memory and in-process CPU at 10,000 Services,
//! without iptables or an API server: the watch stores filled as the proxy loop
//! fills them, a first sync, 50 partial syncs that each add one Service (the
//! benchmark's changes), and a periodic full sync, against a kernel that
//! accepts every restore. A counting allocator gives the live heap after each
//! phase and its peak during it; the time is the in-process work alone
//! (model, planning, rendering). Prints figures, asserts nothing about them.
//!
//! ```sh
//! cargo test -p node-agent --release --test proxy_memory -- --ignored --nocapture
//! NC_MEMORY_SERVICES=5000 cargo test ...
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_agent::proxy::iptables::Iptables;
use node_agent::proxy::model::SERVICE_NAME_LABEL;
use node_agent::proxy::{NodeInfo, Proxier, ProxyConfig, ProxyError, ProxyInputs, RuleSet, Table};
use peak_alloc::PeakAlloc;

// peak_alloc counts what the system allocator hands out (layout sizes), live
// and at its peak since the last reset; the tree itself forbids unsafe code.
#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// Starts a phase: the peak is reset to what is live now.
fn phase_start() -> usize {
    ALLOCATOR.reset_peak_usage();
    ALLOCATOR.current_usage()
}

fn phase_end(name: &str, base: usize, before: usize, took: Duration) {
    let (live, peak) = (ALLOCATOR.current_usage(), ALLOCATOR.peak_usage());
    println!(
        "{name:<34} live {:>7.1} MiB (+{:>6.1})  peak {:>7.1} MiB  {:>8.3} s",
        mib(live - base),
        mib(live.saturating_sub(before)),
        mib(peak - base),
        took.as_secs_f64()
    );
}

/// A kernel that takes every restore and remembers nat NC-SERVICES (the
/// proxier lists it at every partial sync).
#[derive(Default)]
struct AcceptingKernel {
    services: Option<Vec<String>>,
}

impl Iptables for AcceptingKernel {
    fn restore(&mut self, input: &str) -> Result<(), ProxyError> {
        let mut nat = false;
        for line in input.lines() {
            if let Some(table) = line.strip_prefix('*') {
                nat = table == "nat";
            } else if !nat {
            } else if line.starts_with(":NC-SERVICES ") {
                self.services = Some(Vec::new());
            } else if line == "-X NC-SERVICES" {
                self.services = None;
            } else if let Some(rule) = line.strip_prefix("-A NC-SERVICES ") {
                self.services.get_or_insert_with(Vec::new).push(rule.into());
            }
        }
        Ok(())
    }

    fn installed(&mut self) -> Result<RuleSet, ProxyError> {
        Ok(RuleSet::default())
    }

    fn jumps(&mut self) -> Result<RuleSet, ProxyError> {
        Ok(RuleSet::default())
    }

    fn canary_present(&mut self) -> Result<bool, ProxyError> {
        Ok(true)
    }

    fn chain_rules(
        &mut self,
        table: Table,
        chain: &str,
    ) -> Result<Option<Vec<String>>, ProxyError> {
        Ok(match (table, chain) {
            (Table::Nat, "NC-SERVICES") => self.services.clone(),
            _ => None,
        })
    }
}

/// The i-th Service and its EndpointSlice as the API server sends them (the
/// fields the proxy drops included), ClusterIPs in 10.96.0.0/12.
fn objects(i: usize) -> (Service, EndpointSlice) {
    let name = format!("bench-svc-{i}");
    let meta = |name: String, labels: BTreeMap<String, String>| ObjectMeta {
        namespace: Some("bench".into()),
        name: Some(name),
        uid: Some(format!("6f1c2a4e-0000-4000-8000-{i:012}")),
        resource_version: Some(format!("{}", 100_000 + i)),
        generation: Some(1),
        labels: Some(labels),
        ..Default::default()
    };
    let ip = |base: usize| format!("10.{}.{}.{}", base + i / 65536, (i / 256) % 256, i % 256);
    let svc = Service {
        metadata: meta(
            name.clone(),
            BTreeMap::from([("app".into(), "bench".into())]),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip(96)),
            cluster_ips: Some(vec![ip(96)]),
            type_: Some("ClusterIP".into()),
            session_affinity: Some("None".into()),
            internal_traffic_policy: Some("Cluster".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ip_family_policy: Some("SingleStack".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let endpoint = |base: usize| Endpoint {
        addresses: vec![ip(base)],
        node_name: Some(format!("node-{base}")),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: meta(
            format!("{name}-abcde"),
            BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), name),
                (
                    "endpointslice.kubernetes.io/managed-by".into(),
                    "bench".into(),
                ),
            ]),
        ),
        address_type: "IPv4".into(),
        endpoints: Some(vec![endpoint(128), endpoint(192)]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    (svc, slice)
}

#[test]
#[ignore = "measurement: prints figures, asserts nothing about them"]
fn proxy_memory_and_cpu() {
    let n: usize = std::env::var("NC_MEMORY_SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let node = NodeInfo {
        name: "node-0".into(),
        ips: vec!["192.168.1.10".parse().unwrap()],
        zone: None,
    };
    let cfg = ProxyConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..ProxyConfig::default()
    };
    println!("{n} Services × 2 endpoints; live heap and its peak relative to the start");
    let base = phase_start();

    let before = phase_start();
    let started = Instant::now();
    let mut inputs = ProxyInputs::default();
    for i in 0..n {
        let (svc, slice) = objects(i);
        inputs.apply_service(&svc);
        inputs.apply_slice(&slice);
    }
    phase_end("watch stores filled", base, before, started.elapsed());

    let mut proxier = Proxier::new(AcceptingKernel::default());
    let before = phase_start();
    let started = Instant::now();
    let report = proxier
        .sync(&mut inputs, &node, &cfg, false)
        .expect("first sync");
    phase_end("first sync (all rules)", base, before, started.elapsed());
    println!(
        "  {} service ports, {} endpoints, {} rules, {} chains, restore {:.1} MB",
        report.service_ports,
        report.endpoints,
        report.rules,
        report.chains,
        report.restore_bytes as f64 / 1e6
    );

    let before = phase_start();
    let started = Instant::now();
    let mut planned = 0;
    for i in n..n + 50 {
        let (svc, slice) = objects(i);
        inputs.apply_service(&svc);
        inputs.apply_slice(&slice);
        let report = proxier
            .sync(&mut inputs, &node, &cfg, false)
            .expect("partial sync");
        assert!(report.full_reason.is_none(), "{:?}", report.full_reason);
        planned += report.ports_planned;
    }
    let took = started.elapsed();
    phase_end("50 partial syncs (+1 Service each)", base, before, took);
    println!(
        "  {:.2} ms per partial sync, {planned} service ports planned in all",
        took.as_secs_f64() * 1000.0 / 50.0
    );

    let before = phase_start();
    let started = Instant::now();
    proxier
        .sync(&mut inputs, &node, &cfg, true)
        .expect("full sync");
    phase_end("periodic full sync", base, before, started.elapsed());
}
