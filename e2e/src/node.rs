//! Reaching the local cluster's nodes from a test.
//!
//! Each node is a network namespace `nc-node-<i>` with its own containerd (see
//! `e2e/scripts/lib/nodes.sh`). The names, addresses and socket paths here follow
//! the same formulas as `e2e/scripts/lib/common.sh` and honour the same
//! environment variables, so a test finds the nodes the script made.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Number of nodes: `NODECONFIG_NODES`, default 2 (as in common.sh).
pub fn node_count() -> usize {
    std::env::var("NODECONFIG_NODES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2)
}

/// Name of node `i` (1-based), which is also its network namespace's name.
pub fn node_name(i: usize) -> String {
    format!("nc-node-{i}")
}

/// Names of all nodes: `nc-node-1` .. `nc-node-<node_count()>`.
pub fn node_names() -> Vec<String> {
    (1..=node_count()).map(node_name).collect()
}

/// Index of a node name: `nc-node-2` -> 2.
pub fn node_index(node: &str) -> Option<usize> {
    node.strip_prefix("nc-node-")?.parse().ok()
}

/// Pids and sockets of the cluster: `NODECONFIG_RUN`, default `/run/nodeconfig-e2e`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("NODECONFIG_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/nodeconfig-e2e"))
}

/// The node's containerd CRI socket (`node_cri_socket` in common.sh).
pub fn cri_socket(node: &str) -> PathBuf {
    run_dir().join("nodes").join(node).join("containerd.sock")
}

/// The node's CRI endpoint as the agent takes it: `unix:///…/containerd.sock`.
pub fn cri_endpoint(node: &str) -> String {
    format!("unix://{}", cri_socket(node).display())
}

/// The network namespace file of a node.
pub fn netns_path(node: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(node)
}

/// Address of node `i` on its veth link (`node_ip` in common.sh).
pub fn node_ip(i: usize) -> String {
    format!("10.200.{i}.2")
}

/// Pod CIDR of node `i` (`node_pod_cidr` in common.sh): `10.244.<i>.0/24`.
pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// Runs `cmd args…` in the node's network namespace (`nsenter --net=…`, the
/// way the harness starts the node's own processes) and returns its output.
/// An `Err` means nsenter could not be started; a command that ran and failed
/// is an `Ok` with a non-zero status.
pub fn exec_in_node<I, S>(node: &str, cmd: &str, args: I) -> std::io::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut netns = std::ffi::OsString::from("--net=");
    netns.push(netns_path(node));
    Command::new("nsenter")
        .arg(netns)
        .arg("--")
        .arg(cmd)
        .args(args)
        .output()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_follow_common_sh() {
        assert_eq!(node_name(2), "nc-node-2");
        assert_eq!(node_index("nc-node-12"), Some(12));
        assert_eq!(node_index("node-1"), None);
        assert_eq!(pod_cidr(1), "10.244.1.0/24");
        assert_eq!(node_ip(3), "10.200.3.2");
        if std::env::var_os("NODECONFIG_RUN").is_none() {
            assert_eq!(
                cri_endpoint("nc-node-1"),
                "unix:///run/nodeconfig-e2e/nodes/nc-node-1/containerd.sock"
            );
        }
    }
}
