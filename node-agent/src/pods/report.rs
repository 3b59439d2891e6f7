//! The pods of this node as the API shows them, counted for the NodeConfig's
//! `pods` block and `PodsReady`.
use k8s_openapi::api::core::v1::Pod;

use crate::pods::admit::is_predicate_reason;
use crate::pods::apparmor::REASON_APPARMOR;
use crate::pods::sysctls::REASON_SYSCTL_FORBIDDEN;
use crate::reports::PodsReport;

impl PodsReport {
    /// Counts from the pods as the API shows them.
    pub fn from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut report = Self {
            synced: true,
            ..Default::default()
        };
        for pod in pods {
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            let restarts: i32 = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .map(|c| c.restart_count)
                .sum();
            report.restarts += u32::try_from(restarts).unwrap_or(0);
            match phase {
                "Running" => {
                    report.desired += 1;
                    report.running += 1;
                    let ready = status
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    report.ready += u32::from(ready);
                }
                "Pending" => {
                    report.desired += 1;
                    report.pending += 1;
                }
                "Failed" => {
                    report.failed += 1;
                    let rejected = status.and_then(|s| s.reason.as_deref()).is_some_and(|r| {
                        is_predicate_reason(r)
                            || r == REASON_SYSCTL_FORBIDDEN
                            || r == REASON_APPARMOR
                    });
                    report.rejected += u32::from(rejected);
                }
                _ => {}
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, ready: bool, restarts: i32, reason: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {
                "phase": phase,
                "reason": reason,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": ready, "restartCount": restarts}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn report_counts_what_kubectl_shows() {
        let pods = [
            pod("Running", true, 0, None),
            pod("Running", false, 3, None),
            pod("Pending", false, 0, None),
            pod("Succeeded", false, 0, None),
            pod("Failed", false, 1, None),
            pod("Failed", false, 0, Some("OutOfpods")),
        ];
        let r = PodsReport::from_pods(pods.iter());
        assert_eq!(
            r,
            PodsReport {
                synced: true,
                desired: 3,
                running: 2,
                ready: 1,
                pending: 1,
                failed: 2,
                restarts: 4,
                rejected: 1,
            }
        );
    }
}
