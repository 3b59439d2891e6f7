//! The operator's defaults: the `config.yaml` key of the `nodeconfig-defaults` ConfigMap.
//!
//! ```yaml
//! nodeSelector: {}          # labels a Node must have to get a NodeConfig (empty = all Nodes)
//! spec: {}                  # NodeConfigSpec fields set on every NodeConfig, e.g. {proxy: {syncPeriod: 30s}}
//! agent:
//!   image: nodeconfig.local/node-agent:0.1.0
//!   version: 0.1.0          # optional; the image tag when absent
//!   maxUnavailable: 1       # or a percentage such as "10%"
//!   criEndpoint: unix:///run/containerd/containerd.sock   # may name $(NODE_NAME)
//!   apiServer: 10.0.0.1:6443  # optional: host:port the agent pods reach the API server at
//!   progressDeadline: 10m   # a rollout with no progress for this long is stopped
//! heartbeatGracePeriod: 50s
//! ```
//!
//! A missing ConfigMap, key or field means the value above. Unknown fields are refused, so a
//! typo is reported rather than silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nodeconfig_crds::NodeConfigSpec;
use serde::Deserialize;
use serde_json::{Map, Value};

use nodeconfig_crds::duration::{format_duration, parse_duration};

/// Name of the defaults ConfigMap in the operator's namespace.
pub const CONFIG_MAP_NAME: &str = "nodeconfig-defaults";
/// Key of the ConfigMap that holds the defaults.
pub const CONFIG_KEY: &str = "config.yaml";

const DEFAULT_AGENT_IMAGE: &str = "nodeconfig.local/node-agent:0.1.0";
const DEFAULT_CRI_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(50);
/// A Deployment's default progressDeadlineSeconds.
const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// What the operator applies to the cluster, from its ConfigMap.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// Labels a Node must carry to get a NodeConfig; empty selects every Node.
    pub node_selector: BTreeMap<String, String>,
    /// `NodeConfigSpec` fields (camelCase JSON) set on every NodeConfig; never nodeName or mode.
    pub spec: Map<String, Value>,
    /// The node-agent DaemonSet for Companion nodes.
    pub agent: AgentDefaults,
    /// How long an agent's Lease may go unrenewed before its NodeConfig turns Ready=Unknown.
    pub heartbeat_grace_period: Duration,
}

/// The node agent's rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentDefaults {
    pub image: String,
    /// Shown as the pods' `app.kubernetes.io/version` label.
    pub version: String,
    pub max_unavailable: IntOrString,
    /// The container runtime's socket on Companion nodes, as the agent pod's CRI endpoint
    /// (`unix://` path on the host; `$(NODE_NAME)` in it stands for the node's name).
    pub cri_endpoint: String,
    /// `host:port` of the API server for the agent pods, instead of the `kubernetes`
    /// Service's ClusterIP: on a node without kube-proxy that address works only once the
    /// agent itself programs it (as Cilium's `k8sServiceHost` and `k8sServicePort`).
    pub api_server: Option<ApiServer>,
    /// A rollout that updates no more agents and makes none more available for this long is
    /// stopped (the DaemonSet turns `OnDelete`) until the image or version changes.
    pub progress_deadline: Duration,
}

/// An API server address the agent pods reach directly.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiServer {
    /// A host name or IP address (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

