//! Table of cases after the kubelet's `TestComputePodActions`.
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::json;

use crate::pods::backoff::{Backoff, BackoffKey};
use crate::pods::plan::*;
use crate::pods::runtime_view::*;

const NOW: u64 = 10_000;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn c(name: &str) -> serde_json::Value {
    json!({"name": name, "image": format!("{name}:1")})
}

fn pod_with(policy: &str, init: &[&str], containers: &[&str], extra: serde_json::Value) -> Pod {
    let mut pod = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": {
            "restartPolicy": policy,
            "initContainers": init.iter().map(|n| c(n)).collect::<Vec<_>>(),
            "containers": containers.iter().map(|n| c(n)).collect::<Vec<_>>(),
        },
    });
    json_patch(&mut pod, extra);
    serde_json::from_value(pod).unwrap()
}

fn pod(policy: &str, containers: &[&str]) -> Pod {
    pod_with(policy, &[], containers, json!({}))
}

fn json_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                json_patch(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn hash_of(name: &str) -> String {
    let container: Container = serde_json::from_value(c(name)).unwrap();
    container_spec_hash(&container)
}

fn sandbox(id: &str, ready: bool, attempt: u32) -> SandboxView {
    SandboxView {
        id: id.into(),
        state: if ready {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        attempt,
        created_at: t(100 + u64::from(attempt)),
        ip: Some("10.244.1.5".into()),
    }
}

fn ctr(
    name: &str,
    state: ContainerState,
    exit_code: i32,
    finished: Option<u64>,
    restarts: u32,
) -> ContainerView {
    ContainerView {
        id: format!("{name}-{restarts}"),
        name: name.into(),
        sandbox_id: "s1".into(),
        state,
        exit_code,
        created_at: t(200 + u64::from(restarts)),
        started_at: Some(t(200 + u64::from(restarts))),
        finished_at: finished.map(t),
        attempt: restarts,
        restart_count: restarts,
        spec_hash: Some(hash_of(name)),
        reason: String::new(),
        message: String::new(),
        image_ref: String::new(),
    }
}

fn running(name: &str) -> ContainerView {
    ctr(name, ContainerState::Running, 0, None, 0)
}

fn exited(name: &str, code: i32) -> ContainerView {
    ctr(name, ContainerState::Exited, code, Some(NOW - 1), 0)
}

fn view(sandboxes: Vec<SandboxView>, containers: Vec<ContainerView>) -> PodRuntimeView {
    PodRuntimeView::new(sandboxes, containers)
}

fn ready() -> Vec<SandboxView> {
    vec![sandbox("s1", true, 0)]
}

/// One line per action, so a case's expectation reads at a glance.
fn summary(a: &PodActions) -> String {
    let mut out = Vec::new();
    if a.kill_pod {
        out.push("kill-pod".to_string());
    }
    if a.create_sandbox {
        out.push(format!("create-sandbox({})", a.attempt));
    }
    for init in &a.init_containers_to_start {
        out.push(format!("init:{}", start(init)));
    }
    for s in &a.containers_to_start {
        out.push(format!("start:{}", start(s)));
    }
    for e in &a.ephemeral_containers_to_start {
        match &e.target {
            Some(t) => out.push(format!(
                "ephemeral:{}->{}",
                e.name,
                t.container_id.as_deref().unwrap_or("?")
            )),
            None => out.push(format!("ephemeral:{}", e.name)),
        }
    }
    for k in &a.containers_to_kill {
        out.push(format!("kill:{}:{:?}", k.id, k.reason));
    }
    for b in &a.backing_off {
        out.push(format!("backoff:{}:{}s", b.name, b.remaining.as_secs()));
    }
    out.join(" ")
}

fn start(s: &ContainerStart) -> String {
    let reason = match s.reason {
        StartReason::NotCreated => "new".to_string(),
        StartReason::Restart => "restart".to_string(),
        StartReason::Replace(k) => format!("replace/{k:?}"),
    };
    format!("{}/{}/#{}", s.name, reason, s.restart_count)
}

struct Case {
    name: &'static str,
    pod: Pod,
    runtime: PodRuntimeView,
    probes: ProbeFailures,
    backoff: Backoff,
    want: &'static str,
}

/// Plans every case and fails with all the cases whose plan differs.
fn check_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let got = summary(&compute_pod_actions(
            &c.pod,
            &c.runtime,
            &c.probes,
            &c.backoff,
            t(NOW),
        ));
        if got != c.want {
            failures.push(format!(
                "{}:\n   want {:?}\n    got {:?}",
                c.name, c.want, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn case(name: &'static str, pod: Pod, runtime: PodRuntimeView, want: &'static str) -> Case {
    Case {
        name,
        pod,
        runtime,
        probes: ProbeFailures::default(),
        backoff: Backoff::default(),
        want,
    }
}

fn backing_off(name: &str) -> Backoff {
    let mut b = Backoff::default();
    // Restarted once before, after an exit 5s before the latest one: wait is now 10s.
    b.record_restart(BackoffKey::new("uid-1", name), t(NOW - 6));
    b
}

fn liveness(name: &str) -> ProbeFailures {
    ProbeFailures {
        liveness: [name.to_string()].into(),
        ..Default::default()
    }
}

#[test]
fn compute_pod_actions_table() {
    let deleted = json!({"metadata": {"deletionTimestamp": "2026-11-29T22:00:00Z"}});
    let host_network = json!({"spec": {"hostNetwork": true}});
    let mut changed = running("app");
    changed.spec_hash = Some("0000000000000000".into());
    let mut no_ip = sandbox("s1", true, 0);
    no_ip.ip = None;

    let cases = vec![
        case(
            "new pod: sandbox and every container",
            pod("Always", &["app", "side"]),
            view(vec![], vec![]),
            "create-sandbox(0) start:app/new/#0 start:side/new/#0",
        ),
        case(
            "all running, nothing changed",
            pod("Always", &["app", "side"]),
            view(ready(), vec![running("app"), running("side")]),
            "",
        ),
        case(
            "sandbox not ready: kill and recreate with the next attempt",
            pod("Always", &["app"]),
            view(vec![sandbox("s1", false, 0)], vec![exited("app", 137)]),
            "kill-pod create-sandbox(1) start:app/new/#1",
        ),
        case(
            "two ready sandboxes: kill and recreate",
            pod("Always", &["app"]),
            view(
                vec![sandbox("s1", true, 0), sandbox("s2", true, 1)],
                vec![running("app")],
            ),
            "kill-pod create-sandbox(2) start:app/new/#1",
        ),
        case(
            "ready sandbox without an IP: recreate",
            pod("Always", &["app"]),
            view(vec![no_ip.clone()], vec![running("app")]),
            "kill-pod create-sandbox(1) start:app/new/#1",
        ),
        case(
            "host network sandbox needs no IP",
            pod_with("Always", &[], &["app"], host_network),
            view(vec![no_ip], vec![running("app")]),
            "",
        ),
        case(
            "Always: exited container restarts (first time at once)",
            pod("Always", &["app", "side"]),
            view(ready(), vec![exited("app", 0), running("side")]),
            "start:app/restart/#1",
        ),
        case(
            "OnFailure: exit 0 is left alone",
            pod("OnFailure", &["app", "side"]),
            view(ready(), vec![exited("app", 0), running("side")]),
            "",
        ),
        case(
            "OnFailure: exit 1 restarts",
            pod("OnFailure", &["app", "side"]),
            view(ready(), vec![exited("app", 1), running("side")]),
            "start:app/restart/#1",
        ),
        case(
            "OnFailure: all succeeded: stop the sandbox",
            pod("OnFailure", &["app"]),
            view(ready(), vec![exited("app", 0)]),
            "kill-pod",
        ),
        case(
            "Never: a failed container stays down",
            pod("Never", &["app", "side"]),
            view(ready(), vec![exited("app", 1), running("side")]),
            "",
        ),
        case(
            "Never: all exited: stop the sandbox",
            pod("Never", &["app"]),
            view(ready(), vec![exited("app", 1)]),
            "kill-pod",
        ),
        case(
            "Never: dead sandbox after containers ran is not recreated",
            pod("Never", &["app"]),
            view(vec![sandbox("s1", false, 0)], vec![exited("app", 0)]),
            "kill-pod",
        ),
        case(
            "OnFailure: dead sandbox, all succeeded: not recreated",
            pod("OnFailure", &["app"]),
            view(vec![sandbox("s1", false, 0)], vec![exited("app", 0)]),
            "kill-pod",
        ),
        case(
            "OnFailure: dead sandbox recreated for the failed container only",
            pod("OnFailure", &["app", "side"]),
            view(
                vec![sandbox("s1", false, 0)],
                vec![exited("app", 0), exited("side", 2)],
            ),
            "kill-pod create-sandbox(1) start:side/new/#1",
        ),
        case(
            "spec hash changed: kill and start",
            pod("Always", &["app"]),
            view(ready(), vec![changed.clone()]),
            "start:app/replace/SpecChanged/#1 kill:app-0:SpecChanged",
        ),
        case(
            "spec hash changed restarts even under Never",
            pod("Never", &["app"]),
            view(ready(), vec![changed]),
            "start:app/replace/SpecChanged/#1 kill:app-0:SpecChanged",
        ),
        case(
            "unknown state: kill it and start anew",
            pod("Always", &["app"]),
            view(
                ready(),
                vec![ctr("app", ContainerState::Unknown, 0, None, 0)],
            ),
            "start:app/restart/#1 kill:app-0:UnknownState",
        ),
        case(
            "created but never started: start anew",
            pod("Always", &["app"]),
            view(
                ready(),
                vec![ctr("app", ContainerState::Created, 0, None, 3)],
            ),
            "start:app/restart/#4",
        ),
        case(
            "deletion: kill the pod",
            pod_with("Always", &[], &["app"], deleted.clone()),
            view(ready(), vec![running("app")]),
            "kill-pod",
        ),
        case(
            "deletion with nothing left: nothing to do",
            pod_with("Always", &[], &["app"], deleted),
            view(vec![sandbox("s1", false, 0)], vec![exited("app", 0)]),
            "",
        ),
        case(
            "terminal phase: kill the pod",
            pod_with(
                "Always",
                &[],
                &["app"],
                json!({"status": {"phase": "Failed"}}),
            ),
            view(ready(), vec![running("app")]),
            "kill-pod",
        ),
        case(
            "init: new pod starts the first init container only",
            pod_with("Always", &["init1", "init2"], &["app"], json!({})),
            view(vec![], vec![]),
            "create-sandbox(0) init:init1/new/#0",
        ),
        case(
            "init: first done, second next",
            pod_with("Always", &["init1", "init2"], &["app"], json!({})),
            view(ready(), vec![exited("init1", 0)]),
            "init:init2/new/#0",
        ),
        case(
            "init: one running: wait",
            pod_with("Always", &["init1", "init2"], &["app"], json!({})),
            view(ready(), vec![exited("init1", 0), running("init2")]),
            "",
        ),
        case(
            "init: all done: start the containers",
            pod_with("Always", &["init1", "init2"], &["app"], json!({})),
            view(ready(), vec![exited("init1", 0), exited("init2", 0)]),
            "start:app/new/#0",
        ),
        case(
            "init: failed under OnFailure restarts it",
            pod_with("OnFailure", &["init1", "init2"], &["app"], json!({})),
            view(ready(), vec![exited("init1", 0), exited("init2", 1)]),
            "init:init2/restart/#1",
        ),
        case(
            "init: failed under Never fails the pod",
            pod_with("Never", &["init1"], &["app"], json!({})),
            view(ready(), vec![exited("init1", 1)]),
            "kill-pod",
        ),
        case(
            "init: done and containers running: init is not rerun",
            pod_with("Always", &["init1"], &["app"], json!({})),
            view(ready(), vec![running("app")]),
            "",
        ),
    ];
    check_cases(&cases);
}

#[test]
fn back_off_and_probes_table() {
    let cases = vec![
        Case {
            backoff: backing_off("app"),
            ..case(
                "Always: exited within its back-off waits (CrashLoopBackOff)",
                pod("Always", &["app", "side"]),
                view(ready(), vec![exited("app", 1), running("side")]),
                "backoff:app:9s",
            )
        },
        Case {
            backoff: backing_off("app"),
            ..case(
                "back-off alone does not stop the sandbox",
                pod("Always", &["app"]),
                view(ready(), vec![exited("app", 1)]),
                "backoff:app:9s",
            )
        },
        Case {
            backoff: backing_off("init1"),
            ..case(
                "failed init container waits for its back-off",
                pod_with("Always", &["init1"], &["app"], json!({})),
                view(ready(), vec![exited("init1", 1)]),
                "backoff:init1:9s",
            )
        },
        Case {
            backoff: backing_off("other"),
            ..case(
                "back-off is per container",
                pod("Always", &["app"]),
                view(ready(), vec![exited("app", 1)]),
                "start:app/restart/#1",
            )
        },
        Case {
            probes: liveness("app"),
            ..case(
                "liveness failure under Always: kill and restart",
                pod("Always", &["app", "side"]),
                view(ready(), vec![running("app"), running("side")]),
                "start:app/replace/LivenessFailed/#1 kill:app-0:LivenessFailed",
            )
        },
        Case {
            probes: liveness("app"),
            ..case(
                "liveness failure under Never: kill only",
                pod("Never", &["app", "side"]),
                view(ready(), vec![running("app"), running("side")]),
                "kill:app-0:LivenessFailed",
            )
        },
        Case {
            probes: ProbeFailures {
                startup: ["app".to_string()].into(),
                ..Default::default()
            },
            ..case(
                "startup failure under OnFailure: kill and restart",
                pod("OnFailure", &["app"]),
                view(ready(), vec![running("app")]),
                "start:app/replace/StartupFailed/#1 kill:app-0:StartupFailed",
            )
        },
    ];
    check_cases(&cases);
}

#[test]
fn a_crash_loop_waits_longer_each_time() {
    // The shell's loop, simulated: start when planned, record the restart, crash 1s later.
    let pod = pod("Always", &["app"]);
    let mut backoff = Backoff::default();
    let mut clock = NOW;
    let mut restarts = 0;
    let mut waits = Vec::new();
    let mut last = exited("app", 1);
    for _ in 0..40 {
        let actions = compute_pod_actions(
            &pod,
            &view(ready(), vec![last.clone()]),
            &ProbeFailures::default(),
            &backoff,
            t(clock),
        );
        if let Some(start) = actions.containers_to_start.first() {
            backoff.record_restart(
                BackoffKey::new("uid-1", "app"),
                start.previous_exit.unwrap(),
            );
            restarts = start.restart_count;
            last = ctr("app", ContainerState::Exited, 1, Some(clock + 1), restarts);
            clock += 1;
        } else {
            let wait = actions.requeue_after().unwrap();
            waits.push(wait.as_secs());
            clock += wait.as_secs();
        }
    }
    assert_eq!(&waits[..6], &[10, 20, 40, 80, 160, 300]);
    assert!(restarts >= 7);
    assert_eq!(restarts, last.restart_count);
}

#[test]
fn previous_exit_is_handed_to_the_shell() {
    let actions = compute_pod_actions(
        &pod("Always", &["app"]),
        &view(ready(), vec![exited("app", 3)]),
        &ProbeFailures::default(),
        &Backoff::default(),
        t(NOW),
    );
    assert_eq!(
        actions.containers_to_start[0].previous_exit,
        Some(t(NOW - 1))
    );
    assert_eq!(actions.sandbox_id.as_deref(), Some("s1"));
    assert!(!actions.is_noop());
}

#[test]
fn spec_hash_covers_name_and_image_only() {
    let base: Container =
        serde_json::from_value(json!({"name": "app", "image": "busybox:1"})).unwrap();
    let same = base.clone();
    let new_image = Container {
        image: Some("busybox:2".into()),
        ..base.clone()
    };
    let renamed = Container {
        name: "other".into(),
        ..base.clone()
    };
    let new_args = Container {
        args: Some(vec!["sleep".into()]),
        ..base.clone()
    };
    let h = container_spec_hash(&base);
    assert_eq!(h.len(), 16);
    assert_eq!(h, container_spec_hash(&same));
    assert_ne!(h, container_spec_hash(&new_image));
    assert_ne!(h, container_spec_hash(&renamed));
    assert_eq!(h, container_spec_hash(&new_args));
}

/// A pod with init containers `side` (a sidecar, `restartPolicy: Always`,
/// with a startup probe) and `setup`, and the app container `app`.
fn pod_with_sidecar(policy: &str) -> Pod {
    pod_with(
        policy,
        &["side", "setup"],
        &["app"],
        json!({"spec": {"initContainers": [
            {"name": "side", "image": "side:1", "restartPolicy": "Always",
             "startupProbe": {"tcpSocket": {"port": 8080}}},
            {"name": "setup", "image": "setup:1"},
        ]}}),
    )
}

#[test]
fn sidecars_start_in_turn_and_keep_running() {
    let not_started = ProbeFailures {
        not_started: ["side".to_string()].into(),
        ..Default::default()
    };
    let cases = vec![
        case(
            "new pod: the sidecar first",
            pod_with_sidecar("Always"),
            view(vec![], vec![]),
            "create-sandbox(0) init:side/new/#0",
        ),
        Case {
            probes: not_started.clone(),
            ..case(
                "sidecar running, startup probe not passed: wait",
                pod_with_sidecar("Always"),
                view(ready(), vec![running("side")]),
                "",
            )
        },
        case(
            "sidecar started: the next init container",
            pod_with_sidecar("Always"),
            view(ready(), vec![running("side")]),
            "init:setup/new/#0",
        ),
        case(
            "sidecar running and the last init done: the app containers",
            pod_with_sidecar("Never"),
            view(ready(), vec![running("side"), exited("setup", 0)]),
            "start:app/new/#0",
        ),
        case(
            "initialised: an exited sidecar restarts, even under Never",
            pod_with_sidecar("Never"),
            view(
                ready(),
                vec![exited("side", 1), exited("setup", 0), running("app")],
            ),
            "init:side/restart/#1",
        ),
        Case {
            probes: liveness("side"),
            ..case(
                "initialised: a sidecar failing liveness is replaced",
                pod_with_sidecar("Always"),
                view(
                    ready(),
                    vec![running("side"), exited("setup", 0), running("app")],
                ),
                "init:side/replace/LivenessFailed/#1 kill:side-0:LivenessFailed",
            )
        },
        case(
            "app containers done under Never: the pod stops, sidecar too",
            pod_with_sidecar("Never"),
            view(
                ready(),
                vec![running("side"), exited("setup", 0), exited("app", 0)],
            ),
            "kill-pod",
        ),
    ];
    check_cases(&cases);
}

fn with_ephemeral(mut pod: Pod, names: &[(&str, Option<&str>)]) -> Pod {
    let list = names
        .iter()
        .map(|(name, target)| {
            serde_json::from_value(json!({
                "name": name, "image": "busybox:1", "targetContainerName": target,
            }))
            .unwrap()
        })
        .collect();
    pod.spec.as_mut().unwrap().ephemeral_containers = Some(list);
    pod
}

#[test]
fn ephemeral_containers_start_once_in_the_existing_sandbox() {
    let debug = |policy: &str| with_ephemeral(pod(policy, &["app"]), &[("debug", None)]);
    let targeted = with_ephemeral(
        pod_with("Always", &["init"], &["app"], json!({})),
        &[("debug", Some("app")), ("early", Some("init"))],
    );
    let deleted = {
        let mut p = debug("Always");
        p.metadata.deletion_timestamp = serde_json::from_value(json!("2026-11-29T22:00:00Z")).ok();
        p
    };
    check_cases(&[
        case(
            "added to a running pod: started",
            debug("Always"),
            view(ready(), vec![running("app")]),
            "ephemeral:debug",
        ),
        case(
            "running: left alone",
            debug("Always"),
            view(ready(), vec![running("app"), running("debug")]),
            "",
        ),
        case(
            "exited: never restarted, whatever the restart policy",
            debug("Always"),
            view(ready(), vec![running("app"), exited("debug", 1)]),
            "",
        ),
        case(
            "with a regular container to restart, still only once",
            debug("Always"),
            view(ready(), vec![exited("app", 1), exited("debug", 0)]),
            "start:app/restart/#1",
        ),
        case(
            "before initialization is done, with its target's instance; a target without one has none",
            targeted,
            view(ready(), vec![running("init")]),
            "ephemeral:debug->? ephemeral:early->init-0",
        ),
        case(
            "a new pod: the sandbox and its containers first",
            debug("Always"),
            view(vec![], vec![]),
            "create-sandbox(0) start:app/new/#0",
        ),
        case(
            "regular containers done (Never): the pod is killed, nothing new starts",
            debug("Never"),
            view(ready(), vec![exited("app", 0)]),
            "kill-pod",
        ),
        case(
            "deleted: the running ephemeral container is stopped with the pod",
            deleted,
            view(ready(), vec![running("app"), running("debug")]),
            "kill-pod",
        ),
    ]);
}
