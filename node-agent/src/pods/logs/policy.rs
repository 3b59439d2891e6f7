//! The log rotation policy from NodeConfig `spec.pods`, checked as the
//! kubelet checks its configuration.

use std::time::Duration;

use nodeconfig_crds::PodsSpec;

use crate::pods::cri_config::quantity::Amount;

/// The kubelet refuses a monitor interval under 3 s.
pub const MIN_MONITOR_INTERVAL: Duration = Duration::from_secs(3);

/// When a container's log is rotated and how many files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPolicy {
    /// Rotate once the file holds at least this many bytes.
    pub max_size: u64,
    /// Files kept per container, the one being written included (at least 2).
    pub max_files: usize,
    /// How often sizes are checked.
    pub interval: Duration,
}

impl Default for LogPolicy {
    /// The kubelet's defaults: 10Mi, 5 files, every 10 s.
    fn default() -> Self {
        LogPolicy {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
            interval: Duration::from_secs(10),
        }
    }
}

impl LogPolicy {
    /// The policy `pods` asks for, or what is wrong with it, one problem per
    /// field (`containerLogMaxSize must be ...`).
    pub fn from_spec(pods: &PodsSpec) -> Result<LogPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let max_size = match Amount::parse(&pods.container_log_max_size) {
            Some(amount) if amount > Amount::default() => amount.value_ceil().unsigned_abs(),
            _ => {
                problems.push(format!(
                    "containerLogMaxSize {:?} must be a positive quantity such as 10Mi",
                    pods.container_log_max_size
                ));
                0
            }
        };
        let max_files = match usize::try_from(pods.container_log_max_files) {
            Ok(n) if n >= 2 => n,
            _ => {
                problems.push(format!(
                    "containerLogMaxFiles {} must be at least 2",
                    pods.container_log_max_files
                ));
                0
            }
        };
        let interval =
            match nodeconfig_crds::duration::parse_duration(&pods.container_log_monitor_interval) {
                Ok(d) if d >= MIN_MONITOR_INTERVAL => d,
                _ => {
                    problems.push(format!(
                        "containerLogMonitorInterval {:?} must be a duration of at least 3s",
                        pods.container_log_monitor_interval
                    ));
                    Duration::ZERO
                }
            };
        if problems.is_empty() {
            Ok(LogPolicy {
                max_size,
                max_files,
                interval,
            })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: &str, files: i32, interval: &str) -> PodsSpec {
        PodsSpec {
            container_log_max_size: size.into(),
            container_log_max_files: files,
            container_log_monitor_interval: interval.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_are_the_kubelets() {
        assert_eq!(
            LogPolicy::from_spec(&PodsSpec::default()),
            Ok(LogPolicy::default())
        );
    }

    #[test]
    fn quantities_and_durations_are_read_as_kubernetes_spells_them() {
        let policy = LogPolicy::from_spec(&spec("1.5Ki", 2, "1m30s")).unwrap();
        assert_eq!(policy.max_size, 1536);
        assert_eq!(policy.max_files, 2);
        assert_eq!(policy.interval, Duration::from_secs(90));
        assert_eq!(
            LogPolicy::from_spec(&spec("1M", 3, "3s")).unwrap().max_size,
            1_000_000
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let problems = LogPolicy::from_spec(&spec("0", 1, "1s")).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("containerLogMaxSize \"0\""));
        assert!(problems[1].starts_with("containerLogMaxFiles 1"));
        assert!(problems[2].starts_with("containerLogMonitorInterval \"1s\""));
        let problems = LogPolicy::from_spec(&spec("ten", 5, "often")).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
