//! The hard eviction thresholds from NodeConfig `spec.pods`
//! (`evictionHard`, `evictionPressureTransitionPeriod`), read as the
//! kubelet's `ParseThresholdConfig` reads its configuration. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use nodeconfig_crds::PodsSpec;

use crate::pods::cri_config::quantity::Amount;

/// An eviction signal: what is left of one of the node's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

impl Signal {
    /// Every signal, memory first (the kubelet reclaims memory first).
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    /// The kubelet's name of the signal (`memory.available`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The signal of a kubelet name.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The resource the signal starves (`memory`, `ephemeral-storage`,
    /// `inodes`, `pids`), as the eviction message names it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// Whether the signal counts bytes (shown as binary quantities) rather
    /// than inodes or processes.
    pub fn counts_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodeFsAvailable | Signal::ImageFsAvailable
        )
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A threshold's level: an absolute amount or a share of the capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    /// Bytes, inodes or processes.
    Quantity(u64),
    /// A share of the capacity, above 0 and below 1.
    Percentage(f64),
}

impl Level {
    /// The level in units for a resource of `capacity`, as the kubelet's
    /// `GetThresholdQuantity` (a percentage rounds down).
    pub fn quantity(self, capacity: u64) -> u64 {
        match self {
            Level::Quantity(q) => q,
            // Precision is lost above 2^53 bytes only.
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            Level::Percentage(p) => (capacity as f64 * p) as u64,
        }
    }
}

/// One hard threshold: the node is under pressure while `signal` is below `level`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub level: Level,
}

/// The eviction settings in force.
#[derive(Clone, Debug, PartialEq)]
pub struct EvictionPolicy {
    /// In [`Signal::ALL`]'s order; signals turned off (`0%`, `100%`) left out.
    pub thresholds: Vec<Threshold>,
    /// How long a pressure condition outlives its last crossing.
    pub pressure_transition_period: Duration,
}

impl Default for EvictionPolicy {
    /// The kubelet's defaults.
    fn default() -> Self {
        let pods = PodsSpec::default();
        match EvictionPolicy::from_spec(&pods) {
            Ok(policy) => policy,
            Err(_) => EvictionPolicy {
                thresholds: Vec::new(),
                pressure_transition_period: Duration::from_secs(300),
            },
        }
    }
}

impl EvictionPolicy {
    /// The policy `pods` asks for, or what is wrong with it, one problem per
    /// entry (`evictionHard memory.available ...`).
    pub fn from_spec(pods: &PodsSpec) -> Result<EvictionPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let thresholds = parse_thresholds(&pods.eviction_hard, &mut problems);
        let pressure_transition_period = match nodeconfig_crds::duration::parse_duration(
            &pods.eviction_pressure_transition_period,
        ) {
            Ok(d) => d,
            Err(_) => {
                problems.push(format!(
                    "evictionPressureTransitionPeriod {:?} must be a duration such as 5m",
                    pods.eviction_pressure_transition_period
                ));
                Duration::ZERO
            }
        };
        if problems.is_empty() {
            Ok(EvictionPolicy {
                thresholds,
                pressure_transition_period,
            })
        } else {
            Err(problems)
        }
    }

    /// The threshold of `signal`, if it has one.
    pub fn threshold(&self, signal: Signal) -> Option<Threshold> {
        self.thresholds.iter().copied().find(|t| t.signal == signal)
    }
}

fn parse_thresholds(map: &BTreeMap<String, String>, problems: &mut Vec<String>) -> Vec<Threshold> {
    let mut thresholds = Vec::new();
    for (name, value) in map {
        let Some(signal) = Signal::parse(name) else {
            problems.push(format!(
                "evictionHard signal {name:?} is not one the kubelet knows"
            ));
            continue;
        };
        match parse_level(value) {
            Ok(Some(level)) => thresholds.push(Threshold { signal, level }),
            Ok(None) => {}
            Err(why) => problems.push(format!("evictionHard {name} {value:?}: {why}")),
        }
    }
    thresholds.sort_by_key(|t| t.signal);
    thresholds
}

