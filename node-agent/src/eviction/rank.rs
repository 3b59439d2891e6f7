//! Which pod goes first under pressure, and what it is told, as the
//! kubelet's `rankMemoryPressure`, `rankDiskPressureFunc`,
//! `rankPIDPressure` and `evictionMessage`. Pure.
//!
//! ```text
//!   memory: usage above requests first, then lower priority, then usage less requests (most first)
//!   disk:   the same with ephemeral storage (writable layers, logs, emptyDirs)
//!   pids:   lower priority first
//! ```
//! Pods without stats go first, as in the kubelet; critical pods (static,
//! mirror, or priority at least `system-cluster-critical`'s) are never
//! chosen.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::eviction::signals::{format_amount, format_bytes, Crossing};
use crate::eviction::thresholds::Signal;
use crate::pods::cri_config::quantity::{self, Amount};
use crate::pods::pod_requests::pod_requests;

/// The kubelet's `SystemCriticalPriority`: pods at or above it are critical.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The pod's reason when evicted, and its event's.
pub const REASON: &str = "Evicted";

/// One container's use, as CRI stats and the log directory show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub memory_working_set: Option<u64>,
    /// The writable layer.
    pub rootfs_bytes: Option<u64>,
    pub logs_bytes: u64,
}

impl ContainerUsage {
    /// Writable layer and logs: what the container's ephemeral storage limit covers.
    pub fn ephemeral_bytes(&self) -> u64 {
        self.rootfs_bytes.unwrap_or(0) + self.logs_bytes
    }
}

/// One pod's use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// By container name.
    pub containers: BTreeMap<String, ContainerUsage>,
    /// The pod's emptyDir volumes by name, in bytes.
    pub volumes: BTreeMap<String, u64>,
}

impl PodUsage {
    pub fn memory(&self) -> u64 {
        self.containers
            .values()
            .filter_map(|c| c.memory_working_set)
            .sum()
    }

    /// Containers' writable layers and logs, and the emptyDirs.
    pub fn disk(&self) -> u64 {
        self.containers
            .values()
            .map(ContainerUsage::ephemeral_bytes)
            .sum::<u64>()
            + self.volumes.values().sum::<u64>()
    }
}

/// A pod that may be evicted, with its use if it was measured.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    pub usage: Option<&'a PodUsage>,
}

/// The pod's priority (0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The kubelet's `IsCriticalPod`: a static or mirror pod, or one of
/// critical priority.
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    let is_static = annotation("kubernetes.io/config.source").is_some_and(|s| s != "api");
    let is_mirror = annotation("kubernetes.io/config.mirror").is_some();
    is_static || is_mirror || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn request_bytes(pod: &Pod, resource: &str) -> u64 {
    pod_requests(pod)
        .get(resource)
        .map_or(0, |a| a.value_ceil().max(0).unsigned_abs())
}

/// The candidates in the order the kubelet evicts them under `signal`.
pub fn rank(signal: Signal, candidates: &mut [Candidate<'_>]) {
    let resource = signal.resource();
    let usage = |c: &Candidate<'_>| -> Option<u64> {
        let u = c.usage?;
        Some(match resource {
            "memory" => u.memory(),
            _ => u.disk(),
        })
    };
    let request = |c: &Candidate<'_>| match resource {
        "memory" => request_bytes(c.pod, "memory"),
        _ => request_bytes(c.pod, "ephemeral-storage"),
    };
    // Pods without stats first, then by the signal's keys.
    candidates.sort_by(|a, b| {
        let (ua, ub) = (usage(a), usage(b));
        match (ua, ub) {
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            _ => {}
        }
        if signal == Signal::PidAvailable {
            return priority(a.pod).cmp(&priority(b.pod));
        }
        let (ua, ub) = (ua.unwrap_or(0), ub.unwrap_or(0));
        let (ra, rb) = (request(a), request(b));
        let exceeds = |u: u64, r: u64| u > r;
        exceeds(ub, rb)
            .cmp(&exceeds(ua, ra))
            .then_with(|| priority(a.pod).cmp(&priority(b.pod)))
            .then_with(|| {
                let over = |u: u64, r: u64| i128::from(u) - i128::from(r);
                over(ub, rb).cmp(&over(ua, ra))
            })
    });
}

/// The first pod of the ranking that may go: critical pods never do.
pub fn choose<'a>(signal: Signal, candidates: &mut [Candidate<'a>]) -> Option<Candidate<'a>> {
    rank(signal, candidates);
    candidates.iter().copied().find(|c| !is_critical(c.pod))
}

