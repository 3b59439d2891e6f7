//! Lifecycle hooks end to end (`e2e/cluster up`): postStart and preStop
//! hooks run by the agent as the kubelet runs them, seen the way a user sees
//! them — what the container finds, what a server gets, restart counts and
//! events.
//!
//! The HTTP server of these tests is busybox `nc` running a small handler
//! that appends each request's head to `/tmp/requests`, read back with
//! `kubectl exec`.

use std::time::{Duration, Instant};

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::pod::{await_pod, busybox, container_status};
use serde_json::{json, Value};

/// Pod created to Running, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);

/// The request handler `nc -ll -e` runs per connection: logs the request
/// head, answers 200.
const HANDLER: &str = r#"#!/bin/sh
while read -r l; do l=$(echo "$l" | tr -d '\r'); [ -z "$l" ] && break; echo "$l" >> /tmp/requests; done
printf 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok'
"#;

fn pod(ns: &str, name: &str) -> Option<Value> {
    get_json("pod", name, Some(ns))
}

fn running(p: &Value, name: &str) -> bool {
    container_status(p, name).is_some_and(|c| c["state"]["running"].is_object())
}

fn pod_of(ns: &str, name: &str, containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 10},
    })
}

/// A container serving HTTP on 8080 that records every request's head.
fn server_container(name: &str) -> Value {
    let mut c = busybox(
        name,
        "echo \"$HANDLER\" > /tmp/h.sh && chmod +x /tmp/h.sh && touch /tmp/requests && exec nc -ll -p 8080 -e /tmp/h.sh",
    );
    c["env"] = json!([{"name": "HANDLER", "value": HANDLER}]);
    c["ports"] = json!([{"containerPort": 8080}]);
    c["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1});
    c
}

/// The request heads a server container has recorded.
fn requests(ns: &str, pod: &str, container: &str) -> String {
    let run = kubectl(&[
        "exec",
        "-n",
        ns,
        pod,
        "-c",
        container,
        "--",
        "cat",
        "/tmp/requests",
    ]);
    if run.ok {
        run.stdout
    } else {
        String::new()
    }
}

/// A server pod of its own; returns its IP once it is ready.
fn start_server(ns: &str) -> String {
    apply_json(pod_of(ns, "server", json!([server_container("server")])));
    let p = await_pod(ns, "server", "ready", STARTED, |p| {
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
            && container_status(p, "server").is_some_and(|c| c["ready"] == true)
    });
    p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn events_of(ns: &str, pod: &str) -> String {
    kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "custom-columns=REASON:.reason,NOTE:.message",
        "--no-headers",
    ])
    .stdout
}

#[test]
fn post_start_exec_hook_leaves_what_the_container_then_finds() {
    let ns = Namespace::new("hook-exec");
    // The container waits for the hook's file and prints it.
    let mut app = busybox(
        "app",
        "until [ -f /tmp/hook ]; do sleep 0.2; done; echo \"found: $(cat /tmp/hook)\"; exec sleep 3600",
    );
    app["lifecycle"] = json!({"postStart": {"exec": {"command":
        ["sh", "-c", "echo written-by-post-start > /tmp/hook"]}}});
    apply_json(pod_of(&ns.0, "hooked", json!([app])));
    await_pod(&ns.0, "hooked", "running", STARTED, |p| running(p, "app"));

    let logs = eventually(Duration::from_secs(30), "the container's line", || {
        let run = kubectl(&["logs", "-n", &ns.0, "hooked"]);
        (run.ok && run.stdout.contains("found:")).then_some(run.stdout)
    });
    assert!(logs.contains("found: written-by-post-start"), "{logs}");
    let p = pod(&ns.0, "hooked").expect("the pod");
    assert_eq!(
        container_status(&p, "app").and_then(|c| c["restartCount"].as_i64()),
        Some(0)
    );
}

