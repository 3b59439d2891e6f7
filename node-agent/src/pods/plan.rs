//! The pod planner, after the kubelet's `computePodActions`: given a Pod, what
//! CRI reports for it, the probe verdicts and the back-off, it says what to do
//! (kill the pod, create a sandbox, start the next init container, start and
//! kill containers) and why. Pure; the shell runs the actions, then records
//! each restart of an exited container in the [`Backoff`].
//!
//! The back-off needs each exited container's `finished_at`, so the runtime
//! view must be built from CRI `ContainerStatus`, not `ListContainers` alone.
//! Restartable init containers (sidecars, `restartPolicy: Always`) start in
//! their turn, let the next init container start once they run (and their
//! startup probe passed), and are kept running afterwards. Ephemeral
//! containers start once in the existing sandbox, initialized or not, and
//! never again ([`EphemeralStart`]). In-place resize is decided in
//! [`crate::pods::resize`] (the shell plans with the allocated Pod and adds
//! its restarts).
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use sha2::{Digest, Sha256};

use crate::pods::backoff::{Backoff, BackoffKey};
use crate::pods::ephemeral;
use crate::pods::runtime_view::{ContainerState, ContainerView, PodRuntimeView, SandboxState};

/// The Pod's `spec.restartPolicy` (default `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    /// The kubelet's `shouldRestartOnFailure`.
    fn restarts_on_failure(self) -> bool {
        self != Self::Never
    }
}

/// Containers whose probes have failed past their thresholds (the prober's verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeFailures {
    pub liveness: BTreeSet<String>,
    pub startup: BTreeSet<String>,
    /// Containers whose startup probe has not succeeded yet: a sidecar
    /// listed here holds back the init containers after it.
    pub not_started: BTreeSet<String>,
}

/// A restartable init container (`restartPolicy: Always`), a sidecar.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// Why a container is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    /// No instance in the current sandbox: a new pod, a new sandbox, or the
    /// next init container. `restart_count` still counts earlier instances.
    NotCreated,
    /// The last instance exited (or was created and never ran, or is in an unknown state).
    Restart,
    /// The running instance is being killed for this reason and replaced.
    Replace(KillReason),
}

/// Why a container is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Its spec hash differs from the one it was created with.
    SpecChanged,
    LivenessFailed,
    StartupFailed,
    /// CRI reports its state as unknown: stop it before anything else.
    UnknownState,
    /// An in-place resize changed a resource whose `resizePolicy` is
    /// `RestartContainer` ([`crate::pods::resize`]).
    ResizeRestart,
}

impl KillReason {
    /// The message the kubelet logs and puts in the Killing event.
    pub fn message(self) -> &'static str {
        match self {
            Self::SpecChanged => "Container definition changed",
            Self::LivenessFailed => "Container failed liveness probe, will be restarted",
            Self::StartupFailed => "Container failed startup probe, will be restarted",
            Self::UnknownState => "Container is in unknown state, try killing it before restarting",
            Self::ResizeRestart => "Container resize requires restart",
        }
    }
}

/// A container to create and start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStart {
    pub name: String,
    pub reason: StartReason,
    /// The restart count to record on the new instance (previous + 1, or 0).
    pub restart_count: u32,
    /// When the previous instance exited; the shell passes it to
    /// [`Backoff::record_restart`] once the container is started.
    pub previous_exit: Option<SystemTime>,
}

/// An ephemeral container to create and start in the existing sandbox, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralStart {
    pub name: String,
    /// Its `targetContainerName`, whose process namespace it joins.
    pub target: Option<PidTarget>,
}

/// The container an ephemeral container shares its processes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidTarget {
    pub name: String,
    /// Its newest instance; `None` when it has none (the kubelet's "unable
    /// to find target container", a CreateContainerConfigError).
    pub container_id: Option<String>,
}

/// A running (or unknown) container to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerKill {
    pub id: String,
    pub name: String,
    pub reason: KillReason,
}

/// A container that should start but waits for its back-off (`CrashLoopBackOff`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingOff {
    pub name: String,
    pub remaining: Duration,
}

