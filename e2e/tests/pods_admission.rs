//! What the node refuses to run as asked, end to end (`e2e/cluster up`), as
//! the kubelet refuses it: a second pod on a host port another pod holds
//! (rejected, `NodePorts`), an image that runs as root under `runAsNonRoot`
//! (`CreateContainerConfigError`), a pod of its own user namespace (no
//! sandbox, `FailedCreatePodSandBox`), an AppArmor profile on a host without
//! AppArmor (rejected, `AppArmor`); an unsafe sysctl the node allows
//! (`--allowed-unsafe-sysctls`) is set; and the pod's `observedGeneration`
//! follows a change of its spec.
//!
//! Each test works in its own namespace and leaves the nodes as they were, so
//! they run side by side.

use std::time::Duration;

use nodeconfig_e2e::kubectl::{eventually, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::node::node_name;
use nodeconfig_e2e::pod::{await_pod, running_and_ready, BUSYBOX};
use serde_json::{json, Value};

/// Pod created to a verdict, with images already on the nodes.
const VERDICT: Duration = Duration::from_secs(90);

/// A busybox pod sleeping in container `main`, with `extra` merged into its spec.
fn pod(ns: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "exec sleep 3600"]}],
        "terminationGracePeriodSeconds": 1,
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// `(reason, message)` of the Warning events about `name`, once there is one with `reason`.
#[track_caller]
fn await_event(ns: &str, name: &str, reason: &str) -> String {
    eventually(
        Duration::from_secs(30),
        &format!("a {reason} event for {ns}/{name}"),
        || {
            let run = kubectl(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &format!("involvedObject.name={name},reason={reason}"),
                "-o",
                "json",
            ]);
            let list: Value = serde_json::from_str(&run.stdout).ok()?;
            let event = list["items"].as_array()?.first()?.clone();
            (event["type"] == "Warning")
                .then(|| event["message"].as_str().unwrap_or_default().to_string())
        },
    )
}

#[test]
fn a_second_pod_on_a_held_host_port_fails_with_node_ports() {
    let ns = Namespace::new("hostport");
    let node = node_name(1);
    let port = json!([{"containerPort": 21017, "hostPort": 21017, "name": "conflict"}]);
    let holder = |name: &str| {
        let mut p = pod(&ns.0, name, json!({"nodeName": node}));
        p["spec"]["containers"][0]["ports"] = port.clone();
        p
    };
    apply_json(holder("first"));
    await_pod(
        &ns.0,
        "first",
        "Running and Ready",
        VERDICT,
        running_and_ready,
    );

    apply_json(holder("second"));
    let p = await_pod(&ns.0, "second", "Failed", VERDICT, |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "NodePorts");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    assert_eq!(
        await_event(&ns.0, "second", "NodePorts"),
        "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );

    // Once the holder is gone the port is free for a new pod.
    kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.0,
        "first",
        "--grace-period=0",
        "--wait=true",
    ])
    .expect_ok("delete the holder");
    apply_json(holder("third"));
    await_pod(
        &ns.0,
        "third",
        "Running and Ready",
        VERDICT,
        running_and_ready,
    );
}

#[test]
fn an_image_running_as_root_under_run_as_non_root_is_a_config_error() {
    let ns = Namespace::new("nonroot");
    // busybox names no USER: the kubelet reads that as root.
    apply_json(pod(
        &ns.0,
        "rooty",
        json!({"securityContext": {"runAsNonRoot": true}}),
    ));
    let p = await_pod(&ns.0, "rooty", "CreateContainerConfigError", VERDICT, |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"rooty_{}({uid})\", container: main)",
            ns.0
        )
    );
    assert_eq!(p["status"]["phase"], "Pending");

    // A numeric runAsUser other than 0 satisfies it without the image.
    apply_json(pod(
        &ns.0,
        "nobody",
        json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 65534}}),
    ));
    await_pod(
        &ns.0,
        "nobody",
        "Running and Ready",
        VERDICT,
        running_and_ready,
    );
}

#[test]
fn a_pod_of_its_own_user_namespace_gets_no_sandbox() {
    let ns = Namespace::new("hostusers");
    apply_json(pod(&ns.0, "userns", json!({"hostUsers": false})));
    let message = await_event(&ns.0, "userns", "FailedCreatePodSandBox");
    assert_eq!(
        message,
        "Failed to create pod sandbox: can't set `spec.hostUsers: false`, runtime does not support user namespaces"
    );
    let p = await_pod(
        &ns.0,
        "userns",
        "waiting in ContainerCreating",
        VERDICT,
        |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
        },
    );
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn an_apparmor_profile_on_a_host_without_apparmor_is_rejected() {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    if enabled {
        println!("this host enforces AppArmor: nothing to refuse");
        return;
    }
    let ns = Namespace::new("apparmor");
    apply_json(pod(
        &ns.0,
        "confined",
        json!({"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}),
    ));
    let p = await_pod(&ns.0, "confined", "Failed", VERDICT, |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "AppArmor");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"
    );
}

#[test]
fn an_unsafe_sysctl_the_node_allows_is_set() {
    // e2e/cluster starts the agents with --allowed-unsafe-sysctls net.core.somaxconn.
    let ns = Namespace::new("unsafesysctl");
    apply_json(pod(
        &ns.0,
        "tuned",
        json!({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1234"}]}}),
    ));
    await_pod(
        &ns.0,
        "tuned",
        "Running and Ready",
        VERDICT,
        running_and_ready,
    );
    let value = kubectl(&[
        "exec",
        "-n",
        &ns.0,
        "tuned",
        "-c",
        "main",
        "--",
        "cat",
        "/proc/sys/net/core/somaxconn",
    ])
    .expect_ok("read the sysctl");
    assert_eq!(value.trim(), "1234");
}

#[test]
fn observed_generation_follows_a_spec_change() {
    let ns = Namespace::new("generation");
    apply_json(pod(&ns.0, "gen", json!({})));
    let p = await_pod(
        &ns.0,
        "gen",
        "Running and Ready",
        VERDICT,
        running_and_ready,
    );
    let first = p["metadata"]["generation"].as_i64().unwrap_or_default();
    assert_eq!(p["status"]["observedGeneration"].as_i64(), Some(first));

    // activeDeadlineSeconds may be set on a running pod: a new generation.
    kubectl(&[
        "patch",
        "pod",
        "-n",
        &ns.0,
        "gen",
        "--type=merge",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":3600}}"#,
    ])
    .expect_ok("patch the spec");
    let p = await_pod(&ns.0, "gen", "status of the new generation", VERDICT, |p| {
        let generation = p["metadata"]["generation"].as_i64();
        generation > Some(first) && p["status"]["observedGeneration"].as_i64() == generation
    });
    let generation = p["metadata"]["generation"].as_i64();
    for c in p["status"]["conditions"].as_array().into_iter().flatten() {
        assert_eq!(c["observedGeneration"].as_i64(), generation, "{c}");
    }
}