/// The kubelet's eviction message: the starved resource, the threshold and
/// what was left, and each container using more than it requested.
pub fn eviction_message(crossing: &Crossing, candidate: &Candidate<'_>) -> String {
    let signal = crossing.threshold.signal;
    let resource = signal.resource();
    let mut message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        format_amount(signal, crossing.level),
        format_amount(signal, crossing.available),
    );
    let (Some(usage), Some(spec)) = (candidate.usage, candidate.pod.spec.as_ref()) else {
        return message;
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        let Some(used) = usage.containers.get(&container.name) else {
            continue;
        };
        let used = match resource {
            "memory" => used.memory_working_set,
            "ephemeral-storage" => used.rootfs_bytes.map(|r| r + used.logs_bytes),
            _ => None,
        };
        let Some(used) = used else { continue };
        let requests = quantity::requests(container);
        let request = requests.get(resource).copied().unwrap_or_default();
        if Amount::from_units(i64::try_from(used).unwrap_or(i64::MAX)) > request {
            let shown = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .map_or_else(|| "0".to_string(), |q| q.0.clone());
            message.push_str(&format!(
                "Container {} was using {}, request is {shown}, has larger consumption of {resource}. ",
                container.name,
                format_bytes(used),
            ));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::eviction::thresholds::{Level, Threshold};

    const MI: u64 = 1 << 20;

    fn pod(name: &str, memory_request: Option<&str>, priority: Option<i32>) -> Pod {
        let resources = match memory_request {
            Some(r) => json!({"requests": {"memory": r}, "limits": {"memory": r}}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": name},
            "spec": {
                "priority": priority,
                "containers": [{"name": "c", "image": "i", "resources": resources}],
            },
        }))
        .unwrap()
    }

    fn using(memory: u64, disk: u64) -> PodUsage {
        PodUsage {
            containers: BTreeMap::from([(
                "c".to_string(),
                ContainerUsage {
                    memory_working_set: Some(memory),
                    rootfs_bytes: Some(disk),
                    logs_bytes: 0,
                },
            )]),
            volumes: BTreeMap::new(),
        }
    }

    fn names(signal: Signal, pods: &[(&Pod, Option<&PodUsage>)]) -> Vec<String> {
        let mut candidates: Vec<Candidate<'_>> = pods
            .iter()
            .map(|(pod, usage)| Candidate { pod, usage: *usage })
            .collect();
        rank(signal, &mut candidates);
        candidates
            .iter()
            .map(|c| c.pod.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn memory_goes_from_pods_above_their_requests_then_by_priority_then_by_excess() {
        let best_effort = pod("best-effort", None, None);
        let guaranteed = pod("guaranteed", Some("64Mi"), None);
        let guaranteed_over = pod("guaranteed-over", Some("8Mi"), None);
        let important = pod("important", None, Some(1000));
        let small = using(10 * MI, 0);
        let big = using(40 * MI, 0);
        type Case<'a> = (Vec<(&'a Pod, Option<&'a PodUsage>)>, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            // BestEffort above its (zero) request before Guaranteed within its own.
            (
                vec![(&guaranteed, Some(&big)), (&best_effort, Some(&small))],
                vec!["best-effort", "guaranteed"],
            ),
            // Both above their requests: lower priority first, however small.
            (
                vec![(&important, Some(&big)), (&best_effort, Some(&small))],
                vec!["best-effort", "important"],
            ),
            // Same priority, both above: the larger excess first.
            (
                vec![(&best_effort, Some(&small)), (&guaranteed_over, Some(&big))],
                vec!["guaranteed-over", "best-effort"],
            ),
            // A pod without stats goes first.
            (
                vec![(&best_effort, Some(&big)), (&guaranteed, None)],
                vec!["guaranteed", "best-effort"],
            ),
        ];
        for (pods, want) in cases {
            assert_eq!(names(Signal::MemoryAvailable, &pods), want);
        }
    }

    #[test]
    fn disk_ranks_on_ephemeral_storage_and_pids_on_priority() {
        let a = pod("a", Some("64Mi"), Some(5));
        let b = pod("b", Some("64Mi"), Some(1));
        let c = pod("c", Some("64Mi"), Some(1));
        let (light, heavy) = (using(100 * MI, MI), using(MI, 100 * MI));
        // Both above their (zero) ephemeral-storage requests, same priority:
        // the heavier writer first, whatever its memory.
        assert_eq!(
            names(
                Signal::NodeFsAvailable,
                &[(&b, Some(&light)), (&c, Some(&heavy))]
            ),
            ["c", "b"]
        );
        // Priority before usage.
        assert_eq!(
            names(
                Signal::NodeFsAvailable,
                &[(&a, Some(&heavy)), (&b, Some(&light))]
            ),
            ["b", "a"]
        );
        assert_eq!(
            names(
                Signal::PidAvailable,
                &[(&a, Some(&light)), (&b, Some(&heavy))]
            ),
            ["b", "a"]
        );
    }

    #[test]
    fn critical_pods_are_never_chosen() {
        let critical = pod("dns", None, Some(SYSTEM_CRITICAL_PRIORITY));
        let mut mirror = pod("mirror", None, None);
        mirror.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.mirror".to_string(),
            "x".to_string(),
        )]));
        let guaranteed = pod("guaranteed", Some("64Mi"), None);
        let usage = using(10 * MI, 0);
        let mut candidates = vec![
            Candidate {
                pod: &critical,
                usage: Some(&usage),
            },
            Candidate {
                pod: &mirror,
                usage: None,
            },
        ];
        assert!(choose(Signal::MemoryAvailable, &mut candidates).is_none());
        candidates.push(Candidate {
            pod: &guaranteed,
            usage: Some(&usage),
        });
        let chosen = choose(Signal::MemoryAvailable, &mut candidates).unwrap();
        assert_eq!(chosen.pod.metadata.name.as_deref(), Some("guaranteed"));
    }

    #[test]
    fn the_message_names_the_threshold_and_the_containers_over_their_requests() {
        let crossing = Crossing {
            threshold: Threshold {
                signal: Signal::MemoryAvailable,
                level: Level::Quantity(100 * MI),
            },
            level: 100 * MI,
            available: 50 * MI,
        };
        let best_effort = pod("best-effort", None, None);
        let usage = using(10 * MI, 0);
        let candidate = Candidate {
            pod: &best_effort,
            usage: Some(&usage),
        };
        assert_eq!(
            eviction_message(&crossing, &candidate),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 10Mi, request is 0, has larger consumption of memory. "
        );
        let guaranteed = pod("guaranteed", Some("64Mi"), None);
        let candidate = Candidate {
            pod: &guaranteed,
            usage: Some(&usage),
        };
        assert_eq!(
            eviction_message(&crossing, &candidate),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
        );
    }
}
