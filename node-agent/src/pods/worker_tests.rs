//! The pod worker's hard cases, run for real against the [`FakeRuntime`] and
//! a recording fake of the API server: what a user would notice after a
//! restart that finds two sandboxes, a sandbox without containers, a pod
//! deleted while its sandbox is made, a runtime that times out mid-create,
//! and a relist that races a watch event.
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use tokio::sync::{mpsc, watch};

use crate::edge::cri::CriClient;
use crate::locked::Locked;
use crate::pods::backoff::{Backoff, BackoffKey};
use crate::pods::container_runtime::ContainerRuntime;
use crate::pods::events::PodEvents;
use crate::pods::fake_runtime::{Call, FakeRuntime, Op};
use crate::pods::plan::container_spec_hash;
use crate::pods::probes::manager::ProbeManager;
use crate::pods::runtime_view::{ContainerState, PodRuntimeView, SandboxState};
use crate::pods::volumes::manager::VolumeManager;
use crate::pods::worker::{Next, PodEnv, PodWorker};
use crate::reports::{ConfigReport, PressureReport};

const UID: &str = "uid-1";
const NODE: &str = "node-1";
/// Bounds a broken test; the cases themselves take milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// The API server as the worker meets it: the Node for admission, no
/// Services, status patches and deletions recorded, events accepted.
#[derive(Default)]
struct FakeApi {
    /// Every status patch, as sent.
    patches: Mutex<Vec<serde_json::Value>>,
    deletions: AtomicUsize,
    /// The Pod is gone: writes about it answer 404.
    pod_gone: AtomicBool,
}

impl FakeApi {
    fn client(self: &Arc<Self>) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let body = request
            .into_body()
            .collect_bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let gone = self.pod_gone.load(Ordering::SeqCst);
        let is_pod = path.starts_with("/api/v1/namespaces/default/pods/");
        match (&method, path.as_str()) {
            (&Method::GET, "/api/v1/nodes/node-1") => json(
                StatusCode::OK,
                serde_json::json!({"metadata": {"name": NODE}}),
            ),
            (&Method::GET, p) if p.ends_with("/services") => json(
                StatusCode::OK,
                serde_json::json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": []}),
            ),
            (&Method::PATCH, p) if is_pod && p.ends_with("/status") => {
                if gone {
                    return not_found();
                }
                let patch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                self.patches.locked().push(patch);
                json(StatusCode::OK, pod_json())
            }
            (&Method::DELETE, _) if is_pod => {
                self.deletions.fetch_add(1, Ordering::SeqCst);
                json(StatusCode::OK, pod_json())
            }
            (&Method::POST, p) if p.ends_with("/events") => {
                let mut created = Response::new(Body::from(body));
                *created.status_mut() = StatusCode::CREATED;
                created
            }
            _ => not_found(),
        }
    }

    /// The waiting reasons of the last status written, per container.
    fn last_waiting_reasons(&self) -> BTreeMap<String, String> {
        let patches = self.patches.locked();
        let Some(last) = patches.last() else {
            return BTreeMap::new();
        };
        last["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let reason = c["state"]["waiting"]["reason"].as_str()?;
                Some((c["name"].as_str()?.to_string(), reason.to_string()))
            })
            .collect()
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string().into_bytes()));
    *response.status_mut() = status;
    response
}

fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404}),
    )
}

fn pod_json() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": UID},
        "spec": {"nodeName": NODE, "containers": [
            {"name": "app", "image": "busybox:1.36"},
            {"name": "sidecar", "image": "busybox:1.36"},
        ]},
        "status": {"phase": "Pending"}
    })
}

/// The pod of every case: two containers, restartPolicy Always.
fn pod() -> Arc<Pod> {
    Arc::new(serde_json::from_value(pod_json()).expect("a valid pod"))
}

fn hash_of(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref().expect("spec");
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == name)
        .expect("container");
    container_spec_hash(container)
}

