//! The pod loop (Kubelet mode): the kubelet's sync loop. Watches the pods
//! bound to this node (field selector on `spec.nodeName`), runs one
//! [`PodWorker`] per pod UID, and pokes a worker when its Pod changes, when a
//! relist of CRI (every [`RELIST_PERIOD`], the kubelet's PLEG) shows its
//! containers changed, when a probe result flips, or when its requeue time
//! comes. A periodic resync looks at every pod anyway.
//!
//! - **Nothing before the first list**: until the watch has listed, the loop
//!   does not know which sandboxes belong to pods that still exist, so it
//!   neither starts nor removes anything.
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
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::edge::cri_handle::CriHandle;
use crate::pods::backoff::{Backoff, INITIAL_BACKOFF, MAX_BACKOFF};
use crate::pods::container_runtime::Fingerprint;
use crate::pods::cri_config::sandbox::parse_resolv_conf;
use crate::pods::cri_pods::CriPods;
use crate::pods::events::PodEvents;
use crate::pods::probes::manager::ProbeManager;
use crate::pods::volumes::manager::VolumeManager;
use crate::pods::worker::{remove_pod_logs, Next, PodEnv, PodWorker};
use crate::reports::PodsReport;
use crate::serve::health::LoopHeartbeat;

/// How often CRI is relisted to notice containers that changed (PLEG).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// Every pod is synced at least this often.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);
/// The loop beats its heartbeat at least this often.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// How long a finished worker's UID is remembered (late watch events).
const FINISHED_MEMORY: Duration = Duration::from_secs(120);

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
    pub report: watch::Sender<PodsReport>,
    pub heartbeat: LoopHeartbeat,
}

struct WorkerHandle {
    poke: mpsc::Sender<()>,
}

