//! What the kubelet builds a pod's containers from, end to end (`e2e/cluster
//! up`): a volume mount's `subPathExpr` expanded with the container's
//! environment, a subPath that another container swaps for a link to `/`
//! (the CVE-2017-1002101 race: never the host's files, a refusal instead;
//! the bind mounts go with the pod, also after an agent restart), and the
//! pod's sysctls (safe ones set in the sandbox, others rejected at
//! admission).
//!
//! Each test works in its own namespace and leaves the nodes as they were, so
//! they run side by side, but for the one that stops an agent.

use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nodeconfig_e2e::cluster::cluster;
use nodeconfig_e2e::kubectl::{apply, eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::Namespace;
use nodeconfig_e2e::pod::{await_pod, running_and_ready, BUSYBOX};
use serde_json::{json, Value};

/// nc-node-1's agent, which the restart test stops: the other tests, which read logs
/// and pod status through the agents, do not run meanwhile (they did, and `kubectl logs`
/// met a refused :10250 in a CI rehearsal).
static AGENT_UP: RwLock<()> = RwLock::new(());

fn agents_up() -> RwLockReadGuard<'static, ()> {
    AGENT_UP.read().unwrap_or_else(|e| e.into_inner())
}

/// Pod created to Running and Ready, with images already on the nodes.
const STARTED: Duration = Duration::from_secs(90);

fn pod(ns: &str, name: &str, container: Value, extra: Value) -> Value {
    let mut spec = json!({"containers": [container], "terminationGracePeriodSeconds": 1});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

fn busybox(script: &str) -> Value {
    json!({"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]})
}

fn exec(ns: &str, pod: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", "-n", ns, pod, "-c", "main", "--"];
    args.extend_from_slice(command);
    kubectl(&args).expect_ok("exec in the pod")
}

fn waiting(p: &Value) -> Option<(String, String)> {
    let state = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    Some((
        state["reason"].as_str()?.to_string(),
        state["message"].as_str().unwrap_or_default().to_string(),
    ))
}

#[test]
fn a_sub_path_expr_mounts_the_directory_its_environment_names() {
    let _agents = agents_up();
    let ns = Namespace::new("subpathexpr");
    let mut writer = busybox("echo written-by-$POD_NAME > /sub/out && exec sleep 3600");
    writer["env"] =
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
    writer["volumeMounts"] = json!([
        {"name": "work", "mountPath": "/sub", "subPathExpr": "logs/$(POD_NAME)"},
        {"name": "work", "mountPath": "/volume"},
    ]);
    let volumes = json!({"volumes": [{"name": "work", "emptyDir": {}}]});
    apply(&pod(&ns.0, "writer", writer, volumes.clone()).to_string()).expect_ok("apply");
    await_pod(
        &ns.0,
        "writer",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let out = eventually(Duration::from_secs(20), "the file in the subPath", || {
        let run = kubectl(&[
            "exec",
            "-n",
            &ns.0,
            "writer",
            "-c",
            "main",
            "--",
            "cat",
            "/volume/logs/writer/out",
        ]);
        run.ok.then_some(run.stdout)
    });
    assert_eq!(out.trim(), "written-by-writer");
    assert_eq!(
        exec(&ns.0, "writer", &["ls", "/volume/logs"]).trim(),
        "writer"
    );

    // A variable the container does not have: the kubelet's config error,
    // and the container is never created.
    let mut broken = busybox("exec sleep 3600");
    broken["volumeMounts"] =
        json!([{"name": "work", "mountPath": "/sub", "subPathExpr": "$(NOT_SET)"}]);
    apply(&pod(&ns.0, "broken", broken, volumes).to_string()).expect_ok("apply");
    let p = await_pod(
        &ns.0,
        "broken",
        "CreateContainerConfigError",
        STARTED,
        |p| waiting(p).is_some_and(|(reason, _)| reason == "CreateContainerConfigError"),
    );
    let (_, message) = waiting(&p).unwrap_or_default();
    assert!(message.contains("missing value for NOT_SET"), "{message}");
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn safe_sysctls_are_set_in_the_pod_and_unsafe_ones_rejected() {
    let _agents = agents_up();
    let ns = Namespace::new("sysctls");
    let sysctls = json!({"securityContext": {"sysctls": [
        {"name": "kernel.shm_rmid_forced", "value": "1"},
        {"name": "net/ipv4/ip_local_port_range", "value": "40000 40100"},
    ]}});
    apply(&pod(&ns.0, "safe", busybox("exec sleep 3600"), sysctls).to_string()).expect_ok("apply");
    await_pod(
        &ns.0,
        "safe",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    assert_eq!(
        exec(&ns.0, "safe", &["cat", "/proc/sys/kernel/shm_rmid_forced"]).trim(),
        "1"
    );
    let range = exec(
        &ns.0,
        "safe",
        &["cat", "/proc/sys/net/ipv4/ip_local_port_range"],
    );
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["40000", "40100"]
    );

    let unsafe_sysctl =
        json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "10000000"}]}});
    apply(&pod(&ns.0, "unsafe", busybox("exec sleep 3600"), unsafe_sysctl).to_string())
        .expect_ok("apply");
    let p = await_pod(&ns.0, "unsafe", "Failed", STARTED, |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden");
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
}

/// The agent's subPath bind mounts of pod `uid` in the host's mount table
/// (the nodes share the host's mount namespace).
fn sub_path_mounts(uid: &str) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let marker = format!("/{uid}/volume-subpaths/");
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|target| target.contains(&marker))
        .map(str::to_string)
        .collect()
}