struct Harness {
    runtime: Arc<FakeRuntime>,
    api: Arc<FakeApi>,
    env: Arc<PodEnv>,
    /// The NodeConfig in force, as the config loop publishes it.
    config: watch::Sender<ConfigReport>,
    /// The node's pressure, as the eviction loop publishes it.
    pressure: watch::Sender<PressureReport>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let api = Arc::new(FakeApi::default());
    let client = api.client();
    let runtime = FakeRuntime::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // The prober's own CRI (exec probes); these pods have no probes.
    let prober_cri = CriClient::connect_lazy("unix:///nonexistent/nodeconfig-test/cri.sock")
        .expect("lazy client");
    let (_switch, prober_cri) = crate::edge::cri_handle::shared(prober_cri);
    let (wake, _woken) = mpsc::unbounded_channel();
    let events = PodEvents::new(client.clone(), NODE);
    let (config, config_rx) = watch::channel(ConfigReport::default());
    let (pressure, pressure_rx) = watch::channel(PressureReport::default());
    let env = Arc::new(PodEnv {
        client: client.clone(),
        cri: runtime.clone(),
        node_name: NODE.into(),
        node_ip: Some([10, 0, 0, 1].into()),
        pod_logs_root: dir.path().join("logs"),
        host_dns: crate::pods::cri_config::dns::parse_resolv_conf(
            "nameserver 192.0.2.53\nsearch node.example\n",
        ),
        config: config_rx,
        node_milli_cpu: 4000,
        node_memory: 8 << 30,
        node_ephemeral_storage: 100 << 30,
        node_memory_capacity: 8 << 30,
        volumes: VolumeManager::new(client, dir.path().join("pods")),
        events: events.clone(),
        probes: ProbeManager::new(prober_cri, wake).with_events(events),
        backoff: Mutex::new(Backoff::default()),
        image_backoff: Mutex::new(Backoff::default()),
        allowed_unsafe_sysctls: Vec::new(),
        apparmor_enabled: false,
        admitted: Mutex::new(BTreeSet::new()),
        admission: tokio::sync::Mutex::new(()),
        node_cache: Mutex::new(None),
        services_cache: Mutex::new(BTreeMap::new()),
        allocations: Default::default(),
        evictions: Default::default(),
        pressure: pressure_rx,
    });
    Harness {
        runtime,
        api,
        env,
        config,
        pressure,
        _dir: dir,
    }
}

impl Harness {
    fn worker(&self) -> PodWorker {
        PodWorker::new(self.env.clone(), UID.into())
    }

    async fn sync(&self, worker: &mut PodWorker, pod: Option<Arc<Pod>>) -> Next {
        let on_node: Vec<Arc<Pod>> = pod.iter().cloned().collect();
        tokio::time::timeout(DEADLINE, worker.sync(pod, &on_node))
            .await
            .expect("the sync ends")
    }

    fn view(&self) -> PodRuntimeView {
        self.runtime.view(UID)
    }
}

fn ready_sandboxes(view: &PodRuntimeView) -> Vec<&str> {
    view.sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Ready)
        .map(|s| s.id.as_str())
        .collect()
}

/// Per container name, how many instances run, and in which sandboxes.
fn running(view: &PodRuntimeView) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &view.containers {
        if c.state == ContainerState::Running {
            out.entry(c.name.as_str())
                .or_default()
                .push(c.sandbox_id.as_str());
        }
    }
    out
}

