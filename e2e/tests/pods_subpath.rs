//! What the kubelet builds a pod's containers from, end to end (`e2e/cluster
//! up`): a volume mount's `subPathExpr` expanded with the container's
//! environment, and the pod's sysctls (safe ones set in the sandbox, others
//! rejected at admission).
//!
//! Each test works in its own namespace and leaves the nodes as they were, so
//! they run side by side.

use std::time::{Duration, Instant};

use nodeconfig_e2e::kubectl::{apply, condition, eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::Namespace;
use serde_json::{json, Value};

const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";
/// Pod created to Running and Ready, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);

fn running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && condition(p, "Ready").is_some_and(|(s, _)| s == "True")
}

#[track_caller]
fn await_pod(ns: &str, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    let p = eventually(STARTED, &format!("pod {ns}/{name}: {what}"), || {
        get_json("pod", name, Some(ns)).filter(|p| f(p))
    });
    println!("pod {ns}/{name}: {what} after {:.1?}", started.elapsed());
    p
}

fn pod(ns: &str, name: &str, container: Value, extra: Value) -> Value {
    let mut spec = json!({"containers": [container], "terminationGracePeriodSeconds": 1});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

fn busybox(script: &str) -> Value {
    json!({"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]})
}

fn exec(ns: &str, pod: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", "-n", ns, pod, "-c", "main", "--"];
    args.extend_from_slice(command);
    kubectl(&args).expect_ok("exec in the pod")
}

fn waiting(p: &Value) -> Option<(String, String)> {
    let state = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    Some((
        state["reason"].as_str()?.to_string(),
        state["message"].as_str().unwrap_or_default().to_string(),
    ))
}

#[test]
fn a_sub_path_expr_mounts_the_directory_its_environment_names() {
    let ns = Namespace::new("subpathexpr");
    let mut writer = busybox("echo written-by-$POD_NAME > /sub/out && exec sleep 3600");
    writer["env"] =
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
    writer["volumeMounts"] = json!([
        {"name": "work", "mountPath": "/sub", "subPathExpr": "logs/$(POD_NAME)"},
        {"name": "work", "mountPath": "/volume"},
    ]);
    let volumes = json!({"volumes": [{"name": "work", "emptyDir": {}}]});
    apply(&pod(&ns.0, "writer", writer, volumes.clone()).to_string()).expect_ok("apply");
    await_pod(&ns.0, "writer", "Running and Ready", running_and_ready);
    let out = eventually(Duration::from_secs(20), "the file in the subPath", || {
        let run = kubectl(&[
            "exec",
            "-n",
            &ns.0,
            "writer",
            "-c",
            "main",
            "--",
            "cat",
            "/volume/logs/writer/out",
        ]);
        run.ok.then_some(run.stdout)
    });
    assert_eq!(out.trim(), "written-by-writer");
    assert_eq!(
        exec(&ns.0, "writer", &["ls", "/volume/logs"]).trim(),
        "writer"
    );

    // A variable the container does not have: the kubelet's config error,
    // and the container is never created.
    let mut broken = busybox("exec sleep 3600");
    broken["volumeMounts"] =
        json!([{"name": "work", "mountPath": "/sub", "subPathExpr": "$(NOT_SET)"}]);
    apply(&pod(&ns.0, "broken", broken, volumes).to_string()).expect_ok("apply");
    let p = await_pod(&ns.0, "broken", "CreateContainerConfigError", |p| {
        waiting(p).is_some_and(|(reason, _)| reason == "CreateContainerConfigError")
    });
    let (_, message) = waiting(&p).unwrap_or_default();
    assert!(message.contains("missing value for NOT_SET"), "{message}");
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn safe_sysctls_are_set_in_the_pod_and_unsafe_ones_rejected() {
    let ns = Namespace::new("sysctls");
    let sysctls = json!({"securityContext": {"sysctls": [
        {"name": "kernel.shm_rmid_forced", "value": "1"},
        {"name": "net/ipv4/ip_local_port_range", "value": "40000 40100"},
    ]}});
    apply(&pod(&ns.0, "safe", busybox("exec sleep 3600"), sysctls).to_string()).expect_ok("apply");
    await_pod(&ns.0, "safe", "Running and Ready", running_and_ready);
    assert_eq!(
        exec(&ns.0, "safe", &["cat", "/proc/sys/kernel/shm_rmid_forced"]).trim(),
        "1"
    );
    let range = exec(
        &ns.0,
        "safe",
        &["cat", "/proc/sys/net/ipv4/ip_local_port_range"],
    );
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["40000", "40100"]
    );

    let unsafe_sysctl =
        json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "10000000"}]}});
    apply(&pod(&ns.0, "unsafe", busybox("exec sleep 3600"), unsafe_sysctl).to_string())
        .expect_ok("apply");
    let p = await_pod(&ns.0, "unsafe", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
}
