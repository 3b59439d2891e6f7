//! Companion mode on a node run by the real kubelet (`nc-kubelet-1`, brought up
//! by `NODECONFIG_KUBELET_NODES=1 e2e/cluster up`, see e2e/scripts/lib/kubelet.sh):
//! the kubelet registers the Node, the operator gives it a Companion
//! NodeConfig, the kubelet runs the operator's node-agent DaemonSet pod, and
//! that agent takes kube-proxy's place there.
//!
//! Skipped, with a message, when the cluster has no kubelet node.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodeconfig_e2e::cluster::cluster;
use nodeconfig_e2e::kubectl::{condition, eventually, get_json, kubectl};
use nodeconfig_e2e::kubelet_node::{kubelet_node, ready, ready_agent_pod, OPERATOR_NS};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::node::{exec_in_node, node_name};
use nodeconfig_e2e::pod::BUSYBOX;
use serde_json::{json, Value};

/// The taint the harness registers kubelet nodes with (kubelet.sh), so that only
/// pods that ask run there.
const KUBELET_TAINT: &str = "nodeconfig.dev/kubelet-node";
const AGENT_MANAGED: &str = "nodeconfig.dev/agent-managed";

/// One test at a time: one restarts and removes the agent the others use.
static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn the_kubelet_registers_its_node_ready_and_it_gets_a_companion_nodeconfig() {
    let _turn = take_turn();
    let Some(node) = kubelet_node() else { return };
    let n = eventually(Duration::from_secs(90), "the kubelet's Node Ready", || {
        get_json("node", &node, None).filter(ready)
    });
    let info = &n["status"]["nodeInfo"];
    assert_eq!(
        info["kubeletVersion"],
        nodeconfig_e2e::pinned("K8S_VERSION"),
        "the real kubelet of the pinned version runs it: {info}"
    );
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{info}"
    );
    assert!(
        n["metadata"]["labels"].get(AGENT_MANAGED).is_none(),
        "a kubelet node is not agent-managed: {}",
        n["metadata"]["labels"]
    );
    assert!(
        n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == KUBELET_TAINT && t["effect"] == "NoSchedule"),
        "{}",
        n["spec"]
    );
    let nc = eventually(Duration::from_secs(30), "its NodeConfig", || {
        get_json("nodeconfig", &node, None)
    });
    assert_eq!(nc["spec"]["mode"], "Companion", "{nc}");
}

/// The NodeConfig of `node` once its Companion agent reports Ready, RuntimeReady and proxy syncs.
fn reporting_nodeconfig(node: &str) -> Option<Value> {
    let nc = get_json("nodeconfig", node, None)?;
    let runtime_ready = condition(&nc, "RuntimeReady").is_some_and(|(s, _)| s == "True");
    let synced = nc["status"]["proxy"]["lastSyncTime"].is_string();
    (ready(&nc) && runtime_ready && synced).then_some(nc)
}

#[test]
fn the_kubelet_runs_the_daemonset_agent_and_it_reports_through_the_nodeconfig() {
    let _turn = take_turn();
    let Some(node) = kubelet_node() else { return };
    let pod = eventually(
        Duration::from_secs(120),
        "the node-agent DaemonSet's pod Ready on the kubelet node",
        || ready_agent_pod(&node),
    );
    assert_eq!(pod["spec"]["hostNetwork"], true, "{}", pod["spec"]);
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], false, "{sc}");
    assert_eq!(
        sc["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"]),
        "{sc}"
    );

    let nc = eventually(
        Duration::from_secs(90),
        "its NodeConfig Ready with RuntimeReady=True and a proxy sync",
        || reporting_nodeconfig(&node),
    );
    let status = &nc["status"];
    assert_eq!(status["agent"]["mode"], "Companion", "{status}");
    assert_eq!(
        status["agent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{status}"
    );
    assert!(
        status["runtime"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "the runtime's version from the node's CRI: {status}"
    );
    // kubernetes and kube-dns at least, with their endpoints.
    assert!(status["proxy"]["services"].as_i64() >= Some(2), "{status}");
    assert!(status["proxy"]["endpoints"].as_i64() >= Some(2), "{status}");
    assert!(status["proxy"]["rules"].as_i64() > Some(0), "{status}");

    // The rules are in the node's own network namespace, in place of kube-proxy's.
    let out = exec_in_node(&node, "iptables-save", ["-t", "nat"]).expect("nsenter");
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(rules.contains(":NC-SERVICES"), "{rules}");
    assert!(
        !rules.contains("KUBE-SERVICES"),
        "no kube-proxy there: {rules}"
    );
}
/// A busybox web server answering `answer`, on `node` (tolerating the kubelet node's taint).
fn web_server(ns: &str, name: &str, node: &str, answer: &str) {
    apply_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": KUBELET_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": BUSYBOX,
                "command": ["sh", "-c", format!(
                    "mkdir -p /www && echo {answer} > /www/index.html && exec httpd -f -p 8080 -h /www")],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }],
        },
    }));
    apply_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }));
}

fn ready_pod(ns: &str, name: &str) -> Option<Value> {
    get_json("pod", name, Some(ns)).filter(ready)
}

