//! The operator rolls the node-agent DaemonSet over the nodes the real kubelet
//! runs: new defaults roll a new image over every kubelet node, and a rollout
//! whose agents do not become Ready within the defaults' progressDeadline is
//! stopped and said so, having taken down no more agents than the DaemonSet's
//! maxUnavailable (the cluster defaults' 1): with two kubelet nodes or more
//! (`NODECONFIG_KUBELET_NODES=2`), the other nodes keep their working agent.
//!
//! Skipped, with a message, when the cluster has no kubelet node.

use std::process::Command;
use std::time::Duration;

use nodeconfig_e2e::defaults;
use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::kubelet_node::{
    agent_pods, kubelet_nodes, ready, ready_agent_pod, OPERATOR_NS,
};
use nodeconfig_e2e::node::cri_socket;
use serde_json::Value;

const AGENT_IMAGE: &str = "nodeconfig.local/node-agent:0.1.0";

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
        let _ = defaults::write(&self.0);
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

/// Runs `ctr -n k8s.io images ARGS` against the containerd of `node`.
fn ctr_images(node: &str, args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .arg("--address")
        .arg(cri_socket(node))
        .args(["-n", "k8s.io", "images"])
        .args(args)
        .output()
        .expect("run ctr")
}

/// The Ready agent pod of `image` on every one of `nodes`, once each has one.
fn ready_agents_of(nodes: &[String], image: &str) -> Option<Vec<Value>> {
    nodes
        .iter()
        .map(|n| ready_agent_pod(n).filter(|p| image_of(p) == image))
        .collect()
}

/// Every kubelet node's AgentUpToDate condition, once `pred` holds for each.
fn up_to_date_on_all(
    nodes: &[String],
    pred: impl Fn(&(String, String, String)) -> bool,
) -> Option<Vec<(String, String, String)>> {
    nodes
        .iter()
        .map(|n| up_to_date(n).filter(|c| pred(c)))
        .collect()
}

