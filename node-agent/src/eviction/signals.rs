//! From the node's readings to its pressure, as the kubelet's eviction
//! manager (`makeSignalObservations`, `thresholdsMet`,
//! `nodeConditionsLastObservedAt`, `nodeConditionsObservedSince`). Pure.
//!
//! ```text
//!   NodeReadings --observations--> Observations --crossings(policy)--> [Crossing]
//!   [Crossing] --PressureTracker::update(now, transition period)--> {Pressure}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::edge::node_stats::{FsReading, MemoryReading, PidReading};
use crate::eviction::thresholds::{EvictionPolicy, Signal, Threshold};

/// What the eviction loop read of the node; `None` where a read failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeReadings {
    pub memory: Option<MemoryReading>,
    /// The filesystem of the agent's root directory (pod volumes, logs).
    pub nodefs: Option<FsReading>,
    /// The filesystem the runtime keeps its images and writable layers on.
    pub imagefs: Option<FsReading>,
    pub pids: Option<PidReading>,
}

/// What is left of one resource, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// The signals measured this pass.
pub type Observations = BTreeMap<Signal, Observation>;

/// The signals the readings give. `memory.available` is the capacity less
/// the working set (usage less inactive file pages), never below zero.
pub fn observations(readings: &NodeReadings) -> Observations {
    let mut out = Observations::new();
    if let Some(m) = readings.memory {
        let working_set = m.usage.saturating_sub(m.inactive_file);
        out.insert(
            Signal::MemoryAvailable,
            Observation {
                available: m.capacity.saturating_sub(working_set),
                capacity: m.capacity,
            },
        );
    }
    let mut fs = |fs: Option<FsReading>, bytes: Signal, inodes: Signal| {
        if let Some(fs) = fs {
            out.insert(
                bytes,
                Observation {
                    available: fs.available_bytes,
                    capacity: fs.capacity_bytes,
                },
            );
            out.insert(
                inodes,
                Observation {
                    available: fs.inodes_free,
                    capacity: fs.inodes,
                },
            );
        }
    };
    fs(
        readings.nodefs,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
    );
    fs(
        readings.imagefs,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    );
    if let Some(p) = readings.pids {
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: p.max.saturating_sub(p.running),
                capacity: p.max,
            },
        );
    }
    out
}

/// A threshold crossed: the signal is below the threshold's level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crossing {
    pub threshold: Threshold,
    /// The threshold in units of the signal (a percentage taken of the capacity).
    pub level: u64,
    pub available: u64,
}

/// The thresholds crossed, in [`Signal::ALL`]'s order (memory first: the
/// kubelet's `byEvictionPriority`). A signal without an observation crosses
/// nothing.
pub fn crossings(policy: &EvictionPolicy, observed: &Observations) -> Vec<Crossing> {
    policy
        .thresholds
        .iter()
        .filter_map(|t| {
            let o = observed.get(&t.signal)?;
            let level = t.level.quantity(o.capacity);
            (level > o.available).then_some(Crossing {
                threshold: *t,
                level,
                available: o.available,
            })
        })
        .collect()
}

/// A node pressure condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pressure {
    Memory,
    Disk,
    Pid,
}

impl Pressure {
    /// Every pressure, in the order the Node lists its conditions.
    pub const ALL: [Pressure; 3] = [Pressure::Memory, Pressure::Disk, Pressure::Pid];

    /// The pressure a signal's crossing puts the node under.
    pub fn of(signal: Signal) -> Pressure {
        match signal {
            Signal::MemoryAvailable => Pressure::Memory,
            Signal::NodeFsAvailable
            | Signal::NodeFsInodesFree
            | Signal::ImageFsAvailable
            | Signal::ImageFsInodesFree => Pressure::Disk,
            Signal::PidAvailable => Pressure::Pid,
        }
    }

    /// The Node condition type (`MemoryPressure`).
    pub fn condition_type(self) -> &'static str {
        match self {
            Pressure::Memory => "MemoryPressure",
            Pressure::Disk => "DiskPressure",
            Pressure::Pid => "PIDPressure",
        }
    }
}

/// Which pressures hold, with the kubelet's transition period: a condition
/// stays until `period` has passed since its threshold was last crossed.
#[derive(Clone, Debug, Default)]
pub struct PressureTracker {
    last_crossed: BTreeMap<Pressure, Instant>,
}

impl PressureTracker {
    /// Records this pass's crossings at `now` and returns the pressures in
    /// force: crossed now, or within `period` before.
    pub fn update(
        &mut self,
        crossed: &[Crossing],
        now: Instant,
        period: Duration,
    ) -> BTreeSet<Pressure> {
        for c in crossed {
            self.last_crossed
                .insert(Pressure::of(c.threshold.signal), now);
        }
        self.last_crossed
            .retain(|_, at| now.saturating_duration_since(*at) < period || *at == now);
        self.last_crossed.keys().copied().collect()
    }
}

