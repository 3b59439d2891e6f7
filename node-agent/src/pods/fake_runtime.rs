//! A recording fake of the [`ContainerRuntime`], for the pod shell's tests:
//! what the kubelet's tests get from `pkg/kubelet/cri/remote/fake` and
//! `FakeRuntimeService`. Sandboxes and containers are plain CRI messages,
//! [`ContainerRuntime::pod`] and [`ContainerRuntime::relist`] answer from
//! them, every call is recorded in order, and any call can be told to fail,
//! to time out (the runtime does it, the answer is lost) or to hold its
//! answer until a test releases it.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use k8s_cri::v1 as cri;
use tokio::sync::Notify;

use crate::edge::cri::CriError;
use crate::locked::Locked;
use crate::pods::container_runtime::{
    fingerprints, newest_ready, ContainerRuntime, ExecOutput, Fingerprint, ImageError,
    ImageUserStatus, PodRuntime, PullPolicy,
};
use crate::pods::runtime_view::{
    container_annotations, container_labels, sandbox_labels, ContainerView, PodRuntimeView,
    LABEL_POD_UID,
};

/// A call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Pod(String),
    Relist,
    RunSandbox { uid: String, attempt: u32 },
    SandboxIps(String),
    StopSandbox(String),
    RemoveSandbox(String),
    EnsureImage(String),
    ImageUser(String),
    CreateContainer { sandbox: String, name: String },
    StartContainer(String),
    StopContainer(String),
    RemoveContainer(String),
    ExecSync { id: String, command: Vec<String> },
    UpdateContainerResources(String),
}

/// The kind of a [`Call`], to aim a fault at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Pod,
    Relist,
    RunSandbox,
    SandboxIps,
    StopSandbox,
    RemoveSandbox,
    EnsureImage,
    ImageUser,
    CreateContainer,
    StartContainer,
    StopContainer,
    RemoveContainer,
    ExecSync,
    UpdateContainerResources,
}

impl Call {
    fn op(&self) -> Op {
        match self {
            Self::Pod(_) => Op::Pod,
            Self::Relist => Op::Relist,
            Self::RunSandbox { .. } => Op::RunSandbox,
            Self::SandboxIps(_) => Op::SandboxIps,
            Self::StopSandbox(_) => Op::StopSandbox,
            Self::RemoveSandbox(_) => Op::RemoveSandbox,
            Self::EnsureImage(_) => Op::EnsureImage,
            Self::ImageUser(_) => Op::ImageUser,
            Self::CreateContainer { .. } => Op::CreateContainer,
            Self::StartContainer(_) => Op::StartContainer,
            Self::StopContainer(_) => Op::StopContainer,
            Self::RemoveContainer(_) => Op::RemoveContainer,
            Self::ExecSync { .. } => Op::ExecSync,
            Self::UpdateContainerResources(_) => Op::UpdateContainerResources,
        }
    }

    fn method(&self) -> &'static str {
        match self.op() {
            Op::Pod => "ListPodSandbox",
            Op::Relist => "ListContainers",
            Op::RunSandbox => "RunPodSandbox",
            Op::SandboxIps => "PodSandboxStatus",
            Op::StopSandbox => "StopPodSandbox",
            Op::RemoveSandbox => "RemovePodSandbox",
            Op::EnsureImage => "PullImage",
            Op::ImageUser => "ImageStatus",
            Op::CreateContainer => "CreateContainer",
            Op::StartContainer => "StartContainer",
            Op::StopContainer => "StopContainer",
            Op::RemoveContainer => "RemoveContainer",
            Op::ExecSync => "ExecSync",
            Op::UpdateContainerResources => "UpdateContainerResources",
        }
    }
}

/// A call held by the fake until the test releases it.
#[derive(Debug, Default)]
pub struct Gate {
    reached: Notify,
    release: Notify,
}

impl Gate {
    /// Waits until the held call has been made.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held call answer.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

enum Fault {
    /// Refused with this message; nothing done.
    Fail(String),
    /// Done by the runtime, but the caller's deadline passed first.
    TimeOut,
    /// Done at once (a listing sees the state of that moment), answered
    /// only when the gate is released.
    Hold(Arc<Gate>),
}

#[derive(Default)]
struct State {
    next_id: u64,
    last_time: i64,
    sandboxes: Vec<cri::PodSandbox>,
    ips: HashMap<String, String>,
    /// Each container with the id of its sandbox.
    containers: Vec<(String, cri::ContainerStatus)>,
    calls: Vec<Call>,
    faults: HashMap<Op, VecDeque<Fault>>,
    /// The resolver each sandbox was made with, by sandbox id.
    dns: HashMap<String, cri::DnsConfig>,
    /// The grace period of each container's last StopContainer.
    stop_graces: HashMap<String, i64>,
    /// What the next ExecSync calls answer, in order (then exit code 0).
    exec_answers: VecDeque<ExecOutput>,
    /// The user each image names (none when not set).
    image_users: HashMap<String, ImageUserStatus>,
    /// The namespaces each container was created with, by container id.
    namespaces: HashMap<String, cri::NamespaceOption>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// Now in CRI nanoseconds, strictly after the last time handed out, so
    /// newer objects always sort first.
    fn now(&mut self) -> i64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.last_time = now.max(self.last_time + 1);
        self.last_time
    }

