//! The Pod's API status from what CRI reports, as the kubelet's
//! `generateAPIPodStatus` writes it: phase and the five conditions (from
//! [`crate::pods::phase`]), pod and host IPs, start time, and a status per
//! (init and ephemeral) container with state, last state, ready, started,
//! restart count, image and container ids. Pure: the shell gives the previous status (to keep
//! transition times and the start time) and the current time.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pods::ephemeral;
use crate::pods::phase::{pod_status, PodPhase};
use crate::pods::plan::{is_sidecar, RestartPolicy};
use crate::pods::runtime_view::{ContainerState, ContainerView, PodRuntimeView};
use crate::pods::termination_message;

/// Prefix of `containerID` in the Pod status (the runtime's name).
pub const CONTAINER_ID_PREFIX: &str = "containerd://";

/// Why a container waits, as set by the shell (`ErrImagePull`,
/// `CrashLoopBackOff`, `CreateContainerConfigError`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct StatusInputs<'a> {
    pub pod: &'a Pod,
    pub runtime: &'a PodRuntimeView,
    /// Containers with a readiness probe that currently succeeds.
    pub probe_ready: &'a BTreeSet<String>,
    /// Containers whose startup probe has not succeeded yet.
    pub not_started: &'a BTreeSet<String>,
    /// Waiting reasons the shell knows better than CRI (per container name).
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// The sandbox's IPs, primary first.
    pub pod_ips: &'a [String],
    pub host_ip: Option<&'a str>,
    pub now: Timestamp,
}

/// The status to write. Conditions other than the five the kubelet owns
/// (e.g. `DisruptionTarget`) are kept from the current status.
pub fn api_status(inputs: &StatusInputs<'_>) -> PodStatus {
    let pod = inputs.pod;
    let now = seconds(inputs.now);
    let current = pod.status.clone().unwrap_or_default();
    let view = pod_status(pod, inputs.runtime, inputs.probe_ready);
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let policy = RestartPolicy::of(pod);

    let statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| container_status(c, inputs, policy, false))
        .collect();
    let init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|c| container_status(c, inputs, policy, true))
        .collect();
    let ephemeral_statuses: Vec<ContainerStatus> = ephemeral::specs(pod)
        .iter()
        .map(|c| ephemeral_status(c, inputs))
        .collect();
    let per_container = termination_message::bytes_per_container(
        containers.len() + init.len() + ephemeral_statuses.len(),
    );
    let (statuses, init_statuses, ephemeral_statuses) = (
        limit_messages(statuses, per_container),
        limit_messages(init_statuses, per_container),
        limit_messages(ephemeral_statuses, per_container),
    );

    // A running container whose startup probe has not passed is not ready,
    // whatever phase.rs concluded from its readiness probe alone.
    let unstarted: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let mut conditions: Vec<PodCondition> = Vec::new();
    for c in &view.conditions {
        let (mut status, mut reason, mut message) =
            (c.status, c.reason.map(str::to_string), c.message.clone());
        if (c.type_ == "Ready" || c.type_ == "ContainersReady") && status && !unstarted.is_empty() {
            status = false;
            reason = Some("ContainersNotReady".into());
            message = Some(format!(
                "containers with unready status: [{}]",
                unstarted.join(" ")
            ));
        }
        let generation = pod.metadata.generation;
        conditions.push(condition(
            &current, c.type_, status, reason, message, generation, now,
        ));
    }
    for c in current.conditions.iter().flatten() {
        if !conditions.iter().any(|o| o.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }

    let start_time = current.start_time.clone().or(Some(Time(now)));
    let pod_ip = inputs.pod_ips.first().cloned();
    PodStatus {
        phase: Some(view.phase.as_str().to_string()),
        conditions: Some(conditions),
        pod_ip: pod_ip.clone().or(current.pod_ip.clone()),
        pod_ips: if inputs.pod_ips.is_empty() {
            current.pod_ips.clone()
        } else {
            Some(
                inputs
                    .pod_ips
                    .iter()
                    .map(|ip| PodIP { ip: ip.clone() })
                    .collect(),
            )
        },
        host_ip: inputs.host_ip.map(str::to_string),
        host_ips: inputs.host_ip.map(|ip| vec![HostIP { ip: ip.to_string() }]),
        start_time,
        container_statuses: Some(statuses),
        init_container_statuses: (!init.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: (!ephemeral_statuses.is_empty())
            .then_some(ephemeral_statuses),
        qos_class: current.qos_class.clone(),
        observed_generation: pod.metadata.generation,
        message: current.message.clone(),
        reason: current.reason.clone(),
        ..Default::default()
    }
}

/// A terminal status for a pod the node rejected at admission, as the
/// kubelet's `rejectPod` writes it: its message says so.
pub fn rejected_status(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> PodStatus {
    let current = pod.status.clone().unwrap_or_default();
    PodStatus {
        phase: Some(PodPhase::Failed.as_str().to_string()),
        reason: Some(reason.to_string()),
        message: Some(format!("Pod was rejected: {message}")),
        start_time: current.start_time.or(Some(Time(seconds(now)))),
        conditions: current.conditions,
        qos_class: current.qos_class,
        observed_generation: pod.metadata.generation,
        ..Default::default()
    }
}

/// Whether `desired` says something `current` does not: each field the
/// agent sets is compared; fields only others set are left out.
pub fn status_differs(current: Option<&PodStatus>, desired: &PodStatus) -> bool {
    let (Ok(serde_json::Value::Object(want)), Ok(have)) = (
        serde_json::to_value(desired),
        serde_json::to_value(current.cloned().unwrap_or_default()),
    ) else {
        return true;
    };
    want.iter().any(|(k, v)| have.get(k) != Some(v))
}

/// One of the conditions the kubelet owns, stamped with the generation it
/// was computed for (`PodObservedGenerationTracking`).
fn condition(
    current: &PodStatus,
    type_: &str,
    status: bool,
    reason: Option<String>,
    message: Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = current
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.to_string(),
        status,
        reason,
        message,
        last_transition_time,
        last_probe_time: None,
        observed_generation: generation,
    }
}

fn has_init_containers(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| !i.is_empty())
}

