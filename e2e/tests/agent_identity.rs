//! Per-node identity on the real API server, as NodeRestriction gives kubelets:
//! the admission policy (`manifests/admission-policy.yaml`) lets the token of a
//! node-agent pod write only its own node's NodeConfig status and agent Lease,
//! and a node's credentials only its own NodeConfig.
//!
//! A ServiceAccount token bound to a pod that has `spec.nodeName` names that node
//! in the user's extra (`authentication.kubernetes.io/node-name`); that is what
//! the kubelet mounts into the DaemonSet's agent pods. The tests make such tokens
//! with `kubectl create token --bound-object-kind Pod` for pods bound to Node
//! objects of their own (no kubelet behind them: the pods never run, the tokens
//! are the same), and, on a cluster with a kubelet node, take the token the
//! kubelet mounted into the DaemonSet's agent pod there.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig};
use kube::{Api, Client, Config};
use nodeconfig_crds::NodeConfig;
use nodeconfig_e2e::kubectl::{create, eventually, get_json, kubectl, require_cluster};
use nodeconfig_e2e::kubelet_node::{agent_pods, kubelet_node};
use nodeconfig_e2e::{admin_kubeconfig, state_dir};
use serde_json::{json, Value};

const NS: &str = "nodeconfig-system";
/// The DaemonSet's ServiceAccount (operator/src/daemonset.rs, manifests/rbac-agent.yaml).
const SA: &str = "node-agent";
const POLICY: &str = "nodeconfig-node-restriction";

/// Two Node objects with no kubelet behind them (as Companion nodes look before
/// their agents run), their NodeConfigs (made by the operator) and, when a test
/// makes them, an agent pod and agent Leases; all deleted when dropped.
struct TwoNodes {
    a: String,
    b: String,
    pods: Vec<String>,
}

impl TwoNodes {
    fn new(what: &str) -> Self {
        require_cluster();
        let pid = std::process::id();
        let nodes = Self {
            a: format!("ident-{what}-a-{pid}"),
            b: format!("ident-{what}-b-{pid}"),
            pods: Vec::new(),
        };
        for name in [&nodes.a, &nodes.b] {
            let _ = kubectl(&["delete", "node", name, "--ignore-not-found"]);
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
            create(&node.to_string()).expect_ok("create node");
        }
        for name in [&nodes.a, &nodes.b] {
            eventually(
                Duration::from_secs(60),
                &format!("the operator's NodeConfig {name}"),
                || get_json("nodeconfig", name, None),
            );
        }
        nodes
    }

    /// A pod of the agent's ServiceAccount bound to `node`, and a token bound to it.
    fn agent_pod_token(&mut self, node: &str) -> String {
        let name = format!("{node}-agent");
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "nodeName": node,
                "serviceAccountName": SA,
                // The node has no kubelet and goes NotReady: the pod must not be evicted.
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "agent", "image": "nodeconfig.local/node-agent:0.1.0"}],
            },
        });
        create(&pod.to_string()).expect_ok("create the agent pod");
        self.pods.push(name.clone());
        let uid = get_json("pod", &name, Some(NS)).expect("the agent pod")["metadata"]["uid"]
            .as_str()
            .expect("pod uid")
            .to_string();
        let token = kubectl(&[
            "create",
            "token",
            SA,
            "-n",
            NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            &name,
            "--bound-object-uid",
            &uid,
        ])
        .expect_ok("create a pod-bound token");
        token.trim().to_string()
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for pod in &self.pods {
            let _ = kubectl(&[
                "delete",
                "pod",
                pod,
                "-n",
                NS,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ]);
        }
        for node in [&self.a, &self.b] {
            let lease = format!("node-agent-{node}");
            let _ = kubectl(&["delete", "lease", &lease, "-n", NS, "--ignore-not-found"]);
            let _ = kubectl(&["delete", "node", node, "--wait=false"]);
        }
    }
}

