//! The eviction loop (Kubelet mode), the kubelet's eviction manager's
//! `synchronize` every [`MONITORING_INTERVAL`]: read the node, say which
//! pressures hold (published for the Node's conditions and the NodeConfig
//! status), evict pods past their local storage limits, then, while a
//! threshold is crossed, one pod at a time in the kubelet's order, waiting
//! for it to be gone (at most [`CLEANUP_TIMEOUT`]) and an interval before
//! the next.
//!
//! Before a pod is evicted for disk, dead containers and unused images go
//! (CRI `ListContainers`/`RemoveContainer`, [`ImageReclaimer`]) and the
//! node is measured again: no threshold crossed, no eviction
//! ([`reclaim`](crate::eviction::reclaim)).
//!
//! The readings come from [`crate::edge::node_stats`] and CRI
//! (`ListContainerStats`, `ImageFsInfo`); the decisions from the pure
//! [`signals`](crate::eviction::signals), [`rank`](crate::eviction::rank),
//! [`reclaim`](crate::eviction::reclaim) and
//! [`local_storage`](crate::eviction::local_storage); the pods' workers
//! carry out the [`EvictionOrders`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::reflector::Store;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::edge::cri_handle::CriHandle;
use crate::edge::node_stats;
use crate::eviction::local_storage;
use crate::eviction::orders::{EvictionOrder, EvictionOrders};
use crate::eviction::rank::{self, Candidate, ContainerUsage, PodUsage};
use crate::eviction::reclaim::{self, ListedContainer, PodLife, Reclaim};
use crate::eviction::signals::{
    crossings, format_amount, observations, Crossing, NodeReadings, Pressure, PressureTracker,
};
use crate::eviction::thresholds::{EvictionPolicy, Signal};
use crate::images::policy::GcPolicy;
use crate::images::reclaim::ImageReclaimer;
use crate::pods::cri_config::sandbox::pod_log_dir;
use crate::pods::events::PodEvents;
use crate::pods::runtime_view::{LABEL_CONTAINER_NAME, LABEL_POD_UID};
use crate::pods::volumes::plan::EMPTY_DIR_PLUGIN_DIR;
use crate::reports::{ConfigReport, PressureReport};

/// The kubelet's `evictionMonitoringPeriod`.
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// How long an evicted pod is waited for before the loop goes on (the kubelet's `podCleanupTimeout`).
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The grace period of a pod evicted for a hard threshold or a limit
/// (the kubelet's `immediateEvictionGracePeriodSeconds`).
pub const EVICTION_GRACE_SECONDS: i64 = 1;
/// Most entries one directory walk visits (a volume, a log directory).
const MAX_WALK_ENTRIES: usize = 100_000;
/// How long a CRI call may take.
const CRI_TIMEOUT: Duration = Duration::from_secs(10);

/// The eviction loop's inputs.
pub struct EvictionLoop {
    pub cri: CriHandle,
    /// The pods bound to the node (the pod loop's watch).
    pub pods: Store<Pod>,
    pub orders: EvictionOrders,
    /// Wakes the worker of a pod UID.
    pub wake: mpsc::UnboundedSender<String>,
    pub config: watch::Receiver<ConfigReport>,
    /// Pod volumes live under `<root_dir>/pods/<uid>`; its filesystem is nodefs.
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub events: PodEvents,
    pub node_name: String,
    pub report: watch::Sender<PressureReport>,
    /// Removes unused images before a pod is evicted for disk.
    pub images: ImageReclaimer,
}

impl EvictionLoop {
    pub async fn run(self, cancel: CancellationToken) {
        let mut tracker = PressureTracker::default();
        loop {
            let evicted = self.synchronize(&mut tracker).await;
            if !evicted.is_empty() {
                self.wait_for_cleanup(&evicted, &cancel).await;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(MONITORING_INTERVAL) => {}
            }
        }
    }

    /// One pass; returns the UIDs of the pods it ordered evicted.
    async fn synchronize(&self, tracker: &mut PressureTracker) -> Vec<String> {
        let policy = {
            let config = self.config.borrow();
            match config.applied.as_ref() {
                Some(applied) => EvictionPolicy::from_spec(&applied.pods).ok(),
                None => None,
            }
        };
        let Some(policy) = policy else {
            return Vec::new();
        };
        let readings = self.read_node().await;
        let observed = observations(&readings);
        let crossed = crossings(&policy, &observed);
        let pressures = tracker.update(&crossed, Instant::now(), policy.pressure_transition_period);
        self.publish(&pressures, &crossed);

        let active: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| is_active(p, &self.node_name))
            .filter(|p| {
                !p.metadata
                    .uid
                    .as_deref()
                    .is_some_and(|u| self.orders.pending(u))
            })
            .collect();
        let limited: Vec<&Arc<Pod>> = active
            .iter()
            .filter(|p| local_storage::has_limits(p))
            .collect();
        let need_stats = !limited.is_empty() || !crossed.is_empty();
        let container_stats = if need_stats {
            self.container_stats().await
        } else {
            BTreeMap::new()
        };

