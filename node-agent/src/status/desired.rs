//! The NodeConfig status the agent reports, computed from what its loops
//! publish: a pure function of the reports, the status as last seen and the
//! clock, so the rules (what makes Ready, what is Degraded) are tested on plain
//! data. The status writer ([`crate::status::run`]) applies its result.
//!
//! - `ConfigApplied`: True `Applied` when the NodeConfig's generation runs;
//!   True `Paused` while spec.paused keeps the last applied generation running
//!   (status.observedGeneration stays at that generation; the condition's own
//!   observedGeneration says which generation waits). Paused is True because
//!   what runs is what was applied: pausing a node must not make it un-Ready.
//!   Unknown `Paused` when the agent restarted under a pause that hides which
//!   spec was applied before. False with the reason of the refusal otherwise.
//! - `RuntimeReady`: CRI answers and reports RuntimeReady and NetworkReady.
//! - `ProxyReady`: True `Synced` after a successful sync of the service rules;
//!   False `SyncFailed` (the previous rules stay), `Disabled` (spec.proxy.enabled
//!   is false: no rules of ours), `InvalidConfig`; Unknown `NotConfigured` before
//!   the first NodeConfig and `Syncing` until the first sync ends.
//! - `Ready`: ConfigApplied and RuntimeReady are both True, and ProxyReady too
//!   when the proxy is enabled.
//! - `proxy` block: what the last successful sync programmed. Written on change
//!   of the service ports, endpoints or rules; `lastSyncTime`,
//!   `lastSyncDurationSeconds` and `failedSyncs` change with every sync, so on
//!   their own they are rewritten at most every [`PROXY_STATUS_REFRESH`] (a
//!   status write per syncPeriod per node is the etcd load DESIGN.md warns of).
//!   A failing sync still shows at once: ProxyReady turns False.
//! - `Degraded`: the agent works, but not wholly as asked: a refused generation
//!   while an older one runs, or Node settings the API server refused.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use nodeconfig_crds::conditions::{set_condition, types, ConditionStatus, NewCondition};
use nodeconfig_crds::{AgentStatus, NodeConfigStatus, NodeMode, PodsStatus, ProxyStatus};

use crate::reports::{
    ConfigReport, ConfigState, NodeReport, PodsReport, PressureReport, ProxyReport, ProxyState,
    RuntimeHealth, RuntimeReport,
};

/// The condition types this agent writes; other types in status are left alone.
pub const OWN_CONDITIONS: [&str; 5] = [
    types::READY,
    types::CONFIG_APPLIED,
    types::RUNTIME_READY,
    types::PROXY_READY,
    types::DEGRADED,
];

/// The longest a changed `proxy.lastSyncTime` (or sync duration, or failed
/// syncs count) waits for a status write when nothing else in the block changed.
pub const PROXY_STATUS_REFRESH: Duration = Duration::from_secs(300);

/// What the status is computed from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInputs<'a> {
    pub config: &'a ConfigReport,
    pub runtime: &'a RuntimeReport,
    pub node: &'a NodeReport,
    pub proxy: &'a ProxyReport,
    /// The pod loop's counts; `None` when the agent runs no pods (Companion mode).
    pub pods: Option<&'a PodsReport>,
    /// The eviction loop's pressure; `None` in Companion mode.
    pub pressure: Option<&'a PressureReport>,
    /// spec.mode as observed: the mode shown until the agent runs with an applied one.
    pub spec_mode: NodeMode,
}

struct Verdict {
    status: ConditionStatus,
    reason: &'static str,
    message: String,
}

