//! The Node the agent registers in Kubelet mode, built as the kubelet builds
//! it (`pkg/kubelet/kubelet_node_status.go`): labels, taints, podCIDR,
//! addresses, capacity and allocatable, nodeInfo and the node conditions.
//!
//! Pure: every function here maps plain inputs to the objects or decisions the
//! node loop ([`crate::node::run`]) writes, so it is tested without a cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use nodeconfig_crds::{NodeTaint, PodsSpec, TaintEffect};

use crate::config::plan::AGENT_MANAGED_LABEL;
use crate::edge::host::HostFacts;
use crate::reports::{PressureReport, RuntimeHealth, RuntimeReport};

/// `nodeInfo.kubeletVersion`: the Kubernetes version the agent implements, with
/// the agent's own as semver build metadata (so version comparisons of the
/// control plane see v1.37.2, as with distributions' `v1.37.2+k3s1`).
pub const KUBELET_VERSION: &str = concat!("v1.37.2+nodeconfig.", env!("CARGO_PKG_VERSION"));

/// The kubelet writes node status at least this often even when nothing
/// changed (`nodeStatusReportFrequency`); the Lease is the heartbeat in between.
pub const NODE_STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(5 * 60);

/// Memory kept out of allocatable: the kubelet's default hard eviction
/// threshold `memory.available<100Mi`.
const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;
/// Share of the root filesystem kept out of allocatable: `nodefs.available<10%`.
const EVICTION_NODEFS_PERCENT: u64 = 10;

/// The node's allocatable CPU, memory and ephemeral storage, as the Node
/// reports them: capacity less the kubelet's default hard-eviction reserves.
/// A container's unset limit reads as these in the downward API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    pub milli_cpu: u64,
    /// Whole KiB, as the Node's `memory` is written.
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl Allocatable {
    pub fn of(host: &HostFacts) -> Self {
        Self {
            milli_cpu: u64::from(host.cpus) * 1000,
            memory_bytes: host.memory_bytes.saturating_sub(EVICTION_MEMORY_BYTES) / 1024 * 1024,
            ephemeral_storage_bytes: host.ephemeral_storage_bytes / 100
                * (100 - EVICTION_NODEFS_PERCENT),
        }
    }
}

/// Taint key prefixes that belong to controllers (node lifecycle, cloud), not to the NodeConfig.
const SYSTEM_TAINT_PREFIXES: [&str; 2] =
    ["node.kubernetes.io/", "node.cloudprovider.kubernetes.io/"];

/// What the Node is built from.
#[derive(Clone, Copy, Debug)]
pub struct NodeInputs<'a> {
    pub name: &'a str,
    pub internal_ip: Option<IpAddr>,
    pub host: &'a HostFacts,
    pub pods: &'a PodsSpec,
    pub runtime: &'a RuntimeReport,
    /// The eviction loop's pressure conditions.
    pub pressure: &'a PressureReport,
    /// The port of the agent's kubelet endpoint (logs, exec), published as
    /// the Node's daemon endpoint so the API server can reach it.
    pub kubelet_port: Option<u16>,
}

/// The labels the agent owns on its Node: the kubelet's well-known ones, the
/// agent-managed marker, and spec.pods.labels (which cannot override the others).
pub fn desired_labels(inputs: &NodeInputs<'_>) -> BTreeMap<String, String> {
    let mut labels = inputs.pods.labels.clone();
    labels.extend(base_labels(inputs));
    labels
}

fn base_labels(inputs: &NodeInputs<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "kubernetes.io/hostname".to_string(),
            inputs.name.to_string(),
        ),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            inputs.host.architecture.clone(),
        ),
        (AGENT_MANAGED_LABEL.to_string(), "true".to_string()),
    ])
}