#[test]
fn http_post_start_hook_without_a_host_goes_to_the_pod_ip() {
    let ns = Namespace::new("hook-http");
    // The server is the pod's own first container; the hook of the second
    // has no host, so it goes to the pod's IP.
    let mut app = busybox("app", "exec sleep 3600");
    app["lifecycle"] = json!({"postStart": {"httpGet": {
        "path": "/echo?msg=poststart", "port": 8080,
        "httpHeaders": [{"name": "X-Hook", "value": "post-start"}]}}});
    apply_json(pod_of(
        &ns.0,
        "hooked",
        json!([server_container("server"), app]),
    ));
    await_pod(&ns.0, "hooked", "app running", STARTED, |p| {
        running(p, "app")
    });

    let got = eventually(Duration::from_secs(30), "the hook's request", || {
        let got = requests(&ns.0, "hooked", "server");
        got.contains("GET /echo?msg=poststart").then_some(got)
    });
    // Header names as sent on the wire are lower case (HTTP/1.1 leaves the case free).
    let heads = got.to_ascii_lowercase();
    assert!(heads.contains("user-agent: kube-lifecycle/1.37"), "{got}");
    assert!(heads.contains("x-hook: post-start"), "{got}");
    let p = pod(&ns.0, "hooked").expect("the pod");
    let ip = p["status"]["podIP"].as_str().unwrap_or_default();
    assert!(
        heads.contains(&format!("host: {ip}:8080")),
        "sent to the pod IP {ip}: {got}"
    );
}

#[test]
fn pre_stop_hooks_reach_a_server_pod_before_the_containers_stop() {
    let ns = Namespace::new("hook-prestop");
    let server = start_server(&ns.0);
    // An exec hook runs inside the container: it can only reach the server
    // if the container still runs. The HTTP hook names the server as host.
    let mut by_exec = busybox("by-exec", "exec sleep 3600");
    by_exec["lifecycle"] = json!({"preStop": {"exec": {"command":
        ["wget", "-q", "-O-", format!("http://{server}:8080/prestop-exec")]}}});
    let mut by_http = busybox("by-http", "exec sleep 3600");
    by_http["lifecycle"] = json!({"preStop": {"httpGet": {
        "host": server, "path": "/prestop-http", "port": 8080}}});
    apply_json(pod_of(&ns.0, "hooked", json!([by_exec, by_http])));
    await_pod(&ns.0, "hooked", "running", STARTED, |p| {
        running(p, "by-exec") && running(p, "by-http")
    });
    assert!(
        !requests(&ns.0, "server", "server").contains("prestop"),
        "no preStop hook before the deletion"
    );

    let started = Instant::now();
    kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.0,
        "hooked",
        "--wait=true",
        "--timeout=60s",
    ])
    .expect_ok("delete");
    println!("pod deleted after {:.1?}", started.elapsed());
    let got = requests(&ns.0, "server", "server");
    assert!(got.contains("GET /prestop-exec"), "{got}");
    assert!(got.contains("GET /prestop-http"), "{got}");
    // `sleep` ignores nothing: the hooks took little, so the pod went well
    // within its 10 s grace period.
    assert!(started.elapsed() < Duration::from_secs(12));
}

#[test]
fn failing_post_start_hook_kills_and_restarts_the_container() {
    let ns = Namespace::new("hook-fail");
    let mut app = busybox("app", "exec sleep 3600");
    app["lifecycle"] = json!({"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}});
    apply_json(pod_of(&ns.0, "hooked", json!([app])));

    let p = await_pod(
        &ns.0,
        "hooked",
        "restarted after its hook failed",
        STARTED,
        |p| {
            container_status(p, "app").is_some_and(|c| c["restartCount"].as_i64().unwrap_or(0) >= 1)
        },
    );
    let status = container_status(&p, "app").expect("app's status");
    assert!(
        status["lastState"]["terminated"].is_object(),
        "the killed instance is the last state: {status}"
    );
    let events = eventually(Duration::from_secs(30), "the hook's events", || {
        let events = events_of(&ns.0, "hooked");
        events.contains("FailedPostStartHook").then_some(events)
    });
    assert!(events.contains("PostStartHook failed"), "{events}");
    // Without a passing hook it never settles: it ends in CrashLoopBackOff.
    await_pod(
        &ns.0,
        "hooked",
        "waiting with a hook error or in back-off",
        STARTED,
        |p| {
            container_status(p, "app").is_some_and(|c| {
                matches!(
                    c["state"]["waiting"]["reason"].as_str(),
                    Some("PostStartHookError" | "CrashLoopBackOff")
                )
            })
        },
    );
}
