//! Table tests of the planner: what rules a node gets for a given Service and its endpoints.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::*;
use crate::proxy::iptables::undeclared_targets;
use crate::proxy::model::{ExternalAccess, Hints, Protocol};
use crate::proxy::ruleset::TableRules;

const NODE: &str = "node-a";

fn name(svc: &str, port: &str) -> ServicePortName {
    ServicePortName {
        namespace: "default".into(),
        name: svc.into(),
        port: port.into(),
        protocol: Protocol::Tcp,
    }
}

fn svc(svc_name: &str, ip: &str) -> ServicePort {
    ServicePort {
        name: name(svc_name, "http"),
        cluster_ip: ip.parse().unwrap(),
        port: 80,
        node_port: None,
        affinity_seconds: None,
        internal_policy: TrafficPolicy::Cluster,
        external_policy: TrafficPolicy::Cluster,
        external: None,
    }
}

fn ep(ip: &str) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        node_name: None,
        hints: None,
    }
}

fn on(node: &str, mut e: Endpoint) -> Endpoint {
    e.node_name = Some(node.into());
    e
}

fn terminating(mut e: Endpoint, serving: bool) -> Endpoint {
    e.ready = false;
    e.serving = serving;
    e.terminating = true;
    e
}

fn model(services: Vec<(ServicePort, Vec<Endpoint>)>) -> Model {
    let mut m = Model::default();
    for (s, eps) in services {
        m.endpoints.insert(s.name.clone(), eps);
        m.services.insert(s.name.clone(), s);
    }
    m
}

fn cfg() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..ProxyConfig::default()
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: NODE.into(),
        ips: vec!["192.168.1.10".parse().unwrap(), "10.0.0.5".parse().unwrap()],
        zone: None,
    }
}

fn plan_one(s: ServicePort, eps: Vec<Endpoint>, cfg: &ProxyConfig) -> Plan {
    let p = plan(&model(vec![(s, eps)]), &node(), cfg);
    assert!(
        undeclared_targets(&p.rules).is_empty(),
        "{:?}",
        undeclared_targets(&p.rules)
    );
    p
}

fn nat<'a>(p: &'a Plan, chain: &str) -> &'a [String] {
    p.rules
        .nat
        .chains
        .get(chain)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no nat chain {chain}"))
}

fn filter<'a>(p: &'a Plan, chain: &str) -> &'a [String] {
    p.rules
        .filter
        .chains
        .get(chain)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no filter chain {chain}"))
}

fn svc_chain(s: &str) -> String {
    service_chain("SVC", &name(s, "http"))
}

fn sep(s: &str, ip: &str) -> String {
    endpoint_chain(&name(s, "http"), &ep(ip))
}

#[test]
fn chain_names_are_kube_proxys_hashes() {
    // The same hashes as kube-proxy's KUBE-SVC-XPGD46QRK7WJZT7O and KUBE-SEP-SXIVWICOYRO3J4NJ.
    let n = ServicePortName {
        namespace: "ns1".into(),
        name: "svc1".into(),
        port: "p80".into(),
        protocol: Protocol::Tcp,
    };
    assert_eq!(service_chain("SVC", &n), "NC-SVC-XPGD46QRK7WJZT7O");
    let e = Endpoint {
        port: 80,
        ..ep("10.180.0.1")
    };
    assert_eq!(endpoint_chain(&n, &e), "NC-SEP-SXIVWICOYRO3J4NJ");
    assert_eq!(
        prefix_chain("255.255.255.0/24".parse().unwrap()),
        "NC-SVCS-255.255.255"
    );
    assert!("NC-SVCS-255.255.255".len() <= MAX_CHAIN_NAME);
}

#[test]
fn cluster_ip_with_one_endpoint() {
    let p = plan_one(svc("web", "10.96.0.10"), vec![ep("10.244.1.5")], &cfg());
    let chain = svc_chain("web");
    let sep = sep("web", "10.244.1.5");
    assert_eq!(nat(&p, SERVICES)[0], "-d 10.96.0.0/24 -j NC-SVCS-10.96.0");
    assert_eq!(
        nat(&p, "NC-SVCS-10.96.0"),
        [format!("-d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j {chain}")]
    );
    assert_eq!(
        nat(&p, &chain),
        [
            format!("! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j {MARK_MASQ}"),
            format!("-m comment --comment \"default/web:http -> 10.244.1.5:8080\" -j {sep}"),
        ]
    );
    assert_eq!(
        nat(&p, &sep),
        [
            format!("-s 10.244.1.5/32 -m comment --comment \"default/web:http\" -j {MARK_MASQ}"),
            "-p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 10.244.1.5:8080".to_string(),
        ]
    );
    assert!(filter(&p, SERVICES).is_empty());
    assert_eq!((p.service_ports, p.endpoints), (1, 1));
}

#[test]
fn endpoints_share_traffic_evenly() {
    let cases: [(&[&str], &[Option<&str>]); 3] = [
        (&["10.244.1.1"], &[None]),
        (
            &["10.244.1.1", "10.244.1.2"],
            &[Some("0.50000000000"), None],
        ),
        (
            &["10.244.1.1", "10.244.1.2", "10.244.1.3"],
            &[Some("0.33333333349"), Some("0.50000000000"), None],
        ),
    ];
    for (ips, probabilities) in cases {
        let p = plan_one(
            svc("web", "10.96.0.10"),
            ips.iter().map(|ip| ep(ip)).collect(),
            &cfg(),
        );
        let rules = &nat(&p, &svc_chain("web"))[1..];
        assert_eq!(rules.len(), ips.len());
        for ((rule, ip), probability) in rules.iter().zip(ips.iter()).zip(probabilities.iter()) {
            assert!(rule.ends_with(&format!("-j {}", sep("web", ip))), "{rule}");
            match probability {
                Some(pr) => assert!(
                    rule.contains(&format!("-m statistic --mode random --probability {pr} ")),
                    "{rule}"
                ),
                None => assert!(!rule.contains("statistic"), "{rule}"),
            }
        }
    }
}

