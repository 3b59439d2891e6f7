//! `spec.activeDeadlineSeconds`, as the kubelet's `activeDeadlineHandler`:
//! once the pod has been active (since `status.startTime`) for that long,
//! it fails with reason `DeadlineExceeded` and its containers are killed.
//! Pure: the worker asks, kills and writes the status.
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;

/// The pod's and the event's reason.
pub const REASON: &str = "DeadlineExceeded";
/// The pod's and the event's message.
pub const MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// How long until the pod's deadline; zero once it has passed; `None`
/// without a deadline or before the pod has a start time.
pub fn remaining(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod.status.as_ref()?.start_time.as_ref()?.0;
    let active = now.duration_since(start);
    let allowed = k8s_openapi::jiff::SignedDuration::from_secs(deadline);
    Some(
        allowed
            .checked_sub(active)
            .and_then(|left| Duration::try_from(left).ok())
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether the pod has been active longer than its deadline allows.
pub fn exceeded(pod: &Pod, now: Timestamp) -> bool {
    remaining(pod, now) == Some(Duration::ZERO)
}

/// The status of a pod failed for its deadline, from the status computed
/// after its containers were killed: phase `Failed` with the kubelet's
/// reason and message, and each container's last termination as its state
/// (nothing restarts in a failed pod).
pub fn failed_status(status: PodStatus) -> PodStatus {
    failed_with(status, REASON, MESSAGE)
}

/// The status of a pod the node failed for `reason` (a deadline, an
/// eviction): phase `Failed` with the reason and message, and each
/// container's last termination as its state.
pub fn failed_with(mut status: PodStatus, reason: &str, message: &str) -> PodStatus {
    status.phase = Some("Failed".into());
    status.reason = Some(reason.into());
    status.message = Some(message.into());
    let terminal = |statuses: &mut Option<Vec<ContainerStatus>>| {
        for c in statuses.iter_mut().flatten() {
            let waiting = c.state.as_ref().is_some_and(|s| s.waiting.is_some());
            let last = c.last_state.as_ref().filter(|s| s.terminated.is_some());
            if let (true, Some(last)) = (waiting, last) {
                c.state = Some(last.clone());
                c.last_state = Some(Default::default());
            }
            c.ready = false;
            c.started = Some(false);
        }
    };
    terminal(&mut status.container_statuses);
    terminal(&mut status.init_container_statuses);
    status
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(deadline: Option<i64>, start: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "activeDeadlineSeconds": deadline},
            "status": {"startTime": start},
        }))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_deadline_counts_from_the_start_time() {
        let now = at("2026-01-01T00:00:10Z");
        let p = pod(Some(30), Some("2026-01-01T00:00:00Z"));
        assert_eq!(remaining(&p, now), Some(Duration::from_secs(20)));
        assert!(!exceeded(&p, now));
        let p = pod(Some(5), Some("2026-01-01T00:00:00Z"));
        assert_eq!(remaining(&p, now), Some(Duration::ZERO));
        assert!(exceeded(&p, now));
        // Exactly at the deadline counts as past it, as in the kubelet.
        let p = pod(Some(10), Some("2026-01-01T00:00:00Z"));
        assert!(exceeded(&p, now));
    }

    #[test]
    fn no_deadline_or_no_start_time_never_expires() {
        let now = at("2026-01-01T10:00:00Z");
        assert_eq!(
            remaining(&pod(None, Some("2026-01-01T00:00:00Z")), now),
            None
        );
        assert_eq!(remaining(&pod(Some(1), None), now), None);
    }

    #[test]
    fn a_failed_pod_shows_its_containers_terminated() {
        let status: PodStatus = serde_json::from_value(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "pause", "image": "pause", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }],
        }))
        .unwrap();
        let failed = failed_status(status);
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(failed.message.as_deref(), Some(MESSAGE));
        let c = &failed.container_statuses.unwrap()[0];
        assert!(c.state.as_ref().unwrap().terminated.is_some());
        assert!(!c.ready);
    }
}
