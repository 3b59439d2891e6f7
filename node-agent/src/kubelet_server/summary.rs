//! The node's and its pods' CPU and memory use, as the kubelet's summary
//! provider assembles them for `/metrics/resource`
//! (`pkg/kubelet/server/stats/summary.go` `GetCPUAndMemoryStats`, with the CRI
//! stats provider's `ListPodCPUAndMemoryStats` in
//! `pkg/kubelet/stats/cri_stats_provider.go`). Pure: the CRI lists and the
//! node's readings in, plain data out.
//!
//! ```text
//! ListPodSandbox ─┐ current sandbox per pod (removeTerminatedPods)
//! ListContainers ─┼─ running containers of those ─┐
//! ListContainerStats ─────────────────────────────┴─> PodStats { containers, sum }
//! root cgroup (edge::node_stats) ───────────────────> NodeStats
//! ```
//!
//! Where the kubelet would take a pod's use from its pod cgroup through
//! cAdvisor, the agent has no cAdvisor and makes no pod cgroups: a pod's use
//! is the sum of its containers', the kubelet's own fallback. Values CRI
//! leaves out are zero, as the kubelet fills them (`zeroMissingValues`).

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;

/// A point in time, nanoseconds since the Unix epoch (CRI's unit).
pub type UnixNanos = i64;

