//! A container's environment, resolved as the kubelet's
//! `makeEnvironmentVariables`: service links, then `envFrom`, then `env` in
//! order with `$(VAR)` expansion and the downward API, ConfigMaps and Secrets.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    Container, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector, Service,
};

use crate::pods::cri_config::error::ConfigError;
use crate::pods::cri_config::quantity::{self, Amount};

/// The ConfigMaps' `data` and Secrets' `data` of the pod's namespace that its
/// containers reference, by name; `None` (or no entry) means not found.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

/// What the downward API reads that is not in the Pod spec.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    /// The sandbox's primary IP.
    pub pod_ip: Option<&'a str>,
    /// All the sandbox's IPs, primary first.
    pub pod_ips: &'a [String],
    /// The node's primary IP.
    pub host_ip: Option<&'a str>,
    /// Stand-ins for a missing `limits.cpu` / `limits.memory` /
    /// `limits.ephemeral-storage` (the kubelet's `defaultPodLimitsForDownwardAPI`).
    pub node_allocatable_milli_cpu: i64,
    pub node_allocatable_memory: i64,
    pub node_allocatable_ephemeral_storage: i64,
}

/// The `kubernetes` Service of `default` is in every pod's environment.
const MASTER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// ConfigMaps the pod's containers read through `env` or `envFrom`.
pub fn referenced_config_maps(pod: &Pod) -> BTreeSet<String> {
    referenced(
        pod,
        |source| source.config_map_key_ref.as_ref().map(|r| r.name.clone()),
        |from| from.config_map_ref.as_ref().map(|r| r.name.clone()),
    )
}

/// Secrets the pod's containers read through `env` or `envFrom`.
pub fn referenced_secrets(pod: &Pod) -> BTreeSet<String> {
    referenced(
        pod,
        |source| source.secret_key_ref.as_ref().map(|r| r.name.clone()),
        |from| from.secret_ref.as_ref().map(|r| r.name.clone()),
    )
}

fn referenced(
    pod: &Pod,
    from_env: impl Fn(&EnvVarSource) -> Option<String>,
    from_env_from: impl Fn(&k8s_openapi::api::core::v1::EnvFromSource) -> Option<String>,
) -> BTreeSet<String> {
    // Ephemeral containers have their own env too.
    let ephemeral = pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|e| (&e.env, &e.env_from));
    all_containers(pod)
        .map(|c| (&c.env, &c.env_from))
        .chain(ephemeral)
        .flat_map(|(env, env_from)| {
            let env = env
                .iter()
                .flatten()
                .filter_map(|e| e.value_from.as_ref().and_then(&from_env));
            let env_from = env_from.iter().flatten().filter_map(&from_env_from);
            env.chain(env_from).collect::<Vec<_>>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Init containers and containers of the pod.
pub(crate) fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// The service-link variables for a pod in `namespace`, as the kubelet's
/// `envvars.FromServices`: those of the `kubernetes` Service of `default`
/// always, those of the namespace's Services when `enable_service_links`.
/// Services without a cluster IP (headless, ExternalName) have none.
pub fn service_env(
    services: &[Service],
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        let ns = service.metadata.namespace.as_deref().unwrap_or("default");
        let Some(name) = service.metadata.name.as_deref() else {
            continue;
        };
        if (ns, name) == MASTER_SERVICE {
            by_name.entry(name).or_insert(service);
        } else if ns == namespace && enable_service_links {
            by_name.insert(name, service);
        }
    }
    by_name
        .into_iter()
        .flat_map(|(name, service)| service_links(name, service))
        .collect()
}

fn service_links(name: &str, service: &Service) -> Vec<(String, String)> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ip.is_empty() || ip == "None" || ports.is_empty() {
        return Vec::new();
    }
    let prefix = env_name(name);
    let mut vars = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()),
    ];
    for port in ports {
        if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)),
                port.port.to_string(),
            ));
        }
    }
    // Docker-link style variables; the first port also gives FOO_PORT.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let url = format!("{}://{host}:{}", protocol.to_lowercase(), port.port);
        if i == 0 {
            vars.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        vars.push((format!("{port_prefix}_PROTO"), protocol.to_lowercase()));
        vars.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        vars.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        vars.insert(vars.len() - 3, (port_prefix, url));
    }
    vars
}

fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The container's environment. Later definitions win: service links, then
/// `envFrom` sources in order (with their prefix), then `env` entries in
/// order. A `value` expands `$(VAR)` against what is defined before it.
/// Missing optional ConfigMaps, Secrets or keys leave the variable out; a
/// missing required one is a [`ConfigError`].
pub fn container_env(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts<'_>,
    sources: &EnvSources,
    service_env: &[(String, String)],
) -> Result<Vec<cri::KeyValue>, ConfigError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = EnvList::default();
    for (key, value) in service_env {
        env.set(key, value.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let pairs: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match lookup(&sources.config_maps, &r.name) {
                Some(data) => data.clone().into_iter().collect(),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(ConfigError::ConfigMapNotFound {
                        name: r.name.clone(),
                    })
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match lookup(&sources.secrets, &r.name) {
                Some(data) => data
                    .iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(ConfigError::SecretNotFound {
                        name: r.name.clone(),
                    })
                }
            }
        } else {
            continue;
        };
        for (key, value) in pairs {
            let key = format!("{prefix}{key}");
            if is_env_name(&key) {
                env.set(&key, value);
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (var.value.as_deref(), var.value_from.as_ref()) {
            (Some(value), _) if !value.is_empty() => expand(value, |name| env.get(name)),
            (_, Some(source)) => {
                match resolve_source(pod, container, namespace, facts, sources, source)? {
                    Some(value) => value,
                    None => continue,
                }
            }
            _ => String::new(),
        };
        env.set(&var.name, value);
    }
    Ok(env
        .vars
        .into_iter()
        .map(|(key, value)| cri::KeyValue { key, value })
        .collect())
}

fn lookup<'a, T>(map: &'a BTreeMap<String, Option<T>>, name: &str) -> Option<&'a T> {
    map.get(name).and_then(Option::as_ref)
}

/// Whether a key can be an environment variable at all: the API's relaxed
/// rule (printable ASCII without `=`), which the kubelet no longer narrows.
fn is_env_name(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// `None` when an optional source is missing (the variable is left out).
fn resolve_source(
    pod: &Pod,
    container: &Container,
    namespace: &str,
    facts: &PodFacts<'_>,
    sources: &EnvSources,
    source: &EnvVarSource,
) -> Result<Option<String>, ConfigError> {
    if let Some(field) = &source.field_ref {
        return field_value(pod, facts, field).map(Some);
    }
    if let Some(resource) = &source.resource_field_ref {
        return resource_value(pod, container, facts, resource).map(Some);
    }
    if let Some(r) = &source.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(data) = lookup(&sources.config_maps, &r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::ConfigMapNotFound {
                    name: r.name.clone(),
                })
            };
        };
        return match data.get(&r.key) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError::ConfigMapKeyNotFound {
                key: r.key.clone(),
                namespace: namespace.to_string(),
                name: r.name.clone(),
            }),
        };
    }
    if let Some(r) = &source.secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(data) = lookup(&sources.secrets, &r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::SecretNotFound {
                    name: r.name.clone(),
                })
            };
        };
        return match data.get(&r.key) {
            Some(value) => Ok(Some(String::from_utf8_lossy(value).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError::SecretKeyNotFound {
                key: r.key.clone(),
                namespace: namespace.to_string(),
                name: r.name.clone(),
            }),
        };
    }
    if source.file_key_ref.is_some() {
        return Err(ConfigError::Unsupported {
            what: "env valueFrom.fileKeyRef".to_string(),
        });
    }
    Ok(Some(String::new()))
}

