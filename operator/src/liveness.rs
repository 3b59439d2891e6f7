//! Agent liveness: every agent renews the Lease `node-agent-<node>`; when it goes unrenewed for
//! longer than the grace period, the operator sets its NodeConfig's Ready condition to Unknown,
//! as the node lifecycle controller does for a kubelet. The agent sets Ready again itself once it
//! is back, so the operator only has to stay quiet while the Lease is fresh.
//!
//! In Kubelet mode the agent is the node's kubelet and renews the node Lease
//! `kube-node-lease/<node>` as well; that one counts too. It is the only one an agent running
//! with the node's own credentials can renew: the NodeRestriction admission plugin confines
//! nodes to Leases in `kube-node-lease`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use nodeconfig_crds::conditions::{find_condition, types, ConditionStatus};
use nodeconfig_crds::{NodeConfig, NodeConfigStatus, NodeMode};

use nodeconfig_crds::duration::format_duration;

/// Reason of the Ready condition the operator sets.
pub const HEARTBEAT_LOST: &str = "AgentHeartbeatLost";

/// Namespace of the kubelets' node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// A Lease, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Leases whose renewal shows that `node`'s agent is alive: its own in the operator's
/// namespace and, in Kubelet mode, the node Lease it renews as the node's kubelet. In Companion
/// mode a kubelet renews the node Lease, so it says nothing about the agent.
pub fn heartbeat_leases(node: &str, mode: NodeMode, agent_namespace: &str) -> Vec<LeaseKey> {
    let mut leases = vec![LeaseKey {
        namespace: agent_namespace.to_string(),
        name: format!("node-agent-{node}"),
    }];
    if mode == NodeMode::Kubelet {
        leases.push(LeaseKey {
            namespace: NODE_LEASE_NAMESPACE.to_string(),
            name: node.to_string(),
        });
    }
    leases
}

/// What the Lease says about an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No agent ever reported into this NodeConfig: there is nothing to declare lost.
    NeverReported,
    /// The Lease is fresh; look again when it would expire.
    Alive { recheck_in: Duration },
    /// The Lease is missing (`last_renewal` None) or older than the grace period.
    Lost { last_renewal: Option<Timestamp> },
}

/// Judges an agent from its Lease's last renewal.
pub fn judge(
    has_reported: bool,
    last_renewal: Option<Timestamp>,
    grace: Duration,
    now: Timestamp,
) -> Verdict {
    if !has_reported {
        return Verdict::NeverReported;
    }
    let Some(renewed) = last_renewal else {
        return Verdict::Lost { last_renewal: None };
    };
    let age = now.duration_since(renewed);
    // A renewal "in the future" (clock skew) counts as fresh.
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    match grace.checked_sub(age) {
        Some(left) if !left.is_zero() => Verdict::Alive { recheck_in: left },
        _ => Verdict::Lost {
            last_renewal: Some(renewed),
        },
    }
}

/// Whether an agent ever wrote this status. The operator's own condition (`AgentUpToDate`, set
/// even before any agent reports) does not count.
pub fn has_reported(status: Option<&NodeConfigStatus>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation.is_some()
            || s.agent.is_some()
            || s.conditions
                .iter()
                .any(|c| c.type_ != types::AGENT_UP_TO_DATE)
    })
}

