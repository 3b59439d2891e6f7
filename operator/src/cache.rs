//! What the operator keeps of the cluster: trimmed caches of Nodes (metadata only), NodeConfigs,
//! the agents' Leases and the node Leases, and the defaults from the ConfigMap. They run on every replica, so a
//! standby is ready to lead at once; what changes is announced as [`Trigger`]s, which only the
//! leader's controller listens to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::PartialObjectMeta;
use kube::core::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use nodeconfig_crds::NodeConfig;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::defaults::{Defaults, CONFIG_MAP_NAME};
use crate::liveness::{LeaseKey, NODE_LEASE_NAMESPACE};
use crate::metrics::Metrics;

/// The Node as the operator caches it: name, uid and labels.
pub type NodeMeta = PartialObjectMeta<Node>;

/// Something that calls for reconciling Nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// This Node, or its NodeConfig, changed.
    Node(String),
    /// Every Node: the defaults changed, or a cache was listed anew.
    AllNodes,
}

/// The defaults in force, and why the ConfigMap's latest content was refused, if it was.
#[derive(Clone, Debug, Default)]
pub struct DefaultsState {
    pub defaults: Arc<Defaults>,
    pub problem: Option<DefaultsProblem>,
}

/// A refused defaults ConfigMap.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultsProblem {
    pub message: String,
    pub config_map: ObjectReference,
}

/// The caches, shared by the server (readiness, metrics) and the leader's controllers.
pub struct Caches {
    pub nodes: Store<NodeMeta>,
    pub nodeconfigs: Store<NodeConfig>,
    /// Leases in the operator's namespace: the agents' `node-agent-<node>`.
    pub leases: Store<Lease>,
    /// Leases in `kube-node-lease`, renewed by each node's kubelet (node-agent in Kubelet mode).
    pub node_leases: Store<Lease>,
    pub defaults: watch::Receiver<DefaultsState>,
    pub namespace: String,
    triggers: broadcast::Sender<Trigger>,
    synced: Arc<AtomicBool>,
}

impl Caches {
    /// Starts the watches; they run until their tasks are aborted.
    pub fn start(
        client: &Client,
        namespace: &str,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, Vec<JoinHandle<()>>) {
        let (triggers, _) = broadcast::channel(4096);
        let (node_reader, node_writer) = reflector::store();
        let (nc_reader, nc_writer) = reflector::store();
        let (lease_reader, lease_writer) = reflector::store();
        let (node_lease_reader, node_lease_writer) = reflector::store();
        let (defaults_tx, defaults_rx) = watch::channel(DefaultsState::default());
        let (defaults_synced_tx, mut defaults_synced_rx) = watch::channel(false);
        let synced = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();

        // Nodes are big; only their metadata is listed, and of that only name, uid and labels kept.
        let nodes = watcher(
            Api::<NodeMeta>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|node| {
            node.metadata.managed_fields = None;
            node.metadata.annotations = None;
            node.metadata.owner_references = None;
            node.metadata.finalizers = None;
        });
        tasks.push(tokio::spawn(drive(
            "nodes",
            reflector::reflector(node_writer, nodes),
            triggers.clone(),
            |n: &NodeMeta| Some(n.name_any()),
        )));

        let nodeconfigs = watcher(
            Api::<NodeConfig>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|nc| nc.metadata.managed_fields = None);
        tasks.push(tokio::spawn(drive(
            "nodeconfigs",
            reflector::reflector(nc_writer, nodeconfigs),
            triggers.clone(),
            |nc: &NodeConfig| Some(nc.name_any()),
        )));

        // Leases are read when a reconcile runs and at expiry; renewals trigger nothing.
        for (namespace, writer) in [
            (namespace, lease_writer),
            (NODE_LEASE_NAMESPACE, node_lease_writer),
        ] {
            let leases = watcher(
                Api::<Lease>::namespaced(client.clone(), namespace),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(|lease| lease.metadata.managed_fields = None);
            tasks.push(tokio::spawn(drive(
                "leases",
                reflector::reflector(writer, leases),
                triggers.clone(),
                |_: &Lease| None,
            )));
        }

        let config_maps = watcher(
            Api::<ConfigMap>::namespaced(client.clone(), namespace),
            watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP_NAME}")),
        )
        .default_backoff();
        tasks.push(tokio::spawn(watch_defaults(
            config_maps,
            defaults_tx,
            defaults_synced_tx,
            triggers.clone(),
            metrics,
        )));

