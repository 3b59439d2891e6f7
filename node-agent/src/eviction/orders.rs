//! Evictions decided by the eviction loop and carried out by the pods'
//! workers (the kubelet's `killPodFunc`): the loop places an order under the
//! pod's UID and wakes its worker; the worker kills the pod, writes its
//! `Failed`/`Evicted` status and marks the order done.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::eviction::rank::REASON;
use crate::locked::Locked;
use crate::pods::active_deadline::failed_with;

/// How the worker evicts one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictionOrder {
    /// The pod's status message and the Evicted event's note.
    pub message: String,
    /// The grace period its containers get (the kubelet's 1 s for hard thresholds and limits).
    pub grace_seconds: i64,
    /// Whether the pod gets the `DisruptionTarget` condition (node pressure, not limits).
    pub disruption_target: bool,
}

/// The orders not yet carried out, by pod UID. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct EvictionOrders(Arc<Mutex<BTreeMap<String, EvictionOrder>>>);

impl EvictionOrders {
    /// Orders the pod of `uid` evicted (a pending order stays as it was).
    pub fn place(&self, uid: &str, order: EvictionOrder) {
        self.0.locked().entry(uid.to_string()).or_insert(order);
    }

    /// The order for `uid`, if one waits.
    pub fn get(&self, uid: &str) -> Option<EvictionOrder> {
        self.0.locked().get(uid).cloned()
    }

    /// The worker carried out the order for `uid`.
    pub fn done(&self, uid: &str) {
        self.0.locked().remove(uid);
    }

    /// Whether an order for `uid` waits.
    pub fn pending(&self, uid: &str) -> bool {
        self.0.locked().contains_key(uid)
    }
}

/// The status of an evicted pod, from the status computed after its
/// containers were killed: `Failed`, reason `Evicted`, the order's message,
/// and for node pressure the `DisruptionTarget` condition
/// (`TerminationByKubelet`), as the kubelet's `evictPod`.
pub fn evicted_status(
    status: PodStatus,
    order: &EvictionOrder,
    generation: Option<i64>,
    now: Time,
) -> PodStatus {
    let mut status = failed_with(status, REASON, &order.message);
    if order.disruption_target {
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("TerminationByKubelet".into()),
            message: Some(order.message.clone()),
            observed_generation: generation,
            last_transition_time: Some(now),
            last_probe_time: None,
        });
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evicted_pod_fails_with_the_kubelets_reason_and_condition() {
        let order = EvictionOrder {
            message: "The node was low on resource: memory. ".into(),
            grace_seconds: 1,
            disruption_target: true,
        };
        let running = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = evicted_status(running.clone(), &order, Some(3), now.clone());
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        assert_eq!(status.message.as_deref(), Some(order.message.as_str()));
        let condition = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (condition.type_.as_str(), condition.reason.as_deref()),
            ("DisruptionTarget", Some("TerminationByKubelet"))
        );
        assert_eq!(condition.observed_generation, Some(3));
        let limits = EvictionOrder {
            disruption_target: false,
            ..order
        };
        assert!(evicted_status(running, &limits, None, now)
            .conditions
            .is_none());

        let orders = EvictionOrders::default();
        orders.place("u", limits.clone());
        assert!(orders.pending("u"));
        assert_eq!(orders.get("u"), Some(limits));
        orders.done("u");
        assert!(!orders.pending("u"));
    }
}
