//! Version skew: whether the agent a node reports is the version the operator's defaults ask for
//! (`agent.version`, else the tag of `agent.image`), shown as the NodeConfig's `AgentUpToDate`
//! condition so that `kubectl get nc` tells which nodes lag.
//!
//! The condition is the operator's, written under a field manager of its own: the liveness
//! writer applies the Ready condition alone under the operator's main manager, and an apply
//! drops whatever else its manager owned.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use nodeconfig_crds::conditions::{types, ConditionStatus};
use nodeconfig_crds::{AgentStatus, NodeMode};

use crate::rollout;

/// Field manager of the `AgentUpToDate` condition.
pub const FIELD_MANAGER: &str = "nodeconfig-operator-version";
/// The agent runs the desired version.
pub const DESIRED_VERSION: &str = "DesiredVersion";
/// The agent runs another version.
pub const VERSION_SKEW: &str = "VersionSkew";
/// No agent has reported a version yet.
pub const NOT_REPORTED: &str = "AgentNotReported";

/// The `AgentUpToDate` condition for an agent that reports `reported` when `desired` is wanted,
/// or None when `current` already says so. The transition time moves only with the status.
/// `stall` is why the DaemonSet's rollout was stopped, for a Companion node that lags.
pub fn up_to_date_condition(
    desired: &str,
    reported: Option<&AgentStatus>,
    stall: Option<&str>,
    current: Option<&Condition>,
    now: Timestamp,
) -> Option<Condition> {
    let (status, reason, message) = match reported.filter(|a| !a.version.is_empty()) {
        None => (
            ConditionStatus::Unknown,
            NOT_REPORTED,
            format!("no node-agent has reported its version yet; {desired} is desired"),
        ),
        Some(agent) if same_version(&agent.version, desired) => (
            ConditionStatus::True,
            DESIRED_VERSION,
            format!("node-agent {} runs, the desired version", agent.version),
        ),
        Some(agent) if agent.mode == NodeMode::Companion && stall.is_some() => (
            ConditionStatus::False,
            rollout::STALLED,
            format!(
                "node-agent {} runs; {desired} is desired, but its rollout was stopped: {}",
                agent.version,
                stall.unwrap_or_default()
            ),
        ),
        Some(agent) => (
            ConditionStatus::False,
            VERSION_SKEW,
            format!(
                "node-agent {} runs; {desired} is desired ({})",
                agent.version,
                match agent.mode {
                    NodeMode::Companion => "the node-agent DaemonSet rolls it",
                    NodeMode::Kubelet => {
                        "a Kubelet-mode agent is a system service: upgrade it on the node"
                    }
                }
            ),
        ),
    };
    let status = status.as_str();
    if current.is_some_and(|c| c.status == status && c.reason == reason && c.message == message) {
        return None;
    }
    let last_transition_time = match current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Some(Condition {
        type_: types::AGENT_UP_TO_DATE.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: None,
        last_transition_time,
    })
}

/// Versions compare without a leading `v`, so an image tagged `v0.2.0` matches an agent that
/// says `0.2.0`.
fn same_version(a: &str, b: &str) -> bool {
    a.strip_prefix('v').unwrap_or(a) == b.strip_prefix('v').unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid timestamp")
    }

    fn agent(version: &str, mode: NodeMode) -> AgentStatus {
        AgentStatus {
            version: version.into(),
            mode,
        }
    }

    fn verdict(desired: &str, reported: Option<&AgentStatus>) -> (String, String, String) {
        let c =
            up_to_date_condition(desired, reported, None, None, at(0)).expect("a new condition");
        assert_eq!(c.type_, "AgentUpToDate");
        (c.status, c.reason, c.message)
    }

    #[test]
    fn verdicts() {
        let kubelet = agent("0.1.0", NodeMode::Kubelet);
        let companion = agent("0.1.0", NodeMode::Companion);
        let cases: [(&str, Option<&AgentStatus>, &str, &str, &str); 6] = [
            ("0.1.0", Some(&kubelet), "True", DESIRED_VERSION, "node-agent 0.1.0 runs, the desired version"),
            ("v0.1.0", Some(&kubelet), "True", DESIRED_VERSION, "node-agent 0.1.0 runs, the desired version"),
            ("0.2.0", Some(&kubelet), "False", VERSION_SKEW, "node-agent 0.1.0 runs; 0.2.0 is desired (a Kubelet-mode agent is a system service: upgrade it on the node)"),
            ("0.2.0", Some(&companion), "False", VERSION_SKEW, "node-agent 0.1.0 runs; 0.2.0 is desired (the node-agent DaemonSet rolls it)"),
            ("0.2.0", None, "Unknown", NOT_REPORTED, "no node-agent has reported its version yet; 0.2.0 is desired"),
            ("0.2.0", Some(&agent("", NodeMode::Kubelet)), "Unknown", NOT_REPORTED, "no node-agent has reported its version yet; 0.2.0 is desired"),
        ];
        for (desired, reported, status, reason, message) in cases {
            assert_eq!(
                verdict(desired, reported),
                (status.into(), reason.into(), message.into()),
                "desired {desired}, reported {reported:?}"
            );
        }
    }

    #[test]
    fn a_condition_that_already_says_so_is_not_written_again() {
        let a = agent("0.1.0", NodeMode::Kubelet);
        let first = up_to_date_condition("0.1.0", Some(&a), None, None, at(0)).expect("new");
        assert_eq!(
            up_to_date_condition("0.1.0", Some(&a), None, Some(&first), at(10)),
            None
        );
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let a = agent("0.1.0", NodeMode::Kubelet);
        let skewed = up_to_date_condition("0.2.0", Some(&a), None, None, at(0)).expect("new");
        // Another desired version, still skewed: new message, same transition time.
        let still = up_to_date_condition("0.3.0", Some(&a), None, Some(&skewed), at(10))
            .expect("message changed");
        assert_eq!(
            (still.status.as_str(), still.last_transition_time.0),
            ("False", at(0))
        );
        // Back to the agent's version: True from now on.
        let current = up_to_date_condition("0.1.0", Some(&a), None, Some(&still), at(20))
            .expect("status changed");
        assert_eq!(
            (current.status.as_str(), current.last_transition_time.0),
            ("True", at(20))
        );
    }

    #[test]
    fn a_companion_node_that_lags_behind_a_stopped_rollout_says_why() {
        let stall = Some("no progress for 1m: 1 of 2 agents run agent:2, 1 available");
        let companion = agent("0.1.0", NodeMode::Companion);
        let c = up_to_date_condition("0.2.0", Some(&companion), stall, None, at(0)).expect("new");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RolloutStalled")
        );
        assert_eq!(
            c.message,
            "node-agent 0.1.0 runs; 0.2.0 is desired, but its rollout was stopped: no progress for 1m: 1 of 2 agents run agent:2, 1 available"
        );
        // A Kubelet-mode agent is not rolled by the DaemonSet; one that runs the desired version
        // is up to date whatever the rollout.
        let kubelet = agent("0.1.0", NodeMode::Kubelet);
        let c = up_to_date_condition("0.2.0", Some(&kubelet), stall, None, at(0)).expect("new");
        assert_eq!(c.reason, VERSION_SKEW);
        let c = up_to_date_condition("0.1.0", Some(&companion), stall, None, at(0)).expect("new");
        assert_eq!(c.reason, DESIRED_VERSION);
    }
}
