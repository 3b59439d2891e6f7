//! Pods in the tests: the busybox image every node has, the container most tests run
//! in it, the checks they make of a pod, and waiting for a pod to get somewhere.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kubectl::{condition, eventually, get_json};

/// The busybox image imported into every node's containerd (`e2e/scripts/lib/images.sh`).
pub const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";

/// A busybox container `name` running `script` with `sh -c`.
pub fn busybox(name: &str, script: &str) -> Value {
    json!({"name": name, "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
           "command": ["sh", "-c", script]})
}

/// Running, Ready, and with its address.
pub fn running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && condition(p, "Ready").is_some_and(|(s, _)| s == "True")
        && p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
}

/// The status of container `name` (of the app containers).
pub fn container_status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// Pod `ns/name` once `f` holds of it, within `timeout` (the test fails after that,
/// saying `what` it waited for); prints how long it took.
#[track_caller]
pub fn await_pod(
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let p = eventually(timeout, &format!("pod {ns}/{name}: {what}"), || {
        get_json("pod", name, Some(ns)).filter(|p| f(p))
    });
    println!("pod {ns}/{name}: {what} after {:.1?}", started.elapsed());
    p
}