#[test]
fn no_endpoints_rejects_at_once() {
    let mut s = svc("web", "10.96.0.10");
    s.node_port = Some(30080);
    let p = plan_one(s, vec![], &cfg());
    assert!(!p.rules.nat.chains.contains_key(&svc_chain("web")));
    assert!(!p.rules.nat.chains.contains_key("NC-SVCS-10.96.0"));
    assert_eq!(nat(&p, SERVICES).len(), 1, "only the NodePort hand-over");
    assert!(nat(&p, NODEPORTS).is_empty());
    assert_eq!(
        filter(&p, SERVICES),
        ["-d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with tcp-reset"]
    );
    assert_eq!(
        filter(&p, EXTERNAL_SERVICES),
        ["-p tcp -m comment --comment \"default/web:http has no endpoints\" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT --reject-with tcp-reset"]
    );
}

#[test]
fn not_ready_and_terminating_endpoints_get_no_new_traffic() {
    let mut not_ready = ep("10.244.1.3");
    not_ready.ready = false;
    not_ready.serving = false;
    let eps = vec![
        ep("10.244.1.1"),
        terminating(ep("10.244.1.2"), true),
        not_ready.clone(),
    ];
    let p = plan_one(svc("web", "10.96.0.10"), eps, &cfg());
    let seps: Vec<_> = p
        .rules
        .nat
        .chains
        .keys()
        .filter(|c| c.starts_with("NC-SEP-"))
        .cloned()
        .collect();
    assert_eq!(seps, vec![sep("web", "10.244.1.1")]);

    // With no ready endpoint anywhere, serving ones that terminate still take
    // traffic (kube-proxy's rule, so connections drain through a rollout)…
    let p = plan_one(
        svc("web", "10.96.0.10"),
        vec![terminating(ep("10.244.1.2"), true), not_ready.clone()],
        &cfg(),
    );
    assert!(nat(&p, &svc_chain("web"))
        .last()
        .unwrap()
        .ends_with(&sep("web", "10.244.1.2")));
    // …but not ones that stopped serving: then the Service rejects.
    let p = plan_one(
        svc("web", "10.96.0.10"),
        vec![terminating(ep("10.244.1.2"), false), not_ready],
        &cfg(),
    );
    assert!(filter(&p, SERVICES)[0].contains("has no endpoints"));
}

#[test]
fn node_port_goes_through_the_external_chain() {
    let mut s = svc("web", "10.96.0.10");
    s.node_port = Some(30080);
    let p = plan_one(s.clone(), vec![ep("10.244.1.5")], &cfg());
    let ext = service_chain("EXT", &s.name);
    assert_eq!(
        nat(&p, NODEPORTS),
        [format!(
            "-p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j {ext}"
        )]
    );
    assert_eq!(
        nat(&p, &ext),
        [
            format!("-m comment --comment \"masquerade traffic for default/web:http external destinations\" -j {MARK_MASQ}"),
            format!("-j {}", svc_chain("web")),
        ]
    );
    assert_eq!(
        nat(&p, SERVICES).last().unwrap(),
        &format!("-m comment --comment \"nodeconfig service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j {NODEPORTS}")
    );
}

#[test]
fn node_port_addresses_limit_the_node_ips() {
    let cfg = ProxyConfig {
        node_port_addresses: vec!["192.168.0.0/16".parse().unwrap()],
        ..cfg()
    };
    let p = plan_one(svc("web", "10.96.0.10"), vec![ep("10.244.1.5")], &cfg);
    assert_eq!(
        nat(&p, SERVICES).last().unwrap(),
        &format!("-d 192.168.1.10/32 -m comment --comment \"nodeconfig service nodeports; NOTE: this must be the last rule in this chain\" -j {NODEPORTS}")
    );
    let none = ProxyConfig {
        node_port_addresses: vec!["172.16.0.0/12".parse().unwrap()],
        ..cfg
    };
    let p = plan_one(svc("web", "10.96.0.10"), vec![ep("10.244.1.5")], &none);
    assert!(!nat(&p, SERVICES).iter().any(|r| r.contains(NODEPORTS)));
}

#[test]
fn client_ip_affinity_pins_clients() {
    let mut s = svc("web", "10.96.0.10");
    s.affinity_seconds = Some(600);
    let p = plan_one(s, vec![ep("10.244.1.1"), ep("10.244.1.2")], &cfg());
    let (a, b) = (sep("web", "10.244.1.1"), sep("web", "10.244.1.2"));
    let rules = nat(&p, &svc_chain("web"));
    assert_eq!(rules.len(), 5);
    assert_eq!(rules[1], format!("-m comment --comment \"default/web:http -> 10.244.1.1:8080\" -m recent --rcheck --seconds 600 --reap --name {a} --mask 255.255.255.255 --rsource -j {a}"));
    assert!(rules[2].contains(&format!("--name {b} ")) && rules[2].ends_with(&b));
    assert!(rules[3].contains("statistic"));
    assert_eq!(
        nat(&p, &a)[1],
        format!("-p tcp -m comment --comment \"default/web:http\" -m recent --set --name {a} --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.1:8080")
    );
}

#[test]
fn masquerade_follows_the_config() {
    let first = |cfg: &ProxyConfig| {
        nat(
            &plan_one(svc("web", "10.96.0.10"), vec![ep("10.244.1.1")], cfg),
            &svc_chain("web"),
        )[0]
        .clone()
    };
    assert!(first(&cfg()).starts_with("! -s 10.244.0.0/16 -d 10.96.0.10/32"));
    let all = ProxyConfig {
        masquerade_all: true,
        ..cfg()
    };
    assert!(first(&all).starts_with("-d 10.96.0.10/32") && first(&all).ends_with(MARK_MASQ));
    let none = ProxyConfig {
        cluster_cidr: None,
        ..cfg()
    };
    assert!(
        first(&none).starts_with("-m comment --comment \"default/web:http -> "),
        "no masquerade rule without a clusterCIDR"
    );
    // Hairpin traffic is masqueraded whatever the config.
    let p = plan_one(svc("web", "10.96.0.10"), vec![ep("10.244.1.1")], &none);
    assert!(nat(&p, &sep("web", "10.244.1.1"))[0].starts_with("-s 10.244.1.1/32"));
}

