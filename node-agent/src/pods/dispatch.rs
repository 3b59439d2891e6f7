//! The pod loop's bookkeeping, after the kubelet's `podWorkers`
//! (`pod_workers.go`: which UIDs have a worker, which finished) and the
//! dispatch of its sync loop (`syncLoopIteration`: which worker a Pod
//! update, a PLEG relist, a probe flip or the resync wakes). Pure: plain
//! events in, [`Order`]s out; [`crate::pods::run`] turns watch events,
//! relists and timers into these calls and carries out the orders.
//!
//! ```text
//!   listed / pod_applied / pod_deleted --+
//!   relisted (CRI) / probe_flipped ------+--> Dispatch --> Poke(uid) | Start { uid, pod }
//!   resync / worker_finished ------------+
//! ```
//!
//! - **Nothing before the first list**: until the watch has listed, which
//!   sandboxes belong to live pods is unknown, so nothing starts or goes.
//! - **One worker per UID**: an event for a UID with a worker pokes it
//!   (pokes coalesce: the worker reads the newest Pod and CRI state when it
//!   syncs); otherwise a worker starts.
//! - **Finished UIDs are remembered** for [`FINISHED_MEMORY`], so a late
//!   watch event about a pod already terminated and deleted starts no second
//!   termination; a relist that still finds the UID in CRI starts a worker anyway.
//! - **Orphans**: a UID that CRI holds and no Pod has gets a worker without
//!   a Pod, which removes what CRI holds.
//! - **A worker that panics** is started again at the next resync, for the
//!   same Pod, so the pod is synced again (the kubelet recovers its pod
//!   workers from a crash; the resync period bounds how fast one that keeps
//!   panicking turns).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;

use crate::pods::container_runtime::Fingerprint;

/// How long a finished worker's UID is remembered (late watch events).
pub const FINISHED_MEMORY: Duration = Duration::from_secs(120);

/// What the loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Wake the worker of this UID.
    Poke(String),
    /// Start a worker for this UID (its first sync comes at once): for the
    /// Pod at `pod`, or, with `None`, for an orphan whose Pod is gone.
    Start {
        uid: String,
        pod: Option<ObjectRef<Pod>>,
    },
}

/// A Pod as the dispatch needs it: its UID, where the store keeps it, and a
/// hash of what its worker acts on (spec, labels, annotations, deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUpdate {
    pub uid: String,
    pub pod: ObjectRef<Pod>,
    pub desired: u64,
}

/// Which UIDs have a worker, which finished, what was last seen.
#[derive(Debug, Default)]
pub struct Dispatch {
    listed: bool,
    workers: BTreeSet<String>,
    /// UIDs whose worker finished (pod terminated and deleted, or orphan
    /// removed), and when.
    finished: HashMap<String, Instant>,
    /// Per UID, the hash of what a sync acts on when last seen: events that
    /// change none of it (most often the worker's own status patch) poke nobody.
    desired: HashMap<String, u64>,
    /// What the last relist saw per UID.
    relisted: BTreeMap<String, Fingerprint>,
    /// Workers that panicked, started again at the next resync.
    panicked: BTreeMap<String, Option<ObjectRef<Pod>>>,
}

// === impl Dispatch ===

