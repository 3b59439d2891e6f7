//! The NodeConfig API on the real API server of the local cluster: the CRD
//! installs, explains itself, accepts valid objects and refuses invalid ones
//! with a message that names the field.

use std::time::Duration;

use nodeconfig_e2e::kubectl::{apply, create, eventually, kubectl, require_cluster};
use nodeconfig_e2e::{pinned, repo_root};
use serde_json::{json, Value};

fn ensure_crd() {
    require_cluster();
    let crd = repo_root().join(nodeconfig_crds::crd::CRD_FILE);
    kubectl(&["apply", "-f", crd.to_str().unwrap()]).expect_ok("apply the CRD");
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/nodeconfigs.nodeconfig.dev",
        "--timeout=60s",
    ])
    .expect_ok("wait for the CRD");
}

/// A NodeConfig manifest named `name` whose spec is `nodeName: name` merged with `spec`.
fn nodeconfig(name: &str, spec: Value) -> String {
    let mut full = json!({"nodeName": name});
    merge(&mut full, spec);
    json!({
        "apiVersion": "nodeconfig.dev/v1alpha1",
        "kind": "NodeConfig",
        "metadata": {"name": name},
        "spec": full,
    })
    .to_string()
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn delete(name: &str) {
    let _ = kubectl(&[
        "delete",
        "nodeconfig",
        name,
        "--ignore-not-found",
        "--wait=false",
    ]);
}

#[test]
fn api_server_runs_the_pinned_version() {
    require_cluster();
    let out = kubectl(&["version", "-o", "json"]).expect_ok("version");
    let version: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        pinned("K8S_VERSION")
    );
}

#[test]
fn crd_is_established_and_explain_shows_descriptions() {
    ensure_crd();
    // The OpenAPI document is published a moment after the CRD is Established.
    let explained = eventually(
        Duration::from_secs(30),
        "kubectl explain nodeconfig.spec.proxy",
        || {
            let run = kubectl(&["explain", "nodeconfig.spec.proxy"]);
            run.ok.then_some(run.stdout)
        },
    );
    assert!(explained.contains("The service proxy"), "{explained}");
    assert!(explained.contains("minSyncPeriod"), "{explained}");
    assert!(
        explained.contains("Shortest interval between two syncs"),
        "{explained}"
    );
    let names = kubectl(&["api-resources", "--api-group=nodeconfig.dev", "-o", "wide"])
        .expect_ok("api-resources");
    assert!(
        names.contains("nodeconfigs") && names.contains(" nc ") && names.contains("false"),
        "{names}"
    );
}

#[test]
fn valid_nodeconfigs_are_accepted_and_defaulted() {
    ensure_crd();
    let cases = [
        ("valid-minimal", json!({})),
        (
            "valid-kubelet",
            json!({
                "mode": "Kubelet",
                "runtime": {"criEndpoint": "unix:///run/nc/containerd.sock", "prePullImages": ["busybox:1.35"]},
                "pods": {"maxPods": 30, "podCIDR": "10.244.7.0/24", "labels": {"rack": "r1"},
                         "taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}],
                         "clusterDNS": ["10.96.0.10", "fd00::a"], "clusterDomain": "corp.example"},
                "proxy": {"syncPeriod": "1m30s", "minSyncPeriod": "500ms", "clusterCIDR": "10.244.0.0/16",
                          "masqueradeAll": true, "nodePortAddresses": ["10.200.0.0/16", "fd00::/64"]},
            }),
        ),
        (
            "valid-paused",
            json!({"paused": true, "proxy": {"enabled": false, "syncPeriod": "1s", "minSyncPeriod": "1s"}}),
        ),
    ];
    for (name, spec) in cases {
        delete(name);
        let run = create(&nodeconfig(name, spec));
        assert!(run.ok, "{name} was refused: {}", run.stderr);
    }
    let out = kubectl(&["get", "nodeconfig", "valid-minimal", "-o", "json"]).expect_ok("get");
    let nc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(nc["spec"]["mode"], "Companion");
    assert_eq!(nc["spec"]["proxy"]["syncPeriod"], "30s");
    assert_eq!(nc["spec"]["proxy"]["minSyncPeriod"], "1s");
    assert_eq!(nc["spec"]["pods"]["maxPods"], 110);
    assert_eq!(nc["spec"]["pods"]["clusterDomain"], "cluster.local");
    assert_eq!(
        nc["spec"]["runtime"]["criEndpoint"],
        "unix:///run/containerd/containerd.sock"
    );
    // The typed client reads back what the server stored.
    let typed: nodeconfig_crds::NodeConfig = serde_json::from_value(nc).unwrap();
    assert_eq!(
        typed.spec,
        nodeconfig_crds::NodeConfigSpec::for_node("valid-minimal")
    );
    for (name, _) in [
        ("valid-minimal", ()),
        ("valid-kubelet", ()),
        ("valid-paused", ()),
    ] {
        delete(name);
    }
}