#[test]
fn internal_traffic_policy_local_uses_this_nodes_endpoints() {
    let mut s = svc("web", "10.96.0.10");
    s.internal_policy = TrafficPolicy::Local;
    let svl = service_chain("SVL", &s.name);
    let p = plan_one(
        s.clone(),
        vec![on(NODE, ep("10.244.1.1")), on("node-b", ep("10.244.2.1"))],
        &cfg(),
    );
    assert!(nat(&p, "NC-SVCS-10.96.0")[0].ends_with(&format!("-j {svl}")));
    assert!(
        !p.rules.nat.chains.contains_key(&svc_chain("web")),
        "no cluster-wide chain"
    );
    let rules = nat(&p, &svl);
    assert!(rules[0].ends_with(MARK_MASQ));
    assert_eq!(
        rules[1..],
        [format!(
            "-m comment --comment \"default/web:http -> 10.244.1.1:8080\" -j {}",
            sep("web", "10.244.1.1")
        )]
    );

    // Endpoints elsewhere only: drop (not reject) ClusterIP traffic on this node.
    let p = plan_one(s, vec![on("node-b", ep("10.244.2.1"))], &cfg());
    assert!(!p.rules.nat.chains.contains_key(&svl));
    assert_eq!(
        filter(&p, SERVICES),
        ["-d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http has no local endpoints\" -m tcp --dport 80 -j DROP"]
    );
}

#[test]
fn external_traffic_policy_local_keeps_client_ips() {
    let mut s = svc("web", "10.96.0.10");
    s.node_port = Some(30080);
    s.external_policy = TrafficPolicy::Local;
    let (ext, svl, svcc) = (
        service_chain("EXT", &s.name),
        service_chain("SVL", &s.name),
        svc_chain("web"),
    );
    let p = plan_one(
        s.clone(),
        vec![on(NODE, ep("10.244.1.1")), on("node-b", ep("10.244.2.1"))],
        &cfg(),
    );
    assert_eq!(
        nat(&p, &ext),
        [
            format!("-s 10.244.0.0/16 -m comment --comment \"pod traffic for default/web:http external destinations\" -j {svcc}"),
            format!("-m comment --comment \"masquerade LOCAL traffic for default/web:http external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ}"),
            format!("-m comment --comment \"route LOCAL traffic for default/web:http external destinations\" -m addrtype --src-type LOCAL -j {svcc}"),
            format!("-j {svl}"),
        ]
    );
    assert_eq!(nat(&p, &svl).len(), 1, "local endpoint only, no masquerade");
    assert_eq!(
        nat(&p, &svcc).len(),
        3,
        "ClusterIP traffic still goes anywhere"
    );
    assert!(filter(&p, EXTERNAL_SERVICES).is_empty());

    // No local endpoint: outside traffic to the NodePort is dropped here.
    let p = plan_one(s, vec![on("node-b", ep("10.244.2.1"))], &cfg());
    assert_eq!(
        nat(&p, &ext).len(),
        3,
        "short-circuits, no jump to the local chain"
    );
    assert!(filter(&p, EXTERNAL_SERVICES)[0].contains(
        "has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DROP"
    ));
    assert!(filter(&p, SERVICES).is_empty());
}

fn external(s: &mut ServicePort) -> &mut ExternalAccess {
    s.external.get_or_insert_with(Box::default)
}

fn ext_chain(s: &str) -> String {
    service_chain("EXT", &name(s, "http"))
}

fn fw_chain(s: &str) -> String {
    service_chain("FW", &name(s, "http"))
}

#[test]
fn external_ips_go_through_the_external_chain() {
    let mut s = svc("web", "10.96.0.10");
    external(&mut s).external_ips = vec!["192.168.5.7".parse().unwrap()];
    let p = plan_one(s.clone(), vec![ep("10.244.1.5")], &cfg());
    let ext = ext_chain("web");
    assert_eq!(
        nat(&p, "NC-SVCS-192.168.5"),
        [format!("-d 192.168.5.7/32 -p tcp -m comment --comment \"default/web:http external IP\" -m tcp --dport 80 -j {ext}")]
    );
    let services = nat(&p, SERVICES);
    let at = services
        .iter()
        .position(|r| r.ends_with("-j NC-SVCS-192.168.5"))
        .expect("a dispatch rule for the external IP's /24");
    assert!(at < services.len() - 1, "before the NodePort tail rule");
    assert_eq!(
        nat(&p, &ext),
        [
            format!("-m comment --comment \"masquerade traffic for default/web:http external destinations\" -j {MARK_MASQ}"),
            format!("-j {}", svc_chain("web")),
        ]
    );
    assert!(filter(&p, EXTERNAL_SERVICES).is_empty());

    // Without endpoints the external IP is refused, as the ClusterIP is.
    let p = plan_one(s.clone(), vec![], &cfg());
    assert!(!p.rules.nat.chains.contains_key("NC-SVCS-192.168.5"));
    assert_eq!(
        filter(&p, EXTERNAL_SERVICES),
        ["-d 192.168.5.7/32 -p tcp -m comment --comment \"default/web:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with tcp-reset"]
    );

    // Local policy without a local endpoint: captured (for the short-circuits), then dropped.
    s.external_policy = TrafficPolicy::Local;
    let p = plan_one(s, vec![on("node-b", ep("10.244.2.1"))], &cfg());
    assert_eq!(nat(&p, "NC-SVCS-192.168.5").len(), 1);
    assert!(nat(&p, &ext)
        .iter()
        .all(|r| !r.ends_with(&service_chain("SVL", &name("web", "http")))));
    assert_eq!(
        filter(&p, EXTERNAL_SERVICES),
        ["-d 192.168.5.7/32 -p tcp -m comment --comment \"default/web:http has no local endpoints\" -m tcp --dport 80 -j DROP"]
    );
}

#[test]
fn load_balancer_ips_without_source_ranges_go_to_the_external_chain() {
    let mut s = svc("web", "10.96.0.10");
    external(&mut s).load_balancer_ips = vec!["192.168.5.9".parse().unwrap()];
    let p = plan_one(s, vec![ep("10.244.1.5")], &cfg());
    assert_eq!(
        nat(&p, "NC-SVCS-192.168.5"),
        [format!("-d 192.168.5.9/32 -p tcp -m comment --comment \"default/web:http loadbalancer IP\" -m tcp --dport 80 -j {}", ext_chain("web"))]
    );
    assert!(!p.rules.nat.chains.contains_key(&fw_chain("web")));
    assert!(filter(&p, PROXY_FIREWALL).is_empty());
}

