//! Kubelet mode end to end (`e2e/cluster up`): the real scheduler binds pods
//! to the agents' Nodes, the agents run them through each node's containerd,
//! and everything a user checks with kubectl is checked the same way: phase,
//! conditions, restart counts, endpoints, logs, exec, deletion.
//!
//! Each test works in its own namespace. Tests that disturb a node (killing
//! its agent, restarting its containerd, running the operator in-cluster) take
//! the exclusive turn; the others run side by side.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use nodeconfig_e2e::backends::{get_many_from_node, tally, unique_name};
use nodeconfig_e2e::cluster::cluster;
use nodeconfig_e2e::kubectl::{condition, eventually, get_json, kubectl, require_cluster};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::node::{cri_endpoint, node_name};
use nodeconfig_e2e::{admin_kubeconfig, k8s_bin};
use serde_json::{json, Value};

const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";
/// Pod created to Running and Ready, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);

static TURN: RwLock<()> = RwLock::new(());

fn shared_turn() -> RwLockReadGuard<'static, ()> {
    require_cluster();
    TURN.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive_turn() -> RwLockWriteGuard<'static, ()> {
    require_cluster();
    TURN.write().unwrap_or_else(|p| p.into_inner())
}

fn pods(ns: &str, selector: &str) -> Vec<Value> {
    let run = kubectl(&["get", "pods", "-n", ns, "-l", selector, "-o", "json"]);
    if !run.ok {
        return Vec::new();
    }
    serde_json::from_str::<Value>(&run.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn pod(ns: &str, name: &str) -> Option<Value> {
    get_json("pod", name, Some(ns))
}

fn running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && condition(p, "Ready").is_some_and(|(s, _)| s == "True")
        && p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
}

fn container_status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn restart_count(p: &Value, container: &str) -> i64 {
    container_status(p, container)
        .and_then(|c| c["restartCount"].as_i64())
        .unwrap_or(0)
}

#[track_caller]
fn await_pod(
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let p = eventually(timeout, &format!("pod {ns}/{name}: {what}"), || {
        pod(ns, name).filter(|p| f(p))
    });
    println!("pod {ns}/{name}: {what} after {:.1?}", started.elapsed());
    p
}

fn simple_pod(ns: &str, name: &str, containers: Value, extra: Value) -> Value {
    let mut spec = json!({"containers": containers, "terminationGracePeriodSeconds": 5});
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

fn busybox(name: &str, script: &str) -> Value {
    json!({"name": name, "image": BUSYBOX, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]})
}

/// An httpd answering with the pod's name on 8080.
fn web_container() -> Value {
    let mut c = busybox(
        "web",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    c["ports"] = json!([{"containerPort": 8080, "name": "http"}]);
    c["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1});
    c
}

/// The agent's sandboxes on node `node` for a pod UID, through CRI.
fn sandboxes_for(node: usize, uid: &str) -> usize {
    use k8s_cri::v1::{ListPodSandboxRequest, PodSandboxFilter};
    let endpoint = cri_endpoint(&node_name(node));
    let uid = uid.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        rt.block_on(async {
            let mut cri = node_agent::edge::cri::CriClient::connect(&endpoint)
                .await
                .expect("connect to the node's CRI");
            cri.runtime
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        label_selector: [("nodeconfig.dev/pod-uid".to_string(), uid)].into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("ListPodSandbox")
                .into_inner()
                .items
                .len()
        })
    })
    .join()
    .expect("CRI thread")
}

fn node_of(p: &Value) -> usize {
    let name = p["spec"]["nodeName"].as_str().unwrap_or_default();
    name.trim_start_matches("nc-node-").parse().unwrap_or(0)
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------- 1

#[test]
fn deployment_runs_on_both_nodes_and_its_service_answers_from_each() {
    let _turn = shared_turn();
    let ns = Namespace::new("deploy");
    apply_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns.0},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    // Honor: a node whose taints the pods do not tolerate (a kubelet
                    // node's) is no domain of the spread.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "nodeTaintsPolicy": "Honor",
                        "labelSelector": {"matchLabels": {"app": "web"}}
                    }],
                    "containers": [web_container()]
                }
            }
        }
    }));
    apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": ns.0},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}
    }));

    let started = Instant::now();
    let running = eventually(STARTED, "4 pods Running and Ready", || {
        let all = pods(&ns.0, "app=web");
        (all.len() == 4 && all.iter().all(running_and_ready)).then_some(all)
    });
    println!(
        "4 replicas Running and Ready after {:.1?}",
        started.elapsed()
    );
    let nodes: BTreeSet<usize> = running.iter().map(node_of).collect();
    assert_eq!(nodes, BTreeSet::from([1, 2]), "replicas on both nodes");
    let names: BTreeSet<String> = running
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();

    // The real EndpointSlice controller publishes the pods' IPs.
    eventually(Duration::from_secs(60), "4 ready endpoints", || {
        let run = kubectl(&[
            "get",
            "endpointslices",
            "-n",
            &ns.0,
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        let ready = v["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        (ready == 4).then_some(())
    });

    let svc = get_json("service", "web", Some(&ns.0)).expect("service");
    let url = format!(
        "http://{}:80/",
        svc["spec"]["clusterIP"].as_str().expect("clusterIP")
    );
    for node in [1, 2] {
        let answers = eventually(
            Duration::from_secs(60),
            "answers from every replica",
            || {
                let t = tally(&get_many_from_node(node, &url, 60));
                let answered: BTreeSet<String> =
                    t.keys().filter(|k| names.contains(*k)).cloned().collect();
                (answered.len() == 4).then_some(t)
            },
        );
        println!("{url} from {}: {answers:?}", node_name(node));
    }
}

// ---------------------------------------------------------------- 2

#[test]
fn containers_of_a_pod_reach_each_other_on_localhost() {
    let _turn = shared_turn();
    let ns = Namespace::new("localhost");
    let mut client = busybox(
        "client",
        "until wget -q -O /tmp/got http://127.0.0.1:8080/; do sleep 0.5; done; exec sleep 3600",
    );
    client["readinessProbe"] =
        json!({"exec": {"command": ["test", "-s", "/tmp/got"]}, "periodSeconds": 1});
    apply_json(simple_pod(
        &ns.0,
        "pair",
        json!([web_container(), client]),
        json!({}),
    ));
    let p = await_pod(
        &ns.0,
        "pair",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    for c in ["web", "client"] {
        let s = container_status(&p, c).expect("container status");
        assert_eq!(s["ready"], true, "{c}: {s}");
        assert_eq!(s["restartCount"], 0, "{c}: {s}");
        assert!(
            s["containerID"]
                .as_str()
                .is_some_and(|id| id.starts_with("containerd://")),
            "{s}"
        );
    }
    let got = kubectl(&[
        "exec", "-n", &ns.0, "pair", "-c", "client", "--", "cat", "/tmp/got",
    ])
    .expect_ok("exec");
    assert_eq!(
        got.trim(),
        "pair",
        "the client got the web container's page over localhost"
    );

    // `kubectl describe pod` tells the story with the kubelet's events.
    let reasons = eventually(Duration::from_secs(30), "the pod's events", || {
        let run = kubectl(&[
            "get",
            "events",
            "-n",
            &ns.0,
            "--field-selector",
            "involvedObject.name=pair",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        let notes: BTreeSet<String> = v["items"]
            .as_array()?
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["reason"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        notes
            .iter()
            .any(|n| n == "Started Started container client")
            .then_some(notes)
    });
    for want in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|n| n.starts_with(want)),
            "no {want} event in {reasons:?}"
        );
    }
}

#[test]
fn missing_image_with_pull_policy_never_waits_with_err_image_never_pull() {
    let _turn = shared_turn();
    let ns = Namespace::new("image");
    let c = json!({"name": "app", "image": "nodeconfig.local/not-imported:1", "imagePullPolicy": "Never"});
    apply_json(simple_pod(&ns.0, "noimage", json!([c]), json!({})));
    let p = await_pod(
        &ns.0,
        "noimage",
        "waiting with ErrImageNeverPull",
        STARTED,
        |p| {
            container_status(p, "app")
                .is_some_and(|c| c["state"]["waiting"]["reason"] == "ErrImageNeverPull")
        },
    );
    let message =
        container_status(&p, "app").expect("status")["state"]["waiting"]["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("not-imported:1") && m.contains("pull policy of Never")),
        "{message}"
    );
    assert_eq!(p["status"]["phase"], "Pending");
}

// ---------------------------------------------------------------- 3

#[test]
fn crashing_container_restarts_with_growing_back_off() {
    let _turn = shared_turn();
    let ns = Namespace::new("crash");
    apply_json(simple_pod(
        &ns.0,
        "crash",
        json!([busybox("crash", "echo about to fail; exit 3")]),
        json!({}),
    ));
    // As the kubelet: the first exit restarts at once, then waits 10 s, 20 s, ...
    let mut reached = Vec::new();
    for count in 1..=3 {
        await_pod(
            &ns.0,
            "crash",
            &format!("restartCount {count}"),
            Duration::from_secs(120),
            |p| restart_count(p, "crash") >= count,
        );
        reached.push(Instant::now());
    }
    let (second, third) = (reached[1] - reached[0], reached[2] - reached[1]);
    println!("restart gaps: {second:.1?} then {third:.1?}");
    assert!(
        second >= Duration::from_secs(8),
        "second restart {second:?} after the first: no back-off"
    );
    assert!(
        third >= Duration::from_secs(16) && third > second + Duration::from_secs(5),
        "the back-off did not grow: {second:?} then {third:?}"
    );

    let p = await_pod(
        &ns.0,
        "crash",
        "waiting in CrashLoopBackOff",
        Duration::from_secs(30),
        |p| {
            container_status(p, "crash")
                .is_some_and(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff")
        },
    );
    let c = container_status(&p, "crash").expect("status");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error", "{c}");
    let message = c["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("back-off") && message.contains("restarting failed container=crash"),
        "{message}"
    );
    assert_eq!(
        p["status"]["phase"], "Running",
        "restartPolicy Always keeps the pod Running"
    );
}

#[test]
fn failing_liveness_probe_restarts_its_container() {
    let _turn = shared_turn();
    let ns = Namespace::new("liveness");
    let mut c = busybox(
        "app",
        "touch /tmp/alive; sleep 4; rm /tmp/alive; exec sleep 3600",
    );
    c["livenessProbe"] = json!({"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2});
    apply_json(simple_pod(&ns.0, "live", json!([c]), json!({})));
    let p = await_pod(
        &ns.0,
        "live",
        "restarted by its liveness probe",
        Duration::from_secs(90),
        |p| restart_count(p, "app") >= 1,
    );
    let s = container_status(&p, "app").expect("status");
    assert!(s["lastState"]["terminated"].is_object(), "{s}");
    // `kubectl describe pod` says why, as with the kubelet.
    eventually(Duration::from_secs(30), "an Unhealthy event", || {
        let run = kubectl(&[
            "get",
            "events",
            "-n",
            &ns.0,
            "--field-selector",
            "involvedObject.name=live,reason=Unhealthy",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Liveness probe failed"))
            })
            .then_some(())
    });
    let killing = kubectl(&[
        "get",
        "events",
        "-n",
        &ns.0,
        "--field-selector",
        "involvedObject.name=live,reason=Killing",
        "-o",
        "name",
    ]);
    assert!(
        !killing.stdout.trim().is_empty(),
        "a Killing event: {}",
        killing.stderr
    );
}

#[test]
fn failing_readiness_probe_takes_the_pod_out_of_its_endpoints() {
    let _turn = shared_turn();
    let ns = Namespace::new("readiness");
    let mut c = web_container();
    c["command"] = json!(["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && httpd -p 8080 -h /www && sleep 8 && rm /tmp/ready && exec sleep 3600"]);
    c["readinessProbe"] =
        json!({"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1});
    apply_json(simple_pod(&ns.0, "ready", json!([c]), json!({})));
    apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ready", "namespace": ns.0},
        "spec": {"selector": {"app": "ready"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }));
    let endpoint_ready = |want: bool| {
        let run = kubectl(&[
            "get",
            "endpointslices",
            "-n",
            &ns.0,
            "-l",
            "kubernetes.io/service-name=ready",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        let e = v["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .next()?;
        (e["conditions"]["ready"] == want).then_some(())
    };
    eventually(
        Duration::from_secs(60),
        "the pod ready in the Service's endpoints",
        || endpoint_ready(true),
    );
    eventually(
        Duration::from_secs(60),
        "the pod not ready in the Service's endpoints",
        || endpoint_ready(false),
    );
    let p = pod(&ns.0, "ready").expect("pod");
    assert_eq!(
        condition(&p, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        p["status"]["phase"], "Running",
        "not ready is not restarted"
    );
    assert_eq!(restart_count(&p, "web"), 0);
}

// ---------------------------------------------------------------- 4

#[test]
fn delete_stops_the_pod_within_its_grace_period() {
    let _turn = shared_turn();
    let ns = Namespace::new("delete");
    // sh as PID 1 ignores SIGTERM: only the SIGKILL after the grace period ends it.
    apply_json(simple_pod(
        &ns.0,
        "stubborn",
        json!([busybox("app", "exec sleep 3600")]),
        json!({"terminationGracePeriodSeconds": 4}),
    ));
    let p = await_pod(&ns.0, "stubborn", "Running", STARTED, |p| {
        p["status"]["phase"] == "Running"
    });
    let (node, pod_uid) = (node_of(&p), uid(&p));
    let started = Instant::now();
    kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.0,
        "stubborn",
        "--wait=true",
        "--timeout=60s",
    ])
    .expect_ok("delete pod");
    let took = started.elapsed();
    println!("deleted with grace 4s in {took:.1?}");
    assert!(
        took >= Duration::from_secs(3),
        "gone in {took:?}: the grace period was not given"
    );
    assert!(
        took < Duration::from_secs(20),
        "took {took:?} for a 4s grace period"
    );
    assert_eq!(sandboxes_for(node, &pod_uid), 0, "the sandbox is removed");
}

#[test]
fn scaling_a_deployment_down_removes_its_pods() {
    let _turn = shared_turn();
    let ns = Namespace::new("scale");
    apply_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sleepy", "namespace": ns.0},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "sleepy"}},
            "template": {"metadata": {"labels": {"app": "sleepy"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [busybox("app", "trap 'exit 0' TERM; while true; do sleep 1; done")]
            }}
        }
    }));
    let three = eventually(STARTED, "3 pods Running and Ready", || {
        let all = pods(&ns.0, "app=sleepy");
        (all.len() == 3 && all.iter().all(running_and_ready)).then_some(all)
    });
    kubectl(&["scale", "deployment", "-n", &ns.0, "sleepy", "--replicas=1"]).expect_ok("scale");
    eventually(Duration::from_secs(60), "1 pod left", || {
        (pods(&ns.0, "app=sleepy").len() == 1).then_some(())
    });
    let left: BTreeSet<String> = pods(&ns.0, "app=sleepy").iter().map(uid).collect();
    for p in three.iter().filter(|p| !left.contains(&uid(p))) {
        assert_eq!(
            sandboxes_for(node_of(p), &uid(p)),
            0,
            "sandbox of a removed pod"
        );
    }
}

#[test]
fn kubectl_logs_and_exec_work() {
    let _turn = shared_turn();
    let ns = Namespace::new("logs");
    let script = "echo \"run $(cat /tmp/n 2>/dev/null || echo first)\"; i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo line $i; echo err $i >&2; done; if [ -f /data/again ]; then exec sleep 3600; fi; touch /data/again; sleep 2; exit 1";
    let c = json!({"name": "app", "image": BUSYBOX, "command": ["sh", "-c", script],
                   "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
    apply_json(simple_pod(
        &ns.0,
        "talker",
        json!([c]),
        json!({"volumes": [{"name": "data", "emptyDir": {}}]}),
    ));
    await_pod(
        &ns.0,
        "talker",
        "running again after one restart",
        Duration::from_secs(90),
        |p| {
            restart_count(p, "app") == 1
                && container_status(p, "app").is_some_and(|c| c["state"]["running"].is_object())
        },
    );

    let logs = eventually(Duration::from_secs(30), "kubectl logs", || {
        let run = kubectl(&["logs", "-n", &ns.0, "talker"]);
        (run.ok && run.stdout.contains("line 3")).then_some(run.stdout)
    });
    assert!(logs.contains("err 2"), "stderr is in the logs too: {logs}");
    let previous =
        kubectl(&["logs", "-n", &ns.0, "talker", "--previous"]).expect_ok("logs --previous");
    assert!(previous.contains("line 1"), "{previous}");
    let tail = kubectl(&["logs", "-n", &ns.0, "talker", "--tail=1"]).expect_ok("logs --tail");
    assert_eq!(tail.lines().count(), 1, "{tail}");

    // -f follows: a line written after the start of `kubectl logs -f` arrives.
    let mut follow = Command::new(k8s_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(admin_kubeconfig())
        .args(["logs", "-f", "-n", &ns.0, "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("followed"))
    });
    std::thread::sleep(Duration::from_secs(2));
    kubectl(&[
        "exec",
        "-n",
        &ns.0,
        "talker",
        "--",
        "sh",
        "-c",
        "echo followed > /proc/1/fd/1",
    ])
    .expect_ok("exec");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let line = reader.join().expect("reader");
    assert_eq!(
        line.as_deref(),
        Some("followed"),
        "kubectl logs -f did not show the new line"
    );

    let out = kubectl(&[
        "exec",
        "-n",
        &ns.0,
        "talker",
        "--",
        "sh",
        "-c",
        "echo hello from $(hostname); exit 0",
    ])
    .expect_ok("exec");
    assert_eq!(out.trim(), "hello from talker");
    let failed = kubectl(&["exec", "-n", &ns.0, "talker", "--", "sh", "-c", "exit 7"]);
    assert!(
        !failed.ok && failed.stderr.contains("exit code 7"),
        "{}",
        failed.stderr
    );
}

// ---------------------------------------------------------------- 5

#[test]
fn agent_killed_and_restarted_adopts_running_pods_and_cleans_up_deleted_ones() {
    let _turn = exclusive_turn();
    let ns = Namespace::new("adopt");
    let on_node1 = json!({"nodeSelector": {"kubernetes.io/hostname": "nc-node-1"}, "terminationGracePeriodSeconds": 2});
    for name in ["keep", "gone", "forced"] {
        apply_json(simple_pod(
            &ns.0,
            name,
            json!([busybox(
                "app",
                "trap 'exit 0' TERM; while true; do sleep 1; done"
            )]),
            on_node1.clone(),
        ));
    }
    let keep = await_pod(
        &ns.0,
        "keep",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let gone = await_pod(
        &ns.0,
        "gone",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let forced = await_pod(
        &ns.0,
        "forced",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let keep_id = container_status(&keep, "app").expect("status")["containerID"].clone();

    cluster(&["agent", "kill", "nc-node-1"]);
    kubectl(&["delete", "pod", "-n", &ns.0, "gone", "--wait=false"]).expect_ok("delete");
    // Force-deleted: the API forgets it at once; only CRI still knows the sandbox.
    kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.0,
        "forced",
        "--grace-period=0",
        "--force",
    ])
    .expect_ok("force delete");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        pod(&ns.0, "gone").is_some(),
        "without its agent the node cannot finalise the pod"
    );
    cluster(&["agent", "start", "nc-node-1"]);

    eventually(Duration::from_secs(60), "the deleted pod finalised", || {
        pod(&ns.0, "gone").is_none().then_some(())
    });
    assert_eq!(
        sandboxes_for(1, &uid(&gone)),
        0,
        "the deleted pod's sandbox is removed"
    );
    eventually(
        Duration::from_secs(30),
        "the force-deleted pod's sandbox removed",
        || (sandboxes_for(1, &uid(&forced)) == 0).then_some(()),
    );
    let keep_after = await_pod(
        &ns.0,
        "keep",
        "still Running and Ready",
        Duration::from_secs(30),
        running_and_ready,
    );
    let s = container_status(&keep_after, "app").expect("status");
    assert_eq!(
        s["containerID"], keep_id,
        "the running container was adopted, not replaced"
    );
    assert_eq!(s["restartCount"], 0);
    assert_eq!(
        sandboxes_for(1, &uid(&keep)),
        1,
        "one sandbox, no duplicate"
    );
}

// ---------------------------------------------------------------- 6

#[test]
fn containerd_down_and_back_keeps_pods_running() {
    let _turn = exclusive_turn();
    let ns = Namespace::new("runtime");
    apply_json(simple_pod(
        &ns.0,
        "steady",
        json!([busybox(
            "app",
            "trap 'exit 0' TERM; while true; do sleep 1; done"
        )]),
        json!({"nodeSelector": {"kubernetes.io/hostname": "nc-node-2"}}),
    ));
    let before = await_pod(
        &ns.0,
        "steady",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let id = container_status(&before, "app").expect("status")["containerID"].clone();

    // Down long enough for the agent to notice: RuntimeReady turns False and says why.
    cluster(&["containerd", "stop", "nc-node-2"]);
    let started = Instant::now();
    let nc = eventually(
        Duration::from_secs(60),
        "RuntimeReady=False on nc-node-2",
        || {
            get_json("nodeconfig", "nc-node-2", None)
                .filter(|nc| condition(nc, "RuntimeReady").is_some_and(|c| c.0 == "False"))
        },
    );
    println!(
        "RuntimeReady=False {:.1?} after containerd stopped: {:?}",
        started.elapsed(),
        condition(&nc, "RuntimeReady")
    );
    cluster(&["containerd", "start", "nc-node-2"]);
    let after = await_pod(
        &ns.0,
        "steady",
        "Running and Ready after the runtime restart",
        Duration::from_secs(60),
        running_and_ready,
    );
    assert_eq!(
        container_status(&after, "app").expect("status")["containerID"],
        id,
        "same container"
    );
    assert_eq!(sandboxes_for(2, &uid(&after)), 1, "no second sandbox");
    // A new pod still starts on the restarted runtime.
    apply_json(simple_pod(
        &ns.0,
        "fresh",
        json!([busybox("app", "exec sleep 3600")]),
        json!({"nodeSelector": {"kubernetes.io/hostname": "nc-node-2"}}),
    ));
    await_pod(&ns.0, "fresh", "Running", STARTED, |p| {
        p["status"]["phase"] == "Running"
    });
    eventually(
        Duration::from_secs(60),
        "RuntimeReady=True on nc-node-2 again",
        || {
            get_json("nodeconfig", "nc-node-2", None)
                .filter(|nc| condition(nc, "RuntimeReady").is_some_and(|c| c.0 == "True"))
        },
    );
}

// ---------------------------------------------------------------- 7

/// Restores the host's operator replicas and removes the in-cluster ones,
/// whatever the test's outcome.
/// The cluster's operator defaults (`config.yaml` of nodeconfig-defaults).
fn cluster_defaults() -> String {
    kubectl(&[
        "get",
        "configmap",
        "nodeconfig-defaults",
        "-n",
        "nodeconfig-system",
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ])
    .expect_ok("read the operator's defaults")
}

/// Puts the host operators and the cluster's defaults back: applying the
/// user's manifests/ replaces the local cluster's defaults (its clusterDNS)
/// with the shipped ones.
struct InClusterOperator {
    defaults: String,
}

impl InClusterOperator {
    fn new() -> Self {
        Self {
            defaults: cluster_defaults(),
        }
    }
}

impl InClusterOperator {
    /// The cluster's defaults back in the ConfigMap.
    fn restore_defaults(&self) -> nodeconfig_e2e::kubectl::Run {
        let restore = json!({"data": {"config.yaml": self.defaults}}).to_string();
        kubectl(&[
            "patch",
            "configmap",
            "nodeconfig-defaults",
            "-n",
            "nodeconfig-system",
            "--type=merge",
            "-p",
            &restore,
        ])
    }
}

impl Drop for InClusterOperator {
    fn drop(&mut self) {
        let _ = self.restore_defaults();
        let _ = kubectl(&[
            "delete",
            "deployment",
            "-n",
            "nodeconfig-system",
            "nodeconfig-operator",
            "--wait=true",
            "--timeout=60s",
        ]);
        cluster(&["operator", "start", "1"]);
        cluster(&["operator", "start", "2"]);
    }
}

fn lease_holder() -> Option<String> {
    get_json("lease", "nodeconfig-operator", Some("nodeconfig-system"))
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// A Node object only (no agent behind it): the operator must give it a NodeConfig.
#[track_caller]
fn operator_answers_a_new_node(what: &str) {
    let name = unique_name("nc-fake");
    apply_json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}));
    let started = Instant::now();
    eventually(
        Duration::from_secs(60),
        &format!("a NodeConfig for {name} ({what})"),
        || get_json("nodeconfig", &name, None).map(|_| ()),
    );
    println!(
        "{what}: NodeConfig for a new Node after {:.1?}",
        started.elapsed()
    );
    let _ = kubectl(&["delete", "node", &name, "--wait=false"]);
}

#[test]
fn operator_runs_in_cluster_from_the_manifests_with_leader_election() {
    let _turn = exclusive_turn();
    let restore = InClusterOperator::new();
    cluster(&["operator", "stop", "1"]);
    cluster(&["operator", "stop", "2"]);
    let manifests = nodeconfig_e2e::repo_root().join("manifests");
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        &manifests.display().to_string(),
    ])
    .expect_ok("apply -k manifests/");
    // The shipped defaults leave the kubelet's 10 %/15 % disk thresholds, which put
    // the nodes of a full host disk under DiskPressure (tainted, for the 5 minute
    // transition period): the cluster's defaults go back before an operator runs.
    restore
        .restore_defaults()
        .expect_ok("the cluster's defaults back");

    let selector = "app.kubernetes.io/name=nodeconfig-operator";
    let replicas = eventually(STARTED, "2 operator pods Running and Ready", || {
        let all = pods("nodeconfig-system", selector);
        (all.len() == 2 && all.iter().all(running_and_ready)).then_some(all)
    });
    let names: BTreeSet<String> = replicas
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    // The host replicas released the lease when stopped: a pod takes it.
    let leader = eventually(
        Duration::from_secs(60),
        "an operator pod holding the lease",
        || lease_holder().filter(|h| names.contains(h)),
    );
    println!("leader: {leader}");
    operator_answers_a_new_node("in-cluster leader");

    let started = Instant::now();
    kubectl(&[
        "delete",
        "pod",
        "-n",
        "nodeconfig-system",
        &leader,
        "--wait=false",
    ])
    .expect_ok("delete the leader");
    let next = eventually(
        Duration::from_secs(90),
        "another pod taking the lease",
        || lease_holder().filter(|h| *h != leader),
    );
    println!(
        "{next} took over {:.1?} after the leader's deletion",
        started.elapsed()
    );
    operator_answers_a_new_node("after failover");
}

#[test]
fn host_network_pod_has_the_node_address_and_serves_on_it() {
    let _turn = shared_turn();
    let ns = Namespace::new("hostnet");
    let port = 18000 + (std::process::id() % 1000) as u16;
    let mut c = busybox(
        "web",
        &format!(
            "mkdir -p /www && echo on-host > /www/index.html && exec httpd -f -p {port} -h /www"
        ),
    );
    c["readinessProbe"] = json!({"httpGet": {"path": "/", "port": port}, "periodSeconds": 1});
    apply_json(simple_pod(
        &ns.0,
        "hostweb",
        json!([c]),
        json!({"hostNetwork": true, "nodeSelector": {"kubernetes.io/hostname": "nc-node-2"}}),
    ));
    let p = await_pod(
        &ns.0,
        "hostweb",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    assert_eq!(
        p["status"]["podIP"], "10.200.2.2",
        "a host-network pod has its node's address"
    );
    assert_eq!(p["status"]["hostIP"], "10.200.2.2");
    let body = nodeconfig_e2e::backends::get_from_node(1, &format!("http://10.200.2.2:{port}/"));
    assert_eq!(
        body.as_deref(),
        Ok("on-host"),
        "served on the node's own address"
    );
}

#[test]
fn pod_the_node_cannot_admit_ends_failed_with_the_kubelets_reason() {
    let _turn = shared_turn();
    let ns = Namespace::new("admit");
    // Bound directly (no scheduler), with a node selector the node does not match.
    apply_json(simple_pod(
        &ns.0,
        "misfit",
        json!([busybox("app", "exec sleep 3600")]),
        json!({"nodeName": "nc-node-1", "nodeSelector": {"disk": "ssd"}}),
    ));
    let p = await_pod(&ns.0, "misfit", "Failed", STARTED, |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "NodeAffinity", "{}", p["status"]);
    assert!(p["status"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(
        sandboxes_for(1, &uid(&p)),
        0,
        "a rejected pod never gets a sandbox"
    );
}

#[test]
fn configmap_secret_and_downward_api_reach_env_and_volumes() {
    let _turn = shared_turn();
    let ns = Namespace::new("volumes");
    apply_json(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns.0},
        "data": {"greeting": "hello", "color": "blue"}}),
    );
    apply_json(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": ns.0},
        "stringData": {"password": "s3cret"}}),
    );
    let c = json!({
        "name": "app", "image": BUSYBOX, "command": ["sh", "-c", "echo $GREETING > /data/env; exec sleep 3600"],
        "env": [
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MESSAGE", "value": "$(GREETING) from $(MY_NAME)"}
        ],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "sec", "mountPath": "/etc/sec"},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
            {"name": "data", "mountPath": "/data"}
        ]
    });
    let reader = json!({
        "name": "reader", "image": BUSYBOX, "command": ["sh", "-c", "exec sleep 3600"],
        "volumeMounts": [{"name": "data", "mountPath": "/shared", "readOnly": true}]
    });
    apply_json(simple_pod(
        &ns.0,
        "wired",
        json!([c, reader]),
        json!({
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}
                ]}},
                {"name": "data", "emptyDir": {}}
            ]
        }),
    ));
    let p = await_pod(
        &ns.0,
        "wired",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let exec = |container: &str, script: &str| {
        kubectl(&[
            "exec", "-n", &ns.0, "wired", "-c", container, "--", "sh", "-c", script,
        ])
        .expect_ok("exec")
    };
    let env = exec(
        "app",
        "echo \"$GREETING|$PASSWORD|$MY_NAME|$MY_IP|$MESSAGE|$CFG_color\"",
    );
    assert_eq!(
        env.trim(),
        format!("hello|s3cret|wired|{ip}|hello from wired|blue")
    );
    let files = exec(
        "app",
        "cat /etc/cfg/greeting /etc/sec/password /etc/podinfo/name; echo; cat /etc/podinfo/labels",
    );
    assert_eq!(files.lines().next(), Some("hellos3cretwired"), "{files}");
    assert!(files.contains("app=\"wired\""), "{files}");
    let mode = exec("app", "stat -L -c %a /etc/sec/password");
    assert_eq!(mode.trim(), "400", "defaultMode applies");
    assert_eq!(
        exec("reader", "cat /shared/env").trim(),
        "hello",
        "emptyDir shared between the containers"
    );
    let refused = kubectl(&[
        "exec",
        "-n",
        &ns.0,
        "wired",
        "-c",
        "reader",
        "--",
        "touch",
        "/shared/x",
    ]);
    assert!(!refused.ok, "a readOnly mount is read-only");

    // A ConfigMap edit reaches the mounted file, as with the kubelet (within its sync period).
    apply_json(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns.0},
        "data": {"greeting": "bonjour", "color": "blue"}}),
    );
    let started = Instant::now();
    eventually(
        Duration::from_secs(120),
        "the edited ConfigMap in the volume",
        || {
            let run = kubectl(&[
                "exec",
                "-n",
                &ns.0,
                "wired",
                "-c",
                "app",
                "--",
                "cat",
                "/etc/cfg/greeting",
            ]);
            (run.ok && run.stdout.trim() == "bonjour").then_some(())
        },
    );
    println!(
        "ConfigMap edit visible in the pod after {:.1?}",
        started.elapsed()
    );
}

