//! Container probes, shell: one task per probe of each running container, as
//! the kubelet's prober manager runs one worker goroutine per (container,
//! probe kind). Each task asks the pure [`ProbeState`] whether to probe, runs
//! the probe ([`check`](crate::pods::probes::check)), records the outcome, and wakes
//! the pod worker when a result flips. The pod worker reads the results with
//! [`ProbeManager::results`] at each sync.
//!
//! No metrics (the kubelet's `prober_probe_total` would be the counterpart).
//! Not covered: HTTPS and gRPC probes (reported as probe errors, so they
//! neither fail nor pass), the kubelet's random start-up jitter.
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::Resource;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::edge::cri_handle::CriHandle;
use crate::locked::Locked;
use crate::pods::events::PodEvents;
use crate::pods::plan::ProbeFailures;
use crate::pods::probes::check::run_probe;
use crate::pods::probes::state::{
    probe_action, probe_timing, Gate, ProbeAction, ProbeKind, ProbeOutcome, ProbeState, Timing,
};

/// A running instance of one of the pod's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// The container's name in the pod spec.
    pub name: String,
    /// The CRI container ID; a new ID is a new instance (the probes start over).
    pub id: String,
    /// When the instance started (`initialDelaySeconds` counts from here).
    pub started_at: SystemTime,
}

/// The probes' verdicts on one pod's containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeResults {
    /// Containers that HAVE a readiness probe and whose readiness currently
    /// succeeds (containers without a readiness probe are not listed: the
    /// caller treats them as ready while running).
    pub ready: BTreeSet<String>,
    /// Containers whose startup probe has not succeeded yet (containers
    /// without a startup probe are not listed).
    pub not_started: BTreeSet<String>,
    /// Liveness / startup failures past threshold.
    pub failures: ProbeFailures,
}

/// Runs the probes of the pods on this node. Cheap to clone; the probe tasks
/// stop when the last clone is dropped.
#[derive(Clone)]
pub struct ProbeManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProbeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeManager").finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// Cancels every probe task when the last manager goes away.
    _stop_all: DropGuard,
}

/// What the manager and its tasks share. Tasks hold this, not [`Inner`], so
/// they do not keep the manager alive.
struct Shared {
    cri: CriHandle,
    wake: mpsc::UnboundedSender<String>,
    /// Where `Unhealthy` events go, when set.
    events: Option<PodEvents>,
    all_stopped: CancellationToken,
    next_task: AtomicU64,
    /// By pod UID. A std mutex: it is never held across an await.
    pods: Mutex<HashMap<String, PodProbes>>,
}

/// The probes of one container: (container name, kind).
type ProbeKey = (String, ProbeKind);

struct PodProbes {
    /// The Pod, for events about it.
    reference: ObjectReference,
    probes: HashMap<ProbeKey, ProbeEntry>,
}

/// One probe of one container and the task running it.
struct ProbeEntry {
    /// The task's number: a task whose entry was replaced stops.
    task: u64,
    state: ProbeState,
    container: RunningContainer,
    action: Result<ProbeAction, String>,
    timing: Timing,
    pod_ip: Option<IpAddr>,
    /// Wakes the task early (a new container instance, startup succeeded).
    poke: Arc<Notify>,
    stop: CancellationToken,
    /// When the last `Unhealthy` or `ProbeWarning` event about this probe was sent.
    last_event: Option<Instant>,
}

/// At most one `Unhealthy` or `ProbeWarning` event per probe this often (a readiness probe
/// failing every second would otherwise write every second; the kubelet's
/// event correlator rate-limits as well).
const UNHEALTHY_EVENT_EVERY: Duration = Duration::from_secs(30);

impl ProbeManager {
    /// `wake` receives a pod UID whenever a probe result of that pod flips, so
    /// the pod worker syncs it at once.
    pub fn new(cri: CriHandle, wake: mpsc::UnboundedSender<String>) -> Self {
        let all_stopped = CancellationToken::new();
        let shared = Arc::new(Shared {
            cri,
            wake,
            events: None,
            all_stopped: all_stopped.clone(),
            next_task: AtomicU64::new(0),
            pods: Mutex::new(HashMap::new()),
        });
        Self {
            inner: Arc::new(Inner {
                shared,
                _stop_all: all_stopped.drop_guard(),
            }),
        }
    }

