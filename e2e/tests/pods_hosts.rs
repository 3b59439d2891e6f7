//! What the kubelet writes into and reads back from a pod's containers, end to
//! end (`e2e/cluster up`): the kubelet-managed `/etc/hosts` (hostname,
//! subdomain FQDN, host aliases, host network, containers that bring their
//! own), the UTS hostname with `setHostnameAsFQDN`, termination messages and
//! `activeDeadlineSeconds`.
//!
//! Each test works in its own namespace and leaves the nodes as they were, so
//! they run side by side.

use std::time::Duration;

use nodeconfig_e2e::kubectl::kubectl;
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::pod::{await_pod, busybox, running_and_ready};
use serde_json::{json, Value};

/// Pod created to Running and Ready, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);

fn pod(ns: &str, name: &str, containers: Value, extra: Value) -> Value {
    let mut spec = json!({"containers": containers, "terminationGracePeriodSeconds": 1});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": spec,
    })
}

/// `cat`/`hostname` output of a command in one container of a pod.
fn exec(ns: &str, pod: &str, container: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", "-n", ns, pod, "-c", container, "--"];
    args.extend_from_slice(command);
    kubectl(&args).expect_ok("exec in the pod")
}

#[test]
fn containers_get_a_kubelet_managed_etc_hosts_unless_they_mount_their_own() {
    let ns = Namespace::new("etchosts");
    let aliases = json!([{"ip": "123.45.67.89", "hostnames": ["foo", "bar"]}]);
    let own_hosts = {
        let mut c = busybox("own", "exec sleep 3600");
        c["volumeMounts"] = json!([{"name": "node-hosts", "mountPath": "/etc/hosts"}]);
        c
    };
    apply_json(pod(
        &ns.0,
        "named",
        json!([busybox("main", "exec sleep 3600"), own_hosts]),
        json!({
            "hostname": "db", "subdomain": "sts", "setHostnameAsFQDN": true,
            "hostAliases": aliases,
            "volumes": [{"name": "node-hosts", "hostPath": {"path": "/etc/hosts", "type": "File"}}],
        }),
    ));
    let p = await_pod(
        &ns.0,
        "named",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let fqdn = format!("db.sts.{}.svc.cluster.local", ns.0);

    let hosts = exec(&ns.0, "named", "main", &["cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    assert!(hosts.contains(&format!("\n{ip}\t{fqdn}\tdb\n")), "{hosts}");
    assert!(
        hosts.ends_with("\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n"),
        "{hosts}"
    );
    // setHostnameAsFQDN: the kernel's hostname is the FQDN, /etc/hosts keeps the short name too.
    assert_eq!(exec(&ns.0, "named", "main", &["hostname"]).trim(), fqdn);

    let own = exec(&ns.0, "named", "own", &["cat", "/etc/hosts"]);
    let node = std::fs::read_to_string("/etc/hosts").expect("the node's /etc/hosts");
    assert_eq!(own, node, "a container mounting /etc/hosts keeps its own");
}

#[test]
fn host_network_pods_get_the_nodes_hosts_file_and_their_aliases() {
    let ns = Namespace::new("etchostsnet");
    apply_json(pod(
        &ns.0,
        "onhost",
        json!([busybox("main", "exec sleep 3600")]),
        json!({
            "hostNetwork": true,
            "hostAliases": [{"ip": "123.45.67.89", "hostnames": ["foo", "bar"]}],
        }),
    ));
    await_pod(
        &ns.0,
        "onhost",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let hosts = exec(&ns.0, "onhost", "main", &["cat", "/etc/hosts"]);
    let node = std::fs::read_to_string("/etc/hosts").expect("the node's /etc/hosts");
    assert_eq!(
        hosts,
        format!(
            "# Kubernetes-managed hosts file (host network).\n{node}\n\
             # Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n"
        )
    );
}

/// The terminated state's message of the pod's only container.
fn terminated_message(p: &Value) -> Option<String> {
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_finished_container_reports_its_termination_message_from_file_or_logs() {
    let ns = Namespace::new("termmsg");
    // Written by a non-root user at a path of its own.
    let mut writer = busybox("writer", "echo -n DONE > /dev/termination-custom-log");
    writer["terminationMessagePath"] = json!("/dev/termination-custom-log");
    writer["securityContext"] = json!({"runAsUser": 10000});
    // Failed without writing: the end of its log.
    let mut failer = busybox("failer", "echo line one; echo -n DONE; false");
    failer["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    // Succeeded without writing: nothing, whatever it logged.
    let mut quiet = busybox("quiet", "echo DONE");
    quiet["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    for (name, c) in [("writer", writer), ("failer", failer), ("quiet", quiet)] {
        apply_json(pod(
            &ns.0,
            name,
            json!([c]),
            json!({"restartPolicy": "Never"}),
        ));
    }
    let finished =
        |p: &Value| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    let writer = await_pod(&ns.0, "writer", "finished", STARTED, finished);
    assert_eq!(writer["status"]["phase"], "Succeeded");
    assert_eq!(terminated_message(&writer).as_deref(), Some("DONE"));
    let failer = await_pod(&ns.0, "failer", "finished", STARTED, finished);
    assert_eq!(failer["status"]["phase"], "Failed");
    assert_eq!(
        terminated_message(&failer).as_deref(),
        Some("line one\nDONE")
    );
    let quiet = await_pod(&ns.0, "quiet", "finished", STARTED, finished);
    assert_eq!(quiet["status"]["phase"], "Succeeded");
    assert_eq!(terminated_message(&quiet), None);
}

#[test]
fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
    let ns = Namespace::new("deadline");
    apply_json(pod(
        &ns.0,
        "sleeper",
        json!([busybox("main", "exec sleep 3600")]),
        json!({}),
    ));
    await_pod(
        &ns.0,
        "sleeper",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    // Lowered while it runs, as the conformance test does.
    kubectl(&[
        "patch",
        "pod",
        "sleeper",
        "-n",
        &ns.0,
        "--type=merge",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":5}}"#,
    ])
    .expect_ok("set activeDeadlineSeconds");
    let p = await_pod(&ns.0, "sleeper", "Failed", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");
    assert_eq!(
        p["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    let state = &p["status"]["containerStatuses"][0]["state"];
    assert!(
        state["terminated"].is_object(),
        "the container was killed: {state}"
    );
}