/// What the shell must do for one pod, like the kubelet's `podActions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox(es) of the pod first.
    pub kill_pod: bool,
    /// Create a new sandbox (after `kill_pod`) with this attempt number.
    pub create_sandbox: bool,
    pub attempt: u32,
    /// The newest existing sandbox, if any (the one containers start in when
    /// no new sandbox is created).
    pub sandbox_id: Option<String>,
    /// Init containers to start now, in order: the next one (they run one
    /// by one) and sidecars to start again.
    pub init_containers_to_start: Vec<ContainerStart>,
    pub containers_to_start: Vec<ContainerStart>,
    /// Ephemeral containers without an instance yet (the kubelet's
    /// `EphemeralContainersToStart`); none when the pod is killed.
    pub ephemeral_containers_to_start: Vec<EphemeralStart>,
    pub containers_to_kill: Vec<ContainerKill>,
    pub backing_off: Vec<BackingOff>,
}

impl PodActions {
    /// Nothing to do now.
    pub fn is_noop(&self) -> bool {
        !self.kill_pod
            && !self.create_sandbox
            && self.init_containers_to_start.is_empty()
            && self.containers_to_start.is_empty()
            && self.ephemeral_containers_to_start.is_empty()
            && self.containers_to_kill.is_empty()
    }

    /// When to look at the pod again for a container in back-off.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.backing_off.iter().map(|b| b.remaining).min()
    }
}