fn creates(runtime: &FakeRuntime) -> Vec<String> {
    runtime
        .calls_of(Op::CreateContainer)
        .into_iter()
        .filter_map(|c| match c {
            Call::CreateContainer { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_restart_that_finds_two_ready_sandboxes_ends_with_one_and_starts_each_container_once() {
    let h = harness();
    let pod = pod();
    // Before the restart: the pod ran in `old`; a second RunPodSandbox whose
    // answer was lost left `stray` ready and empty.
    let old = h.runtime.add_sandbox(UID, true, 0);
    for name in ["app", "sidecar"] {
        h.runtime
            .add_running_container(UID, &old, name, &hash_of(&pod, name));
    }
    let stray = h.runtime.add_sandbox(UID, true, 0);

    let mut worker = h.worker();
    assert_eq!(
        h.sync(&mut worker, Some(pod.clone())).await,
        Next::Requeue(None)
    );

    // As the kubelet does with several ready sandboxes: everything stops,
    // one new sandbox (attempt 1) runs each container once.
    let view = h.view();
    let ready = ready_sandboxes(&view);
    assert_eq!(ready.len(), 1, "{view:?}");
    assert_eq!(view.sandboxes[0].attempt, 1);
    assert!(!ready.contains(&old.as_str()) && !ready.contains(&stray.as_str()));
    assert_eq!(
        running(&view),
        BTreeMap::from([("app", vec![ready[0]]), ("sidecar", vec![ready[0]])])
    );
    // The empty stray sandbox is removed; the old one stays stopped with the
    // previous instances (`kubectl logs --previous`).
    assert!(view.sandboxes.iter().all(|s| s.id != stray));
    assert!(view
        .sandboxes
        .iter()
        .any(|s| s.id == old && s.state == SandboxState::NotReady));
    assert_eq!(creates(&h.runtime), ["app", "sidecar"]);

    // Looked at again, nothing more is made.
    h.sync(&mut worker, Some(pod)).await;
    assert_eq!(creates(&h.runtime), ["app", "sidecar"]);
    assert_eq!(h.runtime.calls_of(Op::RunSandbox).len(), 1);
}

#[tokio::test]
async fn a_ready_sandbox_without_containers_gets_the_containers_created_in_it() {
    let h = harness();
    let sandbox = h.runtime.add_sandbox(UID, true, 0);

    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod())).await;

    let view = h.view();
    assert_eq!(h.runtime.calls_of(Op::RunSandbox), []);
    assert_eq!(view.sandboxes.len(), 1);
    assert_eq!(
        running(&view),
        BTreeMap::from([
            ("app", vec![sandbox.as_str()]),
            ("sidecar", vec![sandbox.as_str()])
        ])
    );
}

#[tokio::test]
async fn a_stopped_sandbox_without_containers_is_replaced_and_removed() {
    let h = harness();
    let stopped = h.runtime.add_sandbox(UID, false, 0);

    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod())).await;

    let view = h.view();
    assert_eq!(
        h.runtime.calls_of(Op::RunSandbox),
        [Call::RunSandbox {
            uid: UID.into(),
            attempt: 1
        }]
    );
    assert_eq!(view.sandboxes.len(), 1, "{view:?}");
    assert_ne!(view.sandboxes[0].id, stopped);
    assert_eq!(running(&view).len(), 2);
}

#[tokio::test]
async fn a_pod_deleted_while_its_sandbox_is_made_leaves_nothing_behind() {
    let h = harness();
    let store: Arc<Mutex<Option<Arc<Pod>>>> = Arc::new(Mutex::new(Some(pod())));
    let making = h.runtime.hold_next(Op::RunSandbox);
    let (poke, pokes) = mpsc::channel(1);
    poke.try_send(()).expect("first poke");
    let lookup = {
        let store = store.clone();
        move || {
            let pod = store.locked().clone();
            let on_node = pod.iter().cloned().collect();
            (pod, on_node)
        }
    };
    let worker = tokio::spawn(h.worker().run(pokes, lookup));

    tokio::time::timeout(DEADLINE, making.reached())
        .await
        .expect("RunPodSandbox is called");
    // Force-deleted meanwhile: gone from the store, writes answer 404, and
    // the watch's Delete event pokes the worker.
    *store.locked() = None;
    h.api.pod_gone.store(true, Ordering::SeqCst);
    poke.try_send(()).expect("the delete's poke");
    making.release();

    tokio::time::timeout(DEADLINE, worker)
        .await
        .expect("the worker ends once the pod is cleaned up")
        .expect("no panic");
    assert_eq!(h.view(), PodRuntimeView::default());
}

