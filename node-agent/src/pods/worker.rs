//! One pod's worker, the imperative shell around [`compute_pod_actions`]:
//! reads what CRI holds for the pod, runs the planner's actions (volumes,
//! sandbox, images, containers), feeds the prober, patches the Pod status,
//! and on deletion stops everything within the grace period and finalises
//! the Pod as the kubelet does. The pod loop runs one per pod UID and pokes
//! it on every change.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, PodStatus, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};

use crate::eviction::admit::admit_under_pressure;
use crate::eviction::orders::{evicted_status, EvictionOrder, EvictionOrders};
use crate::eviction::rank;
use crate::locked::Locked;
use crate::pods::active_deadline;
use crate::pods::admit::{admit, Admission};
use crate::pods::api_status::{api_status, rejected_status, status_differs, StatusInputs, Waiting};
use crate::pods::apparmor::admit_apparmor;
use crate::pods::backoff::{Backoff, BackoffKey};
use crate::pods::container_runtime::{ContainerRuntime, ImageError, PodRuntime, PullPolicy};
use crate::pods::cri_config::container::{
    container_config, needs_image_user, ContainerContext, ImageUser,
};
use crate::pods::cri_config::dns::{pod_dns, ClusterDns};
use crate::pods::cri_config::env::{
    container_env, referenced_config_maps, referenced_secrets, service_env,
};
use crate::pods::cri_config::env::{EnvSources, PodFacts};
use crate::pods::cri_config::hostname::pod_hostname;
use crate::pods::cri_config::sandbox::{is_host_network, sandbox_config, SandboxContext};
use crate::pods::ephemeral;
use crate::pods::etc_hosts;
use crate::pods::events::PodEvents;
use crate::pods::hooks::handler::{failure_message, MINIMUM_GRACE_SECONDS};
use crate::pods::hooks::{hook_action, run_hook, stop_grace, HookKind, HookTarget};
use crate::pods::plan::{
    compute_pod_actions, container_spec_hash, is_sidecar, ContainerStart, PidTarget, PodActions,
    ProbeFailures, StartReason,
};
use crate::pods::pod_files;
use crate::pods::probes::manager::{ProbeManager, RunningContainer};
use crate::pods::resize::{self, add_restarts, allocated_pod, plan_resize, Requests};
use crate::pods::resize_sync::{self, Allocations, ResizeSync};
use crate::pods::runtime_view::{ContainerState, SandboxState};
use crate::pods::sysctls::admit_sysctls;
use crate::pods::volumes::manager::prepare_mounts;
use crate::pods::volumes::manager::VolumeManager;
use crate::reports::{ConfigReport, PressureReport};

/// How long an orphaned pod's containers get to stop (the Pod is gone, so
/// its own grace period is unknown).
const ORPHAN_GRACE_SECONDS: i64 = 2;
/// Default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Retry after a failed step (volume, sandbox, API).
const RETRY: Duration = Duration::from_secs(2);
/// Volumes (ConfigMaps, Secrets, tokens) are refreshed at least this often.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);
/// Exited instances kept per container (the newest is `--previous`).
const KEEP_EXITED: usize = 1;
/// The waiting reason after a failed postStart hook (the kubelet's `ErrPostStartHook`).
const POST_START_HOOK_ERROR: &str = "PostStartHookError";
/// The Killing event's note when a postStart hook failed.
const POST_START_HOOK_KILL: &str = "FailedPostStartHook";

/// What every worker shares.
pub struct PodEnv {
    pub client: Client,
    pub cri: Arc<dyn ContainerRuntime>,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub pod_logs_root: PathBuf,
    pub host_dns: cri::DnsConfig,
    /// The NodeConfig in force: its `pods.clusterDNS` and `clusterDomain` make
    /// the resolver of every sandbox created from now on.
    pub config: watch::Receiver<ConfigReport>,
    /// The node's allocatable CPU (milli), memory and ephemeral storage
    /// (bytes), as its Node reports them: the downward API's default limits.
    pub node_milli_cpu: i64,
    pub node_memory: i64,
    pub node_ephemeral_storage: i64,
    /// The machine's memory (bytes): the OOM score of burstable containers.
    pub node_memory_capacity: i64,
    pub volumes: VolumeManager,
    pub events: PodEvents,
    pub probes: ProbeManager,
    pub backoff: Mutex<Backoff>,
    pub image_backoff: Mutex<Backoff>,
    /// The kubelet's `--allowed-unsafe-sysctls`.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The host enforces AppArmor profiles.
    pub apparmor_enabled: bool,
    /// UIDs the node admitted; admission of a new pod counts them.
    pub admitted: Mutex<BTreeSet<String>>,
    /// Serialises admissions so two new pods never both take the last slot.
    pub admission: tokio::sync::Mutex<()>,
    /// The Node as last read for admission, and when.
    pub node_cache: Mutex<Option<(std::time::Instant, Arc<Node>)>>,
    /// Services per namespace as last listed for service variables, and when.
    pub services_cache: Mutex<BTreeMap<String, ServicesSnapshot>>,
    /// What each pod was allocated and its containers given (in-place resize).
    pub allocations: Allocations,
    /// Pods the eviction loop ordered evicted.
    pub evictions: EvictionOrders,
    /// The node's pressure as the eviction loop publishes it (admission).
    pub pressure: watch::Receiver<PressureReport>,
}

/// One namespace's Services and when they were listed.
pub type ServicesSnapshot = (std::time::Instant, Arc<Vec<Service>>);

/// How long a namespace's Services list is reused for service variables.
const SERVICES_CACHE_TTL: Duration = Duration::from_secs(2);

/// How long a Node read for admission is reused (a burst of new pods reads it once).
const NODE_CACHE_TTL: Duration = Duration::from_secs(5);

impl PodEnv {
    /// Runs `f` with the cluster DNS settings of the NodeConfig in force
    /// (none until one is applied).
    fn with_cluster_dns<R>(&self, f: impl FnOnce(ClusterDns<'_>) -> R) -> R {
        let config = self.config.borrow();
        match config.applied.as_ref().map(|applied| &applied.pods) {
            Some(pods) => f(ClusterDns {
                servers: &pods.cluster_dns,
                domain: &pods.cluster_domain,
            }),
            None => f(ClusterDns::NONE),
        }
    }

    async fn node_for_admission(&self) -> Result<Arc<Node>, kube::Error> {
        if let Some((at, node)) = self.node_cache.locked().as_ref() {
            if at.elapsed() < NODE_CACHE_TTL {
                return Ok(node.clone());
            }
        }
        let node = Arc::new(
            Api::<Node>::all(self.client.clone())
                .get(&self.node_name)
                .await?,
        );
        *self.node_cache.locked() = Some((std::time::Instant::now(), node.clone()));
        Ok(node)
    }
}

/// What a sync decided about the worker's future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep going; look again after this long at the latest.
    Requeue(Option<Duration>),
    /// The pod is gone and cleaned up: the worker ends.
    Done,
}

