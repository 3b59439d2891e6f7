//! Nodes run by the real kubelet (`NODECONFIG_KUBELET_NODES=K e2e/cluster up`,
//! e2e/scripts/lib/kubelet.sh) and the operator's node-agent DaemonSet pods on them.

use serde_json::Value;

use crate::kubectl::{condition, kubectl, require_cluster};

/// Namespace of the operator and its DaemonSet.
pub const OPERATOR_NS: &str = "nodeconfig-system";

/// The kubelet nodes (`nc-kubelet-1..K`), by name; empty (and a message) when the cluster has
/// none.
pub fn kubelet_nodes() -> Vec<String> {
    require_cluster();
    let names = kubectl(&["get", "nodes", "-o", "name"]).expect_ok("get nodes");
    let mut nodes: Vec<String> = names
        .lines()
        .filter_map(|l| l.strip_prefix("node/"))
        .filter(|n| n.starts_with("nc-kubelet-"))
        .map(str::to_string)
        .collect();
    nodes.sort();
    if nodes.is_empty() {
        eprintln!(
            "SKIPPED: the cluster has no node run by the real kubelet; \
             bring one up with NODECONFIG_KUBELET_NODES=1 e2e/cluster up"
        );
    }
    nodes
}

/// The first kubelet node, or `None` (and a message) when the cluster has none.
pub fn kubelet_node() -> Option<String> {
    kubelet_nodes().into_iter().next()
}

/// Whether an object's Ready condition is True.
pub fn ready(object: &Value) -> bool {
    condition(object, "Ready").is_some_and(|(status, _)| status == "True")
}

/// The node-agent DaemonSet's pods on `node` that are not being deleted.
pub fn agent_pods(node: &str) -> Vec<Value> {
    let selector = format!("spec.nodeName={node}");
    let run = kubectl(&[
        "get",
        "pods",
        "-n",
        OPERATOR_NS,
        "-l",
        "app.kubernetes.io/name=node-agent",
        "--field-selector",
        &selector,
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// The node-agent DaemonSet's pod on `node`, once it is Ready.
pub fn ready_agent_pod(node: &str) -> Option<Value> {
    agent_pods(node).into_iter().find(ready)
}