#[tokio::test]
async fn a_pod_deleted_gracefully_while_its_sandbox_is_made_is_finalised_with_nothing_left() {
    let h = harness();
    let store: Arc<Mutex<Option<Arc<Pod>>>> = Arc::new(Mutex::new(Some(pod())));
    let making = h.runtime.hold_next(Op::RunSandbox);
    let (poke, pokes) = mpsc::channel(1);
    poke.try_send(()).expect("first poke");
    let lookup = {
        let store = store.clone();
        move || {
            let pod = store.locked().clone();
            let on_node = pod.iter().cloned().collect();
            (pod, on_node)
        }
    };
    let worker = tokio::spawn(h.worker().run(pokes, lookup));

    tokio::time::timeout(DEADLINE, making.reached())
        .await
        .expect("RunPodSandbox is called");
    let mut deleting = (*pod()).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(1);
    *store.locked() = Some(Arc::new(deleting));
    poke.try_send(()).expect("the update's poke");
    making.release();

    tokio::time::timeout(DEADLINE, worker)
        .await
        .expect("the worker ends once the pod is finalised")
        .expect("no panic");
    assert_eq!(h.view(), PodRuntimeView::default());
    assert_eq!(h.api.deletions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_sandbox_made_after_its_answer_timed_out_is_used_not_made_again() {
    let h = harness();
    h.runtime.time_out_next(Op::RunSandbox);
    let mut worker = h.worker();

    assert_eq!(
        h.sync(&mut worker, Some(pod())).await,
        Next::Requeue(Some(Duration::from_secs(2)))
    );
    assert_eq!(
        h.api.last_waiting_reasons(),
        BTreeMap::from([
            ("app".into(), "ContainerCreating".into()),
            ("sidecar".into(), "ContainerCreating".into())
        ])
    );

    h.sync(&mut worker, Some(pod())).await;
    let view = h.view();
    assert_eq!(h.runtime.calls_of(Op::RunSandbox).len(), 1);
    assert_eq!(view.sandboxes.len(), 1);
    assert_eq!(running(&view).len(), 2);
}

#[tokio::test]
async fn a_runtime_timing_out_mid_create_retries_with_a_reason_and_duplicates_nothing() {
    let h = harness();
    let sandbox = h.runtime.add_sandbox(UID, true, 0);
    // CreateContainer of the first container is carried out, but its answer
    // comes after the deadline.
    h.runtime.time_out_next(Op::CreateContainer);
    let mut worker = h.worker();

    assert_eq!(
        h.sync(&mut worker, Some(pod())).await,
        Next::Requeue(Some(Duration::from_secs(2)))
    );
    let reasons = h.api.last_waiting_reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(
        reasons.values().next().map(String::as_str),
        Some("CreateContainerError")
    );

    // The runtime answers again: the retry starts the container, and the
    // instance made during the timeout, which never ran, does not stay.
    assert_eq!(h.sync(&mut worker, Some(pod())).await, Next::Requeue(None));
    let view = h.view();
    assert_eq!(
        running(&view),
        BTreeMap::from([
            ("app", vec![sandbox.as_str()]),
            ("sidecar", vec![sandbox.as_str()])
        ])
    );
    assert_eq!(view.containers.len(), 2, "{:#?}", view.containers);
    assert_eq!(h.api.last_waiting_reasons(), BTreeMap::new());
}

#[tokio::test]
async fn a_relist_racing_a_watch_event_makes_one_more_sync_and_loses_nothing() {
    let h = harness();
    let pod = pod();
    let sandbox = h.runtime.add_sandbox(UID, true, 0);
    let app = h
        .runtime
        .add_running_container(UID, &sandbox, "app", &hash_of(&pod, "app"));
    h.runtime
        .add_running_container(UID, &sandbox, "sidecar", &hash_of(&pod, "sidecar"));
    h.env.admitted.locked().insert(UID.into());

    // The worker's listing is taken while everything runs, and answers late.
    let listing = h.runtime.hold_next(Op::Pod);
    let syncs = Arc::new(AtomicUsize::new(0));
    let (poke, pokes) = mpsc::channel(1);
    poke.try_send(()).expect("first poke");
    let lookup = {
        let syncs = syncs.clone();
        let pod = pod.clone();
        move || {
            syncs.fetch_add(1, Ordering::SeqCst);
            (Some(pod.clone()), vec![pod.clone()])
        }
    };
    let worker = tokio::spawn(h.worker().run(pokes, lookup));
    tokio::time::timeout(DEADLINE, listing.reached())
        .await
        .expect("the worker lists the pod");

    // Meanwhile `app` exits: the relist and a watch event both poke.
    h.runtime.exit(&app, 1);
    let _ = poke.try_send(());
    let _ = poke.try_send(());
    listing.release();

    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.runtime.calls_of(Op::StartContainer).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "app never restarted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(syncs.load(Ordering::SeqCst), 2, "one sync per poke burst");
    assert_eq!(creates(&h.runtime), ["app"]);
    assert_eq!(running(&h.view()).len(), 2);

    drop(poke);
    tokio::time::timeout(DEADLINE, worker)
        .await
        .expect("the worker ends when its pokes end")
        .expect("no panic");
}

#[tokio::test]
async fn a_gone_pod_leaves_no_back_off_behind() {
    let h = harness();
    let sandbox = h.runtime.add_sandbox(UID, false, 0);
    let _ = sandbox;
    let now = SystemTime::now();
    let app = BackoffKey::new(UID, "app");
    let image = BackoffKey::new(UID, "image:busybox:1.36");
    h.env.backoff.locked().record_restart(app.clone(), now);
    h.env
        .image_backoff
        .locked()
        .record_restart(image.clone(), now);

    let mut worker = h.worker();
    assert_eq!(h.sync(&mut worker, None).await, Next::Done);

    assert_eq!(h.view(), PodRuntimeView::default());
    assert_eq!(h.env.backoff.locked().current(&app), None);
    assert_eq!(h.env.image_backoff.locked().current(&image), None);
}

/// The fake answers as CRI would for what the worker does not drive: a
/// relist shows every pod the labels mark.
#[tokio::test]
async fn the_fake_runtime_relists_what_the_worker_made() {
    let h = harness();
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod())).await;
    let relisted = h.runtime.relist().await.expect("relist");
    assert_eq!(relisted.keys().collect::<Vec<_>>(), [UID]);
    assert_eq!(relisted[UID].len(), 3, "a sandbox and two containers");
}