/// One pod's worker state.
pub struct PodWorker {
    env: Arc<PodEnv>,
    uid: String,
    waiting: BTreeMap<String, Waiting>,
    last_written: Option<PodStatus>,
    volumes_at: Option<std::time::Instant>,
    volume_paths: BTreeMap<String, PathBuf>,
    /// When each image's last pull failed (ImagePullBackOff).
    pull_failures: BTreeMap<String, SystemTime>,
    /// The listing admission made, for the first sync.
    prefetched: Option<PodRuntime>,
    /// Containers whose preStop hook has run (or runs): once per instance.
    pre_stopped: BTreeSet<String>,
}

impl PodWorker {
    /// How long until `image` may be pulled again, if it is backing off.
    fn image_retry_after(&self, image: &str) -> Option<Duration> {
        let failed_at = self.pull_failures.get(image)?;
        let key = BackoffKey::new(&self.uid, format!("image:{image}"));
        self.env
            .image_backoff
            .locked()
            .remaining(&key, *failed_at, SystemTime::now())
    }

    pub fn new(env: Arc<PodEnv>, uid: String) -> Self {
        Self {
            env,
            uid,
            waiting: BTreeMap::new(),
            last_written: None,
            volumes_at: None,
            volume_paths: BTreeMap::new(),
            pull_failures: BTreeMap::new(),
            prefetched: None,
            pre_stopped: BTreeSet::new(),
        }
    }

    /// The UID of the worker's pod.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The worker's loop (the kubelet's `podWorkerLoop`): a sync on every
    /// poke and when the requeue time of the last sync comes, until a sync
    /// finds the pod gone and cleaned up. Pokes that come during a sync make
    /// one more sync after it (the channel holds one), so no change is lost
    /// and a burst of them costs one sync. `pods` reads the worker's Pod (if
    /// the API still has it) and the pods on the node from the watch's store.
    pub async fn run(
        mut self,
        mut pokes: mpsc::Receiver<()>,
        pods: impl Fn() -> (Option<Arc<Pod>>, Vec<Arc<Pod>>),
    ) {
        let mut requeue: Option<Duration> = None;
        loop {
            match requeue {
                Some(after) => {
                    tokio::select! {
                        poked = pokes.recv() => if poked.is_none() { break },
                        () = tokio::time::sleep(after) => {}
                    }
                }
                None => {
                    if pokes.recv().await.is_none() {
                        break;
                    }
                }
            }
            let (pod, on_node) = pods();
            match self.sync(pod, &on_node).await {
                Next::Done => break,
                Next::Requeue(after) => requeue = after,
            }
        }
    }

