//! The loop the product hangs on, on the local cluster: agents register their
//! Nodes and report through their NodeConfigs, the operator keeps one
//! NodeConfig per Node, notices lost agents, and fails over.
//!
//! Runs against `e2e/cluster up` (two operator replicas on the host, one agent
//! per node namespace in Kubelet mode). The tests take turns: several of them
//! stop parts of the cluster.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodeconfig_e2e::cluster::cluster;
use nodeconfig_e2e::defaults;
use nodeconfig_e2e::kubectl::{condition, create, eventually, get_json, kubectl, require_cluster};
use nodeconfig_e2e::node::node_names;
use serde_json::{json, Value};

static TURN: Mutex<()> = Mutex::new(());
const NS: &str = "nodeconfig-system";

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    let guard = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    require_cluster();
    guard
}

fn nodeconfig(name: &str) -> Option<Value> {
    get_json("nodeconfig", name, None)
}

fn node_ready(name: &str) -> Option<String> {
    get_json("node", name, None)
        .and_then(|n| condition(&n, "Ready"))
        .map(|(status, _)| status)
}

/// NodeConfig `name` reports Ready=True and ConfigApplied=True for its current generation.
fn reports_applied(name: &str) -> Option<Value> {
    let nc = nodeconfig(name)?;
    let applied = condition(&nc, "ConfigApplied")?.0 == "True";
    let ready = condition(&nc, "Ready")?.0 == "True";
    let current = nc["status"]["observedGeneration"] == nc["metadata"]["generation"];
    (applied && ready && current).then_some(nc)
}

/// The status, reason and message of NodeConfig `name`'s AgentUpToDate condition.
fn up_to_date(name: &str) -> Option<(String, String, String)> {
    let nc = nodeconfig(name)?;
    let c = nc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "AgentUpToDate")?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str()?.to_string(),
    ))
}

/// A Node object with no agent behind it, as a Companion node looks before its agent runs.
fn create_bare_node(name: &str, labels: Value) {
    let _ = kubectl(&["delete", "node", name, "--ignore-not-found"]);
    let node =
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}});
    create(&node.to_string()).expect_ok("create node");
}

#[test]
fn agents_register_nodes_and_report_ready() {
    let _turn = take_turn();
    for node in node_names() {
        eventually(
            Duration::from_secs(90),
            &format!("Node {node} Ready"),
            || (node_ready(&node)? == "True").then_some(()),
        );
        let labels = get_json("node", &node, None).unwrap()["metadata"]["labels"].clone();
        assert_eq!(
            labels["nodeconfig.dev/agent-managed"], "true",
            "{node}: {labels}"
        );
        let nc = eventually(
            Duration::from_secs(60),
            &format!("NodeConfig {node} Ready and applied"),
            || reports_applied(&node),
        );
        assert_eq!(nc["spec"]["mode"], "Kubelet", "{node}");
        assert_eq!(nc["spec"]["nodeName"], node.as_str());
        assert_eq!(nc["status"]["agent"]["mode"], "Kubelet");
        assert!(
            nc["status"]["runtime"]["version"]
                .as_str()
                .unwrap_or_default()
                .contains("containerd"),
            "{nc}"
        );
        let owner = &nc["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str()),
            (Some("Node"), Some(node.as_str()))
        );
    }
}