fn all_running(p: &Value) -> bool {
    p["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|c| c["state"]["running"].is_object()))
}

/// Messages of the pod's `Failed` events about subPath `d`.
fn sub_path_failures(ns: &str, pod: &str) -> Vec<String> {
    let out = kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={pod},reason=Failed"),
        "-o",
        "json",
    ])
    .expect_ok("get events");
    let events: Value = serde_json::from_str(&out).expect("events json");
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("subPath \"d\""))
        .map(str::to_string)
        .collect()
}

/// Container `swapper` turns `d` in the shared emptyDir into a directory
/// (holding `marker`) and into a link to `/`, over and over, with renames
/// of prepared entries; `b0`..`b14` each mount subPath `d` while it does and
/// say what they see. Two pods, so 30 starts race the swap. Every container
/// must end up with the real directory (or an empty one the agent made while
/// `d` was briefly missing), never the host's `/`; the starts that met the
/// link fail with the subPath's reason in an event and are retried.
#[test]
fn a_sub_path_swapped_for_a_link_to_root_never_mounts_the_host() {
    let _agents = agents_up();
    const SWAP: &str = "cd /vol && mkdir -p spare && echo real > spare/marker && ln -sfn / lnk; \
        while :; do mv -T spare d; mv -T d spare; mv -T lnk d; mv -T d lnk; done 2>/dev/null";
    const LOOK: &str = "if [ -e /sub/marker ]; then v=real; \
        elif [ -z \"$(ls -A /sub)\" ]; then v=empty; \
        else v=\"outside: $(ls /sub | head -8 | tr '\\n' ' ')\"; fi; \
        echo \"verdict $v\"; exec sleep 3600";
    let ns = Namespace::new("subpathrace");
    let mut refusals = Vec::new();
    for round in 0..2 {
        let name = format!("race-{round}");
        let mut swapper = busybox(SWAP);
        swapper["name"] = json!("swapper");
        swapper["volumeMounts"] = json!([{"name": "shared", "mountPath": "/vol"}]);
        // The loop only needs to be fast, not to own a core of a shared machine.
        swapper["resources"] = json!({"limits": {"cpu": "300m"}});
        let mut containers = vec![swapper];
        for i in 0..15 {
            let mut b = busybox(LOOK);
            b["name"] = json!(format!("b{i}"));
            b["volumeMounts"] = json!([{"name": "shared", "mountPath": "/sub", "subPath": "d"}]);
            containers.push(b);
        }
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns.0},
            "spec": {
                "containers": containers,
                "volumes": [{"name": "shared", "emptyDir": {}}],
                "terminationGracePeriodSeconds": 1,
            },
        });
        apply(&manifest.to_string()).expect_ok("apply");
        let started = Instant::now();
        let p = eventually(Duration::from_secs(240), "every container running", || {
            get_json("pod", &name, Some(&ns.0)).filter(all_running)
        });
        println!(
            "{name}: all 16 containers running after {:.1?}",
            started.elapsed()
        );
        let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
        let escaped: Vec<String> = (0..15)
            .map(|i| {
                let b = format!("b{i}");
                let log = kubectl(&["logs", "-n", &ns.0, &name, "-c", &b]).expect_ok("logs");
                format!("{b}: {}", log.trim())
            })
            .filter(|seen| !seen.ends_with("verdict real") && !seen.ends_with("verdict empty"))
            .collect();
        assert!(
            escaped.is_empty(),
            "{name}: {} of 15 containers mounted something other than their volume's d: {escaped:#?}",
            escaped.len()
        );
        let mounts = sub_path_mounts(&uid);
        assert_eq!(
            mounts.len(),
            15,
            "one bind mount per subPath mount: {mounts:?}"
        );
        let failures = sub_path_failures(&ns.0, &name);
        println!("{name}: {} failed starts on subPath d", failures.len());
        refusals.extend(failures.into_iter().filter(|m| {
            m.contains("resolves outside its volume")
                || m.contains("had a symbolic link swapped in while it was being mounted")
        }));

        kubectl(&["delete", "pod", "-n", &ns.0, &name, "--wait=false"]).expect_ok("delete");
        eventually(
            Duration::from_secs(60),
            "the pod's subPath mounts gone",
            || sub_path_mounts(&uid).is_empty().then_some(()),
        );
    }
    println!(
        "refused starts: {}; e.g. {:?}",
        refusals.len(),
        refusals.first()
    );
    assert!(
        !refusals.is_empty(),
        "some of the starts met the link and were refused with the subPath's reason"
    );
}