/// CPU use: cumulative core-nanoseconds at `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuStats {
    pub time: UnixNanos,
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory use at `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    pub time: UnixNanos,
    pub working_set_bytes: Option<u64>,
}

/// Swap use at `time`; `swap_available_bytes` only where a limit is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapStats {
    pub time: UnixNanos,
    pub swap_usage_bytes: Option<u64>,
    pub swap_available_bytes: Option<u64>,
}

/// The node's use (its root cgroup).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub swap: Option<SwapStats>,
}

/// One running container's use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStats {
    /// The runtime's container ID.
    pub id: String,
    /// The container's name in the Pod spec (CRI metadata name).
    pub name: String,
    /// When the container was created (the summary API's `startTime`).
    pub start_time: UnixNanos,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub swap: Option<SwapStats>,
}

/// One pod's use: its running containers and their sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodStats {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// When the pod's sandbox was created.
    pub start_time: UnixNanos,
    pub containers: Vec<ContainerStats>,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub swap: Option<SwapStats>,
}

/// What `/metrics/resource` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

/// The pods' use from CRI's lists, as `ListPodCPUAndMemoryStats`: for each
/// stats entry of a running container whose sandbox is its pod's current one,
/// the container's stats, summed into its pod's. `now` stamps values CRI gave
/// no time for. Pods come sorted by namespace and name.
pub fn pods_from_cri(
    sandboxes: &[cri::PodSandbox],
    containers: &[cri::Container],
    stats: &[cri::ContainerStats],
    now: UnixNanos,
) -> Vec<PodStats> {
    let current: HashMap<&str, &cri::PodSandbox> = current_sandboxes(sandboxes)
        .into_iter()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let running: HashMap<&str, &cri::Container> = containers
        .iter()
        .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .map(|c| (c.id.as_str(), c))
        .collect();
    let mut pods: BTreeMap<&str, PodStats> = BTreeMap::new();
    for stat in stats {
        let Some(attributes) = &stat.attributes else {
            continue;
        };
        let Some(container) = running.get(attributes.id.as_str()) else {
            continue;
        };
        let Some(sandbox) = current.get(container.pod_sandbox_id.as_str()) else {
            continue;
        };
        let pod = pods
            .entry(sandbox.id.as_str())
            .or_insert_with(|| pod_stats(sandbox));
        let name = attributes
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let container = container_stats(stat, name, container, now);
        add_to_pod(pod, &container);
        pod.containers.push(container);
    }
    let mut pods: Vec<PodStats> = pods.into_values().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods
}

/// Each pod's current sandbox, as the kubelet's `removeTerminatedPods`: of
/// several sandboxes with one pod's name and namespace, the ready ones, or
/// else the newest.
fn current_sandboxes(sandboxes: &[cri::PodSandbox]) -> Vec<&cri::PodSandbox> {
    let mut by_pod: BTreeMap<(&str, &str), Vec<&cri::PodSandbox>> = BTreeMap::new();
    for sandbox in sandboxes {
        let (name, namespace) = sandbox
            .metadata
            .as_ref()
            .map(|m| (m.name.as_str(), m.namespace.as_str()))
            .unwrap_or_default();
        by_pod.entry((name, namespace)).or_default().push(sandbox);
    }
    let mut current = Vec::new();
    for (_, mut group) in by_pod {
        group.sort_by_key(|s| s.created_at);
        if group.len() == 1 {
            current.extend(group);
            continue;
        }
        let ready: Vec<&cri::PodSandbox> = group
            .iter()
            .copied()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .collect();
        if ready.is_empty() {
            current.extend(group.last().copied());
        } else {
            current.extend(ready);
        }
    }
    current
}

fn pod_stats(sandbox: &cri::PodSandbox) -> PodStats {
    let metadata = sandbox.metadata.clone().unwrap_or_default();
    PodStats {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        start_time: sandbox.created_at,
        containers: Vec::new(),
        cpu: None,
        memory: None,
        swap: None,
    }
}

/// A container's stats as `makeContainerCPUAndMemoryStats` with
/// `zeroMissingValues`: what CRI leaves out is zero, stamped `now`.
fn container_stats(
    stat: &cri::ContainerStats,
    name: String,
    container: &cri::Container,
    now: UnixNanos,
) -> ContainerStats {
    let value = |v: &Option<cri::UInt64Value>| Some(v.as_ref().map_or(0, |v| v.value));
    let cpu = match &stat.cpu {
        Some(cpu) => CpuStats {
            time: cpu.timestamp,
            usage_core_nano_seconds: value(&cpu.usage_core_nano_seconds),
        },
        None => CpuStats {
            time: now,
            usage_core_nano_seconds: Some(0),
        },
    };
    let memory = match &stat.memory {
        Some(memory) => MemoryStats {
            time: memory.timestamp,
            working_set_bytes: value(&memory.working_set_bytes),
        },
        None => MemoryStats {
            time: now,
            working_set_bytes: Some(0),
        },
    };
    let swap = match &stat.swap {
        Some(swap) => SwapStats {
            time: swap.timestamp,
            swap_usage_bytes: value(&swap.swap_usage_bytes),
            swap_available_bytes: value(&swap.swap_available_bytes),
        },
        None => SwapStats {
            time: now,
            swap_usage_bytes: Some(0),
            swap_available_bytes: Some(0),
        },
    };
    ContainerStats {
        id: container.id.clone(),
        name,
        start_time: container.created_at,
        cpu: Some(cpu),
        memory: Some(memory),
        swap: Some(swap),
    }
}

/// Adds a container's use to its pod's, as `addPodCPUMemoryStats` and
/// `addSwapStats` do without a pod cgroup: sums, stamped with the time of
/// the container added last.
fn add_to_pod(pod: &mut PodStats, container: &ContainerStats) {
    let sum = |a: Option<u64>, b: Option<u64>| Some(a.unwrap_or(0) + b.unwrap_or(0));
    if let Some(cpu) = container.cpu {
        let before = pod.cpu.and_then(|c| c.usage_core_nano_seconds);
        pod.cpu = Some(CpuStats {
            time: cpu.time,
            usage_core_nano_seconds: sum(before, cpu.usage_core_nano_seconds),
        });
    }
    if let Some(memory) = container.memory {
        let before = pod.memory.and_then(|m| m.working_set_bytes);
        pod.memory = Some(MemoryStats {
            time: memory.time,
            working_set_bytes: sum(before, memory.working_set_bytes),
        });
    }
    if let Some(swap) = container.swap {
        // The pod's swap keeps the time of its first container's, as the kubelet's.
        let before = pod.swap.unwrap_or(SwapStats {
            time: swap.time,
            swap_usage_bytes: None,
            swap_available_bytes: None,
        });
        pod.swap = Some(SwapStats {
            time: before.time,
            swap_usage_bytes: sum(before.swap_usage_bytes, swap.swap_usage_bytes),
            swap_available_bytes: sum(before.swap_available_bytes, swap.swap_available_bytes),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, pod: &str, ready: bool, created_at: i64) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.into(),
                uid: format!("uid-{id}"),
                namespace: "ns".into(),
                attempt: 0,
            }),
            state: if ready {
                cri::PodSandboxState::SandboxReady
            } else {
                cri::PodSandboxState::SandboxNotready
            } as i32,
            created_at,
            ..Default::default()
        }
    }

    fn container(id: &str, sandbox: &str, running: bool, created_at: i64) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            state: if running {
                cri::ContainerState::ContainerRunning
            } else {
                cri::ContainerState::ContainerExited
            } as i32,
            created_at,
            ..Default::default()
        }
    }

    fn stat(
        id: &str,
        name: &str,
        cpu: Option<(i64, u64)>,
        memory: Option<(i64, u64)>,
    ) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: id.into(),
                metadata: Some(cri::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            cpu: cpu.map(|(timestamp, v)| cri::CpuUsage {
                timestamp,
                usage_core_nano_seconds: Some(cri::UInt64Value { value: v }),
                usage_nano_cores: None,
            }),
            memory: memory.map(|(timestamp, v)| cri::MemoryUsage {
                timestamp,
                working_set_bytes: Some(cri::UInt64Value { value: v }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pods_use_is_the_sum_of_its_running_containers() {
        let sandboxes = [sandbox("s1", "web", true, 5)];
        let containers = [
            container("c1", "s1", true, 10),
            container("c2", "s1", true, 20),
            container("old", "s1", false, 1),
        ];
        let stats = [
            stat("c1", "app", Some((100, 2_000)), Some((101, 300))),
            stat("c2", "sidecar", Some((110, 500)), Some((111, 700))),
            stat("old", "app", Some((90, 99)), Some((91, 99))),
        ];
        let pods = pods_from_cri(&sandboxes, &containers, &stats, 999);
        assert_eq!(pods.len(), 1);
        let pod = &pods[0];
        assert_eq!(
            (pod.name.as_str(), pod.namespace.as_str(), pod.uid.as_str()),
            ("web", "ns", "uid-s1")
        );
        assert_eq!(pod.start_time, 5);
        let names: Vec<_> = pod
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.start_time))
            .collect();
        assert_eq!(names, [("app", 10), ("sidecar", 20)]);
        assert_eq!(
            pod.cpu,
            Some(CpuStats {
                time: 110,
                usage_core_nano_seconds: Some(2_500)
            })
        );
        assert_eq!(
            pod.memory,
            Some(MemoryStats {
                time: 111,
                working_set_bytes: Some(1_000)
            })
        );
    }

    #[test]
    fn what_cri_leaves_out_is_zero_at_now() {
        let sandboxes = [sandbox("s1", "web", true, 5)];
        let containers = [container("c1", "s1", true, 10)];
        let stats = [stat("c1", "app", None, None)];
        let pods = pods_from_cri(&sandboxes, &containers, &stats, 999);
        let c = &pods[0].containers[0];
        assert_eq!(
            c.cpu,
            Some(CpuStats {
                time: 999,
                usage_core_nano_seconds: Some(0)
            })
        );
        assert_eq!(
            c.memory,
            Some(MemoryStats {
                time: 999,
                working_set_bytes: Some(0)
            })
        );
        assert_eq!(
            c.swap,
            Some(SwapStats {
                time: 999,
                swap_usage_bytes: Some(0),
                swap_available_bytes: Some(0)
            })
        );
    }

    #[test]
    fn only_the_current_sandbox_of_a_pod_counts() {
        // A pod whose sandbox was replaced: the ready one counts. A pod with
        // only dead sandboxes: the newest. Containers of other sandboxes and
        // stats of unknown containers are left out.
        let sandboxes = [
            sandbox("old", "web", false, 1),
            sandbox("new", "web", true, 2),
            sandbox("d1", "done", false, 3),
            sandbox("d2", "done", false, 4),
        ];
        let containers = [
            container("c-old", "old", true, 1),
            container("c-new", "new", true, 2),
            container("c-d1", "d1", true, 3),
            container("c-d2", "d2", true, 4),
        ];
        let stats = [
            stat("c-old", "app", Some((1, 1)), Some((1, 1))),
            stat("c-new", "app", Some((1, 2)), Some((1, 2))),
            stat("c-d1", "app", Some((1, 3)), Some((1, 3))),
            stat("c-d2", "app", Some((1, 4)), Some((1, 4))),
            stat("gone", "app", Some((1, 5)), Some((1, 5))),
        ];
        let pods = pods_from_cri(&sandboxes, &containers, &stats, 0);
        let seen: Vec<_> = pods
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.uid.as_str(),
                    p.memory.and_then(|m| m.working_set_bytes),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [("done", "uid-d2", Some(4)), ("web", "uid-new", Some(2))]
        );
    }
}