#[test]
fn spec_edits_are_applied_and_a_persons_edit_survives_reconcile() {
    let _turn = take_turn();
    let node = &node_names()[0];
    eventually(Duration::from_secs(90), "NodeConfig applied", || {
        reports_applied(node)
    });

    // A person labels the node through its NodeConfig; the agent applies it.
    let value = format!("v{}", std::process::id());
    let patch = json!({"spec": {"pods": {"labels": {"e2e-edit": value}}}}).to_string();
    let started = Instant::now();
    kubectl(&["patch", "nodeconfig", node, "--type=merge", "-p", &patch]).expect_ok("patch spec");
    let nc = eventually(
        Duration::from_secs(20),
        "observedGeneration to follow the edit",
        || {
            reports_applied(node)
                .filter(|nc| nc["spec"]["pods"]["labels"]["e2e-edit"] == value.as_str())
        },
    );
    println!("observedGeneration followed in {:?}", started.elapsed());
    let generation = nc["metadata"]["generation"].as_i64().unwrap();
    eventually(Duration::from_secs(20), "the Node to get the label", || {
        (get_json("node", node, None)?["metadata"]["labels"]["e2e-edit"] == value.as_str())
            .then_some(())
    });

    // A changed default makes the operator reconcile every NodeConfig...
    let original = defaults::read();
    assert!(
        !original.contains("syncPeriod"),
        "the cluster's defaults leave syncPeriod to the server: {original}"
    );
    // The rest of the defaults stay: without the cluster's 1 % disk thresholds the
    // kubelet's 10 %/15 % return, a full host disk puts the node under DiskPressure
    // for the 5 minute transition period, and later tests' pods stay Pending.
    assert!(
        original.contains("spec:\n") && !original.contains("\n  proxy:"),
        "the cluster's defaults set spec but not spec.proxy: {original}"
    );
    write_defaults(&original.replacen("spec:\n", "spec:\n  proxy:\n    syncPeriod: 45s\n", 1));
    let nc = eventually(
        Duration::from_secs(30),
        "the new default to reach the NodeConfig",
        || nodeconfig(node).filter(|nc| nc["spec"]["proxy"]["syncPeriod"] == "45s"),
    );
    // ...and the person's edit is still there, and applied again.
    assert_eq!(
        nc["spec"]["pods"]["labels"]["e2e-edit"],
        value.as_str(),
        "{nc}"
    );
    assert!(nc["metadata"]["generation"].as_i64().unwrap() > generation);
    eventually(
        Duration::from_secs(20),
        "the agent to apply the new generation",
        || reports_applied(node),
    );

    // Put the defaults back; the operator gives the field up and the server default returns.
    write_defaults(&original);
    eventually(
        Duration::from_secs(30),
        "syncPeriod back to its default",
        || nodeconfig(node).filter(|nc| nc["spec"]["proxy"]["syncPeriod"] == "30s"),
    );
    let labels = json!({"spec": {"pods": {"labels": {"e2e-edit": null}}}}).to_string();
    kubectl(&["patch", "nodeconfig", node, "--type=merge", "-p", &labels])
        .expect_ok("remove the label");
}

#[test]
fn a_stopped_agent_is_noticed_and_recovers() {
    let _turn = take_turn();
    let node = node_names().last().cloned().unwrap();
    eventually(Duration::from_secs(90), "NodeConfig applied", || {
        reports_applied(&node)
    });
    cluster(&["agent", "kill", &node]);
    let stopped = Instant::now();
    // Grace period (50s) plus 15s, for both the operator and the node lifecycle controller.
    let budget = Duration::from_secs(65);
    eventually(budget, "Ready=Unknown with AgentHeartbeatLost", || {
        let (status, reason) = condition(&nodeconfig(&node)?, "Ready")?;
        (status == "Unknown" && reason == "AgentHeartbeatLost").then_some(())
    });
    println!("NodeConfig Ready=Unknown after {:?}", stopped.elapsed());
    eventually(
        budget.saturating_sub(stopped.elapsed()) + Duration::from_secs(1),
        "the Node to become NotReady",
        || (node_ready(&node)? != "True").then_some(()),
    );
    println!("Node NotReady after {:?}", stopped.elapsed());

    cluster(&["agent", "start", &node]);
    eventually(
        Duration::from_secs(60),
        "the NodeConfig to be Ready again",
        || reports_applied(&node),
    );
    eventually(
        Duration::from_secs(60),
        "the Node to be Ready again",
        || (node_ready(&node)? == "True").then_some(()),
    );
}

#[test]
fn deleting_a_node_deletes_its_nodeconfig() {
    let _turn = take_turn();
    let name = "e2e-deleted-node";
    create_bare_node(name, json!({}));
    eventually(
        Duration::from_secs(30),
        "the NodeConfig of a new Node",
        || nodeconfig(name),
    );
    kubectl(&["delete", "node", name]).expect_ok("delete node");
    eventually(
        Duration::from_secs(60),
        "the NodeConfig to go with its Node",
        || nodeconfig(name).is_none().then_some(()),
    );
}

#[test]
fn the_standby_operator_takes_over_when_the_leader_dies() {
    let _turn = take_turn();
    let holder = || -> Option<String> {
        get_json("lease", "nodeconfig-operator", Some(NS))?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    };
    let leader = eventually(Duration::from_secs(30), "an operator leader", holder);
    let replica = leader.trim_start_matches("operator-").to_string();
    assert!(
        replica == "1" || replica == "2",
        "unexpected leader identity {leader}"
    );
    cluster(&["operator", "kill", &replica]);
    let killed = Instant::now();
    let new_leader = eventually(
        Duration::from_secs(25),
        "another replica to take the lease",
        || holder().filter(|h| *h != leader),
    );
    println!(
        "{new_leader} took over from {leader} after {:?}",
        killed.elapsed()
    );
    // The loop keeps working under the new leader.
    let name = "e2e-after-failover";
    create_bare_node(name, json!({}));
    eventually(
        Duration::from_secs(30),
        "a NodeConfig made by the new leader",
        || nodeconfig(name),
    );
    kubectl(&["delete", "node", name]).expect_ok("delete node");
    cluster(&["operator", "start", &replica]);
}