impl AgentDefaults {
    /// The host directory mounted into the agent pod for the CRI socket: the socket's
    /// directory, cut before the first part that names a variable (`$(NODE_NAME)`), so one
    /// DaemonSet serves nodes whose sockets differ by node name. `None` for an endpoint that
    /// is not a `unix://` path under a directory other than `/`.
    pub fn cri_socket_host_dir(&self) -> Option<String> {
        let path = self.cri_endpoint.strip_prefix("unix://")?;
        if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return None;
        }
        let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        parts.pop()?; // the socket itself
        let fixed: Vec<&str> = parts
            .into_iter()
            .take_while(|p| !p.contains("$("))
            .collect();
        (!fixed.is_empty()).then(|| format!("/{}", fixed.join("/")))
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            node_selector: BTreeMap::new(),
            spec: Map::new(),
            agent: AgentDefaults {
                image: DEFAULT_AGENT_IMAGE.to_string(),
                version: version_of_image(DEFAULT_AGENT_IMAGE),
                max_unavailable: IntOrString::Int(1),
                cri_endpoint: DEFAULT_CRI_ENDPOINT.to_string(),
                api_server: None,
                progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            },
            heartbeat_grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

impl Defaults {
    /// Defaults from a ConfigMap's data; no data or no `config.yaml` key means the built-in defaults.
    pub fn from_config_map_data(
        data: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, DefaultsError> {
        match data.and_then(|d| d.get(CONFIG_KEY)) {
            Some(yaml) => Self::from_yaml(yaml),
            None => Ok(Self::default()),
        }
    }

    /// Parses and validates `config.yaml`.
    pub fn from_yaml(yaml: &str) -> Result<Self, DefaultsError> {
        let raw: Option<RawDefaults> =
            serde_yaml::from_str(yaml).map_err(|e| DefaultsError::Yaml(e.to_string()))?;
        let raw = raw.unwrap_or_default();
        let mut defaults = Self::default();

        if let Some(selector) = raw.node_selector {
            for (key, value) in &selector {
                if !is_label_key(key) || !is_label_value(value) {
                    return Err(invalid(
                        "nodeSelector",
                        format!("{key}={value} is not a valid label"),
                    ));
                }
            }
            defaults.node_selector = selector;
        }

        if let Some(spec) = raw.spec {
            defaults.spec = validate_spec(spec)?;
        }

        if let Some(agent) = raw.agent {
            if let Some(image) = agent.image {
                if image.is_empty() || image.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        "agent.image",
                        format!("{image:?} is not an image reference"),
                    ));
                }
                defaults.agent.version = version_of_image(&image);
                defaults.agent.image = image;
            }
            if let Some(version) = agent.version {
                if version.is_empty() || !is_label_value(&version) {
                    return Err(invalid(
                        "agent.version",
                        format!("{version:?} is not a valid label value"),
                    ));
                }
                defaults.agent.version = version;
            }
            if let Some(max_unavailable) = agent.max_unavailable {
                validate_max_unavailable(&max_unavailable)?;
                defaults.agent.max_unavailable = max_unavailable;
            }
            if let Some(endpoint) = agent.cri_endpoint {
                defaults.agent.cri_endpoint = endpoint;
                if defaults.agent.cri_socket_host_dir().is_none() {
                    return Err(invalid(
                        "agent.criEndpoint",
                        format!(
                            "{:?} must be a unix:// socket path in a directory below /",
                            defaults.agent.cri_endpoint
                        ),
                    ));
                }
            }
            if let Some(address) = agent.api_server {
                defaults.agent.api_server = Some(parse_api_server(&address)?);
            }
            if let Some(deadline) = agent.progress_deadline {
                let deadline = parse_duration(&deadline)
                    .map_err(|e| invalid("agent.progressDeadline", e.to_string()))?;
                if deadline < Duration::from_secs(10) {
                    return Err(invalid(
                        "agent.progressDeadline",
                        format!("{} is shorter than 10s", format_duration(deadline)),
                    ));
                }
                defaults.agent.progress_deadline = deadline;
            }
        }

        if let Some(grace) = raw.heartbeat_grace_period {
            let period = parse_duration(&grace)
                .map_err(|e| invalid("heartbeatGracePeriod", e.to_string()))?;
            if period < Duration::from_secs(1) {
                return Err(invalid(
                    "heartbeatGracePeriod",
                    format!("{} is shorter than 1s", format_duration(period)),
                ));
            }
            defaults.heartbeat_grace_period = period;
        }
        Ok(defaults)
    }
}