    /// One sync of the pod (`None`: it is gone from the API).
    pub async fn sync(&mut self, pod: Option<Arc<Pod>>, pods_on_node: &[Arc<Pod>]) -> Next {
        let Some(pod) = pod else {
            self.env.evictions.done(&self.uid);
            return self.clean_up_orphan().await;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.env.evictions.done(&self.uid);
            return self.terminate(&pod).await;
        }
        if is_terminal(&pod) {
            self.env.evictions.done(&self.uid);
            // Finished (or rejected): nothing may run again.
            self.stop_everything(&pod, grace_seconds(&pod)).await;
            self.env.probes.remove_pod(&self.uid);
            return Next::Requeue(None);
        }
        if let Some(order) = self.env.evictions.get(&self.uid) {
            return self.evict(&pod, &order).await;
        }
        if !self.admitted(&pod, pods_on_node).await {
            return Next::Requeue(None);
        }
        if active_deadline::exceeded(&pod, Timestamp::now()) {
            return self.fail_past_deadline(&pod).await;
        }
        match self.sync_running(&pod, pods_on_node).await {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(error = %err, "pod sync failed; retrying");
                Next::Requeue(Some(RETRY))
            }
        }
    }

    async fn admitted(&mut self, pod: &Pod, pods_on_node: &[Arc<Pod>]) -> bool {
        if self.env.admitted.locked().contains(&self.uid) {
            return true;
        }
        // A pod CRI already runs was admitted before a restart.
        if let Ok(rt) = self.env.cri.pod(&self.uid).await {
            if !rt.view.is_empty() {
                self.env.admitted.locked().insert(self.uid.clone());
                return true;
            }
            // Nothing there, and only this worker creates anything for the
            // pod: the first sync can start from this listing.
            self.prefetched = Some(rt);
        }
        let _one_at_a_time = self.env.admission.lock().await;
        let node = match self.env.node_for_admission().await {
            Ok(node) => node,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the Node for admission; retrying");
                return false;
            }
        };
        let others: Vec<Pod> = {
            let admitted = self.env.admitted.locked();
            pods_on_node
                .iter()
                .filter(|p| {
                    p.metadata
                        .uid
                        .as_ref()
                        .is_some_and(|u| admitted.contains(u))
                })
                .map(|p| (**p).clone())
                .collect()
        };
        // The kubelet's admit handlers in its order.
        let pressure = self.env.pressure.borrow().clone();
        let admission = admit_under_pressure(pod, &pressure)
            .and_then(|| admit_sysctls(pod, &self.env.allowed_unsafe_sysctls))
            .and_then(|| admit(pod, &node, &others))
            .and_then(|| admit_apparmor(pod, self.env.apparmor_enabled));
        match admission {
            Admission::Admit => {
                self.env.admitted.locked().insert(self.uid.clone());
                true
            }
            Admission::Reject { reason, message } => {
                tracing::info!(reason, message, "pod rejected");
                self.env.events.warning(pod, None, reason, message.clone());
                let status = rejected_status(pod, reason, &message, Timestamp::now());
                if let Err(err) = self.patch_status(pod, &status).await {
                    tracing::warn!(error = %err, "cannot write the rejection");
                }
                false
            }
        }
    }

    async fn sync_running(
        &mut self,
        pod: &Pod,
        pods_on_node: &[Arc<Pod>],
    ) -> Result<Next, SyncError> {
        let env = self.env.clone();
        let mut rt = match self.prefetched.take() {
            Some(rt) => rt,
            None => env.cri.pod(&self.uid).await?,
        };
        let uid = self.uid.clone();
        let resize = resize_sync_of(&env, &uid);
        let (mut allocation, pending) = {
            let admitted = env.admitted.locked().clone();
            let others: Vec<Arc<Pod>> = pods_on_node
                .iter()
                .filter(|p| {
                    p.metadata
                        .uid
                        .as_ref()
                        .is_some_and(|u| admitted.contains(u))
                })
                .cloned()
                .collect();
            resize.begin(pod, &rt.view, &others)
        };
        // The planner and the containers it starts see the allocated
        // resources, not a resize that waits.
        let allocated = allocated_pod(pod, &allocation).into_owned();
        let results = env.probes.results(&self.uid);
        let probes = ProbeFailures {
            not_started: results.not_started.clone(),
            ..results.failures.clone()
        };
        let mut actions = {
            let backoff = env.backoff.locked();
            compute_pod_actions(&allocated, &rt.view, &probes, &backoff, SystemTime::now())
        };
        add_restarts(
            &mut actions,
            &plan_resize(&allocated, &allocation, &rt.view).restarts,
        );
        // Wake when the active deadline comes, if nothing else does first.
        let mut requeue = min_opt(
            actions.requeue_after(),
            active_deadline::remaining(pod, Timestamp::now()),
        );
        self.note_backoffs(pod, &actions);

        if !actions.is_noop() {
            if let Some(r) = self.run_actions(&allocated, &rt, &actions).await? {
                requeue = min_opt(requeue, Some(r));
            }
            rt = env.cri.pod(&self.uid).await?;
        } else if self
            .volumes_at
            .is_none_or(|at| at.elapsed() >= VOLUME_REFRESH)
        {
            // Keep ConfigMap, Secret and token volumes of running pods fresh.
            if let Err(err) = self.setup_volumes(pod).await {
                tracing::warn!(error = %err, "volume refresh failed");
            }
        }

        self.pre_stopped
            .retain(|id| rt.view.containers.iter().any(|c| c.id == *id));
        let running: Vec<RunningContainer> = rt
            .view
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .filter(|c| {
                rt.view
                    .sandboxes
                    .first()
                    .is_some_and(|s| s.id == c.sandbox_id)
            })
            .map(|c| RunningContainer {
                name: c.name.clone(),
                id: c.id.clone(),
                started_at: c.started_at.unwrap_or(c.created_at),
            })
            .collect();
        let pod_ip = if is_host_network(pod) {
            env.node_ip
        } else {
            rt.ips.first().and_then(|ip| ip.parse().ok())
        };
        env.probes.update_pod(pod, &running, pod_ip);
        let results = env.probes.results(&self.uid);

        let in_progress = resize.actuate(pod, &mut allocation, &rt.view).await;
        let resized = (
            &allocated,
            &allocation,
            resize_sync::conditions(pending, in_progress),
        );
        self.write_status(pod, &rt, &results.ready, &results.not_started, resized)
            .await?;
        self.collect_garbage(&rt).await;
        Ok(Next::Requeue(requeue))
    }

    /// `activeDeadlineSeconds` passed: kill the containers within the grace
    /// period and fail the pod with the kubelet's reason. Once the API has the
    /// `Failed` phase, the terminal path keeps everything stopped.
    async fn fail_past_deadline(&mut self, pod: &Pod) -> Next {
        tracing::info!("pod active longer than its activeDeadlineSeconds; failing it");
        let env = self.env.clone();
        env.events.normal(
            pod,
            None,
            active_deadline::REASON,
            active_deadline::MESSAGE.into(),
        );
        env.probes.remove_pod(&self.uid);
        self.stop_everything(pod, grace_seconds(pod)).await;
        let Ok(rt) = env.cri.pod(&self.uid).await else {
            return Next::Requeue(Some(RETRY));
        };
        let host_ip = env.node_ip.map(|ip| ip.to_string());
        let status = active_deadline::failed_status(api_status(&StatusInputs {
            pod,
            runtime: &rt.view,
            probe_ready: &BTreeSet::new(),
            not_started: &BTreeSet::new(),
            waiting: &BTreeMap::new(),
            pod_ips: &rt.ips,
            host_ip: host_ip.as_deref(),
            now: Timestamp::now(),
        }));
        match self.patch_status(pod, &status).await {
            Ok(()) => Next::Requeue(None),
            Err(err) => {
                tracing::warn!(error = %err, "cannot write the DeadlineExceeded status; retrying");
                Next::Requeue(Some(RETRY))
            }
        }
    }

    /// The eviction loop ordered the pod evicted (the kubelet's `evictPod`):
    /// an `Evicted` warning, the containers killed within the order's grace
    /// period, and the `Failed`/`Evicted` status; the order is done once the
    /// API has it.
    async fn evict(&mut self, pod: &Pod, order: &EvictionOrder) -> Next {
        tracing::info!(message = %order.message, "evicting the pod");
        let env = self.env.clone();
        env.events
            .warning(pod, None, rank::REASON, order.message.clone());
        env.probes.remove_pod(&self.uid);
        self.stop_everything(pod, order.grace_seconds).await;
        let Ok(rt) = env.cri.pod(&self.uid).await else {
            return Next::Requeue(Some(RETRY));
        };
        let host_ip = env.node_ip.map(|ip| ip.to_string());
        let now = Timestamp::now();
        let computed = api_status(&StatusInputs {
            pod,
            runtime: &rt.view,
            probe_ready: &BTreeSet::new(),
            not_started: &BTreeSet::new(),
            waiting: &BTreeMap::new(),
            pod_ips: &rt.ips,
            host_ip: host_ip.as_deref(),
            now,
        });
        let status = evicted_status(
            computed,
            order,
            pod.metadata.generation,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        );
        match self.patch_status(pod, &status).await {
            Ok(()) => {
                env.evictions.done(&self.uid);
                Next::Requeue(None)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot write the Evicted status; retrying");
                Next::Requeue(Some(RETRY))
            }
        }
    }

    /// Runs the planner's actions; returns a requeue delay when something
    /// must be retried.
    async fn run_actions(
        &mut self,
        pod: &Pod,
        rt: &PodRuntime,
        actions: &PodActions,
    ) -> Result<Option<Duration>, SyncError> {
        let env = self.env.clone();
        let grace = grace_seconds(pod);
        if actions.kill_pod {
            if actions.create_sandbox {
                tracing::info!("killing the pod's containers and sandbox to recreate it");
            } else {
                tracing::info!("stopping the pod's containers and sandbox: nothing in it runs or will run again");
            }
            self.stop_everything(pod, grace).await;
        }
        let pod_ip = self.hook_pod_ip(pod, &rt.ips);
        let claimed: Vec<bool> = actions
            .containers_to_kill
            .iter()
            .map(|k| self.pre_stopped.insert(k.id.clone()))
            .collect();
        let kills = actions
            .containers_to_kill
            .iter()
            .zip(claimed)
            .map(|(k, pre_stop)| {
                tracing::info!(container = %k.name, reason = k.reason.message(), "killing container");
                env.events.normal(
                    pod,
                    Some(&k.name),
                    "Killing",
                    format!("Container {} {}", k.name, kill_note(k.reason)),
                );
                self.kill_container(pod, &k.name, &k.id, grace, pod_ip.as_deref(), pre_stop)
            });
        for result in join_all(kills).await {
            result?;
        }

        // Ephemeral containers start as new containers, once, in the sandbox there is.
        let ephemeral_starts: Vec<ContainerStart> = actions
            .ephemeral_containers_to_start
            .iter()
            .map(|e| ContainerStart {
                name: e.name.clone(),
                reason: StartReason::NotCreated,
                restart_count: 0,
                previous_exit: None,
            })
            .collect();
        let starts: Vec<&ContainerStart> = actions
            .init_containers_to_start
            .iter()
            .chain(actions.containers_to_start.iter())
            .chain(ephemeral_starts.iter())
            .collect();
        let mut attempt = rt.view.sandboxes.first().map_or(0, |s| s.attempt);
        // What containers need from the API (volume contents, env sources,
        // service variables) is fetched while the runtime makes the sandbox.
        let need_volumes =
            actions.create_sandbox || self.volume_paths.is_empty() || self.volumes_at.is_none();
        let volumes = async {
            if need_volumes {
                Some(env.volumes.setup(pod).await)
            } else {
                None
            }
        };
        let env_inputs = async {
            if starts.is_empty() {
                None
            } else {
                Some(env_inputs(&env, pod).await)
            }
        };
        let sandbox = async {
            if !actions.create_sandbox {
                return None;
            }
            let config = match self.sandbox_config(pod, actions.attempt) {
                Ok(config) => config,
                Err(err) => return Some((Err(err.to_string()), Ok(Vec::new()))),
            };
            self.warn_about_dns(pod);
            let id = env.cri.run_sandbox(config).await.map_err(|e| e.to_string());
            let ips = match &id {
                Ok(id) => env.cri.sandbox_ips(id).await,
                Err(_) => Ok(Vec::new()),
            };
            Some((id, ips))
        };
        let (volumes, env_inputs, sandbox) = tokio::join!(volumes, env_inputs, sandbox);

        match volumes {
            Some(Ok(paths)) => {
                self.volume_paths = paths;
                self.volumes_at = Some(std::time::Instant::now());
            }
            Some(Err(err)) => {
                env.events
                    .warning(pod, None, "FailedMount", err.to_string());
                self.wait_all(pod, "ContainerCreating", &err.to_string());
                return Ok(Some(RETRY));
            }
            None => {}
        }
        let (sandbox_id, pod_ips) = match sandbox {
            Some((Ok(id), ips)) => {
                tracing::info!(sandbox = %id, "sandbox created");
                attempt = actions.attempt;
                (id, ips?)
            }
            Some((Err(err), _)) => {
                let message = format!("Failed to create pod sandbox: {err}");
                env.events
                    .warning(pod, None, "FailedCreatePodSandBox", message.clone());
                self.wait_all(pod, "ContainerCreating", &message);
                return Ok(Some(RETRY));
            }
            None => match &actions.sandbox_id {
                Some(id) => (id.clone(), rt.ips.clone()),
                None => return Ok(None),
            },
        };
        let Some(env_inputs) = env_inputs else {
            return Ok(None);
        };
        let env_inputs = match env_inputs {
            Ok(inputs) => inputs,
            Err(message) => {
                for start in &starts {
                    self.waiting.insert(
                        start.name.clone(),
                        Waiting {
                            reason: "CreateContainerConfigError".into(),
                            message: message.clone(),
                        },
                    );
                }
                env.events
                    .warning(pod, None, "Failed", format!("Error: {message}"));
                return Ok(Some(RETRY));
            }
        };
        let sandbox = match self.sandbox_config(pod, attempt) {
            Ok(sandbox) => sandbox,
            Err(err) => {
                self.wait_all(pod, err.reason(), &err.to_string());
                return Ok(Some(RETRY));
            }
        };
        let target = StartTarget {
            sandbox_id: &sandbox_id,
            sandbox: &sandbox,
            pod_ips: &pod_ips,
            inputs: &env_inputs,
        };
        let mut retry = None;
        for start in starts {
            let Some(container) = find_container(pod, &start.name)
                .cloned()
                .or_else(|| ephemeral::container(pod, &start.name))
            else {
                continue;
            };
            let pid_target = actions
                .ephemeral_containers_to_start
                .iter()
                .find(|e| e.name == start.name)
                .and_then(|e| e.target.as_ref());
            let started = match pid_target {
                Some(PidTarget {
                    name,
                    container_id: None,
                }) => Err(Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: format!("unable to find target container {name}"),
                }),
                _ => {
                    let pid_target = pid_target.and_then(|t| t.container_id.as_deref());
                    self.start_container(pod, &container, start, &target, pid_target)
                        .await
                }
            };
            match started {
                Ok(()) => {
                    self.waiting.remove(&start.name);
                    if let Some(exit) = start.previous_exit {
                        env.backoff
                            .locked()
                            .record_restart(BackoffKey::new(&self.uid, &start.name), exit);
                    }
                }
                Err(w) if w.reason == POST_START_HOOK_ERROR => {
                    // It started (and was killed): a restart for the back-off.
                    if let Some(exit) = start.previous_exit {
                        env.backoff
                            .locked()
                            .record_restart(BackoffKey::new(&self.uid, &start.name), exit);
                    }
                    self.waiting.insert(start.name.clone(), w);
                    retry = min_opt(retry, Some(RETRY));
                }
                Err(w) => {
                    tracing::warn!(container = %start.name, reason = %w.reason, message = %w.message, "cannot start container");
                    if w.reason == "ImagePullBackOff" {
                        env.events
                            .normal(pod, Some(&start.name), "BackOff", w.message.clone());
                    } else {
                        env.events
                            .warning(pod, Some(&start.name), "Failed", w.message.clone());
                    }
                    env.events.warning(
                        pod,
                        Some(&start.name),
                        "Failed",
                        format!("Error: {}", w.reason),
                    );
                    // Image failures wait for their back-off (the 10 s resync
                    // shows ImagePullBackOff meanwhile); others retry soon.
                    let after = match w.reason.as_str() {
                        "ErrImagePull" | "ImagePullBackOff" => self
                            .image_retry_after(container.image.as_deref().unwrap_or_default())
                            .unwrap_or(RETRY),
                        _ => RETRY,
                    };
                    self.waiting.insert(start.name.clone(), w);
                    retry = min_opt(retry, Some(after));
                }
            }
        }
        Ok(retry)
    }

    async fn start_container(
        &mut self,
        pod: &Pod,
        container: &Container,
        start: &ContainerStart,
        target: &StartTarget<'_>,
        pid_target: Option<&str>,
    ) -> Result<(), Waiting> {
        let StartTarget {
            sandbox_id,
            sandbox,
            pod_ips,
            inputs,
        } = *target;
        let env = self.env.clone();
        let image = container.image.clone().unwrap_or_default();
        let key = BackoffKey::new(&self.uid, format!("image:{image}"));
        let left = self.pull_failures.get(&image).and_then(|failed_at| {
            env.image_backoff
                .locked()
                .remaining(&key, *failed_at, SystemTime::now())
        });
        if left.is_some() {
            // A stable message (no countdown): the status is not rewritten
            // on every look at a pod in back-off.
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message: format!("Back-off pulling image \"{image}\""),
            });
        }
        let policy = PullPolicy::of(container.image_pull_policy.as_deref(), &image);
        let pull_started = std::time::Instant::now();
        let pulled = env.cri.ensure_image(&image, policy, sandbox).await;
        match &pulled {
            Ok(false) => env.events.normal(
                pod,
                Some(&container.name),
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            Ok(true) => env.events.normal(
                pod,
                Some(&container.name),
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {:.3}s",
                    pull_started.elapsed().as_secs_f64()
                ),
            ),
            Err(_) => {}
        }
        if let Err(err) = pulled {
            if !matches!(err, ImageError::NeverPull(_)) {
                let now = SystemTime::now();
                env.image_backoff.locked().record_restart(key, now);
                self.pull_failures.insert(image.clone(), now);
            }
            return Err(Waiting {
                reason: err.reason().into(),
                message: err.to_string(),
            });
        }

        let config_error = |message: String| Waiting {
            reason: "CreateContainerConfigError".into(),
            message,
        };
        let host_ip = env.node_ip.map(|ip| ip.to_string());
        let facts = PodFacts {
            pod_ip: pod_ips.first().map(String::as_str),
            pod_ips,
            host_ip: host_ip.as_deref(),
            node_allocatable_milli_cpu: env.node_milli_cpu,
            node_allocatable_memory: env.node_memory,
            node_allocatable_ephemeral_storage: env.node_ephemeral_storage,
        };
        let envs = container_env(pod, container, &facts, &inputs.sources, &inputs.service_env)
            .map_err(|e| config_error(e.to_string()))?;
        let pod_dir = env.volumes.pod_dir(&self.uid);
        let mut mounts = prepare_mounts(container, &self.volume_paths, &envs, &pod_dir)
            .map_err(|e| config_error(e.to_string()))?;
        if etc_hosts::should_mount(pod, container, pod_ips) {
            let names = env.with_cluster_dns(|cluster| pod_hostname(pod, cluster.domain));
            mounts.push(
                pod_files::etc_hosts_mount(&pod_dir, pod, pod_ips, &names).map_err(config_error)?,
            );
        }
        mounts.extend(
            pod_files::termination_message_mount(&pod_dir, container).map_err(config_error)?,
        );
        // Only the image says who runs under runAsNonRoot without runAsUser.
        let image_user = if needs_image_user(pod, container) {
            let status = env.cri.image_user(&image).await;
            Some(status.map_err(|e| config_error(e.to_string()))?)
        } else {
            None
        };
        let hash = container_spec_hash(container);
        let config = container_config(
            pod,
            container,
            ContainerContext {
                restart_count: start.restart_count,
                env: envs,
                mounts,
                spec_hash: &hash,
                node_memory_capacity: env.node_memory_capacity,
                image_user: image_user
                    .as_ref()
                    .map(|u| ImageUser::from_status(u.uid, &u.username)),
                pid_target,
            },
        )
        .map_err(|e| config_error(e.to_string()))?;
        let id = env
            .cri
            .create_container(sandbox_id, config, sandbox)
            .await
            .map_err(|e| Waiting {
                reason: "CreateContainerError".into(),
                message: e.to_string(),
            })?;
        env.events.normal(
            pod,
            Some(&container.name),
            "Created",
            format!("Created container: {}", container.name),
        );
        env.cri.start_container(&id).await.map_err(|e| Waiting {
            reason: "RunContainerError".into(),
            message: e.to_string(),
        })?;
        env.events.normal(
            pod,
            Some(&container.name),
            "Started",
            format!("Started container {}", container.name),
        );
        tracing::info!(container = %container.name, id = %id, restarts = start.restart_count, "container started");

        // The kubelet's step 4 of startContainer: the postStart hook; when it
        // fails, the container is killed and restarted as its policy says.
        let pod_ip = self.hook_pod_ip(pod, pod_ips);
        if let Err(message) = self
            .run_lifecycle_hook(pod, container, HookKind::PostStart, &id, pod_ip.as_deref())
            .await
        {
            env.events.normal(
                pod,
                Some(&container.name),
                "Killing",
                POST_START_HOOK_KILL.into(),
            );
            let pre_stop = self.pre_stopped.insert(id.clone());
            let grace = grace_seconds(pod);
            if let Err(err) = self
                .kill_container(
                    pod,
                    &container.name,
                    &id,
                    grace,
                    pod_ip.as_deref(),
                    pre_stop,
                )
                .await
            {
                tracing::warn!(container = %container.name, error = %err, "cannot kill the container after its postStart hook failed");
            }
            return Err(Waiting {
                reason: POST_START_HOOK_ERROR.into(),
                message,
            });
        }
        Ok(())
    }

    /// Where an HTTP hook without a host goes: the pod's IP, or the node's
    /// for a pod on the host's network.
    fn hook_pod_ip(&self, pod: &Pod, pod_ips: &[String]) -> Option<String> {
        if is_host_network(pod) {
            self.env.node_ip.map(|ip| ip.to_string())
        } else {
            pod_ips.first().cloned()
        }
    }

    /// Runs the container's `kind` hook, if it has one, and waits for it.
    /// A failure is a Warning event (without the hook's output, as the
    /// kubelet keeps secrets out of events) and the kubelet's message.
    async fn run_lifecycle_hook(
        &self,
        pod: &Pod,
        container: &Container,
        kind: HookKind,
        container_id: &str,
        pod_ip: Option<&str>,
    ) -> Result<(), String> {
        let Some(handler) = kind.of(container) else {
            return Ok(());
        };
        let result = match hook_action(handler, container) {
            Ok(action) => {
                let target = HookTarget {
                    cri: self.env.cri.as_ref(),
                    container_id,
                    pod_ip,
                };
                run_hook(&action, target).await.map_err(|f| {
                    failure_message(&action, &container.name, &pod_key(pod), &f.error, &f.output)
                })
            }
            Err(error) => Err(format!("Cannot run handler: {error}")),
        };
        match &result {
            Ok(()) => {
                tracing::debug!(container = %container.name, hook = ?kind, "lifecycle hook done")
            }
            Err(message) => {
                tracing::warn!(container = %container.name, hook = ?kind, %message, "lifecycle hook failed");
                self.env.events.warning(
                    pod,
                    Some(&container.name),
                    kind.failed_reason(),
                    kind.failed_note().into(),
                );
            }
        }
        result
    }

    /// The kubelet's `killContainer`: the preStop hook first (when
    /// `pre_stop` and there is grace), for at most the grace period, then
    /// `StopContainer` with the grace left, never under 2 s.
    async fn kill_container(
        &self,
        pod: &Pod,
        name: &str,
        id: &str,
        grace: i64,
        pod_ip: Option<&str>,
        pre_stop: bool,
    ) -> Result<(), crate::edge::cri::CriError> {
        let mut stop_with = grace.max(MINIMUM_GRACE_SECONDS);
        let container = find_container(pod, name).filter(|c| HookKind::PreStop.of(c).is_some());
        if let Some(container) = container.filter(|_| pre_stop && grace > 0) {
            let started = std::time::Instant::now();
            let allowed = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            let hook = self.run_lifecycle_hook(pod, container, HookKind::PreStop, id, pod_ip);
            if tokio::time::timeout(allowed, hook).await.is_err() {
                tracing::info!(
                    container = name,
                    grace,
                    "preStop hook not completed in the grace period"
                );
            }
            stop_with = stop_grace(grace, started.elapsed());
        }
        self.env.cri.stop_container(id, stop_with).await
    }

    async fn setup_volumes(
        &mut self,
        pod: &Pod,
    ) -> Result<(), crate::pods::volumes::plan::VolumeError> {
        let paths = self.env.volumes.setup(pod).await?;
        self.volume_paths = paths;
        self.volumes_at = Some(std::time::Instant::now());
        Ok(())
    }

    fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
    ) -> Result<cri::PodSandboxConfig, crate::pods::ConfigError> {
        self.env.with_cluster_dns(|cluster_dns| {
            sandbox_config(
                pod,
                &SandboxContext {
                    node_name: &self.env.node_name,
                    pod_logs_root: &self.env.pod_logs_root,
                    attempt,
                    host_dns: &self.env.host_dns,
                    cluster_dns,
                },
            )
        })
    }

    /// The kubelet's warnings about the resolver of a sandbox being made
    /// (MissingClusterDNS, DNSConfigForming), as events on the pod.
    fn warn_about_dns(&self, pod: &Pod) {
        let warnings = self
            .env
            .with_cluster_dns(|cluster| pod_dns(pod, &self.env.host_dns, &cluster).warnings);
        for warning in warnings {
            tracing::warn!(reason = warning.reason, message = %warning.message, "pod DNS");
            self.env
                .events
                .warning(pod, None, warning.reason, warning.message);
        }
    }

    fn wait_all(&mut self, pod: &Pod, reason: &str, message: &str) {
        tracing::warn!(reason, message, "pod cannot start");
        for c in all_containers(pod) {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: reason.into(),
                    message: message.into(),
                },
            );
        }
    }

    fn note_backoffs(&mut self, pod: &Pod, actions: &PodActions) {
        let backoff = self.env.backoff.locked();
        for b in &actions.backing_off {
            let current = backoff
                .current(&BackoffKey::new(&self.uid, &b.name))
                .unwrap_or(b.remaining);
            let already = self
                .waiting
                .get(&b.name)
                .is_some_and(|w| w.reason == "CrashLoopBackOff");
            if !already {
                self.env.events.warning(
                    pod,
                    Some(&b.name),
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        b.name,
                        pod_key(pod)
                    ),
                );
            }
            self.waiting.insert(
                b.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {} restarting failed container={} pod={}",
                        format_duration(current),
                        b.name,
                        pod_key(pod),
                    ),
                },
            );
        }
    }

    async fn write_status(
        &mut self,
        pod: &Pod,
        rt: &PodRuntime,
        probe_ready: &BTreeSet<String>,
        not_started: &BTreeSet<String>,
        resized: (&Pod, &resize::PodAllocation, resize::ResizeConditions),
    ) -> Result<(), SyncError> {
        let host_ip = self.env.node_ip.map(|ip| ip.to_string());
        // A pod on the host's network has the node's address, as the kubelet reports it.
        let pod_ips = match &host_ip {
            Some(ip) if is_host_network(pod) && !rt.view.sandboxes.is_empty() => vec![ip.clone()],
            _ => rt.ips.clone(),
        };
        let now = Timestamp::now();
        let mut status = api_status(&StatusInputs {
            pod,
            runtime: &rt.view,
            probe_ready,
            not_started,
            waiting: &self.waiting,
            pod_ips: &pod_ips,
            host_ip: host_ip.as_deref(),
            now,
        });
        let (allocated, allocation, conditions) = resized;
        let mut with_status = allocated.clone();
        with_status.status = pod.status.clone();
        resize::apply_status(
            &mut status,
            &with_status,
            allocation,
            &rt.view,
            &conditions,
            now,
        );
        if !status_differs(pod.status.as_ref(), &status) {
            return Ok(());
        }
        if self.last_written.as_ref() == Some(&status) {
            // Written already; the watch has not caught up.
            return Ok(());
        }
        self.patch_status(pod, &status).await?;
        self.last_written = Some(status);
        Ok(())
    }

    async fn patch_status(&self, pod: &Pod, status: &PodStatus) -> Result<(), kube::Error> {
        let (namespace, name) = ns_name(pod);
        let patch = serde_json::json!({ "status": status });
        Api::<Pod>::namespaced(self.env.client.clone(), namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Stops every container (gracefully, each after its preStop hook) and
    /// every sandbox of the pod.
    async fn stop_everything(&mut self, pod: &Pod, grace: i64) {
        let env = self.env.clone();
        let Ok(rt) = env.cri.pod(&self.uid).await else {
            return;
        };
        let alive: Vec<_> = rt
            .view
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Unknown))
            .map(|c| {
                let pre_stop =
                    c.state == ContainerState::Running && self.pre_stopped.insert(c.id.clone());
                (c, pre_stop)
            })
            .collect();
        let pod_ip = self.hook_pod_ip(pod, &rt.ips);
        // As the kubelet: the app containers together, then the sidecars
        // one by one in reverse order, within what is left of the grace.
        let sidecars: Vec<&str> = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| is_sidecar(c))
            .map(|c| c.name.as_str())
            .rev()
            .collect();
        let (last, first): (Vec<_>, Vec<_>) = alive
            .into_iter()
            .partition(|(c, _)| sidecars.contains(&c.name.as_str()));
        let started = std::time::Instant::now();
        let stops = first.into_iter().map(|(c, pre_stop)| {
            self.kill_container(pod, &c.name, &c.id, grace, pod_ip.as_deref(), pre_stop)
        });
        let mut results = join_all(stops).await;
        for name in sidecars {
            for (c, pre_stop) in last.iter().filter(|(c, _)| c.name == name) {
                let left = grace
                    .saturating_sub(i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX));
                results.push(
                    self.kill_container(pod, &c.name, &c.id, left, pod_ip.as_deref(), *pre_stop)
                        .await,
                );
            }
        }
        for result in results {
            if let Err(err) = result {
                tracing::warn!(error = %err, "cannot stop a container");
            }
        }
        for s in rt
            .view
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
        {
            if let Err(err) = env.cri.stop_sandbox(&s.id).await {
                tracing::warn!(error = %err, "cannot stop the sandbox");
            }
        }
    }

    /// `deletionTimestamp` is set: stop the containers within the grace
    /// period, write the final status, remove the sandbox and volumes, and
    /// delete the Pod for good (grace 0, only this UID).
    async fn terminate(&mut self, pod: &Pod) -> Next {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| grace_seconds(pod));
        tracing::info!(grace, "terminating pod");
        self.env.probes.remove_pod(&self.uid);
        self.stop_everything(pod, grace).await;
        let Ok(rt) = self.env.cri.pod(&self.uid).await else {
            return Next::Requeue(Some(RETRY));
        };
        if rt
            .view
            .containers
            .iter()
            .any(|c| c.state == ContainerState::Running)
        {
            return Next::Requeue(Some(RETRY));
        }
        let mut status = api_status(&StatusInputs {
            pod,
            runtime: &rt.view,
            probe_ready: &BTreeSet::new(),
            not_started: &BTreeSet::new(),
            waiting: &BTreeMap::new(),
            pod_ips: &rt.ips,
            host_ip: None,
            now: Timestamp::now(),
        });
        // Everything stopped: the pod is terminal (the kubelet reports Failed
        // unless every container succeeded).
        // Ephemeral containers, killed with the pod, do not count.
        let regular: Vec<_> = rt
            .view
            .containers
            .iter()
            .filter(|c| !ephemeral::is_ephemeral(pod, &c.name))
            .collect();
        let all_succeeded = regular.iter().all(|c| c.exit_code == 0) && !regular.is_empty();
        status.phase = Some(if all_succeeded { "Succeeded" } else { "Failed" }.into());
        status.host_ip = None;
        status.host_ips = None;
        if let Err(err) = self.patch_status(pod, &status).await {
            tracing::debug!(error = %err, "final status not written");
        }
        if let Err(err) = self.remove_runtime(&rt).await {
            tracing::warn!(error = %err, "cannot remove the pod's sandbox; retrying");
            return Next::Requeue(Some(RETRY));
        }
        if let Err(err) = self.env.volumes.teardown(&self.uid).await {
            tracing::warn!(error = %err, "cannot remove the pod's volumes");
        }
        remove_pod_logs(&self.env.pod_logs_root, &self.uid);
        let (namespace, name) = ns_name(pod);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.env.client.clone(), namespace)
            .delete(name, &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot delete the pod; retrying");
                return Next::Requeue(Some(RETRY));
            }
        }
        tracing::info!("pod terminated and deleted");
        self.forget();
        Next::Done
    }

    /// A pod that CRI holds but the API no longer has (deleted while the
    /// agent was down, or force-deleted): stop and remove it.
    async fn clean_up_orphan(&mut self) -> Next {
        let env = self.env.clone();
        env.probes.remove_pod(&self.uid);
        let Ok(rt) = env.cri.pod(&self.uid).await else {
            return Next::Requeue(Some(RETRY));
        };
        if !rt.view.is_empty() {
            tracing::info!("removing the sandbox of a pod that no longer exists");
        }
        let stops = rt
            .view
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Unknown))
            .map(|c| env.cri.stop_container(&c.id, ORPHAN_GRACE_SECONDS));
        join_all(stops).await;
        if let Err(err) = self.remove_runtime(&rt).await {
            tracing::warn!(error = %err, "cannot remove an orphaned sandbox; retrying");
            return Next::Requeue(Some(RETRY));
        }
        if let Err(err) = env.volumes.teardown(&self.uid).await {
            tracing::warn!(error = %err, "cannot remove an orphaned pod's volumes");
        }
        remove_pod_logs(&env.pod_logs_root, &self.uid);
        self.forget();
        Next::Done
    }

    async fn remove_runtime(&self, rt: &PodRuntime) -> Result<(), crate::edge::cri::CriError> {
        for c in &rt.view.containers {
            self.env.cri.remove_container(&c.id).await?;
        }
        for s in &rt.view.sandboxes {
            self.env.cri.stop_sandbox(&s.id).await?;
            self.env.cri.remove_sandbox(&s.id).await?;
        }
        Ok(())
    }

    fn forget(&self) {
        self.env.allocations.locked().remove(&self.uid);
        self.env.backoff.locked().forget_pod(&self.uid);
        self.env.image_backoff.locked().forget_pod(&self.uid);
        self.env.admitted.locked().remove(&self.uid);
    }

    /// Removes exited instances beyond the newest [`KEEP_EXITED`] per
    /// container name, instances that were created but never started and
    /// have a newer one (a CreateContainer whose answer was lost: the
    /// retry made another), and sandboxes older than the newest that have
    /// no container left.
    async fn collect_garbage(&self, rt: &PodRuntime) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &rt.view.containers {
            let n = seen.entry(c.name.as_str()).or_default();
            *n += 1;
            let replaced_unstarted = *n > 1 && c.state == ContainerState::Created;
            let old_exited = *n > 1 + KEEP_EXITED && c.state == ContainerState::Exited;
            if replaced_unstarted || old_exited {
                if let Err(err) = self.env.cri.remove_container(&c.id).await {
                    tracing::debug!(error = %err, "container garbage collection");
                }
            }
        }
        for s in rt.view.sandboxes.iter().skip(1) {
            let in_use = rt.view.containers.iter().any(|c| c.sandbox_id == s.id);
            if !in_use && s.state == SandboxState::NotReady {
                if let Err(err) = self.env.cri.remove_sandbox(&s.id).await {
                    tracing::debug!(error = %err, "sandbox garbage collection");
                }
            }
        }
    }
}

