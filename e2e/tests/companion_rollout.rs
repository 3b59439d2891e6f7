//! The operator rolls the node-agent DaemonSet over the nodes the real kubelet
//! runs: new defaults roll a new image, and a rollout whose agents do not become
//! Ready within the defaults' progressDeadline is stopped and said so.
//!
//! Skipped, with a message, when the cluster has no kubelet node.

use std::process::Command;
use std::time::Duration;

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::kubelet_node::{agent_pods, kubelet_node, ready_agent_pod, OPERATOR_NS};
use nodeconfig_e2e::node::cri_socket;
use serde_json::{json, Value};

const AGENT_IMAGE: &str = "nodeconfig.local/node-agent:0.1.0";

fn read_defaults() -> String {
    kubectl(&[
        "get",
        "configmap",
        "nodeconfig-defaults",
        "-n",
        OPERATOR_NS,
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ])
    .expect_ok("read defaults")
}

fn set_defaults(yaml: &str) {
    let cm = json!({"data": {"config.yaml": yaml}}).to_string();
    kubectl(&[
        "patch",
        "configmap",
        "nodeconfig-defaults",
        "-n",
        OPERATOR_NS,
        "--type=merge",
        "-p",
        &cm,
    ])
    .expect_ok("patch defaults");
}

/// The defaults with the agent's image (and optionally version) replaced, and the rollout's
/// progress deadline.
fn with_agent(original: &str, image: &str, version: Option<&str>, deadline: &str) -> String {
    assert!(
        original.contains(&format!("image: {AGENT_IMAGE}\n")),
        "{original}"
    );
    let mut agent = format!("image: {image}\n  progressDeadline: {deadline}\n");
    if let Some(version) = version {
        agent.push_str(&format!("  version: {version}\n"));
    }
    original.replace(&format!("image: {AGENT_IMAGE}\n"), &agent)
}

/// Puts the cluster's defaults back whatever the test's outcome, so that a failure leaves no
/// broken agent image to the tests after it.
struct RestoreDefaults(String);

impl Drop for RestoreDefaults {
    fn drop(&mut self) {
        // No panic here: this may run while a failure unwinds.
        let cm = json!({"data": {"config.yaml": self.0}}).to_string();
        let _ = kubectl(&[
            "patch",
            "configmap",
            "nodeconfig-defaults",
            "-n",
            OPERATOR_NS,
            "--type=merge",
            "-p",
            &cm,
        ]);
    }
}

fn daemonset() -> Value {
    get_json("daemonset", "node-agent", Some(OPERATOR_NS)).expect("the node-agent DaemonSet")
}

/// Messages of the Events of `reason` on the node-agent DaemonSet, found as `kubectl describe
/// daemonset` finds them (by the DaemonSet's uid too).
fn daemonset_events(reason: &str) -> Vec<String> {
    let uid = daemonset()["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let selector = format!(
        "involvedObject.kind=DaemonSet,involvedObject.name=node-agent,involvedObject.uid={uid},reason={reason}"
    );
    let run = kubectl(&[
        "get",
        "events",
        "-n",
        OPERATOR_NS,
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
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Status, reason and message of NodeConfig `node`'s AgentUpToDate condition.
fn up_to_date(node: &str) -> Option<(String, String, String)> {
    let nc = get_json("nodeconfig", node, None)?;
    let c = nc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "AgentUpToDate")?
        .clone();
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str()?.into(),
    ))
}

