//! The proxy loop: kube-proxy's job on this node. Watches all Services and
//! EndpointSlices into [`ProxyInputs`] (each object converted as it arrives;
//! only the conversion is kept), takes its
//! settings from the applied NodeConfig's `spec.proxy`, and runs
//! [`Proxier::sync`] on a blocking thread when the [`Scheduler`] says so: a
//! burst of changes within minSyncPeriod is one sync, a partial sync (canary
//! and nat NC-SERVICES checks) every syncPeriod, a full one every hour, a failed one retried full
//! after a backoff. After each sync it deletes stale UDP conntrack entries,
//! updates the metrics, and publishes a [`ProxyReport`] for the status writer.
//!
//! - **Before the first NodeConfig** the loop waits: it programs nothing until
//!   it knows whether the proxy is enabled and with which clusterCIDR, rather
//!   than write rules with defaults that the NodeConfig may then take back.
//! - **Before both watches have listed** it waits too: a sync with half the
//!   objects would delete the other half's rules (after an agent restart).
//! - **Rules live in the agent's network namespace** (the agent runs inside
//!   its node's), through the host's `iptables-restore`.
//! - **Malformed objects** are warned about once per object and reason, and
//!   counted once; a fixed and broken-again object warns again.
//! - **Its own Node** is watched for its `topology.kubernetes.io/zone` label
//!   (zone hints); a new zone replans every service port.
//! - **Health check node ports** of `externalTrafficPolicy: Local` load
//!   balancers are served after each successful sync ([`HealthServers`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use nodeconfig_crds::ProxySpec;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::locked::Locked;
use crate::proxy::conntrack::stale_flows;
use crate::proxy::health_server::HealthServers;
use crate::proxy::inputs::Kind;
use crate::proxy::service_health::health_checks;
use crate::proxy::{
    Conntrack, FullSyncReason, IptablesCommand, NodeInfo, Proxier, ProxyConfig, ProxyError,
    ProxyInputs, Scheduler, Skip, SyncReport, Table, UdpServices,
};
use crate::reports::{ConfigReport, ProxyReport, ProxyState};
use crate::serve::health::{Health, LoopHeartbeat};
use crate::serve::metrics::{Metrics, SkipLabels, TableLabels};

/// Set by the EndpointSlice controller: when the change that led to this
/// version of the slice happened (the start of network programming latency).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Name of the proxy's deadline in [`Health`].
const HEALTH_NAME: &str = "proxy";
/// The loop wakes at least this often to beat its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// The Node label whose value zone hints name.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Changes seen by the watches and not yet handed to a sync.
#[derive(Default)]
struct Changes {
    pending: Mutex<PendingChanges>,
    notify: Notify,
}

#[derive(Default)]
struct PendingChanges {
    /// When the first unhanded change was seen.
    seen: Option<Instant>,
    /// When each change happened (trigger time, or when seen), for network programming latency.
    triggers: Vec<SystemTime>,
}

impl Changes {
    fn record(&self, trigger: Option<SystemTime>) {
        let mut pending = self.pending.locked();
        pending.seen.get_or_insert_with(Instant::now);
        pending.triggers.extend(trigger);
        drop(pending);
        self.notify.notify_one();
    }

    fn take(&self) -> PendingChanges {
        std::mem::take(&mut *self.pending.locked())
    }
}

/// The proxy loop's inputs and outputs.
pub struct ProxyLoop {
    pub client: Client,
    pub node_name: String,
    /// The node's InternalIP (IPv4 only: the proxy programs the IPv4 table).
    pub node_ip: Option<IpAddr>,
    pub config: watch::Receiver<ConfigReport>,
    pub report: watch::Sender<ProxyReport>,
    pub metrics: Metrics,
    pub health: Health,
    pub heartbeat: LoopHeartbeat,
}