impl Dispatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the watch has listed once: before that, nothing starts or goes.
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// Whether a worker runs for this UID.
    pub fn has_worker(&self, uid: &str) -> bool {
        self.workers.contains(uid)
    }

    /// The watch's list is complete. The first time, every pod it returned
    /// is adopted. A later list (the watch restarted after a gap, e.g. its
    /// resource version expired) stands for the events the gap swallowed:
    /// pods that came or changed meanwhile are treated as applied, and the
    /// workers of pods that went meanwhile are poked to find them gone.
    pub fn listed(&mut self, pods: impl IntoIterator<Item = PodUpdate>) -> Vec<Order> {
        if !self.listed {
            self.listed = true;
            return pods
                .into_iter()
                .filter_map(|p| self.poke_or_start(p.uid, Some(p.pod)))
                .collect();
        }
        let mut listed = BTreeSet::new();
        let mut orders = Vec::new();
        for p in pods {
            listed.insert(p.uid.clone());
            orders.extend(self.pod_applied(p));
        }
        orders.extend(
            self.workers
                .iter()
                .filter(|uid| !listed.contains(*uid))
                .map(|uid| Order::Poke(uid.clone())),
        );
        orders
    }

    /// A Pod was added or changed. A change of status alone pokes nobody
    /// (as the kubelet ignores them), nor does news of a finished UID.
    pub fn pod_applied(&mut self, update: PodUpdate) -> Vec<Order> {
        if !self.listed {
            return Vec::new();
        }
        let same = self.desired.insert(update.uid.clone(), update.desired) == Some(update.desired);
        if (same && self.workers.contains(&update.uid)) || self.finished.contains_key(&update.uid) {
            return Vec::new();
        }
        self.poke_or_start(update.uid, Some(update.pod))
            .into_iter()
            .collect()
    }

    /// A Pod is gone from the API: its worker finds it gone and removes what
    /// CRI holds (a worker starts for that if none runs).
    pub fn pod_deleted(&mut self, uid: &str, pod: ObjectRef<Pod>) -> Vec<Order> {
        if !self.listed {
            return Vec::new();
        }
        self.desired.remove(uid);
        if self.finished.contains_key(uid) {
            return Vec::new();
        }
        self.poke_or_start(uid.to_string(), Some(pod))
            .into_iter()
            .collect()
    }

    /// A probe result of this UID flipped.
    pub fn probe_flipped(&self, uid: &str) -> Vec<Order> {
        self.poke(uid).into_iter().collect()
    }

    /// A relist of CRI (the PLEG): pokes the workers whose pod changed in
    /// CRI, and starts one for each UID that CRI holds and no Pod in the
    /// store (`known`) has.
    pub fn relisted(
        &mut self,
        now: BTreeMap<String, Fingerprint>,
        known: &BTreeSet<String>,
    ) -> Vec<Order> {
        if !self.listed {
            return Vec::new();
        }
        let mut orders = Vec::new();
        for (uid, fingerprint) in &now {
            if self.workers.contains(uid) {
                if self.relisted.get(uid) != Some(fingerprint) {
                    orders.push(Order::Poke(uid.clone()));
                }
            } else if !known.contains(uid) {
                self.finished.remove(uid);
                self.workers.insert(uid.clone());
                orders.push(Order::Start {
                    uid: uid.clone(),
                    pod: None,
                });
            }
        }
        self.relisted = now;
        orders
    }

    /// The periodic resync: every worker is poked, old finished UIDs are
    /// forgotten.
    pub fn resync(&mut self, now: Instant) -> Vec<Order> {
        if !self.listed {
            return Vec::new();
        }
        self.finished
            .retain(|_, at| now.saturating_duration_since(*at) < FINISHED_MEMORY);
        let mut orders: Vec<Order> = self.workers.iter().cloned().map(Order::Poke).collect();
        for (uid, pod) in std::mem::take(&mut self.panicked) {
            // A watch or relist event may have started one meanwhile.
            orders.extend(
                self.poke_or_start(uid, pod)
                    .filter(|o| matches!(o, Order::Start { .. })),
            );
        }
        orders
    }

    /// Of the UIDs left on disk (log directories, volume directories), those
    /// that neither a worker nor a Pod in the store (`known`) owns.
    pub fn leftovers(
        &self,
        on_disk: impl IntoIterator<Item = String>,
        known: &BTreeSet<String>,
    ) -> Vec<String> {
        if !self.listed {
            return Vec::new();
        }
        on_disk
            .into_iter()
            .filter(|uid| !self.workers.contains(uid) && !known.contains(uid))
            .collect()
    }

    /// The worker of this UID (for the Pod at `pod`) panicked: it no longer
    /// runs, and starts again at the next [`Dispatch::resync`].
    pub fn worker_panicked(&mut self, uid: &str, pod: Option<ObjectRef<Pod>>) {
        self.workers.remove(uid);
        self.panicked.insert(uid.to_string(), pod);
    }

    /// The worker of this UID ended (its pod is gone and cleaned up).
    pub fn worker_finished(&mut self, uid: &str, now: Instant) {
        self.workers.remove(uid);
        self.finished.insert(uid.to_string(), now);
    }

    fn poke(&self, uid: &str) -> Option<Order> {
        self.workers
            .contains(uid)
            .then(|| Order::Poke(uid.to_string()))
    }

    fn poke_or_start(&mut self, uid: String, pod: Option<ObjectRef<Pod>>) -> Option<Order> {
        if self.workers.contains(&uid) {
            return Some(Order::Poke(uid));
        }
        self.workers.insert(uid.clone());
        Some(Order::Start { uid, pod })
    }
}
