//! In-place pod resize end to end (`e2e/cluster up`): a running
//! container's cpu and memory changed through the Pod's `resize`
//! subresource reach its cgroup (read from inside the container: `cpu.max` and `memory.max`, or
//! their cgroup v1 files on a v1 host) and the
//! Pod's status without a restart; a `RestartContainer` policy restarts it;
//! a resize the node cannot fit next to another pod waits as `Deferred`.
//!
//! Each test works in its own namespace and leaves the nodes as they were, so
//! they run side by side.

use std::time::Duration;

use nodeconfig_e2e::kubectl::{condition, get_json, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::pod::{await_pod, running_and_ready, BUSYBOX};
use serde_json::{json, Value};

/// Pod created to Running and Ready, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);
/// A resize allocated and applied by the node's agent.
const RESIZED: Duration = Duration::from_secs(60);

fn pod(ns: &str, name: &str, resources: Value, resize_policy: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "exec sleep 3600"],
                "resources": resources,
                "resizePolicy": resize_policy,
            }],
        },
    })
}

/// Reads the first cgroup file of `files` that the container has (cgroup v2
/// first, then v1) and returns its first word.
fn cgroup(ns: &str, pod: &str, files: &[&str]) -> String {
    let script = files
        .iter()
        .map(|f| format!("cat /sys/fs/cgroup/{f} 2>/dev/null"))
        .collect::<Vec<_>>()
        .join(" || ");
    let out = kubectl(&[
        "exec", "-n", ns, pod, "-c", "main", "--", "sh", "-c", &script,
    ])
    .expect_ok("read a cgroup file in the container");
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The container's CFS quota in µs per 100 ms period (`cpu.max`).
fn cpu_quota(ns: &str, pod: &str) -> String {
    cgroup(ns, pod, &["cpu.max", "cpu/cpu.cfs_quota_us"])
}

/// The container's memory limit in bytes (`memory.max`).
fn memory_limit(ns: &str, pod: &str) -> String {
    cgroup(ns, pod, &["memory.max", "memory/memory.limit_in_bytes"])
}

fn resize(ns: &str, pod: &str, resources: Value) {
    let patch = json!({"spec": {"containers": [{"name": "main", "resources": resources}]}});
    kubectl(&[
        "patch",
        "pod",
        pod,
        "-n",
        ns,
        "--subresource",
        "resize",
        "--type",
        "strategic",
        "-p",
        &patch.to_string(),
    ])
    .expect_ok("patch the resize subresource");
}

/// The agent caught up with the Pod's generation and no resize condition is left.
fn resize_done(p: &Value) -> bool {
    p["status"]["observedGeneration"].as_i64() >= p["metadata"]["generation"].as_i64()
        && condition(p, "PodResizePending").is_none()
        && condition(p, "PodResizeInProgress").is_none()
        && running_and_ready(p)
}

fn status_of(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

#[test]
fn cpu_and_memory_change_in_place_without_a_restart() {
    let ns = Namespace::new("resize");
    let before = json!({
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"},
    });
    apply_json(pod(&ns.0, "web", before.clone(), json!([])));
    let p = await_pod(
        &ns.0,
        "web",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let id = status_of(&p)["containerID"].clone();
    assert_eq!(status_of(&p)["resources"], before);
    assert_eq!(status_of(&p)["allocatedResources"], before["requests"]);
    assert_eq!(cpu_quota(&ns.0, "web"), "20000");
    assert_eq!(memory_limit(&ns.0, "web"), (128u64 << 20).to_string());

    let after = json!({
        "requests": {"cpu": "150m", "memory": "96Mi"},
        "limits": {"cpu": "300m", "memory": "192Mi"},
    });
    resize(&ns.0, "web", after.clone());
    let p = await_pod(&ns.0, "web", "resized", RESIZED, |p| {
        resize_done(p) && status_of(p)["resources"] == after
    });
    assert_eq!(p["metadata"]["generation"], 2);
    assert_eq!(status_of(&p)["allocatedResources"], after["requests"]);
    assert_eq!(status_of(&p)["restartCount"], 0, "resized in place");
    assert_eq!(status_of(&p)["containerID"], id, "the same container");
    assert_eq!(cpu_quota(&ns.0, "web"), "30000");
    assert_eq!(memory_limit(&ns.0, "web"), (192u64 << 20).to_string());

    // Down again, memory limit included.
    resize(&ns.0, "web", before.clone());
    let p = await_pod(&ns.0, "web", "resized back", RESIZED, |p| {
        resize_done(p) && status_of(p)["resources"] == before
    });
    assert_eq!(status_of(&p)["restartCount"], 0);
    assert_eq!(cpu_quota(&ns.0, "web"), "20000");
    assert_eq!(memory_limit(&ns.0, "web"), (128u64 << 20).to_string());
}

#[test]
fn a_restart_container_policy_restarts_the_container_with_its_new_memory() {
    let ns = Namespace::new("resize-restart");
    let policy = json!([
        {"resourceName": "cpu", "restartPolicy": "NotRequired"},
        {"resourceName": "memory", "restartPolicy": "RestartContainer"},
    ]);
    let before =
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}});
    apply_json(pod(&ns.0, "web", before, policy));
    await_pod(
        &ns.0,
        "web",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let after = json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}});
    resize(&ns.0, "web", after.clone());
    let p = await_pod(&ns.0, "web", "restarted with the new limit", RESIZED, |p| {
        resize_done(p) && status_of(p)["restartCount"] == 1
    });
    assert_eq!(status_of(&p)["resources"], after);
    assert_eq!(memory_limit(&ns.0, "web"), (96u64 << 20).to_string());
}

