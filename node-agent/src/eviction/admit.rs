//! Admission under node pressure, as the kubelet's eviction manager's
//! `Admit` (run first among the kubelet's admit handlers). Pure.
//!
//! ```text
//!   no pressure, or a critical pod             -> admit
//!   MemoryPressure alone, pod not BestEffort   -> admit
//!   MemoryPressure alone, BestEffort pod that tolerates
//!     node.kubernetes.io/memory-pressure:NoSchedule -> admit
//!   anything else                              -> Evicted, "The node had condition: [..]. "
//! ```
//!
//! The pressures are the Node's conditions as the eviction loop publishes
//! them (held for `evictionPressureTransitionPeriod` after the last
//! crossing), so a pod bound to the node then is refused just as the
//! scheduler's taints keep others away.

use k8s_openapi::api::core::v1::{Pod, Taint};

use crate::eviction::rank::{is_critical, REASON};
use crate::pods::admit::{tolerates, Admission};
use crate::pods::cri_config::container::{qos_class, QosClass};
use crate::reports::PressureReport;

/// The taint the node lifecycle controller puts on a node under memory pressure.
pub const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";

/// Whether `pod` may start on a node under `pressure`.
pub fn admit_under_pressure(pod: &Pod, pressure: &PressureReport) -> Admission {
    let conditions = pressure.conditions();
    if conditions.is_empty() || is_critical(pod) {
        return Admission::Admit;
    }
    if conditions == ["MemoryPressure"] {
        if qos_class(pod) != QosClass::BestEffort {
            return Admission::Admit;
        }
        let taint = Taint {
            key: MEMORY_PRESSURE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
        if tolerations
            .into_iter()
            .flatten()
            .any(|t| tolerates(t, &taint))
        {
            return Admission::Admit;
        }
    }
    Admission::Reject {
        reason: REASON,
        message: format!("The node had condition: [{}]. ", conditions.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn pod(resources: Value, extra: Value) -> Pod {
        let mut spec = json!({
            "containers": [{"name": "c", "image": "i", "resources": resources}],
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .unwrap()
    }

    fn pressure(memory: bool, disk: bool, pid: bool) -> PressureReport {
        PressureReport {
            measured: true,
            memory,
            disk,
            pid,
            crossed: String::new(),
        }
    }

    fn outcome(pod: &Pod, pressure: &PressureReport) -> Option<String> {
        match admit_under_pressure(pod, pressure) {
            Admission::Admit => None,
            Admission::Reject { reason, message } => {
                assert_eq!(reason, "Evicted");
                Some(message)
            }
        }
    }

    #[test]
    fn memory_pressure_refuses_best_effort_pods_and_disk_pressure_all_but_critical_ones() {
        let best_effort = pod(json!({}), json!({}));
        let burstable = pod(json!({"requests": {"memory": "10Mi"}}), json!({}));
        let tolerant = pod(
            json!({}),
            json!({"tolerations": [{"key": MEMORY_PRESSURE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        let tolerates_everything = pod(json!({}), json!({"tolerations": [{"operator": "Exists"}]}));
        let tolerates_disk = pod(
            json!({}),
            json!({"tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}]}),
        );
        let critical = pod(json!({}), json!({"priority": 2_000_001_000}));
        let memory = pressure(true, false, false);
        let disk = pressure(false, true, false);
        let both = pressure(true, true, false);
        let pid = pressure(false, false, true);
        let none = pressure(false, false, false);
        let refused_memory = Some("The node had condition: [MemoryPressure]. ".to_string());
        let refused_disk = Some("The node had condition: [DiskPressure]. ".to_string());
        let cases: Vec<(&Pod, &PressureReport, Option<String>)> = vec![
            (&best_effort, &none, None),
            (&best_effort, &memory, refused_memory.clone()),
            (&burstable, &memory, None),
            (&tolerant, &memory, None),
            (&tolerates_everything, &memory, None),
            (&tolerates_disk, &memory, refused_memory),
            (&critical, &memory, None),
            (&burstable, &disk, refused_disk.clone()),
            // A toleration admits under memory pressure alone, never under disk pressure.
            (&tolerant, &disk, refused_disk),
            (&critical, &disk, None),
            (
                &burstable,
                &both,
                Some("The node had condition: [MemoryPressure DiskPressure]. ".into()),
            ),
            (
                &burstable,
                &pid,
                Some("The node had condition: [PIDPressure]. ".into()),
            ),
        ];
        for (pod, pressure, want) in cases {
            assert_eq!(outcome(pod, pressure), want, "{:?} {pressure:?}", pod.spec);
        }
    }
}