/// A client of the local cluster that authenticates with `token` only.
async fn client_with_token(token: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(admin_kubeconfig()).expect("admin kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    config.auth_info =
        serde_json::from_value::<AuthInfo>(json!({ "token": token })).expect("token auth info");
    Client::try_from(config).expect("client")
}

/// What the agent's status writer does: set the agent it reports in `node`'s
/// NodeConfig (a dry run when `dry_run`: authorization and admission as for a write).
async fn patch_status(
    client: &Client,
    node: &str,
    version: &str,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let status = json!({"status": {"agent": {"version": version, "mode": "Companion"}}});
    let params = PatchParams {
        dry_run,
        ..PatchParams::default()
    };
    Api::<NodeConfig>::all(client.clone())
        .patch_status(node, &params, &Patch::Merge(&status))
        .await
        .map(drop)
}

/// What the agent does when its Lease is missing: create it (a dry run when `dry_run`).
async fn create_lease(
    client: &Client,
    name: &str,
    holder: &str,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 40},
    }))
    .expect("lease");
    Api::<Lease>::namespaced(client.clone(), NS)
        .create(
            &PostParams {
                dry_run,
                ..PostParams::default()
            },
            &lease,
        )
        .await
        .map(drop)
}

/// A renewal of Lease `name` by `holder` (a dry run when `dry_run`).
async fn patch_lease(
    client: &Client,
    name: &str,
    holder: &str,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let params = PatchParams {
        dry_run,
        ..PatchParams::default()
    };
    let patch = json!({"spec": {"holderIdentity": holder}});
    Api::<Lease>::namespaced(client.clone(), NS)
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// The write was refused by the policy: 403 with `message` in the policy's words.
#[track_caller]
fn refused(result: Result<(), kube::Error>, message: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains(POLICY) && status.message.contains(message),
                "expected the policy's refusal with {message:?}, got: {}",
                status.message
            );
        }
        Ok(()) => panic!("the write was allowed; expected a refusal with {message:?}"),
        Err(other) => panic!("expected a 403 with {message:?}, got: {other}"),
    }
}

fn agent_version(node: &str) -> Value {
    get_json("nodeconfig", node, None).expect("NodeConfig")["status"]["agent"]["version"].clone()
}

fn admin_create_lease(node: &str) {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": format!("node-agent-{node}"), "namespace": NS},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40},
    });
    create(&lease.to_string()).expect_ok("create the agent Lease");
}

#[test]
fn an_agent_pods_token_writes_only_its_own_nodes_nodeconfig_status_and_lease() {
    let mut nodes = TwoNodes::new("pod");
    let (a, b) = (nodes.a.clone(), nodes.b.clone());
    admin_create_lease(&b);
    let token = nodes.agent_pod_token(&a);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = runtime.block_on(client_with_token(&token));
    let (lease_a, lease_b) = (format!("node-agent-{a}"), format!("node-agent-{b}"));

    // Its own node: the status and the Lease, created then renewed, as the agent does.
    runtime
        .block_on(patch_status(&client, &a, "pod-token", false))
        .expect("the agent pod's token writes its own NodeConfig status");
    assert_eq!(agent_version(&a), "pod-token");
    runtime
        .block_on(create_lease(&client, &lease_a, &a, false))
        .expect("the agent pod's token creates its own Lease");
    runtime
        .block_on(patch_lease(&client, &lease_a, &a, false))
        .expect("the agent pod's token renews its own Lease");

    // Another node's objects, and the operator's Lease.
    let who = format!("the node-agent pod on node {a}");
    refused(
        runtime.block_on(patch_status(&client, &b, "pod-token", false)),
        &format!("{who} may only write NodeConfig {a}, not {b}"),
    );
    assert_ne!(agent_version(&b), "pod-token");
    refused(
        runtime.block_on(patch_lease(&client, &lease_b, &a, false)),
        &format!("{who} may only write Lease {lease_a} in nodeconfig-system, not {lease_b}"),
    );
    refused(
        runtime.block_on(create_lease(&client, &format!("{lease_b}-x"), &a, false)),
        &format!("not {lease_b}-x"),
    );
    // A dry run: were it allowed, the operators' leader election would be left alone.
    refused(
        runtime.block_on(patch_lease(&client, "nodeconfig-operator", &a, true)),
        &format!(
            "{who} may only write Lease {lease_a} in nodeconfig-system, not nodeconfig-operator"
        ),
    );
}

