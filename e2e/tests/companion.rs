//! Companion mode on a node run by the real kubelet (`nc-kubelet-1`, brought up
//! by `NODECONFIG_KUBELET_NODES=1 e2e/cluster up`, see e2e/scripts/lib/kubelet.sh):
//! the kubelet registers the Node, the operator gives it a Companion
//! NodeConfig, the kubelet runs the operator's node-agent DaemonSet pod, and
//! that agent takes kube-proxy's place there.
//!
//! Skipped, with a message, when the cluster has no kubelet node.

use std::time::Duration;

use nodeconfig_e2e::kubectl::{condition, eventually, get_json, kubectl, require_cluster};
use serde_json::Value;

/// The taint the harness registers kubelet nodes with (kubelet.sh), so that only
/// pods that ask run there.
const KUBELET_TAINT: &str = "nodeconfig.dev/kubelet-node";
const AGENT_MANAGED: &str = "nodeconfig.dev/agent-managed";

/// The first kubelet node, or `None` (and a message) when the cluster has none.
fn kubelet_node() -> Option<String> {
    require_cluster();
    let names = kubectl(&["get", "nodes", "-o", "name"]).expect_ok("get nodes");
    let node = names
        .lines()
        .filter_map(|l| l.strip_prefix("node/"))
        .find(|n| n.starts_with("nc-kubelet-"))
        .map(str::to_string);
    if node.is_none() {
        eprintln!(
            "SKIPPED: the cluster has no node run by the real kubelet; \
             bring one up with NODECONFIG_KUBELET_NODES=1 e2e/cluster up"
        );
    }
    node
}

fn ready(object: &Value) -> bool {
    condition(object, "Ready").is_some_and(|(status, _)| status == "True")
}

#[test]
fn the_kubelet_registers_its_node_ready_and_it_gets_a_companion_nodeconfig() {
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