    fn sandbox(&mut self, id: &str) -> Option<&mut cri::PodSandbox> {
        self.sandboxes.iter_mut().find(|s| s.id == id)
    }

    fn container(&mut self, id: &str) -> Option<&mut cri::ContainerStatus> {
        self.containers
            .iter_mut()
            .map(|(_, c)| c)
            .find(|c| c.id == id)
    }

    fn stop(&mut self, container: &str) {
        let now = self.now();
        if let Some(c) = self.container(container) {
            if c.state == cri::ContainerState::ContainerRunning as i32 {
                c.state = cri::ContainerState::ContainerExited as i32;
                c.exit_code = 137;
                c.finished_at = now;
            }
        }
    }

    fn pod(&self, uid: &str) -> PodRuntime {
        let ours = |labels: &HashMap<String, String>| {
            labels.get(LABEL_POD_UID).map(String::as_str) == Some(uid)
        };
        let sandboxes: Vec<&cri::PodSandbox> =
            self.sandboxes.iter().filter(|s| ours(&s.labels)).collect();
        let ips: Vec<String> = newest_ready(&sandboxes)
            .and_then(|s| self.ips.get(&s.id))
            .into_iter()
            .cloned()
            .collect();
        let containers = self
            .containers
            .iter()
            .filter(|(_, c)| ours(&c.labels))
            .map(|(sandbox, c)| {
                let mut view = ContainerView::from_cri_status(c);
                view.sandbox_id = sandbox.clone();
                view
            })
            .collect();
        PodRuntime::assemble(&sandboxes, ips, containers)
    }
}

