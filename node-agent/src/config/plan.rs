//! What to do with a NodeConfig generation: the config loop's pure decision.
//!
//! Given the observed spec, what is applied and the command-line overrides,
//! [`plan`] says: nothing (already applied), keep the old configuration
//! (paused), refuse it (it passed the schema but cannot work on this node), or
//! apply it — switching the CRI connection first when the endpoint changes,
//! which the shell checks by connecting before it commits to the switch.

use nodeconfig_crds::{NodeConfigSpec, NodeMode, PodsSpec, ProxySpec, RuntimeSpec};

use crate::eviction::thresholds::EvictionPolicy;
use crate::images::policy::GcPolicy;
use crate::pods::logs::policy::LogPolicy;

/// The label that marks a Node registered by the agent; the agent owns it.
pub const AGENT_MANAGED_LABEL: &str = "nodeconfig.dev/agent-managed";

/// The configuration the agent runs with: one applied NodeConfig generation,
/// with the command-line overrides folded in.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedConfig {
    /// metadata.uid of the NodeConfig: a deleted and re-created one starts again at generation 1.
    pub uid: String,
    pub generation: i64,
    pub mode: NodeMode,
    /// The endpoint in use: `--cri-endpoint` when given, else spec.runtime.criEndpoint.
    pub cri_endpoint: String,
    pub runtime: RuntimeSpec,
    pub pods: PodsSpec,
    pub proxy: ProxySpec,
}

/// What the command line forces, whatever the NodeConfig says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub mode: Option<NodeMode>,
    pub cri_endpoint: Option<String>,
}

/// The NodeConfig as observed.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub uid: &'a str,
    pub spec: &'a NodeConfigSpec,
    pub generation: i64,
    /// status.observedGeneration as found: which generation an earlier agent process applied.
    pub status_observed_generation: Option<i64>,
}

/// Why a generation is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// CamelCase reason of ConfigApplied=False.
    pub reason: &'static str,
    pub message: String,
    /// Whether trying again later may succeed (a runtime that is down may come up).
    pub retry: bool,
}

impl Rejection {
    /// The new CRI endpoint did not answer.
    pub fn runtime_unreachable(endpoint: &str, error: &str) -> Self {
        Self {
            reason: "RuntimeUnreachable",
            message: format!("CRI endpoint {endpoint} does not answer: {error}"),
            retry: true,
        }
    }
}

/// The decision for one observed generation.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigPlan {
    /// This generation is applied already.
    UpToDate,
    /// spec.paused: keep what runs.
    Paused,
    /// Keep what runs and report why this generation cannot be applied.
    Reject(Rejection),
    /// Run with `config`; when `switch_cri_to` is set, connect to it first and
    /// reject the generation if it does not answer.
    Apply {
        config: Box<AppliedConfig>,
        switch_cri_to: Option<String>,
    },
}

/// The mode the agent runs in: `--mode` first, else the applied spec's.
pub fn effective_mode(overrides: &Overrides, applied: Option<&AppliedConfig>) -> Option<NodeMode> {
    overrides.mode.or(applied.map(|a| a.mode))
}

/// Decides what to do with `observed`.
///
/// Paused: the applied configuration stays. An agent that restarts while its
/// NodeConfig is paused has nothing applied in memory; when status shows the
/// paused generation was the one applied before, re-applying it changes
/// nothing, so it does; otherwise it keeps its start-up configuration.
pub fn plan(
    observed: Observed<'_>,
    applied: Option<&AppliedConfig>,
    current_cri_endpoint: &str,
    overrides: &Overrides,
) -> ConfigPlan {
    if applied.is_some_and(|a| a.uid == observed.uid && a.generation == observed.generation) {
        return ConfigPlan::UpToDate;
    }
    let spec = observed.spec;
    let restoring =
        applied.is_none() && observed.status_observed_generation == Some(observed.generation);
    if spec.paused && !restoring {
        return ConfigPlan::Paused;
    }
    let mode = overrides.mode.unwrap_or(spec.mode);
    if mode == NodeMode::Kubelet {
        if let Err(rejection) = validate_pods(&spec.pods) {
            return ConfigPlan::Reject(rejection);
        }
    }
    let cri_endpoint = overrides
        .cri_endpoint
        .clone()
        .unwrap_or_else(|| spec.runtime.cri_endpoint.clone());
    let switch_cri_to = (cri_endpoint != current_cri_endpoint).then(|| cri_endpoint.clone());
    ConfigPlan::Apply {
        config: Box::new(AppliedConfig {
            uid: observed.uid.to_string(),
            generation: observed.generation,
            mode,
            cri_endpoint,
            runtime: spec.runtime.clone(),
            pods: spec.pods.clone(),
            proxy: spec.proxy.clone(),
        }),
        switch_cri_to,
    }
}

