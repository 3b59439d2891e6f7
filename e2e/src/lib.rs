//! Access to the local cluster that `e2e/cluster up` starts, for the end-to-end tests.
//!
//! The tests assume the cluster is up and fail (never skip) when it is not: a test
//! run that could not reach the real components must not look green.
pub mod backends;
pub mod cluster;
pub mod defaults;
pub mod kubectl;
pub mod kubelet_node;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod websocket;

use std::path::PathBuf;

/// The pinned versions the cluster runs (`e2e/scripts/versions.env`).
const VERSIONS_ENV: &str = include_str!("../scripts/versions.env");

/// A value of `e2e/scripts/versions.env`, such as `K8S_VERSION`.
pub fn pinned(key: &str) -> String {
    VERSIONS_ENV
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} is missing from e2e/scripts/versions.env"))
}

/// Folder of the cached builds (`NODECONFIG_CACHE`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NODECONFIG_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/nodeconfig"), PathBuf::from)
}

/// Folder of the running cluster's state (`NODECONFIG_STATE`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("NODECONFIG_STATE")
        .map_or_else(|| PathBuf::from("/var/lib/nodeconfig-e2e"), PathBuf::from)
}

/// The admin kubeconfig of the running cluster.
pub fn admin_kubeconfig() -> PathBuf {
    state_dir().join("admin.kubeconfig")
}

/// A binary of the pinned Kubernetes build, such as `kubectl`.
pub fn k8s_bin(name: &str) -> PathBuf {
    cache_dir()
        .join(format!("k8s-{}", pinned("K8S_VERSION")))
        .join("bin")
        .join(name)
}

/// The workspace root, for files such as the checked-in CRD.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