/// The loop's state between syncs.
struct Running {
    proxier: Option<Proxier<IptablesCommand>>,
    node: NodeInfo,
    spec: Option<ProxySpec>,
    cfg: ProxyConfig,
    /// Why the NodeConfig's spec.proxy was refused, while it is.
    invalid: Option<String>,
    sched: Scheduler,
    /// UDP service ports as the last successful sync left them; `None` when unknown.
    udp: Option<UdpServices>,
    /// Malformed skips already warned about.
    warned: BTreeSet<String>,
    /// Triggers of the changes the next sync covers.
    triggers: Vec<SystemTime>,
    failed_syncs: u64,
    health_checks: HealthServers,
}

impl ProxyLoop {
    pub async fn run(self, cancel: CancellationToken) {
        let changes = Arc::new(Changes::default());
        let inputs = Arc::new(Mutex::new(ProxyInputs::default()));
        let _drivers = (
            watch_all::<Service>(
                Api::all(self.client.clone()),
                Watched {
                    kind: Kind::Service,
                    apply: ProxyInputs::apply_service,
                    delete: ProxyInputs::delete_service,
                },
                inputs.clone(),
                changes.clone(),
                cancel.clone(),
            ),
            watch_all::<EndpointSlice>(
                Api::all(self.client.clone()),
                Watched {
                    kind: Kind::EndpointSlice,
                    apply: ProxyInputs::apply_slice,
                    delete: ProxyInputs::delete_slice,
                },
                inputs.clone(),
                changes.clone(),
                cancel.clone(),
            ),
        );

        let (zone_tx, mut zone) = watch::channel(None);
        let _zone_watch = watch_zone(
            Api::all(self.client.clone()),
            self.node_name.clone(),
            zone_tx,
            cancel.clone(),
        );

        let mut zone_open = true;
        let mut config = self.config.clone();
        let mut tick = tokio::time::interval(HEARTBEAT);
        // The first settings.
        let spec = loop {
            if let Some(applied) = config.borrow_and_update().applied.as_ref() {
                break applied.proxy.clone();
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.heartbeat.beat(),
                r = config.changed() => if r.is_err() { return },
            }
        };
        let mut running = Running {
            proxier: Some(Proxier::new(IptablesCommand::new())),
            node: NodeInfo {
                name: self.node_name.clone(),
                ips: match self.node_ip {
                    Some(IpAddr::V4(ip)) => vec![ip],
                    _ => Vec::<Ipv4Addr>::new(),
                },
                zone: None,
            },
            spec: None,
            cfg: ProxyConfig::default(),
            invalid: None,
            sched: Scheduler::new(Duration::from_secs(1), Duration::from_secs(30)),
            udp: None,
            warned: BTreeSet::new(),
            triggers: Vec::new(),
            failed_syncs: 0,
            health_checks: HealthServers::new(self.health.clone(), HEALTH_NAME),
        };
        self.apply_settings(&mut running, spec);
        self.publish(|r| {
            if r.state == ProxyState::WaitingForConfig {
                r.state = ProxyState::Starting;
            }
        });
        tracing::info!(node = ?running.node, "service proxy waiting for the first list of Services and EndpointSlices");
        // Each completed list records a change, which wakes this.
        while !inputs.locked().listed() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.heartbeat.beat(),
                _ = changes.notify.notified() => {}
            }
        }
        // What the lists brought is in the first sync.
        changes.take();
        let service_ports = inputs.locked().model().services.len();
        tracing::info!(service_ports, "service proxy starting");

        loop {
            self.heartbeat.beat();
            let now = Instant::now();
            // Unconditionally: `changed()` below marks the new value seen.
            let spec = config
                .borrow_and_update()
                .applied
                .as_ref()
                .map(|a| a.proxy.clone());
            if let Some(spec) = spec {
                self.apply_settings(&mut running, spec);
            }
            let node_zone = zone.borrow_and_update().clone();
            if running.node.zone != node_zone {
                tracing::info!(zone = ?node_zone, "the node's zone changed; every service port is planned again");
                running.node.zone = node_zone;
                running.sched.changed(now);
            }
            let pending = changes.take();
            if let Some(seen) = pending.seen {
                running.sched.changed(seen);
            }
            running.triggers.extend(pending.triggers);
            self.set_deadline(&running);

            let due = running.sched.next(now);
            if due.at <= now {
                self.sync(&mut running, &inputs, due.full).await;
                self.set_deadline(&running);
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(due.at.into()) => {}
                _ = changes.notify.notified() => {}
                _ = tick.tick() => {}
                r = config.changed() => if r.is_err() { return },
                // The zone watch ends only with the loop; a closed channel is not a change.
                r = zone.changed(), if zone_open => zone_open = r.is_ok(),
            }
        }
    }

    /// Takes new proxy settings; a change of them is a change to sync.
    fn apply_settings(&self, running: &mut Running, spec: ProxySpec) {
        if running.spec.as_ref() == Some(&spec) {
            return;
        }
        match ProxyConfig::from_spec(&spec) {
            Ok(cfg) => {
                tracing::info!(?cfg, "service proxy settings");
                running
                    .sched
                    .set_periods(cfg.min_sync_period, cfg.sync_period);
                running.cfg = cfg;
                running.invalid = None;
                running.sched.changed(Instant::now());
                // Before the first sync Ready waits for the proxy when it is
                // enabled; afterwards the sync that applies a change publishes it.
                let enabled = running.cfg.enabled;
                self.publish(|r| {
                    if matches!(r.state, ProxyState::WaitingForConfig | ProxyState::Starting) {
                        r.enabled = enabled;
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "spec.proxy cannot be used; the service proxy keeps its settings");
                let message = format!("{err}; the proxy keeps the settings it had");
                running.invalid = Some(message.clone());
                self.publish(|r| r.state = ProxyState::InvalidConfig { message });
            }
        }
        running.spec = Some(spec);
    }

    /// `/healthz` fails when a queued change waits longer than 2 × syncPeriod.
    fn set_deadline(&self, running: &Running) {
        let limit = 2 * running.sched.sync_period();
        self.health
            .set_deadline(HEALTH_NAME, running.sched.queued_since().map(|t| t + limit));
    }

    async fn sync(&self, running: &mut Running, inputs: &Arc<Mutex<ProxyInputs>>, full: bool) {
        let started = Instant::now();
        running.sched.started(started);
        let triggers = std::mem::take(&mut running.triggers);
        let mut proxier = running
            .proxier
            .take()
            .unwrap_or_else(|| Proxier::new(IptablesCommand::new()));
        let shared = inputs.clone();
        let (node, cfg, old_udp) = (
            running.node.clone(),
            running.cfg.clone(),
            running.udp.clone(),
        );
        let joined = tokio::task::spawn_blocking(move || {
            // The watches wait only while the changes are planned, not during the restore.
            let planned = proxier.plan(&mut shared.locked(), &node, &cfg, full);
            let result = proxier.apply(planned);
            let conntrack = match (&result, old_udp) {
                (Ok(report), Some(old)) if cfg.enabled => delete_stale_flows(&old, &report.udp),
                _ => 0,
            };
            let rules = proxier
                .applied()
                .map(|set| Table::ALL.map(|t| (t, set.table(t).rule_count())));
            (proxier, result, conntrack, rules)
        })
        .await;
        let finished = Instant::now();
        let (result, rules_by_table) = match joined {
            Ok((proxier, result, conntrack_failures, rules)) => {
                running.proxier = Some(proxier);
                self.metrics
                    .proxy
                    .conntrack_failures
                    .inc_by(conntrack_failures);
                let result =
                    result.map_err(|e| (matches!(e, ProxyError::Restore { .. }), e.to_string()));
                (result, rules)
            }
            Err(err) => (Err((false, format!("the sync task failed: {err}"))), None),
        };
        match result {
            Ok(report) => {
                let was_full = report.full_reason.is_some();
                running.sched.finished(started, finished, was_full, true);
                self.observe_success(&report, rules_by_table, &triggers);
                self.warn_skips(running, &report.skipped);
                running.udp = running.cfg.enabled.then(|| report.udp.clone());
                let state = match (&running.invalid, running.cfg.enabled) {
                    (Some(message), _) => ProxyState::InvalidConfig {
                        message: message.clone(),
                    },
                    (None, true) => ProxyState::Synced,
                    (None, false) => ProxyState::Disabled,
                };
                self.serve_health_checks(running, inputs).await;
                let enabled = running.cfg.enabled;
                let (services, endpoints, rules) = if running.cfg.enabled {
                    (report.service_ports, report.endpoints, report.rules)
                } else {
                    (0, 0, 0)
                };
                self.publish(|r| {
                    r.state = state;
                    r.enabled = enabled;
                    r.service_ports = services;
                    r.endpoints = endpoints;
                    r.rules = rules;
                    r.last_sync = Some(Time(Timestamp::now()));
                    r.last_sync_duration = Some(report.duration);
                });
            }
            Err((restore_failed, message)) => {
                running.sched.finished(started, finished, full, false);
                running.failed_syncs += 1;
                if restore_failed {
                    self.metrics.proxy.restore_failures.inc();
                }
                // Not applied yet: they count for the sync that succeeds.
                running.triggers.extend(triggers);
                tracing::warn!(error = %message, retry_in = ?running.sched.next(finished).at.saturating_duration_since(finished), "syncing the service proxy rules failed; the previous rules stay in place");
                let failed_syncs = running.failed_syncs;
                self.publish(|r| {
                    r.state = ProxyState::Failed { message };
                    r.failed_syncs = failed_syncs;
                });
            }
        }
    }

    /// Opens, updates and closes the health check node ports after a successful sync.
    async fn serve_health_checks(&self, running: &mut Running, inputs: &Arc<Mutex<ProxyInputs>>) {
        let checks = if running.cfg.enabled {
            health_checks(inputs.locked().model(), &running.node.name)
        } else {
            Default::default()
        };
        // As kube-proxy: every address, or the node's addresses within nodePortAddresses.
        let addresses: Vec<IpAddr> = if running.cfg.node_port_addresses.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            running
                .node
                .ips
                .iter()
                .filter(|ip| {
                    running
                        .cfg
                        .node_port_addresses
                        .iter()
                        .any(|n| n.contains(*ip))
                })
                .map(|ip| IpAddr::V4(*ip))
                .collect()
        };
        running.health_checks.sync(checks, &addresses).await;
    }

    fn observe_success(
        &self,
        report: &SyncReport,
        rules_by_table: Option<[(Table, usize); 2]>,
        triggers: &[SystemTime],
    ) {
        let m = &self.metrics.proxy;
        m.sync_duration.observe(report.duration.as_secs_f64());
        for (table, count) in rules_by_table.unwrap_or([(Table::Nat, 0), (Table::Filter, 0)]) {
            m.rules
                .get_or_create(&TableLabels {
                    table: table.name().to_string(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let now = SystemTime::now();
        if let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) {
            m.last_sync_timestamp.set(since_epoch.as_secs_f64());
        }
        let disabled = report.full_reason == Some(FullSyncReason::Disabled);
        for trigger in triggers.iter().filter(|_| !disabled) {
            if let Ok(latency) = now.duration_since(*trigger) {
                m.network_programming_duration
                    .observe(latency.as_secs_f64());
            }
        }
        let written = report.restore_bytes > 0;
        if report.full_reason.is_some() || written {
            tracing::info!(
                full_reason = ?report.full_reason,
                service_ports = report.service_ports,
                endpoints = report.endpoints,
                rules = report.rules,
                chains_written = report.chains_written,
                chains_deleted = report.chains_deleted,
                ports_planned = report.ports_planned,
                plan_duration = ?report.plan_duration,
                restore_bytes = report.restore_bytes,
                duration = ?report.duration,
                "service proxy rules synced"
            );
        } else {
            tracing::debug!(duration = ?report.duration, "service proxy rules unchanged");
        }
    }

    /// Warns once per malformed object and reason (until it is fixed), and counts it.
    fn warn_skips(&self, running: &mut Running, skipped: &[Skip]) {
        let (fresh, warned) = first_seen_skips(&running.warned, skipped);
        for skip in fresh {
            tracing::warn!(object = %skip.object, kind = skip.kind.as_str(), reason = %skip.reason, "skipping malformed object; the other objects still sync");
            self.metrics
                .proxy
                .skipped_objects
                .get_or_create(&SkipLabels {
                    kind: skip.kind.as_str().to_string(),
                    reason: skip.reason.metric_label().to_string(),
                })
                .inc();
        }
        running.warned = warned;
    }

    fn publish(&self, change: impl FnOnce(&mut ProxyReport)) {
        self.report.send_if_modified(|report| {
            let before = report.clone();
            change(report);
            *report != before
        });
    }
}

/// The malformed skips of this sync not warned about before, and the set to
/// remember: this sync's malformed skips (a fixed object leaves it, so it warns
/// again if it breaks again).
fn first_seen_skips<'a>(
    warned: &BTreeSet<String>,
    skipped: &'a [Skip],
) -> (Vec<&'a Skip>, BTreeSet<String>) {
    let mut fresh = Vec::new();
    let mut now = BTreeSet::new();
    for skip in skipped.iter().filter(|s| s.reason.is_malformed()) {
        let key = skip.to_string();
        if !warned.contains(&key) && !now.contains(&key) {
            fresh.push(skip);
        }
        now.insert(key);
    }
    (fresh, now)
}

/// Runs the conntrack deletions a sync calls for; returns how many failed.
fn delete_stale_flows(old: &UdpServices, new: &UdpServices) -> u64 {
    let conntrack = Conntrack::default();
    let mut failures = 0;
    for deletion in stale_flows(old, new) {
        match conntrack.delete(&deletion) {
            Ok(n) => {
                tracing::debug!(
                    ?deletion,
                    deleted = n,
                    "stale UDP conntrack entries deleted"
                )
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(?deletion, error = %err, "deleting stale UDP conntrack entries failed");
            }
        }
    }
    failures
}

/// A task that watches this node's Node and sends its zone label; the handle
/// stops the task when dropped. (kube-proxy watches its Node the same way.)
fn watch_zone(
    api: Api<Node>,
    node: String,
    zone: watch::Sender<Option<String>>,
    cancel: CancellationToken,
) -> DropGuard {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let stream = watcher(api, config).default_backoff().applied_objects();
    DropGuard(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Err(err)) => {
                    if !failing {
                        tracing::warn!(%node, error = %err, "watching the node's zone failed; retrying with backoff");
                    }
                    failing = true;
                }
                Some(Ok(obj)) => {
                    failing = false;
                    let label = obj.labels().get(ZONE_LABEL).cloned();
                    zone.send_if_modified(|z| {
                        let changed = *z != label;
                        *z = label;
                        changed
                    });
                }
            }
        }
    }))
}

