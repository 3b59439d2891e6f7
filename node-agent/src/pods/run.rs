//! The pod loop (Kubelet mode): the kubelet's sync loop. Watches the pods
//! bound to this node (field selector on `spec.nodeName`), relists CRI every
//! [`RELIST_PERIOD`] (the kubelet's PLEG), hears probe flips and ticks a
//! resync every [`RESYNC_PERIOD`]. Each of these becomes an event of the
//! [`Dispatch`] (which workers run, which finished, whom an event wakes;
//! nothing starts or goes before the first list), and this loop carries out
//! its orders: poke a worker, or start one. One [`PodWorker`] per pod UID,
//! in a tracing span that names its pod and UID.
//!
//! - **After a restart** every sandbox the agent's labels mark is matched to
//!   its Pod by UID: running pods are adopted (the planner finds them
//!   complete), pods deleted meanwhile are finalised or, when the API no
//!   longer has them, their sandboxes removed.
//! - **Runtime down**: syncs fail and retry; `RuntimeReady` says why (the
//!   runtime loop); when it comes back the planner finds what still runs, so
//!   nothing is created twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::edge::cri_handle::CriHandle;
use crate::eviction::orders::EvictionOrders;
use crate::eviction::run::EvictionLoop;
use crate::images::reclaim::ImageReclaimer;
use crate::locked::Locked;
use crate::pods::backoff::{Backoff, INITIAL_BACKOFF, MAX_BACKOFF};
use crate::pods::container_runtime::Fingerprint;
use crate::pods::cri_config::dns::parse_resolv_conf;
use crate::pods::cri_pods::CriPods;
use crate::pods::dispatch::{Dispatch, Order, PodUpdate};
use crate::pods::events::PodEvents;
use crate::pods::probes::manager::ProbeManager;
use crate::pods::volumes::manager::VolumeManager;
use crate::pods::worker::{remove_pod_logs, PodEnv, PodWorker};
use crate::reports::{ConfigReport, PodsReport, PressureReport};
use crate::serve::health::LoopHeartbeat;
use crate::serve::metrics::Metrics;

/// How often CRI is relisted to notice containers that changed (PLEG).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// Every pod is synced at least this often.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);
/// The loop beats its heartbeat at least this often.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The pod UIDs of the log directories (`<namespace>_<name>_<uid>`).
fn pod_log_uids(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.rsplit_once('_').map(|(_, uid)| uid.to_string())
        })
        .filter(|uid| !uid.is_empty())
        .collect()
}

/// A hash of what the pod's worker acts on: its spec, labels, annotations
/// and deletion; not its status.
fn desired_fingerprint(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let m = &pod.metadata;
    let relevant = serde_json::json!([
        pod.spec,
        m.labels,
        m.annotations,
        m.deletion_timestamp,
        m.deletion_grace_period_seconds,
        m.generation,
    ]);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    relevant.to_string().hash(&mut h);
    h.finish()
}

/// The UIDs of the pods in the store.
fn uids(store: &Store<Pod>) -> BTreeSet<String> {
    store
        .state()
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect()
}

/// Relists CRI every [`RELIST_PERIOD`] on a task of its own, so a slow
/// runtime (a burst of sandboxes being made) never holds up the loop's
/// handling of Pod events.
fn spawn_relist(
    env: Arc<PodEnv>,
    cancel: CancellationToken,
) -> mpsc::Receiver<Result<BTreeMap<String, Fingerprint>, crate::edge::cri::CriError>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELIST_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = env.cri.relist().await;
            if tx.send(result).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The pod loop's inputs.
pub struct PodsLoop {
    pub client: Client,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub cri: CriHandle,
    /// Pod volumes live under `<root_dir>/pods/<uid>`.
    pub root_dir: PathBuf,
    /// Container logs: `<pod_logs_dir>/<namespace>_<name>_<uid>/<container>/<n>.log`.
    pub pod_logs_dir: PathBuf,
    pub host: crate::edge::host::HostFacts,
    /// The kubelet's `--allowed-unsafe-sysctls`.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The NodeConfig in force (cluster DNS for new sandboxes).
    pub config: watch::Receiver<ConfigReport>,
    pub report: watch::Sender<PodsReport>,
    /// Where the eviction loop, run beside the pods, publishes the node's
    /// pressure (`None`: no eviction).
    pub pressure: Option<watch::Sender<PressureReport>>,
    /// Removes unused images when the eviction loop reclaims disk.
    pub images: ImageReclaimer,
    /// Counts pod workers that panicked.
    pub metrics: Metrics,
    pub heartbeat: LoopHeartbeat,
}

struct WorkerHandle {
    poke: mpsc::Sender<()>,
}

