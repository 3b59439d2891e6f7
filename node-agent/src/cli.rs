//! The agent's command line, with environment fallbacks for running in a DaemonSet
//! or a systemd unit.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use nodeconfig_crds::NodeMode;

/// nodeconfig's node agent: the node's kubelet and kube-proxy, steered by its NodeConfig.
#[derive(Parser, Debug, Clone)]
#[command(name = "node-agent", version, about)]
pub struct Config {
    /// Name of this node; its NodeConfig has the same name.
    #[arg(long, env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,

    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// CRI endpoint of the container runtime (overrides spec.runtime.criEndpoint).
    #[arg(long, env = "NODECONFIG_CRI_ENDPOINT", global = true)]
    pub cri_endpoint: Option<String>,

    /// This node's InternalIP address; by default the address this machine uses to reach the API server.
    #[arg(long, env = "NODE_IP", global = true)]
    pub node_ip: Option<IpAddr>,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "NODECONFIG_LISTEN",
        default_value = "127.0.0.1:10356",
        global = true
    )]
    pub listen: SocketAddr,

    /// Kubelet mode: the agent's state (pod volumes under `pods/<uid>`), as the kubelet's --root-dir.
    #[arg(
        long,
        env = "NODECONFIG_ROOT_DIR",
        default_value = "/var/lib/nodeconfig-agent",
        global = true
    )]
    pub root_dir: PathBuf,

    /// Kubelet mode: where container logs go (`<namespace>_<pod>_<uid>/<container>/<n>.log`).
    #[arg(
        long,
        env = "NODECONFIG_POD_LOGS_DIR",
        default_value = "/var/log/pods",
        global = true
    )]
    pub pod_logs_dir: PathBuf,

    /// Kubelet mode: the port of the HTTPS endpoint the API server calls for
    /// `kubectl logs` and `kubectl exec` (the Node's daemon endpoint), on the node IP.
    #[arg(
        long,
        env = "NODECONFIG_KUBELET_PORT",
        default_value_t = 10250,
        global = true
    )]
    pub kubelet_port: u16,

    /// Kubelet mode: CA bundle that verifies client certificates on the kubelet
    /// port (the API server's kubelet client certificate); without it only
    /// bearer tokens (TokenReview) authenticate.
    #[arg(long, env = "NODECONFIG_CLIENT_CA_FILE", global = true)]
    pub client_ca_file: Option<PathBuf>,

    /// Kubelet mode: unsafe sysctls pods may set besides the safe set, as the
    /// kubelet's --allowed-unsafe-sysctls (comma-separated names, or prefixes
    /// ending in `*`, such as `kernel.msg*,net.core.somaxconn`).
    #[arg(
        long,
        env = "NODECONFIG_ALLOWED_UNSAFE_SYSCTLS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_unsafe_sysctls: Vec<String>,

    /// Kubelet mode: how often unused images are looked for and, past
    /// NodeConfig's imageGCHighThresholdPercent, removed. The kubelet's period
    /// is a fixed 5m; a shorter one is for tests.
    #[arg(
        long,
        env = "NODECONFIG_IMAGE_GC_PERIOD",
        default_value = "5m",
        value_parser = positive_duration,
        global = true
    )]
    pub image_gc_period: Duration,

    /// Run in this mode whatever the NodeConfig says.
    #[arg(long, env = "NODECONFIG_MODE", value_enum, global = true)]
    pub mode: Option<ModeOverride>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A Go-style duration (`5m`, `10s`) longer than zero.
fn positive_duration(value: &str) -> Result<Duration, String> {
    match nodeconfig_crds::duration::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The CRI endpoint used until a NodeConfig names one: spec.runtime.criEndpoint's default.
pub const DEFAULT_CRI_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// What the agent does when started; without a subcommand it runs the agent.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the container runtime's name and version through CRI, then exit.
    RuntimeVersion,
    /// Remove every iptables rule and chain of the service proxy (`NC-` chains and
    /// their jumps) in the current network namespace, print what went, then exit.
    Cleanup,
}

/// A mode forced from the command line.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeOverride {
    Kubelet,
    Companion,
}

impl From<ModeOverride> for NodeMode {
    fn from(mode: ModeOverride) -> Self {
        match mode {
            ModeOverride::Kubelet => NodeMode::Kubelet,
            ModeOverride::Companion => NodeMode::Companion,
        }
    }
}