/// The Node to create when there is none: the well-known labels only (the
/// NodeConfig's labels follow by server-side apply, so that removing one from
/// the NodeConfig later removes it from the Node), taints and podCIDR (which a
/// node may only set at registration), and the status.
pub fn registration(inputs: &NodeInputs<'_>, now: &Time) -> Node {
    let pod_cidr = inputs.pods.pod_cidr.clone();
    let taints: Vec<Taint> = inputs.pods.taints.iter().map(to_taint).collect();
    Node {
        metadata: ObjectMeta {
            name: Some(inputs.name.to_string()),
            labels: Some(base_labels(inputs)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidrs: pod_cidr.clone().map(|c| vec![c]),
            pod_cidr,
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: Some(desired_status(inputs, &[], now)),
    }
}

/// The server-side apply of the Node's labels.
pub fn labels_apply(inputs: &NodeInputs<'_>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(inputs.name.to_string()),
            labels: Some(desired_labels(inputs)),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The server-side apply of the Node's status.
pub fn status_apply(name: &str, status: NodeStatus) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

/// Whether the Node's labels need an apply: the set changed since the last
/// apply of this process (or there was none), or someone removed or changed one.
pub fn labels_need_apply(
    desired: &BTreeMap<String, String>,
    last_applied: Option<&BTreeMap<String, String>>,
    node: &Node,
) -> bool {
    if last_applied != Some(desired) {
        return true;
    }
    let current = node.metadata.labels.as_ref();
    desired
        .iter()
        .any(|(k, v)| current.and_then(|l| l.get(k)) != Some(v))
}

/// The Node status the agent wants. Conditions keep the `lastTransitionTime`
/// of `existing` while their status stays; every condition gets `now` as its
/// heartbeat, as the kubelet's do.
pub fn desired_status(
    inputs: &NodeInputs<'_>,
    existing: &[NodeCondition],
    now: &Time,
) -> NodeStatus {
    let mut addresses = Vec::new();
    if let Some(ip) = inputs.internal_ip {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: inputs.name.to_string(),
    });

    let host = inputs.host;
    let max_pods = i64::from(inputs.pods.max_pods);
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(host.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", host.memory_bytes / 1024)),
        ),
        ("pods".to_string(), Quantity(max_pods.to_string())),
    ]);
    let kept = Allocatable::of(host);
    let mut allocatable = BTreeMap::from([
        ("cpu".to_string(), Quantity(host.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", kept.memory_bytes / 1024)),
        ),
        ("pods".to_string(), Quantity(max_pods.to_string())),
    ]);
    if host.ephemeral_storage_bytes > 0 {
        capacity.insert(
            "ephemeral-storage".into(),
            Quantity(format!("{}Ki", host.ephemeral_storage_bytes / 1024)),
        );
        allocatable.insert(
            "ephemeral-storage".into(),
            Quantity(kept.ephemeral_storage_bytes.to_string()),
        );
    }

    NodeStatus {
        daemon_endpoints: inputs.kubelet_port.map(|port| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(port),
            }),
        }),
        addresses: Some(addresses),
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions(inputs.runtime, inputs.pressure, existing, now)),
        node_info: Some(NodeSystemInfo {
            architecture: host.architecture.clone(),
            boot_id: host.boot_id.clone(),
            container_runtime_version: inputs
                .runtime
                .version
                .as_ref()
                .map(|v| v.node_info())
                .unwrap_or_default(),
            kernel_version: host.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: host.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: host.os_image.clone(),
            system_uuid: host.system_uuid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The kubelet's node conditions. Ready follows the runtime as the kubelet's
/// does (runtime down or its network not ready makes the node NotReady); the
/// pressure conditions follow the eviction loop, with the kubelet's reasons
/// and messages; NetworkUnavailable follows the runtime's NetworkReady.
fn conditions(
    runtime: &RuntimeReport,
    pressure: &PressureReport,
    existing: &[NodeCondition],
    now: &Time,
) -> Vec<NodeCondition> {
    let endpoint = &runtime.endpoint;
    let (ready, ready_message) = match &runtime.health {
        RuntimeHealth::Ready => (true, "node-agent is posting ready status".to_string()),
        RuntimeHealth::NotChecked => (false, "container runtime status check may not have completed yet".to_string()),
        RuntimeHealth::Unreachable { message } => (false, format!("container runtime is down: {message}")),
        RuntimeHealth::NotReady { reason, message } => {
            (false, format!("container runtime not ready: RuntimeReady=false reason:{reason} message:{message}"))
        }
        RuntimeHealth::NetworkNotReady { reason, message } => (
            false,
            format!("container runtime network not ready: NetworkReady=false reason:{reason} message:{message}"),
        ),
    };
    let network_unavailable = matches!(runtime.health, RuntimeHealth::NetworkNotReady { .. });
    let wanted: [(&str, bool, &str, String); 5] = [
        if pressure.memory {
            (
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available".into(),
            )
        } else {
            (
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".into(),
            )
        },
        if pressure.disk {
            (
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure".into(),
            )
        } else {
            (
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".into(),
            )
        },
        if pressure.pid {
            (
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available".into(),
            )
        } else {
            (
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".into(),
            )
        },
        (
            "Ready",
            ready,
            if ready {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            },
            ready_message,
        ),
        (
            "NetworkUnavailable",
            network_unavailable,
            if network_unavailable {
                "NetworkNotReady"
            } else {
                "NetworkReady"
            },
            if network_unavailable {
                format!("the runtime at {endpoint} reports its pod network not ready")
            } else {
                "the runtime's pod network is ready".to_string()
            },
        ),
    ];
    wanted
        .into_iter()
        .map(|(type_, on, reason, message)| {
            let status = if on { "True" } else { "False" };
            let transition = existing
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// Whether the Node's status needs a write: something the agent reports
/// differs (times aside), this process has not reported yet, or the last
/// report is older than [`NODE_STATUS_REPORT_FREQUENCY`].
pub fn status_needs_update(
    desired: &NodeStatus,
    current: Option<&NodeStatus>,
    since_last_report: Option<Duration>,
) -> bool {
    let Some(current) = current else { return true };
    match since_last_report {
        None => return true,
        Some(elapsed) if elapsed >= NODE_STATUS_REPORT_FREQUENCY => return true,
        Some(_) => {}
    }
    let conditions_differ = desired.conditions.iter().flatten().any(|want| {
        match current
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == want.type_)
        {
            None => true,
            Some(have) => {
                have.status != want.status
                    || have.reason != want.reason
                    || have.message != want.message
            }
        }
    });
    conditions_differ
        || desired.addresses != current.addresses
        || desired.daemon_endpoints != current.daemon_endpoints
        || desired.node_info != current.node_info
        || !same_quantities(desired.capacity.as_ref(), current.capacity.as_ref())
        || !same_quantities(desired.allocatable.as_ref(), current.allocatable.as_ref())
}

/// Whether every quantity of `desired` has the same value in `current`. The API
/// server rewrites quantities in canonical form (`2048Ki` becomes `2Mi`), so
/// values are compared, not strings.
fn same_quantities(
    desired: Option<&BTreeMap<String, Quantity>>,
    current: Option<&BTreeMap<String, Quantity>>,
) -> bool {
    desired.into_iter().flatten().all(|(name, want)| {
        let have = current.and_then(|c| c.get(name));
        match (
            quantity_milli(&want.0),
            have.and_then(|h| quantity_milli(&h.0)),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => have == Some(want),
        }
    })
}

/// A quantity in thousandths (`100m` is 100, `1Ki` is 1,024,000). Integer
/// mantissas only (what the agent writes and the API server's canonical forms of them).
pub fn quantity_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: i128 = number.parse().ok()?;
    let milli: i128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "P" => 1_000_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000_000,
        "Ki" => 1_000 << 10,
        "Mi" => 1_000 << 20,
        "Gi" => 1_000 << 30,
        "Ti" => 1_000 << 40,
        "Pi" => 1_000 << 50,
        "Ei" => 1_000 << 60,
        _ => return None,
    };
    number.checked_mul(milli)
}

/// The Node's taints to write, if they need a change: the controllers' taints
/// (`node.kubernetes.io/…`) as they are, and the rest exactly as spec.pods.taints says.
pub fn taints_to_write(spec: &[NodeTaint], node: &Node) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let is_system = |t: &Taint| SYSTEM_TAINT_PREFIXES.iter().any(|p| t.key.starts_with(p));
    let key = |t: &Taint| {
        (
            t.key.clone(),
            t.value.clone().unwrap_or_default(),
            t.effect.clone(),
        )
    };
    let mut have: Vec<_> = current.iter().filter(|t| !is_system(t)).map(key).collect();
    let wanted: Vec<Taint> = spec.iter().map(to_taint).collect();
    let mut want: Vec<_> = wanted.iter().map(key).collect();
    have.sort();
    want.sort();
    if have == want {
        return None;
    }
    let mut taints: Vec<Taint> = current.into_iter().filter(|t| is_system(t)).collect();
    taints.extend(wanted);
    Some(taints)
}

fn to_taint(t: &NodeTaint) -> Taint {
    let effect = match t.effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    };
    Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: effect.to_string(),
        time_added: None,
    }
}