/// The status the agent wants, keeping the `lastTransitionTime` of every
/// condition of `current` whose status does not change.
pub fn desired_status(
    inputs: StatusInputs<'_>,
    current: &NodeConfigStatus,
    now: Time,
) -> NodeConfigStatus {
    let generation = inputs.config.state.generation();
    let config = config_applied(inputs.config);
    let runtime = runtime_ready(inputs.runtime);
    let proxy = proxy_ready(inputs.proxy);
    let ready = ready(&config, &runtime, inputs.proxy.enabled.then_some(&proxy));
    let degraded = degraded(inputs.config, inputs.node);
    let pods = inputs.pods.map(pods_ready);
    let pressure = inputs.pressure.filter(|p| p.measured).map(pressure);
    let conditions = [
        (types::READY, Some(ready)),
        (types::CONFIG_APPLIED, Some(config)),
        (types::RUNTIME_READY, Some(runtime)),
        (types::PODS_READY, pods),
        (types::PROXY_READY, Some(proxy)),
        (types::DEGRADED, Some(degraded)),
        (types::PRESSURE, pressure),
    ]
    .into_iter()
    .filter_map(|(type_, verdict)| verdict.map(|v| (type_, v)))
    .filter_map(|(type_, verdict)| {
        let mut one: Vec<Condition> = current
            .conditions
            .iter()
            .filter(|c| c.type_ == type_)
            .take(1)
            .cloned()
            .collect();
        let new = NewCondition {
            type_,
            status: verdict.status,
            reason: verdict.reason,
            message: verdict.message,
            observed_generation: generation,
        };
        set_condition(&mut one, new, now.clone());
        one.pop()
    })
    .collect();
    NodeConfigStatus {
        observed_generation: inputs.config.applied.as_ref().map(|a| a.generation),
        conditions,
        agent: Some(AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: inputs.config.mode.unwrap_or(inputs.spec_mode),
        }),
        runtime: inputs.runtime.status(),
        pods: inputs.pods.filter(|p| p.synced).map(pods_status),
        proxy: proxy_status(inputs.proxy),
    }
}

/// Pressure: the Node's pressure conditions in one, the thresholds crossed
/// in the message (their levels, not what is left, so a node under pressure
/// is not written every pass).
fn pressure(report: &PressureReport) -> Verdict {
    let on = report.conditions();
    match on.first() {
        None => Verdict {
            status: ConditionStatus::False,
            reason: "NoPressure",
            message: "no eviction threshold is crossed".into(),
        },
        Some(first) => Verdict {
            status: ConditionStatus::True,
            reason: first,
            message: if report.crossed.is_empty() {
                format!(
                    "{} (within evictionPressureTransitionPeriod of the last crossing)",
                    on.join(", ")
                )
            } else {
                format!("{}: {}", on.join(", "), report.crossed)
            },
        },
    }
}

/// The `pods` block: what `kubectl get pods --field-selector spec.nodeName=` shows, counted.
fn pods_status(pods: &PodsReport) -> PodsStatus {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    PodsStatus {
        summary: format!("{}/{}", pods.running, pods.desired),
        desired: count(pods.desired),
        running: count(pods.running),
        pending: count(pods.pending),
        failed: count(pods.failed),
        restarts: count(pods.restarts),
    }
}

/// PodsReady: every pod bound to the node that is not finished runs and is
/// Ready. Not part of Ready: a rollout or a crashing workload does not make
/// the node itself unready.
fn pods_ready(pods: &PodsReport) -> Verdict {
    if !pods.synced {
        return Verdict {
            status: ConditionStatus::Unknown,
            reason: "Starting",
            message: "the pods bound to the node have not been listed yet".into(),
        };
    }
    let not_ready = pods.desired - pods.ready.min(pods.desired);
    if not_ready == 0 {
        Verdict {
            status: ConditionStatus::True,
            reason: "AllPodsReady",
            message: format!("{} of {} pods running and ready", pods.ready, pods.desired),
        }
    } else {
        Verdict {
            status: ConditionStatus::False,
            reason: "PodsNotReady",
            message: format!(
                "{not_ready} of {} pods not ready ({} pending, {} running)",
                pods.desired, pods.pending, pods.running
            ),
        }
    }
}

/// The `proxy` block, once a sync has run.
fn proxy_status(proxy: &ProxyReport) -> Option<ProxyStatus> {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    match proxy.state {
        ProxyState::WaitingForConfig | ProxyState::Starting => None,
        ProxyState::Synced
        | ProxyState::Disabled
        | ProxyState::Failed { .. }
        | ProxyState::InvalidConfig { .. } => Some(ProxyStatus {
            services: count(proxy.service_ports),
            endpoints: count(proxy.endpoints),
            rules: count(proxy.rules),
            last_sync_time: proxy.last_sync.clone(),
            last_sync_duration_seconds: proxy
                .last_sync_duration
                // Milliseconds are enough, and keep the number short.
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
            failed_syncs: i64::try_from(proxy.failed_syncs).unwrap_or(i64::MAX),
        }),
    }
}

/// Whether the loops' first reports are in, so that what is written does not
/// flap at start-up: the NodeConfig was listed (and its generation decided,
/// which may switch the CRI endpoint), and the runtime was asked at the
/// endpoint in force.
pub fn inputs_settled(config: &ConfigReport, runtime: &RuntimeReport) -> bool {
    let endpoint_in_force = config
        .applied
        .as_ref()
        .map_or(runtime.endpoint.as_str(), |a| a.cri_endpoint.as_str());
    config.synced
        && runtime.health != RuntimeHealth::NotChecked
        && runtime.endpoint == endpoint_in_force
}

