//! The agent's Prometheus metrics, served as text on `/metrics`. Names carry
//! the `nodeconfig_agent_` prefix; counters end in `_total`.

use std::sync::Arc;

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Outcome of a write to the API server.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum WriteResult {
    Success,
    Error,
}

/// Outcome of applying a NodeConfig generation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ApplyResult {
    Applied,
    Rejected,
}

/// Which Lease: the Node's in kube-node-lease or the agent's in nodeconfig-system.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum LeaseKind {
    Node,
    Agent,
}

/// What a TokenReview of the kubelet server said about a bearer token.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TokenReviewResult {
    Authenticated,
    Unauthenticated,
    /// The review could not be made (the API server did not answer).
    Error,
}

/// Why the kubelet server closed a connection before serving it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ShedReason {
    /// Every connection slot was taken by authenticated connections: refused at accept.
    Full,
    /// The oldest connection not yet authenticated, closed to make room for a new one.
    Evicted,
}

/// A kubelet server connection's stage.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ConnectionStage {
    /// In the TLS handshake, or no request of it authenticated yet.
    Unauthenticated,
    Authenticated,
}

/// Why image garbage collection removed an image (the kubelet's `reason` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ImageGcReason {
    /// Unused longer than imageMaximumGCAge.
    Age,
    /// The image filesystem was past imageGCHighThresholdPercent.
    Space,
}

/// Label values in lower case, as Prometheus label values usually are.
macro_rules! label_values {
    ($type:ty { $($variant:ident => $value:literal),+ $(,)? }) => {
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self { $(Self::$variant => $value),+ })
            }
        }
    };
}

