//! The node agent: the node's kubelet and kube-proxy, steered by its NodeConfig.
pub mod config;
pub mod cri;
