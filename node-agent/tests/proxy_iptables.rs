//! The proxy against real iptables, each test in a throwaway network namespace
//! (`nc-proxytest-<pid>-<n>`, removed afterwards); the host's tables are never
//! touched. Needs root and `ip`; without them the tests say so and pass.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
    ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_agent::proxy::iptables::Iptables;
use node_agent::proxy::model::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL};
use node_agent::proxy::plan::plan;
use node_agent::proxy::{
    render_restore_input, Dispatch, FullSyncReason, IptablesCommand, Model, NodeInfo, Proxier,
    ProxyConfig, ProxyError, ProxyInputs, RuleSet, SyncMode, SyncReport,
};
use proptest::prelude::*;

/// A network namespace of our own, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "nc-proxytest-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        // A test that cannot run must fail, not pass: this needs root and iproute2.
        assert!(
            ok,
            "cannot create network namespace {name} (needs root and iproute2)"
        );
        Self { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    fn iptables(&self) -> IptablesCommand {
        IptablesCommand::in_netns(self.path())
    }

    /// Runs a command inside the namespace; panics when it fails.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        ips: vec!["192.168.1.10".parse().unwrap()],
        zone: None,
    }
}

fn cfg() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..ProxyConfig::default()
    }
}

fn desired(services: &[Service], slices: &[EndpointSlice], cfg: &ProxyConfig) -> RuleSet {
    plan(&Model::build(services, slices), &node(), cfg).rules
}

/// Service names include characters the API would refuse, to exercise comment escaping.
/// One sync of these objects from inputs made afresh: the proxier plans every
/// service port (as after a restart), the render writes what differs.
fn sync_objects(
    proxier: &mut Proxier<IptablesCommand>,
    services: &[Service],
    slices: &[EndpointSlice],
    cfg: &ProxyConfig,
    full: bool,
) -> Result<SyncReport, ProxyError> {
    proxier.sync(
        &mut ProxyInputs::from_objects(services, slices),
        &node(),
        cfg,
        full,
    )
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z][a-z0-9-]{0,12}", 1 => "[a-z\"' \\\\$#;-]{1,10}"]
}

fn arb_service() -> impl Strategy<Value = (Service, Vec<Endpoint>)> {
    let port = (
        proptest::sample::select(vec!["", "http", "dns"]),
        1i32..65536,
        proptest::sample::select(vec!["TCP", "UDP", "SCTP"]),
        30000i32..30100,
    )
        .prop_map(|(name, port, protocol, node_port)| ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some(protocol.into()),
            node_port: Some(node_port),
            ..Default::default()
        });
    let endpoint = (0u8..3, 1u8..30, any::<(bool, bool, bool)>(), 0usize..3).prop_map(
        |(c, d, (ready, serving, terminating), node)| Endpoint {
            addresses: vec![format!("10.244.{c}.{d}")],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            node_name: ["node-a", "node-b", "node-c"]
                .get(node)
                .map(|n| n.to_string()),
            ..Default::default()
        },
    );
    (
        arb_name(),
        (0u8..4, 1u8..40),
        proptest::collection::vec(port, 1..3),
        proptest::sample::select(vec!["ClusterIP", "NodePort", "LoadBalancer"]),
        proptest::option::of(1i32..86400),
        any::<(bool, bool, bool)>(),
        proptest::collection::vec(endpoint, 0..4),
        // An external IP, a load balancer IP, source ranges (one holding the node's address).
        (any::<bool>(), any::<bool>(), 0usize..3),
    )
        .prop_map(
            |(
                name,
                (c, d),
                mut ports,
                kind,
                affinity,
                (itp, etp, other_proxy),
                endpoints,
                (external_ip, lb, ranges),
            )| {
                ports.dedup_by(|a, b| a.name == b.name);
                let local = |l: bool| Some(if l { "Local" } else { "Cluster" }.to_string());
                let svc = Service {
                    metadata: ObjectMeta {
                        namespace: Some("ns".into()),
                        name: Some(name),
                        labels: other_proxy.then(|| {
                            BTreeMap::from([(
                                SERVICE_PROXY_NAME_LABEL.to_string(),
                                "other".to_string(),
                            )])
                        }),
                        ..Default::default()
                    },
                    spec: Some(ServiceSpec {
                        cluster_ip: Some(format!("10.96.{c}.{d}")),
                        type_: Some(kind.into()),
                        ports: Some(ports),
                        session_affinity: affinity.map(|_| "ClientIP".to_string()),
                        session_affinity_config: affinity.map(|t| SessionAffinityConfig {
                            client_ip: Some(ClientIPConfig {
                                timeout_seconds: Some(t),
                            }),
                        }),
                        internal_traffic_policy: local(itp),
                        external_traffic_policy: local(etp),
                        external_ips: external_ip.then(|| vec![format!("192.168.7.{d}")]),
                        load_balancer_source_ranges: (ranges > 0).then(|| {
                            ["203.0.113.0/24", "192.168.1.0/24"][..ranges]
                                .iter()
                                .map(|r| r.to_string())
                                .collect()
                        }),
                        health_check_node_port: (kind == "LoadBalancer" && etp)
                            .then_some(32000 + i32::from(d)),
                        ..Default::default()
                    }),
                    status: lb.then(|| ServiceStatus {
                        load_balancer: Some(LoadBalancerStatus {
                            ingress: Some(vec![LoadBalancerIngress {
                                ip: Some(format!("192.168.8.{d}")),
                                ..Default::default()
                            }]),
                        }),
                        ..Default::default()
                    }),
                };
                (svc, endpoints)
            },
        )
}

fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec.as_ref()?.cluster_ip.as_deref()
}

/// Services with one EndpointSlice each, carrying every port of the Service.
/// Each Service has a cluster IP of its own, as the API server allocates them.
fn arb_objects() -> impl Strategy<Value = (Vec<Service>, Vec<EndpointSlice>)> {
    proptest::collection::vec(arb_service(), 0..10).prop_map(|items| {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        let mut ips = std::collections::BTreeSet::new();
        for (svc, endpoints) in items {
            if !ips.insert(cluster_ip(&svc).unwrap_or_default().to_string()) {
                continue;
            }
            let name = svc.metadata.name.clone().unwrap_or_default();
            let spec = svc.spec.as_ref().expect("built with a spec");
            let ports = spec.ports.iter().flatten().map(|p| EndpointPort {
                name: p.name.clone(),
                port: Some(8000 + p.port % 1000),
                protocol: p.protocol.clone(),
                app_protocol: None,
            });
            slices.push(EndpointSlice {
                metadata: ObjectMeta {
                    namespace: Some("ns".into()),
                    name: Some(format!("{name}-{}", slices.len())),
                    labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), name)])),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(endpoints),
                ports: Some(ports.collect()),
            });
            services.push(svc);
        }
        (services, slices)
    })
}

fn arb_config() -> impl Strategy<Value = ProxyConfig> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(linear, masq_all, no_cidr, np_addrs)| ProxyConfig {
            dispatch: if linear {
                node_agent::proxy::Dispatch::Linear
            } else {
                node_agent::proxy::Dispatch::ByPrefix24
            },
            masquerade_all: masq_all,
            cluster_cidr: (!no_cidr).then(|| "10.244.0.0/16".parse().unwrap()),
            node_port_addresses: if np_addrs {
                vec!["192.168.0.0/16".parse().unwrap()]
            } else {
                vec![]
            },
            ..ProxyConfig::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever the Services, the rendered transaction is valid iptables-restore input.
    #[test]
    fn rendered_input_passes_iptables_restore_test((services, slices) in arb_objects(), cfg in arb_config()) {
        let ns = Netns::new();
        let rules = desired(&services, &slices, &cfg);
        let input = render_restore_input(&rules, &RuleSet::default(), SyncMode::Full);
        let result = ns.iptables().test_restore(&input.text);
        prop_assert!(result.is_ok(), "{:?}\n{}", result, input.text);
    }

    /// An applied set reads back as the desired set.
    #[test]
    fn applied_rules_read_back_equal((services, slices) in arb_objects(), cfg in arb_config()) {
        let ns = Netns::new();
        let mut proxier = Proxier::new(ns.iptables());
        sync_objects(&mut proxier, &services, &slices, &cfg, true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let installed = ns.iptables().installed().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(installed, desired(&services, &slices, &cfg));
    }

    /// Full sync of one set, then a partial sync to another: the kernel holds the second.
    #[test]
    fn partial_sync_reads_back_equal(
        (services, slices) in arb_objects(),
        (more_services, more_slices) in arb_objects(),
        keep in 0usize..10,
    ) {
        let ns = Netns::new();
        let mut proxier = Proxier::new(ns.iptables());
        // One set of inputs throughout, as the proxy loop keeps it.
        let mut watched = ProxyInputs::from_objects(&services, &slices);
        proxier.sync(&mut watched, &node(), &cfg(), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Keep some of the first set, delete the others, change or add the rest
        // (those of the second set whose cluster IP a kept one holds are left
        // out: the API server never gives two Services one cluster IP).
        let keep = keep.min(services.len());
        let held: Vec<&str> = services[..keep].iter().filter_map(cluster_ip).collect();
        let (more_services, more_slices): (Vec<Service>, Vec<EndpointSlice>) = more_services
            .into_iter()
            .zip(more_slices)
            .filter(|(svc, _)| !cluster_ip(svc).is_some_and(|ip| held.contains(&ip)))
            .unzip();
        for svc in &services[keep..] {
            watched.delete_service(svc);
        }
        for slice in &slices[keep..] {
            watched.delete_slice(slice);
        }
        for svc in &more_services {
            watched.apply_service(svc);
        }
        for slice in &more_slices {
            watched.apply_slice(slice);
        }
        let next_services: Vec<_> = services[..keep].iter().chain(more_services.iter()).cloned().collect();
        let next_slices: Vec<_> = slices[..keep].iter().chain(more_slices.iter()).cloned().collect();
        let report = proxier.sync(&mut watched, &node(), &cfg(), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(report.mode, SyncMode::Partial);
        let installed = ns.iptables().installed().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(installed, desired(&next_services, &next_slices, &cfg()));
        // And a full sync back to the first set removes what it no longer has.
        sync_objects(&mut proxier, &services, &slices, &cfg(), true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let installed = ns.iptables().installed().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(installed, desired(&services, &slices, &cfg()));
    }
}

#[test]
fn a_flushed_services_chain_is_repaired_at_the_next_sync() {
    let (services, slices) = one_service();
    for dispatch in [Dispatch::ByPrefix24, Dispatch::Linear] {
        let ns = Netns::new();
        let cfg = ProxyConfig { dispatch, ..cfg() };
        let mut proxier = Proxier::new(ns.iptables());
        sync_objects(&mut proxier, &services, &slices, &cfg, false).unwrap();
        let quiet = sync_objects(&mut proxier, &services, &slices, &cfg, false).unwrap();
        assert_eq!(
            (quiet.full_reason, quiet.restore_bytes),
            (None, 0),
            "NC-SERVICES as listed is what was written ({dispatch:?})"
        );

        // The canary stays; every ClusterIP and NodePort stops working.
        ns.run(&["iptables", "-t", "nat", "-F", "NC-SERVICES"]);
        assert!(ns.iptables().canary_present().unwrap());
        let report = sync_objects(&mut proxier, &services, &slices, &cfg, false).unwrap();
        assert_eq!(
            report.full_reason,
            Some(FullSyncReason::ServicesChainChanged)
        );
        assert_eq!(
            ns.iptables().installed().unwrap(),
            desired(&services, &slices, &cfg)
        );
    }
}

fn one_service() -> (Vec<Service>, Vec<EndpointSlice>) {
    let svc = Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            type_: Some("NodePort".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                node_port: Some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web-1".into()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                "web".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec!["10.244.1.1".into()],
            ..Default::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    };
    (vec![svc], vec![slice])
}

/// Past 1,000 endpoints the endpoint rules lose their comments (kube-proxy's
/// large cluster mode); what is applied still reads back equal, so restarts
/// and partial syncs rewrite nothing, and the ClusterIP dispatch keeps its name.
#[test]
fn large_cluster_rules_read_back_equal() {
    let (mut services, mut slices) = one_service();
    let spec = services[0].spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    slices[0].endpoints = Some(
        (0..1001)
            .map(|i| Endpoint {
                addresses: vec![format!("10.244.{}.{}", 1 + i / 250, 1 + i % 250)],
                ..Default::default()
            })
            .collect(),
    );
    let ns = Netns::new();
    let mut proxier = Proxier::new(ns.iptables());
    let mut watched = ProxyInputs::from_objects(&services, &slices);
    let report = proxier.sync(&mut watched, &node(), &cfg(), false).unwrap();
    assert_eq!(report.endpoints, 1001);
    let installed = ns.iptables().installed().unwrap();
    assert_eq!(installed, desired(&services, &slices, &cfg()));
    let sep = installed
        .nat
        .chains
        .iter()
        .find(|(name, _)| name.starts_with("NC-SEP-"))
        .map(|(_, rules)| rules.clone())
        .unwrap();
    assert!(sep.iter().all(|r| !r.contains("--comment")), "{sep:?}");
    let dispatch = &installed.nat.chains["NC-SVCS-10.96.0"];
    assert!(
        dispatch[0].contains("\"default/web:http cluster IP\""),
        "{dispatch:?}"
    );
    // A restarted agent finds nothing to write.
    let mut restarted = Proxier::new(ns.iptables());
    let report = sync_objects(&mut restarted, &services, &slices, &cfg(), false).unwrap();
    assert_eq!(
        report.restore_bytes, 0,
        "read back equal: nothing rewritten"
    );
}

#[test]
fn cleanup_removes_ours_and_keeps_everything_else() {
    let ns = Netns::new();
    ns.run(&["iptables", "-t", "nat", "-N", "CNI-OTHER"]);
    ns.run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-j",
        "CNI-OTHER",
    ]);
    ns.run(&[
        "iptables",
        "-A",
        "FORWARD",
        "-s",
        "10.0.0.0/8",
        "-j",
        "ACCEPT",
    ]);
    let before = ns.run(&["iptables-save"]);

    let (services, slices) = one_service();
    let mut proxier = Proxier::new(ns.iptables());
    sync_objects(&mut proxier, &services, &slices, &cfg(), false).unwrap();
    assert!(ns.run(&["iptables-save"]).contains("NC-SVC-"));
    // Twice: the jumps into our chains must not pile up.
    sync_objects(&mut proxier, &services, &slices, &cfg(), true).unwrap();
    assert_eq!(
        ns.run(&["iptables-save", "-t", "nat"])
            .matches("-A PREROUTING -m comment --comment \"nodeconfig")
            .count(),
        1
    );

    let removed = proxier.cleanup().unwrap();
    assert!(removed > 20, "{removed}");
    let after = ns.run(&["iptables-save"]);
    assert!(!after.contains("NC-"), "{after}");
    let rules = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("-A"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(&after), rules(&before));
    // Cleaning a clean namespace is fine.
    assert_eq!(proxier.cleanup().unwrap(), 0);
}

#[test]
fn flushed_tables_are_detected_and_repaired() {
    let ns = Netns::new();
    let (services, slices) = one_service();
    let mut proxier = Proxier::new(ns.iptables());
    sync_objects(&mut proxier, &services, &slices, &cfg(), false).unwrap();
    assert!(ns.iptables().canary_present().unwrap());

    // `iptables -F` empties chains but keeps them: the canary's rule tells.
    ns.run(&["iptables", "-t", "nat", "-F"]);
    assert!(!ns.iptables().canary_present().unwrap());
    let report = sync_objects(&mut proxier, &services, &slices, &cfg(), false).unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::CanaryMissing));
    assert_eq!(
        ns.iptables().installed().unwrap(),
        desired(&services, &slices, &cfg())
    );

    // A jump deleted by hand leaves the canary; the periodic full sync puts it back.
    ns.run(&["iptables", "-t", "nat", "-D", "PREROUTING", "1"]);
    let report = sync_objects(&mut proxier, &services, &slices, &cfg(), true).unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::Requested));
    assert_eq!(
        ns.iptables().installed().unwrap(),
        desired(&services, &slices, &cfg())
    );

    // Chains deleted too.
    ns.run(&["iptables", "-F"]);
    ns.run(&["iptables", "-X"]);
    let report = sync_objects(&mut proxier, &services, &slices, &cfg(), false).unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::CanaryMissing));
    assert_eq!(
        ns.iptables().installed().unwrap(),
        desired(&services, &slices, &cfg())
    );
}

#[test]
fn a_refused_restore_names_the_chain_and_changes_nothing() {
    let ns = Netns::new();
    let (services, slices) = one_service();
    let mut proxier = Proxier::new(ns.iptables());
    sync_objects(&mut proxier, &services, &slices, &cfg(), false).unwrap();
    let before = ns.iptables().installed().unwrap();

    let bad = "*nat\n:NC-SVC-BROKEN - [0:0]\n-A NC-SVC-BROKEN -m comment --comment \"default/x:y\" -j NC-MISSING\nCOMMIT\n";
    let err = ns.iptables().restore(bad).unwrap_err().to_string();
    assert!(
        err.contains("line 3") && err.contains("NC-SVC-BROKEN") && err.contains("default/x:y"),
        "{err}"
    );
    assert_eq!(ns.iptables().installed().unwrap(), before);
}

#[test]
fn the_backend_is_the_hosts() {
    let ns = Netns::new();
    let version = ns.iptables().version().unwrap();
    let host = String::from_utf8_lossy(
        &Command::new("iptables")
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    assert_eq!(version, host);
}
