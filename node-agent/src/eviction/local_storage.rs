//! Local ephemeral storage limits enforced by eviction, as the kubelet's
//! `localStorageEviction`: an emptyDir past its `sizeLimit`, a pod past the
//! sum of its containers' `ephemeral-storage` limits, a container (writable
//! layer and logs) past its own. Pure: the eviction loop measures.

use k8s_openapi::api::core::v1::Pod;

use crate::eviction::rank::PodUsage;
use crate::pods::cri_config::quantity::{self, Amount};
use crate::pods::plan::is_sidecar;

/// The pod's first local storage violation, as the kubelet's message
/// (emptyDirs, then the pod's total, then each container), if any.
pub fn violation(pod: &Pod, usage: &PodUsage) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let exceeds = |used: u64, limit: Amount| {
        limit > Amount::default()
            && Amount::from_units(i64::try_from(used).unwrap_or(i64::MAX)) > limit
    };
    for volume in spec.volumes.iter().flatten() {
        let Some(size) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        else {
            continue;
        };
        let (Some(limit), Some(used)) = (Amount::of(size), usage.volumes.get(&volume.name)) else {
            continue;
        };
        if exceeds(*used, limit) {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name, size.0
            ));
        }
    }
    // The containers that count: regular ones and sidecars.
    let limited: Vec<(&str, Amount, &str)> = spec
        .containers
        .iter()
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| is_sidecar(c)),
        )
        .filter_map(|c| {
            let text = c
                .resources
                .as_ref()?
                .limits
                .as_ref()?
                .get("ephemeral-storage")?;
            let limit = *quantity::limits(c).get("ephemeral-storage")?;
            Some((c.name.as_str(), limit, text.0.as_str()))
        })
        .collect();
    if !limited.is_empty() {
        let total = limited
            .iter()
            .fold(Amount::default(), |sum, (_, limit, _)| sum + *limit);
        if exceeds(usage.disk(), total) {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                crate::eviction::signals::format_bytes(total.value_ceil().max(0).unsigned_abs())
            ));
        }
    }
    for (name, limit, text) in limited {
        let used = usage
            .containers
            .get(name)
            .map_or(0, |c| c.ephemeral_bytes());
        if exceeds(used, limit) {
            return Some(format!(
                "Container {name} exceeded its local ephemeral storage limit {text:?}. "
            ));
        }
    }
    None
}

/// Whether the pod has a local storage limit to watch (an emptyDir
/// `sizeLimit` or an `ephemeral-storage` limit), so the loop measures only those.
pub fn has_limits(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sized = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()));
    sized
        || spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| quantity::limits(c).contains_key("ephemeral-storage"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::eviction::rank::ContainerUsage;

    const MI: u64 = 1 << 20;

    fn pod(volumes: serde_json::Value, limit: Option<&str>) -> Pod {
        let resources = match limit {
            Some(l) => json!({"limits": {"ephemeral-storage": l}}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "volumes": volumes,
                "containers": [
                    {"name": "app", "image": "i", "resources": resources},
                    {"name": "other", "image": "i"},
                ],
            },
        }))
        .unwrap()
    }

    fn usage(volume: u64, app: u64, other: u64) -> PodUsage {
        let container = |bytes| ContainerUsage {
            memory_working_set: None,
            rootfs_bytes: Some(bytes),
            logs_bytes: 0,
        };
        PodUsage {
            containers: BTreeMap::from([
                ("app".to_string(), container(app)),
                ("other".to_string(), container(other)),
            ]),
            volumes: BTreeMap::from([("cache".to_string(), volume)]),
        }
    }

    #[test]
    fn limits_are_checked_as_the_kubelet_checks_them() {
        let sized = json!([{"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}}]);
        let unlimited = json!([{"name": "cache", "emptyDir": {}}]);
        let cases = [
            (pod(sized.clone(), None), usage(2 * MI, 0, 0), Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\". ")),
            (pod(sized.clone(), None), usage(MI, 0, 0), None),
            (pod(unlimited.clone(), None), usage(100 * MI, 0, 0), None),
            // The pod's total (containers and emptyDirs) against the sum of limits first.
            (pod(unlimited.clone(), Some("10Mi")), usage(8 * MI, MI, 2 * MI), Some("Pod ephemeral local storage usage exceeds the total limit of containers 10Mi. ")),
            (pod(json!([]), Some("2Mi")), usage(0, MI, MI / 2), None),
            (pod(json!([]), Some("1Mi")), usage(0, 0, 0), None),
            (pod(sized, Some("100Mi")), usage(2 * MI, 0, 0), Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\". ")),
        ];
        for (pod, usage, want) in cases {
            assert_eq!(violation(&pod, &usage).as_deref(), want, "{usage:?}");
        }
        let mut p = pod(json!([]), Some("2Mi"));
        // Two limited containers: the pod total is within 4Mi, the app is not within its own.
        p.spec.as_mut().unwrap().containers[1].resources =
            Some(serde_json::from_value(json!({"limits": {"ephemeral-storage": "2Mi"}})).unwrap());
        assert_eq!(
            violation(&p, &usage(0, 3 * MI, 0)).as_deref(),
            Some("Container app exceeded its local ephemeral storage limit \"2Mi\". ")
        );
        assert!(has_limits(&p));
        assert!(!has_limits(&pod(
            json!([{"name": "c", "emptyDir": {}}]),
            None
        )));
    }
}