#[test]
fn load_balancer_source_ranges_let_only_those_sources_through() {
    let mut s = svc("web", "10.96.0.10");
    let e = external(&mut s);
    e.load_balancer_ips = vec!["192.168.5.9".parse().unwrap()];
    e.source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    let (ext, fw) = (ext_chain("web"), fw_chain("web"));
    let p = plan_one(s.clone(), vec![ep("10.244.1.5")], &cfg());
    assert!(nat(&p, "NC-SVCS-192.168.5")[0].ends_with(&format!("-j {fw}")));
    assert_eq!(
        nat(&p, &fw),
        [
            format!("-s 203.0.113.0/24 -m comment --comment \"default/web:http loadbalancer IP\" -j {ext}"),
            "-m comment --comment \"other traffic to default/web:http will be dropped by NC-PROXY-FIREWALL\"".to_string(),
        ]
    );
    assert_eq!(
        filter(&p, PROXY_FIREWALL),
        [format!("-d 192.168.5.9/32 -p tcp -m comment --comment \"default/web:http traffic not accepted by {fw}\" -m tcp --dport 80 -j DROP")]
    );

    // A range holding the node's address also lets the node reach the VIP
    // when the VIP is its own (the source is then the VIP).
    s.external.as_mut().unwrap().source_ranges = vec!["192.168.1.0/24".parse().unwrap()];
    let p = plan_one(s.clone(), vec![ep("10.244.1.5")], &cfg());
    assert_eq!(
        nat(&p, &fw)[..2],
        [
            format!("-s 192.168.1.0/24 -m comment --comment \"default/web:http loadbalancer IP\" -j {ext}"),
            format!("-s 192.168.5.9/32 -m comment --comment \"default/web:http loadbalancer IP\" -j {ext}"),
        ]
    );

    // No endpoints: no firewall, the VIP is refused.
    let p = plan_one(s, vec![], &cfg());
    assert!(!p.rules.nat.chains.contains_key(&fw));
    assert!(filter(&p, PROXY_FIREWALL).is_empty());
    assert!(filter(&p, EXTERNAL_SERVICES)[0].starts_with("-d 192.168.5.9/32 -p tcp"));
}

#[test]
fn health_check_node_ports_are_accepted() {
    let mut s = svc("web", "10.96.0.10");
    s.node_port = Some(30080);
    s.external_policy = TrafficPolicy::Local;
    external(&mut s).health_check_node_port = Some(32000);
    // Open whether or not this node has an endpoint.
    for eps in [vec![on(NODE, ep("10.244.1.5"))], vec![]] {
        let p = plan_one(s.clone(), eps, &cfg());
        assert_eq!(
            filter(&p, NODEPORTS),
            ["-p tcp -m comment --comment \"default/web:http health check node port\" -m tcp --dport 32000 -j ACCEPT"]
        );
    }
    assert!(filter(
        &plan_one(svc("web", "10.96.0.10"), vec![], &cfg()),
        NODEPORTS
    )
    .is_empty());
}