#[tokio::test]
async fn an_orphan_whose_removal_is_refused_is_retried_until_nothing_is_left() {
    let h = harness();
    let sandbox = h.runtime.add_sandbox(UID, true, 0);
    h.runtime
        .add_running_container(UID, &sandbox, "app", &hash_of(&pod(), "app"));
    h.runtime
        .fail_next(Op::RemoveSandbox, "device or resource busy");

    let mut worker = h.worker();
    assert_eq!(
        h.sync(&mut worker, None).await,
        Next::Requeue(Some(Duration::from_secs(2)))
    );
    assert_eq!(h.view().sandboxes.len(), 1);
    assert_eq!(h.sync(&mut worker, None).await, Next::Done);
    assert_eq!(h.view(), PodRuntimeView::default());
}

/// The NodeConfig spec `edit` makes, applied as the config loop applies it.
fn applied(edit: impl FnOnce(&mut nodeconfig_crds::NodeConfigSpec)) -> ConfigReport {
    use crate::config::plan::{plan, ConfigPlan, Observed, Overrides};
    let mut spec = nodeconfig_crds::NodeConfigSpec::for_node(NODE);
    edit(&mut spec);
    let observed = Observed {
        uid: "nc-uid",
        spec: &spec,
        generation: 1,
        status_observed_generation: None,
    };
    match plan(observed, None, "", &Overrides::default()) {
        ConfigPlan::Apply { config, .. } => ConfigReport {
            applied: Some(*config),
            ..Default::default()
        },
        other => panic!("the spec applies: {other:?}"),
    }
}

#[tokio::test]
async fn a_sandbox_resolves_through_the_cluster_dns_of_the_nodeconfig_in_force() {
    let h = harness();
    h.config.send_replace(applied(|spec| {
        spec.pods.cluster_dns = vec!["10.96.0.10".into()];
    }));
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod())).await;

    let sandbox = h.view().sandboxes[0].id.clone();
    let dns = h.runtime.dns_of(&sandbox).expect("made by the worker");
    assert_eq!(dns.servers, ["10.96.0.10"]);
    assert_eq!(
        dns.searches,
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "node.example"
        ]
    );
    assert_eq!(dns.options, ["ndots:5"]);
}