/// A level as the kubelet's `parseThresholdStatement` reads it: `0%` and
/// `100%` turn the signal off (`None`); a quantity must be positive.
fn parse_level(value: &str) -> Result<Option<Level>, &'static str> {
    if let Some(number) = value.strip_suffix('%') {
        let percent: f64 = number
            .parse()
            .map_err(|_| "must be a percentage such as 10%")?;
        if !(0.0..=100.0).contains(&percent) {
            return Err("must be a percentage from 0% to 100%");
        }
        if percent == 0.0 || percent == 100.0 {
            return Ok(None);
        }
        return Ok(Some(Level::Percentage(percent / 100.0)));
    }
    match Amount::parse(value) {
        Some(amount) if amount > Amount::default() => {
            Ok(Some(Level::Quantity(amount.value_ceil().unsigned_abs())))
        }
        Some(_) => Err("must be positive"),
        None => Err("must be a quantity such as 100Mi or a percentage such as 10%"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(entries: &[(&str, &str)], period: &str) -> PodsSpec {
        PodsSpec {
            eviction_hard: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            eviction_pressure_transition_period: period.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_are_the_kubelets() {
        let policy = EvictionPolicy::from_spec(&PodsSpec::default()).unwrap();
        assert_eq!(
            policy.thresholds,
            vec![
                Threshold {
                    signal: Signal::MemoryAvailable,
                    level: Level::Quantity(100 << 20)
                },
                Threshold {
                    signal: Signal::NodeFsAvailable,
                    level: Level::Percentage(0.10)
                },
                Threshold {
                    signal: Signal::NodeFsInodesFree,
                    level: Level::Percentage(0.05)
                },
                Threshold {
                    signal: Signal::ImageFsAvailable,
                    level: Level::Percentage(0.15)
                },
            ]
        );
        assert_eq!(policy.pressure_transition_period, Duration::from_secs(300));
        assert_eq!(policy, EvictionPolicy::default());
    }

    #[test]
    fn quantities_percentages_and_off_switches_read_as_the_kubelet_reads_them() {
        let policy = EvictionPolicy::from_spec(&spec(
            &[
                ("pid.available", "1k"),
                ("memory.available", "1.5Gi"),
                ("nodefs.available", "0%"),
                ("imagefs.available", "100%"),
                ("imagefs.inodesFree", "2.5%"),
            ],
            "30s",
        ))
        .unwrap();
        assert_eq!(
            policy.threshold(Signal::MemoryAvailable).map(|t| t.level),
            Some(Level::Quantity(1536 << 20))
        );
        assert_eq!(
            policy.threshold(Signal::PidAvailable).map(|t| t.level),
            Some(Level::Quantity(1000))
        );
        assert_eq!(policy.threshold(Signal::NodeFsAvailable), None);
        assert_eq!(policy.threshold(Signal::ImageFsAvailable), None);
        assert_eq!(
            policy
                .threshold(Signal::ImageFsInodesFree)
                .map(|t| t.level.quantity(1000)),
            Some(25)
        );
        assert_eq!(policy.pressure_transition_period, Duration::from_secs(30));
        assert!(EvictionPolicy::from_spec(&spec(&[], "5m"))
            .unwrap()
            .thresholds
            .is_empty());
    }

    #[test]
    fn every_bad_entry_is_named() {
        let problems = EvictionPolicy::from_spec(&spec(
            &[
                ("memory.free", "1Gi"),
                ("memory.available", "0"),
                ("nodefs.available", "110%"),
                ("pid.available", "many"),
            ],
            "soon",
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"memory.free\"")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("evictionHard memory.available \"0\": must be positive")));
        assert!(problems.iter().any(|p| p.contains("0% to 100%")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("evictionHard pid.available")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("evictionPressureTransitionPeriod \"soon\"")));
    }
}
