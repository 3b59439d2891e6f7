//! The operator's Prometheus metrics, named `nodeconfig_operator_*`.

use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How one reconcile of a Node ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileResult {
    created,
    updated,
    unchanged,
    deleted,
    ignored,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

/// All metrics; cheap to share behind an `Arc`.
pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    pub leader: Gauge,
    pub leader_transitions: Counter,
    pub nodeconfigs: Gauge,
    pub heartbeats_lost: Counter,
    pub defaults_invalid: Counter,
    pub defaults_valid: Gauge,
    pub agent_rollouts: Counter,
    pub agent_rollout_stalled: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("nodeconfig_operator"),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            nodeconfigs: Gauge::default(),
            heartbeats_lost: Counter::default(),
            defaults_invalid: Counter::default(),
            defaults_valid: Gauge::default(),
            agent_rollouts: Counter::default(),
            agent_rollout_stalled: Gauge::default(),
        };
        let registry = &mut m.registry;
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "reconcile",
            "Reconciles of Nodes by result",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile of a Node",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads, else 0",
            m.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica became the leader",
            m.leader_transitions.clone(),
        );
        registry.register(
            "nodeconfigs",
            "NodeConfigs in the operator's cache",
            m.nodeconfigs.clone(),
        );
        registry.register(
            "heartbeat_lost",
            "Times the operator set Ready=Unknown because an agent's Lease expired",
            m.heartbeats_lost.clone(),
        );
        registry.register(
            "defaults_invalid",
            "Times the defaults ConfigMap was refused (the last good defaults stay in force)",
            m.defaults_invalid.clone(),
        );
        registry.register(
            "agent_rollout_stalled",
            "1 while the node-agent rollout is stopped for want of progress, else 0",
            m.agent_rollout_stalled.clone(),
        );
        registry.register(
            "defaults_valid",
            "1 when the current defaults ConfigMap is valid, else 0",
            m.defaults_valid.clone(),
        );
        registry.register(
            "agent_rollouts",
            "Changes the operator applied to the node-agent DaemonSet",
            m.agent_rollouts.clone(),
        );
        m
    }
}

impl Metrics {
    /// Starts timing a reconcile; the duration is recorded when the timer drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            histogram: &self.reconcile_duration,
            start: Instant::now(),
        }
    }

    pub fn reconciled(&self, result: ReconcileResult) {
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn reconcile_failed(&self, error: &'static str) {
        self.reconciled(ReconcileResult::error);
        self.reconcile_errors
            .get_or_create(&ErrorLabels { error })
            .inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records the time since its creation into the reconcile histogram when dropped.
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let m = Metrics::default();
        m.reconciled(ReconcileResult::created);
        m.reconcile_failed("kube");
        drop(m.reconcile_timer());
        m.leader.set(1);
        let text = m.encode().expect("encodes");
        for line in [
            "nodeconfig_operator_reconcile_total{result=\"created\"} 1",
            "nodeconfig_operator_reconcile_total{result=\"error\"} 1",
            "nodeconfig_operator_reconcile_errors_total{error=\"kube\"} 1",
            "nodeconfig_operator_reconcile_duration_seconds_count 1",
            "nodeconfig_operator_leader 1",
            "nodeconfig_operator_nodeconfigs 0",
            "nodeconfig_operator_defaults_invalid_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