#[tokio::test]
async fn without_cluster_dns_a_sandbox_gets_the_nodes_resolver() {
    let h = harness();
    h.config.send_replace(applied(|_| {}));
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod())).await;

    let sandbox = h.view().sandboxes[0].id.clone();
    let dns = h.runtime.dns_of(&sandbox).expect("made by the worker");
    assert_eq!(
        (dns.servers, dns.searches),
        (vec!["192.0.2.53".into()], vec!["node.example".into()]),
        "ClusterFirst falls back to the node's resolver"
    );
}

/// The pod of the hook cases: one container `app` with these lifecycle hooks.
fn pod_with_hooks(lifecycle: serde_json::Value) -> Arc<Pod> {
    let mut value = pod_json();
    value["spec"]["containers"] = serde_json::json!([
        {"name": "app", "image": "busybox:1.36", "lifecycle": lifecycle},
    ]);
    value["spec"]["terminationGracePeriodSeconds"] = serde_json::json!(20);
    Arc::new(serde_json::from_value(value).expect("a valid pod"))
}

/// The calls of the kinds a hook case looks at, in order, without ids.
fn hook_calls(runtime: &FakeRuntime) -> Vec<String> {
    runtime
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::StartContainer(_) => Some("start".to_string()),
            Call::StopContainer(_) => Some("stop".to_string()),
            Call::ExecSync { command, .. } => Some(format!("exec {}", command.join(" "))),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_post_start_exec_hook_runs_in_the_started_container_and_it_keeps_running() {
    let h = harness();
    let pod = pod_with_hooks(serde_json::json!({
        "postStart": {"exec": {"command": ["sh", "-c", "echo started > /tmp/hook"]}},
    }));
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod)).await;

    assert_eq!(
        hook_calls(&h.runtime),
        ["start", "exec sh -c echo started > /tmp/hook"]
    );
    assert_eq!(running(&h.view()).get("app").map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_failed_post_start_hook_kills_the_container_and_it_is_restarted() {
    let h = harness();
    let pod = pod_with_hooks(serde_json::json!({
        "postStart": {"exec": {"command": ["false"]}},
    }));
    h.runtime
        .answer_next_exec(crate::pods::container_runtime::ExecOutput {
            exit_code: 1,
            stdout: b"nope".to_vec(),
            stderr: Vec::new(),
        });
    let mut worker = h.worker();
    let next = h.sync(&mut worker, Some(pod.clone())).await;

    assert_eq!(hook_calls(&h.runtime), ["start", "exec false", "stop"]);
    let view = h.view();
    assert_eq!(view.containers.len(), 1);
    assert_eq!(view.containers[0].state, ContainerState::Exited);
    // Killed with the pod's grace period.
    assert_eq!(h.runtime.grace_of(&view.containers[0].id), Some(20));
    assert_eq!(
        h.api.last_waiting_reasons().get("app").map(String::as_str),
        Some("PostStartHookError")
    );
    assert!(matches!(next, Next::Requeue(Some(_))), "{next:?}");

    // The next look restarts it (Always), and this time the hook passes.
    h.sync(&mut worker, Some(pod)).await;
    assert_eq!(
        hook_calls(&h.runtime),
        ["start", "exec false", "stop", "start", "exec false"]
    );
    let view = h.view();
    let app = view.latest("app").expect("app");
    assert_eq!(app.state, ContainerState::Running);
    assert_eq!(app.restart_count, 1);
}

#[tokio::test]
async fn a_pre_stop_hook_runs_before_the_container_is_stopped() {
    let h = harness();
    let pod = pod_with_hooks(serde_json::json!({
        "preStop": {"exec": {"command": ["sh", "-c", "echo bye"]}},
    }));
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod.clone())).await;
    assert_eq!(hook_calls(&h.runtime), ["start"]);

    let mut deleting = (*pod).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(15);
    let deleting = Arc::new(deleting);
    assert_eq!(
        h.sync(&mut worker, Some(deleting.clone())).await,
        Next::Done
    );

    assert_eq!(
        hook_calls(&h.runtime),
        ["start", "exec sh -c echo bye", "stop"]
    );
    let stopped = h
        .runtime
        .calls_of(Op::StopContainer)
        .into_iter()
        .find_map(|c| match c {
            Call::StopContainer(id) => Some(id),
            _ => None,
        })
        .expect("a stop");
    // The hook took no time: the whole deletion grace is left for the stop.
    assert_eq!(h.runtime.grace_of(&stopped), Some(15));
}