/// The fake runtime. Share it as `Arc<FakeRuntime>`; hand the worker a clone
/// as `Arc<dyn ContainerRuntime>`.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.locked().calls.clone()
    }

    /// The resolver (resolv.conf) sandbox `id` was made with.
    pub fn dns_of(&self, id: &str) -> Option<cri::DnsConfig> {
        self.state.locked().dns.get(id).cloned()
    }

    /// The grace period container `id` was last stopped with.
    pub fn grace_of(&self, id: &str) -> Option<i64> {
        self.state.locked().stop_graces.get(id).copied()
    }

    /// `image` names this user in its config.
    pub fn set_image_user(&self, image: &str, user: ImageUserStatus) {
        self.state.locked().image_users.insert(image.into(), user);
    }

    /// The namespaces container `id` was created with.
    pub fn namespaces_of(&self, id: &str) -> Option<cri::NamespaceOption> {
        self.state.locked().namespaces.get(id).cloned()
    }

    /// The next ExecSync answers with `output` (the command "ran").
    pub fn answer_next_exec(&self, output: ExecOutput) {
        self.state.locked().exec_answers.push_back(output);
    }

    /// The mounts the newest container of this name was created with.
    pub fn mounts_of(&self, name: &str) -> Vec<cri::Mount> {
        let state = self.state.locked();
        state
            .containers
            .iter()
            .rev()
            .map(|(_, c)| c)
            .find(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|c| c.mounts.clone())
            .unwrap_or_default()
    }

    /// The calls so far of one kind.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op() == op).collect()
    }

    /// The next call of this kind is refused.
    pub fn fail_next(&self, op: Op, message: &str) {
        self.push_fault(op, Fault::Fail(message.to_string()));
    }

    /// The next call of this kind is carried out by the runtime, but its
    /// answer comes too late: the caller gets a timeout.
    pub fn time_out_next(&self, op: Op) {
        self.push_fault(op, Fault::TimeOut);
    }

    /// The next call of this kind is carried out at once and answered on
    /// [`Gate::release`].
    pub fn hold_next(&self, op: Op) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.push_fault(op, Fault::Hold(gate.clone()));
        gate
    }

    fn push_fault(&self, op: Op, fault: Fault) {
        self.state
            .locked()
            .faults
            .entry(op)
            .or_default()
            .push_back(fault);
    }

    /// What the runtime holds for the pod, as the worker would list it.
    pub fn view(&self, uid: &str) -> PodRuntimeView {
        self.state.locked().pod(uid).view
    }

    /// A sandbox left by an earlier run of the agent; returns its id.
    pub fn add_sandbox(&self, uid: &str, ready: bool, attempt: u32) -> String {
        let mut state = self.state.locked();
        let id = state.id("sandbox");
        let created_at = state.now();
        state.sandboxes.push(cri::PodSandbox {
            id: id.clone(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "pod".into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt,
            }),
            state: if ready {
                cri::PodSandboxState::SandboxReady
            } else {
                cri::PodSandboxState::SandboxNotready
            } as i32,
            created_at,
            labels: sandbox_labels(uid, "pod", "default"),
            ..Default::default()
        });
        let ip = format!("10.88.0.{}", state.next_id);
        state.ips.insert(id.clone(), ip);
        id
    }

    /// A running container left by an earlier run of the agent, created
    /// from `spec_hash`; returns its id.
    pub fn add_running_container(
        &self,
        uid: &str,
        sandbox: &str,
        name: &str,
        spec_hash: &str,
    ) -> String {
        let mut state = self.state.locked();
        let id = state.id("container");
        let created_at = state.now();
        let status = cri::ContainerStatus {
            id: id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            created_at,
            started_at: created_at,
            labels: container_labels(uid, "pod", "default", name),
            annotations: container_annotations(spec_hash, 0),
            ..Default::default()
        };
        state.containers.push((sandbox.to_string(), status));
        id
    }

    /// The container's process ends with `exit_code`.
    pub fn exit(&self, container: &str, exit_code: i32) {
        let mut state = self.state.locked();
        let now = state.now();
        if let Some(c) = state.container(container) {
            c.state = cri::ContainerState::ContainerExited as i32;
            c.exit_code = exit_code;
            c.finished_at = now;
        }
    }

    /// Records the call, applies its fault if one is aimed at it, and
    /// carries it out on the state.
    async fn call<T>(
        &self,
        call: Call,
        effect: impl FnOnce(&mut State) -> Result<T, tonic::Status>,
    ) -> Result<T, CriError> {
        let method = call.method();
        let fault = {
            let mut state = self.state.locked();
            let op = call.op();
            state.calls.push(call);
            state.faults.get_mut(&op).and_then(VecDeque::pop_front)
        };
        let error = |status: tonic::Status| CriError::Call {
            endpoint: "fake".into(),
            method,
            status: Box::new(status),
        };
        match fault {
            None => effect(&mut self.state.locked()).map_err(error),
            Some(Fault::Fail(message)) => Err(error(tonic::Status::unavailable(message))),
            Some(Fault::TimeOut) => {
                let _done_anyway = effect(&mut self.state.locked());
                Err(CriError::CallTimeout {
                    endpoint: "fake".into(),
                    what: method,
                    timeout: Duration::from_secs(240),
                })
            }
            Some(Fault::Hold(gate)) => {
                let answer = effect(&mut self.state.locked()).map_err(error);
                gate.reached.notify_one();
                gate.release.notified().await;
                answer
            }
        }
    }
}

fn not_found(what: &str, id: &str) -> tonic::Status {
    tonic::Status::not_found(format!("{what} {id} not found"))
}

impl ContainerRuntime for FakeRuntime {
    fn pod<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<PodRuntime, CriError>> {
        Box::pin(self.call(Call::Pod(uid.into()), |s| Ok(s.pod(uid))))
    }

