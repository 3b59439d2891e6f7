use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::pods::cri_config::dns::*;

fn pod(spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "app", "image": "nginx"}]);
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
        "spec": spec
    }))
    .unwrap()
}

/// The node's resolver of these tests (also the sandbox tests').
pub(super) fn host_dns() -> cri::DnsConfig {
    parse_resolv_conf(
        "# written by the installer\n\
         nameserver 192.168.1.1\n\
         nameserver 192.168.1.2 ; secondary\n\
         search old.example\n\
         search corp.example. . lab.example\n\
         options ndots:2 timeout:1\n\
         options ndots:3 rotate\n",
    )
}

const SERVERS: [String; 0] = [];

fn cluster_servers() -> Vec<String> {
    vec!["10.96.0.10".to_string()]
}

/// The resolver of `pod` on a node with cluster DNS 10.96.0.10 in `cluster.local`.
fn with_cluster_dns(pod: &Pod) -> PodDns {
    let servers = cluster_servers();
    pod_dns(
        pod,
        &host_dns(),
        &ClusterDns {
            servers: &servers,
            domain: "cluster.local",
        },
    )
}

fn without_cluster_dns(pod: &Pod) -> PodDns {
    pod_dns(pod, &host_dns(), &ClusterDns::NONE)
}

fn cluster_resolver() -> cri::DnsConfig {
    cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec![
            "shop.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
            "corp.example".into(),
            "lab.example".into(),
        ],
        options: vec!["ndots:5".into()],
    }
}

#[test]
fn resolv_conf_reads_like_the_kubelet() {
    let dns = host_dns();
    assert_eq!(dns.servers, ["192.168.1.1", "192.168.1.2"]);
    assert_eq!(
        dns.searches,
        ["corp.example", "lab.example"],
        "the last search line wins"
    );
    assert_eq!(dns.options, ["ndots:3", "timeout:1", "rotate"]);
    assert_eq!(parse_resolv_conf(""), cri::DnsConfig::default());
}

#[test]
fn cluster_first_pods_resolve_through_cluster_dns_then_the_nodes_domains() {
    for policy in [None, Some("ClusterFirst")] {
        let dns = with_cluster_dns(&pod(json!({"dnsPolicy": policy})));
        assert_eq!(dns.config, cluster_resolver(), "{policy:?}");
        assert!(dns.warnings.is_empty());
    }
}

#[test]
fn host_network_pods_use_cluster_dns_only_with_cluster_first_with_host_net() {
    let plain = with_cluster_dns(&pod(json!({"hostNetwork": true})));
    assert_eq!(
        plain.config,
        host_dns(),
        "ClusterFirst on the host network falls back to the node's resolver"
    );
    let with_host_net = with_cluster_dns(&pod(json!({
        "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"
    })));
    assert_eq!(with_host_net.config, cluster_resolver());
}

#[test]
fn default_policy_uses_the_node_resolver_even_with_cluster_dns() {
    let dns = with_cluster_dns(&pod(json!({"dnsPolicy": "Default"})));
    assert_eq!(dns.config, host_dns());
    assert!(dns.warnings.is_empty());
}

#[test]
fn without_cluster_dns_cluster_first_falls_back_to_the_node_with_a_warning() {
    for policy in [None, Some("ClusterFirst"), Some("ClusterFirstWithHostNet")] {
        let dns = without_cluster_dns(&pod(json!({"dnsPolicy": policy})));
        assert_eq!(dns.config, host_dns(), "{policy:?}");
        assert_eq!(dns.warnings.len(), 1, "{policy:?}");
        assert_eq!(dns.warnings[0].reason, "MissingClusterDNS");
        assert!(
            dns.warnings[0].message.contains("web-0_shop(u-1)"),
            "{}",
            dns.warnings[0].message
        );
    }
    let default = without_cluster_dns(&pod(json!({"dnsPolicy": "Default"})));
    assert!(
        default.warnings.is_empty(),
        "Default never asked for cluster DNS"
    );
}

#[test]
fn an_empty_cluster_domain_adds_no_cluster_search_domains() {
    let servers = cluster_servers();
    let dns = pod_dns(
        &pod(json!({})),
        &host_dns(),
        &ClusterDns {
            servers: &servers,
            domain: "",
        },
    );
    assert_eq!(dns.config.searches, ["corp.example", "lab.example"]);
    assert_eq!(dns.config.servers, ["10.96.0.10"]);
}

#[test]
fn dns_none_uses_only_the_pods_dns_config() {
    let dns = with_cluster_dns(&pod(json!({
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["svc.example"],
                      "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}
    })));
    assert_eq!(
        dns.config,
        cri::DnsConfig {
            servers: vec!["1.1.1.1".into()],
            searches: vec!["svc.example".into()],
            options: vec!["ndots:1".into(), "edns0".into()],
        }
    );
    assert!(dns.warnings.is_empty());
}

#[test]
fn dns_config_merges_into_the_node_resolver_and_nameservers_are_cut_to_three() {
    let dns = pod_dns(
        &pod(json!({
            "dnsPolicy": "Default",
            "dnsConfig": {"nameservers": ["192.168.1.2", "8.8.8.8", "9.9.9.9"],
                          "searches": ["lab.example", "extra.example"],
                          "options": [{"name": "ndots", "value": "5"}, {"name": "single-request"}]}
        })),
        &host_dns(),
        &ClusterDns {
            servers: &SERVERS,
            domain: "cluster.local",
        },
    );
    assert_eq!(
        dns.config.servers,
        ["192.168.1.1", "192.168.1.2", "8.8.8.8"],
        "duplicates dropped, at most 3 nameservers"
    );
    assert_eq!(
        dns.config.searches,
        ["corp.example", "lab.example", "extra.example"]
    );
    assert_eq!(
        dns.config.options,
        ["ndots:5", "timeout:1", "rotate", "single-request"]
    );
    assert_eq!(dns.warnings.len(), 1);
    assert_eq!(dns.warnings[0].reason, "DNSConfigForming");
    assert_eq!(
        dns.warnings[0].message,
        "Nameserver limits were exceeded, some nameservers have been omitted, \
         the applied nameserver line is: 192.168.1.1 192.168.1.2 8.8.8.8"
    );
}

#[test]
fn search_domains_are_cut_to_the_kubelets_limits_with_a_warning() {
    // 40 domains: the first 32 are kept, and of those the ones over 253
    // characters are dropped.
    let mut searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    searches[1] = format!("{}.example", "x".repeat(250));
    let dns = with_cluster_dns(&pod(json!({"dnsConfig": {"searches": searches}})));
    let got = &dns.config.searches;
    assert_eq!(got.len(), 31, "32 kept, one of them too long");
    assert!(got.iter().all(|s| s.len() <= 253));
    assert_eq!(got[0], "shop.svc.cluster.local");
    assert_eq!(dns.warnings[0].reason, "DNSConfigForming");
    assert!(dns.warnings[0]
        .message
        .starts_with("Search Line limits were exceeded"));

    // 20 domains of 200 characters: the line is cut from the end to 2048.
    let long: Vec<String> = (0..20)
        .map(|i| format!("{i:02}{}.example", "y".repeat(190)))
        .collect();
    let dns = with_cluster_dns(&pod(json!({"dnsConfig": {"searches": long}})));
    let line = dns.config.searches.join(" ");
    assert!(line.len() <= 2048, "{}", line.len());
    assert!(
        dns.config.searches.len() < 25,
        "some long domains were dropped"
    );
    assert_eq!(dns.config.searches[0], "shop.svc.cluster.local");
    assert_eq!(dns.warnings.len(), 1);
}