/// How a watched kind enters the [`ProxyInputs`].
struct Watched<K> {
    kind: Kind,
    apply: fn(&mut ProxyInputs, &K),
    delete: fn(&mut ProxyInputs, &K),
}

/// A task that watches every `K` in the cluster into `inputs` and records
/// each change; the handle stops the task when dropped.
fn watch_all<K>(
    api: Api<K>,
    watched: Watched<K>,
    inputs: Arc<Mutex<ProxyInputs>>,
    changes: Arc<Changes>,
    cancel: CancellationToken,
) -> DropGuard
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    DropGuard(tokio::spawn(drive(
        stream, watched, inputs, changes, cancel,
    )))
}

/// Aborts a watch task when the loop goes.
struct DropGuard(tokio::task::JoinHandle<()>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn drive<K, S>(
    stream: S,
    watched: Watched<K>,
    inputs: Arc<Mutex<ProxyInputs>>,
    changes: Arc<Changes>,
    cancel: CancellationToken,
) where
    K: Resource<DynamicType = ()> + ResourceExt,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let kind = K::kind(&());
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Err(err)) => {
                // A refused watch (RBAC) names the verb and resource in the error.
                if !failing {
                    tracing::warn!(%kind, error = %err, "watching failed; retrying with backoff");
                } else {
                    tracing::debug!(%kind, error = %err, "watching still fails");
                }
                failing = true;
            }
            Some(Ok(event)) => {
                if failing {
                    tracing::info!(%kind, "watching works again");
                    failing = false;
                }
                let trigger = match &event {
                    watcher::Event::Apply(obj) => Some(Some(trigger_time(obj))),
                    watcher::Event::Delete(_) => Some(Some(SystemTime::now())),
                    // A relist may bring anything: sync once it is complete.
                    watcher::Event::InitDone => Some(None),
                    watcher::Event::Init | watcher::Event::InitApply(_) => None,
                };
                {
                    let mut inputs = inputs.locked();
                    match &event {
                        watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                            (watched.apply)(&mut inputs, obj)
                        }
                        watcher::Event::Delete(obj) => (watched.delete)(&mut inputs, obj),
                        watcher::Event::Init => inputs.relist_started(watched.kind),
                        watcher::Event::InitDone => inputs.relist_done(watched.kind),
                    }
                }
                if let Some(trigger) = trigger {
                    changes.record(trigger);
                }
            }
        }
    }
}

