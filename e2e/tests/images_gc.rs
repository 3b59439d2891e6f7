//! Image garbage collection, end to end (`e2e/cluster up`): with the node's
//! `imageGCHighThresholdPercent` set just below what its image filesystem
//! (the host's disk) already uses, an image no container uses is removed,
//! while the image of a running pod and the sandbox (pause) image stay and
//! the pod keeps running; the node says it could not get down to the low
//! threshold (`FreeDiskSpaceFailed`, then `ImageGCFailed`) and counts what it
//! removed. Bad settings are refused by the API server's schema.
//!
//! The cluster's agents look every 5 s (`--image-gc-period`) and have image
//! collection off (`imageGCHighThresholdPercent: 100`, see
//! `e2e/scripts/lib/nodeconfig.sh`). The test turns it on for nc-node-2,
//! then off again, and imports the harness's images the collection removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl, Run};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::node::{cri_socket, node_index, node_ip};
use nodeconfig_e2e::repo_root;
use serde_json::{json, Value};

const NODE: &str = "nc-node-2";
const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";
const PAUSE: &str = "nodeconfig.local/pause:3.10";

fn patch_gc(settings: Value) -> Run {
    let patch = json!({"spec": {"pods": settings}});
    kubectl(&[
        "patch",
        "nodeconfig",
        NODE,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
}

fn wait_applied() {
    eventually(
        Duration::from_secs(30),
        "the agent to apply the settings",
        || {
            get_json("nodeconfig", NODE, None)
                .filter(|nc| nc["status"]["observedGeneration"] == nc["metadata"]["generation"])
        },
    );
}

/// Image collection on for the node while it lives; off again afterwards,
/// with the harness's images imported back.
struct Collection;

impl Collection {
    fn on(high: u64, low: u64, min_age: &str) -> Self {
        patch_gc(json!({
            "imageGCHighThresholdPercent": high,
            "imageGCLowThresholdPercent": low,
            "imageMinimumGCAge": min_age,
        }))
        .expect_ok("turn image collection on");
        wait_applied();
        Collection
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        let _ = patch_gc(json!({
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": null,
            "imageMinimumGCAge": null,
        }));
        wait_applied();
        let index = node_index(NODE).expect("node index");
        let out = harness(&format!("images_import {index}"));
        if !out.0 {
            eprintln!(
                "importing the harness's images back into {NODE} failed: {}",
                out.1
            );
        }
    }
}

/// Runs `script` in bash with the cluster scripts' settings and image
/// functions loaded; (success, output).
fn harness(script: &str) -> (bool, String) {
    let lib = repo_root().join("e2e/scripts/lib");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {0}/common.sh && source {0}/images.sh && {script}",
            lib.display()
        ))
        .output()
        .expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `ctr -n k8s.io ARGS` against the node's containerd.
fn ctr(args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(cri_socket(NODE))
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image names the node's containerd holds.
fn images_on_node() -> Vec<String> {
    ctr(&["images", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Builds a small image of its own content (so of its own ID, shared with
/// no other image) and imports it into the node, as the harness imports
/// its images; returns its name.
fn import_unused_image(dir: &Path) -> String {
    let name = format!("nodeconfig.local/gc-victim:{}", std::process::id());
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    std::fs::write(
        rootfs.join("victim"),
        format!("{name} {:?}\n", std::time::SystemTime::now()),
    )
    .expect("write the image's file");
    let archive = dir.join("victim.oci.tar");
    let (ok, out) = harness(&format!(
        "mkdir -p \"$NC_IMAGES\" && _images_pack {name} {} '{{\"Cmd\":[\"/victim\"]}}' {}",
        rootfs.display(),
        archive.display()
    ));
    assert!(ok, "packing {name}: {out}");
    ctr(&["images", "import", &archive.to_string_lossy()]);
    assert!(images_on_node().contains(&name), "{name} was not imported");
    name
}

/// Warning events on the node with this reason.
fn node_events(reason: &str) -> Vec<Value> {
    let selector = format!("involvedObject.kind=Node,involvedObject.name={NODE},reason={reason}");
    let out = kubectl(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        &selector,
        "-o",
        "json",
    ])
    .expect_ok("get events");
    let list: Value = serde_json::from_str(&out).expect("events json");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn agent_metrics() -> String {
    let index = node_index(NODE).expect("node index");
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "5"])
        .arg(format!("http://{}:10356/metrics", node_ip(index)))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodeconfig-images-gc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn past_the_high_threshold_unused_images_go_and_images_in_use_stay() {
    let ns = Namespace::new("imagegc");
    apply_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "keeper", "namespace": ns.0},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": BUSYBOX, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}],
        },
    }));
    let running = eventually(Duration::from_secs(90), "the keeper Running", || {
        get_json("pod", "keeper", Some(&ns.0)).filter(|p| p["status"]["phase"] == "Running")
    });
    let container_id = running["status"]["containerStatuses"][0]["containerID"].clone();

    let dir = temp_dir();
    let victim = import_unused_image(&dir);

    // What the image filesystem uses, as the NodeConfig status shows it.
    let nc = eventually(
        Duration::from_secs(30),
        "the image filesystem in status",
        || {
            get_json("nodeconfig", NODE, None)
                .filter(|nc| nc["status"]["runtime"]["imageFs"]["usedPercent"].is_u64())
        },
    );
    let fs = &nc["status"]["runtime"]["imageFs"];
    let used = fs["usedPercent"].as_u64().expect("usedPercent");
    println!(
        "image filesystem: {used}% of {} bytes used",
        fs["capacityBytes"]
    );
    assert!(
        used >= 4,
        "the host's disk is {used}% used: too empty to make pressure below it"
    );
    // A few points of margin, should the host's usage drop meanwhile.
    let high = used - 3;
    let _collection = Collection::on(high, high - 1, "1s");

    eventually(
        Duration::from_secs(60),
        "the unused image to be removed",
        || (!images_on_node().contains(&victim)).then_some(()),
    );
    let images = images_on_node();
    assert!(
        images.iter().any(|i| i == BUSYBOX),
        "the keeper's image went: {images:?}"
    );
    assert!(
        images.iter().any(|i| i == PAUSE),
        "the sandbox image went: {images:?}"
    );

    // The keeper runs on, the same container, never restarted.
    let pod = get_json("pod", "keeper", Some(&ns.0)).expect("keeper");
    assert_eq!(pod["status"]["phase"], "Running");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["containerID"], container_id);
    assert_eq!(status["restartCount"], 0);
    kubectl(&["exec", "-n", &ns.0, "keeper", "--", "true"]).expect_ok("exec in the keeper");

    // Tiny images cannot bring the host's disk down to the low threshold:
    // the node says so, and again as a failure once it fails twice in a row.
    let failed = eventually(
        Duration::from_secs(30),
        "a FreeDiskSpaceFailed event",
        || node_events("FreeDiskSpaceFailed").into_iter().next(),
    );
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Insufficient free disk space on the node's image filesystem"),
        "{message}"
    );
    assert_eq!(failed["type"], "Warning");
    eventually(Duration::from_secs(30), "an ImageGCFailed event", || {
        node_events("ImageGCFailed").into_iter().next()
    });

    let removed: u64 = agent_metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nodeconfig_agent_image_garbage_collected_total{reason=\"space\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        removed >= 1,
        "image_garbage_collected_total{{reason=space}} is {removed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_image_gc_settings_are_refused_by_the_api_server() {
    for (settings, field) in [
        (
            json!({"imageGCHighThresholdPercent": 50, "imageGCLowThresholdPercent": 60}),
            "imageGCLowThresholdPercent must be less than imageGCHighThresholdPercent",
        ),
        (
            json!({"imageGCHighThresholdPercent": 101}),
            "imageGCHighThresholdPercent",
        ),
        (
            json!({"imageMinimumGCAge": "2m", "imageMaximumGCAge": "1m"}),
            "imageMaximumGCAge must be 0s (off) or longer than imageMinimumGCAge",
        ),
        (json!({"imageMinimumGCAge": "soon"}), "imageMinimumGCAge"),
    ] {
        let run = patch_gc(settings.clone());
        assert!(!run.ok, "{settings} accepted: {}", run.stdout);
        assert!(
            run.stderr.contains(field),
            "{field} not named: {}",
            run.stderr
        );
    }
}
