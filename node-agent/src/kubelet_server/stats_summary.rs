//! `/stats/summary`: the kubelet's Summary API (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`)
//! for the CPU and memory part, what `?only_cpu_and_memory=true` answers
//! (`GetCPUAndMemoryStats`) and what older metrics-server releases read: the
//! node's and each pod's and container's `cpu` (`usageCoreNanoSeconds`,
//! `usageNanoCores`) and `memory` (`workingSetBytes`), with their times. The
//! full summary's network, filesystem, volume and process stats are not
//! reported (the agent has no cAdvisor); the same subset answers both forms.
//!
//! `usageNanoCores` is a rate: as the kubelet's CPU usage cache, it is
//! computed against the reading cached at the previous request for the same
//! container (or the node), and left out the first time.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use super::summary::{CpuStats, MemoryStats, Summary, SwapStats, UnixNanos};
use crate::locked::Locked;

/// The previous CPU reading of each container (by ID) and of the node.
#[derive(Debug, Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, CpuStats>>,
}

/// The cache key of the node's reading (container IDs are hex).
const NODE_KEY: &str = "/";

impl CpuRates {
    /// Nanocores used between the reading cached under `key` and `now`, which
    /// replaces it. `None` without an earlier reading, or when the counter
    /// went back (a new container) or time did not advance.
    fn usage_nano_cores(
        last: &mut HashMap<String, CpuStats>,
        key: &str,
        now: CpuStats,
    ) -> Option<u64> {
        let before = last.insert(key.to_string(), now)?;
        let (Some(used_before), Some(used_now)) =
            (before.usage_core_nano_seconds, now.usage_core_nano_seconds)
        else {
            return None;
        };
        let elapsed = now.time - before.time;
        if used_now < used_before || elapsed <= 0 {
            return None;
        }
        Some(((used_now - used_before) as f64 / elapsed as f64 * 1e9) as u64)
    }
}