fn image_of(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_new_image_rolls_over_the_kubelet_node_and_a_broken_one_is_stopped() {
    let Some(node) = kubelet_node() else { return };
    let before = eventually(Duration::from_secs(120), "the agent pod Ready", || {
        ready_agent_pod(&node)
    });
    assert_eq!(image_of(&before), AGENT_IMAGE);
    eventually(Duration::from_secs(60), "AgentUpToDate=True", || {
        up_to_date(&node).filter(|(s, _, _)| s == "True")
    });
    let original = read_defaults();
    let _restore = RestoreDefaults(original.clone());

    // A second tag of the agent's image on the node: the same agent under a new reference, so
    // the DaemonSet's template changes and every agent pod is replaced.
    let second = "nodeconfig.local/node-agent:0.1.0-e2e-rollout";
    let tagged = Command::new("ctr")
        .arg("--address")
        .arg(cri_socket(&node))
        .args([
            "-n",
            "k8s.io",
            "images",
            "tag",
            "--force",
            AGENT_IMAGE,
            second,
        ])
        .output()
        .expect("run ctr");
    assert!(
        tagged.status.success(),
        "ctr tag: {}",
        String::from_utf8_lossy(&tagged.stderr)
    );
    // A working rollout: the old agent's termination (30 s grace) and the new one's readiness
    // take longer than the broken case's deadline below.
    set_defaults(&with_agent(&original, second, Some("0.1.0"), "3m"));
    let rolled = eventually(
        Duration::from_secs(120),
        "the agent pod replaced by one of the new image, Ready",
        || ready_agent_pod(&node).filter(|p| image_of(p) == second),
    );
    assert_ne!(rolled["metadata"]["uid"], before["metadata"]["uid"]);
    let complete = eventually(Duration::from_secs(60), "a RolloutComplete Event", || {
        daemonset_events("RolloutComplete")
            .into_iter()
            .find(|m| m.contains(second))
    });
    println!("{complete}");
    assert_eq!(up_to_date(&node).map(|c| c.0), Some("True".to_string()));

    // An image no registry has: the new agent never becomes Ready; after the 20 s progress
    // deadline the rollout is stopped and said so.
    let broken = "nodeconfig.local/node-agent:0.0.0-missing";
    set_defaults(&with_agent(&original, broken, None, "20s"));
    let stalled = eventually(Duration::from_secs(120), "a RolloutStalled Event", || {
        daemonset_events("RolloutStalled")
            .into_iter()
            .find(|m| m.contains(broken))
    });
    println!("{stalled}");
    assert!(stalled.contains("no progress for 20s"), "{stalled}");
    let ds = daemonset();
    assert_eq!(
        ds["spec"]["updateStrategy"]["type"], "OnDelete",
        "{}",
        ds["spec"]
    );
    assert_eq!(
        ds["metadata"]["annotations"]["nodeconfig.dev/rollout-stalled"],
        broken
    );
    let (status, _, message) = eventually(
        Duration::from_secs(30),
        "AgentUpToDate=False RolloutStalled",
        || up_to_date(&node).filter(|(_, r, _)| r == "RolloutStalled"),
    );
    assert_eq!(status, "False");
    assert!(
        message.contains("0.0.0-missing") && message.contains("stopped"),
        "{message}"
    );
    let table = kubectl(&["get", "nodeconfig", &node]).expect_ok("get nc");
    println!("{table}");
    // maxUnavailable 1 on one node: the one agent is the new, broken one.
    let pods = agent_pods(&node);
    assert!(pods.iter().all(|p| image_of(p) == broken), "{pods:?}");

    // Back to the first image: a new rollout, RollingUpdate again, the agent Ready.
    set_defaults(&original);
    eventually(
        Duration::from_secs(180),
        "the agent pod of the first image Ready",
        || ready_agent_pod(&node).filter(|p| image_of(p) == AGENT_IMAGE),
    );
    let ds = daemonset();
    assert_eq!(
        ds["spec"]["updateStrategy"]["type"], "RollingUpdate",
        "{}",
        ds["spec"]
    );
    assert!(ds["metadata"]["annotations"]
        .get("nodeconfig.dev/rollout-stalled")
        .is_none());
    eventually(Duration::from_secs(60), "AgentUpToDate=True", || {
        up_to_date(&node).filter(|(s, _, _)| s == "True")
    });
    let _ = Command::new("ctr")
        .arg("--address")
        .arg(cri_socket(&node))
        .args(["-n", "k8s.io", "images", "rm", second])
        .output();
}