        let readers = (
            node_reader.clone(),
            nc_reader.clone(),
            lease_reader.clone(),
            node_lease_reader.clone(),
        );
        let synced_flag = synced.clone();
        tasks.push(tokio::spawn(async move {
            let (n, c, l, nl) = readers;
            let defaults_synced =
                async move { defaults_synced_rx.wait_for(|s| *s).await.map(|_| ()) };
            let (n, c, l, nl, d) = tokio::join!(
                n.wait_until_ready(),
                c.wait_until_ready(),
                l.wait_until_ready(),
                nl.wait_until_ready(),
                defaults_synced
            );
            if n.is_ok() && c.is_ok() && l.is_ok() && nl.is_ok() && d.is_ok() {
                info!("caches synced");
                synced_flag.store(true, Ordering::Release);
            }
        }));

        let caches = Self {
            nodes: node_reader,
            nodeconfigs: nc_reader,
            leases: lease_reader,
            node_leases: node_lease_reader,
            defaults: defaults_rx,
            namespace: namespace.to_string(),
            triggers,
            synced,
        };
        (Arc::new(caches), tasks)
    }

    /// Whether every cache has been listed once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Waits until [`Self::is_synced`].
    pub async fn wait_synced(&self) {
        while !self.is_synced() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Triggers from now on; call before reading the caches so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Trigger> {
        self.triggers.subscribe()
    }

    /// Has every Node reconciled again, for a change that concerns them all.
    pub fn trigger_all(&self) {
        // Fails only when no controller listens: nothing to do then.
        let _ = self.triggers.send(Trigger::AllNodes);
    }

    /// A cached Lease of the operator's namespace or of `kube-node-lease`.
    pub fn lease(&self, key: &LeaseKey) -> Option<Arc<Lease>> {
        let store = if key.namespace == NODE_LEASE_NAMESPACE {
            &self.node_leases
        } else {
            &self.leases
        };
        store.get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The defaults in force.
    pub fn current_defaults(&self) -> Arc<Defaults> {
        self.defaults.borrow().defaults.clone()
    }
}

/// Drives one reflector, announcing the Node each changed object stands for.
async fn drive<K: Resource>(
    what: &'static str,
    stream: impl Stream<Item = watcher::Result<Event<K>>>,
    triggers: broadcast::Sender<Trigger>,
    node_of: impl Fn(&K) -> Option<String>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        // Sending fails only when no controller listens (a standby): nothing to do then.
        match event {
            Ok(Event::Apply(obj) | Event::Delete(obj)) => {
                if let Some(node) = node_of(&obj) {
                    let _ = triggers.send(Trigger::Node(node));
                }
            }
            // The store swaps in the new list at InitDone; reconcile everything against it.
            Ok(Event::InitDone) => {
                let _ = triggers.send(Trigger::AllNodes);
            }
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(error) => warn!(%error, cache = what, "watch failed; retrying with backoff"),
        }
    }
}

/// Follows the defaults ConfigMap: a valid change replaces the defaults and reconciles every
/// Node; an invalid one keeps the last good defaults and is reported.
async fn watch_defaults(
    stream: impl Stream<Item = watcher::Result<Event<ConfigMap>>>,
    defaults: watch::Sender<DefaultsState>,
    synced: watch::Sender<bool>,
    triggers: broadcast::Sender<Trigger>,
    metrics: Arc<Metrics>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut seen_in_list = false;
    metrics.defaults_valid.set(1);
    while let Some(event) = stream.next().await {
        let outcome = match event {
            Ok(Event::Init) => {
                seen_in_list = false;
                continue;
            }
            Ok(Event::InitApply(cm)) => {
                seen_in_list = true;
                Some(cm)
            }
            Ok(Event::Apply(cm)) => Some(cm),
            Ok(Event::InitDone) => {
                synced.send_replace(true);
                if seen_in_list {
                    continue;
                }
                None
            }
            Ok(Event::Delete(_)) => None,
            Err(error) => {
                warn!(%error, "watch of the defaults ConfigMap failed; retrying with backoff");
                continue;
            }
        };
        let parsed = match &outcome {
            Some(cm) => Defaults::from_config_map_data(cm.data.as_ref()),
            None => Ok(Defaults::default()),
        };
        match parsed {
            Ok(new) => {
                metrics.defaults_valid.set(1);
                let changed = defaults.send_if_modified(|state| {
                    let changed = *state.defaults != new || state.problem.is_some();
                    if *state.defaults != new {
                        info!(defaults = ?new, "defaults in force");
                    }
                    state.defaults = Arc::new(new);
                    state.problem = None;
                    changed
                });
                if changed {
                    let _ = triggers.send(Trigger::AllNodes);
                }
            }
            Err(error) => {
                metrics.defaults_valid.set(0);
                metrics.defaults_invalid.inc();
                warn!(%error, "refusing the defaults ConfigMap; the last good defaults stay in force");
                if let Some(cm) = outcome {
                    defaults.send_modify(|state| {
                        state.problem = Some(DefaultsProblem {
                            message: error.to_string(),
                            config_map: cm.object_ref(&()),
                        });
                    });
                }
            }
        }
    }
}