/// Why a ConfigMap's defaults were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultsError {
    #[error("{CONFIG_KEY} is not valid YAML for the defaults: {0}")]
    Yaml(String),
    #[error("{CONFIG_KEY}: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: String) -> DefaultsError {
    DefaultsError::Invalid { field, reason }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDefaults {
    node_selector: Option<BTreeMap<String, String>>,
    spec: Option<Map<String, Value>>,
    agent: Option<RawAgent>,
    heartbeat_grace_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAgent {
    image: Option<String>,
    version: Option<String>,
    max_unavailable: Option<IntOrString>,
    cri_endpoint: Option<String>,
    api_server: Option<String>,
    progress_deadline: Option<String>,
}

/// `host:port`, `[v6]:port`.
fn parse_api_server(address: &str) -> Result<ApiServer, DefaultsError> {
    let refuse = || {
        invalid(
            "agent.apiServer",
            format!("{address:?} is not host:port (an IPv6 address in brackets)"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(refuse)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(refuse)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
            .ok_or_else(refuse)?,
        None if !host.is_empty()
            && !host.contains(':')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
        {
            host
        }
        None => return Err(refuse()),
    };
    Ok(ApiServer {
        host: host.to_string(),
        port,
    })
}

/// The spec fields must be NodeConfigSpec fields of the right types, and never the ones the
/// operator derives per Node. Checked here so one bad ConfigMap does not fail 1,000 applies.
fn validate_spec(spec: Map<String, Value>) -> Result<Map<String, Value>, DefaultsError> {
    for derived in ["nodeName", "mode"] {
        if spec.contains_key(derived) {
            return Err(invalid(
                "spec",
                format!("{derived} is set per Node by the operator and cannot be a default"),
            ));
        }
    }
    let mut probe = spec.clone();
    probe.insert("nodeName".into(), Value::String("probe".into()));
    let typed: NodeConfigSpec =
        serde_json::from_value(Value::Object(probe)).map_err(|e| invalid("spec", e.to_string()))?;
    let known = serde_json::to_value(&typed).map_err(|e| invalid("spec", e.to_string()))?;
    if let Some(path) = first_unknown_field(&Value::Object(spec.clone()), &known, String::new()) {
        return Err(invalid("spec", format!("unknown field {path}")));
    }
    Ok(spec)
}

/// The first key path of `given` that the typed round trip `known` does not have.
fn first_unknown_field(given: &Value, known: &Value, path: String) -> Option<String> {
    let (Value::Object(given), Value::Object(known)) = (given, known) else {
        return None;
    };
    given.iter().find_map(|(key, value)| {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match known.get(key) {
            // Optional fields set to null serialize as absent; null is fine.
            None if value.is_null() => None,
            None => Some(here),
            Some(known_value) => first_unknown_field(value, known_value, here),
        }
    })
}

fn validate_max_unavailable(value: &IntOrString) -> Result<(), DefaultsError> {
    let ok = match value {
        IntOrString::Int(n) => *n >= 1,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=100).contains(&n)),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "agent.maxUnavailable",
            format!("{value:?} must be a count of at least 1 or a percentage from 1% to 100%"),
        ))
    }
}

/// The version an image reference names: its tag, else a short digest, else `latest`.
fn version_of_image(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        let hex = digest.rsplit(':').next().unwrap_or(digest);
        return hex.chars().take(12).collect();
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, tag)) if is_label_value(tag) && !tag.is_empty() => tag.to_string(),
        _ => "latest".to_string(),
    }
}