#[test]
fn failing_pull_reports_err_image_pull_then_image_pull_back_off() {
    let _turn = shared_turn();
    let ns = Namespace::new("pull");
    // A registry on the node's own loopback where nothing listens: the pull
    // fails at once, and no packet leaves the node.
    let c = json!({"name": "app", "image": "127.0.0.1:1/nodeconfig/absent:1", "imagePullPolicy": "IfNotPresent"});
    apply_json(simple_pod(&ns.0, "nopull", json!([c]), json!({})));
    let reason = |p: &Value| {
        container_status(p, "app")
            .and_then(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let first = await_pod(&ns.0, "nopull", "ErrImagePull", STARTED, |p| {
        reason(p) == "ErrImagePull"
    });
    let message =
        container_status(&first, "app").expect("status")["state"]["waiting"]["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1/nodeconfig/absent:1")),
        "{message}"
    );
    await_pod(
        &ns.0,
        "nopull",
        "ImagePullBackOff",
        Duration::from_secs(60),
        |p| reason(p) == "ImagePullBackOff",
    );
    let p = pod(&ns.0, "nopull").expect("pod");
    assert_eq!(p["status"]["phase"], "Pending");
}

/// The lines of a file in a pod's container, without empty ones.
fn lines_in(ns: &str, pod: &str, path: &str) -> BTreeSet<String> {
    kubectl(&["exec", "-n", ns, pod, "--", "cat", path])
        .expect_ok("cat in the pod")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `nslookup NAME` in the pod, once it answers with `want`.
fn resolves(ns: &str, pod: &str, name: &str, want: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{name} to resolve to {want} in {ns}/{pod}"),
        || {
            let run = kubectl(&["exec", "-n", ns, pod, "--", "nslookup", name]);
            (run.ok && run.stdout.contains(want)).then_some(())
        },
    );
}

