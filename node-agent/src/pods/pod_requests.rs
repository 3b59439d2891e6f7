//! What a pod asks of its node, summed as the scheduler's `noderesources`
//! filter and the kubelet's admission sum it (`resourcehelper.PodRequests`):
//! the containers' requests, sidecars (restartable init containers) added to
//! them, the largest init container step taken when it is larger, the
//! pod-level requests in place of the containers' where set, then the
//! RuntimeClass overhead.
//!
//! ```text
//!   containers + sidecars --max-- init steps --> pod-level override --> + overhead
//! ```
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::pods::cri_config::quantity::{self, Amount};
use crate::pods::plan::is_sidecar;

/// The resources the kubelet's admission checks against the node's
/// allocatable (extended resources are left to the device plugins it does
/// not have here).
pub const CHECKED_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Requests by resource name.
pub type Requests = BTreeMap<String, Amount>;

/// The pod's effective requests (absent resources request nothing).
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::new();
    };
    let mut total = Requests::new();
    for container in &spec.containers {
        add(&mut total, &quantity::requests(container));
    }
    // An init container runs beside the sidecars started before it; a
    // sidecar keeps running beside the regular containers.
    let mut sidecars = Requests::new();
    let mut largest_init = Requests::new();
    for container in spec.init_containers.iter().flatten() {
        let own = quantity::requests(container);
        let step = if is_sidecar(container) {
            add(&mut total, &own);
            add(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut step = own;
            add(&mut step, &sidecars);
            step
        };
        max(&mut largest_init, &step);
    }
    max(&mut total, &largest_init);
    let pod_level = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .into_iter()
        .flatten()
        .filter(|(name, _)| matches!(name.as_str(), "cpu" | "memory"))
        .filter_map(|(name, q)| Some((name.clone(), Amount::of(q)?)));
    total.extend(pod_level);
    let overhead: Requests = spec
        .overhead
        .iter()
        .flatten()
        .filter_map(|(name, q)| Some((name.clone(), Amount::of(q)?)))
        .collect();
    add(&mut total, &overhead);
    total
}

fn add(into: &mut Requests, more: &Requests) {
    for (name, amount) in more {
        let entry = into.entry(name.clone()).or_default();
        *entry = *entry + *amount;
    }
}

fn max(into: &mut Requests, other: &Requests) {
    for (name, amount) in other {
        let entry = into.entry(name.clone()).or_default();
        *entry = (*entry).max(*amount);
    }
}

/// A resource in the kubelet's integer unit: millicores for cpu, bytes
/// (or units) for the others.
pub fn in_kubelet_units(resource: &str, amount: Amount) -> i64 {
    if resource == "cpu" {
        amount.milli_ceil()
    } else {
        amount.value_ceil()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn c(name: &str, cpu: &str, memory: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}})
    }

    fn units(requests: &Requests) -> (i64, i64) {
        let get = |name: &str| requests.get(name).map_or(0, |a| in_kubelet_units(name, *a));
        (get("cpu"), get("memory"))
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_step() {
        let cases = [
            (
                "containers add up",
                json!({"containers": [c("a", "100m", "64Mi"), c("b", "200m", "64Mi")]}),
                (300, 128 << 20),
            ),
            (
                "a large init container wins",
                json!({"containers": [c("a", "100m", "64Mi")],
                       "initContainers": [c("i", "1", "32Mi")]}),
                (1000, 64 << 20),
            ),
            (
                "sidecars add to the containers and to later init steps",
                json!({"containers": [c("a", "100m", "64Mi")],
                       "initContainers": [
                           {"name": "s", "image": "i", "restartPolicy": "Always",
                            "resources": {"requests": {"cpu": "200m", "memory": "16Mi"}}},
                           c("i", "250m", "16Mi")]}),
                (450, 80 << 20),
            ),
            (
                "limits stand in for missing requests; overhead is added",
                json!({"containers": [{"name": "a", "image": "i",
                        "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}],
                       "overhead": {"cpu": "10m", "memory": "1Mi"}}),
                (510, (1 << 30) + (1 << 20)),
            ),
            (
                "pod-level requests replace the containers'",
                json!({"containers": [c("a", "100m", "64Mi")],
                       "resources": {"requests": {"cpu": "2"}}}),
                (2000, 64 << 20),
            ),
            (
                "nothing requested",
                json!({"containers": [{"name": "a", "image": "i"}]}),
                (0, 0),
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(units(&pod_requests(&pod(spec))), want, "{name}");
        }
    }
}