/// A pod's subPath bind mounts are found and removed by an agent that was
/// down when the pod went away.
#[test]
fn sub_path_mounts_of_a_pod_deleted_while_the_agent_was_down_are_removed() {
    let _alone = AGENT_UP.write().unwrap_or_else(|e| e.into_inner());
    let ns = Namespace::new("subpathrestart");
    let mut c = busybox("exec sleep 3600");
    c["volumeMounts"] = json!([
        {"name": "work", "mountPath": "/a", "subPath": "one"},
        {"name": "work", "mountPath": "/b", "subPath": "two/three"},
    ]);
    let extra = json!({"nodeName": "nc-node-1", "volumes": [{"name": "work", "emptyDir": {}}]});
    apply(&pod(&ns.0, "kept-mounts", c, extra).to_string()).expect_ok("apply");
    let p = await_pod(
        &ns.0,
        "kept-mounts",
        "Running and Ready",
        STARTED,
        running_and_ready,
    );
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let mounts = sub_path_mounts(&uid);
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(
        mounts
            .iter()
            .any(|m| m.ends_with("/volume-subpaths/work/main/1")),
        "{mounts:?}"
    );

    cluster(&["agent", "kill", "nc-node-1"]);
    kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.0,
        "kept-mounts",
        "--grace-period=0",
        "--force",
    ])
    .expect_ok("force delete");
    cluster(&["agent", "start", "nc-node-1"]);
    eventually(
        Duration::from_secs(60),
        "the subPath mounts gone after the agent's restart",
        || sub_path_mounts(&uid).is_empty().then_some(()),
    );
}