#[tokio::test]
async fn every_container_gets_the_pods_hosts_file_with_its_ip_and_aliases() {
    let h = harness();
    let mut json = pod_json();
    json["spec"]["hostAliases"] =
        serde_json::json!([{"ip": "123.45.67.89", "hostnames": ["foo", "bar"]}]);
    let pod: Arc<Pod> = Arc::new(serde_json::from_value(json).expect("a valid pod"));
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod)).await;

    let sandbox = h.view().sandboxes[0].id.clone();
    let ip = h.runtime.sandbox_ips(&sandbox).await.expect("ips")[0].clone();
    for name in ["app", "sidecar"] {
        let mounts = h.runtime.mounts_of(name);
        let hosts = mounts
            .iter()
            .find(|m| m.container_path == "/etc/hosts")
            .unwrap_or_else(|| panic!("{name} has no /etc/hosts mount: {mounts:?}"));
        assert!(!hosts.readonly);
        let content = std::fs::read_to_string(&hosts.host_path).expect("the file is written");
        assert!(content.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(content.contains(&format!("\n{ip}\tweb\n")), "{content}");
        assert!(content.ends_with("# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n"));
        assert!(hosts.host_path.ends_with(&format!("pods/{UID}/etc-hosts")));
    }
}

#[tokio::test]
async fn a_pod_past_its_active_deadline_is_killed_and_fails_with_deadline_exceeded() {
    let h = harness();
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod())).await;
    assert_eq!(running(&h.view()).len(), 2, "both containers run first");

    // The deadline is set (lowered) while the pod runs.
    let mut json = pod_json();
    json["spec"]["activeDeadlineSeconds"] = serde_json::json!(5);
    json["status"] = serde_json::json!({"phase": "Running", "startTime": "2020-01-01T00:00:00Z"});
    let past: Arc<Pod> = Arc::new(serde_json::from_value(json).expect("a valid pod"));
    assert_eq!(h.sync(&mut worker, Some(past)).await, Next::Requeue(None));

    assert!(running(&h.view()).is_empty(), "every container is stopped");
    let patches = h.api.patches.locked();
    let status = &patches.last().expect("a status written")["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["reason"], "DeadlineExceeded");
    assert_eq!(
        status["message"],
        "Pod was active on the node longer than the specified deadline"
    );
}

#[tokio::test]
async fn a_best_effort_pod_is_refused_under_memory_pressure_and_starts_nothing() {
    let h = harness();
    h.pressure.send_modify(|p| {
        p.measured = true;
        p.memory = true;
    });
    let mut worker = h.worker();
    assert_eq!(h.sync(&mut worker, Some(pod())).await, Next::Requeue(None));

    assert!(
        h.view().sandboxes.is_empty(),
        "no sandbox for a refused pod"
    );
    let patches = h.api.patches.locked();
    let status = &patches.last().expect("a status written")["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["reason"], "Evicted");
    assert_eq!(
        status["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. "
    );
}

#[tokio::test]
async fn a_sidecar_starts_before_the_app_and_stops_after_it() {
    let h = harness();
    let mut value = pod_json();
    value["spec"]["initContainers"] = serde_json::json!([
        {"name": "side", "image": "busybox:1.36", "restartPolicy": "Always"},
    ]);
    value["spec"]["containers"] = serde_json::json!([{"name": "app", "image": "busybox:1.36"}]);
    let pod: Arc<Pod> = Arc::new(serde_json::from_value(value).expect("a valid pod"));
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod.clone())).await;
    assert_eq!(creates(&h.runtime), ["side"]);
    h.sync(&mut worker, Some(pod.clone())).await;
    assert_eq!(creates(&h.runtime), ["side", "app"]);
    let view = h.view();
    assert_eq!(running(&view).len(), 2, "{view:?}");
    let id_of = |name: &str| view.latest(name).expect(name).id.clone();
    let (side, app) = (id_of("side"), id_of("app"));

    let mut deleting = (*pod).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    assert_eq!(
        h.sync(&mut worker, Some(Arc::new(deleting))).await,
        Next::Done
    );
    let stops: Vec<Call> = h.runtime.calls_of(Op::StopContainer);
    assert_eq!(
        stops[..2],
        [Call::StopContainer(app), Call::StopContainer(side)]
    );
}

