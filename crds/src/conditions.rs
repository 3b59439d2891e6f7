//! Conditions of a NodeConfig's status, as `metav1.Condition` in a list-map keyed by `type`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of a NodeConfig: the agent reports all but `AGENT_UP_TO_DATE`.
pub mod types {
    /// Summary: the node's agent is up and everything it was asked to do works.
    pub const READY: &str = "Ready";
    /// The spec at `observedGeneration` is applied.
    pub const CONFIG_APPLIED: &str = "ConfigApplied";
    /// The container runtime answers through CRI.
    pub const RUNTIME_READY: &str = "RuntimeReady";
    /// The pods bound to the node run as their specs say (Kubelet mode).
    pub const PODS_READY: &str = "PodsReady";
    /// The proxy rules match the cluster's Services and endpoints.
    pub const PROXY_READY: &str = "ProxyReady";
    /// Something works only in part; the message says what.
    pub const DEGRADED: &str = "Degraded";
    /// The node is under resource pressure (Kubelet mode): an eviction threshold is
    /// crossed, or was within the transition period; the reason names the Node
    /// conditions (`MemoryPressure`, `DiskPressure`, `PIDPressure`).
    pub const PRESSURE: &str = "Pressure";
    /// Set by the operator, not the agent: whether the agent version the node reports is the one
    /// the operator's defaults ask for (`agent.version`, else the tag of `agent.image`).
    pub const AGENT_UP_TO_DATE: &str = "AgentUpToDate";
}

/// Status of a condition, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(ok: bool) -> Self {
        if ok {
            Self::True
        } else {
            Self::False
        }
    }
}

/// A condition to record, without its transition time (which `set_condition` decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition<'a> {
    pub type_: &'a str,
    pub status: ConditionStatus,
    /// CamelCase, machine-readable.
    pub reason: &'a str,
    /// For people.
    pub message: String,
    pub observed_generation: Option<i64>,
}

/// The condition of `type_`, if present.
pub fn find_condition<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Records `new` in `conditions`, replacing the condition of the same type.
///
/// `lastTransitionTime` moves to `now` only when the status changes (or the condition is new),
/// so watchers can tell how long a node has been in its state. Returns whether anything changed,
/// so callers write status only on change.
pub fn set_condition(conditions: &mut Vec<Condition>, new: NewCondition<'_>, now: Time) -> bool {
    let status = new.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let unchanged = existing.status == status
                && existing.reason == new.reason
                && existing.message == new.message
                && existing.observed_generation == new.observed_generation;
            if unchanged {
                return false;
            }
            if existing.status != status {
                existing.last_transition_time = now;
            }
            existing.status = status.to_string();
            existing.reason = new.reason.to_string();
            existing.message = new.message;
            existing.observed_generation = new.observed_generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: new.type_.to_string(),
                status: status.to_string(),
                reason: new.reason.to_string(),
                message: new.message,
                observed_generation: new.observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    fn ready(status: ConditionStatus, reason: &str, message: &str) -> NewCondition<'static> {
        NewCondition {
            type_: types::READY,
            status,
            reason: Box::leak(reason.to_string().into_boxed_str()),
            message: message.to_string(),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn new_condition_is_added_with_now() {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "AgentReady", "ok"),
            at(100)
        ));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, at(100));
    }

    #[test]
    fn same_condition_again_changes_nothing() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "AgentReady", "ok"),
            at(100),
        );
        assert!(!set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "AgentReady", "ok"),
            at(200)
        ));
        assert_eq!(conditions[0].last_transition_time, at(100));
    }

    #[test]
    fn new_message_with_same_status_keeps_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "RuntimeDown", "a"),
            at(100),
        );
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "ProxyFailing", "b"),
            at(200)
        ));
        assert_eq!(conditions[0].reason, "ProxyFailing");
        assert_eq!(conditions[0].message, "b");
        assert_eq!(conditions[0].last_transition_time, at(100));
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "AgentReady", "ok"),
            at(100),
        );
        assert!(set_condition(
            &mut conditions,
            ready(
                ConditionStatus::Unknown,
                "AgentHeartbeatLost",
                "lease expired"
            ),
            at(300)
        ));
        assert_eq!(conditions[0].status, "Unknown");
        assert_eq!(conditions[0].last_transition_time, at(300));
    }

    #[test]
    fn conditions_are_keyed_by_type() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "AgentReady", "ok"),
            at(1),
        );
        let applied = NewCondition {
            type_: types::CONFIG_APPLIED,
            status: ConditionStatus::True,
            reason: "Applied",
            message: "generation 1 applied".into(),
            observed_generation: Some(1),
        };
        set_condition(&mut conditions, applied, at(2));
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "RuntimeDown", "x"),
            at(3),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(
            find_condition(&conditions, types::READY).map(|c| c.status.as_str()),
            Some("False")
        );
        assert_eq!(
            find_condition(&conditions, types::CONFIG_APPLIED)
                .map(|c| c.last_transition_time.clone()),
            Some(at(2))
        );
    }
}