    /// The same manager, sending an `Unhealthy` event (the kubelet's reason
    /// and wording) when a probe fails. Call before any pod is probed.
    pub fn with_events(self, events: PodEvents) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            panic!("ProbeManager::with_events must be called before the manager is cloned")
        });
        match Arc::get_mut(&mut inner.shared) {
            Some(shared) => shared.events = Some(events),
            None => panic!("ProbeManager::with_events must be called before any probe runs"),
        }
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Called by the pod worker after each sync with the pod's running
    /// containers: starts a task per (container, probe kind) that has a
    /// probe, starts a container's probes over when its ID changes, and stops
    /// the probes of containers no longer running. Once the pod is being
    /// deleted only readiness is probed (liveness and startup count as
    /// succeeded, as in the kubelet). Must run inside a Tokio runtime.
    pub fn update_pod(&self, pod: &Pod, running: &[RunningContainer], pod_ip: Option<IpAddr>) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut wanted = Vec::new();
        for container in probed_containers(pod) {
            let Some(instance) = running.iter().find(|r| r.name == container.name) else {
                continue;
            };
            for kind in ProbeKind::ALL {
                if deleting && kind != ProbeKind::Readiness {
                    continue;
                }
                if let Some(spec) = kind.of(container) {
                    wanted.push((kind, container, spec, instance));
                }
            }
        }

        let shared = &self.inner.shared;
        let mut pods = shared.lock();
        let entry = pods.entry(uid.to_string()).or_insert_with(|| PodProbes {
            reference: pod.object_ref(&()),
            probes: HashMap::new(),
        });
        entry.probes.retain(|(name, kind), probe| {
            let keep = wanted
                .iter()
                .any(|(k, c, _, _)| k == kind && c.name == *name);
            if !keep {
                probe.stop.cancel();
            }
            keep
        });
        for (kind, container, spec, instance) in wanted {
            let key = (container.name.clone(), kind);
            if let Some(probe) = entry.probes.get_mut(&key) {
                probe.pod_ip = pod_ip;
                if probe.state.observe_container(&instance.id) {
                    probe.poke.notify_one();
                }
                probe.container = instance.clone();
                continue;
            }
            let mut state = ProbeState::new(kind, spec);
            state.observe_container(&instance.id);
            let probe = ProbeEntry {
                task: shared.next_task.fetch_add(1, Ordering::Relaxed),
                state,
                container: instance.clone(),
                action: probe_action(spec, container),
                timing: probe_timing(spec),
                pod_ip,
                poke: Arc::new(Notify::new()),
                stop: shared.all_stopped.child_token(),
                last_event: None,
            };
            // A child of the pod worker's span (it calls this), which names
            // the pod and its UID.
            let span = tracing::info_span!("probe", container = %container.name, kind = %kind);
            tokio::spawn(
                probe_task(
                    shared.clone(),
                    uid.to_string(),
                    key.clone(),
                    probe.task,
                    probe.poke.clone(),
                    probe.stop.clone(),
                )
                .instrument(span),
            );
            entry.probes.insert(key, probe);
        }
        if entry.probes.is_empty() {
            pods.remove(uid);
        }
    }

    /// Stops every probe of the pod and forgets its results.
    pub fn remove_pod(&self, uid: &str) {
        if let Some(pod) = self.inner.shared.lock().remove(uid) {
            for probe in pod.probes.values() {
                probe.stop.cancel();
            }
        }
    }

    /// The current verdicts on the pod's containers.
    pub fn results(&self, uid: &str) -> ProbeResults {
        let mut results = ProbeResults::default();
        let pods = self.inner.shared.lock();
        let Some(pod) = pods.get(uid) else {
            return results;
        };
        for ((name, kind), probe) in &pod.probes {
            let result = probe.state.result();
            match kind {
                ProbeKind::Readiness if result == Some(true) => {
                    results.ready.insert(name.clone());
                }
                ProbeKind::Readiness => {}
                ProbeKind::Liveness if result == Some(false) => {
                    results.failures.liveness.insert(name.clone());
                }
                ProbeKind::Liveness => {}
                ProbeKind::Startup => {
                    if result != Some(true) {
                        results.not_started.insert(name.clone());
                    }
                    if result == Some(false) {
                        results.failures.startup.insert(name.clone());
                    }
                }
            }
        }
        results
    }
}

/// The containers that may have probes: regular ones and restartable init
/// containers (sidecars); other init containers cannot have probes.
fn probed_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(sidecars)
}