        // Local storage limits first, every offender at once.
        let mut evicted = Vec::new();
        for pod in limited {
            let usage = self.pod_usage(pod, &container_stats, true);
            if let Some(message) = local_storage::violation(pod, &usage) {
                if rank::is_critical(pod) {
                    tracing::warn!(pod = %name_of(pod), "cannot evict a critical pod past its storage limit");
                    continue;
                }
                self.order(pod, message, false);
                evicted.extend(pod.metadata.uid.clone());
            }
        }
        if !evicted.is_empty() {
            return evicted;
        }

        let Some(crossing) = crossed.first() else {
            return Vec::new();
        };
        let resource = crossing.threshold.signal.resource();
        self.events.send_about(
            self.node_reference(),
            true,
            "EvictionThresholdMet",
            format!("Attempting to reclaim {resource}"),
        );
        if self
            .reclaim_node_level(crossing.threshold.signal, &policy)
            .await
        {
            return Vec::new();
        }
        let disk = resource != "memory" && resource != "pids";
        let usages: Vec<Option<PodUsage>> = active
            .iter()
            .map(|p| {
                let usage = self.pod_usage(p, &container_stats, disk);
                (!usage.containers.is_empty()).then_some(usage)
            })
            .collect();
        let mut candidates: Vec<Candidate<'_>> = active
            .iter()
            .zip(&usages)
            .map(|(pod, usage)| Candidate {
                pod,
                usage: usage.as_ref(),
            })
            .collect();
        if candidates.is_empty() {
            tracing::warn!(signal = %crossing.threshold.signal, "eviction thresholds are met, but no pod is active to evict");
            return Vec::new();
        }
        let Some(victim) = rank::choose(crossing.threshold.signal, &mut candidates) else {
            tracing::warn!("unable to evict any pod from the node: only critical pods are left");
            return Vec::new();
        };
        let message = rank::eviction_message(crossing, &victim);
        self.order(victim.pod, message, true);
        victim.pod.metadata.uid.clone().into_iter().collect()
    }

    /// Frees what the node holds outside pods for `signal` (dead
    /// containers, unused images) and says whether that was enough, as the
    /// kubelet's `reclaimNodeLevelResources`.
    async fn reclaim_node_level(&self, signal: Signal, policy: &EvictionPolicy) -> bool {
        let steps = reclaim::steps(signal, self.dedicated_image_fs().await);
        if steps.is_empty() {
            return false;
        }
        for step in steps {
            match step {
                Reclaim::DeadContainers => self.remove_dead_containers().await,
                Reclaim::UnusedImages => self.remove_unused_images().await,
            }
        }
        let after = observations(&self.read_node().await);
        let relieved = reclaim::relieved(policy, &after);
        if relieved {
            tracing::info!(%signal, "able to reduce resource pressure without evicting pods");
        }
        relieved
    }

    /// Whether the runtime keeps its images on another filesystem than the
    /// agent's root directory (the kubelet's `dedicatedImageFs`).
    async fn dedicated_image_fs(&self) -> bool {
        let Some(mountpoint) = self.image_fs_mountpoint().await else {
            return false;
        };
        match (
            node_stats::device(&self.root_dir),
            node_stats::device(Path::new(&mountpoint)),
        ) {
            (Ok(root), Ok(images)) => root != images,
            _ => false,
        }
    }

    /// CRI `RemoveContainer` for the dead containers [`reclaim::dead_containers`] names.
    async fn remove_dead_containers(&self) {
        let mut client = self.cri.current();
        let call = client
            .runtime
            .list_containers(cri::ListContainersRequest { filter: None });
        let listed = match tokio::time::timeout(CRI_TIMEOUT, call).await {
            Ok(Ok(response)) => response.into_inner().containers,
            Ok(Err(status)) => {
                tracing::warn!(error = %status.message(), "cannot list containers to remove dead ones");
                return;
            }
            Err(_) => {
                tracing::warn!("CRI ListContainers did not answer in time");
                return;
            }
        };
        let exited = cri::ContainerState::ContainerExited as i32;
        let containers: Vec<ListedContainer> = listed
            .into_iter()
            .map(|c| ListedContainer {
                pod_uid: c.labels.get(LABEL_POD_UID).cloned(),
                name: c.labels.get(LABEL_CONTAINER_NAME).cloned(),
                exited: c.state == exited,
                created_at: c.created_at,
                id: c.id,
            })
            .collect();
        let remove = reclaim::dead_containers(&containers, &self.pod_lives());
        let mut removed = 0usize;
        for id in &remove {
            let call = client
                .runtime
                .remove_container(cri::RemoveContainerRequest {
                    container_id: id.clone(),
                });
            match tokio::time::timeout(CRI_TIMEOUT, call).await {
                Ok(Ok(_)) => removed += 1,
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => {}
                Ok(Err(status)) => {
                    tracing::warn!(container = %id, error = %status.message(), "cannot remove a dead container");
                }
                Err(_) => {
                    tracing::warn!(container = %id, "CRI RemoveContainer did not answer in time")
                }
            }
        }
        tracing::info!(removed, "removed dead containers to reclaim disk");
    }

    /// Every unused image old enough, whatever the image GC thresholds.
    async fn remove_unused_images(&self) {
        let settings = {
            let config = self.config.borrow();
            config.applied.as_ref().and_then(|applied| {
                let policy = GcPolicy::from_spec(&applied.pods).ok()?;
                Some((policy, applied.runtime.clone()))
            })
        };
        let Some((policy, runtime)) = settings else {
            return;
        };
        match self.images.delete_unused(&policy, &runtime).await {
            Ok(freed) => tracing::info!(
                images = freed.images,
                bytes = freed.bytes,
                "removed unused images to reclaim disk"
            ),
            Err(error) => tracing::warn!(%error, "cannot remove unused images"),
        }
    }

    /// The pods bound here by UID: finished (Succeeded, Failed) or not.
    fn pod_lives(&self) -> BTreeMap<String, PodLife> {
        self.pods
            .state()
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&*self.node_name)
            })
            .filter_map(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                let life = match phase {
                    Some("Succeeded" | "Failed") => PodLife::Finished,
                    _ => PodLife::Active,
                };
                Some((p.metadata.uid.clone()?, life))
            })
            .collect()
    }

    fn order(&self, pod: &Pod, message: String, disruption_target: bool) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        tracing::info!(pod = %name_of(pod), %uid, message, "evicting pod");
        self.orders.place(
            uid,
            EvictionOrder {
                message,
                grace_seconds: EVICTION_GRACE_SECONDS,
                disruption_target,
            },
        );
        let _ = self.wake.send(uid.to_string());
    }

    /// Waits until the workers carried out the orders for `uids`, at most
    /// [`CLEANUP_TIMEOUT`].
    async fn wait_for_cleanup(&self, uids: &[String], cancel: &CancellationToken) {
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        while uids.iter().any(|u| self.orders.pending(u)) {
            if Instant::now() >= deadline {
                tracing::info!(?uids, "timed out waiting for evicted pods to be cleaned up");
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn publish(&self, pressures: &std::collections::BTreeSet<Pressure>, crossed: &[Crossing]) {
        let message = crossed
            .iter()
            .map(|c| {
                format!(
                    "{} is below its threshold of {}",
                    c.threshold.signal,
                    format_amount(c.threshold.signal, c.level)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let new = PressureReport {
            measured: true,
            memory: pressures.contains(&Pressure::Memory),
            disk: pressures.contains(&Pressure::Disk),
            pid: pressures.contains(&Pressure::Pid),
            crossed: message,
        };
        self.report.send_if_modified(|r| {
            let changed = *r != new;
            if changed {
                tracing::info!(memory = new.memory, disk = new.disk, pid = new.pid, crossed = %new.crossed, "node pressure changed");
            }
            *r = new;
            changed
        });
    }

    async fn read_node(&self) -> NodeReadings {
        let warn = |what: &str, err: &dyn std::fmt::Display| {
            tracing::debug!(error = %err, "cannot read {what}");
        };
        let memory = node_stats::memory().map_err(|e| warn("memory", &e)).ok();
        let nodefs = node_stats::filesystem(&self.root_dir)
            .map_err(|e| warn("nodefs", &e))
            .ok();
        let pids = node_stats::pids().map_err(|e| warn("pids", &e)).ok();
        let imagefs = match self.image_fs_mountpoint().await {
            Some(mountpoint) => node_stats::filesystem(Path::new(&mountpoint))
                .map_err(|e| warn("imagefs", &e))
                .ok(),
            None => None,
        };
        NodeReadings {
            memory,
            nodefs,
            imagefs,
            pids,
        }
    }

    /// Where the runtime keeps its images (CRI `ImageFsInfo`).
    async fn image_fs_mountpoint(&self) -> Option<String> {
        let mut client = self.cri.current();
        let call = client.image.image_fs_info(cri::ImageFsInfoRequest {});
        let response = tokio::time::timeout(CRI_TIMEOUT, call).await.ok()?.ok()?;
        response
            .into_inner()
            .image_filesystems
            .into_iter()
            .find_map(|fs| fs.fs_id.map(|id| id.mountpoint))
            .filter(|m| !m.is_empty())
    }

    /// CRI `ListContainerStats`, by pod UID and container name (the newest
    /// instance of a container wins, running ones over exited ones).
    async fn container_stats(&self) -> BTreeMap<(String, String), ContainerUsage> {
        let mut client = self.cri.current();
        let call = client
            .runtime
            .list_container_stats(cri::ListContainerStatsRequest { filter: None });
        let stats = match tokio::time::timeout(CRI_TIMEOUT, call).await {
            Ok(Ok(response)) => response.into_inner().stats,
            Ok(Err(status)) => {
                tracing::warn!(error = %status.message(), "cannot list container stats");
                return BTreeMap::new();
            }
            Err(_) => {
                tracing::warn!("CRI ListContainerStats did not answer in time");
                return BTreeMap::new();
            }
        };
        let mut out = BTreeMap::new();
        for s in stats {
            let Some(attributes) = s.attributes else {
                continue;
            };
            let label = |key: &str| attributes.labels.get(key).cloned();
            let (Some(uid), Some(name)) = (label(LABEL_POD_UID), label(LABEL_CONTAINER_NAME))
            else {
                continue;
            };
            let usage = ContainerUsage {
                memory_working_set: s.memory.and_then(|m| m.working_set_bytes).map(|v| v.value),
                rootfs_bytes: s.writable_layer.and_then(|w| w.used_bytes).map(|v| v.value),
                logs_bytes: 0,
            };
            let entry: &mut ContainerUsage = out.entry((uid, name)).or_default();
            entry.memory_working_set = entry.memory_working_set.max(usage.memory_working_set);
            entry.rootfs_bytes = entry.rootfs_bytes.max(usage.rootfs_bytes);
        }
        out
    }

    /// The pod's use: its containers' stats, and with `disk` its log
    /// directories and emptyDirs measured on the node.
    fn pod_usage(
        &self,
        pod: &Pod,
        stats: &BTreeMap<(String, String), ContainerUsage>,
        disk: bool,
    ) -> PodUsage {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut usage = PodUsage::default();
        let log_dir = pod_log_dir(&self.pod_logs_dir, pod);
        let spec = pod.spec.as_ref();
        let names = spec.into_iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .map(|c| c.name.clone())
        });
        for name in names {
            let Some(mut container) = stats.get(&(uid.clone(), name.clone())).copied() else {
                continue;
            };
            if disk {
                container.logs_bytes =
                    node_stats::disk_usage(&log_dir.join(&name), MAX_WALK_ENTRIES);
            }
            usage.containers.insert(name, container);
        }
        if disk {
            let volumes_dir = self
                .root_dir
                .join("pods")
                .join(&uid)
                .join("volumes")
                .join(EMPTY_DIR_PLUGIN_DIR);
            for volume in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
                if volume.empty_dir.is_some() {
                    let used =
                        node_stats::disk_usage(&volumes_dir.join(&volume.name), MAX_WALK_ENTRIES);
                    usage.volumes.insert(volume.name.clone(), used);
                }
            }
        }
        usage
    }

    fn node_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node_name.clone()),
            uid: Some(self.node_name.clone()),
            ..Default::default()
        }
    }
}

/// A pod the eviction manager may look at: bound here, running, not being
/// deleted. (The kubelet also ranks admitted pods not started yet, first,
/// having no stats; a pod here waits until it runs.)
fn is_active(pod: &Pod, node: &str) -> bool {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    bound && pod.metadata.deletion_timestamp.is_none() && phase == Some("Running")
}

fn name_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