#[test]
fn a_companion_node_gets_a_companion_nodeconfig_and_the_daemonset_counts_it() {
    let _turn = take_turn();
    let name = "e2e-companion";
    create_bare_node(name, json!({"kubernetes.io/os": "linux"}));
    let nc = eventually(Duration::from_secs(30), "the Companion NodeConfig", || {
        nodeconfig(name)
    });
    assert_eq!(nc["spec"]["mode"], "Companion");
    let ds = eventually(
        Duration::from_secs(60),
        "the DaemonSet to count the companion node",
        || {
            let ds = get_json("daemonset", "node-agent", Some(NS))?;
            (ds["status"]["desiredNumberScheduled"].as_i64()? >= 1).then_some(ds)
        },
    );
    // Agent-managed nodes run the agent as their kubelet, not from the DaemonSet.
    let companions = kubectl(&[
        "get",
        "nodes",
        "-l",
        "!nodeconfig.dev/agent-managed",
        "-o",
        "name",
    ])
    .expect_ok("get nodes");
    assert_eq!(
        ds["status"]["desiredNumberScheduled"].as_i64(),
        Some(companions.lines().count() as i64),
        "{ds}"
    );
    kubectl(&["delete", "node", name]).expect_ok("delete node");
}

#[test]
fn get_nodeconfigs_shows_every_node() {
    let _turn = take_turn();
    for node in node_names() {
        eventually(Duration::from_secs(90), "NodeConfig applied", || {
            reports_applied(&node)
        });
    }
    let table = kubectl(&["get", "nodeconfigs"]).expect_ok("get nodeconfigs");
    println!("{table}");
    let version = env!("CARGO_PKG_VERSION");
    for node in node_names() {
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("{node} missing:\n{table}"))
            .split_whitespace()
            .collect();
        assert_eq!(&row[..3], [node.as_str(), "Kubelet", "True"], "{table}");
        assert!(
            row.contains(&version),
            "agent version {version} missing:\n{table}"
        );
    }
}

#[test]
fn version_skew_shows_in_get_nodeconfigs() {
    let _turn = take_turn();
    let version = env!("CARGO_PKG_VERSION");
    for node in node_names() {
        eventually(
            Duration::from_secs(90),
            "the agent's version is the desired one",
            || up_to_date(&node).filter(|(status, _, _)| status == "True"),
        );
    }
    // The defaults ask for another version: every Kubelet-mode node lags, and says how to catch up.
    let original = defaults::read();
    assert!(
        !original.contains("version:"),
        "the cluster's defaults take the version from the image tag: {original}"
    );
    let wanted = "9.9.9";
    write_defaults(&original.replace("agent:\n", &format!("agent:\n  version: {wanted}\n")));
    for node in node_names() {
        let (_, reason, message) =
            eventually(Duration::from_secs(30), "AgentUpToDate=False", || {
                up_to_date(&node).filter(|(status, _, _)| status == "False")
            });
        assert_eq!(reason, "VersionSkew");
        assert!(
            message.contains(version)
                && message.contains(wanted)
                && message.contains("system service"),
            "{message}"
        );
    }
    let table = kubectl(&["get", "nodeconfigs"]).expect_ok("get nodeconfigs");
    println!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "UP-TO-DATE")
        .unwrap_or_else(|| panic!("no UP-TO-DATE column:\n{table}"));
    for node in node_names() {
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("{node} missing:\n{table}"))
            .split_whitespace()
            .collect();
        assert_eq!(row.get(column), Some(&"False"), "{table}");
    }
    // Back to the image's tag: up to date again, the lag forgotten.
    write_defaults(&original);
    for node in node_names() {
        let (_, reason, _) = eventually(Duration::from_secs(30), "AgentUpToDate=True", || {
            up_to_date(&node).filter(|(status, _, _)| status == "True")
        });
        assert_eq!(reason, "DesiredVersion");
    }
}

fn write_defaults(yaml: &str) {
    defaults::write(yaml).expect_ok("patch defaults");
}