/// What a probe task does next.
enum Step {
    /// Its entry is gone or belongs to a newer task.
    Stop,
    Wait(Duration),
    Probe {
        action: Result<ProbeAction, String>,
        timeout: Duration,
        period: Duration,
        pod_ip: Option<IpAddr>,
        container_id: String,
    },
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PodProbes>> {
        // A panic elsewhere must not stop probing; the map stays consistent
        // (every update is a single insert, remove or field write).
        self.pods.locked()
    }

    fn next_step(&self, uid: &str, key: &ProbeKey, task: u64) -> Step {
        let pods = self.lock();
        let Some(pod) = pods.get(uid) else {
            return Step::Stop;
        };
        let Some(probe) = pod.probes.get(key).filter(|p| p.task == task) else {
            return Step::Stop;
        };
        // Without a startup probe a running container counts as started.
        let started = pod
            .probes
            .get(&(key.0.clone(), ProbeKind::Startup))
            .is_none_or(|startup| startup.state.result() == Some(true));
        let since_start = SystemTime::now()
            .duration_since(probe.container.started_at)
            .unwrap_or_default();
        match probe.state.gate(since_start, started) {
            Gate::Probe => Step::Probe {
                action: probe.action.clone(),
                timeout: probe.timing.timeout,
                period: probe.timing.period,
                pod_ip: probe.pod_ip,
                container_id: probe.container.id.clone(),
            },
            Gate::InitialDelay(left) => Step::Wait(left),
            Gate::Hold => Step::Wait(probe.timing.period),
        }
    }

    /// Records the outcome of a probe of `container_id` (thrown away if the
    /// container changed meanwhile) and wakes the pod worker on a flip.
    fn record(
        &self,
        uid: &str,
        key: &ProbeKey,
        task: u64,
        container_id: &str,
        outcome: ProbeOutcome,
    ) {
        let mut pods = self.lock();
        let Some(pod) = pods.get_mut(uid) else {
            return;
        };
        let Some(probe) = pod.probes.get_mut(key).filter(|p| p.task == task) else {
            return;
        };
        if probe.state.container_id() != Some(container_id) {
            return;
        }
        // The kubelet's events: `Unhealthy` for a failure, `ProbeWarning`
        // for a success it warns about (both of type Warning).
        let event = match &outcome {
            ProbeOutcome::Failure(message) => Some(("Unhealthy", "failed", message)),
            ProbeOutcome::Warning(message) => Some(("ProbeWarning", "warning", message)),
            ProbeOutcome::Success | ProbeOutcome::Unknown => None,
        };
        if let Some((reason, what, message)) = event {
            tracing::debug!(%message, "{} probe {what}", key.1);
            let due = probe
                .last_event
                .is_none_or(|at| at.elapsed() >= UNHEALTHY_EVENT_EVERY);
            if let (Some(events), true) = (&self.events, due) {
                probe.last_event = Some(Instant::now());
                let mut reference = pod.reference.clone();
                reference.field_path = Some(format!("spec.containers{{{}}}", key.0));
                events.send_about(
                    reference,
                    true,
                    reason,
                    format!("{} probe {what}: {message}", capitalised(key.1)),
                );
            }
        }
        let Some(result) = probe.state.record(outcome) else {
            return;
        };
        let message = probe.state.last_failure().unwrap_or_default();
        match (key.1, result) {
            (ProbeKind::Readiness, true) => tracing::info!("container is ready"),
            (ProbeKind::Readiness, false) => tracing::info!(%message, "container is not ready"),
            (kind, true) => tracing::info!("{kind} probe succeeded"),
            (kind, false) => {
                tracing::warn!(%message, "{kind} probe failed, the container will be restarted")
            }
        }
        if key.1 == ProbeKind::Startup && result {
            // Readiness and liveness were waiting for this: run them now.
            for kind in [ProbeKind::Readiness, ProbeKind::Liveness] {
                if let Some(sibling) = pod.probes.get(&(key.0.clone(), kind)) {
                    sibling.poke.notify_one();
                }
            }
        }
        // The pod worker is gone only at shutdown.
        let _ = self.wake.send(uid.to_string());
    }
}

/// `Readiness`, `Liveness`, `Startup`, as the kubelet's event starts.
fn capitalised(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Readiness => "Readiness",
        ProbeKind::Liveness => "Liveness",
        ProbeKind::Startup => "Startup",
    }
}