fn container_status(
    c: &Container,
    inputs: &StatusInputs<'_>,
    policy: RestartPolicy,
    init: bool,
) -> ContainerStatus {
    let mut instances = inputs
        .runtime
        .containers
        .iter()
        .filter(|v| v.name == c.name);
    let latest = instances.next();
    let previous = instances.next();
    let image = c.image.clone().unwrap_or_default();
    let waiting = inputs.waiting.get(&c.name);

    let Some(latest) = latest else {
        let (reason, message) = match waiting {
            Some(w) => (
                w.reason.clone(),
                Some(w.message.clone()).filter(|m| !m.is_empty()),
            ),
            // The kubelet's default waiting state: PodInitializing for
            // every container of a pod with init containers.
            None if has_init_containers(inputs.pod) => ("PodInitializing".to_string(), None),
            None => ("ContainerCreating".to_string(), None),
        };
        return ContainerStatus {
            name: c.name.clone(),
            image,
            image_id: String::new(),
            state: Some(waiting_state(reason, message)),
            ready: false,
            started: Some(false),
            restart_count: 0,
            ..Default::default()
        };
    };

    let sidecar = init && is_sidecar(c);
    let will_restart = |v: &ContainerView| {
        sidecar
            || match policy {
                RestartPolicy::Always => !init,
                RestartPolicy::OnFailure => v.exit_code != 0,
                RestartPolicy::Never => false,
            }
            || (init && policy != RestartPolicy::Never && v.exit_code != 0)
    };

    let (state, last_state) = match latest.state {
        ContainerState::Running => (
            ApiState {
                running: Some(ContainerStateRunning {
                    started_at: latest.started_at.map(time),
                }),
                ..Default::default()
            },
            previous.map(terminated),
        ),
        ContainerState::Exited if will_restart(latest) => {
            let (reason, message) = match waiting {
                Some(w) => (
                    w.reason.clone(),
                    Some(w.message.clone()).filter(|m| !m.is_empty()),
                ),
                None => ("ContainerCreating".to_string(), None),
            };
            (waiting_state(reason, message), Some(terminated(latest)))
        }
        ContainerState::Exited => (terminated(latest), previous.map(terminated)),
        ContainerState::Created | ContainerState::Unknown => {
            let (reason, message) = match waiting {
                Some(w) => (
                    w.reason.clone(),
                    Some(w.message.clone()).filter(|m| !m.is_empty()),
                ),
                None => ("ContainerCreating".to_string(), None),
            };
            (waiting_state(reason, message), previous.map(terminated))
        }
    };
    let running = latest.state == ContainerState::Running;
    let started = running && !inputs.not_started.contains(&c.name);
    let ready = if init && !sidecar {
        latest.state == ContainerState::Exited && latest.exit_code == 0
    } else {
        started && (c.readiness_probe.is_none() || inputs.probe_ready.contains(&c.name))
    };
    ContainerStatus {
        name: c.name.clone(),
        image,
        image_id: latest.image_ref.clone(),
        container_id: Some(format!("{CONTAINER_ID_PREFIX}{}", latest.id)),
        state: Some(state),
        last_state: last_state.or_else(|| Some(ApiState::default())),
        ready,
        started: Some(started),
        restart_count: i32::try_from(latest.restart_count).unwrap_or(i32::MAX),
        ..Default::default()
    }
}