#[test]
fn invalid_nodeconfigs_are_refused_with_the_field_named() {
    ensure_crd();
    let long = "x".repeat(513);
    let many_cidrs: Vec<String> = (0..17).map(|i| format!("10.{i}.0.0/16")).collect();
    let many_images: Vec<String> = (0..33).map(|i| format!("image-{i}:1")).collect();
    let many_labels: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "nodeName differs from the name",
            json!({"nodeName": "someone-else"}),
            "spec.nodeName",
        ),
        ("unknown mode", json!({"mode": "Kubeproxy"}), "spec.mode"),
        (
            "unknown proxy mode",
            json!({"proxy": {"mode": "ipvs"}}),
            "spec.proxy.mode",
        ),
        (
            "syncPeriod is not a duration",
            json!({"proxy": {"syncPeriod": "10 sec"}}),
            "spec.proxy.syncPeriod",
        ),
        (
            "minSyncPeriod is not a duration",
            json!({"proxy": {"minSyncPeriod": "soon"}}),
            "spec.proxy.minSyncPeriod",
        ),
        (
            "minSyncPeriod longer than syncPeriod",
            json!({"proxy": {"syncPeriod": "10s", "minSyncPeriod": "1m"}}),
            "spec.proxy.minSyncPeriod",
        ),
        (
            "clusterCIDR is not a CIDR",
            json!({"proxy": {"clusterCIDR": "10.0.0.0/33"}}),
            "spec.proxy.clusterCIDR",
        ),
        (
            "podCIDR is not a CIDR",
            json!({"pods": {"podCIDR": "10.244.1.0"}}),
            "spec.pods.podCIDR",
        ),
        (
            "nodePortAddresses holds an address",
            json!({"proxy": {"nodePortAddresses": ["10.1.2.3"]}}),
            "spec.proxy.nodePortAddresses",
        ),
        (
            "criEndpoint is not a unix socket",
            json!({"runtime": {"criEndpoint": "tcp://1.2.3.4:1"}}),
            "spec.runtime.criEndpoint",
        ),
        (
            "clusterDNS holds a name",
            json!({"pods": {"clusterDNS": ["kube-dns.kube-system"]}}),
            "spec.pods.clusterDNS",
        ),
        (
            "clusterDNS has more than 3 servers",
            json!({"pods": {"clusterDNS": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]}}),
            "spec.pods.clusterDNS",
        ),
        (
            "clusterDomain is not a domain",
            json!({"pods": {"clusterDomain": "Cluster_Local"}}),
            "spec.pods.clusterDomain",
        ),
        (
            "maxPods out of range",
            json!({"pods": {"maxPods": 0}}),
            "spec.pods.maxPods",
        ),
        (
            "too many nodePortAddresses",
            json!({"proxy": {"nodePortAddresses": many_cidrs}}),
            "spec.proxy.nodePortAddresses",
        ),
        (
            "too many prePullImages",
            json!({"runtime": {"prePullImages": many_images}}),
            "spec.runtime.prePullImages",
        ),
        (
            "sandboxImage too long",
            json!({"runtime": {"sandboxImage": long}}),
            "spec.runtime.sandboxImage",
        ),
        (
            "too many labels",
            json!({"pods": {"labels": many_labels}}),
            "spec.pods.labels",
        ),
        (
            "unknown taint effect",
            json!({"pods": {"taints": [{"key": "k", "effect": "Evict"}]}}),
            "spec.pods.taints[0].effect",
        ),
    ];
    let mut failures = Vec::new();
    for (what, spec, field) in cases {
        let name = "invalid-case";
        let run = create(&nodeconfig(name, spec));
        if run.ok {
            delete(name);
            failures.push(format!("{what}: accepted"));
        } else if !run.stderr.contains(field) {
            failures.push(format!(
                "{what}: refused without naming {field}: {}",
                run.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid NodeConfigs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn node_name_cannot_change() {
    ensure_crd();
    let name = "immutable-node-name";
    delete(name);
    create(&nodeconfig(name, json!({}))).expect_ok("create");
    let run = kubectl(&[
        "patch",
        "nodeconfig",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"nodeName":"renamed"}}"#,
    ]);
    assert!(!run.ok, "nodeName changed");
    assert!(
        run.stderr.contains("spec.nodeName is immutable"),
        "{}",
        run.stderr
    );
    // Other fields stay editable.
    kubectl(&[
        "patch",
        "nodeconfig",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ])
    .expect_ok("patch paused");
    delete(name);
}

#[test]
fn get_nodeconfigs_prints_the_columns() {
    ensure_crd();
    let name = "columns-node";
    delete(name);
    apply(&nodeconfig(name, json!({"mode": "Kubelet"}))).expect_ok("apply");
    let status = json!({"status": {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "AgentReady", "message": "ok",
             "lastTransitionTime": "2026-11-29T10:00:00Z"},
            {"type": "ConfigApplied", "status": "True", "reason": "Applied", "message": "generation 1",
             "lastTransitionTime": "2026-11-29T10:00:00Z"},
            {"type": "AgentUpToDate", "status": "False", "reason": "VersionSkew",
             "message": "node-agent 0.1.0 runs; 0.2.0 is desired",
             "lastTransitionTime": "2026-11-29T10:00:00Z"}],
        "agent": {"version": "0.1.0", "mode": "Kubelet"},
        "runtime": {"version": "containerd 1.6.20", "sandboxes": 3, "images": 2,
                    "containers": {"created": 0, "running": 4, "exited": 1, "unknown": 0}},
        "pods": {"summary": "3/4", "desired": 4, "running": 3, "pending": 1, "failed": 0, "restarts": 2},
        "proxy": {"services": 12, "endpoints": 20, "rules": 160, "failedSyncs": 0,
                  "lastSyncTime": "2026-11-29T10:00:05Z"},
    }});
    kubectl(&[
        "patch",
        "nodeconfig",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
    .expect_ok("patch status");
    let table = kubectl(&["get", "nc", name]).expect_ok("get nc");
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MODE",
            "READY",
            "PODS",
            "SERVICES",
            "RULES",
            "AGENT",
            "UP-TO-DATE",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..8],
        [name, "Kubelet", "True", "3/4", "12", "160", "0.1.0", "False"],
        "{table}"
    );
    let wide = kubectl(&["get", "nc", name, "-o", "wide"]).expect_ok("get nc -o wide");
    let header = wide.lines().next().unwrap_or_default();
    for column in ["RUNTIME", "CONFIG", "PAUSED", "LAST-SYNC"] {
        assert!(header.contains(column), "{wide}");
    }
    assert!(
        wide.contains("containerd 1.6.20") && wide.contains("Applied"),
        "{wide}"
    );
    delete(name);
}
