//! Container log rotation, end to end (`e2e/cluster up`): with a small
//! `containerLogMaxSize` set in the node's NodeConfig, a container that logs
//! fast keeps a bounded number of files of bounded size on the node (older
//! ones gzip-compressed), `kubectl logs --tail` still answers with its latest
//! lines, and `kubectl logs -f` goes on across rotations without losing a
//! line. Bad rotation settings are refused by the API server's schema. A
//! finished container's log read over a websocket through the API server (as
//! the upstream conformance test reads it) is whole at every read.
//!
//! The test changes nc-node-2's NodeConfig and puts it back when done.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::websocket::ApiWebsocket;
use nodeconfig_e2e::{admin_kubeconfig, k8s_bin, state_dir};
use serde_json::{json, Value};

const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";
const NODE: &str = "nc-node-2";
const MAX_SIZE: u64 = 64 * 1024;
const MAX_FILES: usize = 3;

/// Puts the node's log rotation settings back, whatever the test's outcome.
struct RotationSettings;

impl RotationSettings {
    fn set(size: &str, files: i64, interval: &str) -> Self {
        patch_rotation(json!(size), json!(files), json!(interval)).expect_ok("set log rotation");
        eventually(
            Duration::from_secs(30),
            "the agent to apply the settings",
            || {
                get_json("nodeconfig", NODE, None)
                    .filter(|nc| nc["status"]["observedGeneration"] == nc["metadata"]["generation"])
            },
        );
        RotationSettings
    }
}

impl Drop for RotationSettings {
    fn drop(&mut self) {
        let _ = patch_rotation(Value::Null, Value::Null, Value::Null);
    }
}

fn patch_rotation(size: Value, files: Value, interval: Value) -> nodeconfig_e2e::kubectl::Run {
    let patch = json!({"spec": {"pods": {
        "containerLogMaxSize": size,
        "containerLogMaxFiles": files,
        "containerLogMonitorInterval": interval,
    }}});
    kubectl(&[
        "patch",
        "nodeconfig",
        NODE,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
}

/// The container's log directory on the node: `<pod-logs>/<ns>_<pod>_<uid>/<container>`.
fn container_log_dir(ns: &str, pod: &Value) -> PathBuf {
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let name = pod["metadata"]["name"].as_str().expect("name");
    state_dir()
        .join("nodes")
        .join(NODE)
        .join("pod-logs")
        .join(format!("{ns}_{name}_{uid}"))
        .join("app")
}

/// (name, size) of every file in `dir`.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), size)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The number in a logger line `line <n> 000...`.
fn line_number(line: &str) -> Option<u64> {
    line.strip_prefix("line ")?.split(' ').next()?.parse().ok()
}

#[test]
fn a_fast_logger_keeps_bounded_files_and_kubectl_logs_follows_across_rotations() {
    let ns = Namespace::new("logrot");
    let _settings = RotationSettings::set("64Ki", MAX_FILES as i64, "3s");
    // About 280 KB a second: each 3 s check finds the file well past 64Ki.
    let script = "i=0; pad=$(printf '%090d' 0); while true; do j=0; \
        while [ $j -lt 200 ]; do i=$((i+1)); j=$((j+1)); echo \"line $i $pad\"; done; \
        usleep 100000; done";
    apply_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "logger", "namespace": ns.0},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", script]}],
        },
    }));
    let pod = eventually(Duration::from_secs(90), "the logger Running", || {
        get_json("pod", "logger", Some(&ns.0)).filter(|p| p["status"]["phase"] == "Running")
    });
    let dir = container_log_dir(&ns.0, &pod);

    // Follow from the start, in the background, as a user would.
    let mut follow = Command::new(k8s_bin("kubectl"))
        .arg("--kubeconfig")
        .arg(admin_kubeconfig())
        .args(["logs", "-f", "-n", &ns.0, "logger"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut numbers = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line_number(&line) {
                numbers.push(n);
            }
        }
        numbers
    });

    // For 20 s the node holds at most MAX_FILES files for the container (a
    // compression's temporary file aside), none far past the limit.
    let started = Instant::now();
    let mut most_files = 0;
    let mut most_bytes = 0;
    let mut compressed_seen = false;
    while started.elapsed() < Duration::from_secs(20) {
        let now = files(&dir);
        let kept: Vec<&(String, u64)> = now.iter().filter(|(n, _)| !n.ends_with(".tmp")).collect();
        most_files = most_files.max(kept.len());
        most_bytes = most_bytes.max(kept.iter().map(|(_, s)| s).sum::<u64>());
        compressed_seen |= kept.iter().any(|(n, _)| n.ends_with(".gz"));
        assert!(kept.len() <= MAX_FILES, "too many log files: {now:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let numbers = reader.join().expect("reader");
    println!(
        "at most {most_files} files and {most_bytes} bytes on the node; follow read {} lines",
        numbers.len()
    );
    assert!(
        compressed_seen,
        "an older rotated file is gzip-compressed: {:?}",
        files(&dir)
    );
    // One interval's writing (about 1 MB) past the limit at most, in every file together.
    assert!(most_bytes < 4 * 1024 * 1024, "{most_bytes} bytes kept");

    // The follow went on across the rotations: every line, in order, far past
    // what one file holds.
    let written = numbers.last().copied().unwrap_or(0);
    assert!(
        written * 100 > 4 * MAX_SIZE,
        "follow stopped early, at line {written}"
    );
    let first = numbers[0];
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(
            *n,
            first + i as u64,
            "a line is missing or repeated after line {}",
            first + i as u64 - 1
        );
    }

    // --tail still reads the newest lines.
    let tail = kubectl(&["logs", "-n", &ns.0, "logger", "--tail=3"]).expect_ok("logs --tail");
    let latest: Vec<u64> = tail.lines().filter_map(line_number).collect();
    assert_eq!(latest.len(), 3, "{tail}");
    assert!(
        latest[0] > written,
        "tail {latest:?} is older than what follow saw ({written})"
    );
}