#[test]
fn a_resize_that_does_not_fit_next_to_another_pod_is_deferred() {
    let ns = Namespace::new("resize-deferred");
    let small = json!({"requests": {"cpu": "10m"}});
    apply_json(pod(&ns.0, "web", small.clone(), json!([])));
    let p = await_pod(
        &ns.0,
        "web",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let node_name = p["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A neighbour on the same node holding 100m.
    let mut neighbour = pod(
        &ns.0,
        "neighbour",
        json!({"requests": {"cpu": "100m"}}),
        json!([]),
    );
    neighbour["spec"]["nodeName"] = json!(node_name);
    apply_json(neighbour);
    await_pod(
        &ns.0,
        "neighbour",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );

    let node = get_json("node", &node_name, None).expect("the pod's node");
    let allocatable = node["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let milli = match allocatable.strip_suffix('m') {
        Some(m) => m.parse::<i64>().unwrap_or(0),
        None => allocatable.parse::<i64>().unwrap_or(0) * 1000,
    };
    // All of the node: fits the node (the API server lets it through) but
    // not next to the neighbour.
    let too_big = json!({"requests": {"cpu": format!("{milli}m")}});
    resize(&ns.0, "web", too_big);
    let p = await_pod(&ns.0, "web", "PodResizePending Deferred", RESIZED, |p| {
        p["status"]["observedGeneration"].as_i64() >= p["metadata"]["generation"].as_i64()
            && condition(p, "PodResizePending").is_some_and(|(_, reason)| reason == "Deferred")
    });
    let pending = p["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodResizePending"))
        .cloned()
        .unwrap_or_default();
    let message = pending["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Node didn't have enough resource: cpu"),
        "{message}"
    );
    assert_eq!(pending["observedGeneration"], 2);
    assert_eq!(
        status_of(&p)["allocatedResources"],
        small["requests"],
        "still the old allocation"
    );

    // Asking for less again ends the wait.
    resize(&ns.0, "web", json!({"requests": {"cpu": "20m"}}));
    let p = await_pod(&ns.0, "web", "resized", RESIZED, |p| {
        resize_done(p) && status_of(p)["allocatedResources"] == json!({"cpu": "20m"})
    });
    assert_eq!(status_of(&p)["restartCount"], 0);
}
