use std::path::Path;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::dns_tests::host_dns;
use crate::pods::cri_config::dns::ClusterDns;
use crate::pods::cri_config::sandbox::*;
use crate::pods::runtime_view::{LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

fn pod(spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "app", "image": "nginx"}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1",
                     "annotations": {"team": "blue"}},
        "spec": spec
    }))
    .unwrap()
}

fn config(pod: &Pod) -> cri::PodSandboxConfig {
    let dns = host_dns();
    sandbox_config(
        pod,
        &SandboxContext {
            node_name: "node-a",
            pod_logs_root: Path::new("/var/log/pods"),
            attempt: 2,
            host_dns: &dns,
            cluster_dns: ClusterDns::NONE,
        },
    )
    .unwrap()
}

fn security(config: &cri::PodSandboxConfig) -> cri::LinuxSandboxSecurityContext {
    config.linux.clone().unwrap().security_context.unwrap()
}

#[test]
fn identity_labels_and_log_directory() {
    let config = config(&pod(json!({})));
    let meta = config.metadata.clone().unwrap();
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str(),
            meta.attempt
        ),
        ("web-0", "shop", "u-1", 2)
    );
    assert_eq!(config.hostname, "web-0");
    assert_eq!(config.log_directory, "/var/log/pods/shop_web-0_u-1");
    assert_eq!(config.labels[LABEL_POD_UID], "u-1");
    assert_eq!(config.labels[LABEL_POD_NAME], "web-0");
    assert_eq!(config.labels[LABEL_POD_NAMESPACE], "shop");
    assert_eq!(config.annotations["team"], "blue");
}

#[test]
fn hostname_comes_from_the_spec_or_the_name_and_is_the_hosts_on_its_network() {
    assert_eq!(config(&pod(json!({"hostname": "db"}))).hostname, "db");
    assert_eq!(
        config(&pod(json!({"hostNetwork": true, "hostname": "db"}))).hostname,
        "",
        "the host's UTS namespace keeps the host's name; runc refuses to set one there"
    );
    let mut long = pod(json!({}));
    long.metadata.name = Some(format!("{}-{}", "a".repeat(62), "b".repeat(20)));
    assert_eq!(
        config(&long).hostname,
        "a".repeat(62),
        "cut to 63 characters, then the trailing '-' dropped"
    );
}

#[test]
fn sandbox_carries_the_pods_resolver_with_cluster_dns() {
    let dns = host_dns();
    let servers = ["10.96.0.10".to_string()];
    let config = sandbox_config(
        &pod(json!({})),
        &SandboxContext {
            node_name: "node-a",
            pod_logs_root: Path::new("/var/log/pods"),
            attempt: 0,
            host_dns: &dns,
            cluster_dns: ClusterDns {
                servers: &servers,
                domain: "cluster.local",
            },
        },
    )
    .unwrap();
    let resolver = config.dns_config.unwrap();
    assert_eq!(resolver.servers, ["10.96.0.10"]);
    assert_eq!(resolver.searches[0], "shop.svc.cluster.local");
}

#[test]
fn host_ports_become_port_mappings() {
    let config = config(&pod(json!({"containers": [
        {"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
            {"containerPort": 9090}
        ]},
        {"name": "b", "ports": [{"containerPort": 80, "hostPort": 8080}]}
    ]})));
    assert_eq!(
        config.port_mappings,
        [
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            },
            cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
        ]
    );
}

#[test]
fn namespaces_follow_host_flags_and_process_sharing() {
    use cri::NamespaceMode::{Container, Node, Pod as PodNs};
    let modes = |spec: Value| {
        let ns = security(&config(&pod(spec))).namespace_options.unwrap();
        (ns.network, ns.pid, ns.ipc)
    };
    assert_eq!(
        modes(json!({})),
        (PodNs as i32, Container as i32, PodNs as i32)
    );
    assert_eq!(
        modes(json!({"hostNetwork": true, "hostPID": true, "hostIPC": true})),
        (Node as i32, Node as i32, Node as i32)
    );
    assert_eq!(
        modes(json!({"shareProcessNamespace": true})).1,
        PodNs as i32
    );
}

#[test]
fn pod_security_context_and_sysctls() {
    let config = config(&pod(json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                            "supplementalGroups": [4000, 5000],
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
        "containers": [{"name": "a"}, {"name": "b", "securityContext": {"privileged": true}}]
    })));
    let sc = security(&config);
    assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
    assert_eq!(sc.run_as_group.map(|v| v.value), Some(3000));
    assert_eq!(sc.supplemental_groups, [2000, 4000, 5000]);
    assert!(
        sc.privileged,
        "a privileged container needs a privileged sandbox"
    );
    assert_eq!(
        config.linux.unwrap().sysctls["net.ipv4.ip_unprivileged_port_start"],
        "0"
    );
    let plain = security(&self::config(&pod(json!({}))));
    assert!(!plain.privileged);
    assert_eq!(plain.run_as_user, None);
}

#[test]
fn the_hostname_is_the_fqdn_with_set_hostname_as_fqdn() {
    let dns = host_dns();
    let ctx = SandboxContext {
        node_name: "node-a",
        pod_logs_root: Path::new("/var/log/pods"),
        attempt: 0,
        host_dns: &dns,
        cluster_dns: ClusterDns {
            servers: &[],
            domain: "cluster.local",
        },
    };
    let fqdn = pod(json!({"hostname": "db", "subdomain": "sts", "setHostnameAsFQDN": true}));
    assert_eq!(
        sandbox_config(&fqdn, &ctx).unwrap().hostname,
        "db.sts.shop.svc.cluster.local"
    );
    let too_long =
        pod(json!({"hostname": "h".repeat(50), "subdomain": "sts", "setHostnameAsFQDN": true}));
    assert!(sandbox_config(&too_long, &ctx).is_err());
    let host_network = pod(json!({"hostNetwork": true, "hostname": "db"}));
    assert_eq!(sandbox_config(&host_network, &ctx).unwrap().hostname, "");
}

#[test]
fn a_pod_of_its_own_user_namespace_gets_no_sandbox() {
    let dns = host_dns();
    let ctx = SandboxContext {
        node_name: "node-a",
        pod_logs_root: Path::new("/var/log/pods"),
        attempt: 0,
        host_dns: &dns,
        cluster_dns: ClusterDns::NONE,
    };
    let err = sandbox_config(&pod(json!({"hostUsers": false})), &ctx).unwrap_err();
    assert_eq!(
        err.to_string(),
        "can't set `spec.hostUsers: false`, runtime does not support user namespaces"
    );
    assert!(sandbox_config(&pod(json!({"hostUsers": true})), &ctx).is_ok());
}