#[test]
fn bad_rotation_settings_are_refused_by_the_api_server() {
    let run = patch_rotation(json!("0"), json!(1), json!("1s"));
    assert!(!run.ok, "accepted: {}", run.stdout);
    for field in [
        "containerLogMaxSize",
        "containerLogMaxFiles",
        "containerLogMonitorInterval",
    ] {
        assert!(
            run.stderr.contains(field),
            "{field} not named: {}",
            run.stderr
        );
    }
}

/// Reads in a row of each log over a websocket.
const WEBSOCKET_READS: usize = 25;

#[test]
fn a_finished_pods_log_read_over_a_websocket_is_whole_at_every_read() {
    let ns = Namespace::new("logws");
    // A short log, as the upstream test's, and one of several websocket messages.
    apply_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "said", "namespace": ns.0},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "short", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                 "command": ["sh", "-c", "echo container is alive"]},
                {"name": "long", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                 "command": ["sh", "-c", "echo container is alive; seq 1 3000"]},
            ],
        },
    }));
    eventually(Duration::from_secs(90), "the pod Succeeded", || {
        get_json("pod", "said", Some(&ns.0)).filter(|p| p["status"]["phase"] == "Succeeded")
    });
    let long: String = std::iter::once("container is alive".to_string())
        .chain((1..=3000).map(|i| i.to_string()))
        .map(|line| line + "\n")
        .collect();
    let client = ApiWebsocket::admin().expect("the admin's TLS client of the API server");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut failures = Vec::new();
    for (container, expected) in [("short", "container is alive\n"), ("long", long.as_str())] {
        let path = format!(
            "/api/v1/namespaces/{}/pods/said/log?container={container}",
            ns.0
        );
        let mut whole = 0;
        for i in 0..WEBSOCKET_READS {
            let log = runtime
                .block_on(client.read_all(&path))
                .unwrap_or_else(|e| panic!("websocket read {i} of {container}: {e:#}"));
            if log == expected.as_bytes() {
                whole += 1;
            } else {
                failures.push(format!(
                    "{container} read {i}: {} of {} bytes, ending {:?}",
                    log.len(),
                    expected.len(),
                    String::from_utf8_lossy(&log[log.len().saturating_sub(40)..])
                ));
            }
        }
        println!("{container}: {whole} of {WEBSOCKET_READS} websocket reads whole");
    }
    assert!(
        failures.is_empty(),
        "websocket reads not whole:\n{}",
        failures.join("\n")
    );
}
