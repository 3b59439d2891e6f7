//! Unit tests of the in-place resize decisions ([`crate::pods::resize`]).
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::pods::plan::{ContainerKill, KillReason, PodActions, StartReason};
use crate::pods::resize::*;
use crate::pods::runtime_view::{ContainerState, ContainerView, PodRuntimeView};

fn pod(generation: i64, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": generation},
        "spec": {"containers": containers},
        "status": {"qosClass": "Burstable"},
    }))
    .unwrap()
}

fn c(name: &str, resources: Value) -> Value {
    json!({"name": name, "image": "busybox", "resources": resources})
}

fn view(containers: &[(&str, &str, ContainerState)]) -> PodRuntimeView {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    PodRuntimeView::new(
        Vec::new(),
        containers
            .iter()
            .map(|(name, id, state)| ContainerView {
                id: (*id).into(),
                name: (*name).into(),
                sandbox_id: "s1".into(),
                state: *state,
                exit_code: 0,
                created_at: t,
                started_at: Some(t),
                finished_at: None,
                attempt: 0,
                restart_count: 2,
                spec_hash: None,
                reason: String::new(),
                message: String::new(),
                image_ref: String::new(),
            })
            .collect(),
    )
}

fn running(name: &str, id: &str) -> (String, String, ContainerState) {
    (name.into(), id.into(), ContainerState::Running)
}

fn view_of(list: &[(String, String, ContainerState)]) -> PodRuntimeView {
    let refs: Vec<(&str, &str, ContainerState)> = list
        .iter()
        .map(|(n, i, s)| (n.as_str(), i.as_str(), *s))
        .collect();
    view(&refs)
}

#[test]
fn equal_quantities_are_no_resize_and_a_changed_one_is() {
    let original = pod(
        1,
        json!([c("a", json!({"requests": {"cpu": "1", "memory": "64Mi"}}))]),
    );
    let allocation = PodAllocation::of(&original);
    let same = pod(
        2,
        json!([c(
            "a",
            json!({"requests": {"cpu": "1000m", "memory": "67108864"}})
        )]),
    );
    assert!(!allocation.resize_requested(&same));
    assert!(matches!(
        allocated_pod(&same, &allocation),
        std::borrow::Cow::Borrowed(_)
    ));
    let resized = pod(
        2,
        json!([c(
            "a",
            json!({"requests": {"cpu": "2"}, "limits": {"cpu": "3"}})
        )]),
    );
    assert!(allocation.resize_requested(&resized));
    // The planner sees the allocation until the resize is admitted.
    let planned = allocated_pod(&resized, &allocation);
    let r = planned.spec.as_ref().unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(r.requests.unwrap()["cpu"].0, "1");
    assert_eq!(r.limits, None);
}

#[test]
fn a_resize_fits_waits_or_can_never_fit() {
    let resized = pod(
        2,
        json!([
            c("a", json!({"requests": {"cpu": "500m", "memory": "100Mi"}})),
            c("b", json!({"requests": {"cpu": "250m"}})),
        ]),
    );
    let node = Requests {
        milli_cpu: 2000,
        memory: 1 << 30,
    };
    let used = |milli_cpu| Requests {
        milli_cpu,
        memory: 0,
    };
    assert_eq!(
        admit_resize(&resized, used(1250), node),
        ResizeAdmission::Allocate
    );
    assert_eq!(
        admit_resize(&resized, used(1500), node),
        ResizeAdmission::Pending {
            reason: REASON_DEFERRED,
            message:
                "Node didn't have enough resource: cpu, requested: 750, used: 1500, capacity: 2000"
                    .into(),
        }
    );
    let small = Requests {
        milli_cpu: 700,
        memory: 1 << 30,
    };
    assert_eq!(
        admit_resize(&resized, used(0), small),
        ResizeAdmission::Pending {
            reason: REASON_INFEASIBLE,
            message: "Node didn't have enough capacity: cpu, requested: 750, capacity: 700".into(),
        }
    );
}