/// An ephemeral container's status, as the kubelet converts it: never
/// restarted, so once exited it stays terminated; no `ready` or `started`
/// (the prober looks only at regular and init containers).
fn ephemeral_status(c: &Container, inputs: &StatusInputs<'_>) -> ContainerStatus {
    ContainerStatus {
        ready: false,
        started: None,
        ..container_status(c, inputs, RestartPolicy::Never, false)
    }
}

/// Terminated states keep at most `max` bytes of message each, so a pod's
/// messages fit the kubelet's 12 KiB.
fn limit_messages(mut statuses: Vec<ContainerStatus>, max: usize) -> Vec<ContainerStatus> {
    for status in &mut statuses {
        let states = [status.state.as_mut(), status.last_state.as_mut()];
        for terminated in states
            .into_iter()
            .flatten()
            .filter_map(|s| s.terminated.as_mut())
        {
            if let Some(message) = terminated.message.as_mut() {
                termination_message::truncate(message, max);
            }
        }
    }
    statuses
}

fn waiting_state(reason: String, message: Option<String>) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason),
            message,
        }),
        ..Default::default()
    }
}

fn terminated(v: &ContainerView) -> ApiState {
    let reason = if !v.reason.is_empty() {
        v.reason.clone()
    } else if v.exit_code == 0 {
        "Completed".to_string()
    } else {
        "Error".to_string()
    };
    ApiState {
        terminated: Some(ContainerStateTerminated {
            exit_code: v.exit_code,
            reason: Some(reason),
            message: Some(v.message.clone()).filter(|m| !m.is_empty()),
            started_at: v.started_at.map(time),
            finished_at: v.finished_at.map(time),
            container_id: Some(format!("{CONTAINER_ID_PREFIX}{}", v.id)),
            signal: None,
        }),
        ..Default::default()
    }
}

/// API times have whole seconds; anything finer would make every
/// comparison with what the API server returns differ.
fn time(t: std::time::SystemTime) -> Time {
    Time(seconds(
        Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH),
    ))
}

