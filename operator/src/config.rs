//! The operator's command line, with environment fallbacks for its Deployment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// nodeconfig's operator: one NodeConfig per Node, and the node agent's rollout.
#[derive(Parser, Debug, Clone)]
#[command(name = "nodeconfig-operator", version, about)]
pub struct Config {
    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the operator's defaults ConfigMap, leases and agent DaemonSet.
    #[arg(long, env = "NODECONFIG_NAMESPACE", default_value = "nodeconfig-system")]
    pub namespace: String,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "NODECONFIG_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}
