//! Heartbeat Leases, renewed every [`RENEW_INTERVAL`] as the kubelet renews
//! its node Lease (`pkg/kubelet/nodelease`): GET once, then UPDATE the cached
//! object with a new renewTime; create it when missing; re-read on conflict.
//!
//! Two Leases use this: the Node's in `kube-node-lease` (Kubelet mode, owned by
//! the Node so it goes with it; the node lifecycle controller reads it) and the
//! agent's `node-agent-<node>` in `nodeconfig-system` (the operator reads it).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::serve::health::LoopHeartbeat;
use crate::serve::metrics::{LeaseKind, Metrics};
use crate::FIELD_MANAGER;

/// leaseDurationSeconds of both Leases: the kubelet's default (40s).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// A quarter of the duration, as the kubelet renews.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// First wait before retrying a failed renewal; doubles up to [`RENEW_INTERVAL`].
const RETRY_MIN: Duration = Duration::from_millis(500);

/// Namespace of the agents' Leases.
pub const AGENT_LEASE_NAMESPACE: &str = "nodeconfig-system";
/// Namespace of the node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Name of the agent's Lease for `node`.
pub fn agent_lease_name(node: &str) -> String {
    format!("node-agent-{node}")
}

/// Which Lease and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTarget {
    pub namespace: String,
    pub name: String,
    pub holder: String,
    pub kind: LeaseKind,
}

/// The Lease to write: `existing` (or a new one) held by the target's holder,
/// renewed at `now`, owned by `owner` when given.
pub fn renewed(
    existing: Option<Lease>,
    target: &LeaseTarget,
    owner: Option<&OwnerReference>,
    now: &MicroTime,
) -> Lease {
    let mut lease = existing.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(target.holder.as_str()) {
        if spec.holder_identity.is_some() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(target.holder.clone());
        spec.acquire_time = Some(now.clone());
    }
    spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
    spec.renew_time = Some(now.clone());
    if let Some(owner) = owner {
        let owners = lease.metadata.owner_references.get_or_insert_with(Vec::new);
        if !owners.iter().any(|o| o.uid == owner.uid) {
            owners.push(owner.clone());
        }
    }
    lease
}

/// Renews one Lease until cancelled. With `owner`, renews only while it holds
/// an owner (the node Lease waits for the Node, and stops outside Kubelet mode).
pub struct LeaseRenewer {
    pub api: Api<Lease>,
    pub target: LeaseTarget,
    pub owner: Option<watch::Receiver<Option<OwnerReference>>>,
    pub metrics: Metrics,
    pub heartbeat: LoopHeartbeat,
}

impl LeaseRenewer {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut cached: Option<Lease> = None;
        let mut wait = Duration::ZERO;
        let mut retry = RETRY_MIN;
        let mut last_error: Option<String> = None;
        loop {
            let owner_changed = async {
                match self.owner.as_mut() {
                    Some(owner) => owner.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                alive = owner_changed => if !alive { return },
            }
            self.heartbeat.beat();
            wait = RENEW_INTERVAL;
            let owner = match &self.owner {
                Some(owner) => match owner.borrow().clone() {
                    Some(o) => Some(o),
                    None => continue,
                },
                None => None,
            };
            match self.renew(cached.take(), owner.as_ref()).await {
                Ok(lease) => {
                    if last_error.take().is_some() {
                        tracing::info!(lease = %self.target.name, namespace = %self.target.namespace, "Lease renewed again");
                    }
                    cached = Some(lease);
                    retry = RETRY_MIN;
                }
                Err(err) => {
                    self.metrics.lease_renew_error(self.target.kind);
                    // Warn once per kind of failure; a refusal that lasts (RBAC, NodeRestriction) is counted, not repeated.
                    let message = err.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(lease = %self.target.name, namespace = %self.target.namespace, error = %message, "renewing the Lease failed; retrying");
                    } else {
                        tracing::debug!(lease = %self.target.name, error = %message, "renewing the Lease failed again");
                    }
                    last_error = Some(message);
                    wait = retry;
                    retry = (retry * 2).min(RENEW_INTERVAL);
                }
            }
        }
    }

    async fn renew(
        &self,
        cached: Option<Lease>,
        owner: Option<&OwnerReference>,
    ) -> Result<Lease, kube::Error> {
        let existing = match cached {
            Some(lease) => Some(lease),
            None => self.api.get_opt(&self.target.name).await?,
        };
        let now = MicroTime(Timestamp::now());
        let lease = renewed(existing, &self.target, owner, &now);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        if lease.metadata.resource_version.is_some() {
            self.api.replace(&self.target.name, &params, &lease).await
        } else {
            self.api.create(&params, &lease).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(secs).expect("timestamp"))
    }

    fn target() -> LeaseTarget {
        LeaseTarget {
            namespace: NODE_LEASE_NAMESPACE.into(),
            name: "nc-node-1".into(),
            holder: "nc-node-1".into(),
            kind: LeaseKind::Node,
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "nc-node-1".into(),
            uid: "uid-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_lease_is_held_renewed_and_owned() {
        let lease = renewed(None, &target(), Some(&owner()), &at(10));
        let spec = lease.spec.as_ref().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("nc-node-1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(at(10)));
        assert_eq!(spec.acquire_time, Some(at(10)));
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(
            lease.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn renewal_moves_renew_time_only() {
        let first = renewed(None, &target(), Some(&owner()), &at(10));
        let second = renewed(Some(first), &target(), Some(&owner()), &at(20));
        let spec = second.spec.as_ref().expect("spec");
        assert_eq!(spec.renew_time, Some(at(20)));
        assert_eq!(spec.acquire_time, Some(at(10)));
        assert_eq!(spec.lease_transitions, None);
        assert_eq!(
            second.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn taking_over_from_another_holder_counts_a_transition() {
        let mut other = target();
        other.holder = "someone-else".into();
        let theirs = renewed(None, &other, None, &at(1));
        let ours = renewed(Some(theirs), &target(), None, &at(5));
        let spec = ours.spec.as_ref().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("nc-node-1"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time, Some(at(5)));
    }

    #[test]
    fn agent_lease_is_named_after_the_node() {
        assert_eq!(agent_lease_name("nc-node-2"), "node-agent-nc-node-2");
    }
}