    fn relist(&self) -> BoxFuture<'_, Result<BTreeMap<String, Fingerprint>, CriError>> {
        Box::pin(self.call(Call::Relist, |s| {
            Ok(fingerprints(
                s.sandboxes
                    .iter()
                    .map(|sb| (sb.id.as_str(), &sb.labels, sb.state)),
                s.containers
                    .iter()
                    .map(|(_, c)| (c.id.as_str(), &c.labels, c.state)),
            ))
        }))
    }

    fn run_sandbox(
        &self,
        config: cri::PodSandboxConfig,
    ) -> BoxFuture<'_, Result<String, CriError>> {
        let metadata = config.metadata.clone().unwrap_or_default();
        let call = Call::RunSandbox {
            uid: metadata.uid.clone(),
            attempt: metadata.attempt,
        };
        Box::pin(self.call(call, move |s| {
            let id = s.id("sandbox");
            let created_at = s.now();
            let ip = format!("10.88.0.{}", s.next_id);
            s.ips.insert(id.clone(), ip);
            s.dns
                .insert(id.clone(), config.dns_config.clone().unwrap_or_default());
            s.sandboxes.push(cri::PodSandbox {
                id: id.clone(),
                metadata: Some(metadata),
                state: cri::PodSandboxState::SandboxReady as i32,
                created_at,
                labels: config.labels,
                annotations: config.annotations,
                runtime_handler: String::new(),
            });
            Ok(id)
        }))
    }

    fn sandbox_ips<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, CriError>> {
        Box::pin(self.call(Call::SandboxIps(id.into()), move |s| {
            if s.sandbox(id).is_none() {
                return Err(not_found("sandbox", id));
            }
            Ok(s.ips.get(id).cloned().into_iter().collect())
        }))
    }

    fn stop_sandbox<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(self.call(Call::StopSandbox(id.into()), move |s| {
            let inside: Vec<String> = s
                .containers
                .iter()
                .filter(|(sandbox, _)| sandbox == id)
                .map(|(_, c)| c.id.clone())
                .collect();
            for c in inside {
                s.stop(&c);
            }
            if let Some(sandbox) = s.sandbox(id) {
                sandbox.state = cri::PodSandboxState::SandboxNotready as i32;
            }
            Ok(())
        }))
    }

    fn remove_sandbox<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(self.call(Call::RemoveSandbox(id.into()), move |s| {
            s.containers.retain(|(sandbox, _)| sandbox != id);
            s.sandboxes.retain(|sb| sb.id != id);
            s.ips.remove(id);
            Ok(())
        }))
    }

    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        _policy: PullPolicy,
        _sandbox: &'a cri::PodSandboxConfig,
    ) -> BoxFuture<'a, Result<bool, ImageError>> {
        Box::pin(async move {
            self.call(Call::EnsureImage(image.into()), |_| Ok(false))
                .await
                .map_err(|e| ImageError::Runtime(e.to_string()))
        })
    }

    fn image_user<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<ImageUserStatus, CriError>> {
        Box::pin(self.call(Call::ImageUser(image.into()), move |s| {
            Ok(s.image_users.get(image).cloned().unwrap_or_default())
        }))
    }

    fn create_container<'a>(
        &'a self,
        sandbox_id: &'a str,
        config: cri::ContainerConfig,
        _sandbox: &'a cri::PodSandboxConfig,
    ) -> BoxFuture<'a, Result<String, CriError>> {
        let metadata = config.metadata.clone().unwrap_or_default();
        let call = Call::CreateContainer {
            sandbox: sandbox_id.into(),
            name: metadata.name.clone(),
        };
        Box::pin(self.call(call, move |s| {
            let ready = s
                .sandbox(sandbox_id)
                .is_some_and(|sb| sb.state == cri::PodSandboxState::SandboxReady as i32);
            if !ready {
                return Err(tonic::Status::failed_precondition(format!(
                    "sandbox {sandbox_id} is not ready"
                )));
            }
            let id = s.id("container");
            let created_at = s.now();
            let namespaces = config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|sc| sc.namespace_options.clone());
            if let Some(namespaces) = namespaces {
                s.namespaces.insert(id.clone(), namespaces);
            }
            let status = cri::ContainerStatus {
                id: id.clone(),
                metadata: Some(metadata),
                state: cri::ContainerState::ContainerCreated as i32,
                created_at,
                image: config.image,
                labels: config.labels,
                annotations: config.annotations,
                mounts: config.mounts,
                log_path: config.log_path,
                ..Default::default()
            };
            s.containers.push((sandbox_id.to_string(), status));
            Ok(id)
        }))
    }

    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(self.call(Call::StartContainer(id.into()), move |s| {
            let now = s.now();
            let c = s.container(id).ok_or_else(|| not_found("container", id))?;
            if c.state != cri::ContainerState::ContainerCreated as i32 {
                return Err(tonic::Status::failed_precondition(format!(
                    "container {id} is not in created state"
                )));
            }
            c.state = cri::ContainerState::ContainerRunning as i32;
            c.started_at = now;
            Ok(())
        }))
    }

    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        grace_seconds: i64,
    ) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(self.call(Call::StopContainer(id.into()), move |s| {
            s.stop_graces.insert(id.to_string(), grace_seconds);
            s.stop(id);
            Ok(())
        }))
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(self.call(Call::RemoveContainer(id.into()), move |s| {
            s.containers.retain(|(_, c)| c.id != id);
            Ok(())
        }))
    }

    fn update_container_resources<'a>(
        &'a self,
        id: &'a str,
        resources: cri::LinuxContainerResources,
    ) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(
            self.call(Call::UpdateContainerResources(id.into()), move |s| {
                let c = s.container(id).ok_or_else(|| not_found("container", id))?;
                c.resources = Some(cri::ContainerResources {
                    linux: Some(resources),
                    ..Default::default()
                });
                Ok(())
            }),
        )
    }

    fn exec_sync<'a>(
        &'a self,
        id: &'a str,
        command: &'a [String],
        _timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<ExecOutput, CriError>> {
        let call = Call::ExecSync {
            id: id.into(),
            command: command.to_vec(),
        };
        Box::pin(self.call(call, move |s| {
            let running = s
                .container(id)
                .is_some_and(|c| c.state == cri::ContainerState::ContainerRunning as i32);
            if !running {
                return Err(tonic::Status::failed_precondition(format!(
                    "container {id} is not running"
                )));
            }
            Ok(s.exec_answers.pop_front().unwrap_or_default())
        }))
    }
}