/// A label value: at most 63 characters, alphanumerics with `-_.` inside.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || (value.len() <= 63 && is_label_name(value))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && name.len() <= 63 && is_label_name(name)
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(yaml: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(CONFIG_KEY.to_string(), yaml.to_string())])
    }

    #[test]
    fn missing_config_map_key_or_document_means_built_in_defaults() {
        assert_eq!(
            Defaults::from_config_map_data(None),
            Ok(Defaults::default())
        );
        assert_eq!(
            Defaults::from_config_map_data(Some(&BTreeMap::new())),
            Ok(Defaults::default())
        );
        for yaml in ["", "# only a comment\n", "{}", "null"] {
            assert_eq!(
                Defaults::from_config_map_data(Some(&data(yaml))),
                Ok(Defaults::default()),
                "{yaml:?}"
            );
        }
    }

    #[test]
    fn built_in_defaults_match_the_contract() {
        let d = Defaults::default();
        assert!(d.node_selector.is_empty());
        assert!(d.spec.is_empty());
        assert_eq!(d.agent.image, "nodeconfig.local/node-agent:0.1.0");
        assert_eq!(d.agent.version, "0.1.0");
        assert_eq!(d.agent.max_unavailable, IntOrString::Int(1));
        assert_eq!(
            d.agent.cri_endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(d.agent.api_server, None);
        assert_eq!(d.heartbeat_grace_period, Duration::from_secs(50));
    }

    #[test]
    fn cri_endpoint_and_api_server_are_read() {
        let d = Defaults::from_yaml(
            "agent:\n  criEndpoint: unix:///run/e2e/nodes/$(NODE_NAME)/containerd.sock\n  apiServer: 10.200.0.1:6443\n",
        )
        .expect("valid");
        assert_eq!(
            d.agent.cri_endpoint,
            "unix:///run/e2e/nodes/$(NODE_NAME)/containerd.sock"
        );
        assert_eq!(
            d.agent.api_server,
            Some(ApiServer {
                host: "10.200.0.1".into(),
                port: 6443
            })
        );
        let v6 = Defaults::from_yaml("agent: {apiServer: \"[fd00::1]:443\"}").expect("valid");
        assert_eq!(
            v6.agent.api_server.map(|a| (a.host, a.port)),
            Some(("fd00::1".to_string(), 443))
        );
    }

    #[test]
    fn the_cri_socket_directory_stops_before_the_first_variable() {
        let cases = [
            (
                "unix:///run/containerd/containerd.sock",
                Some("/run/containerd"),
            ),
            (
                "unix:///run/e2e/nodes/$(NODE_NAME)/containerd.sock",
                Some("/run/e2e/nodes"),
            ),
            (
                "unix:///run/k3s/containerd/containerd.sock",
                Some("/run/k3s/containerd"),
            ),
            ("unix:///containerd.sock", None),
            ("unix:///$(NODE_NAME)/containerd.sock", None),
            ("unix://run/containerd.sock", None),
            ("unix:///run/../containerd.sock", None),
            ("tcp://127.0.0.1:1234", None),
        ];
        for (endpoint, want) in cases {
            let agent = AgentDefaults {
                cri_endpoint: endpoint.into(),
                ..Defaults::default().agent
            };
            assert_eq!(agent.cri_socket_host_dir().as_deref(), want, "{endpoint}");
        }
    }

    #[test]
    fn full_document_is_read() {
        let yaml = r#"
nodeSelector:
  node-role.kubernetes.io/worker: ""
spec:
  proxy: {syncPeriod: 10s, masqueradeAll: true}
  runtime: {prePullImages: [busybox:1.36]}
agent:
  image: registry.example/nodeconfig/node-agent:0.2.0
  maxUnavailable: "25%"
heartbeatGracePeriod: 1m
"#;
        let d = Defaults::from_yaml(yaml).expect("valid");
        assert_eq!(
            d.node_selector,
            BTreeMap::from([("node-role.kubernetes.io/worker".into(), String::new())])
        );
        assert_eq!(
            Value::Object(d.spec),
            json!({"proxy": {"syncPeriod": "10s", "masqueradeAll": true}, "runtime": {"prePullImages": ["busybox:1.36"]}})
        );
        assert_eq!(
            d.agent.image,
            "registry.example/nodeconfig/node-agent:0.2.0"
        );
        assert_eq!(d.agent.version, "0.2.0");
        assert_eq!(d.agent.max_unavailable, IntOrString::String("25%".into()));
        assert_eq!(d.heartbeat_grace_period, Duration::from_secs(60));
    }

    #[test]
    fn absent_fields_keep_their_defaults() {
        let d = Defaults::from_yaml("agent:\n  maxUnavailable: 3\n").expect("valid");
        assert_eq!(d.agent.image, DEFAULT_AGENT_IMAGE);
        assert_eq!(d.agent.progress_deadline, Duration::from_secs(600));
        assert_eq!(d.agent.max_unavailable, IntOrString::Int(3));
        assert_eq!(d.heartbeat_grace_period, DEFAULT_GRACE_PERIOD);
        let d = Defaults::from_yaml("agent:\n  progressDeadline: 45s\n").expect("valid");
        assert_eq!(d.agent.progress_deadline, Duration::from_secs(45));
    }

    #[test]
    fn version_follows_the_image_unless_given() {
        let cases = [
            ("agent: {image: a/b:1.2.3}", "1.2.3"),
            ("agent: {image: localhost:5000/b:v2}", "v2"),
            ("agent: {image: localhost:5000/b}", "latest"),
            (
                "agent: {image: b@sha256:0123456789abcdef0123}",
                "0123456789ab",
            ),
            ("agent: {image: a/b:1.2.3, version: 1.2.3-rc1}", "1.2.3-rc1"),
        ];
        for (yaml, version) in cases {
            assert_eq!(
                Defaults::from_yaml(yaml).expect(yaml).agent.version,
                version,
                "{yaml}"
            );
        }
    }

    #[test]
    fn invalid_documents_are_refused_with_the_field_named() {
        let cases = [
            ("nodeSelector: [a, b]", "nodeSelector"),
            ("spec: {nodeName: x}", "nodeName"),
            ("spec: {mode: Kubelet}", "mode"),
            ("spec: {proxy: {syncPeriod: 30}}", "spec"),
            ("spec: {proxy: {mode: ipvs}}", "spec"),
            ("spec: {proxy: {syncPerod: 30s}}", "proxy.syncPerod"),
            ("spec: {pods: {maxPods: many}}", "spec"),
            ("spec: [1]", "spec"),
            ("agent: {image: ''}", "agent.image"),
            ("agent: {maxUnavailable: 0}", "agent.maxUnavailable"),
            ("agent: {maxUnavailable: '150%'}", "agent.maxUnavailable"),
            ("agent: {maxUnavailable: lots}", "agent.maxUnavailable"),
            ("agent: {version: 'not a label'}", "agent.version"),
            ("agent: {imag: x}", "imag"),
            ("agent: {criEndpoint: /run/c.sock}", "agent.criEndpoint"),
            (
                "agent: {criEndpoint: 'unix:///c.sock'}",
                "agent.criEndpoint",
            ),
            ("agent: {apiServer: 10.0.0.1}", "agent.apiServer"),
            ("agent: {apiServer: '10.0.0.1:0'}", "agent.apiServer"),
            ("agent: {apiServer: 'fd00::1:443'}", "agent.apiServer"),
            ("agent: {apiServer: '[nope]:443'}", "agent.apiServer"),
            ("agent: {progressDeadline: soon}", "agent.progressDeadline"),
            ("agent: {progressDeadline: 5s}", "agent.progressDeadline"),
            ("heartbeatGracePeriod: soon", "heartbeatGracePeriod"),
            ("heartbeatGracePeriod: 10ms", "heartbeatGracePeriod"),
            ("heartbeatGracePeriode: 50s", "heartbeatGracePeriode"),
            ("nodeSelector: {'bad key!': x}", "nodeSelector"),
            ("spec: {proxy: [", "YAML"),
        ];
        for (yaml, mention) in cases {
            let err = Defaults::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(
                err.contains(mention),
                "{yaml}: {err} should mention {mention}"
            );
        }
    }

    #[test]
    fn shipped_config_map_holds_the_built_in_defaults() {
        let manifest = include_str!("../../manifests/defaults-configmap.yaml");
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_yaml::from_str(manifest).expect("a ConfigMap");
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP_NAME));
        assert_eq!(
            Defaults::from_config_map_data(cm.data.as_ref()),
            Ok(Defaults::default())
        );
    }

    #[test]
    fn label_syntax() {
        for key in [
            "a",
            "app.kubernetes.io/name",
            "nodeconfig.dev/agent-managed",
            "A_b.c",
        ] {
            assert!(is_label_key(key), "{key}");
        }
        for key in ["", "/a", "a/", "-a", "a b", "Upper.Case/x", &"x".repeat(64)] {
            assert!(!is_label_key(key), "{key}");
        }
        for value in ["", "true", "0.1.0", "a-b_c"] {
            assert!(is_label_value(value), "{value}");
        }
        for value in ["-a", "a b", "a:b", &"x".repeat(64)] {
            assert!(!is_label_value(value), "{value}");
        }
    }
}