#[tokio::test]
async fn run_as_non_root_reads_the_images_user_and_refuses_root() {
    let h = harness();
    let mut value = pod_json();
    value["spec"]["securityContext"] = serde_json::json!({"runAsNonRoot": true});
    value["spec"]["containers"] = serde_json::json!([
        {"name": "app", "image": "rootly:1"},
        {"name": "sidecar", "image": "nobody:1"},
    ]);
    let pod: Arc<Pod> = Arc::new(serde_json::from_value(value).expect("a valid pod"));
    h.runtime.set_image_user(
        "nobody:1",
        crate::pods::container_runtime::ImageUserStatus {
            uid: Some(65534),
            username: String::new(),
        },
    );
    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod)).await;

    assert_eq!(
        creates(&h.runtime),
        ["sidecar"],
        "only the non-root image runs"
    );
    assert_eq!(
        h.runtime.calls_of(Op::ImageUser),
        [
            Call::ImageUser("rootly:1".into()),
            Call::ImageUser("nobody:1".into())
        ]
    );
    assert_eq!(
        h.api.last_waiting_reasons().get("app").map(String::as_str),
        Some("CreateContainerConfigError")
    );
}

#[tokio::test]
async fn an_ephemeral_container_starts_once_in_the_running_sandbox_with_its_targets_processes() {
    let h = harness();
    let mut spec = pod_json();
    spec["spec"]["ephemeralContainers"] = serde_json::json!([
        {"name": "debug", "image": "busybox:1.36", "targetContainerName": "app",
         "stdin": true, "tty": true},
    ]);
    let pod: Arc<Pod> = Arc::new(serde_json::from_value(spec).expect("a valid pod"));
    let sandbox = h.runtime.add_sandbox(UID, true, 0);
    let app = h
        .runtime
        .add_running_container(UID, &sandbox, "app", &hash_of(&pod, "app"));
    h.runtime
        .add_running_container(UID, &sandbox, "sidecar", &hash_of(&pod, "sidecar"));

    let mut worker = h.worker();
    h.sync(&mut worker, Some(pod.clone())).await;
    assert_eq!(creates(&h.runtime), ["debug"]);
    assert_eq!(h.runtime.calls_of(Op::RunSandbox), []);
    let view = h.view();
    assert_eq!(running(&view).get("debug"), Some(&vec![sandbox.as_str()]));
    let debug = view.latest("debug").expect("debug").id.clone();
    let namespaces = h.runtime.namespaces_of(&debug).expect("namespaces");
    assert_eq!(
        (namespaces.pid, namespaces.target_id.as_str()),
        (k8s_cri::v1::NamespaceMode::Target as i32, app.as_str())
    );
    {
        let patches = h.api.patches.locked();
        let status = &patches.last().expect("a status written")["status"];
        let debug_status = &status["ephemeralContainerStatuses"][0];
        assert_eq!(debug_status["name"], "debug");
        assert!(debug_status["state"]["running"].is_object(), "{status}");
    }

    // It exits: never started again.
    h.runtime.exit(&debug, 0);
    h.sync(&mut worker, Some(pod.clone())).await;
    h.sync(&mut worker, Some(pod)).await;
    assert_eq!(creates(&h.runtime), ["debug"]);
}
