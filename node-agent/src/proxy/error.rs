//! The proxy's errors, each naming what failed; `metric_label` feeds the
//! sync error counter.

/// What can go wrong between a NodeConfig and the kernel's rules.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy setting {field} {value:?}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// iptables-restore refused the transaction; `at` names the line, chain and
    /// service when iptables says which line.
    #[error("iptables-restore failed ({status}){at}: {stderr}")]
    Restore {
        status: String,
        at: String,
        stderr: String,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("iptables-save output, line {line}: {reason}: {text:?}")]
    Parse {
        line: usize,
        reason: &'static str,
        text: String,
    },
}

impl ProxyError {
    /// A short label for metrics (`..._sync_errors_total{reason=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProxyError::InvalidConfig { .. } => "invalid_config",
            ProxyError::Spawn { .. } => "spawn",
            ProxyError::Restore { .. } => "restore",
            ProxyError::Command { .. } => "command",
            ProxyError::Parse { .. } => "parse",
        }
    }
}