/// A quantity of bytes as the API server writes it: the largest binary
/// suffix that divides it (`100Mi`, `1536Ki`), else the plain number.
pub fn format_bytes(bytes: u64) -> String {
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, shift) in SUFFIXES {
        if bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A count (inodes, processes) as the API server writes it: the largest
/// decimal suffix that divides it (`5k`), else the plain number.
pub fn format_count(count: u64) -> String {
    const SUFFIXES: [(&str, u64); 6] = [
        ("E", 1_000_000_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
    ];
    if count == 0 {
        return "0".into();
    }
    for (suffix, unit) in SUFFIXES {
        if count.is_multiple_of(unit) {
            return format!("{}{suffix}", count / unit);
        }
    }
    count.to_string()
}

/// A signal's amount in its own kind of quantity.
pub fn format_amount(signal: Signal, amount: u64) -> String {
    if signal.counts_bytes() {
        format_bytes(amount)
    } else {
        format_count(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::thresholds::Level;

    const GI: u64 = 1 << 30;

    fn readings() -> NodeReadings {
        NodeReadings {
            memory: Some(MemoryReading {
                capacity: 8 * GI,
                usage: 7 * GI,
                inactive_file: GI,
            }),
            nodefs: Some(FsReading {
                capacity_bytes: 100 * GI,
                available_bytes: 8 * GI,
                inodes: 1000,
                inodes_free: 900,
            }),
            imagefs: None,
            pids: Some(PidReading {
                max: 32768,
                running: 500,
            }),
        }
    }

    fn policy(entries: &[(Signal, Level)]) -> EvictionPolicy {
        EvictionPolicy {
            thresholds: entries
                .iter()
                .map(|(signal, level)| Threshold {
                    signal: *signal,
                    level: *level,
                })
                .collect(),
            pressure_transition_period: Duration::from_secs(300),
        }
    }

    #[test]
    fn memory_available_is_capacity_less_the_working_set() {
        let observed = observations(&readings());
        assert_eq!(
            observed[&Signal::MemoryAvailable],
            Observation {
                available: 2 * GI,
                capacity: 8 * GI
            }
        );
        assert_eq!(observed[&Signal::NodeFsAvailable].available, 8 * GI);
        assert_eq!(observed[&Signal::NodeFsInodesFree].available, 900);
        assert_eq!(observed[&Signal::PidAvailable].available, 32268);
        assert!(!observed.contains_key(&Signal::ImageFsAvailable));
    }

    #[test]
    fn thresholds_cross_when_what_is_left_is_below_them() {
        let observed = observations(&readings());
        type Case<'a> = (&'a [(Signal, Level)], &'a [Signal]);
        let cases: [Case<'_>; 6] = [
            (
                &[(Signal::MemoryAvailable, Level::Quantity(100 << 20))],
                &[],
            ),
            (
                &[(Signal::MemoryAvailable, Level::Quantity(2 * GI + 1))],
                &[Signal::MemoryAvailable],
            ),
            // Equal is not below.
            (&[(Signal::MemoryAvailable, Level::Quantity(2 * GI))], &[]),
            // 10% of 100Gi is 10Gi, more than the 8Gi left.
            (
                &[
                    (Signal::NodeFsAvailable, Level::Percentage(0.10)),
                    (Signal::NodeFsInodesFree, Level::Percentage(0.05)),
                ],
                &[Signal::NodeFsAvailable],
            ),
            // No imagefs reading: nothing to cross.
            (&[(Signal::ImageFsAvailable, Level::Percentage(0.99))], &[]),
            (
                &[
                    (Signal::MemoryAvailable, Level::Quantity(8 * GI)),
                    (Signal::PidAvailable, Level::Quantity(32300)),
                ],
                &[Signal::MemoryAvailable, Signal::PidAvailable],
            ),
        ];
        for (entries, want) in cases {
            let crossed: Vec<Signal> = crossings(&policy(entries), &observed)
                .iter()
                .map(|c| c.threshold.signal)
                .collect();
            assert_eq!(crossed, want, "{entries:?}");
        }
        let c = crossings(
            &policy(&[(Signal::NodeFsAvailable, Level::Percentage(0.10))]),
            &observed,
        )[0];
        assert_eq!((c.level, c.available), (10 * GI, 8 * GI));
    }

    #[test]
    fn a_pressure_outlives_its_crossing_by_the_transition_period() {
        let period = Duration::from_secs(30);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let crossing = |signal| Crossing {
            threshold: Threshold {
                signal,
                level: Level::Quantity(1),
            },
            level: 1,
            available: 0,
        };
        let mut tracker = PressureTracker::default();
        assert!(tracker.update(&[], at(0), period).is_empty());
        let memory = [crossing(Signal::MemoryAvailable)];
        assert_eq!(
            tracker.update(&memory, at(10), period),
            BTreeSet::from([Pressure::Memory])
        );
        assert_eq!(
            tracker.update(&[crossing(Signal::ImageFsAvailable)], at(20), period),
            BTreeSet::from([Pressure::Memory, Pressure::Disk])
        );
        assert_eq!(
            tracker.update(&[], at(39), period),
            BTreeSet::from([Pressure::Memory, Pressure::Disk])
        );
        assert_eq!(
            tracker.update(&[], at(40), period),
            BTreeSet::from([Pressure::Disk])
        );
        assert!(tracker.update(&[], at(50), period).is_empty());
        // A zero period still reports what is crossed now.
        assert_eq!(
            tracker.update(&memory, at(60), Duration::ZERO),
            BTreeSet::from([Pressure::Memory])
        );
        assert!(tracker.update(&[], at(61), Duration::ZERO).is_empty());
    }

    #[test]
    fn quantities_are_written_as_the_api_server_writes_them() {
        assert_eq!(format_bytes(100 << 20), "100Mi");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_count(5000), "5k");
        assert_eq!(format_count(1234), "1234");
        assert_eq!(format_amount(Signal::PidAvailable, 2000), "2k");
        assert_eq!(format_amount(Signal::MemoryAvailable, 2048), "2Ki");
    }
}