fn hinted(mut e: Endpoint, zones: &[&str], nodes: &[&str]) -> Endpoint {
    e.hints = Some(std::sync::Arc::new(Hints {
        zones: zones.iter().map(|z| z.to_string()).collect(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
    }));
    e
}

/// The endpoints NC-SVC-web spreads over, for a node in `zone`.
fn cluster_endpoints(eps: Vec<Endpoint>, zone: Option<&str>) -> Vec<String> {
    let node = NodeInfo {
        zone: zone.map(String::from),
        ..node()
    };
    let p = plan(&model(vec![(svc("web", "10.96.0.10"), eps)]), &node, &cfg());
    let Some(rules) = p.rules.nat.chains.get(&svc_chain("web")) else {
        return Vec::new();
    };
    rules
        .iter()
        .filter_map(|r| r.split(" -> ").nth(1))
        .filter_map(|r| r.split(':').next())
        .map(String::from)
        .collect()
}

#[test]
fn zone_hints_keep_traffic_in_the_nodes_zone() {
    let a = hinted(ep("10.244.1.1"), &["zone-a"], &[]);
    let b = hinted(ep("10.244.2.1"), &["zone-b"], &[]);
    let both = hinted(ep("10.244.3.1"), &["zone-a", "zone-b"], &[]);
    assert_eq!(
        cluster_endpoints(vec![a.clone(), b.clone(), both.clone()], Some("zone-a")),
        ["10.244.1.1", "10.244.3.1"]
    );
    assert_eq!(
        cluster_endpoints(vec![a.clone(), b.clone()], Some("zone-b")),
        ["10.244.2.1"]
    );
    // No hint for this zone, or a node without a zone: every endpoint.
    assert_eq!(
        cluster_endpoints(vec![a.clone(), b.clone()], Some("zone-c")),
        ["10.244.1.1", "10.244.2.1"]
    );
    assert_eq!(
        cluster_endpoints(vec![a.clone(), b.clone()], None),
        ["10.244.1.1", "10.244.2.1"]
    );
    // One ready endpoint without hints: the hints are not used.
    assert_eq!(
        cluster_endpoints(vec![a.clone(), b.clone(), ep("10.244.4.1")], Some("zone-a")),
        ["10.244.1.1", "10.244.2.1", "10.244.4.1"]
    );
    // ...but a not-ready one without hints does not count.
    let mut not_ready = ep("10.244.4.1");
    not_ready.ready = false;
    assert_eq!(
        cluster_endpoints(vec![a.clone(), b.clone(), not_ready], Some("zone-a")),
        ["10.244.1.1"]
    );
}

#[test]
fn node_hints_win_over_zone_hints() {
    let mine = hinted(ep("10.244.1.1"), &["zone-a"], &[NODE]);
    let other = hinted(ep("10.244.1.2"), &["zone-a"], &["node-b"]);
    assert_eq!(
        cluster_endpoints(vec![mine.clone(), other.clone()], Some("zone-a")),
        ["10.244.1.1"]
    );
    // Node hints for other nodes only: the zone hints apply.
    let third = hinted(ep("10.244.2.1"), &["zone-b"], &["node-c"]);
    assert_eq!(
        cluster_endpoints(vec![other.clone(), third], Some("zone-a")),
        ["10.244.1.2"]
    );
}

#[test]
fn hints_leave_local_policies_and_terminating_fallbacks_alone() {
    // Only terminating endpoints: they all serve, hints or not.
    let a = terminating(hinted(ep("10.244.1.1"), &["zone-a"], &[]), true);
    let b = terminating(hinted(ep("10.244.2.1"), &["zone-b"], &[]), true);
    assert_eq!(
        cluster_endpoints(vec![a, b], Some("zone-a")),
        ["10.244.1.1", "10.244.2.1"]
    );
    // internalTrafficPolicy Local takes this node's endpoints, whatever their hints.
    let mut s = svc("web", "10.96.0.10");
    s.internal_policy = TrafficPolicy::Local;
    let node = NodeInfo {
        zone: Some("zone-a".into()),
        ..node()
    };
    let here = on(NODE, hinted(ep("10.244.1.1"), &["zone-b"], &[]));
    let there = on("node-b", hinted(ep("10.244.2.1"), &["zone-a"], &[]));
    let p = plan(&model(vec![(s.clone(), vec![here, there])]), &node, &cfg());
    let svl = nat(&p, &service_chain("SVL", &s.name));
    assert!(
        svl.iter().any(|r| r.contains("-> 10.244.1.1:8080")),
        "{svl:?}"
    );
    assert!(!svl.iter().any(|r| r.contains("10.244.2.1")), "{svl:?}");
}

#[test]
fn udp_and_sctp_ports() {
    for (protocol, word) in [(Protocol::Udp, "udp"), (Protocol::Sctp, "sctp")] {
        let mut s = svc("dns", "10.96.0.10");
        s.name.protocol = protocol;
        let p = plan_one(s.clone(), vec![ep("10.244.1.1")], &cfg());
        assert!(nat(&p, "NC-SVCS-10.96.0")[0].contains(&format!(
            "-p {word} -m comment --comment \"default/dns:http cluster IP\" -m {word} --dport 80"
        )));
        let sep = endpoint_chain(&s.name, &ep("10.244.1.1"));
        assert!(nat(&p, &sep)[1].starts_with(&format!("-p {word} ")));
        assert_ne!(
            service_chain("SVC", &s.name),
            svc_chain("dns"),
            "protocol is part of the name"
        );
    }
}

#[test]
fn dispatch_is_split_by_slash_24() {
    let m = model(vec![
        (svc("a", "10.96.0.10"), vec![ep("10.244.1.1")]),
        (svc("b", "10.96.0.20"), vec![ep("10.244.1.2")]),
        (svc("c", "10.96.7.1"), vec![ep("10.244.1.3")]),
    ]);
    let p = plan(&m, &node(), &cfg());
    assert_eq!(
        nat(&p, SERVICES)[..2],
        [
            "-d 10.96.0.0/24 -j NC-SVCS-10.96.0",
            "-d 10.96.7.0/24 -j NC-SVCS-10.96.7"
        ]
    );
    assert_eq!(nat(&p, "NC-SVCS-10.96.0").len(), 2);
    assert_eq!(nat(&p, "NC-SVCS-10.96.7").len(), 1);

    let linear = plan(
        &m,
        &node(),
        &ProxyConfig {
            dispatch: Dispatch::Linear,
            ..cfg()
        },
    );
    assert_eq!(nat(&linear, SERVICES).len(), 4);
    assert!(!linear
        .rules
        .nat
        .chains
        .keys()
        .any(|c| c.starts_with("NC-SVCS-")));
}

/// Chains whose rules differ between two plans.
fn changed(a: &Plan, b: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for (x, y) in [
        (&a.rules.nat, &b.rules.nat),
        (&a.rules.filter, &b.rules.filter),
    ] {
        for k in x.chains.keys().chain(y.chains.keys()) {
            if x.chains.get(k) != y.chains.get(k) && !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_new_service_changes_only_its_slash_24() {
    let base = vec![
        (svc("a", "10.96.0.10"), vec![ep("10.244.1.1")]),
        (svc("c", "10.96.7.1"), vec![ep("10.244.1.3")]),
    ];
    let before = plan(&model(base.clone()), &node(), &cfg());
    let mut more = base.clone();
    more.push((svc("b", "10.96.0.20"), vec![ep("10.244.1.2")]));
    let after = plan(&model(more), &node(), &cfg());
    let mut expected = vec![
        "NC-SVCS-10.96.0".to_string(),
        svc_chain("b"),
        sep("b", "10.244.1.2"),
    ];
    expected.sort();
    assert_eq!(changed(&before, &after), expected);

    // A Service in a new /24 adds one dispatch rule to NC-SERVICES.
    let mut more = base;
    more.push((svc("d", "10.96.9.9"), vec![ep("10.244.1.4")]));
    let after = plan(&model(more), &node(), &cfg());
    assert!(changed(&before, &after).contains(&SERVICES.to_string()));
}

#[test]
fn jumps_from_builtin_chains_are_the_only_foreign_rules() {
    let p = plan(&Model::default(), &node(), &cfg());
    let jumps = |t: &TableRules| {
        t.jumps
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        jumps(&p.rules.nat),
        BTreeMap::from([
            ("OUTPUT".into(), 1),
            ("POSTROUTING".into(), 1),
            ("PREROUTING".into(), 1)
        ])
    );
    assert_eq!(
        jumps(&p.rules.filter),
        BTreeMap::from([
            ("FORWARD".into(), 4),
            ("INPUT".into(), 3),
            ("OUTPUT".into(), 2)
        ])
    );
    assert_eq!(nat(&p, CANARY), [CANARY_RULE]);
    assert_eq!(filter(&p, CANARY), [CANARY_RULE]);
}

/// From the API objects: the Service's port named `http` targets the pods'
/// port named `web`, which the EndpointSlice resolves to 8080.
#[test]
fn named_target_ports_resolve_through_the_endpoint_slice() {
    let service = Service {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("front".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.5.5".into()),
            ports: Some(vec![K8sServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("web".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("front-x1".into()),
            labels: Some(BTreeMap::from([(
                crate::proxy::model::SERVICE_NAME_LABEL.to_string(),
                "front".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![K8sEndpoint {
            addresses: vec!["10.244.3.3".into()],
            ..Default::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    };
    let p = plan(&Model::build([&service], [&slice]), &node(), &cfg());
    let dnat: Vec<_> = p
        .rules
        .nat
        .chains
        .values()
        .flatten()
        .filter(|r| r.contains("DNAT"))
        .collect();
    assert_eq!(dnat.len(), 1);
    assert!(
        dnat[0].ends_with("--to-destination 10.244.3.3:8080"),
        "{}",
        dnat[0]
    );
}

#[test]
fn skipped_services_get_no_rules() {
    let headless = Service {
        metadata: ObjectMeta {
            namespace: Some("a".into()),
            name: Some("h".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(vec![K8sServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = Model::build([&headless], Vec::<EndpointSlice>::new());
    assert_eq!(m.skipped.len(), 1);
    let empty = plan(&Model::default(), &node(), &cfg());
    assert_eq!(plan(&m, &node(), &cfg()).rules, empty.rules);
}

#[test]
fn odd_names_are_safe_in_comments() {
    let mut s = svc("web", "10.96.0.10");
    s.name.name = "we\"b\n-j ACCEPT".into();
    let p = plan_one(s, vec![], &cfg());
    assert_eq!(
        filter(&p, SERVICES)[0],
        "-d 10.96.0.10/32 -p tcp -m comment --comment \"default/we\\\"b?-j ACCEPT:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with tcp-reset"
    );
}

/// Zone and node hints among this node's and one other's (or none).
fn arb_hints() -> impl Strategy<Value = Option<std::sync::Arc<Hints>>> {
    let zones = proptest::sample::subsequence(vec!["zone-a", "zone-b"], 0..=2);
    let nodes = proptest::sample::subsequence(vec![NODE, "node-b"], 0..=2);
    proptest::option::of((zones, nodes)).prop_map(|h| {
        h.map(|(zones, nodes)| {
            std::sync::Arc::new(Hints {
                zones: zones.into_iter().map(String::from).collect(),
                nodes: nodes.into_iter().map(String::from).collect(),
            })
        })
    })
}

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    (
        0u8..4,
        1u8..250,
        prop_oneof![Just(8080u16), 1u16..],
        any::<(bool, bool, bool)>(),
        0u8..3,
        arb_hints(),
    )
        .prop_map(
            |(c, d, port, (ready, serving, terminating), node, hints)| Endpoint {
                ip: std::net::Ipv4Addr::new(10, 244, c, d),
                port,
                ready,
                serving,
                terminating,
                node_name: [Some(NODE.into()), Some("node-b".into()), None][node as usize].clone(),
                hints,
            },
        )
}

/// External IPs, load balancer IPs (some in this node's /24), source ranges
/// (one holding the node's address) and a health check port, or none of them.
fn arb_external() -> impl Strategy<Value = Option<Box<ExternalAccess>>> {
    let ip = (0u8..2, 1u8..4).prop_map(|(c, d)| std::net::Ipv4Addr::new(192, 168, c, d));
    let range = prop_oneof![
        Just("192.168.1.0/24".parse::<Ipv4Net>().unwrap()),
        Just("203.0.113.0/24".parse::<Ipv4Net>().unwrap()),
    ];
    proptest::option::of((
        proptest::collection::vec(ip.clone(), 0..2),
        proptest::collection::vec(ip, 0..2),
        proptest::collection::vec(range, 0..2),
        proptest::option::of(32000u16..32010),
    ))
    .prop_map(|e| {
        e.map(|(external_ips, load_balancer_ips, source_ranges, health)| {
            Box::new(ExternalAccess {
                external_ips,
                load_balancer_ips,
                source_ranges,
                health_check_node_port: health,
            })
        })
    })
}

fn arb_model() -> impl Strategy<Value = Model> {
    let endpoint = arb_endpoint();
    let service = (
        "[a-z][a-z0-9-]{0,20}",
        "[a-z0-9-]{0,15}",
        prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ],
        (0u8..3, any::<u8>()),
        1u16..,
        proptest::option::of(30000u16..32768),
        proptest::option::of(1u32..86400),
        any::<(bool, bool)>(),
        proptest::collection::vec(endpoint, 0..4),
        arb_external(),
    )
        .prop_map(
            |(
                svc_name,
                port,
                protocol,
                (c, d),
                number,
                node_port,
                affinity,
                (itp, etp),
                eps,
                external,
            )| {
                let policy = |local| {
                    if local {
                        TrafficPolicy::Local
                    } else {
                        TrafficPolicy::Cluster
                    }
                };
                let s = ServicePort {
                    name: ServicePortName {
                        namespace: "ns".into(),
                        name: svc_name.into(),
                        port: port.into(),
                        protocol,
                    },
                    cluster_ip: std::net::Ipv4Addr::new(10, 96, c, d),
                    port: number,
                    node_port,
                    affinity_seconds: affinity,
                    internal_policy: policy(itp),
                    external_policy: policy(etp),
                    external,
                };
                (s, eps)
            },
        );
    proptest::collection::vec(service, 0..12).prop_map(|services| {
        let mut m = Model::default();
        for (s, mut eps) in services {
            eps.sort_by_key(|e| (e.ip, e.port));
            eps.dedup_by_key(|e| (e.ip, e.port));
            m.endpoints.insert(s.name.clone(), eps);
            m.services.insert(s.name.clone(), s);
        }
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every chain a rule jumps to exists, names fit iptables and each service
    /// port and endpoint gets chains of its own.
    #[test]
    fn plans_are_well_formed(m in arb_model(), linear in any::<bool>(), masquerade_all in any::<bool>()) {
        let cfg = ProxyConfig {
            dispatch: if linear { Dispatch::Linear } else { Dispatch::ByPrefix24 },
            masquerade_all,
            ..cfg()
        };
        let p = plan(&m, &node(), &cfg);
        prop_assert!(undeclared_targets(&p.rules).is_empty());
        for name in p.rules.nat.chains.keys().chain(p.rules.filter.chains.keys()) {
            prop_assert!(name.len() <= MAX_CHAIN_NAME, "{name}");
            prop_assert!(is_owned(name));
        }
        prop_assert_eq!(p.service_ports, m.services.len());
        prop_assert!(p.skipped.is_empty());
        let svc_chains: Vec<_> = p.rules.nat.chains.keys().filter(|c| c.starts_with("NC-SVC-")).collect();
        let names: std::collections::BTreeSet<_> = m.services.keys().filter(|n| {
            p.rules.nat.chains.contains_key(&service_chain("SVC", n))
        }).collect();
        prop_assert_eq!(svc_chains.len(), names.len());
        // Each service port is either dispatched in nat or rejected/dropped in filter.
        for s in m.services.values() {
            let head = format!("-d {}/32 -p {} -m comment --comment ", s.cluster_ip, s.name.protocol.iptables_name());
            let captured = format!("{head}{}", crate::proxy::ruleset::quote_comment(&format!("{} cluster IP", s.name)));
            let refused = format!("{head}\"{} has no", s.name);
            let in_nat = p.rules.nat.chains.values().flatten().any(|r| r.starts_with(&captured) && !r.ends_with(MARK_MASQ));
            let in_filter = p.rules.filter.chains.get(SERVICES).into_iter().flatten().any(|r| r.starts_with(&refused));
            prop_assert!(in_nat != in_filter, "{}", s.name);
        }
    }
}

/// One change between two syncs, as the watches would bring it.
#[derive(Clone, Debug)]
enum Change {
    ClusterIp(usize, u8),
    Readiness(usize, usize),
    Endpoints(usize, Vec<Endpoint>),
    Remove(usize),
    Add(Model),
    Policies(usize, bool, bool),
    NodePort(usize, Option<u16>),
    Affinity(usize, Option<u32>),
    External(usize, Option<Box<ExternalAccess>>),
    Zone(Option<&'static str>),
    /// New settings: linear dispatch, masquerade all.
    Settings(bool, bool),
    NodeName(bool),
    /// A failed sync: nothing is reused next time.
    Forget,
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, d)| Change::ClusterIp(i, d)),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(i, e)| Change::Readiness(i, e)),
        2 => (any::<usize>(), proptest::collection::vec(arb_endpoint(), 0..4)).prop_map(|(i, e)| Change::Endpoints(i, e)),
        1 => any::<usize>().prop_map(Change::Remove),
        1 => arb_model().prop_map(Change::Add),
        1 => (any::<usize>(), any::<bool>(), any::<bool>()).prop_map(|(i, a, b)| Change::Policies(i, a, b)),
        1 => (any::<usize>(), proptest::option::of(30000u16..30010)).prop_map(|(i, p)| Change::NodePort(i, p)),
        1 => (any::<usize>(), proptest::option::of(1u32..100)).prop_map(|(i, a)| Change::Affinity(i, a)),
        1 => (any::<usize>(), arb_external()).prop_map(|(i, e)| Change::External(i, e)),
        1 => proptest::option::of(proptest::sample::select(vec!["zone-a", "zone-b"])).prop_map(Change::Zone),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(l, m)| Change::Settings(l, m)),
        1 => any::<bool>().prop_map(Change::NodeName),
        1 => Just(Change::Forget),
    ]
}

/// The service port the `i`th of the model, if it has any.
fn nth_port(m: &Model, i: usize) -> Option<ServicePortName> {
    let n = m.services.len();
    (n > 0).then(|| m.services.keys().nth(i % n).cloned())?
}

fn apply(m: &mut Model, cfg: &mut ProxyConfig, node: &mut NodeInfo, change: Change) -> bool {
    let mut forget = false;
    let port = |m: &Model, i| nth_port(m, i);
    match change {
        Change::ClusterIp(i, d) => {
            if let Some(k) = port(m, i) {
                m.services.get_mut(&k).unwrap().cluster_ip =
                    std::net::Ipv4Addr::new(10, 96, d % 3, d);
            }
        }
        Change::Readiness(i, e) => {
            if let Some(eps) = port(m, i).and_then(|k| m.endpoints.get_mut(&k)) {
                let n = eps.len();
                if n > 0 {
                    eps[e % n].ready = !eps[e % n].ready;
                }
            }
        }
        Change::Endpoints(i, mut eps) => {
            if let Some(k) = port(m, i) {
                eps.sort_by_key(|e| (e.ip, e.port));
                eps.dedup_by_key(|e| (e.ip, e.port));
                m.endpoints.insert(k, eps);
            }
        }
        Change::Remove(i) => {
            if let Some(k) = port(m, i) {
                m.services.remove(&k);
                m.endpoints.remove(&k);
            }
        }
        Change::Add(more) => {
            m.services.extend(more.services);
            m.endpoints.extend(more.endpoints);
        }
        Change::Policies(i, itp, etp) => {
            if let Some(k) = port(m, i) {
                let s = m.services.get_mut(&k).unwrap();
                let policy = |l| {
                    if l {
                        TrafficPolicy::Local
                    } else {
                        TrafficPolicy::Cluster
                    }
                };
                s.internal_policy = policy(itp);
                s.external_policy = policy(etp);
            }
        }
        Change::NodePort(i, p) => {
            if let Some(k) = port(m, i) {
                m.services.get_mut(&k).unwrap().node_port = p;
            }
        }
        Change::Affinity(i, a) => {
            if let Some(k) = port(m, i) {
                m.services.get_mut(&k).unwrap().affinity_seconds = a;
            }
        }
        Change::External(i, e) => {
            if let Some(k) = port(m, i) {
                m.services.get_mut(&k).unwrap().external = e;
            }
        }
        Change::Zone(zone) => node.zone = zone.map(String::from),
        Change::Settings(linear, masquerade_all) => {
            cfg.dispatch = if linear {
                Dispatch::Linear
            } else {
                Dispatch::ByPrefix24
            };
            cfg.masquerade_all = masquerade_all;
        }
        Change::NodeName(other) => {
            node.name = if other { "node-b".into() } else { NODE.into() };
        }
        Change::Forget => forget = true,
    }
    forget
}

/// The service ports whose Service or endpoints differ between two models.
fn changed_ports(a: &Model, b: &Model) -> BTreeSet<ServicePortName> {
    a.services
        .keys()
        .chain(b.services.keys())
        .chain(a.endpoints.keys())
        .chain(b.endpoints.keys())
        .filter(|k| {
            a.services.get(*k) != b.services.get(*k) || a.endpoints.get(*k) != b.endpoints.get(*k)
        })
        .cloned()
        .collect()
}

/// `applied` with the chains of `changes` written over it, as a partial
/// restore does; asserts that `changes` knew what each chain held.
fn written_over(applied: &RuleSet, changes: &(RuleSet, RuleSet)) -> RuleSet {
    let (desired, before) = changes;
    let mut out = applied.clone();
    for table in Table::ALL {
        for (name, rules) in &before.table(table).chains {
            assert_eq!(applied.table(table).chains.get(name), Some(rules), "{name}");
            out.table_mut(table).chains.remove(name);
        }
        for (name, rules) in &desired.table(table).chains {
            out.table_mut(table)
                .chains
                .insert(name.clone(), rules.clone());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After any sequence of changes, planning only the changed service ports
    /// gives exactly the plan of planning everything again, and the chains it
    /// reports as changed turn the set applied before into it.
    #[test]
    fn incremental_planning_equals_a_full_plan(
        start in arb_model(),
        steps in proptest::collection::vec(proptest::collection::vec(arb_change(), 1..4), 1..8),
    ) {
        let (mut m, mut cfg, mut node) = (start, cfg(), node());
        let mut state = PlanState::default();
        state.update(&m, None, &node, &cfg);
        prop_assert_eq!(state.rules(), &plan(&m, &node, &cfg).rules);
        state.commit();
        for changes in steps {
            let before = m.clone();
            let settings = (cfg.clone(), node.clone());
            let applied = state.rules().clone();
            let mut forget = false;
            for change in changes {
                forget |= apply(&mut m, &mut cfg, &mut node, change);
            }
            let changed = changed_ports(&before, &m);
            state.update(&m, (!forget).then_some(&changed), &node, &cfg);
            let full = plan(&m, &node, &cfg);
            prop_assert_eq!(state.rules(), &full.rules);
            prop_assert_eq!((state.service_ports(), state.endpoints()), (full.service_ports, full.endpoints));
            prop_assert_eq!(&written_over(&applied, &state.changes()), state.rules());
            if !forget && settings == (cfg.clone(), node.clone()) {
                prop_assert!(state.planned() <= changed.len(), "only changed service ports are planned");
            }
            state.commit();
        }
    }
}

#[test]
fn an_unchanged_service_port_is_not_planned_again() {
    let web = svc("web", "10.96.0.10");
    let api = svc("api", "10.96.0.11");
    let m = model(vec![
        (web.clone(), vec![ep("10.244.1.5")]),
        (api.clone(), vec![]),
    ]);
    let mut state = PlanState::default();
    state.update(&m, None, &node(), &cfg());
    assert_eq!(state.planned(), 2);
    state.commit();
    assert_eq!(state.changes().0.chain_count(), 0, "nothing left to write");

    let changed = model(vec![(web.clone(), vec![ep("10.244.1.6")]), (api, vec![])]);
    state.update(
        &changed,
        Some(&BTreeSet::from([web.name.clone()])),
        &node(),
        &cfg(),
    );
    assert_eq!(state.planned(), 1, "only web's endpoints changed");
    assert_eq!(state.rules(), &plan(&changed, &node(), &cfg()).rules);
    let (write, before) = state.changes();
    let names = |r: &RuleSet| r.nat.chains.keys().cloned().collect::<Vec<_>>();
    let mut want_write = vec![svc_chain("web"), sep("web", "10.244.1.6")];
    want_write.sort();
    let mut want_before = vec![svc_chain("web"), sep("web", "10.244.1.5")];
    want_before.sort();
    assert_eq!(
        names(&write),
        want_write,
        "the /24 dispatch chain is untouched"
    );
    assert_eq!(names(&before), want_before);
    state.commit();

    // Other settings: everything again.
    let masquerade_all = ProxyConfig {
        masquerade_all: true,
        ..cfg()
    };
    state.update(&changed, Some(&BTreeSet::new()), &node(), &masquerade_all);
    assert_eq!(state.planned(), 2);
    assert_eq!(
        state.rules(),
        &plan(&changed, &node(), &masquerade_all).rules
    );
}

#[test]
fn past_a_thousand_endpoints_endpoint_rules_lose_their_comments() {
    let web = svc("web", "10.96.0.10");
    let api = svc("api", "10.96.0.11");
    let eps = |n: usize| -> Vec<Endpoint> {
        (0..n)
            .map(|i| ep(&format!("10.244.{}.{}", 1 + i / 250, 1 + i % 250)))
            .collect()
    };
    let at_limit = model(vec![
        (web.clone(), eps(LARGE_CLUSTER_ENDPOINTS - 1)),
        (api.clone(), vec![ep("10.245.0.1")]),
    ]);
    let mut state = PlanState::default();
    state.update(&at_limit, None, &node(), &cfg());
    state.commit();
    let api_sep = sep("api", "10.245.0.1");
    assert!(state.rules().nat.chains[&api_sep][0].contains("--comment"));

    // One more endpoint of web: api's rules change too, so everything is planned.
    let past = model(vec![
        (web.clone(), eps(LARGE_CLUSTER_ENDPOINTS)),
        (api, vec![ep("10.245.0.1")]),
    ]);
    state.update(&past, Some(&BTreeSet::from([web.name])), &node(), &cfg());
    assert_eq!(state.planned(), 2);
    assert_eq!(state.rules(), &plan(&past, &node(), &cfg()).rules);
    let nat = &state.rules().nat.chains;
    assert!(nat[&api_sep].iter().all(|r| !r.contains("--comment")));
    assert!(nat[&svc_chain("api")]
        .iter()
        .filter(|r| r.contains("-j NC-SEP-"))
        .all(|r| !r.contains("--comment")));
    assert!(
        nat["NC-SVCS-10.96.0"]
            .iter()
            .all(|r| r.contains("cluster IP\"")),
        "the dispatch rules keep their names"
    );
}