/// Checks what the schema cannot: that the Node the agent registers will take
/// these labels and taints (syntax, and NodeRestriction's rules for what a
/// node may set on itself), and the container log rotation, eviction and
/// image garbage collection settings again (the schema's rules may be older
/// than this agent).
pub fn validate_pods(pods: &PodsSpec) -> Result<(), Rejection> {
    let mut problems = Vec::new();
    for (key, value) in &pods.labels {
        if key == AGENT_MANAGED_LABEL {
            problems.push(format!("label {key} is set by the agent itself"));
            continue;
        }
        if let Err(why) = check_qualified_name(key) {
            problems.push(format!("label key {key:?}: {why}"));
        } else if let Some(why) = forbidden_for_nodes(key) {
            problems.push(format!("label {key}: {why}"));
        }
        if let Err(why) = check_label_value(value) {
            problems.push(format!("label {key} value {value:?}: {why}"));
        }
    }
    for taint in &pods.taints {
        if let Err(why) = check_qualified_name(&taint.key) {
            problems.push(format!("taint key {:?}: {why}", taint.key));
        }
        if let Some(value) = &taint.value {
            if let Err(why) = check_label_value(value) {
                problems.push(format!("taint {} value {value:?}: {why}", taint.key));
            }
        }
    }
    if let Err(log_problems) = LogPolicy::from_spec(pods) {
        problems.extend(log_problems);
    }
    if let Err(eviction_problems) = EvictionPolicy::from_spec(pods) {
        problems.extend(eviction_problems);
    }
    if let Err(gc_problems) = GcPolicy::from_spec(pods) {
        problems.extend(gc_problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            reason: "InvalidNodeSettings",
            message: problems.join("; "),
            retry: false,
        })
    }
}

/// Why NodeRestriction refuses a node setting label `key` on its own Node, if it does:
/// labels under kubernetes.io and k8s.io are reserved except the kubelet's own.
pub fn forbidden_for_nodes(key: &str) -> Option<&'static str> {
    let (prefix, _) = key.split_once('/')?;
    let within = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    if within("node-restriction.kubernetes.io") {
        return Some("the node-restriction.kubernetes.io prefix is reserved for administrators");
    }
    if (within("kubernetes.io") || within("k8s.io")) && !is_kubelet_label(key) {
        return Some(
            "NodeRestriction forbids nodes to set labels under kubernetes.io and k8s.io except kubelet.kubernetes.io/*, node.kubernetes.io/* and the well-known topology, instance-type, os and arch labels",
        );
    }
    None
}

/// The labels a kubelet may set on its Node (k8s.io/kubelet/pkg/apis `IsKubeletLabel`).
fn is_kubelet_label(key: &str) -> bool {
    const KUBELET_LABELS: [&str; 11] = [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    if KUBELET_LABELS.contains(&key) {
        return true;
    }
    let prefix = key.split_once('/').map_or("", |(p, _)| p);
    ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

/// A label key or taint key: `[prefix/]name`, as Kubernetes' IsQualifiedName checks it.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|why| format!("prefix {why}"))?;
    }
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    check_name_part(name).map_err(|why| format!("name part {why}"))
}

/// A label value: empty, or a name part of at most 63 characters.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value)
}

fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!("must be at most 63 characters, is {}", s.len()));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let first = s.chars().next();
    let last = s.chars().last();
    if !(first.is_some_and(|c| c.is_ascii_alphanumeric())
        && last.is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(ok_inner))
    {
        return Err("must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric".into());
    }
    Ok(())
}

fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be a DNS subdomain of 1 to 253 characters".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} must be a lowercase DNS subdomain such as example.com"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nodeconfig_crds::{NodeTaint, TaintEffect};

    use super::*;

    const ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

    fn spec() -> NodeConfigSpec {
        let mut spec = NodeConfigSpec::for_node("n1");
        spec.mode = NodeMode::Kubelet;
        spec
    }

    fn observed(spec: &NodeConfigSpec, generation: i64) -> Observed<'_> {
        Observed {
            uid: "u1",
            spec,
            generation,
            status_observed_generation: None,
        }
    }

    fn applied(generation: i64) -> AppliedConfig {
        match plan(
            observed(&spec(), generation),
            None,
            ENDPOINT,
            &Overrides::default(),
        ) {
            ConfigPlan::Apply { config, .. } => *config,
            other => panic!("expected Apply, got {other:?}"),
        }
    }

    #[test]
    fn a_new_generation_is_applied_without_switch_when_the_endpoint_is_the_same() {
        let spec = spec();
        match plan(
            observed(&spec, 3),
            Some(&applied(2)),
            ENDPOINT,
            &Overrides::default(),
        ) {
            ConfigPlan::Apply {
                config,
                switch_cri_to,
            } => {
                assert_eq!(config.generation, 3);
                assert_eq!(config.mode, NodeMode::Kubelet);
                assert_eq!(switch_cri_to, None);
            }
            other => panic!("expected Apply, got {other:?}"),
        }
    }

    #[test]
    fn the_applied_generation_is_up_to_date() {
        let spec = spec();
        assert_eq!(
            plan(
                observed(&spec, 2),
                Some(&applied(2)),
                ENDPOINT,
                &Overrides::default()
            ),
            ConfigPlan::UpToDate
        );
    }

    #[test]
    fn a_recreated_node_config_is_applied_again() {
        let spec = spec();
        let recreated = Observed {
            uid: "u2",
            spec: &spec,
            generation: 2,
            status_observed_generation: None,
        };
        assert!(matches!(
            plan(
                recreated,
                Some(&applied(2)),
                ENDPOINT,
                &Overrides::default()
            ),
            ConfigPlan::Apply { .. }
        ));
    }

    #[test]
    fn a_new_endpoint_asks_for_a_switch() {
        let mut spec = spec();
        spec.runtime.cri_endpoint = "unix:///run/other.sock".into();
        match plan(
            observed(&spec, 2),
            Some(&applied(1)),
            ENDPOINT,
            &Overrides::default(),
        ) {
            ConfigPlan::Apply {
                switch_cri_to,
                config,
            } => {
                assert_eq!(switch_cri_to.as_deref(), Some("unix:///run/other.sock"));
                assert_eq!(config.cri_endpoint, "unix:///run/other.sock");
            }
            other => panic!("expected Apply, got {other:?}"),
        }
    }

    #[test]
    fn the_command_line_endpoint_and_mode_win() {
        let mut spec = spec();
        spec.runtime.cri_endpoint = "unix:///run/other.sock".into();
        let overrides = Overrides {
            mode: Some(NodeMode::Companion),
            cri_endpoint: Some(ENDPOINT.to_string()),
        };
        match plan(observed(&spec, 2), None, ENDPOINT, &overrides) {
            ConfigPlan::Apply {
                config,
                switch_cri_to,
            } => {
                assert_eq!(switch_cri_to, None);
                assert_eq!(config.cri_endpoint, ENDPOINT);
                assert_eq!(config.mode, NodeMode::Companion);
            }
            other => panic!("expected Apply, got {other:?}"),
        }
        assert_eq!(
            effective_mode(&overrides, Some(&applied(1))),
            Some(NodeMode::Companion)
        );
        assert_eq!(
            effective_mode(&Overrides::default(), Some(&applied(1))),
            Some(NodeMode::Kubelet)
        );
        assert_eq!(effective_mode(&Overrides::default(), None), None);
    }

    #[test]
    fn paused_keeps_what_runs() {
        let mut spec = spec();
        spec.paused = true;
        assert_eq!(
            plan(
                observed(&spec, 5),
                Some(&applied(4)),
                ENDPOINT,
                &Overrides::default()
            ),
            ConfigPlan::Paused
        );
        assert_eq!(
            plan(observed(&spec, 5), None, ENDPOINT, &Overrides::default()),
            ConfigPlan::Paused
        );
    }

    #[test]
    fn paused_after_a_restart_restores_the_generation_applied_before() {
        let mut spec = spec();
        spec.paused = true;
        let observed = Observed {
            uid: "u1",
            spec: &spec,
            generation: 5,
            status_observed_generation: Some(5),
        };
        assert!(matches!(
            plan(observed, None, ENDPOINT, &Overrides::default()),
            ConfigPlan::Apply { .. }
        ));
    }

    #[test]
    fn labels_a_node_may_not_set_are_refused_in_kubelet_mode_only() {
        let mut spec = spec();
        spec.pods.labels = BTreeMap::from([
            ("node-role.kubernetes.io/worker".to_string(), String::new()),
            ("team".to_string(), "a".to_string()),
        ]);
        match plan(
            observed(&spec, 2),
            Some(&applied(1)),
            ENDPOINT,
            &Overrides::default(),
        ) {
            ConfigPlan::Reject(r) => {
                assert_eq!(r.reason, "InvalidNodeSettings");
                assert!(
                    r.message.contains("node-role.kubernetes.io/worker"),
                    "{}",
                    r.message
                );
                assert!(!r.retry);
            }
            other => panic!("expected Reject, got {other:?}"),
        }
        spec.mode = NodeMode::Companion;
        assert!(matches!(
            plan(observed(&spec, 2), None, ENDPOINT, &Overrides::default()),
            ConfigPlan::Apply { .. }
        ));
    }

    #[test]
    fn node_restriction_rules() {
        for allowed in [
            "team",
            "example.com/rack",
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "kubelet.kubernetes.io/x",
            "topology.kubernetes.io/zone",
        ] {
            assert_eq!(forbidden_for_nodes(allowed), None, "{allowed}");
        }
        for forbidden in [
            "node-role.kubernetes.io/worker",
            "kubernetes.io/other",
            "example.k8s.io/x",
            "node-restriction.kubernetes.io/x",
        ] {
            assert!(forbidden_for_nodes(forbidden).is_some(), "{forbidden}");
        }
    }

    #[test]
    fn label_and_taint_syntax() {
        assert!(check_qualified_name("example.com/a-b_c.d").is_ok());
        assert!(check_qualified_name("Example.com/x").is_err());
        assert!(check_qualified_name("a/").is_err());
        assert!(check_qualified_name("-x").is_err());
        assert!(check_qualified_name(&"x".repeat(64)).is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2").is_ok());
        assert!(check_label_value("bad value").is_err());

        let mut pods = PodsSpec {
            taints: vec![NodeTaint {
                key: "dedicated".into(),
                value: Some("a b".into()),
                effect: TaintEffect::NoSchedule,
            }],
            ..Default::default()
        };
        let err = validate_pods(&pods).expect_err("bad taint value");
        assert!(err.message.contains("dedicated"), "{}", err.message);

        pods.taints.clear();
        pods.labels = BTreeMap::from([(AGENT_MANAGED_LABEL.to_string(), "false".to_string())]);
        assert!(validate_pods(&pods).is_err());

        let pods = PodsSpec {
            eviction_hard: BTreeMap::from([("memory.available".to_string(), "-1Mi".to_string())]),
            ..Default::default()
        };
        let err = validate_pods(&pods).expect_err("a negative eviction threshold");
        assert_eq!(err.reason, "InvalidNodeSettings");
        assert!(
            err.message.contains("evictionHard memory.available"),
            "{}",
            err.message
        );

        let pods = PodsSpec {
            image_gc_high_threshold_percent: 70,
            ..Default::default()
        };
        let err = validate_pods(&pods).expect_err("low threshold above the high one");
        assert_eq!(err.reason, "InvalidNodeSettings");
        assert!(
            err.message.contains("imageGCLowThresholdPercent 80"),
            "{}",
            err.message
        );
    }

    #[test]
    fn runtime_unreachable_names_the_endpoint() {
        let r = Rejection::runtime_unreachable("unix:///dead.sock", "connection refused");
        assert_eq!(r.reason, "RuntimeUnreachable");
        assert!(
            r.message.contains("unix:///dead.sock") && r.message.contains("connection refused")
        );
        assert!(r.retry);
    }
}