label_values!(WriteResult { Success => "success", Error => "error" });
label_values!(ApplyResult { Applied => "applied", Rejected => "rejected" });
label_values!(LeaseKind { Node => "node", Agent => "agent" });
label_values!(TokenReviewResult {
    Authenticated => "authenticated",
    Unauthenticated => "unauthenticated",
    Error => "error",
});
label_values!(ImageGcReason { Age => "age", Space => "space" });
label_values!(ShedReason { Full => "full", Evicted => "evicted" });
label_values!(ConnectionStage {
    Unauthenticated => "unauthenticated",
    Authenticated => "authenticated",
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenReviewLabels {
    pub result: TokenReviewResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: ShedReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: ConnectionStage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageGcLabels {
    pub reason: ImageGcReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: WriteResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub result: ApplyResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    pub lease: LeaseKind,
}

/// An iptables table (`nat`, `filter`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

/// A Service or EndpointSlice the proxy skipped as malformed, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Every metric of the agent. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Server-side applies of the NodeConfig status.
    status_writes: Family<ResultLabels, Counter>,
    /// NodeConfig generations applied or rejected.
    config_applies: Family<ApplyLabels, Counter>,
    /// Failed Lease renewals.
    lease_renew_errors: Family<LeaseLabels, Counter>,
    /// Writes of the Node's status (Kubelet mode).
    node_status_updates: Family<ResultLabels, Counter>,
    /// 1 when the runtime reports RuntimeReady and NetworkReady.
    pub runtime_ready: Gauge,
    /// Pod workers that panicked (each is started again at the next resync).
    pod_worker_panics: Counter,
    /// Images removed by image garbage collection, by reason.
    images_garbage_collected: Family<ImageGcLabels, Counter>,
    /// The service proxy's metrics, named like kube-proxy's.
    pub proxy: ProxyMetrics,
    /// The kubelet server's (:10250) connections and token reviews.
    pub kubelet_server: KubeletServerMetrics,
}

/// The kubelet server's metrics: what its connection limits shed, and the
/// TokenReviews its bearer tokens cost (a cached answer costs none).
#[derive(Clone, Debug)]
pub struct KubeletServerMetrics {
    token_reviews: Family<TokenReviewLabels, Counter>,
    connections_shed: Family<ShedLabels, Counter>,
    connections: Family<StageLabels, Gauge>,
}

impl KubeletServerMetrics {
    fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            token_reviews: Family::default(),
            connections_shed: Family::default(),
            connections: Family::default(),
        };
        registry.register(
            "kubelet_server_token_reviews",
            "TokenReviews sent for bearer tokens of kubelet server requests, by result",
            metrics.token_reviews.clone(),
        );
        registry.register(
            "kubelet_server_connections_shed",
            "Kubelet server connections closed before being served, by reason",
            metrics.connections_shed.clone(),
        );
        registry.register(
            "kubelet_server_connections",
            "Open kubelet server connections (not counting upgraded streams), by stage",
            metrics.connections.clone(),
        );
        metrics
    }

    pub fn token_review(&self, result: TokenReviewResult) {
        self.token_reviews
            .get_or_create(&TokenReviewLabels { result })
            .inc();
    }

    pub fn connection_shed(&self, reason: ShedReason) {
        self.connections_shed
            .get_or_create(&ShedLabels { reason })
            .inc();
    }

    /// Sets the number of open connections at each stage.
    pub fn set_connections(&self, unauthenticated: usize, authenticated: usize) {
        for (stage, n) in [
            (ConnectionStage::Unauthenticated, unauthenticated),
            (ConnectionStage::Authenticated, authenticated),
        ] {
            self.connections
                .get_or_create(&StageLabels { stage })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// kube-proxy's metrics, under the agent's prefix.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// Duration of each sync (planning, checks, restore), as kube-proxy's.
    pub sync_duration: Histogram,
    /// From a change (EndpointSlice trigger time, or when the agent saw it) to its rules in place.
    pub network_programming_duration: Histogram,
    /// Rules of ours per table after the last successful sync.
    pub rules: Family<TableLabels, Gauge>,
    pub restore_failures: Counter,
    /// Unix time of the last successful sync.
    pub last_sync_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Malformed objects skipped, counted once per object and reason.
    pub skipped_objects: Family<SkipLabels, Counter>,
    /// `conntrack -D` runs for stale UDP flows that failed.
    pub conntrack_failures: Counter,
}

impl ProxyMetrics {
    fn new(registry: &mut Registry) -> Self {
        // kube-proxy's buckets: 1ms doubling to ~16s; programming latency up to ~5 min.
        let metrics = Self {
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            network_programming_duration: Histogram::new(
                [0.25, 0.5]
                    .into_iter()
                    .chain((1..=59).map(f64::from))
                    .chain((0..12).map(|i| 60.0 + 5.0 * f64::from(i)))
                    .chain((0..7).map(|i| 120.0 + 30.0 * f64::from(i))),
            ),
            rules: Family::default(),
            restore_failures: Counter::default(),
            last_sync_timestamp: Gauge::default(),
            skipped_objects: Family::default(),
            conntrack_failures: Counter::default(),
        };
        registry.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync_duration.clone(),
        );
        registry.register(
            "network_programming_duration_seconds",
            "In-cluster network programming latency in seconds: from a Service or EndpointSlice change to its rules in place",
            metrics.network_programming_duration.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_total",
            "Number of proxy rules programmed, by table",
            metrics.rules.clone(),
        );
        registry.register(
            "iptables_restore_failures",
            "iptables-restore failures of the service proxy",
            metrics.restore_failures.clone(),
        );
        registry.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time the proxy rules were successfully synced (Unix seconds)",
            metrics.last_sync_timestamp.clone(),
        );
        registry.register(
            "proxy_skipped_objects",
            "Malformed Services and EndpointSlices the proxy skipped, once per object and reason",
            metrics.skipped_objects.clone(),
        );
        registry.register(
            "proxy_conntrack_delete_failures",
            "Failed deletions of stale UDP conntrack entries",
            metrics.conntrack_failures.clone(),
        );
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nodeconfig_agent");
        let status_writes = Family::<ResultLabels, Counter>::default();
        let config_applies = Family::<ApplyLabels, Counter>::default();
        let lease_renew_errors = Family::<LeaseLabels, Counter>::default();
        let node_status_updates = Family::<ResultLabels, Counter>::default();
        let runtime_ready = Gauge::default();
        let pod_worker_panics = Counter::default();
        let images_garbage_collected = Family::<ImageGcLabels, Counter>::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "status_writes",
            "Server-side applies of the NodeConfig status",
            status_writes.clone(),
        );
        registry.register(
            "config_applies",
            "NodeConfig generations applied or rejected",
            config_applies.clone(),
        );
        registry.register(
            "lease_renew_errors",
            "Failed Lease renewals",
            lease_renew_errors.clone(),
        );
        registry.register(
            "node_status_updates",
            "Writes of the Node status (Kubelet mode)",
            node_status_updates.clone(),
        );
        registry.register(
            "runtime_ready",
            "1 when the container runtime is ready (CRI RuntimeReady and NetworkReady)",
            runtime_ready.clone(),
        );
        registry.register(
            "pod_worker_panics",
            "Pod workers that panicked; each is started again at the next resync (Kubelet mode)",
            pod_worker_panics.clone(),
        );
        registry.register(
            "image_garbage_collected",
            "Images removed by image garbage collection, by reason (age or space), as the kubelet's image_garbage_collected_total",
            images_garbage_collected.clone(),
        );
        registry.register("build_info", "The agent's version; always 1", build_info);
        let proxy = ProxyMetrics::new(&mut registry);
        let kubelet_server = KubeletServerMetrics::new(&mut registry);
        Self {
            registry: Arc::new(registry),
            status_writes,
            config_applies,
            lease_renew_errors,
            node_status_updates,
            runtime_ready,
            pod_worker_panics,
            images_garbage_collected,
            proxy,
            kubelet_server,
        }
    }

    pub fn pod_worker_panic(&self) {
        self.pod_worker_panics.inc();
    }

    pub fn image_garbage_collected(&self, reason: ImageGcReason) {
        self.images_garbage_collected
            .get_or_create(&ImageGcLabels { reason })
            .inc();
    }

    pub fn status_write(&self, result: WriteResult) {
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn config_apply(&self, result: ApplyResult) {
        self.config_applies
            .get_or_create(&ApplyLabels { result })
            .inc();
    }

    pub fn lease_renew_error(&self, lease: LeaseKind) {
        self.lease_renew_errors
            .get_or_create(&LeaseLabels { lease })
            .inc();
    }

    pub fn node_status_update(&self, result: WriteResult) {
        self.node_status_updates
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_with_the_agent_prefix() {
        let metrics = Metrics::new();
        metrics.status_write(WriteResult::Success);
        metrics.config_apply(ApplyResult::Rejected);
        metrics.lease_renew_error(LeaseKind::Node);
        metrics.runtime_ready.set(1);
        metrics.proxy.restore_failures.inc();
        metrics.proxy.sync_duration.observe(0.2);
        metrics
            .proxy
            .rules
            .get_or_create(&TableLabels {
                table: "nat".into(),
            })
            .set(12);
        metrics
            .kubelet_server
            .token_review(TokenReviewResult::Unauthenticated);
        metrics.kubelet_server.connection_shed(ShedReason::Evicted);
        metrics.kubelet_server.set_connections(3, 1);
        metrics.image_garbage_collected(ImageGcReason::Space);
        let text = metrics.encode();
        for line in [
            "nodeconfig_agent_kubelet_server_token_reviews_total{result=\"unauthenticated\"} 1",
            "nodeconfig_agent_kubelet_server_connections_shed_total{reason=\"evicted\"} 1",
            "nodeconfig_agent_kubelet_server_connections{stage=\"unauthenticated\"} 3",
            "nodeconfig_agent_status_writes_total{result=\"success\"} 1",
            "nodeconfig_agent_config_applies_total{result=\"rejected\"} 1",
            "nodeconfig_agent_lease_renew_errors_total{lease=\"node\"} 1",
            "nodeconfig_agent_runtime_ready 1",
            "nodeconfig_agent_image_garbage_collected_total{reason=\"space\"} 1",
            "nodeconfig_agent_iptables_restore_failures_total 1",
            "nodeconfig_agent_sync_proxy_rules_duration_seconds_count 1",
            "nodeconfig_agent_sync_proxy_rules_iptables_total{table=\"nat\"} 12",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