#[test]
fn pods_resolve_services_and_pods_by_name_through_cluster_dns() {
    let _turn = shared_turn();
    // The cluster's defaults give every NodeConfig the kube-dns address.
    for node in [node_name(1), node_name(2)] {
        eventually(
            Duration::from_secs(30),
            &format!("{node}'s agent to run with clusterDNS"),
            || {
                get_json("nodeconfig", &node, None).filter(|nc| {
                    nc["spec"]["pods"]["clusterDNS"] == json!(["10.96.0.10"])
                        && nc["status"]["observedGeneration"] == nc["metadata"]["generation"]
                })
            },
        );
    }
    let ns = Namespace::new("dns");
    let n = &ns.0;
    apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": n},
        "spec": {"selector": {"app": "db-0"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": n},
        "spec": {"clusterIP": "None", "selector": {"app": "db-0"},
                 "ports": [{"port": 8080}]},
    }));
    apply_json(simple_pod(
        n,
        "db-0",
        json!([web_container()]),
        json!({"hostname": "db-0", "subdomain": "db"}),
    ));
    apply_json(simple_pod(
        n,
        "client",
        json!([busybox("client", "exec sleep 3600")]),
        json!({}),
    ));
    apply_json(simple_pod(
        n,
        "exact",
        json!([busybox("exact", "exec sleep 3600")]),
        json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["10.96.0.10"], "searches": ["corp.example"],
            "options": [{"name": "ndots", "value": "2"}]}}),
    ));
    let db = await_pod(n, "db-0", "running", STARTED, running_and_ready);
    await_pod(n, "client", "running", STARTED, running_and_ready);
    await_pod(n, "exact", "running", STARTED, running_and_ready);

    // ClusterFirst: the cluster's DNS, its search domains, ndots:5.
    let resolv = lines_in(n, "client", "/etc/resolv.conf");
    let want: BTreeSet<String> = [
        "nameserver 10.96.0.10".to_string(),
        format!("search {n}.svc.cluster.local svc.cluster.local cluster.local"),
        "options ndots:5".to_string(),
    ]
    .into();
    assert!(want.is_subset(&resolv), "resolv.conf: {resolv:?}");

    let web_ip = get_json("service", "web", Some(n)).expect("service web")["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let db_ip = db["status"]["podIP"].as_str().expect("pod IP").to_string();
    resolves(
        n,
        "client",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
    );
    resolves(n, "client", &format!("web.{n}.svc.cluster.local"), &web_ip);
    // A headless Service's record, and a pod's hostname.subdomain record.
    resolves(n, "client", &format!("db.{n}.svc.cluster.local"), &db_ip);
    resolves(
        n,
        "client",
        &format!("db-0.db.{n}.svc.cluster.local"),
        &db_ip,
    );

    // dnsPolicy None: exactly what dnsConfig asks for.
    let exact = lines_in(n, "exact", "/etc/resolv.conf");
    let want: BTreeSet<String> = [
        "nameserver 10.96.0.10",
        "search corp.example",
        "options ndots:2",
    ]
    .map(String::from)
    .into();
    assert_eq!(exact, want);
}
