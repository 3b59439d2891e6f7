//! Ephemeral containers end to end (`e2e/cluster up`): a container added to a
//! running pod through its `ephemeralcontainers` subresource (a replace, as
//! client-go's `UpdateEphemeralContainers`, and `kubectl debug`) runs in the
//! pod's sandbox, is reported in `status.ephemeralContainerStatuses`, answers
//! `kubectl exec`, `kubectl logs -c` and `kubectl attach`, shares its
//! target's processes when it names one, is not restarted when it exits, and
//! goes with the pod.

use std::time::Duration;

use nodeconfig_e2e::kubectl::{condition, eventually, get_json, kubectl, kubectl_with_stdin};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::pod::{await_pod, BUSYBOX};
use serde_json::{json, Value};

/// Pod created to Running (or an ephemeral container started), images on the nodes.
const STARTED: Duration = Duration::from_secs(90);

fn ephemeral_status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["ephemeralContainerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn exec(ns: &str, pod: &str, container: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", "-n", ns, pod, "-c", container, "--"];
    args.extend_from_slice(command);
    kubectl(&args).expect_ok("exec in the ephemeral container")
}

/// Adds an ephemeral container by replacing the pod's
/// `ephemeralcontainers` subresource with one more entry.
fn add_through_subresource(ns: &str, pod: &str, container: Value) {
    let mut p = get_json("pod", pod, Some(ns)).expect("the pod");
    let list = p["spec"]["ephemeralContainers"].take();
    let mut list = list.as_array().cloned().unwrap_or_default();
    list.push(container);
    p["spec"]["ephemeralContainers"] = Value::Array(list);
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/ephemeralcontainers");
    kubectl_with_stdin(
        &["replace", "--raw", &path, "-f", "-"],
        Some(&p.to_string()),
    )
    .expect_ok("replace the ephemeralcontainers subresource");
}

#[test]
fn an_ephemeral_container_runs_in_the_pod_answers_exec_and_logs_and_is_not_restarted() {
    let ns = Namespace::new("ephemeral");
    let ns = ns.0.as_str();
    apply_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "target", "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}],
        },
    }));
    await_pod(ns, "target", "Running", STARTED, |p| {
        p["status"]["phase"] == "Running"
    });

    add_through_subresource(
        ns,
        "target",
        json!({
            "name": "debugger", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo polo; while true; do sleep 1; done"],
            "targetContainerName": "main", "stdin": true, "tty": true,
            "env": [{"name": "DEBUG_WHO", "value": "debugger"}],
        }),
    );
    let p = await_pod(ns, "target", "debugger running", STARTED, |p| {
        ephemeral_status(p, "debugger").is_some_and(|s| s["state"]["running"].is_object())
            && p["status"]["observedGeneration"] == p["metadata"]["generation"]
    });
    let debugger = ephemeral_status(&p, "debugger").expect("status");
    assert!(
        debugger["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{debugger}"
    );
    assert!(
        debugger["imageID"].as_str().is_some_and(|i| !i.is_empty()),
        "{debugger}"
    );
    assert_eq!(debugger["restartCount"], 0);
    assert_eq!(p["metadata"]["generation"], 2);
    assert_eq!(
        condition(&p, "Ready").map(|(s, _)| s).as_deref(),
        Some("True"),
        "the pod stays Ready"
    );

    assert_eq!(
        exec(ns, "target", "debugger", &["echo", "marco"]).trim(),
        "marco"
    );
    assert_eq!(
        exec(ns, "target", "debugger", &["sh", "-c", "echo $DEBUG_WHO"]).trim(),
        "debugger"
    );
    let logs = eventually(Duration::from_secs(30), "the debugger's log", || {
        let run = kubectl(&["logs", "-n", ns, "target", "-c", "debugger"]);
        (run.ok && run.stdout.contains("polo")).then_some(run.stdout)
    });
    assert!(logs.contains("polo"), "{logs}");
    // targetContainerName: the debugger sees main's processes.
    let ps = exec(ns, "target", "debugger", &["ps"]);
    assert!(ps.contains("sleep 3600"), "{ps}");

    // kubectl debug: no target, so a process namespace of its own; it exits 3.
    kubectl(&[
        "debug",
        "-n",
        ns,
        "target",
        "--image",
        BUSYBOX,
        "--image-pull-policy",
        "IfNotPresent",
        "-c",
        "oneshot",
        "--",
        "sh",
        "-c",
        "ps; exit 3",
    ])
    .expect_ok("kubectl debug");
    let p = await_pod(ns, "target", "oneshot terminated", STARTED, |p| {
        ephemeral_status(p, "oneshot").is_some_and(|s| s["state"]["terminated"].is_object())
    });
    let oneshot = ephemeral_status(&p, "oneshot").expect("status");
    assert_eq!(oneshot["state"]["terminated"]["exitCode"], 3, "{oneshot}");
    let own = kubectl(&["logs", "-n", ns, "target", "-c", "oneshot"]).expect_ok("logs");
    assert!(!own.contains("sleep 3600"), "{own}");

    // A later change of the pod (a third one) leaves the exited one alone.
    add_through_subresource(
        ns,
        "target",
        json!({"name": "third", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
               "command": ["sleep", "3600"]}),
    );
    let p = await_pod(ns, "target", "third running", STARTED, |p| {
        ephemeral_status(p, "third").is_some_and(|s| s["state"]["running"].is_object())
    });
    let oneshot = ephemeral_status(&p, "oneshot").expect("status");
    assert_eq!(oneshot["restartCount"], 0, "never restarted: {oneshot}");
    assert_eq!(oneshot["state"]["terminated"]["exitCode"], 3, "{oneshot}");
    let statuses = p["status"]["ephemeralContainerStatuses"]
        .as_array()
        .map(Vec::len);
    assert_eq!(statuses, Some(3));

    // kubectl attach reaches one by name: what goes in comes back out of
    // `cat`, which ends when the stdin it was given once is closed.
    add_through_subresource(
        ns,
        "target",
        json!({"name": "catter", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
               "command": ["cat"], "stdin": true, "stdinOnce": true}),
    );
    await_pod(ns, "target", "catter running", STARTED, |p| {
        ephemeral_status(p, "catter").is_some_and(|s| s["state"]["running"].is_object())
    });
    let echoed = kubectl_with_stdin(
        &["attach", "-i", "-n", ns, "target", "-c", "catter"],
        Some("through attach\n"),
    )
    .expect_ok("kubectl attach");
    assert!(echoed.contains("through attach"), "{echoed}");

    // Deleting the pod stops its ephemeral containers with it.
    kubectl(&["delete", "pod", "-n", ns, "target", "--timeout=60s"]).expect_ok("delete the pod");
    assert!(get_json("pod", "target", Some(ns)).is_none());
}