/// Whether the proxy has reported on the settings in force: once a NodeConfig
/// is applied, the status waits for the first sync (so a restart does not
/// write ProxyReady Unknown and then True).
pub fn proxy_settled(config: &ConfigReport, proxy: &ProxyReport) -> bool {
    config.applied.is_none()
        || !matches!(
            proxy.state,
            ProxyState::WaitingForConfig | ProxyState::Starting
        )
}

/// Whether `current` differs from `desired` in anything the agent writes,
/// `lastTransitionTime` aside.
pub fn needs_write(desired: &NodeConfigStatus, current: &NodeConfigStatus) -> bool {
    let condition_differs =
        |want: &Condition| match current.conditions.iter().find(|c| c.type_ == want.type_) {
            None => true,
            Some(have) => {
                have.status != want.status
                    || have.reason != want.reason
                    || have.message != want.message
                    || have.observed_generation != want.observed_generation
            }
        };
    desired.observed_generation != current.observed_generation
        || desired.agent != current.agent
        || desired.runtime != current.runtime
        || proxy_differs(desired.proxy.as_ref(), current.proxy.as_ref())
        || desired.conditions.iter().any(condition_differs)
}

/// The proxy block needs a write when what is programmed changed, or when its
/// sync time is [`PROXY_STATUS_REFRESH`] behind.
fn proxy_differs(desired: Option<&ProxyStatus>, current: Option<&ProxyStatus>) -> bool {
    let (Some(want), Some(have)) = (desired, current) else {
        return desired.is_some() != current.is_some();
    };
    let behind = match (&want.last_sync_time, &have.last_sync_time) {
        (Some(w), Some(h)) => {
            w.0.as_second().saturating_sub(h.0.as_second())
                >= i64::try_from(PROXY_STATUS_REFRESH.as_secs()).unwrap_or(i64::MAX)
        }
        (w, h) => w.is_some() != h.is_some(),
    };
    want.services != have.services
        || want.endpoints != have.endpoints
        || want.rules != have.rules
        || behind
}

impl ConfigState {
    /// The generation the agent last decided about.
    pub fn generation(&self) -> Option<i64> {
        match self {
            ConfigState::NotSeen => None,
            ConfigState::Applied { generation } | ConfigState::Rejected { generation, .. } => {
                Some(*generation)
            }
            ConfigState::Paused { latest } => Some(*latest),
        }
    }
}

fn config_applied(config: &ConfigReport) -> Verdict {
    let applied = config.applied.as_ref().map(|a| a.generation);
    match (&config.state, applied) {
        (ConfigState::NotSeen, _) => Verdict {
            status: ConditionStatus::Unknown,
            reason: "NotSeen",
            message: "the agent has not seen its NodeConfig".into(),
        },
        (ConfigState::Applied { generation }, _) => Verdict {
            status: ConditionStatus::True,
            reason: "Applied",
            message: format!("generation {generation} is applied"),
        },
        (ConfigState::Paused { latest }, Some(applied)) if applied == *latest => Verdict {
            status: ConditionStatus::True,
            reason: "Paused",
            message: format!("spec.paused is set: generation {applied} is applied and later changes wait until it is unset"),
        },
        (ConfigState::Paused { latest }, Some(applied)) => Verdict {
            status: ConditionStatus::True,
            reason: "Paused",
            message: format!("spec.paused is set: generation {applied} stays applied; generation {latest} waits until it is unset"),
        },
        (ConfigState::Paused { latest }, None) => Verdict {
            status: ConditionStatus::Unknown,
            reason: "Paused",
            message: format!(
                "spec.paused is set and the agent has applied no generation since it started; generation {latest} waits and the agent runs with its start-up configuration"
            ),
        },
        (ConfigState::Rejected { rejection, .. }, applied) => Verdict {
            status: ConditionStatus::False,
            reason: rejection.reason,
            message: match applied {
                Some(applied) => format!("{}; generation {applied} stays applied", rejection.message),
                None => format!("{}; the agent runs with its start-up configuration", rejection.message),
            },
        },
    }
}