/// When the change behind this version of an object happened: the
/// EndpointSlice controller's trigger time when set, else now (when the agent saw it).
fn trigger_time<K: ResourceExt>(obj: &K) -> SystemTime {
    obj.annotations()
        .get(TRIGGER_TIME_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(SystemTime::from)
        .unwrap_or_else(SystemTime::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::ObjectKind;
    use crate::proxy::SkipReason;

    fn skip(object: &str, reason: SkipReason) -> Skip {
        Skip {
            kind: ObjectKind::Service,
            object: object.into(),
            reason,
        }
    }

    #[test]
    fn a_malformed_object_is_warned_about_once_until_fixed() {
        let bad = skip("ns/a", SkipReason::BadClusterIp("10.0.0.300".into()));
        let headless = skip("ns/h", SkipReason::Headless);
        let other = skip(
            "ns/a",
            SkipReason::BadPort {
                port: "http".into(),
                value: 0,
            },
        );
        let both = [bad.clone(), headless];
        let (fresh, warned) = first_seen_skips(&BTreeSet::new(), &both);
        assert_eq!(fresh, vec![&bad], "by-design skips are not warned about");
        let (fresh, warned) = first_seen_skips(&warned, &both);
        assert!(fresh.is_empty(), "the next sync stays quiet");
        let (_, warned) = first_seen_skips(&warned, &[]);
        let only_bad = [bad.clone()];
        let (fresh, warned) = first_seen_skips(&warned, &only_bad);
        assert_eq!(fresh, vec![&bad], "fixed, then broken again: warned again");
        let two_reasons = [bad.clone(), other.clone()];
        let (fresh, _) = first_seen_skips(&warned, &two_reasons);
        assert_eq!(
            fresh,
            vec![&other],
            "a new reason for the same object warns"
        );
    }

    #[test]
    fn the_trigger_time_annotation_starts_the_latency() {
        let mut slice = EndpointSlice::default();
        slice.annotations_mut().insert(
            TRIGGER_TIME_ANNOTATION.into(),
            "2026-01-02T03:04:05Z".into(),
        );
        let t = trigger_time(&slice);
        let want: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(t, SystemTime::from(want));
        let seen = trigger_time(&EndpointSlice::default());
        assert!(SystemTime::now().duration_since(seen).unwrap() < Duration::from_secs(5));
    }
}