fn seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;
    use crate::pods::runtime_view::{SandboxState, SandboxView};

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn pod(policy: &str, readiness_on: Option<&str>, status: serde_json::Value) -> Pod {
        let c = |name: &str| {
            let mut c = json!({"name": name, "image": "nodeconfig.local/busybox:1.35"});
            if readiness_on == Some(name) {
                c["readinessProbe"] = json!({"exec": {"command": ["true"]}});
            }
            c
        };
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 1},
            "spec": {"restartPolicy": policy, "containers": [c("a"), c("b")]},
            "status": status,
        }))
        .unwrap()
    }

    fn ctr(
        name: &str,
        id: &str,
        state: ContainerState,
        exit: i32,
        restarts: u32,
        at: u64,
    ) -> ContainerView {
        ContainerView {
            id: id.into(),
            name: name.into(),
            sandbox_id: "s1".into(),
            state,
            exit_code: exit,
            created_at: t(at),
            started_at: Some(t(at)),
            finished_at: (state == ContainerState::Exited).then(|| t(at + 5)),
            attempt: restarts,
            restart_count: restarts,
            spec_hash: None,
            reason: String::new(),
            message: String::new(),
            image_ref: "sha256:abc".into(),
        }
    }

    fn view(containers: Vec<ContainerView>) -> PodRuntimeView {
        PodRuntimeView::new(
            vec![SandboxView {
                id: "s1".into(),
                state: SandboxState::Ready,
                attempt: 0,
                created_at: t(0),
                ip: Some("10.244.1.5".into()),
            }],
            containers,
        )
    }

    fn status(
        pod: &Pod,
        runtime: &PodRuntimeView,
        waiting: &BTreeMap<String, Waiting>,
        ready: &[&str],
    ) -> PodStatus {
        let probe_ready: BTreeSet<String> = ready.iter().map(|s| s.to_string()).collect();
        api_status(&StatusInputs {
            pod,
            runtime,
            probe_ready: &probe_ready,
            not_started: &BTreeSet::new(),
            waiting,
            pod_ips: &["10.244.1.5".to_string()],
            host_ip: Some("10.200.1.2"),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        })
    }

    fn cond<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn running_pod_reports_ips_ids_and_ready_containers() {
        let pod = pod(
            "Always",
            Some("b"),
            json!({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2023-01-01T00:00:00Z"}]}),
        );
        let rt = view(vec![
            ctr("a", "ca", ContainerState::Running, 0, 0, 10),
            ctr("b", "cb", ContainerState::Running, 0, 0, 10),
        ]);
        let s = status(&pod, &rt, &BTreeMap::new(), &[]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.5"));
        assert_eq!(s.host_ip.as_deref(), Some("10.200.1.2"));
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(a.container_id.as_deref(), Some("containerd://ca"));
        assert_eq!(a.image_id, "sha256:abc");
        assert!(a.ready && a.started == Some(true));
        let b = &s.container_statuses.as_ref().unwrap()[1];
        assert!(!b.ready, "readiness probe has not succeeded yet");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(Time("2023-01-01T00:00:00Z".parse().unwrap())),
            "an unchanged condition keeps its transition time"
        );

        let s = status(&pod, &rt, &BTreeMap::new(), &["b"]);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(s.observed_generation, Some(1));
        for c in s.conditions.iter().flatten() {
            assert_eq!(c.observed_generation, Some(1), "{}", c.type_);
        }
    }

    #[test]
    fn crash_looping_container_waits_with_its_last_termination() {
        let pod = pod("Always", None, json!({}));
        let rt = view(vec![
            ctr("a", "ca2", ContainerState::Exited, 3, 2, 30),
            ctr("a", "ca1", ContainerState::Exited, 3, 1, 20),
            ctr("b", "cb", ContainerState::Running, 0, 0, 10),
        ]);
        let waiting = BTreeMap::from([(
            "a".to_string(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 20s restarting failed container=a pod=web_default(u1)".into(),
            },
        )]);
        let s = status(&pod, &rt, &waiting, &[]);
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(a.restart_count, 2);
        assert_eq!(
            a.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert_eq!(last.container_id.as_deref(), Some("containerd://ca2"));
        assert!(!a.ready);
        assert_eq!(
            cond(&s, "ContainersReady").reason.as_deref(),
            Some("ContainersNotReady")
        );
    }

    #[test]
    fn finished_pod_without_restarts_shows_terminated_states() {
        let pod = pod("Never", None, json!({}));
        let rt = view(vec![
            ctr("a", "ca", ContainerState::Exited, 0, 0, 10),
            ctr("b", "cb", ContainerState::Exited, 1, 0, 10),
        ]);
        let s = status(&pod, &rt, &BTreeMap::new(), &[]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let b = &s.container_statuses.as_ref().unwrap()[1];
        let term = b.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (1, Some("Error")));
    }

    #[test]
    fn not_yet_created_containers_wait_with_the_shells_reason() {
        let pod = pod("Always", None, json!({}));
        let waiting = BTreeMap::from([(
            "a".to_string(),
            Waiting {
                reason: "ErrImageNeverPull".into(),
                message: "Container image \"x\" is not present with pull policy of Never".into(),
            },
        )]);
        let s = status(&pod, &view(vec![]), &waiting, &[]);
        let reasons: Vec<_> = s
            .container_statuses
            .iter()
            .flatten()
            .map(|c| {
                c.state
                    .as_ref()
                    .unwrap()
                    .waiting
                    .as_ref()
                    .unwrap()
                    .reason
                    .clone()
                    .unwrap()
            })
            .collect();
        assert_eq!(reasons, ["ErrImageNeverPull", "ContainerCreating"]);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn while_init_containers_run_every_container_not_yet_made_waits_with_pod_initializing() {
        let mut pod = pod("Always", None, json!({}));
        pod.spec.as_mut().unwrap().init_containers = Some(vec![
            serde_json::from_value(json!({"name": "init1", "image": "busybox"})).unwrap(),
            serde_json::from_value(json!({"name": "init2", "image": "busybox"})).unwrap(),
        ]);
        let rt = view(vec![ctr("init1", "ci1", ContainerState::Exited, 1, 0, 10)]);
        let s = status(&pod, &rt, &BTreeMap::new(), &[]);
        let reason = |c: &ContainerStatus| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
        };
        let apps: Vec<_> = s.container_statuses.iter().flatten().map(reason).collect();
        assert_eq!(
            apps,
            [
                Some("PodInitializing".into()),
                Some("PodInitializing".into())
            ]
        );
        let init2 = &s.init_container_statuses.as_ref().unwrap()[1];
        assert_eq!(reason(init2).as_deref(), Some("PodInitializing"));
    }

    #[test]
    fn status_differs_only_on_what_the_agent_sets() {
        let pod = pod("Always", None, json!({}));
        let rt = view(vec![
            ctr("a", "ca", ContainerState::Running, 0, 0, 10),
            ctr("b", "cb", ContainerState::Running, 0, 0, 10),
        ]);
        let s = status(&pod, &rt, &BTreeMap::new(), &[]);
        let mut on_server = s.clone();
        on_server.qos_class = Some("BestEffort".into());
        on_server.nominated_node_name = Some("other".into());
        assert!(!status_differs(Some(&on_server), &s));
        on_server.phase = Some("Pending".into());
        assert!(status_differs(Some(&on_server), &s));
        assert!(status_differs(None, &s));
    }

    #[test]
    fn ephemeral_containers_are_reported_apart_and_stay_terminated() {
        let plain = pod("Always", None, json!({}));
        let mut pod = plain.clone();
        pod.spec.as_mut().unwrap().ephemeral_containers = Some(
            serde_json::from_value(json!([
                {"name": "debug", "image": "busybox"},
                {"name": "oneshot", "image": "busybox"},
                {"name": "later", "image": "busybox"},
            ]))
            .unwrap(),
        );
        let rt = view(vec![
            ctr("a", "ca", ContainerState::Running, 0, 0, 10),
            ctr("b", "cb", ContainerState::Running, 0, 0, 10),
            ctr("debug", "cd", ContainerState::Running, 0, 0, 20),
            ctr("oneshot", "co", ContainerState::Exited, 3, 0, 20),
        ]);
        let s = status(&pod, &rt, &BTreeMap::new(), &[]);
        assert_eq!(s.container_statuses.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            cond(&s, "Ready").status,
            "True",
            "ephemeral containers do not count"
        );
        let e = s.ephemeral_container_statuses.as_ref().unwrap();
        let names: Vec<_> = e.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["debug", "oneshot", "later"]);
        let debug = &e[0];
        assert!(debug.state.as_ref().unwrap().running.is_some());
        assert_eq!(debug.container_id.as_deref(), Some("containerd://cd"));
        assert_eq!(debug.image_id, "sha256:abc");
        assert_eq!((debug.ready, debug.started), (false, None));
        let oneshot = e[1].state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(oneshot.exit_code, 3, "an Always pod does not restart it");
        let later = e[2].state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(later.reason.as_deref(), Some("ContainerCreating"));

        let s = status(&plain, &rt, &BTreeMap::new(), &[]);
        assert_eq!(s.ephemeral_container_statuses, None);
    }

    #[test]
    fn termination_messages_share_the_pods_12_kib() {
        let pod = pod("Never", None, json!({}));
        let mut a = ctr("a", "c1", ContainerState::Exited, 1, 0, 10);
        a.message = "x".repeat(10_000);
        let mut b = ctr("b", "c2", ContainerState::Exited, 0, 0, 10);
        b.message = "DONE".into();
        let s = status(&pod, &view(vec![a, b]), &BTreeMap::new(), &[]);
        let message = |i: usize| {
            s.container_statuses.as_ref().unwrap()[i]
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .and_then(|t| t.message.clone())
        };
        assert_eq!(message(0).map(|m| m.len()), Some(6 * 1024));
        assert_eq!(message(1).as_deref(), Some("DONE"));
    }

    #[test]
    fn a_rejected_pod_fails_with_the_kubelets_message_and_its_generation() {
        let mut p = pod(
            "Always",
            None,
            json!({"phase": "Pending", "qosClass": "BestEffort"}),
        );
        p.metadata.generation = Some(3);
        let s = rejected_status(
            &p,
            "NodePorts",
            "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("NodePorts"));
        assert_eq!(
            s.message.as_deref(),
            Some("Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports")
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    }
}
