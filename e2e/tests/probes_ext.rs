//! HTTPS and gRPC probes end to end (`e2e/cluster up`), against the upstream
//! suite's own servers: agnhost `porter` serving TLS with its self-signed
//! `localhost` certificate (the probe dials the pod IP, which that certificate
//! does not name: the kubelet does not verify it) and agnhost
//! `grpc-health-checking` (grpc.health.v1 on port 5000). A pod whose probes
//! all answer becomes Ready; one whose gRPC service says NOT_SERVING stays
//! unready and gets the kubelet's `Unhealthy` event.

use std::sync::Once;
use std::time::Duration;

use nodeconfig_e2e::cluster::cluster;
use nodeconfig_e2e::kubectl::{apply, condition, eventually, get_json, kubectl, require_cluster};
use nodeconfig_e2e::namespace::Namespace;
use serde_json::{json, Value};

/// The suite's agnhost image in the cluster's registry ($NC_REGISTRY, the
/// tag e2e/scripts/lib/addons.sh builds), pushed by `e2e/cluster suite-images`.
const AGNHOST: &str = "10.200.0.1:5000/e2e-test-images/agnhost:2.66.1";
/// Image pull (first time on a node) plus start and the first probes.
const READY: Duration = Duration::from_secs(120);

/// Pushes the suite's images once per test run (a no-op when they are there).
fn require_agnhost() {
    static PUSHED: Once = Once::new();
    require_cluster();
    PUSHED.call_once(|| cluster(&["suite-images"]));
}

fn pod(ns: &str, name: &str, containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 1},
    })
}

/// agnhost grpc-health-checking on 5000 (its HTTP control port on 8081),
/// with a gRPC readiness probe.
fn grpc_server(extra_args: &[&str]) -> Value {
    let mut args = vec![
        "grpc-health-checking",
        "--port",
        "5000",
        "--http-port",
        "8081",
    ];
    args.extend_from_slice(extra_args);
    json!({
        "name": "grpc", "image": AGNHOST, "imagePullPolicy": "IfNotPresent", "args": args,
        "ports": [{"containerPort": 5000}],
        "readinessProbe": {"grpc": {"port": 5000}, "periodSeconds": 1, "timeoutSeconds": 5},
    })
}

fn ready(p: &Value) -> bool {
    condition(p, "Ready").is_some_and(|(s, _)| s == "True")
}

fn container_ready(p: &Value, name: &str) -> Option<bool> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["ready"]
        .as_bool()
}

fn running(p: &Value, name: &str) -> bool {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .is_some_and(|c| c["state"]["running"].is_object())
}

/// Messages of the pod's events with `reason`.
fn event_messages(ns: &str, pod: &str, reason: &str) -> Vec<String> {
    let selector = format!("involvedObject.name={pod},reason={reason}");
    let run = kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &selector,
        "-o",
        "json",
    ]);
    serde_json::from_str::<Value>(&run.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn https_and_grpc_readiness_probes_make_the_pod_ready() {
    require_agnhost();
    let ns = Namespace::new("probes-ready");
    let porter = json!({
        "name": "porter", "image": AGNHOST, "imagePullPolicy": "IfNotPresent", "args": ["porter"],
        "env": [{"name": "SERVE_TLS_PORT_8443", "value": "tls-ok"}],
        "ports": [{"name": "https", "containerPort": 8443}],
        "readinessProbe": {
            "httpGet": {"scheme": "HTTPS", "port": "https", "path": "/healthz",
                        "httpHeaders": [{"name": "X-Probe", "value": "e2e"}]},
            "periodSeconds": 1,
        },
    });
    apply(&pod(&ns.0, "both", json!([porter, grpc_server(&[])])).to_string()).expect_ok("apply");
    let p = eventually(READY, "pod both Ready", || {
        get_json("pod", "both", Some(&ns.0)).filter(ready)
    });
    assert_eq!(container_ready(&p, "porter"), Some(true), "{p}");
    assert_eq!(container_ready(&p, "grpc"), Some(true), "{p}");
}

#[test]
fn a_grpc_service_not_serving_keeps_the_pod_unready() {
    require_agnhost();
    let ns = Namespace::new("probes-unready");
    // NOT_SERVING from the first second on.
    let grpc = grpc_server(&["--delay-unhealthy-sec", "0"]);
    apply(&pod(&ns.0, "sick", json!([grpc])).to_string()).expect_ok("apply");
    eventually(READY, "pod sick running", || {
        get_json("pod", "sick", Some(&ns.0)).filter(|p| running(p, "grpc"))
    });
    let message = eventually(Duration::from_secs(60), "an Unhealthy event", || {
        event_messages(&ns.0, "sick", "Unhealthy")
            .into_iter()
            .find(|m| m.starts_with("Readiness probe failed"))
    });
    assert_eq!(
        message,
        "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
    );
    // A dozen probes later, still running and still not ready.
    std::thread::sleep(Duration::from_secs(12));
    let p = get_json("pod", "sick", Some(&ns.0)).expect("the pod");
    assert!(running(&p, "grpc"), "{p}");
    assert!(!ready(&p), "{p}");
    assert_eq!(container_ready(&p, "grpc"), Some(false), "{p}");
}
