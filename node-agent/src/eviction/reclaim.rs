//! Reclaiming node-level resources before evicting a pod, as the kubelet's
//! `reclaimNodeLevelResources` with `buildSignalToNodeReclaimFuncs` and its
//! container GC's `DeleteAllUnusedContainers`. Pure: the eviction loop
//! lists, removes and measures again.
//!
//! ```text
//!   imagefs.* crossed                        -> dead containers, then unused images
//!   nodefs.* crossed, images on the same fs  -> the same
//!   nodefs.* crossed, a dedicated imagefs    -> nothing (the kubelet: logs, which it does not delete either)
//!   memory, pids                             -> nothing
//!   measured again: no threshold crossed     -> no pod is evicted this pass
//! ```

use std::collections::BTreeMap;

use crate::eviction::signals::{crossings, Observations};
use crate::eviction::thresholds::{EvictionPolicy, Signal};

/// One way to free the node's disk without evicting a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Remove dead containers (their writable layers).
    DeadContainers,
    /// Remove every image no container uses.
    UnusedImages,
}

/// What is tried, in order, before evicting for `signal`;
/// `dedicated_imagefs`: the runtime's images are on another filesystem
/// than the agent's root directory.
pub fn steps(signal: Signal, dedicated_imagefs: bool) -> &'static [Reclaim] {
    const DISK: &[Reclaim] = &[Reclaim::DeadContainers, Reclaim::UnusedImages];
    match signal {
        Signal::ImageFsAvailable | Signal::ImageFsInodesFree => DISK,
        Signal::NodeFsAvailable | Signal::NodeFsInodesFree if !dedicated_imagefs => DISK,
        _ => &[],
    }
}

/// Whether reclaiming was enough: measured again, no threshold is crossed
/// (any signal's, as the kubelet checks them all).
pub fn relieved(policy: &EvictionPolicy, after: &Observations) -> bool {
    crossings(policy, after).is_empty()
}

/// A container as CRI `ListContainers` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedContainer {
    pub id: String,
    /// The pod UID and container name labels (absent: not the agent's).
    pub pod_uid: Option<String>,
    pub name: Option<String>,
    /// Exited (not running, created or unknown).
    pub exited: bool,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
}

/// What the eviction loop knows of a container's pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodLife {
    /// Bound here and not finished: its containers may run or restart.
    Active,
    /// Succeeded or Failed: nothing of it runs again.
    Finished,
}

/// The dead containers to remove, as the kubelet's container GC when the
/// eviction manager asks (`evictNonDeletedPods`, at most one dead instance
/// per container): every exited container of a finished pod, and of an
/// active pod every exited instance but the newest of each container (it
/// holds the last state, restart count and logs `kubectl logs --previous`
/// shows, and keeps a completed init container from running again).
/// Containers of pods the loop does not know are left to their pods'
/// workers (a pod deleted, or not listed yet), as are those not exited.
pub fn dead_containers(
    containers: &[ListedContainer],
    pods: &BTreeMap<String, PodLife>,
) -> Vec<String> {
    let mut newest_kept: BTreeMap<(&str, &str), &ListedContainer> = BTreeMap::new();
    let mut remove = Vec::new();
    for c in containers.iter().filter(|c| c.exited) {
        let (Some(uid), Some(name)) = (c.pod_uid.as_deref(), c.name.as_deref()) else {
            continue;
        };
        match pods.get(uid) {
            Some(PodLife::Finished) => remove.push(c.id.clone()),
            Some(PodLife::Active) => match newest_kept.get(&(uid, name)) {
                Some(kept) if (kept.created_at, &kept.id) >= (c.created_at, &c.id) => {
                    remove.push(c.id.clone());
                }
                Some(kept) => {
                    remove.push(kept.id.clone());
                    newest_kept.insert((uid, name), c);
                }
                None => {
                    newest_kept.insert((uid, name), c);
                }
            },
            None => {}
        }
    }
    remove.sort();
    remove
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::eviction::signals::Observation;
    use crate::eviction::thresholds::{Level, Threshold};

    #[test]
    fn disk_signals_reclaim_first_and_nodefs_only_where_the_images_are() {
        let disk: &[Reclaim] = &[Reclaim::DeadContainers, Reclaim::UnusedImages];
        for dedicated in [false, true] {
            assert_eq!(steps(Signal::ImageFsAvailable, dedicated), disk);
            assert_eq!(steps(Signal::ImageFsInodesFree, dedicated), disk);
            assert!(steps(Signal::MemoryAvailable, dedicated).is_empty());
            assert!(steps(Signal::PidAvailable, dedicated).is_empty());
        }
        assert_eq!(steps(Signal::NodeFsAvailable, false), disk);
        assert_eq!(steps(Signal::NodeFsInodesFree, false), disk);
        assert!(steps(Signal::NodeFsAvailable, true).is_empty());
        assert!(steps(Signal::NodeFsInodesFree, true).is_empty());
    }

    #[test]
    fn relieved_when_nothing_is_crossed_any_more() {
        let policy = EvictionPolicy {
            thresholds: vec![
                Threshold {
                    signal: Signal::NodeFsAvailable,
                    level: Level::Quantity(100),
                },
                Threshold {
                    signal: Signal::PidAvailable,
                    level: Level::Quantity(10),
                },
            ],
            pressure_transition_period: Duration::from_secs(300),
        };
        let observed = |disk: u64, pids: u64| {
            Observations::from([
                (
                    Signal::NodeFsAvailable,
                    Observation {
                        available: disk,
                        capacity: 1000,
                    },
                ),
                (
                    Signal::PidAvailable,
                    Observation {
                        available: pids,
                        capacity: 1000,
                    },
                ),
            ])
        };
        assert!(relieved(&policy, &observed(100, 10)));
        assert!(!relieved(&policy, &observed(99, 10)));
        // Another signal still crossed: the kubelet evicts.
        assert!(!relieved(&policy, &observed(500, 9)));
    }

    fn container(
        id: &str,
        uid: Option<&str>,
        name: &str,
        exited: bool,
        at: i64,
    ) -> ListedContainer {
        ListedContainer {
            id: id.into(),
            pod_uid: uid.map(String::from),
            name: Some(name.into()),
            exited,
            created_at: at,
        }
    }

    #[test]
    fn dead_containers_go_all_of_finished_pods_and_all_but_the_newest_of_active_ones() {
        let pods = BTreeMap::from([
            ("active".to_string(), PodLife::Active),
            ("done".to_string(), PodLife::Finished),
        ]);
        let containers = vec![
            // An active pod: app restarted twice, runs now; the newest dead instance stays.
            container("app-1", Some("active"), "app", true, 1),
            container("app-3", Some("active"), "app", false, 3),
            container("app-2", Some("active"), "app", true, 2),
            // Its completed init container, one instance: stays.
            container("init-1", Some("active"), "init", true, 1),
            // A crash-looping sidecar, waiting: its newest dead one stays.
            container("side-2", Some("active"), "side", true, 2),
            container("side-1", Some("active"), "side", true, 1),
            container("side-0", Some("active"), "side", true, 0),
            // A finished pod: everything dead goes.
            container("done-a", Some("done"), "a", true, 5),
            container("done-b", Some("done"), "b", true, 6),
            // A pod the loop does not know, and a container not the agent's.
            container("unknown", Some("gone"), "x", true, 1),
            container("foreign", None, "x", true, 1),
        ];
        assert_eq!(
            dead_containers(&containers, &pods),
            ["app-1", "done-a", "done-b", "side-0", "side-1"]
        );
        assert!(dead_containers(&containers, &BTreeMap::new()).is_empty());
    }
}