fn runtime_ready(runtime: &RuntimeReport) -> Verdict {
    let endpoint = &runtime.endpoint;
    match &runtime.health {
        RuntimeHealth::NotChecked => Verdict {
            status: ConditionStatus::Unknown,
            reason: "NotChecked",
            message: format!("the runtime at {endpoint} was not asked yet"),
        },
        RuntimeHealth::Ready => Verdict {
            status: ConditionStatus::True,
            reason: "RuntimeReady",
            message: match &runtime.version {
                Some(v) => format!("{} at {endpoint} is ready", v.display()),
                None => format!("the runtime at {endpoint} is ready"),
            },
        },
        RuntimeHealth::Unreachable { message } => {
            Verdict { status: ConditionStatus::False, reason: "RuntimeUnreachable", message: message.clone() }
        }
        RuntimeHealth::NotReady { reason, message } => Verdict {
            status: ConditionStatus::False,
            reason: "RuntimeNotReady",
            message: format!("the runtime at {endpoint} reports RuntimeReady=false (reason {reason:?}): {message}"),
        },
        RuntimeHealth::NetworkNotReady { reason, message } => Verdict {
            status: ConditionStatus::False,
            reason: "NetworkNotReady",
            message: format!("the runtime at {endpoint} reports NetworkReady=false (reason {reason:?}): {message}"),
        },
    }
}

fn proxy_ready(proxy: &ProxyReport) -> Verdict {
    match &proxy.state {
        ProxyState::WaitingForConfig => Verdict {
            status: ConditionStatus::Unknown,
            reason: "NotConfigured",
            message: "the service proxy waits for the NodeConfig's proxy settings".into(),
        },
        ProxyState::Starting => Verdict {
            status: ConditionStatus::Unknown,
            reason: "Syncing",
            message: "the first sync of the service rules has not finished".into(),
        },
        ProxyState::Synced => Verdict {
            status: ConditionStatus::True,
            reason: "Synced",
            message: format!(
                "{} service ports and {} endpoints programmed in {} rules",
                proxy.service_ports, proxy.endpoints, proxy.rules
            ),
        },
        ProxyState::Disabled => Verdict {
            status: ConditionStatus::False,
            reason: "Disabled",
            message: "spec.proxy.enabled is false: the agent programs no service rules".into(),
        },
        ProxyState::Failed { message } => Verdict {
            status: ConditionStatus::False,
            reason: "SyncFailed",
            // iptables' stderr can be long; a condition message is for people.
            message: format!(
                "{}; the rules of the last successful sync stay in place",
                truncate(message, 1024)
            ),
        },
        ProxyState::InvalidConfig { message } => Verdict {
            status: ConditionStatus::False,
            reason: "InvalidConfig",
            message: message.clone(),
        },
    }
}