/// The resize shell for one sync of the pod `uid`.
fn resize_sync_of<'a>(env: &'a PodEnv, uid: &'a str) -> ResizeSync<'a> {
    ResizeSync {
        cri: env.cri.as_ref(),
        events: &env.events,
        allocations: &env.allocations,
        uid,
        pod_dir: env.volumes.pod_dir(uid),
        allocatable: Requests {
            milli_cpu: env.node_milli_cpu,
            memory: env.node_memory,
        },
        node_memory_capacity: env.node_memory_capacity,
    }
}

/// Where containers start: the sandbox, its IPs, and what their env needs.
#[derive(Clone, Copy)]
struct StartTarget<'a> {
    sandbox_id: &'a str,
    sandbox: &'a cri::PodSandboxConfig,
    pod_ips: &'a [String],
    inputs: &'a EnvInputs,
}

/// What a pod's containers take from the API: the ConfigMaps and Secrets
/// their env refers to, and the service variables.
pub struct EnvInputs {
    pub sources: EnvSources,
    pub service_env: Vec<(String, String)>,
}

async fn env_inputs(env: &PodEnv, pod: &Pod) -> Result<EnvInputs, String> {
    let (sources, services) = tokio::join!(env_sources(env, pod), services(env, pod));
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    Ok(EnvInputs {
        sources: sources?,
        service_env: service_env(&services?, namespace, links),
    })
}

