//! Phase and conditions, after the kubelet's `TestGetPhase` cases.
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::pods::phase::*;
use crate::pods::runtime_view::*;

fn pod(policy: &str, init: &[&str], containers: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "uid": "uid-1"},
        "spec": {
            "restartPolicy": policy,
            "initContainers": init.iter().map(|n| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>(),
            "containers": containers,
        },
    }))
    .unwrap()
}

fn two(policy: &str) -> Pod {
    pod(
        policy,
        &[],
        json!([{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]),
    )
}

fn ctr(name: &str, state: ContainerState, exit_code: i32) -> ContainerView {
    ContainerView {
        id: name.into(),
        name: name.into(),
        sandbox_id: "s1".into(),
        state,
        exit_code,
        created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        started_at: None,
        finished_at: None,
        attempt: 0,
        restart_count: 0,
        spec_hash: None,
        reason: String::new(),
        message: String::new(),
        image_ref: String::new(),
    }
}

use ContainerState::{Created, Exited, Running};

fn view(containers: Vec<ContainerView>) -> PodRuntimeView {
    let sandbox = SandboxView {
        id: "s1".into(),
        state: SandboxState::Ready,
        attempt: 0,
        created_at: SystemTime::UNIX_EPOCH,
        ip: Some("10.244.1.7".into()),
    };
    PodRuntimeView::new(vec![sandbox], containers)
}

#[test]
fn phase_table() {
    let cases = vec![
        (
            "nothing created yet",
            two("Always"),
            PodRuntimeView::default(),
            PodPhase::Pending,
        ),
        (
            "one created, one running",
            two("Always"),
            view(vec![ctr("a", Created, 0), ctr("b", Running, 0)]),
            PodPhase::Pending,
        ),
        (
            "all running",
            two("Always"),
            view(vec![ctr("a", Running, 0), ctr("b", Running, 0)]),
            PodPhase::Running,
        ),
        (
            "one running, one not created",
            two("Always"),
            view(vec![ctr("a", Running, 0)]),
            PodPhase::Pending,
        ),
        (
            "Always: all exited is still Running",
            two("Always"),
            view(vec![ctr("a", Exited, 0), ctr("b", Exited, 1)]),
            PodPhase::Running,
        ),
        (
            "Never: all exited 0",
            two("Never"),
            view(vec![ctr("a", Exited, 0), ctr("b", Exited, 0)]),
            PodPhase::Succeeded,
        ),
        (
            "Never: one failed",
            two("Never"),
            view(vec![ctr("a", Exited, 0), ctr("b", Exited, 1)]),
            PodPhase::Failed,
        ),
        (
            "Never: one failed, one running",
            two("Never"),
            view(vec![ctr("a", Running, 0), ctr("b", Exited, 1)]),
            PodPhase::Running,
        ),
        (
            "OnFailure: all succeeded",
            two("OnFailure"),
            view(vec![ctr("a", Exited, 0), ctr("b", Exited, 0)]),
            PodPhase::Succeeded,
        ),
        (
            "OnFailure: one failed restarts",
            two("OnFailure"),
            view(vec![ctr("a", Exited, 0), ctr("b", Exited, 1)]),
            PodPhase::Running,
        ),
        (
            "init running",
            pod("Always", &["init"], json!([{"name": "a"}])),
            view(vec![ctr("init", Running, 0)]),
            PodPhase::Pending,
        ),
        (
            "init failed under Never",
            pod("Never", &["init"], json!([{"name": "a"}])),
            view(vec![ctr("init", Exited, 1)]),
            PodPhase::Failed,
        ),
        (
            "init failed under OnFailure: restarting",
            pod("OnFailure", &["init"], json!([{"name": "a"}])),
            view(vec![ctr("init", Exited, 1)]),
            PodPhase::Pending,
        ),
        (
            "init done, container running",
            pod("Always", &["init"], json!([{"name": "a"}])),
            view(vec![ctr("init", Exited, 0), ctr("a", Running, 0)]),
            PodPhase::Running,
        ),
        (
            "init statuses gone, container running",
            pod("Always", &["init"], json!([{"name": "a"}])),
            view(vec![ctr("a", Running, 0)]),
            PodPhase::Running,
        ),
    ];
    for (name, pod, runtime, want) in cases {
        assert_eq!(phase(&pod, &runtime), want, "{name}");
    }
}

fn conditions(s: &PodStatusView) -> Vec<String> {
    s.conditions
        .iter()
        .map(|c| {
            let mut line = format!("{}={}", c.type_, c.status);
            if let Some(r) = c.reason {
                line += &format!("/{r}");
            }
            if let Some(m) = &c.message {
                line += &format!(" ({m})");
            }
            line
        })
        .collect()
}

#[test]
fn conditions_of_a_running_pod_with_a_readiness_probe() {
    let pod = pod(
        "Always",
        &[],
        json!([{"name": "a"}, {"name": "b", "readinessProbe": {"tcpSocket": {"port": 80}}}]),
    );
    let runtime = view(vec![ctr("a", Running, 0), ctr("b", Running, 0)]);

    let not_yet = pod_status(&pod, &runtime, &BTreeSet::new());
    assert_eq!(not_yet.phase, PodPhase::Running);
    assert_eq!(
        conditions(&not_yet),
        [
            "PodReadyToStartContainers=true",
            "Initialized=true",
            "Ready=false/ContainersNotReady (containers with unready status: [b])",
            "ContainersReady=false/ContainersNotReady (containers with unready status: [b])",
            "PodScheduled=true",
        ]
    );

    let ready = pod_status(&pod, &runtime, &BTreeSet::from(["b".to_string()]));
    assert!(
        ready.conditions.iter().all(|c| c.status),
        "{:?}",
        conditions(&ready)
    );
}

#[test]
fn conditions_while_initialising_and_after_completion() {
    let initialising = pod_status(
        &pod("Always", &["init1", "init2"], json!([{"name": "a"}])),
        &view(vec![ctr("init1", Exited, 0), ctr("init2", Running, 0)]),
        &BTreeSet::new(),
    );
    assert_eq!(initialising.phase, PodPhase::Pending);
    assert_eq!(
        conditions(&initialising)[1],
        "Initialized=false/ContainersNotInitialized (containers with incomplete status: [init2])"
    );

    let done = pod_status(
        &two("Never"),
        &view(vec![ctr("a", Exited, 0), ctr("b", Exited, 0)]),
        &BTreeSet::new(),
    );
    assert_eq!(done.phase, PodPhase::Succeeded);
    assert_eq!(conditions(&done)[2], "Ready=false/PodCompleted");

    let no_sandbox = pod_status(&two("Always"), &PodRuntimeView::default(), &BTreeSet::new());
    assert_eq!(
        conditions(&no_sandbox)[0],
        "PodReadyToStartContainers=false"
    );
}

#[test]
fn a_running_sidecar_initialises_the_pod_and_counts_for_readiness() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "uid": "uid-1"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "side", "image": "busybox", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }))
    .unwrap();
    let condition = |s: &PodStatusView, type_: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status)
    };

    let waiting = pod_status(&pod, &view(vec![ctr("side", Running, 0)]), &BTreeSet::new());
    assert_eq!(waiting.phase, PodPhase::Pending, "the app has not started");
    assert_eq!(condition(&waiting, "Initialized"), Some(true));

    let both = view(vec![ctr("side", Running, 0), ctr("app", Running, 0)]);
    let running = pod_status(&pod, &both, &BTreeSet::new());
    assert_eq!(running.phase, PodPhase::Running);
    assert_eq!(condition(&running, "Ready"), Some(true));

    let side_down = view(vec![ctr("side", Exited, 1), ctr("app", Running, 0)]);
    let s = pod_status(&pod, &side_down, &BTreeSet::new());
    assert_eq!(s.phase, PodPhase::Running, "a sidecar's exit fails nothing");
    assert_eq!(
        condition(&s, "Ready"),
        Some(false),
        "but the pod is not ready"
    );

    let done = view(vec![ctr("side", Running, 0), ctr("app", Exited, 0)]);
    assert_eq!(phase(&pod, &done), PodPhase::Succeeded);
}
