//! Companion mode on a node run by the real kubelet (`nc-kubelet-1`, brought up
//! by `NODECONFIG_KUBELET_NODES=1 e2e/cluster up`, see e2e/scripts/lib/kubelet.sh):
//! the kubelet registers the Node, the operator gives it a Companion
//! NodeConfig, the kubelet runs the operator's node-agent DaemonSet pod, and
//! that agent takes kube-proxy's place there.
//!
//! Skipped, with a message, when the cluster has no kubelet node.

use std::sync::Mutex;
use std::time::Duration;

use nodeconfig_e2e::kubectl::{condition, eventually, get_json};
use nodeconfig_e2e::kubelet_node::{kubelet_node, ready, ready_agent_pod};
use nodeconfig_e2e::node::exec_in_node;
use serde_json::{json, Value};

/// The taint the harness registers kubelet nodes with (kubelet.sh), so that only
/// pods that ask run there.
const KUBELET_TAINT: &str = "nodeconfig.dev/kubelet-node";
const AGENT_MANAGED: &str = "nodeconfig.dev/agent-managed";

/// One test at a time.
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