impl PodsLoop {
    pub async fn run(mut self, cancel: CancellationToken) {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<String>();
        let host_dns =
            parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let events = PodEvents::new(self.client.clone(), &self.node_name);
        // Unset limits read as the node's allocatable, as its Node reports it.
        let allocatable = crate::node::build::Allocatable::of(&self.host);
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let env = Arc::new(PodEnv {
            client: self.client.clone(),
            cri: Arc::new(CriPods::new(self.cri.clone())),
            node_name: self.node_name.clone(),
            node_ip: self.node_ip,
            pod_logs_root: self.pod_logs_dir.clone(),
            host_dns,
            config: self.config.clone(),
            node_milli_cpu: bytes(allocatable.milli_cpu),
            node_memory: bytes(allocatable.memory_bytes),
            node_ephemeral_storage: bytes(allocatable.ephemeral_storage_bytes),
            node_memory_capacity: bytes(self.host.memory_bytes),
            volumes: VolumeManager::new(self.client.clone(), self.root_dir.join("pods"))
                .with_node_name(&self.node_name)
                .with_node_allocatable(BTreeMap::from([
                    ("cpu".to_string(), Quantity(self.host.cpus.to_string())),
                    (
                        "memory".to_string(),
                        Quantity(allocatable.memory_bytes.to_string()),
                    ),
                    (
                        "ephemeral-storage".to_string(),
                        Quantity(allocatable.ephemeral_storage_bytes.to_string()),
                    ),
                ])),
            events: events.clone(),
            probes: ProbeManager::new(self.cri.clone(), wake_tx.clone()).with_events(events),
            backoff: Mutex::new(Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)),
            image_backoff: Mutex::new(Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)),
            allowed_unsafe_sysctls: self.allowed_unsafe_sysctls.clone(),
            apparmor_enabled: self.host.apparmor_enabled,
            admitted: Mutex::new(BTreeSet::new()),
            admission: tokio::sync::Mutex::new(()),
            node_cache: Mutex::new(None),
            services_cache: Mutex::new(BTreeMap::new()),
            allocations: Default::default(),
            evictions: EvictionOrders::default(),
            pressure: match &self.pressure {
                Some(sender) => sender.subscribe(),
                None => watch::channel(PressureReport::default()).1,
            },
        });

        let api = Api::<Pod>::all(self.client.clone());
        let config = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.node_name))
            .any_semantic();
        let (store, writer) = reflector::store();
        let mut events = Box::pin(
            watcher(api, config)
                .default_backoff()
                .modify(|pod: &mut Pod| {
                    pod.managed_fields_mut().clear();
                })
                .reflect(writer),
        );

        if let Some(report) = self.pressure.take() {
            let eviction = EvictionLoop {
                cri: self.cri.clone(),
                pods: store.clone(),
                orders: env.evictions.clone(),
                wake: wake_tx.clone(),
                config: self.config.clone(),
                root_dir: self.root_dir.clone(),
                pod_logs_dir: self.pod_logs_dir.clone(),
                events: env.events.clone(),
                node_name: self.node_name.clone(),
                report,
                images: self.images.clone(),
            };
            tokio::spawn(
                eviction
                    .run(cancel.clone())
                    .instrument(tracing::info_span!("loop", name = "eviction")),
            );
        }

        let mut dispatch = Dispatch::new();
        let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
        let mut tasks: JoinSet<String> = JoinSet::new();
        // Which pod each worker task runs for, to start it again if it panics.
        let mut task_pods: HashMap<tokio::task::Id, (String, Option<ObjectRef<Pod>>)> =
            HashMap::new();
        let mut relists = spawn_relist(env.clone(), cancel.clone());
        let mut resync = tokio::time::interval(RESYNC_PERIOD);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut warned_relist = false;

        loop {
            let orders = tokio::select! {
                () = cancel.cancelled() => break,
                event = events.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => {
                        let pods = store.state();
                        let orders = dispatch.listed(pods.iter().filter_map(|p| pod_update(p)));
                        self.publish(&store);
                        orders
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => {
                        let orders = pod_update(&pod)
                            .map_or_else(Vec::new, |u| dispatch.pod_applied(u));
                        if dispatch.is_listed() {
                            self.publish(&store);
                        }
                        orders
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        let orders = match &pod.metadata.uid {
                            Some(uid) => dispatch.pod_deleted(uid, ObjectRef::from_obj(&pod)),
                            None => Vec::new(),
                        };
                        if dispatch.is_listed() {
                            self.publish(&store);
                        }
                        orders
                    }
                    Some(Ok(_)) => Vec::new(),
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "pod watch failed; retrying");
                        Vec::new()
                    }
                    None => break,
                },
                Some(uid) = wake_rx.recv() => dispatch.probe_flipped(&uid),
                Some(relisted) = relists.recv() => match relisted {
                    Ok(now) => {
                        warned_relist = false;
                        dispatch.relisted(now, &uids(&store))
                    }
                    Err(err) => {
                        if dispatch.is_listed() && !warned_relist {
                            tracing::warn!(error = %err, "cannot relist the runtime's pods");
                            warned_relist = true;
                        }
                        Vec::new()
                    }
                },
                _ = resync.tick(), if dispatch.is_listed() => {
                    let orders = dispatch.resync(Instant::now());
                    // Back-off entries old enough to start over anyway go
                    // (a pod's own go when its worker ends).
                    let now = SystemTime::now();
                    env.backoff.locked().gc(now);
                    env.image_backoff.locked().gc(now);
                    let known = uids(&store);
                    for uid in dispatch.leftovers(pod_log_uids(&env.pod_logs_root), &known) {
                        remove_pod_logs(&env.pod_logs_root, &uid);
                    }
                    for uid in dispatch.leftovers(env.volumes.known_pod_dirs(), &known) {
                        if let Err(err) = env.volumes.teardown(&uid).await {
                            tracing::warn!(
                                %uid, error = %err, "cannot remove an orphaned pod's volumes"
                            );
                        }
                    }
                    self.publish(&store);
                    orders
                }
                Some(done) = tasks.join_next_with_id() => {
                    match done {
                        Ok((id, uid)) => {
                            task_pods.remove(&id);
                            workers.remove(&uid);
                            dispatch.worker_finished(&uid, Instant::now());
                        }
                        Err(err) if err.is_panic() => {
                            if let Some((uid, pod)) = task_pods.remove(&err.id()) {
                                tracing::error!(
                                    %uid, error = %err,
                                    "the pod's worker panicked; it starts again at the next resync"
                                );
                                self.metrics.pod_worker_panic();
                                workers.remove(&uid);
                                dispatch.worker_panicked(&uid, pod);
                            }
                        }
                        // Cancelled: only at shutdown (abort_all).
                        Err(err) => {
                            task_pods.remove(&err.id());
                        }
                    }
                    Vec::new()
                }
                _ = beat.tick() => {
                    self.heartbeat.beat();
                    Vec::new()
                }
            };
            for order in orders {
                match order {
                    Order::Poke(uid) => {
                        if let Some(w) = workers.get(&uid) {
                            // Full: a poke is pending already, and the sync
                            // it makes reads the newest Pod and CRI state.
                            let _ = w.poke.try_send(());
                        }
                    }
                    Order::Start { uid, pod } => {
                        let (handle, id) =
                            self.spawn(&env, &store, &mut tasks, uid.clone(), pod.clone());
                        task_pods.insert(id, (uid.clone(), pod));
                        workers.insert(uid, handle);
                    }
                }
            }
        }
        tasks.abort_all();
    }

    fn publish(&self, store: &Store<Pod>) {
        let new = PodsReport::from_pods(store.state().iter().map(|p| p.as_ref()));
        self.report.send_if_modified(|r| {
            let changed = *r != new;
            *r = new;
            changed
        });
    }

    /// Starts the worker of `uid`, for the Pod at `key` (`None`: an orphan),
    /// in a span that names its pod; its first sync comes at once.
    fn spawn(
        &self,
        env: &Arc<PodEnv>,
        store: &Store<Pod>,
        tasks: &mut JoinSet<String>,
        uid: String,
        key: Option<ObjectRef<Pod>>,
    ) -> (WorkerHandle, tokio::task::Id) {
        let (tx, rx) = mpsc::channel::<()>(1);
        let _ = tx.try_send(());
        let span = tracing::info_span!("pod", pod = tracing::field::Empty, %uid);
        if let Some(k) = &key {
            let namespace = k.namespace.as_deref().unwrap_or_default();
            span.record("pod", format!("{namespace}/{}", k.name));
        }
        let worker = PodWorker::new(env.clone(), uid.clone());
        let store = store.clone();
        let node = self.node_name.clone();
        let lookup = move || {
            let pod = key
                .as_ref()
                .and_then(|k| store.get(k))
                .filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
            let on_node: Vec<Arc<Pod>> = store
                .state()
                .into_iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                })
                .collect();
            (pod, on_node)
        };
        let done = worker.uid().to_string();
        let task = tasks.spawn(
            async move {
                worker.run(rx, lookup).await;
                done
            }
            .instrument(span),
        );
        (WorkerHandle { poke: tx }, task.id())
    }
}

/// What the dispatch needs of a Pod event.
fn pod_update(pod: &Pod) -> Option<PodUpdate> {
    Some(PodUpdate {
        uid: pod.metadata.uid.clone()?,
        pod: ObjectRef::from_obj(pod),
        desired: desired_fingerprint(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": "p", "uid": "u", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in e {
                o.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_status_change_alone_does_not_change_what_a_sync_acts_on() {
        let base = desired_fingerprint(&pod(serde_json::json!({})));
        let status_only =
            pod(serde_json::json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}}));
        assert_eq!(desired_fingerprint(&status_only), base);
        let relabelled = pod(
            serde_json::json!({"metadata": {"name": "p", "uid": "u", "labels": {"app": "db"}}}),
        );
        assert_ne!(desired_fingerprint(&relabelled), base);
        let deleting = pod(
            serde_json::json!({"metadata": {"name": "p", "uid": "u", "labels": {"app": "web"},
            "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}}),
        );
        assert_ne!(desired_fingerprint(&deleting), base);
    }
}