fn cluster_ip(ns: &str, service: &str) -> String {
    let svc = eventually(Duration::from_secs(30), "the Service", || {
        get_json("service", service, Some(ns))
    });
    svc["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string()
}

/// What `client` gets from `http://<address>/` (busybox wget), once it answers; the
/// last failure names what went wrong.
fn fetch_from(ns: &str, client: &str, address: &str, what: &str) -> String {
    let url = format!("http://{address}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // timeout(1), not wget -T: Debian's busybox-static 1.35 wget segfaults with -T.
        let run = kubectl(&[
            "exec", "-n", ns, client, "--", "timeout", "3", "wget", "-q", "-O", "-", &url,
        ]);
        if run.ok {
            return run.stdout.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {client} got no answer from {url} within 60s; last try: {} {}",
            run.stdout,
            run.stderr
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn pods_on_the_kubelet_node_and_on_agent_nodes_reach_each_others_services() {
    let _turn = take_turn();
    let Some(node) = kubelet_node() else { return };
    eventually(
        Duration::from_secs(120),
        "the agent on the kubelet node",
        || reporting_nodeconfig(&node),
    );
    let ns = Namespace::new("companion-svc");
    web_server(&ns.0, "on-agent", &node_name(1), "from-the-agent-node");
    web_server(&ns.0, "on-kubelet", &node, "from-the-kubelet-node");
    for pod in ["on-agent", "on-kubelet"] {
        eventually(Duration::from_secs(90), &format!("pod {pod} Ready"), || {
            ready_pod(&ns.0, pod)
        });
    }
    let to_agent = cluster_ip(&ns.0, "on-agent");
    let to_kubelet = cluster_ip(&ns.0, "on-kubelet");
    assert_eq!(
        fetch_from(
            &ns.0,
            "on-kubelet",
            &to_agent,
            "the agent node's Service from the kubelet node"
        ),
        "from-the-agent-node"
    );
    assert_eq!(
        fetch_from(
            &ns.0,
            "on-agent",
            &to_kubelet,
            "the kubelet node's Service from an agent node"
        ),
        "from-the-kubelet-node"
    );
}

/// The kubelet's own pod as the kubelet reports it: (container id, restarts).
fn container_of(ns: &str, pod: &str) -> (String, i64) {
    let p = get_json("pod", pod, Some(ns)).expect("the pod");
    let status = &p["status"]["containerStatuses"][0];
    (
        status["containerID"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        status["restartCount"].as_i64().unwrap_or(-1),
    )
}

#[test]
fn the_kubelets_pods_survive_the_agents_restart_and_removal() {
    let _turn = take_turn();
    let Some(node) = kubelet_node() else { return };
    let agent = eventually(Duration::from_secs(120), "the agent pod Ready", || {
        ready_agent_pod(&node)
    });
    let ns = Namespace::new("companion-keep");
    web_server(&ns.0, "kept", &node, "still-here");
    let before = eventually(Duration::from_secs(90), "pod kept Ready", || {
        ready_pod(&ns.0, "kept")
    });
    let ip = before["status"]["podIP"]
        .as_str()
        .expect("pod IP")
        .to_string();
    let first = container_of(&ns.0, "kept");
    assert_eq!(first.1, 0, "{before}");

    // Restart: the DaemonSet's pod goes and a new one comes.
    let old_uid = agent["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let old_name = agent["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    kubectl(&["delete", "pod", "-n", OPERATOR_NS, &old_name, "--wait=true"])
        .expect_ok("delete agent pod");
    eventually(Duration::from_secs(120), "a new agent pod Ready", || {
        ready_agent_pod(&node).filter(|p| p["metadata"]["uid"] != old_uid.as_str())
    });
    eventually(Duration::from_secs(90), "the new agent reporting", || {
        reporting_nodeconfig(&node)
    });
    assert_eq!(
        container_of(&ns.0, "kept"),
        first,
        "after the agent's restart"
    );
    assert!(
        ready_pod(&ns.0, "kept").is_some(),
        "still Ready after the agent's restart"
    );
    assert_eq!(
        // The server's own port: a pod IP has no Service's port 80 in front.
        fetch_from(&ns.0, "kept", &format!("{ip}:8080"), "the pod, by its IP"),
        "still-here"
    );

    // Removal: without the operator, the DaemonSet and its pods go.
    cluster(&["operator", "stop", "1"]);
    cluster(&["operator", "stop", "2"]);
    let removed = std::panic::catch_unwind(|| {
        kubectl(&[
            "delete",
            "daemonset",
            "-n",
            OPERATOR_NS,
            "node-agent",
            "--wait=true",
        ])
        .expect_ok("delete the DaemonSet");
        eventually(
            Duration::from_secs(60),
            "no agent pod on the kubelet node",
            || {
                // None at all, not even terminating: the kubelet has killed it.
                let run = kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    OPERATOR_NS,
                    "-l",
                    "app.kubernetes.io/name=node-agent",
                    "--field-selector",
                    &format!("spec.nodeName={node}"),
                    "-o",
                    "name",
                ]);
                (run.ok && run.stdout.trim().is_empty()).then_some(())
            },
        );
        assert_eq!(
            container_of(&ns.0, "kept"),
            first,
            "after the agent's removal"
        );
        assert!(
            ready_pod(&ns.0, "kept").is_some(),
            "still Ready after the agent's removal"
        );
    });
    // The operator puts the DaemonSet back, as the cluster was.
    cluster(&["operator", "start", "1"]);
    cluster(&["operator", "start", "2"]);
    if let Err(panic) = removed {
        std::panic::resume_unwind(panic);
    }
    eventually(
        Duration::from_secs(120),
        "the agent back on the kubelet node",
        || ready_agent_pod(&node),
    );
    assert_eq!(
        container_of(&ns.0, "kept"),
        first,
        "after the agent came back"
    );
}
