//! The agent's clients of the outside world: the API server ([`kube_client`]),
//! the container runtime ([`cri`], shared as [`cri_handle`]) and the machine
//! ([`host`]). iptables is the proxy's edge (`crate::proxy::iptables`).
pub mod cri;
pub mod cri_handle;
pub mod host;
pub mod kube_client;
pub mod node_stats;
