//! What the loops publish, as plain data: the contract between the loops and
//! the status writer, so the status ([`crate::status::desired`]) is computed
//! from these values alone, and a loop never reads another loop's module.
//!
//! ```text
//!   config::run  --ConfigReport-->  +
//!   runtime::run --RuntimeReport--> |
//!   node::run    --NodeReport-->    +--> status::run --> NodeConfig status
//!   pods::run    --PodsReport-->    |
//!   proxy::run   --ProxyReport-->   +
//! ```
//! Each travels on a `tokio::sync::watch` channel; the writer wakes on any.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nodeconfig_crds::{ContainerCounts, ImageFsStatus, NodeMode, RuntimeStatus};

use crate::config::plan::{AppliedConfig, Rejection};

// === config ===

/// Where the NodeConfig stands, for ConfigApplied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ConfigState {
    /// No NodeConfig for this node (yet, or any more).
    #[default]
    NotSeen,
    /// `generation` is applied.
    Applied { generation: i64 },
    /// spec.paused: generation `latest` waits; the applied configuration stays.
    Paused { latest: i64 },
    /// `generation` cannot be applied; the applied configuration stays.
    Rejected {
        generation: i64,
        rejection: Rejection,
    },
}

/// What the config loop publishes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigReport {
    pub state: ConfigState,
    /// The configuration in force, once a generation was applied.
    pub applied: Option<AppliedConfig>,
    /// The mode the agent runs in, once known (`--mode`, or the applied spec's).
    pub mode: Option<NodeMode>,
    /// The first list of the watch is done: `state` says whether a NodeConfig exists.
    pub synced: bool,
}

impl ConfigReport {
    /// Whether a NodeConfig was seen and the agent runs with it (applied or paused): `/readyz`.
    pub fn is_ready(&self) -> bool {
        self.applied.is_some()
            && matches!(
                self.state,
                ConfigState::Applied { .. } | ConfigState::Paused { .. }
            )
    }
}

// === runtime ===

/// What the runtime loop last learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeReport {
    /// The CRI endpoint asked.
    pub endpoint: String,
    /// Runtime name and version from CRI `Version`, once it answered.
    pub version: Option<RuntimeVersion>,
    pub health: RuntimeHealth,
    /// Last successful inventory; kept while the runtime is unreachable.
    pub inventory: Option<RuntimeInventory>,
}

/// CRI `Version`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// `containerd`.
    pub name: String,
    /// `1.6.20~ds1`.
    pub version: String,
}

impl RuntimeVersion {
    /// `containerd 1.6.20`, as the NodeConfig status shows it.
    pub fn display(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    /// `containerd://1.6.20`, as a Node's `nodeInfo.containerRuntimeVersion` spells it.
    pub fn node_info(&self) -> String {
        format!("{}://{}", self.name, self.version)
    }
}

/// Health of the runtime as CRI `Status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RuntimeHealth {
    /// Not asked yet.
    #[default]
    NotChecked,
    /// `RuntimeReady` and `NetworkReady` are both true.
    Ready,
    /// A CRI call failed or timed out.
    Unreachable { message: String },
    /// The runtime answers but says `RuntimeReady=false`.
    NotReady { reason: String, message: String },
    /// The runtime is ready but its pod network (CNI) is not.
    NetworkNotReady { reason: String, message: String },
}

/// What the runtime holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInventory {
    pub sandboxes: i32,
    pub containers: ContainerCounts,
    pub images: i32,
    /// The image filesystem, when it could be measured.
    pub image_fs: Option<ImageFsStatus>,
}

impl RuntimeReport {
    /// The status block of the NodeConfig, once the runtime answered.
    pub fn status(&self) -> Option<RuntimeStatus> {
        let version = self.version.as_ref()?;
        let inventory = self.inventory.clone().unwrap_or_default();
        Some(RuntimeStatus {
            version: version.display(),
            sandboxes: inventory.sandboxes,
            containers: inventory.containers,
            images: inventory.images,
            image_fs: inventory.image_fs,
        })
    }
}

// === node ===

/// What went wrong with the Node, for the NodeConfig's Degraded condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeProblem {
    pub reason: &'static str,
    pub message: String,
}

/// What the node loop publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The Node exists and the agent keeps it (Kubelet mode).
    pub registered: bool,
    pub problems: Vec<NodeProblem>,
}

// === pods ===

/// The pods of this node, for the NodeConfig's `pods` block and `PodsReady`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsReport {
    /// The watch has listed; the counts mean something.
    pub synced: bool,
    /// Pods bound to the node that are not finished.
    pub desired: u32,
    pub running: u32,
    /// Running pods whose Ready condition is True.
    pub ready: u32,
    pub pending: u32,
    pub failed: u32,
    pub restarts: u32,
    /// Pods the node rejected at admission (they end Failed too).
    pub rejected: u32,
}

// === eviction ===

/// What the eviction loop publishes: the node's pressure conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PressureReport {
    /// The loop measured the node with an applied policy at least once.
    pub measured: bool,
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
    /// For people: the thresholds crossed at the last pass
    /// (`memory.available is below its threshold of 100Mi`), empty when none.
    pub crossed: String,
}

impl PressureReport {
    /// The Node condition types that are True, in the Node's order.
    pub fn conditions(&self) -> Vec<&'static str> {
        [
            (self.memory, "MemoryPressure"),
            (self.disk, "DiskPressure"),
            (self.pid, "PIDPressure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

// === proxy ===

/// Where the proxy stands, for ProxyReady.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyState {
    /// No NodeConfig applied yet: nothing is programmed until its settings are known.
    #[default]
    WaitingForConfig,
    /// Settings known; the watches are listing or the first sync runs.
    Starting,
    /// The last sync succeeded.
    Synced,
    /// spec.proxy.enabled is false: the agent's rules are removed.
    Disabled,
    /// The last sync failed; the rules of the sync before stay in place.
    Failed { message: String },
    /// spec.proxy cannot be used; the loop keeps the settings it had.
    InvalidConfig { message: String },
}

/// What the proxy loop publishes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyReport {
    pub state: ProxyState,
    /// spec.proxy.enabled of the settings in force (false until they are known).
    pub enabled: bool,
    /// What the last successful sync programmed.
    pub service_ports: usize,
    pub endpoints: usize,
    pub rules: usize,
    pub last_sync: Option<Time>,
    pub last_sync_duration: Option<Duration>,
    /// Failed syncs since the agent started.
    pub failed_syncs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_block_needs_a_version() {
        let mut report = RuntimeReport::default();
        assert_eq!(report.status(), None);
        report.version = Some(RuntimeVersion {
            name: "containerd".into(),
            version: "1.6.20".into(),
        });
        report.inventory = Some(RuntimeInventory {
            sandboxes: 2,
            containers: ContainerCounts::default(),
            images: 5,
            image_fs: Some(ImageFsStatus {
                capacity_bytes: 100 << 30,
                used_percent: 42,
            }),
        });
        let status = report.status().expect("status");
        assert_eq!(status.version, "containerd 1.6.20");
        assert_eq!((status.sandboxes, status.images), (2, 5));
        assert_eq!(status.image_fs.map(|fs| fs.used_percent), Some(42));
    }
}