#[test]
fn running_containers_are_updated_or_restarted_as_their_resize_policy_says() {
    let original = pod(
        1,
        json!([
            c("a", json!({"requests": {"cpu": "20m"}})),
            c("b", json!({"requests": {"memory": "35Mi"}})),
            c("c", json!({"requests": {"cpu": "20m"}})),
        ]),
    );
    let rt = view_of(&[running("a", "ca"), running("b", "cb"), running("c", "cc")]);
    let mut allocation = PodAllocation::of(&original);
    assert!(allocation.record_started(&rt));
    assert!(!allocation.record_started(&rt), "recorded once");
    assert!(!allocation.in_progress(&rt));

    let mut resized: Value = json!([
        c(
            "a",
            json!({"requests": {"cpu": "25m"}, "limits": {"cpu": "35m"}})
        ),
        c(
            "b",
            json!({"requests": {"memory": "30Mi"}, "limits": {"memory": "50Mi"}})
        ),
        c("c", json!({"requests": {"cpu": "20m"}})),
    ]);
    resized[1]["resizePolicy"] = json!([
        {"resourceName": "cpu", "restartPolicy": "RestartContainer"},
        {"resourceName": "memory", "restartPolicy": "RestartContainer"},
    ]);
    // c's policy restarts on memory only; its cpu did not change anyway.
    resized[2]["resizePolicy"] =
        json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    let resized = pod(2, resized);
    allocation.allocate(&resized);
    assert_eq!(allocation.generation, Some(2));
    assert!(allocation.in_progress(&rt));
    let plan = plan_resize(&resized, &allocation, &rt);
    let names = |list: &[ContainerResize]| list.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&plan.updates), ["a"]);
    assert_eq!(names(&plan.restarts), ["b"]);

    allocation.actuate("a", "ca");
    // b restarted: a new instance, created with the allocation.
    let rt = view_of(&[running("a", "ca"), running("b", "cb2"), running("c", "cc")]);
    assert!(allocation.record_started(&rt));
    assert!(!allocation.in_progress(&rt));
    assert_eq!(
        plan_resize(&resized, &allocation, &rt),
        ResizePlan::default()
    );
}

#[test]
fn stopped_or_unrecorded_containers_are_not_resized_in_place() {
    let original = pod(1, json!([c("a", json!({"requests": {"cpu": "20m"}}))]));
    let mut allocation = PodAllocation::of(&original);
    let resized = pod(2, json!([c("a", json!({"requests": {"cpu": "30m"}}))]));
    allocation.allocate(&resized);
    let exited = view(&[("a", "ca", ContainerState::Exited)]);
    assert_eq!(
        plan_resize(&resized, &allocation, &exited),
        ResizePlan::default()
    );
    assert!(!allocation.in_progress(&exited));
    let unrecorded = view(&[("a", "ca", ContainerState::Running)]);
    assert_eq!(
        plan_resize(&resized, &allocation, &unrecorded),
        ResizePlan::default()
    );
    assert!(allocation.in_progress(&unrecorded), "until recorded");
}

#[test]
fn resize_restarts_kill_and_start_at_once_unless_already_planned() {
    let restart = |name: &str, id: &str| ContainerResize {
        name: name.into(),
        id: id.into(),
        restart_count: 2,
        init: false,
    };
    let mut actions = PodActions {
        containers_to_kill: vec![ContainerKill {
            id: "cb".into(),
            name: "b".into(),
            reason: KillReason::LivenessFailed,
        }],
        ..Default::default()
    };
    add_restarts(&mut actions, &[restart("a", "ca"), restart("b", "cb")]);
    assert_eq!(actions.containers_to_kill.len(), 2);
    assert_eq!(
        actions.containers_to_kill[1].reason,
        KillReason::ResizeRestart
    );
    assert_eq!(actions.containers_to_start.len(), 1);
    let start = &actions.containers_to_start[0];
    assert_eq!(
        (start.name.as_str(), start.restart_count, start.reason),
        ("a", 3, StartReason::Replace(KillReason::ResizeRestart))
    );

    let mut recreate = PodActions {
        kill_pod: true,
        ..Default::default()
    };
    add_restarts(&mut recreate, &[restart("a", "ca")]);
    assert!(recreate.containers_to_kill.is_empty());
}