impl PodsLoop {
    pub async fn run(self, cancel: CancellationToken) {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<String>();
        let host_dns =
            parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let events = PodEvents::new(self.client.clone(), &self.node_name);
        let env = Arc::new(PodEnv {
            client: self.client.clone(),
            cri: Arc::new(CriPods::new(self.cri.clone())),
            node_name: self.node_name.clone(),
            node_ip: self.node_ip,
            pod_logs_root: self.pod_logs_dir.clone(),
            host_dns,
            node_milli_cpu: i64::from(self.host.cpus) * 1000,
            node_memory: i64::try_from(self.host.memory_bytes).unwrap_or(i64::MAX),
            node_ephemeral_storage: i64::try_from(self.host.ephemeral_storage_bytes)
                .unwrap_or(i64::MAX),
            volumes: VolumeManager::new(self.client.clone(), self.root_dir.join("pods"))
                .with_node_allocatable(BTreeMap::from([
                    ("cpu".to_string(), Quantity(self.host.cpus.to_string())),
                    (
                        "memory".to_string(),
                        Quantity(self.host.memory_bytes.to_string()),
                    ),
                    (
                        "ephemeral-storage".to_string(),
                        Quantity(self.host.ephemeral_storage_bytes.to_string()),
                    ),
                ])),
            events: events.clone(),
            probes: ProbeManager::new(self.cri.clone(), wake_tx.clone()).with_events(events),
            backoff: Mutex::new(Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)),
            image_backoff: Mutex::new(Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)),
            admitted: Mutex::new(BTreeSet::new()),
            admission: tokio::sync::Mutex::new(()),
            node_cache: Mutex::new(None),
            services_cache: Mutex::new(BTreeMap::new()),
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

        let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
        let mut tasks: JoinSet<String> = JoinSet::new();
        // UIDs whose worker finished (pod terminated and deleted, or orphan
        // removed): late events about them start no second termination.
        let mut finished: HashMap<String, Instant> = HashMap::new();
        let mut fingerprints = BTreeMap::new();
        // Per UID, a hash of what a sync acts on (spec, labels, annotations,
        // deletion): events that change none of it poke nobody.
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut relists = spawn_relist(env.clone(), cancel.clone());
        let mut resync = tokio::time::interval(RESYNC_PERIOD);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut listed = false;
        let mut warned_relist = false;
        let skip = |finished: &HashMap<String, Instant>, pod: &Pod| {
            pod.metadata
                .uid
                .as_ref()
                .is_some_and(|uid| finished.contains_key(uid))
        };

        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                event = events.next() => match event {
                    Some(Ok(watcher::Event::InitDone)) => {
                        if !listed {
                            listed = true;
                            // Adopt every pod the first list returned.
                            for pod in store.state() {
                                self.poke(&env, &store, &mut workers, &mut tasks, &pod);
                            }
                        }
                        self.publish(&store);
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => {
                        if listed {
                            // A change of status only (most often the worker's own
                            // patch) needs no sync, as the kubelet ignores them.
                            let uid = pod.metadata.uid.clone().unwrap_or_default();
                            let fp = desired_fingerprint(&pod);
                            let same = seen.insert(uid.clone(), fp) == Some(fp);
                            let unchanged = same && workers.contains_key(&uid);
                            if !skip(&finished, &pod) && !unchanged {
                                self.poke(&env, &store, &mut workers, &mut tasks, &pod);
                            }
                            self.publish(&store);
                        }
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        if listed {
                            if let Some(uid) = &pod.metadata.uid {
                                seen.remove(uid);
                            }
                            if !skip(&finished, &pod) {
                                self.poke(&env, &store, &mut workers, &mut tasks, &pod);
                            }
                            self.publish(&store);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(error = %err, "pod watch failed; retrying"),
                    None => break,
                },
                Some(uid) = wake_rx.recv() => {
                    if let Some(w) = workers.get(&uid) {
                        let _ = w.poke.try_send(());
                    }
                }
                Some(relisted) = relists.recv() => {
                    if !listed {
                        continue;
                    }
                    match relisted {
                        Ok(now) => {
                            warned_relist = false;
                            let known = uids(&store);
                            for (uid, fp) in &now {
                                let changed = fingerprints.get(uid) != Some(fp);
                                match workers.get(uid) {
                                    Some(w) if changed => { let _ = w.poke.try_send(()); }
                                    Some(_) => {}
                                    // CRI holds it, no Pod has that UID: an orphan.
                                    None if !known.contains(uid.as_str()) => {
                                        finished.remove(uid);
                                        self.spawn(&env, &store, &mut workers, &mut tasks, uid.clone(), None);
                                    }
                                    None => {}
                                }
                            }
                            fingerprints = now;
                        }
                        Err(err) => {
                            if !warned_relist {
                                tracing::warn!(error = %err, "cannot relist the runtime's pods");
                                warned_relist = true;
                            }
                        }
                    }
                }
                _ = resync.tick(), if listed => {
                    for w in workers.values() {
                        let _ = w.poke.try_send(());
                    }
                    finished.retain(|_, at| at.elapsed() < FINISHED_MEMORY);
                    let known = uids(&store);
                    for uid in pod_log_uids(&env.pod_logs_root) {
                        if !workers.contains_key(&uid) && !known.contains(uid.as_str()) {
                            remove_pod_logs(&env.pod_logs_root, &uid);
                        }
                    }
                    for uid in env.volumes.known_pod_dirs() {
                        if !workers.contains_key(&uid) && !known.contains(uid.as_str()) {
                            if let Err(err) = env.volumes.teardown(&uid).await {
                                tracing::warn!(%uid, error = %err, "cannot remove an orphaned pod's volumes");
                            }
                        }
                    }
                    self.publish(&store);
                }
                Some(done) = tasks.join_next() => {
                    if let Ok(uid) = done {
                        workers.remove(&uid);
                        finished.insert(uid, Instant::now());
                    }
                }
                _ = beat.tick() => self.heartbeat.beat(),
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

    /// Pokes the worker of `pod`'s UID, starting it if needed.
    fn poke(
        &self,
        env: &Arc<PodEnv>,
        store: &Store<Pod>,
        workers: &mut HashMap<String, WorkerHandle>,
        tasks: &mut JoinSet<String>,
        pod: &Pod,
    ) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        match workers.get(&uid) {
            Some(w) => {
                let _ = w.poke.try_send(());
            }
            None => self.spawn(
                env,
                store,
                workers,
                tasks,
                uid,
                Some(ObjectRef::from_obj(pod)),
            ),
        }
    }

    fn spawn(
        &self,
        env: &Arc<PodEnv>,
        store: &Store<Pod>,
        workers: &mut HashMap<String, WorkerHandle>,
        tasks: &mut JoinSet<String>,
        uid: String,
        key: Option<ObjectRef<Pod>>,
    ) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _ = tx.try_send(());
        workers.insert(uid.clone(), WorkerHandle { poke: tx });
        let env = env.clone();
        let store = store.clone();
        let node = self.node_name.clone();
        tasks.spawn(async move {
            let mut worker = PodWorker::new(env, uid.clone());
            let mut requeue: Option<Duration> = None;
            loop {
                match requeue {
                    Some(after) => {
                        tokio::select! {
                            poked = rx.recv() => if poked.is_none() { break },
                            () = tokio::time::sleep(after) => {}
                        }
                    }
                    None => {
                        if rx.recv().await.is_none() {
                            break;
                        }
                    }
                }
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
                match worker.sync(pod, &on_node).await {
                    Next::Done => break,
                    Next::Requeue(after) => requeue = after,
                }
            }
            uid
        });
    }
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