#[test]
fn an_agent_token_bound_to_no_pod_writes_no_nodeconfig_or_lease() {
    let nodes = TwoNodes::new("unbound");
    let a = nodes.a.clone();
    admin_create_lease(&a);
    let token = kubectl(&["create", "token", SA, "-n", NS])
        .expect_ok("create an unbound token")
        .trim()
        .to_string();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = runtime.block_on(client_with_token(&token));
    let message = "this token names no node";
    refused(
        runtime.block_on(patch_status(&client, &a, "unbound-token", false)),
        message,
    );
    assert_ne!(agent_version(&a), "unbound-token");
    refused(
        runtime.block_on(patch_lease(&client, &format!("node-agent-{a}"), &a, false)),
        message,
    );
}

#[test]
fn a_nodes_credentials_write_only_its_own_nodeconfig_status() {
    let nodes = TwoNodes::new("creds");
    let (a, b) = (nodes.a.clone(), nodes.b.clone());
    // The node's own user, as agent-managed nodes' agents run (a dry run on the server:
    // authorization and admission as for a real write).
    let as_node = |user: &str, target: &str| {
        kubectl(&[
            "patch",
            "nodeconfig",
            target,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"agent":{"version":"node-creds","mode":"Kubelet"}}}"#,
            "--dry-run=server",
            "--as",
            user,
            "--as-group",
            "system:nodes",
        ])
    };
    let own = as_node(&format!("system:node:{a}"), &a);
    assert!(
        own.ok,
        "node {a} patches its own NodeConfig status: {}",
        own.stderr
    );
    let other = as_node(&format!("system:node:{a}"), &b);
    assert!(!other.ok, "node {a} patched NodeConfig {b}");
    assert!(
        other.stderr.contains(POLICY)
            && other
                .stderr
                .contains(&format!("node {a} may only write NodeConfig {a}, not {b}")),
        "{}",
        other.stderr
    );
    let nameless = as_node("not-a-node-name", &a);
    assert!(!nameless.ok, "a nameless node patched NodeConfig {a}");
    assert!(
        nameless
            .stderr
            .contains("a node's user name must be system:node:<name>"),
        "{}",
        nameless.stderr
    );
}

/// The ServiceAccount token the kubelet of `node` mounted into pod `uid`
/// (`<root-dir>/pods/<uid>/volumes/kubernetes.io~projected/kube-api-access-*/token`).
fn mounted_token(node: &str, uid: &str) -> Option<String> {
    let projected: PathBuf = state_dir()
        .join("nodes")
        .join(node)
        .join("kubelet/pods")
        .join(uid)
        .join("volumes/kubernetes.io~projected");
    std::fs::read_dir(projected)
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("kube-api-access-")
        })
        .find_map(|e| std::fs::read_to_string(e.path().join("token")).ok())
        .filter(|t| !t.trim().is_empty())
}

#[test]
fn the_token_the_kubelet_mounts_into_the_agent_pod_writes_only_its_nodes_objects() {
    let Some(node) = kubelet_node() else { return };
    let token = eventually(
        Duration::from_secs(120),
        &format!("the node-agent DaemonSet pod on {node} with its token mounted"),
        || {
            agent_pods(&node)
                .iter()
                .find_map(|pod| mounted_token(&node, pod["metadata"]["uid"].as_str()?))
        },
    );
    // An agent-managed node's, which every cluster has.
    let other = "nc-node-1";
    assert!(
        get_json("nodeconfig", other, None).is_some(),
        "NodeConfig {other}"
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = runtime.block_on(client_with_token(token.trim()));
    let own_lease = format!("node-agent-{node}");
    // Dry runs all: the agent itself may be writing these objects.
    runtime
        .block_on(patch_status(&client, &node, "mounted-token", true))
        .expect("the mounted token writes its node's NodeConfig status");
    match runtime.block_on(create_lease(&client, &own_lease, &node, true)) {
        // 409: the agent made it already, and admission let the create through to storage.
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("the mounted token creates its node's Lease: {err}"),
    }
    let who = format!("the node-agent pod on node {node}");
    refused(
        runtime.block_on(patch_status(&client, other, "mounted-token", true)),
        &format!("{who} may only write NodeConfig {node}, not {other}"),
    );
    refused(
        runtime.block_on(create_lease(
            &client,
            &format!("node-agent-{other}"),
            &node,
            true,
        )),
        &format!(
            "{who} may only write Lease {own_lease} in nodeconfig-system, not node-agent-{other}"
        ),
    );
}