/// At most `max` bytes of `text`, cut at a character boundary, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn ready(config: &Verdict, runtime: &Verdict, proxy: Option<&Verdict>) -> Verdict {
    let mut failing = Vec::new();
    if config.status != ConditionStatus::True {
        failing.push((
            "ConfigNotApplied",
            format!(
                "ConfigApplied is {}: {}",
                config.status.as_str(),
                config.message
            ),
        ));
    }
    if runtime.status != ConditionStatus::True {
        failing.push((
            "RuntimeNotReady",
            format!(
                "RuntimeReady is {}: {}",
                runtime.status.as_str(),
                runtime.message
            ),
        ));
    }
    if let Some(proxy) = proxy.filter(|p| p.status != ConditionStatus::True) {
        failing.push((
            "ProxyNotReady",
            format!("ProxyReady is {}: {}", proxy.status.as_str(), proxy.message),
        ));
    }
    match failing.first() {
        None => Verdict {
            status: ConditionStatus::True,
            reason: "AgentReady",
            message: if proxy.is_some() {
                "configuration applied, container runtime ready, service rules synced".into()
            } else {
                "configuration applied and container runtime ready".into()
            },
        },
        Some((reason, _)) => Verdict {
            status: ConditionStatus::False,
            reason,
            message: failing
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

fn degraded(config: &ConfigReport, node: &NodeReport) -> Verdict {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    if let (
        ConfigState::Rejected {
            generation,
            rejection,
        },
        Some(applied),
    ) = (&config.state, &config.applied)
    {
        problems.push((
            "ConfigNotApplied",
            format!(
                "generation {generation} is not applied ({}); generation {} runs",
                rejection.reason, applied.generation
            ),
        ));
    }
    problems.extend(node.problems.iter().map(|p| (p.reason, p.message.clone())));
    match problems.first() {
        None => Verdict {
            status: ConditionStatus::False,
            reason: "AsExpected",
            message: String::new(),
        },
        Some((reason, _)) => Verdict {
            status: ConditionStatus::True,
            reason,
            message: problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use nodeconfig_crds::conditions::find_condition;
    use nodeconfig_crds::{ContainerCounts, NodeConfigSpec, RuntimeStatus};

    use super::*;
    use crate::config::plan::{AppliedConfig, Rejection};
    use crate::reports::{NodeProblem, RuntimeInventory, RuntimeVersion};

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("timestamp"))
    }

    fn applied(generation: i64) -> AppliedConfig {
        let spec = NodeConfigSpec::for_node("n1");
        AppliedConfig {
            uid: "u1".into(),
            generation,
            mode: NodeMode::Kubelet,
            cri_endpoint: spec.runtime.cri_endpoint.clone(),
            runtime: spec.runtime,
            pods: spec.pods,
            proxy: spec.proxy,
        }
    }

    fn config_applied_at(generation: i64) -> ConfigReport {
        ConfigReport {
            state: ConfigState::Applied { generation },
            applied: Some(applied(generation)),
            mode: Some(NodeMode::Kubelet),
            synced: false,
        }
    }

    fn runtime_ready_report() -> RuntimeReport {
        RuntimeReport {
            endpoint: "unix:///run/c.sock".into(),
            version: Some(RuntimeVersion {
                name: "containerd".into(),
                version: "1.6.20".into(),
            }),
            health: RuntimeHealth::Ready,
            inventory: Some(RuntimeInventory {
                sandboxes: 1,
                containers: ContainerCounts::default(),
                images: 3,
                image_fs: None,
            }),
        }
    }

    fn compute(
        config: &ConfigReport,
        runtime: &RuntimeReport,
        current: &NodeConfigStatus,
        now: i64,
    ) -> NodeConfigStatus {
        compute_with_proxy(config, runtime, &ProxyReport::default(), current, now)
    }

    fn compute_with_proxy(
        config: &ConfigReport,
        runtime: &RuntimeReport,
        proxy: &ProxyReport,
        current: &NodeConfigStatus,
        now: i64,
    ) -> NodeConfigStatus {
        let node = NodeReport::default();
        let inputs = StatusInputs {
            config,
            runtime,
            node: &node,
            proxy,
            pods: None,
            pressure: None,
            spec_mode: NodeMode::Companion,
        };
        desired_status(inputs, current, at(now))
    }

    fn synced(services: usize, rules: usize, last_sync: i64) -> ProxyReport {
        ProxyReport {
            state: ProxyState::Synced,
            enabled: true,
            service_ports: services,
            endpoints: 2 * services,
            rules,
            last_sync: Some(at(last_sync)),
            last_sync_duration: Some(Duration::from_millis(12)),
            failed_syncs: 0,
        }
    }

    fn condition<'s>(status: &'s NodeConfigStatus, type_: &str) -> &'s Condition {
        find_condition(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} missing"))
    }

    #[test]
    fn applied_and_runtime_ready_is_ready() {
        let status = compute(
            &config_applied_at(3),
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(condition(&status, types::READY).status, "True");
        assert_eq!(condition(&status, types::CONFIG_APPLIED).reason, "Applied");
        assert_eq!(
            condition(&status, types::CONFIG_APPLIED).observed_generation,
            Some(3)
        );
        assert_eq!(condition(&status, types::RUNTIME_READY).status, "True");
        assert_eq!(condition(&status, types::DEGRADED).status, "False");
        assert_eq!(
            status.runtime,
            Some(RuntimeStatus {
                version: "containerd 1.6.20".into(),
                sandboxes: 1,
                containers: ContainerCounts::default(),
                images: 3,
                image_fs: None,
            })
        );
        assert_eq!(
            status.agent.as_ref().map(|a| a.mode),
            Some(NodeMode::Kubelet)
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time_and_need_no_write() {
        let first = compute(
            &config_applied_at(3),
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        let second = compute(&config_applied_at(3), &runtime_ready_report(), &first, 200);
        assert_eq!(
            condition(&second, types::READY).last_transition_time,
            at(100)
        );
        assert!(!needs_write(&second, &first));
    }

    #[test]
    fn a_runtime_that_does_not_answer_makes_ready_false() {
        let first = compute(
            &config_applied_at(3),
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        let mut runtime = runtime_ready_report();
        runtime.health = RuntimeHealth::Unreachable {
            message: "CRI Version on unix:///run/c.sock failed".into(),
        };
        let second = compute(&config_applied_at(3), &runtime, &first, 200);
        let ready = condition(&second, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RuntimeNotReady")
        );
        assert!(
            ready.message.contains("unix:///run/c.sock"),
            "{}",
            ready.message
        );
        assert_eq!(ready.last_transition_time, at(200));
        assert_eq!(
            condition(&second, types::RUNTIME_READY).reason,
            "RuntimeUnreachable"
        );
        assert_eq!(
            condition(&second, types::CONFIG_APPLIED).last_transition_time,
            at(100)
        );
        assert!(needs_write(&second, &first));
    }

    #[test]
    fn a_refused_generation_keeps_the_old_one_and_is_degraded() {
        let config = ConfigReport {
            state: ConfigState::Rejected {
                generation: 4,
                rejection: Rejection::runtime_unreachable(
                    "unix:///dead.sock",
                    "connection refused",
                ),
            },
            applied: Some(applied(3)),
            mode: Some(NodeMode::Kubelet),
            synced: true,
        };
        let status = compute(
            &config,
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        assert_eq!(status.observed_generation, Some(3));
        let applied = condition(&status, types::CONFIG_APPLIED);
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "RuntimeUnreachable")
        );
        assert!(
            applied.message.contains("unix:///dead.sock")
                && applied.message.contains("generation 3 stays applied")
        );
        assert_eq!(applied.observed_generation, Some(4));
        assert_eq!(condition(&status, types::READY).reason, "ConfigNotApplied");
        let degraded = condition(&status, types::DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ConfigNotApplied")
        );
        assert_eq!(condition(&status, types::RUNTIME_READY).status, "True");
    }

    #[test]
    fn paused_stays_ready_with_the_applied_generation() {
        let config = ConfigReport {
            state: ConfigState::Paused { latest: 5 },
            applied: Some(applied(4)),
            mode: Some(NodeMode::Kubelet),
            synced: true,
        };
        let status = compute(
            &config,
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        assert_eq!(status.observed_generation, Some(4));
        let applied = condition(&status, types::CONFIG_APPLIED);
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("True", "Paused")
        );
        assert!(
            applied.message.contains("generation 4 stays applied")
                && applied.message.contains("generation 5 waits")
        );
        assert_eq!(condition(&status, types::READY).status, "True");
    }

    #[test]
    fn paused_with_nothing_applied_is_unknown_and_not_ready() {
        let config = ConfigReport {
            state: ConfigState::Paused { latest: 5 },
            applied: None,
            mode: None,
            synced: true,
        };
        let status = compute(
            &config,
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        assert_eq!(status.observed_generation, None);
        assert_eq!(condition(&status, types::CONFIG_APPLIED).status, "Unknown");
        assert_eq!(condition(&status, types::READY).status, "False");
        assert_eq!(status.agent.map(|a| a.mode), Some(NodeMode::Companion));
    }

    #[test]
    fn ready_set_to_unknown_by_someone_else_is_written_back_with_a_new_transition() {
        let first = compute(
            &config_applied_at(3),
            &runtime_ready_report(),
            &NodeConfigStatus::default(),
            100,
        );
        let mut observed = first.clone();
        let lost = NewCondition {
            type_: types::READY,
            status: ConditionStatus::Unknown,
            reason: "AgentHeartbeatLost",
            message: "lease expired".into(),
            observed_generation: Some(3),
        };
        set_condition(&mut observed.conditions, lost, at(150));
        let desired = compute(
            &config_applied_at(3),
            &runtime_ready_report(),
            &observed,
            200,
        );
        assert!(needs_write(&desired, &observed));
        let ready = condition(&desired, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AgentReady")
        );
        assert_eq!(ready.last_transition_time, at(200));
    }

    #[test]
    fn kubelet_mode_reports_the_pods_block_and_pods_ready() {
        let config = config_applied_at(1);
        let runtime = runtime_ready_report();
        let proxy = ProxyReport::default();
        let node = NodeReport::default();
        let status_with = |pods: &PodsReport| {
            let inputs = StatusInputs {
                config: &config,
                runtime: &runtime,
                node: &node,
                proxy: &proxy,
                pods: Some(pods),
                pressure: None,
                spec_mode: NodeMode::Kubelet,
            };
            desired_status(inputs, &NodeConfigStatus::default(), at(1))
        };
        let starting = status_with(&PodsReport::default());
        assert!(
            starting.pods.is_none(),
            "no counts before the pods are listed"
        );
        assert_eq!(condition(&starting, types::PODS_READY).status, "Unknown");

        let rolling = status_with(&PodsReport {
            synced: true,
            desired: 3,
            running: 2,
            ready: 2,
            pending: 1,
            failed: 1,
            restarts: 5,
            rejected: 0,
        });
        let pods = rolling.pods.clone().expect("pods block");
        assert_eq!(
            (
                pods.summary.as_str(),
                pods.desired,
                pods.running,
                pods.pending,
                pods.failed,
                pods.restarts
            ),
            ("2/3", 3, 2, 1, 1, 5)
        );
        let ready = condition(&rolling, types::PODS_READY);
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            (
                "False",
                "PodsNotReady",
                "1 of 3 pods not ready (1 pending, 2 running)"
            )
        );
        assert_eq!(
            condition(&rolling, types::READY).status,
            "True",
            "pods that are not ready do not make the node unready"
        );

        let settled = status_with(&PodsReport {
            synced: true,
            desired: 2,
            running: 2,
            ready: 2,
            ..Default::default()
        });
        assert_eq!(condition(&settled, types::PODS_READY).status, "True");
    }

    #[test]
    fn inputs_settle_once_listed_and_asked_at_the_endpoint_in_force() {
        let mut config = config_applied_at(1);
        let mut runtime = runtime_ready_report();
        if let Some(a) = config.applied.as_mut() {
            a.cri_endpoint = runtime.endpoint.clone();
        }
        assert!(!inputs_settled(&config, &runtime), "not listed yet");
        config.synced = true;
        assert!(inputs_settled(&config, &runtime));
        runtime.endpoint = "unix:///run/old.sock".into();
        assert!(
            !inputs_settled(&config, &runtime),
            "report about the endpoint before the switch"
        );
        let fresh = RuntimeReport {
            endpoint: "unix:///run/c.sock".into(),
            ..Default::default()
        };
        assert!(!inputs_settled(&config, &fresh), "runtime not asked yet");
        let no_config = ConfigReport {
            synced: true,
            ..Default::default()
        };
        assert!(inputs_settled(&no_config, &runtime_ready_report()));
    }

    #[test]
    fn the_status_waits_for_the_proxys_first_sync_once_configured() {
        let starting = ProxyReport {
            state: ProxyState::Starting,
            enabled: true,
            ..Default::default()
        };
        assert!(!proxy_settled(&config_applied_at(1), &starting));
        assert!(proxy_settled(&config_applied_at(1), &synced(1, 10, 1)));
        assert!(proxy_settled(
            &ConfigReport::default(),
            &ProxyReport::default()
        ));
    }

    #[test]
    fn foreign_conditions_are_not_written() {
        let mut current = NodeConfigStatus::default();
        let pods = NewCondition {
            type_: types::PODS_READY,
            status: ConditionStatus::True,
            reason: "X",
            message: String::new(),
            observed_generation: None,
        };
        set_condition(&mut current.conditions, pods, at(1));
        let status = compute(&config_applied_at(1), &runtime_ready_report(), &current, 2);
        assert!(find_condition(&status.conditions, types::PODS_READY).is_none());
        assert_eq!(status.conditions.len(), OWN_CONDITIONS.len());
    }

    #[test]
    fn a_synced_proxy_is_ready_and_reports_its_block() {
        let status = compute_with_proxy(
            &config_applied_at(1),
            &runtime_ready_report(),
            &synced(3, 40, 100),
            &NodeConfigStatus::default(),
            100,
        );
        let proxy = condition(&status, types::PROXY_READY);
        assert_eq!(
            (proxy.status.as_str(), proxy.reason.as_str()),
            ("True", "Synced")
        );
        assert_eq!(condition(&status, types::READY).status, "True");
        assert_eq!(
            status.proxy,
            Some(ProxyStatus {
                services: 3,
                endpoints: 6,
                rules: 40,
                last_sync_time: Some(at(100)),
                last_sync_duration_seconds: Some(0.012),
                failed_syncs: 0,
            })
        );
    }

    #[test]
    fn a_failed_sync_makes_proxy_ready_false_and_ready_false() {
        let mut report = synced(3, 40, 100);
        report.state = ProxyState::Failed {
            message: "iptables-restore failed (exit status: 2): line 7".into(),
        };
        report.failed_syncs = 1;
        let status = compute_with_proxy(
            &config_applied_at(1),
            &runtime_ready_report(),
            &report,
            &NodeConfigStatus::default(),
            100,
        );
        let proxy = condition(&status, types::PROXY_READY);
        assert_eq!(
            (proxy.status.as_str(), proxy.reason.as_str()),
            ("False", "SyncFailed")
        );
        assert!(proxy.message.contains("line 7"), "{}", proxy.message);
        let ready = condition(&status, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ProxyNotReady")
        );
        assert_eq!(
            status.proxy.map(|p| (p.rules, p.failed_syncs)),
            Some((40, 1))
        );
    }

    #[test]
    fn a_disabled_proxy_is_not_part_of_ready() {
        let report = ProxyReport {
            state: ProxyState::Disabled,
            enabled: false,
            last_sync: Some(at(50)),
            ..Default::default()
        };
        let status = compute_with_proxy(
            &config_applied_at(1),
            &runtime_ready_report(),
            &report,
            &NodeConfigStatus::default(),
            100,
        );
        let proxy = condition(&status, types::PROXY_READY);
        assert_eq!(
            (proxy.status.as_str(), proxy.reason.as_str()),
            ("False", "Disabled")
        );
        assert_eq!(condition(&status, types::READY).status, "True");
        assert_eq!(status.proxy.map(|p| p.rules), Some(0));
    }

    #[test]
    fn an_enabled_proxy_before_its_first_sync_holds_ready() {
        let report = ProxyReport {
            state: ProxyState::Starting,
            enabled: true,
            ..Default::default()
        };
        let status = compute_with_proxy(
            &config_applied_at(1),
            &runtime_ready_report(),
            &report,
            &NodeConfigStatus::default(),
            100,
        );
        assert_eq!(condition(&status, types::PROXY_READY).status, "Unknown");
        assert_eq!(condition(&status, types::READY).reason, "ProxyNotReady");
        assert_eq!(status.proxy, None);
    }

    #[test]
    fn sync_time_alone_is_written_at_most_every_five_minutes() {
        let config = config_applied_at(1);
        let runtime = runtime_ready_report();
        let written = compute_with_proxy(
            &config,
            &runtime,
            &synced(3, 40, 100),
            &NodeConfigStatus::default(),
            100,
        );
        // Syncs every 30s with nothing new: no write until 5 minutes have passed.
        for t in [130, 160, 399] {
            let mut report = synced(3, 40, t);
            report.last_sync_duration = Some(Duration::from_millis(30));
            report.failed_syncs = 2;
            let desired = compute_with_proxy(&config, &runtime, &report, &written, t);
            assert!(!needs_write(&desired, &written), "at {t}");
        }
        let desired = compute_with_proxy(&config, &runtime, &synced(3, 40, 400), &written, 400);
        assert!(needs_write(&desired, &written), "five minutes on");
        // Anything programmed that changes is written at once, with the fresh time.
        let desired = compute_with_proxy(&config, &runtime, &synced(3, 41, 130), &written, 130);
        assert!(needs_write(&desired, &written));
        assert_eq!(desired.proxy.and_then(|p| p.last_sync_time), Some(at(130)));
    }

    #[test]
    fn node_problems_make_degraded() {
        let node = NodeReport {
            registered: true,
            problems: vec![NodeProblem {
                reason: "NodeTaintsForbidden",
                message: "taints refused".into(),
            }],
        };
        let config = config_applied_at(1);
        let runtime = runtime_ready_report();
        let proxy = ProxyReport::default();
        let inputs = StatusInputs {
            config: &config,
            runtime: &runtime,
            node: &node,
            proxy: &proxy,
            pods: None,
            pressure: None,
            spec_mode: NodeMode::Kubelet,
        };
        let status = desired_status(inputs, &NodeConfigStatus::default(), at(1));
        let degraded = condition(&status, types::DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "NodeTaintsForbidden")
        );
        assert_eq!(condition(&status, types::READY).status, "True");
    }

    #[test]
    fn pressure_is_one_condition_naming_the_nodes_pressure_conditions() {
        let config = config_applied_at(1);
        let runtime = runtime_ready_report();
        let proxy = ProxyReport::default();
        let node = NodeReport::default();
        let status_with = |pressure: &PressureReport| {
            let inputs = StatusInputs {
                config: &config,
                runtime: &runtime,
                node: &node,
                proxy: &proxy,
                pods: None,
                pressure: Some(pressure),
                spec_mode: NodeMode::Kubelet,
            };
            desired_status(inputs, &NodeConfigStatus::default(), at(1))
        };
        let none = status_with(&PressureReport::default());
        assert!(find_condition(&none.conditions, types::PRESSURE).is_none());
        let calm = status_with(&PressureReport {
            measured: true,
            ..Default::default()
        });
        assert_eq!(condition(&calm, types::PRESSURE).reason, "NoPressure");
        let pressed = status_with(&PressureReport {
            measured: true,
            memory: true,
            disk: true,
            pid: false,
            crossed: "memory.available is below its threshold of 1Gi".into(),
        });
        let c = condition(&pressed, types::PRESSURE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "MemoryPressure")
        );
        assert_eq!(
            c.message,
            "MemoryPressure, DiskPressure: memory.available is below its threshold of 1Gi"
        );
        // Pressure is reported, not a failure: the node stays Ready.
        assert_eq!(condition(&pressed, types::READY).status, "True");
    }
}