/// The downward API's `fieldRef` for environment variables.
fn field_value(
    pod: &Pod,
    facts: &PodFacts<'_>,
    field: &ObjectFieldSelector,
) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = field.field_path.as_str();
    if let Some((map, key)) = subscript(path) {
        let map = match map {
            "metadata.labels" => meta.labels.as_ref(),
            "metadata.annotations" => meta.annotations.as_ref(),
            _ => return Err(ConfigError::UnsupportedFieldPath { path: path.into() }),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    let pod_ips: Vec<&str> = if facts.pod_ips.is_empty() {
        facts.pod_ip.into_iter().collect()
    } else {
        facts.pod_ips.iter().map(String::as_str).collect()
    };
    let text = |value: Option<&String>| value.cloned().unwrap_or_default();
    Ok(match path {
        "metadata.name" => text(meta.name.as_ref()),
        "metadata.namespace" => text(meta.namespace.as_ref()),
        "metadata.uid" => text(meta.uid.as_ref()),
        "spec.nodeName" => text(spec.and_then(|s| s.node_name.as_ref())),
        "spec.serviceAccountName" => text(spec.and_then(|s| s.service_account_name.as_ref())),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.unwrap_or_default().to_string(),
        "status.podIP" => pod_ips.first().copied().unwrap_or_default().to_string(),
        "status.podIPs" => pod_ips.join(","),
        _ => return Err(ConfigError::UnsupportedFieldPath { path: path.into() }),
    })
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (map, rest) = path.split_once("['")?;
    Some((map, rest.strip_suffix("']")?))
}

/// The downward API's `resourceFieldRef`: a request or limit of this (or the
/// named) container over the divisor, rounded up; a missing cpu, memory or
/// ephemeral-storage limit reads as the node's allocatable.
fn resource_value(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts<'_>,
    field: &ResourceFieldSelector,
) -> Result<String, ConfigError> {
    let target = match field.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => all_containers(pod)
            .find(|c| c.name == name)
            .ok_or_else(|| ConfigError::ContainerNotFound { name: name.into() })?,
    };
    // The API server defaults the divisor to "0", which means 1, as absent.
    let divisor = match &field.divisor {
        None => Amount::from_units(1),
        Some(q) => Amount::of(q)
            .ok_or_else(|| ConfigError::InvalidQuantity {
                what: format!("the divisor of {}", field.resource),
                value: q.0.clone(),
            })
            .map(|d| {
                if d == Amount::default() {
                    Amount::from_units(1)
                } else {
                    d
                }
            })?,
    };
    let unsupported = || ConfigError::UnsupportedResource {
        resource: field.resource.clone(),
    };
    let (kind, name) = field.resource.split_once('.').ok_or_else(unsupported)?;
    let amount = match kind {
        "requests" => quantity::requests(target).get(name).copied(),
        "limits" => quantity::limits(target).get(name).copied().or(match name {
            "cpu" => Some(Amount::from_milli(facts.node_allocatable_milli_cpu)),
            "memory" => Some(Amount::from_units(facts.node_allocatable_memory)),
            "ephemeral-storage" => {
                Some(Amount::from_units(facts.node_allocatable_ephemeral_storage))
            }
            _ => None,
        }),
        _ => return Err(unsupported()),
    }
    .unwrap_or_default();
    let quotient = match name {
        "cpu" => ceil_ratio(amount.milli_ceil(), divisor.milli_ceil()),
        "memory" | "ephemeral-storage" => ceil_ratio(amount.value_ceil(), divisor.value_ceil()),
        _ if name.starts_with("hugepages-") => {
            ceil_ratio(amount.value_ceil(), divisor.value_ceil())
        }
        _ => return Err(unsupported()),
    };
    quotient
        .map(|q| q.to_string())
        .ok_or(ConfigError::InvalidQuantity {
            what: format!("the divisor of {}", field.resource),
            value: field
                .divisor
                .as_ref()
                .map(|q| q.0.clone())
                .unwrap_or_default(),
        })
}

fn ceil_ratio(amount: i64, divisor: i64) -> Option<i64> {
    if divisor <= 0 {
        return None;
    }
    Some(amount.div_euclid(divisor) + i64::from(amount.rem_euclid(divisor) != 0))
}

/// The kubelet's `$(VAR)` expansion: `$(NAME)` becomes the value `lookup`
/// gives, or stays as written when there is none; `$$` is a literal `$`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Variables in the order first defined; a redefinition replaces the value.
#[derive(Default)]
struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, key: &str, value: String) {
        match self.index.get(key) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(key.to_string(), self.vars.len());
                self.vars.push((key.to_string(), value));
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.vars[i].1.as_str())
    }
}