/// The hash recorded on each container ([`crate::pods::runtime_view::ANNOTATION_CONTAINER_HASH`]).
///
/// As the kubelet's `HashContainer` since 1.31, only `name` and `image` are
/// hashed: every other field of a Pod's container is immutable (resources are
/// resized in place), so hashing more would only restart containers when the
/// serialisation of a field changes between versions. Hex of the first 8 bytes
/// of SHA-256 over the JSON array `[name, image]`.
pub fn container_spec_hash(container: &Container) -> String {
    let canonical = serde_json::json!([container.name, container.image.as_deref().unwrap_or("")]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares the Pod with what CRI holds for it and returns the actions.
pub fn compute_pod_actions(
    pod: &Pod,
    runtime: &PodRuntimeView,
    probes: &ProbeFailures,
    backoff: &Backoff,
    now: SystemTime,
) -> PodActions {
    let mut planner = Planner {
        pod,
        runtime,
        backoff,
        now,
        uid: pod.metadata.uid.as_deref().unwrap_or_default(),
        actions: PodActions::default(),
    };
    planner.plan(probes);
    if planner.actions.kill_pod {
        // A pod being killed (its regular containers done, or recreated)
        // starts no ephemeral container.
        planner.actions.ephemeral_containers_to_start.clear();
    }
    planner.actions
}

struct Planner<'a> {
    pod: &'a Pod,
    runtime: &'a PodRuntimeView,
    backoff: &'a Backoff,
    now: SystemTime,
    uid: &'a str,
    actions: PodActions,
}

impl<'a> Planner<'a> {
    fn plan(&mut self, probes: &ProbeFailures) {
        let policy = RestartPolicy::of(self.pod);
        let (containers, init_containers) = match self.pod.spec.as_ref() {
            Some(spec) => (
                spec.containers.as_slice(),
                spec.init_containers.as_deref().unwrap_or_default(),
            ),
            None => (&[][..], &[][..]),
        };
        self.actions.sandbox_id = self.runtime.sandboxes.first().map(|s| s.id.clone());

        if self.pod.metadata.deletion_timestamp.is_some() || is_terminal(self.pod) {
            self.actions.kill_pod = self.anything_alive();
            return;
        }

        let (changed, attempt) = self.sandbox_changed();
        if changed {
            self.actions.kill_pod = !self.runtime.sandboxes.is_empty() || self.anything_alive();
            // A Never pod whose sandbox died after its containers ran is over.
            if policy == RestartPolicy::Never && attempt != 0 && !self.runtime.containers.is_empty()
            {
                return;
            }
            let to_start: Vec<&Container> = containers
                .iter()
                .filter(|c| !(policy == RestartPolicy::OnFailure && self.succeeded(&c.name)))
                .collect();
            if to_start.is_empty() {
                return;
            }
            self.actions.create_sandbox = true;
            self.actions.attempt = attempt;
            if let Some(first) = init_containers.first() {
                if let Some(start) = self.start_or_back_off(first, StartReason::NotCreated) {
                    self.actions.init_containers_to_start.push(start);
                }
            } else {
                for c in to_start {
                    if let Some(start) = self.start_or_back_off(c, StartReason::NotCreated) {
                        self.actions.containers_to_start.push(start);
                    }
                }
            }
            return;
        }
        self.actions.attempt = attempt;
        self.plan_ephemeral();

        if !self.plan_init(init_containers, containers, policy, probes) {
            return;
        }

        let mut keep = 0;
        for c in containers {
            let Some(last) = self.runtime.latest(&c.name) else {
                if let Some(start) = self.start_or_back_off(c, StartReason::NotCreated) {
                    self.actions.containers_to_start.push(start);
                }
                continue;
            };
            if last.state != ContainerState::Running {
                if last.state == ContainerState::Unknown {
                    self.kill(last, KillReason::UnknownState);
                }
                if should_restart(policy, last) {
                    if let Some(start) = self.start_or_back_off(c, StartReason::Restart) {
                        self.actions.containers_to_start.push(start);
                    }
                }
                continue;
            }
            let (reason, restart) = if last
                .spec_hash
                .as_ref()
                .is_some_and(|h| *h != container_spec_hash(c))
            {
                (KillReason::SpecChanged, true)
            } else if probes.liveness.contains(&c.name) {
                (KillReason::LivenessFailed, policy.restarts_on_failure())
            } else if probes.startup.contains(&c.name) {
                (KillReason::StartupFailed, policy.restarts_on_failure())
            } else {
                keep += 1;
                continue;
            };
            self.kill(last, reason);
            if restart {
                self.actions.containers_to_start.push(ContainerStart {
                    name: c.name.clone(),
                    reason: StartReason::Replace(reason),
                    restart_count: last.restart_count + 1,
                    previous_exit: None,
                });
            }
        }
        if keep == 0
            && self.actions.containers_to_start.is_empty()
            && self.actions.backing_off.is_empty()
        {
            // Nothing runs or will run: stop the sandbox too (sidecars with it).
            self.actions.kill_pod = true;
            self.actions.init_containers_to_start.clear();
        }
    }

    /// Ephemeral containers may start before the pod is initialized; one
    /// that has an instance (running or exited) is never started again.
    fn plan_ephemeral(&mut self) {
        let Some(spec) = self.pod.spec.as_ref() else {
            return;
        };
        for ec in spec.ephemeral_containers.iter().flatten() {
            if self.runtime.latest(&ec.name).is_some() {
                continue;
            }
            let target = ephemeral::target_name(self.pod, &ec.name).map(|name| PidTarget {
                name: name.to_string(),
                container_id: self.runtime.latest(name).map(|c| c.id.clone()),
            });
            self.actions
                .ephemeral_containers_to_start
                .push(EphemeralStart {
                    name: ec.name.clone(),
                    target,
                });
        }
    }

    /// The kubelet's `podSandboxChanged`: (must the sandbox be (re)created, its attempt).
    fn sandbox_changed(&self) -> (bool, u32) {
        let Some(newest) = self.runtime.sandboxes.first() else {
            return (true, 0);
        };
        let next = newest.attempt + 1;
        let ready = self
            .runtime
            .sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
            .count();
        let host_network = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if ready > 1
            || newest.state != SandboxState::Ready
            || (!host_network && newest.ip.is_none())
        {
            return (true, next);
        }
        (false, newest.attempt)
    }

    /// The kubelet's `computeInitContainerActions`: which init containers
    /// to (re)start, and whether the pod is initialized (its app containers
    /// may run). From the last init container with an instance backwards:
    /// that one tells the progress; before it, only sidecars are looked at,
    /// to keep them running. `false` with `kill_pod` when a failed init
    /// container may not restart.
    fn plan_init(
        &mut self,
        init: &'a [Container],
        containers: &[Container],
        policy: RestartPolicy,
        probes: &ProbeFailures,
    ) -> bool {
        if init.is_empty() {
            return true;
        }
        let mut initialized = containers.iter().any(|c| {
            self.runtime
                .latest(&c.name)
                .is_some_and(|s| s.state == ContainerState::Running)
        });
        let mut previously = initialized;
        let mut starts: Vec<(&'a Container, StartReason)> = Vec::new();
        for (i, c) in init.iter().enumerate().rev() {
            let sidecar = is_sidecar(c);
            let Some(last) = self.runtime.latest(&c.name) else {
                if previously && sidecar {
                    starts.push((c, StartReason::NotCreated));
                }
                continue;
            };
            if previously && !sidecar {
                continue;
            }
            let is_last = i + 1 == init.len();
            match last.state {
                ContainerState::Created => starts.push((c, StartReason::Restart)),
                ContainerState::Running if !sidecar => {}
                ContainerState::Running => {
                    if probes.startup.contains(&c.name) {
                        self.kill(last, KillReason::StartupFailed);
                        starts.push((c, StartReason::Replace(KillReason::StartupFailed)));
                    } else if !(c.startup_probe.is_some() && probes.not_started.contains(&c.name)) {
                        if is_last {
                            initialized = true;
                        } else if !previously {
                            starts.push((&init[i + 1], StartReason::NotCreated));
                        }
                        let changed = last
                            .spec_hash
                            .as_ref()
                            .is_some_and(|h| *h != container_spec_hash(c));
                        let reason = if changed {
                            Some(KillReason::SpecChanged)
                        } else if probes.liveness.contains(&c.name) {
                            Some(KillReason::LivenessFailed)
                        } else {
                            None
                        };
                        if let Some(reason) = reason {
                            self.kill(last, reason);
                            starts.push((c, StartReason::Replace(reason)));
                        }
                    }
                }
                ContainerState::Exited if sidecar => starts.push((c, StartReason::Restart)),
                ContainerState::Exited if init_failed(last) => {
                    if !policy.restarts_on_failure() {
                        self.actions.kill_pod = true;
                        return false;
                    }
                    starts.push((c, StartReason::Restart));
                }
                ContainerState::Exited if is_last => initialized = true,
                ContainerState::Exited => starts.push((&init[i + 1], StartReason::NotCreated)),
                ContainerState::Unknown => {
                    if !sidecar && !policy.restarts_on_failure() {
                        self.actions.kill_pod = true;
                        return false;
                    }
                    self.kill(last, KillReason::UnknownState);
                    starts.push((c, StartReason::Restart));
                }
            }
            previously = true;
        }
        if !previously {
            starts.push((&init[0], StartReason::NotCreated));
        }
        for (c, reason) in starts.into_iter().rev() {
            let start = match reason {
                // A running instance replaced: no back-off, as for app containers.
                StartReason::Replace(_) => Some(ContainerStart {
                    name: c.name.clone(),
                    reason,
                    restart_count: self
                        .runtime
                        .latest(&c.name)
                        .map_or(0, |l| l.restart_count + 1),
                    previous_exit: None,
                }),
                _ => self.start_or_back_off(c, reason),
            };
            if let Some(start) = start {
                self.actions.init_containers_to_start.push(start);
            }
        }
        initialized
    }

    /// A start, or a [`BackingOff`] entry when the last instance exited too recently.
    fn start_or_back_off(&mut self, c: &Container, reason: StartReason) -> Option<ContainerStart> {
        let last = self.runtime.latest(&c.name);
        let previous_exit = last
            .filter(|l| l.state == ContainerState::Exited)
            .and_then(|l| l.finished_at);
        let remaining = previous_exit.and_then(|exit| {
            self.backoff
                .remaining(&BackoffKey::new(self.uid, &c.name), exit, self.now)
        });
        if let Some(remaining) = remaining {
            self.actions.backing_off.push(BackingOff {
                name: c.name.clone(),
                remaining,
            });
            return None;
        }
        Some(ContainerStart {
            name: c.name.clone(),
            reason,
            restart_count: last.map_or(0, |l| l.restart_count + 1),
            previous_exit,
        })
    }

    fn kill(&mut self, c: &ContainerView, reason: KillReason) {
        self.actions.containers_to_kill.push(ContainerKill {
            id: c.id.clone(),
            name: c.name.clone(),
            reason,
        });
    }

    fn succeeded(&self, name: &str) -> bool {
        self.runtime
            .latest(name)
            .is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == 0)
    }

    fn anything_alive(&self) -> bool {
        self.runtime
            .sandboxes
            .iter()
            .any(|s| s.state == SandboxState::Ready)
            || self
                .runtime
                .containers
                .iter()
                .any(|c| c.state != ContainerState::Exited)
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The kubelet's `isInitContainerFailed`.
fn init_failed(c: &ContainerView) -> bool {
    match c.state {
        ContainerState::Exited => c.exit_code != 0,
        ContainerState::Unknown => true,
        ContainerState::Created | ContainerState::Running => false,
    }
}

/// The kubelet's `ShouldContainerBeRestarted` for a container that is not running.
fn should_restart(policy: RestartPolicy, last: &ContainerView) -> bool {
    match last.state {
        ContainerState::Running => false,
        ContainerState::Created | ContainerState::Unknown => true,
        ContainerState::Exited => match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => last.exit_code != 0,
            RestartPolicy::Never => false,
        },
    }
}
