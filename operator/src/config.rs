//! The operator's command line, with environment fallbacks for its Deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use nodeconfig_crds::duration::parse_duration;

/// nodeconfig's operator: one NodeConfig per Node, and the node agent's rollout.
#[derive(Parser, Debug, Clone)]
#[command(name = "nodeconfig-operator", version, about)]
pub struct Config {
    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the defaults ConfigMap, the Leases and the agent DaemonSet.
    #[arg(
        long,
        env = "NODECONFIG_NAMESPACE",
        default_value = "nodeconfig-system"
    )]
    pub namespace: String,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "NODECONFIG_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// This replica's name in leader election; the pod name in a Deployment, else hostname-pid.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "NODECONFIG_LEASE_NAME",
        default_value = "nodeconfig-operator"
    )]
    pub lease_name: String,

    /// How long the leader's Lease stays valid after its last renewal.
    #[arg(long, env = "NODECONFIG_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps leading without a successful renewal (shorter than the lease duration).
    #[arg(long, env = "NODECONFIG_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often the leader renews and a standby looks at the Lease.
    #[arg(long, env = "NODECONFIG_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Reconciles of Nodes that may run at the same time.
    #[arg(long, env = "NODECONFIG_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Log format.
    #[arg(long, env = "NODECONFIG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Refuses timings with which two replicas could both lead.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err("--renew-deadline must be shorter than --lease-duration".into());
        }
        if self.retry_period >= self.renew_deadline {
            return Err("--retry-period must be shorter than --renew-deadline".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err("--lease-duration must be at least 1s".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The leader election identity.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| {
                let host = hostname::get()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "nodeconfig-operator".into());
                format!("{host}-{}", std::process::id())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_timings_are_checked() {
        let config = Config::try_parse_from(["nodeconfig-operator"]).expect("parses");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.namespace, "nodeconfig-system");
        assert!(config.validate().is_ok());
        let bad = Config::try_parse_from(["nodeconfig-operator", "--renew-deadline", "20s"])
            .expect("parses");
        assert!(bad.validate().is_err());
        assert!(
            Config::try_parse_from(["nodeconfig-operator", "--lease-duration", "soon"]).is_err()
        );
    }
}