/// The ConfigMaps and Secrets the pod's env refers to.
async fn env_sources(env: &PodEnv, pod: &Pod) -> Result<EnvSources, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut sources = EnvSources::default();
    let cms = Api::<ConfigMap>::namespaced(env.client.clone(), namespace);
    for name in referenced_config_maps(pod) {
        let cm = cms.get_opt(&name).await.map_err(|e| e.to_string())?;
        sources
            .config_maps
            .insert(name, cm.map(|c| c.data.unwrap_or_default()));
    }
    let secrets = Api::<Secret>::namespaced(env.client.clone(), namespace);
    for name in referenced_secrets(pod) {
        let s = secrets.get_opt(&name).await.map_err(|e| e.to_string())?;
        sources.secrets.insert(
            name,
            s.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            }),
        );
    }
    Ok(sources)
}

/// The Services whose variables go into the container's environment:
/// the namespace's (with service links) and `default/kubernetes`.
async fn services(env: &PodEnv, pod: &Pod) -> Result<Vec<Service>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services = Vec::new();
    if links {
        services = namespace_services(env, namespace).await?;
    }
    if !links || namespace != "default" {
        services.extend(
            namespace_services(env, "default")
                .await?
                .into_iter()
                .filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
        );
    }
    Ok(services)
}