/// The Summary API object for `summary` of node `node_name`, started
/// (booted) at `start_time`; updates `rates` and forgets containers gone.
pub fn render(
    summary: &Summary,
    node_name: &str,
    start_time: Option<UnixNanos>,
    rates: &CpuRates,
) -> Value {
    let mut last = rates.last.locked();
    let mut seen: Vec<String> = vec![NODE_KEY.to_string()];
    let node_rate = summary
        .node
        .cpu
        .and_then(|cpu| CpuRates::usage_nano_cores(&mut last, NODE_KEY, cpu));
    let mut node = Map::new();
    node.insert("nodeName".into(), json!(node_name));
    if let Some(start) = start_time {
        node.insert("startTime".into(), json!(time(start)));
    }
    insert_stats(
        &mut node,
        summary.node.cpu,
        node_rate,
        summary.node.memory,
        summary.node.swap,
    );
    let pods: Vec<Value> = summary
        .pods
        .iter()
        .map(|pod| {
            let mut pod_rate: Option<u64> = None;
            let containers: Vec<Value> = pod
                .containers
                .iter()
                .map(|c| {
                    seen.push(c.id.clone());
                    let rate = c
                        .cpu
                        .and_then(|cpu| CpuRates::usage_nano_cores(&mut last, &c.id, cpu));
                    // The kubelet sums the containers' rates into the pod's, a missing one as 0.
                    pod_rate = Some(pod_rate.unwrap_or(0) + rate.unwrap_or(0));
                    let mut container = Map::new();
                    container.insert("name".into(), json!(c.name));
                    container.insert("startTime".into(), json!(time(c.start_time)));
                    insert_stats(&mut container, c.cpu, rate, c.memory, c.swap);
                    Value::Object(container)
                })
                .collect();
            let mut object = Map::new();
            object.insert(
                "podRef".into(),
                json!({"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}),
            );
            object.insert("startTime".into(), json!(time(pod.start_time)));
            object.insert("containers".into(), Value::Array(containers));
            insert_stats(&mut object, pod.cpu, pod_rate, pod.memory, pod.swap);
            Value::Object(object)
        })
        .collect();
    last.retain(|key, _| seen.contains(key));
    json!({"node": Value::Object(node), "pods": pods})
}

fn insert_stats(
    object: &mut Map<String, Value>,
    cpu: Option<CpuStats>,
    nano_cores: Option<u64>,
    memory: Option<MemoryStats>,
    swap: Option<SwapStats>,
) {
    if let Some(cpu) = cpu {
        let mut value = Map::new();
        value.insert("time".into(), json!(time(cpu.time)));
        if let Some(rate) = nano_cores {
            value.insert("usageNanoCores".into(), json!(rate));
        }
        if let Some(used) = cpu.usage_core_nano_seconds {
            value.insert("usageCoreNanoSeconds".into(), json!(used));
        }
        object.insert("cpu".into(), Value::Object(value));
    }
    if let Some(memory) = memory {
        let mut value = Map::new();
        value.insert("time".into(), json!(time(memory.time)));
        if let Some(working_set) = memory.working_set_bytes {
            value.insert("workingSetBytes".into(), json!(working_set));
        }
        object.insert("memory".into(), Value::Object(value));
    }
    if let Some(swap) = swap {
        let mut value = Map::new();
        value.insert("time".into(), json!(time(swap.time)));
        if let Some(available) = swap.swap_available_bytes {
            value.insert("swapAvailableBytes".into(), json!(available));
        }
        if let Some(usage) = swap.swap_usage_bytes {
            value.insert("swapUsageBytes".into(), json!(usage));
        }
        object.insert("swap".into(), Value::Object(value));
    }
}

/// A time as `metav1.Time` writes it: RFC 3339 in UTC, whole seconds.
fn time(nanos: UnixNanos) -> String {
    chrono::DateTime::from_timestamp(nanos.div_euclid(1_000_000_000), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::summary::{ContainerStats, NodeStats, PodStats};
    use super::*;

    const T: i64 = 1_624_396_278_302_091_597;

    fn summary(node_cpu: u64, container_cpu: u64, at: i64) -> Summary {
        let cpu = |used| {
            Some(CpuStats {
                time: at,
                usage_core_nano_seconds: Some(used),
            })
        };
        let memory = Some(MemoryStats {
            time: at,
            working_set_bytes: Some(4096),
        });
        Summary {
            node: NodeStats {
                cpu: cpu(node_cpu),
                memory,
                swap: None,
            },
            pods: vec![PodStats {
                name: "web".into(),
                namespace: "ns".into(),
                uid: "u1".into(),
                start_time: T,
                containers: vec![ContainerStats {
                    id: "c1".into(),
                    name: "app".into(),
                    start_time: T,
                    cpu: cpu(container_cpu),
                    memory,
                    swap: None,
                }],
                cpu: cpu(container_cpu),
                memory,
                swap: None,
            }],
        }
    }

    #[test]
    fn the_summary_reads_as_the_kubelets_json() {
        let rates = CpuRates::default();
        let first = render(&summary(10, 5, T), "node-1", Some(T), &rates);
        assert_eq!(
            first,
            json!({
                "node": {
                    "nodeName": "node-1",
                    "startTime": "2021-06-22T21:11:18Z",
                    "cpu": {"time": "2021-06-22T21:11:18Z", "usageCoreNanoSeconds": 10},
                    "memory": {"time": "2021-06-22T21:11:18Z", "workingSetBytes": 4096},
                },
                "pods": [{
                    "podRef": {"name": "web", "namespace": "ns", "uid": "u1"},
                    "startTime": "2021-06-22T21:11:18Z",
                    "containers": [{
                        "name": "app",
                        "startTime": "2021-06-22T21:11:18Z",
                        "cpu": {"time": "2021-06-22T21:11:18Z", "usageCoreNanoSeconds": 5},
                        "memory": {"time": "2021-06-22T21:11:18Z", "workingSetBytes": 4096},
                    }],
                    "cpu": {"time": "2021-06-22T21:11:18Z", "usageNanoCores": 0, "usageCoreNanoSeconds": 5},
                    "memory": {"time": "2021-06-22T21:11:18Z", "workingSetBytes": 4096},
                }],
            })
        );
    }

    #[test]
    fn nano_cores_come_from_the_previous_reading() {
        let rates = CpuRates::default();
        render(&summary(1_000_000_000, 0, T), "n", None, &rates);
        // Two seconds later: the node used 3 core-seconds, the container 1.
        let second = render(
            &summary(7_000_000_000, 2_000_000_000, T + 2_000_000_000),
            "n",
            None,
            &rates,
        );
        assert_eq!(second["node"]["cpu"]["usageNanoCores"], 3_000_000_000u64);
        assert_eq!(
            second["pods"][0]["containers"][0]["cpu"]["usageNanoCores"],
            1_000_000_000u64
        );
        assert_eq!(second["pods"][0]["cpu"]["usageNanoCores"], 1_000_000_000u64);
        // A counter that went back (a new container under the same ID) has no rate.
        let third = render(
            &summary(8_000_000_000, 1, T + 3_000_000_000),
            "n",
            None,
            &rates,
        );
        assert!(third["pods"][0]["containers"][0]["cpu"]
            .get("usageNanoCores")
            .is_none());
        // Gone containers are forgotten.
        let mut empty = summary(9_000_000_000, 0, T + 4_000_000_000);
        empty.pods.clear();
        render(&empty, "n", None, &rates);
        assert_eq!(rates.last.locked().len(), 1);
    }
}