#[test]
fn a_new_image_rolls_over_the_kubelet_nodes_and_a_broken_one_is_stopped_within_max_unavailable() {
    let nodes = kubelet_nodes();
    if nodes.is_empty() {
        return;
    }
    let before = eventually(Duration::from_secs(120), "every agent pod Ready", || {
        ready_agents_of(&nodes, AGENT_IMAGE)
    });
    eventually(
        Duration::from_secs(60),
        "AgentUpToDate=True everywhere",
        || up_to_date_on_all(&nodes, |(s, _, _)| s == "True"),
    );
    let original = defaults::read();
    let _restore = RestoreDefaults(original.clone());

    // A second tag of the agent's image on every kubelet node: the same agent under a new
    // reference, so the DaemonSet's template changes and every agent pod is replaced.
    let second = "nodeconfig.local/node-agent:0.1.0-e2e-rollout";
    for node in &nodes {
        let tagged = ctr_images(node, &["tag", "--force", AGENT_IMAGE, second]);
        assert!(
            tagged.status.success(),
            "ctr tag on {node}: {}",
            String::from_utf8_lossy(&tagged.stderr)
        );
    }
    // A working rollout: the old agent's termination (30 s grace) and the new one's readiness
    // take longer than the broken case's deadline below; with maxUnavailable 1 the nodes go
    // one after another.
    write_defaults(&with_agent(&original, second, Some("0.1.0"), "3m"));
    let rolled = eventually(
        Duration::from_secs(120 * nodes.len() as u64),
        "every agent pod replaced by one of the new image, Ready",
        || ready_agents_of(&nodes, second),
    );
    for (old, new) in before.iter().zip(&rolled) {
        assert_ne!(new["metadata"]["uid"], old["metadata"]["uid"]);
    }
    let complete = eventually(Duration::from_secs(60), "a RolloutComplete Event", || {
        daemonset_events("RolloutComplete")
            .into_iter()
            .find(|m| m.contains(second))
    });
    println!("{complete}");
    eventually(
        Duration::from_secs(60),
        "AgentUpToDate=True everywhere",
        || up_to_date_on_all(&nodes, |(s, _, _)| s == "True"),
    );
    let ds = daemonset();
    let max_unavailable = ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]
        .as_i64()
        .unwrap_or_else(|| {
            panic!(
                "an integer maxUnavailable (the cluster defaults' 1): {}",
                ds["spec"]
            )
        });
    assert_eq!(max_unavailable, 1, "the cluster defaults' maxUnavailable");

    // An image no registry has: the new agents never become Ready; after the 20 s progress
    // deadline the rollout is stopped and said so.
    let broken = "nodeconfig.local/node-agent:0.0.0-missing";
    write_defaults(&with_agent(&original, broken, None, "20s"));
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
    for node in &nodes {
        let (status, _, message) = eventually(
            Duration::from_secs(30),
            "AgentUpToDate=False RolloutStalled",
            || up_to_date(node).filter(|(_, r, _)| r == "RolloutStalled"),
        );
        assert_eq!(status, "False", "{node}");
        assert!(
            message.contains(&format!("node-agent {} runs", env!("CARGO_PKG_VERSION")))
                && message.contains("0.0.0-missing")
                && message.contains("stopped"),
            "{node}: {message}"
        );
    }
    let table = kubectl(&["get", "nodeconfig"]).expect_ok("get nc");
    println!("{table}");
    // The DaemonSet took down maxUnavailable agents and no more: that many nodes run the new,
    // broken one; every other node still runs the pod the working rollout gave it, Ready, and
    // its NodeConfig (above) says that agent runs. The stop may come while the replaced pod
    // is still terminating (30 s grace): the DaemonSet then gives that node the current
    // template's pod all the same, as OnDelete does for a node with none.
    let pods = eventually(
        Duration::from_secs(90),
        "one agent pod on every kubelet node",
        || {
            nodes
                .iter()
                .map(|n| {
                    let mut pods = agent_pods(n);
                    (pods.len() == 1).then(|| pods.remove(0))
                })
                .collect::<Option<Vec<_>>>()
        },
    );
    let mut broken_nodes = Vec::new();
    for ((node, pod), rolled) in nodes.iter().zip(&pods).zip(&rolled) {
        if image_of(pod) == broken {
            assert!(
                !ready(pod),
                "the broken agent is not Ready on {node}: {pod}"
            );
            broken_nodes.push(node.clone());
        } else {
            assert_eq!(
                pod["metadata"]["uid"], rolled["metadata"]["uid"],
                "{node} keeps the agent pod the working rollout gave it: {pod}"
            );
            assert_eq!(image_of(pod), second, "{node}");
            assert!(ready(pod), "{node}'s working agent stays Ready: {pod}");
            let nc = get_json("nodeconfig", node, None).expect("its NodeConfig");
            assert!(
                ready(&nc),
                "{node}'s agent keeps reporting: {}",
                nc["status"]
            );
        }
    }
    println!("the broken agent runs on {broken_nodes:?} of {nodes:?}");
    assert_eq!(
        broken_nodes.len() as i64,
        max_unavailable.min(nodes.len() as i64),
        "maxUnavailable {max_unavailable} over {nodes:?}"
    );

    // Back to the first image: a new rollout, RollingUpdate again, every agent Ready.
    write_defaults(&original);
    eventually(
        Duration::from_secs(180 * nodes.len() as u64),
        "every agent pod of the first image Ready",
        || ready_agents_of(&nodes, AGENT_IMAGE),
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
    eventually(
        Duration::from_secs(60),
        "AgentUpToDate=True everywhere",
        || up_to_date_on_all(&nodes, |(s, _, _)| s == "True"),
    );
    for node in &nodes {
        let _ = ctr_images(node, &["rm", second]);
    }
}

fn write_defaults(yaml: &str) {
    defaults::write(yaml).expect_ok("patch defaults");
}