/// The Ready condition to set for a lost agent, or None when Ready already says so.
/// `leases` names the Leases that went unrenewed, for the message.
pub fn heartbeat_lost_condition(
    current_ready: Option<&Condition>,
    leases: &str,
    last_renewal: Option<Timestamp>,
    grace: Duration,
    now: Timestamp,
) -> Option<Condition> {
    let unknown = ConditionStatus::Unknown.as_str();
    if current_ready.is_some_and(|c| c.status == unknown && c.reason == HEARTBEAT_LOST) {
        return None;
    }
    let message = match last_renewal {
        Some(at) => format!(
            "node-agent has not renewed its Lease {leases} since {at} (grace period {})",
            format_duration(grace)
        ),
        None => format!("node-agent's Lease {leases} does not exist"),
    };
    let last_transition_time = match current_ready {
        Some(c) if c.status == unknown => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Some(Condition {
        type_: types::READY.to_string(),
        status: unknown.to_string(),
        reason: HEARTBEAT_LOST.to_string(),
        message,
        observed_generation: None,
        last_transition_time,
    })
}

/// The Ready condition of a NodeConfig, if it has one.
pub fn ready_condition(nc: &NodeConfig) -> Option<&Condition> {
    nc.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, types::READY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GRACE: Duration = Duration::from_secs(50);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid timestamp")
    }

    fn ready(status: &str, reason: &str, since: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(3),
            last_transition_time: Time(at(since)),
        }
    }

    #[test]
    fn verdicts() {
        let cases = [
            ("never reported", false, None, 100, Verdict::NeverReported),
            (
                "never reported, old lease",
                false,
                Some(at(0)),
                100,
                Verdict::NeverReported,
            ),
            (
                "no lease",
                true,
                None,
                100,
                Verdict::Lost { last_renewal: None },
            ),
            (
                "just renewed",
                true,
                Some(at(100)),
                100,
                Verdict::Alive { recheck_in: GRACE },
            ),
            (
                "renewed 10s ago",
                true,
                Some(at(90)),
                100,
                Verdict::Alive {
                    recheck_in: Duration::from_secs(40),
                },
            ),
            (
                "exactly the grace period",
                true,
                Some(at(50)),
                100,
                Verdict::Lost {
                    last_renewal: Some(at(50)),
                },
            ),
            (
                "long gone",
                true,
                Some(at(0)),
                1000,
                Verdict::Lost {
                    last_renewal: Some(at(0)),
                },
            ),
            (
                "clock skew",
                true,
                Some(at(105)),
                100,
                Verdict::Alive { recheck_in: GRACE },
            ),
        ];
        for (name, reported, renewal, now, want) in cases {
            assert_eq!(judge(reported, renewal, GRACE, at(now)), want, "{name}");
        }
    }

    #[test]
    fn kubelet_mode_agents_also_count_their_node_lease() {
        let names = |mode| {
            heartbeat_leases("n1", mode, "nodeconfig-system")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(NodeMode::Companion),
            vec!["nodeconfig-system/node-agent-n1"]
        );
        assert_eq!(
            names(NodeMode::Kubelet),
            vec!["nodeconfig-system/node-agent-n1", "kube-node-lease/n1"]
        );
    }

    #[test]
    fn has_reported_needs_something_from_an_agent() {
        assert!(!has_reported(None));
        assert!(!has_reported(Some(&NodeConfigStatus::default())));
        assert!(has_reported(Some(&NodeConfigStatus {
            observed_generation: Some(1),
            ..Default::default()
        })));
        assert!(has_reported(Some(&NodeConfigStatus {
            conditions: vec![ready("True", "AgentReady", 0)],
            ..Default::default()
        })));
        let mut operators_own = ready("Unknown", "AgentNotReported", 0);
        operators_own.type_ = types::AGENT_UP_TO_DATE.into();
        assert!(!has_reported(Some(&NodeConfigStatus {
            conditions: vec![operators_own],
            ..Default::default()
        })));
    }

    #[test]
    fn lost_condition_is_set_once_and_keeps_its_transition_time() {
        let lease = "nodeconfig-system/node-agent-n1";
        let from_ready = heartbeat_lost_condition(
            Some(&ready("True", "AgentReady", 0)),
            lease,
            Some(at(10)),
            GRACE,
            at(100),
        )
        .expect("Ready=True turns Unknown");
        assert_eq!(
            (from_ready.status.as_str(), from_ready.reason.as_str()),
            ("Unknown", HEARTBEAT_LOST)
        );
        assert_eq!(from_ready.last_transition_time, Time(at(100)));
        assert!(
            from_ready.message.contains(lease) && from_ready.message.contains("50s"),
            "{}",
            from_ready.message
        );
        assert!(
            from_ready.message.contains(&at(10).to_string()),
            "says since when: {}",
            from_ready.message
        );

        let from_other_unknown = heartbeat_lost_condition(
            Some(&ready("Unknown", "Starting", 40)),
            lease,
            None,
            GRACE,
            at(100),
        )
        .expect("another Unknown reason is replaced");
        assert_eq!(
            from_other_unknown.last_transition_time,
            Time(at(40)),
            "status did not change"
        );
        assert!(from_other_unknown.message.contains("does not exist"));

        assert_eq!(
            heartbeat_lost_condition(
                Some(&ready("Unknown", HEARTBEAT_LOST, 40)),
                lease,
                None,
                GRACE,
                at(100)
            ),
            None
        );
        assert!(heartbeat_lost_condition(None, lease, None, GRACE, at(100)).is_some());
    }

    #[test]
    fn status_patch_carries_only_the_ready_condition() {
        let condition = ready("Unknown", HEARTBEAT_LOST, 0);
        let patch = crate::nodeconfig::condition_patch("n1", &condition);
        assert_eq!(patch["kind"], "NodeConfig");
        assert_eq!(patch["metadata"], json!({"name": "n1"}));
        let status = patch["status"].as_object().expect("status");
        assert_eq!(status.keys().collect::<Vec<_>>(), vec!["conditions"]);
        assert_eq!(
            patch["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
    }
}