/// What to do about the Node's spec.podCIDR, which can be set once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCidrPlan {
    Keep,
    Set(String),
    /// The Node has another podCIDR already; it cannot change.
    Conflict {
        registered: String,
        wanted: String,
    },
}

pub fn pod_cidr_plan(wanted: Option<&str>, node: &Node) -> PodCidrPlan {
    let Some(wanted) = wanted else {
        return PodCidrPlan::Keep;
    };
    match node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
    {
        None => PodCidrPlan::Set(wanted.to_string()),
        Some(registered) if registered == wanted => PodCidrPlan::Keep,
        Some(registered) => PodCidrPlan::Conflict {
            registered: registered.to_string(),
            wanted: wanted.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::reports::RuntimeVersion;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("timestamp"))
    }

    fn host() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 100 * 1024 * 1024 * 1024,
            machine_id: "m1".into(),
            system_uuid: "u1".into(),
            boot_id: "b1".into(),
            kernel_version: "6.18.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "amd64".into(),
            apparmor_enabled: false,
        }
    }

    fn runtime(health: RuntimeHealth) -> RuntimeReport {
        RuntimeReport {
            endpoint: "unix:///run/c.sock".into(),
            version: Some(RuntimeVersion {
                name: "containerd".into(),
                version: "1.6.20".into(),
            }),
            health,
            inventory: None,
        }
    }

    fn pods() -> PodsSpec {
        PodsSpec {
            max_pods: 50,
            pod_cidr: Some("10.244.1.0/24".into()),
            labels: BTreeMap::from([
                ("team".to_string(), "a".to_string()),
                ("kubernetes.io/hostname".to_string(), "spoofed".to_string()),
            ]),
            taints: vec![NodeTaint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: TaintEffect::NoSchedule,
            }],
            ..Default::default()
        }
    }

    fn with<T>(health: RuntimeHealth, f: impl FnOnce(&NodeInputs<'_>) -> T) -> T {
        with_pressure(health, &PressureReport::default(), f)
    }

    fn with_pressure<T>(
        health: RuntimeHealth,
        pressure: &PressureReport,
        f: impl FnOnce(&NodeInputs<'_>) -> T,
    ) -> T {
        let host = host();
        let pods = pods();
        let runtime = runtime(health);
        let inputs = NodeInputs {
            name: "nc-node-1",
            internal_ip: Some("10.200.1.2".parse().expect("ip")),
            host: &host,
            pods: &pods,
            runtime: &runtime,
            pressure,
            kubelet_port: Some(10250),
        };
        f(&inputs)
    }

    #[test]
    fn pressure_conditions_follow_the_eviction_loop_in_the_kubelets_words() {
        let pressure = PressureReport {
            measured: true,
            memory: true,
            disk: false,
            pid: true,
            crossed: String::new(),
        };
        let status = with_pressure(RuntimeHealth::Ready, &pressure, |i| {
            desired_status(i, &[], &at(1))
        });
        let memory = condition(&status, "MemoryPressure");
        assert_eq!(memory.status, "True");
        assert_eq!(
            memory.reason.as_deref(),
            Some("KubeletHasInsufficientMemory")
        );
        assert_eq!(
            memory.message.as_deref(),
            Some("kubelet has insufficient memory available")
        );
        let disk = condition(&status, "DiskPressure");
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("False", Some("KubeletHasNoDiskPressure"))
        );
        assert_eq!(
            condition(&status, "PIDPressure").reason.as_deref(),
            Some("KubeletHasInsufficientPID")
        );
        // Pressure is not unreadiness.
        assert_eq!(condition(&status, "Ready").status, "True");
    }

    fn condition<'n>(status: &'n NodeStatus, type_: &str) -> &'n NodeCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("{type_} missing"))
    }

    #[test]
    fn labels_are_the_kubelets_plus_the_node_configs_which_cannot_override_them() {
        let labels = with(RuntimeHealth::Ready, desired_labels);
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("nc-node-1")
        );
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        assert_eq!(
            labels.get("kubernetes.io/arch").map(String::as_str),
            Some("amd64")
        );
        assert_eq!(
            labels.get(AGENT_MANAGED_LABEL).map(String::as_str),
            Some("true")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    }

    #[test]
    fn registration_carries_taints_pod_cidr_and_base_labels_only() {
        let node = with(RuntimeHealth::Ready, |i| registration(i, &at(1)));
        let spec = node.spec.as_ref().expect("spec");
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.1.0/24"));
        assert_eq!(spec.pod_cidrs, Some(vec!["10.244.1.0/24".to_string()]));
        assert_eq!(
            spec.taints.as_ref().map(|t| t[0].key.as_str()),
            Some("dedicated")
        );
        let labels = node.metadata.labels.as_ref().expect("labels");
        assert!(labels.contains_key(AGENT_MANAGED_LABEL) && !labels.contains_key("team"));
    }

    #[test]
    fn status_reports_addresses_capacity_and_node_info() {
        let status = with(RuntimeHealth::Ready, |i| desired_status(i, &[], &at(1)));
        let addresses: Vec<_> = status
            .addresses
            .iter()
            .flatten()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            addresses,
            vec![("InternalIP", "10.200.1.2"), ("Hostname", "nc-node-1")]
        );
        let capacity = status.capacity.as_ref().expect("capacity");
        assert_eq!(capacity["cpu"].0, "2");
        assert_eq!(capacity["memory"].0, "4194304Ki");
        assert_eq!(capacity["pods"].0, "50");
        let allocatable = status.allocatable.as_ref().expect("allocatable");
        assert_eq!(
            allocatable["memory"].0,
            format!("{}Ki", 4 * 1024 * 1024 - 100 * 1024)
        );
        let info = status.node_info.as_ref().expect("nodeInfo");
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(
            (info.operating_system.as_str(), info.architecture.as_str()),
            ("linux", "amd64")
        );
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("KubeletReady")
        );
        assert_eq!(condition(&status, "MemoryPressure").status, "False");
        assert_eq!(condition(&status, "NetworkUnavailable").status, "False");
    }

    #[test]
    fn a_runtime_without_network_makes_the_node_not_ready() {
        let health = RuntimeHealth::NetworkNotReady {
            reason: "NetworkPluginNotReady".into(),
            message: "cni".into(),
        };
        let status = with(health, |i| desired_status(i, &[], &at(1)));
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert!(ready
            .message
            .as_deref()
            .unwrap_or("")
            .contains("NetworkReady=false"));
        assert_eq!(condition(&status, "NetworkUnavailable").status, "True");
    }

    #[test]
    fn transition_times_stay_while_status_stays_and_heartbeats_move() {
        let first = with(RuntimeHealth::Ready, |i| desired_status(i, &[], &at(1)));
        let existing = first.conditions.clone().unwrap_or_default();
        let second = with(RuntimeHealth::Ready, |i| {
            desired_status(i, &existing, &at(50))
        });
        let ready = condition(&second, "Ready");
        assert_eq!(ready.last_transition_time, Some(at(1)));
        assert_eq!(ready.last_heartbeat_time, Some(at(50)));
        let down = with(
            RuntimeHealth::Unreachable {
                message: "x".into(),
            },
            |i| desired_status(i, &existing, &at(60)),
        );
        assert_eq!(condition(&down, "Ready").last_transition_time, Some(at(60)));
    }

    #[test]
    fn status_is_written_on_change_at_start_and_every_report_period() {
        let first = with(RuntimeHealth::Ready, |i| desired_status(i, &[], &at(1)));
        let later = with(RuntimeHealth::Ready, |i| desired_status(i, &[], &at(20)));
        let recent = Some(Duration::from_secs(10));
        assert!(!status_needs_update(&later, Some(&first), recent));
        assert!(status_needs_update(&later, Some(&first), None));
        assert!(status_needs_update(
            &later,
            Some(&first),
            Some(NODE_STATUS_REPORT_FREQUENCY)
        ));
        assert!(status_needs_update(&later, None, recent));

        // The node lifecycle controller marked the node Unknown: written back at once.
        let mut lost = first.clone();
        for c in lost
            .conditions
            .iter_mut()
            .flatten()
            .filter(|c| c.type_ == "Ready")
        {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
        }
        assert!(status_needs_update(&later, Some(&lost), recent));
    }

    #[test]
    fn canonical_quantities_compare_equal() {
        assert_eq!(quantity_milli("2048Ki"), quantity_milli("2Mi"));
        assert_eq!(quantity_milli("2000"), quantity_milli("2k"));
        assert_eq!(quantity_milli("100m"), Some(100));
        assert_eq!(quantity_milli("1.5Gi"), None);
        let mut first = with(RuntimeHealth::Ready, |i| desired_status(i, &[], &at(1)));
        let desired = first.clone();
        if let Some(c) = first.capacity.as_mut() {
            c.insert("memory".into(), Quantity("4Gi".into()));
        }
        assert!(!status_needs_update(
            &desired,
            Some(&first),
            Some(Duration::from_secs(1))
        ));
    }

    #[test]
    fn labels_apply_when_changed_or_missing() {
        let (desired, node) = with(RuntimeHealth::Ready, |i| {
            let mut node = registration(i, &at(1));
            node.metadata.labels = Some(desired_labels(i));
            (desired_labels(i), node)
        });
        assert!(labels_need_apply(&desired, None, &node));
        assert!(!labels_need_apply(&desired, Some(&desired), &node));
        let mut removed = node.clone();
        removed.metadata.labels.as_mut().map(|l| l.remove("team"));
        assert!(labels_need_apply(&desired, Some(&desired), &removed));
    }

    #[test]
    fn taints_keep_the_controllers_and_follow_the_spec() {
        let spec = pods().taints;
        let node_with = |taints: Vec<Taint>| Node {
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            ..Default::default()
        };
        let not_ready = Taint {
            key: "node.kubernetes.io/not-ready".into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let dedicated = to_taint(&spec[0]);
        assert_eq!(
            taints_to_write(
                &spec,
                &node_with(vec![not_ready.clone(), dedicated.clone()])
            ),
            None
        );
        let stale = Taint {
            key: "old".into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: None,
        };
        assert_eq!(
            taints_to_write(&spec, &node_with(vec![not_ready.clone(), stale])),
            Some(vec![not_ready.clone(), dedicated])
        );
        assert_eq!(taints_to_write(&[], &node_with(vec![not_ready])), None);
    }

    #[test]
    fn pod_cidr_is_set_once() {
        let node_with = |cidr: Option<&str>| Node {
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_cidr_plan(None, &node_with(None)), PodCidrPlan::Keep);
        assert_eq!(
            pod_cidr_plan(Some("10.244.1.0/24"), &node_with(None)),
            PodCidrPlan::Set("10.244.1.0/24".into())
        );
        assert_eq!(
            pod_cidr_plan(Some("10.244.1.0/24"), &node_with(Some("10.244.1.0/24"))),
            PodCidrPlan::Keep
        );
        assert!(matches!(
            pod_cidr_plan(Some("10.244.2.0/24"), &node_with(Some("10.244.1.0/24"))),
            PodCidrPlan::Conflict { .. }
        ));
    }
}