#[test]
fn the_status_shows_allocated_and_applied_resources_and_the_resize_conditions() {
    let original = pod(
        1,
        json!([
            c(
                "a",
                json!({"requests": {"cpu": "2m"}, "limits": {"cpu": "10m"}})
            ),
            c("b", json!({"requests": {"memory": "35Mi"}})),
            c("w", json!({})),
        ]),
    );
    let rt = view(&[
        ("a", "ca", ContainerState::Running),
        ("b", "cb", ContainerState::Exited),
    ]);
    let mut allocation = PodAllocation::of(&original);
    allocation.record_started(&rt);
    let mut resized = pod(
        2,
        json!([
            c(
                "a",
                json!({"requests": {"cpu": "1m"}, "limits": {"cpu": "5m"}})
            ),
            c("b", json!({"requests": {"memory": "40Mi"}})),
            c("w", json!({})),
        ]),
    );
    allocation.allocate(&resized);
    resized.status = Some(
        serde_json::from_value(json!({"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "PodResizePending", "status": "True", "reason": "Deferred",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]}))
        .unwrap(),
    );
    let status_of = |allocation: &PodAllocation, conditions: &ResizeConditions| {
        let mut status: PodStatus = serde_json::from_value(json!({
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "PodResizePending", "status": "True", "reason": "Deferred"}],
            "containerStatuses": [
                {"name": "a", "containerID": "containerd://ca", "image": "", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "b", "containerID": "containerd://cb", "image": "", "imageID": "", "ready": false, "restartCount": 0},
                {"name": "w", "image": "", "imageID": "", "ready": false, "restartCount": 0},
            ],
        }))
        .unwrap();
        apply_status(
            &mut status,
            &resized,
            allocation,
            &rt,
            conditions,
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        serde_json::to_value(status).unwrap()
    };

    let s = status_of(
        &allocation,
        &ResizeConditions {
            pending: None,
            in_progress: Some(None),
        },
    );
    // a still runs with what it was given; b is not running: its allocation.
    assert_eq!(
        s["containerStatuses"][0]["resources"],
        json!({"requests": {"cpu": "2m"}, "limits": {"cpu": "10m"}})
    );
    assert_eq!(
        s["containerStatuses"][0]["allocatedResources"],
        json!({"cpu": "1m"})
    );
    assert_eq!(
        s["containerStatuses"][1]["resources"],
        json!({"requests": {"memory": "40Mi"}})
    );
    assert_eq!(
        s["containerStatuses"][2].get("resources"),
        None,
        "no instance, no resources"
    );
    let types: Vec<&str> = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "PodResizeInProgress"]);
    assert_eq!(s["conditions"][1]["observedGeneration"], 2);

    allocation.actuate("a", "ca");
    let s = status_of(
        &allocation,
        &ResizeConditions {
            pending: Some(("Deferred".into(), "Node didn't have enough resource".into())),
            in_progress: None,
        },
    );
    assert_eq!(
        s["containerStatuses"][0]["resources"],
        json!({"requests": {"cpu": "1m"}, "limits": {"cpu": "5m"}})
    );
    let pending = &s["conditions"][1];
    assert_eq!(pending["type"], "PodResizePending");
    assert_eq!(
        pending["lastTransitionTime"], "2026-01-01T00:00:00Z",
        "same reason: kept"
    );
    assert_eq!(pending["observedGeneration"], 2);

    let s = status_of(&allocation, &ResizeConditions::default());
    assert_eq!(
        s["conditions"].as_array().unwrap().len(),
        1,
        "resize conditions gone"
    );
}

#[test]
fn a_memory_limit_below_the_usage_is_reported_in_the_kubelets_words() {
    let runc = "CRI UpdateContainerResources on unix:///run/x.sock failed: Unknown error: failed to update resources: \
                runc did not terminate successfully: exit status 1: unable to set memory limit to 10240 \
                (current usage: 1126400, peak usage: 1351680)";
    assert_eq!(
        update_error_message("c1", runc),
        "attempting to set container \"c1\" memory limit (10240) below current usage (1126400)"
    );
    assert_eq!(
        update_error_message("c1", "unavailable"),
        "container c1: unavailable"
    );
}