/// One probe's loop, until its entry is removed or replaced, or the manager is dropped.
async fn probe_task(
    shared: Arc<Shared>,
    uid: String,
    key: ProbeKey,
    task: u64,
    poke: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let began = Instant::now();
        let wait = match shared.next_step(&uid, &key, task) {
            Step::Stop => return,
            Step::Wait(wait) => wait,
            Step::Probe {
                action,
                timeout,
                period,
                pod_ip,
                container_id,
            } => {
                let outcome = match action {
                    Ok(action) => {
                        let cri = shared.cri.current();
                        let run = run_probe(&action, timeout, pod_ip, cri, &container_id);
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            outcome = run => outcome,
                        }
                    }
                    Err(error) => Err(error),
                };
                let outcome = outcome.unwrap_or_else(|error| {
                    tracing::warn!(%error, "{} probe errored, result unknown", key.1);
                    ProbeOutcome::Unknown
                });
                shared.record(&uid, &key, task, &container_id, outcome);
                period.saturating_sub(began.elapsed())
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = poke.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, AtomicUsize};

    use k8s_openapi::api::core::v1::{HTTPGetAction, PodSpec, Probe, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use tokio::net::TcpListener;

    use super::*;
    use crate::edge::cri::CriClient;
    use crate::pods::probes::check::tests::{response, serve};

    const LOCALHOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    /// Generous: results come within a period (1 s) or two; this only bounds a broken test.
    const DEADLINE: Duration = Duration::from_secs(8);

    fn manager() -> (ProbeManager, mpsc::UnboundedReceiver<String>) {
        let client = CriClient::connect_lazy("unix:///nonexistent/nodeconfig-test/cri.sock")
            .expect("lazy client");
        let (_switch, handle) = crate::edge::cri_handle::shared(client);
        let (wake, woken) = mpsc::unbounded_channel();
        (ProbeManager::new(handle, wake), woken)
    }

    fn fast(mut probe: Probe) -> Probe {
        probe.period_seconds = Some(1);
        probe.failure_threshold = Some(1);
        probe
    }

    fn http(port: u16, path: &str) -> Probe {
        fast(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port.into()),
                path: Some(path.into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        })
    }

    fn tcp(port: u16) -> Probe {
        fast(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port.into()),
                host: None,
            }),
            ..Probe::default()
        })
    }

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("uid-1".into()),
                namespace: Some("default".into()),
                name: Some("web".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ..container
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn running(id: &str) -> Vec<RunningContainer> {
        vec![RunningContainer {
            name: "app".into(),
            id: id.into(),
            started_at: SystemTime::now(),
        }]
    }

    async fn wait_for(
        manager: &ProbeManager,
        what: &str,
        done: impl Fn(&ProbeResults) -> bool,
    ) -> ProbeResults {
        let end = Instant::now() + DEADLINE;
        loop {
            let results = manager.results("uid-1");
            if done(&results) {
                return results;
            }
            assert!(
                Instant::now() < end,
                "no {what} within {DEADLINE:?}: {results:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }

    #[tokio::test]
    async fn readiness_follows_an_http_server_and_wakes_the_pod_worker() {
        let status = Arc::new(AtomicU16::new(200));
        let answer = status.clone();
        let server = serve(move |_| response(answer.load(Ordering::SeqCst), "")).await;
        let (manager, mut woken) = manager();
        let pod = pod(Container {
            readiness_probe: Some(http(server.port, "/ready")),
            ..Container::default()
        });
        manager.update_pod(&pod, &running("c1"), LOCALHOST);
        assert!(
            manager.results("uid-1").ready.is_empty(),
            "not ready before a probe"
        );

        wait_for(&manager, "readiness", |r| r.ready.contains("app")).await;
        assert_eq!(woken.recv().await.as_deref(), Some("uid-1"));

        status.store(500, Ordering::SeqCst);
        let results = wait_for(&manager, "unreadiness", |r| r.ready.is_empty()).await;
        assert_eq!(
            results.failures,
            ProbeFailures::default(),
            "readiness never restarts"
        );
        assert_eq!(woken.recv().await.as_deref(), Some("uid-1"));
    }

    #[tokio::test]
    async fn liveness_failure_lasts_until_the_container_is_replaced_or_the_pod_deleted() {
        let (manager, _woken) = manager();
        let mut pod = pod(Container {
            liveness_probe: Some(tcp(closed_port())),
            ..Container::default()
        });
        manager.update_pod(&pod, &running("c1"), LOCALHOST);
        assert_eq!(
            manager.results("uid-1"),
            ProbeResults::default(),
            "alive at first"
        );

        wait_for(&manager, "liveness failure", |r| {
            r.failures.liveness.contains("app")
        })
        .await;
        manager.update_pod(&pod, &running("c1"), LOCALHOST);
        assert!(manager.results("uid-1").failures.liveness.contains("app"));

        manager.update_pod(&pod, &running("c2"), LOCALHOST);
        assert!(
            manager.results("uid-1").failures.liveness.is_empty(),
            "a new instance starts alive"
        );

        wait_for(&manager, "liveness failure of c2", |r| {
            r.failures.liveness.contains("app")
        })
        .await;
        pod.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        manager.update_pod(&pod, &running("c2"), LOCALHOST);
        assert_eq!(manager.results("uid-1"), ProbeResults::default());
    }

    #[tokio::test]
    async fn readiness_waits_for_the_startup_probe() {
        let started = Arc::new(AtomicU16::new(500));
        let readiness_probes = Arc::new(AtomicUsize::new(0));
        let startup_probes = Arc::new(AtomicUsize::new(0));
        let (s, r, p) = (
            started.clone(),
            readiness_probes.clone(),
            startup_probes.clone(),
        );
        let server = serve(move |line| {
            if line.starts_with("GET /started ") {
                p.fetch_add(1, Ordering::SeqCst);
                response(s.load(Ordering::SeqCst), "")
            } else {
                r.fetch_add(1, Ordering::SeqCst);
                response(200, "")
            }
        })
        .await;
        let (manager, _woken) = manager();
        let mut startup = http(server.port, "/started");
        startup.failure_threshold = Some(30);
        let pod = pod(Container {
            startup_probe: Some(startup),
            readiness_probe: Some(http(server.port, "/ready")),
            ..Container::default()
        });
        manager.update_pod(&pod, &running("c1"), LOCALHOST);

        let end = Instant::now() + DEADLINE;
        while startup_probes.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < end, "startup probe not run");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let results = manager.results("uid-1");
        assert!(results.not_started.contains("app"), "{results:?}");
        assert!(results.ready.is_empty() && results.failures.startup.is_empty());
        assert_eq!(readiness_probes.load(Ordering::SeqCst), 0);

        started.store(200, Ordering::SeqCst);
        let results = wait_for(&manager, "readiness", |r| r.ready.contains("app")).await;
        assert!(results.not_started.is_empty());
    }

    #[tokio::test]
    async fn startup_failure_past_threshold_is_reported() {
        let (manager, _woken) = manager();
        let pod = pod(Container {
            startup_probe: Some(tcp(closed_port())),
            ..Container::default()
        });
        manager.update_pod(&pod, &running("c1"), LOCALHOST);
        let results = wait_for(&manager, "startup failure", |r| {
            r.failures.startup.contains("app")
        })
        .await;
        assert!(results.not_started.contains("app"));
    }

    /// Starts a readiness probe, waits until it passed, runs `stop`, and
    /// checks that no probe reaches the server for two periods afterwards.
    async fn assert_stops(stop: impl FnOnce(&ProbeManager, &Pod)) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let server = serve(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            response(200, "")
        })
        .await;
        let pod = pod(Container {
            readiness_probe: Some(http(server.port, "/")),
            ..Container::default()
        });
        let (manager, _woken) = manager();
        manager.update_pod(&pod, &running("c1"), LOCALHOST);
        wait_for(&manager, "readiness", |r| r.ready.contains("app")).await;
        stop(&manager, &pod);
        assert_eq!(manager.results("uid-1"), ProbeResults::default());
        let before = hits.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(hits.load(Ordering::SeqCst), before, "probes went on");
    }

    #[tokio::test]
    async fn probes_stop_when_the_container_stops() {
        assert_stops(|manager, pod| manager.update_pod(pod, &[], LOCALHOST)).await;
    }

    #[tokio::test]
    async fn probes_stop_when_the_pod_is_removed() {
        assert_stops(|manager, _| manager.remove_pod("uid-1")).await;
    }

    #[tokio::test]
    async fn dropping_the_manager_stops_its_probes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (manager, _woken) = manager();
        let pod = pod(Container {
            readiness_probe: Some(tcp(port)),
            ..Container::default()
        });
        manager.update_pod(&pod, &running("c1"), LOCALHOST);
        wait_for(&manager, "readiness", |r| r.ready.contains("app")).await;
        let shared = Arc::downgrade(&manager.inner.shared);
        drop(manager);
        let end = Instant::now() + DEADLINE;
        while shared.strong_count() > 0 {
            assert!(Instant::now() < end, "probe tasks outlived the manager");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