/// The Services of a namespace, listed at most once per
/// [`SERVICES_CACHE_TTL`] (a Deployment's pods starting together share one
/// list; the kubelet reads them from an informer, as stale).
async fn namespace_services(env: &PodEnv, namespace: &str) -> Result<Vec<Service>, String> {
    if let Some((at, services)) = env.services_cache.locked().get(namespace) {
        if at.elapsed() < SERVICES_CACHE_TTL {
            return Ok(services.as_ref().clone());
        }
    }
    let services = Api::<Service>::namespaced(env.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list the services of {namespace}: {e}"))?
        .items;
    let mut cache = env.services_cache.locked();
    cache.retain(|_, (at, _)| at.elapsed() < SERVICES_CACHE_TTL);
    cache.insert(
        namespace.to_string(),
        (std::time::Instant::now(), Arc::new(services.clone())),
    );
    Ok(services)
}

/// Removes a gone pod's log directory (`<namespace>_<name>_<uid>`), as the
/// kubelet does once the pod is removed; only directories ending in the UID.
pub fn remove_pod_logs(pod_logs_root: &std::path::Path, uid: &str) {
    if uid.is_empty() || uid.contains('/') || uid.contains("..") {
        return;
    }
    let suffix = format!("_{uid}");
    let Ok(entries) = std::fs::read_dir(pod_logs_root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(&suffix) {
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %err, "cannot remove a pod's logs");
            }
        }
    }
}

