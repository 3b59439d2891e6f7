//! The pod's phase and conditions from what CRI reports, as the kubelet's
//! `getPhase` and `generateAPIPodStatus` compute them. Pure: the shell adds
//! times (keeping `lastTransitionTime` when a condition's status is unchanged)
//! and patches the Pod.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use crate::pods::plan::{is_sidecar, RestartPolicy};
use crate::pods::runtime_view::{ContainerState, PodRuntimeView, SandboxState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// One condition, without times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Option<&'static str>,
    pub message: Option<String>,
}

impl Condition {
    fn yes(type_: &'static str) -> Self {
        Self {
            type_,
            status: true,
            reason: None,
            message: None,
        }
    }

    fn no(type_: &'static str, reason: &'static str, message: Option<String>) -> Self {
        Self {
            type_,
            status: false,
            reason: Some(reason),
            message,
        }
    }
}

/// Phase and the five conditions, in the order the kubelet writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatusView {
    pub phase: PodPhase,
    pub conditions: Vec<Condition>,
}

/// `probe_ready`: containers whose readiness probe currently succeeds; a
/// container without a readiness probe is ready while it runs.
pub fn pod_status(
    pod: &Pod,
    runtime: &PodRuntimeView,
    probe_ready: &BTreeSet<String>,
) -> PodStatusView {
    let phase = phase(pod, runtime);
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);

    let sandbox_ready = runtime
        .sandboxes
        .first()
        .is_some_and(|s| s.state == SandboxState::Ready && (host_network || s.ip.is_some()));
    let ready_to_start = if sandbox_ready {
        Condition::yes("PodReadyToStartContainers")
    } else {
        Condition {
            type_: "PodReadyToStartContainers",
            status: false,
            reason: None,
            message: None,
        }
    };

    let any_regular_started = containers.iter().any(|c| runtime.latest(&c.name).is_some());
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|c| {
            // A sidecar is done initialising once it runs.
            !runtime.latest(&c.name).is_some_and(|s| {
                (s.state == ContainerState::Exited && s.exit_code == 0 && !is_sidecar(c))
                    || (s.state == ContainerState::Running && is_sidecar(c))
            })
        })
        .map(|c| c.name.as_str())
        .collect();
    let initialized = if incomplete.is_empty() || any_regular_started {
        Condition::yes("Initialized")
    } else {
        Condition::no(
            "Initialized",
            "ContainersNotInitialized",
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    };

    // Sidecars count for readiness, as the kubelet's since 1.29.
    let unready: Vec<&str> = containers
        .iter()
        .chain(init.iter().filter(|c| is_sidecar(c)))
        .filter(|c| {
            let running = runtime
                .latest(&c.name)
                .is_some_and(|s| s.state == ContainerState::Running);
            !(running && (c.readiness_probe.is_none() || probe_ready.contains(&c.name)))
        })
        .map(|c| c.name.as_str())
        .collect();
    let (containers_ready, ready) = if phase == PodPhase::Succeeded {
        (
            Condition::no("ContainersReady", "PodCompleted", None),
            Condition::no("Ready", "PodCompleted", None),
        )
    } else if unready.is_empty() {
        (Condition::yes("ContainersReady"), Condition::yes("Ready"))
    } else {
        let message = format!("containers with unready status: [{}]", unready.join(" "));
        (
            Condition::no(
                "ContainersReady",
                "ContainersNotReady",
                Some(message.clone()),
            ),
            Condition::no("Ready", "ContainersNotReady", Some(message)),
        )
    };

    PodStatusView {
        phase,
        conditions: vec![
            ready_to_start,
            initialized,
            ready,
            containers_ready,
            Condition::yes("PodScheduled"),
        ],
    }
}

/// The kubelet's `getPhase`, reading an exited container as the API status
/// would show it: `Terminated` when it will not restart, else `Waiting` with a
/// last termination (stopped, but neither succeeded nor failed).
pub fn phase(pod: &Pod, runtime: &PodRuntimeView) -> PodPhase {
    let policy = RestartPolicy::of(pod);
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let restarts = |code: i32| match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Never => false,
    };

    let any_regular_started = containers.iter().any(|c| runtime.latest(&c.name).is_some());
    let (mut pending_init, mut failed_init) = (0, 0);
    for c in init {
        if is_sidecar(c) {
            // A sidecar that runs, or restarts after the pod initialised,
            // neither holds the pod back nor fails it.
            let running = runtime
                .latest(&c.name)
                .is_some_and(|s| s.state == ContainerState::Running);
            pending_init += usize::from(!running && !any_regular_started);
            continue;
        }
        match runtime.latest(&c.name) {
            Some(s) if s.state == ContainerState::Exited => {
                failed_init += usize::from(s.exit_code != 0)
            }
            _ => pending_init += 1,
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in containers {
        match runtime.latest(&c.name) {
            None => unknown += 1,
            Some(s) => match s.state {
                ContainerState::Running => running += 1,
                ContainerState::Exited => {
                    stopped += 1;
                    succeeded += usize::from(s.exit_code == 0 && !restarts(s.exit_code));
                }
                // Created, never started: Waiting, unless an earlier instance exited.
                ContainerState::Created if s.restart_count > 0 => stopped += 1,
                ContainerState::Created => waiting += 1,
                ContainerState::Unknown => unknown += 1,
            },
        }
    }
    if failed_init > 0 && policy == RestartPolicy::Never {
        return PodPhase::Failed;
    }
    if ((pending_init > 0 || failed_init > 0) && !any_regular_started) || waiting > 0 {
        return PodPhase::Pending;
    }
    if running > 0 && unknown == 0 {
        return PodPhase::Running;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        return match policy {
            RestartPolicy::Always => PodPhase::Running,
            _ if stopped == succeeded => PodPhase::Succeeded,
            RestartPolicy::Never => PodPhase::Failed,
            RestartPolicy::OnFailure => PodPhase::Running,
        };
    }
    PodPhase::Pending
}