/// A failed step of a sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Cri(#[from] crate::edge::cri::CriError),
    #[error("writing the pod status: {0}")]
    Api(#[from] kube::Error),
}

/// The Killing event's note after the container's name.
fn kill_note(reason: crate::pods::plan::KillReason) -> &'static str {
    use crate::pods::plan::KillReason;
    match reason {
        KillReason::SpecChanged => "definition changed, will be restarted",
        KillReason::LivenessFailed => "failed liveness probe, will be restarted",
        KillReason::StartupFailed => "failed startup probe, will be restarted",
        KillReason::UnknownState => "is in unknown state, will be restarted",
        KillReason::ResizeRestart => "resize requires restart, will be restarted",
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .chain(spec.map(|s| s.containers.as_slice()).unwrap_or_default())
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    all_containers(pod).find(|c| c.name == name)
}

fn ns_name(pod: &Pod) -> (&str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// `name_namespace(uid)`, as the kubelet names a pod in messages.
pub fn pod_key(pod: &Pod) -> String {
    let (namespace, name) = ns_name(pod);
    format!(
        "{name}_{namespace}({})",
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `10s`, `1m20s`, `5m0s`: Go's duration format, as in the kubelet's message.
fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_pods_log_directory_is_removed_and_nothing_else() {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in ["ns_web_u1", "ns_web_u12", "ns_other_u2", "u1"] {
            std::fs::create_dir_all(root.path().join(dir).join("app")).unwrap();
        }
        remove_pod_logs(root.path(), "u1");
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["ns_other_u2", "ns_web_u12", "u1"]);
        remove_pod_logs(root.path(), "..");
        remove_pod_logs(root.path(), "");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 3);
    }

    #[test]
    fn go_durations_as_in_the_kubelets_back_off_message() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
    }
}
