//! What the planner consumes: Services and EndpointSlices reduced to plain data.
//!
//! The conversions are pure and total: anything this proxy cannot program (or
//! must not, such as another proxy's Services) comes back as a [`Skip`] naming
//! the object and the reason, so the caller can warn and count it, and the rest
//! of the objects still sync.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Services carrying this label belong to another proxy (as kube-proxy honours it).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// sessionAffinityConfig.clientIP.timeoutSeconds when unset (3 hours), as in the API.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;
/// Upper bound of timeoutSeconds in the API (one day).
const MAX_AFFINITY_SECONDS: u32 = 86_400;

/// A transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling; unset means TCP.
    fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// `-p` / `-m` name, also the protocol part of chain-name hashes (as kube-proxy).
    pub fn iptables_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service: the unit the proxy programs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
///
/// The strings are shared (`Arc<str>`): the proxy keeps several copies of each
/// name (model keys, what each object contributed), and at 10,000 Services a
/// copy of its own string each cost megabytes of small allocations.
pub struct ServicePortName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The port's name; empty for a Service's single unnamed port.
    pub port: Arc<str>,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    /// `ns/name:port` (or `ns/name`), as kube-proxy prints it in comments and hashes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Whose endpoints a traffic policy uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// One service port as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// ClientIP affinity timeout in seconds; `None` without affinity.
    pub affinity_seconds: Option<u32>,
    pub internal_policy: TrafficPolicy,
    pub external_policy: TrafficPolicy,
    /// What reaches the Service from outside besides its NodePort. Boxed and
    /// `None` for most Services, so a plain ClusterIP port stays small.
    pub external: Option<Box<ExternalAccess>>,
}

/// A Service's external addresses (IPv4 only, as the rest of this proxy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalAccess {
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` of VIP-mode load balancers (an
    /// `ipMode: Proxy` load balancer sends its traffic to the NodePort instead).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges`: when set, only these sources may use
    /// the load balancer IPs.
    pub source_ranges: Vec<Ipv4Net>,
    /// `spec.healthCheckNodePort` of a LoadBalancer Service with
    /// `externalTrafficPolicy: Local`.
    pub health_check_node_port: Option<u16>,
}

impl ServicePort {
    /// Reached from outside the cluster network: a NodePort, an external IP or
    /// a load balancer IP (kube-proxy's ExternallyAccessible).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || self
                .external
                .as_ref()
                .is_some_and(|e| !e.external_ips.is_empty() || !e.load_balancer_ips.is_empty())
    }

    pub fn external_ips(&self) -> &[Ipv4Addr] {
        self.external.as_ref().map_or(&[], |e| &e.external_ips)
    }

    pub fn load_balancer_ips(&self) -> &[Ipv4Addr] {
        self.external.as_ref().map_or(&[], |e| &e.load_balancer_ips)
    }

    pub fn source_ranges(&self) -> &[Ipv4Net] {
        self.external.as_ref().map_or(&[], |e| &e.source_ranges)
    }

    pub fn health_check_node_port(&self) -> Option<u16> {
        self.external
            .as_ref()
            .and_then(|e| e.health_check_node_port)
    }
}

/// One endpoint of one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<Arc<str>>,
    /// Topology hints the EndpointSlice controller set (shared by the
    /// endpoint's ports); `None` without any.
    pub hints: Option<Arc<Hints>>,
}

/// Where an endpoint should preferably take traffic from (`hints`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// `forZones[].name`.
    pub zones: Vec<String>,
    /// `forNodes[].name`.
    pub nodes: Vec<String>,
}

impl Endpoint {
    /// The zones this endpoint is hinted for (empty: none).
    pub fn zone_hints(&self) -> &[String] {
        self.hints.as_ref().map_or(&[], |h| &h.zones)
    }

    /// The nodes this endpoint is hinted for (empty: none).
    pub fn node_hints(&self) -> &[String] {
        self.hints.as_ref().map_or(&[], |h| &h.nodes)
    }
}

impl Endpoint {
    /// `ip:port`, as DNAT and the SEP chain hash spell it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// The kind of object a skip refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Service,
    EndpointSlice,
}

/// Why an object, or a part of it, gets no rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `clusterIP: None`: clients resolve the endpoints themselves.
    Headless,
    ExternalName,
    /// Labelled for another proxy.
    OtherProxy(String),
    /// No clusterIP yet (the API server has not allocated one).
    NoClusterIp,
    BadClusterIp(String),
    /// Only IPv6 cluster IPs or addresses: not for the IPv4 table.
    Ipv6,
    BadPort {
        port: String,
        value: i32,
    },
    BadNodePort {
        port: String,
        value: i32,
    },
    UnknownProtocol(String),
    BadAffinityTimeout(i32),
    /// An EndpointSlice without `kubernetes.io/service-name`.
    NoServiceName,
    /// An EndpointSlice address type other than IPv4/IPv6 (FQDN).
    AddressType(String),
    BadEndpointAddress(String),
    /// Two service ports hash to one chain name; the later one is left out.
    ChainNameCollision(String),
}

impl SkipReason {
    /// A short label for metrics (`..._proxy_skipped_objects_total{reason=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::Headless => "headless",
            SkipReason::ExternalName => "external_name",
            SkipReason::OtherProxy(_) => "other_proxy",
            SkipReason::NoClusterIp => "no_cluster_ip",
            SkipReason::BadClusterIp(_) => "bad_cluster_ip",
            SkipReason::Ipv6 => "ipv6",
            SkipReason::BadPort { .. } => "bad_port",
            SkipReason::BadNodePort { .. } => "bad_node_port",
            SkipReason::UnknownProtocol(_) => "unknown_protocol",
            SkipReason::BadAffinityTimeout(_) => "bad_affinity_timeout",
            SkipReason::NoServiceName => "no_service_name",
            SkipReason::AddressType(_) => "address_type",
            SkipReason::BadEndpointAddress(_) => "bad_endpoint_address",
            SkipReason::ChainNameCollision(_) => "chain_name_collision",
        }
    }

    /// Malformed input, as opposed to objects skipped by design (headless,
    /// ExternalName, another proxy's, the other IP family): worth a warning.
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            SkipReason::Headless
                | SkipReason::ExternalName
                | SkipReason::OtherProxy(_)
                | SkipReason::NoClusterIp
                | SkipReason::Ipv6
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Headless => write!(f, "headless (clusterIP None)"),
            SkipReason::ExternalName => write!(f, "type ExternalName"),
            SkipReason::OtherProxy(name) => write!(f, "handled by service proxy {name:?}"),
            SkipReason::NoClusterIp => write!(f, "no clusterIP allocated"),
            SkipReason::BadClusterIp(ip) => write!(f, "bad clusterIP {ip:?}"),
            SkipReason::Ipv6 => write!(f, "IPv6 only, not in the IPv4 table"),
            SkipReason::BadPort { port, value } => {
                write!(f, "port {port:?}: bad port number {value}")
            }
            SkipReason::BadNodePort { port, value } => {
                write!(f, "port {port:?}: bad nodePort {value}")
            }
            SkipReason::UnknownProtocol(p) => write!(f, "unknown protocol {p:?}"),
            SkipReason::BadAffinityTimeout(t) => {
                write!(f, "bad sessionAffinity timeoutSeconds {t}")
            }
            SkipReason::NoServiceName => write!(f, "no {SERVICE_NAME_LABEL} label"),
            SkipReason::AddressType(t) => write!(f, "address type {t:?}"),
            SkipReason::BadEndpointAddress(a) => write!(f, "bad endpoint address {a:?}"),
            SkipReason::ChainNameCollision(chain) => {
                write!(f, "chain name {chain} already used by another service port")
            }
        }
    }
}

/// An object (or part of one) that got no rules, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub kind: ObjectKind,
    /// `namespace/name` of the object.
    pub object: String,
    pub reason: SkipReason,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind.as_str(), self.object, self.reason)
    }
}

/// Services and their endpoints, keyed by service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub services: BTreeMap<ServicePortName, ServicePort>,
    /// Endpoints by service port, sorted by address, without duplicates.
    pub endpoints: BTreeMap<ServicePortName, Vec<Endpoint>>,
    pub skipped: Vec<Skip>,
}

/// `namespace/name`: how skips name an object, and how the inputs key it.
pub(super) fn namespaced(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The programmable ports of one Service, and what was skipped.
pub fn service_ports(svc: &Service) -> (Vec<ServicePort>, Vec<Skip>) {
    let object = namespaced(&svc.metadata);
    let skip = |reason| Skip {
        kind: ObjectKind::Service,
        object: object.clone(),
        reason,
    };
    let whole = |reason| (Vec::new(), vec![skip(reason)]);

    if let Some(proxy) = svc
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
    {
        return whole(SkipReason::OtherProxy(proxy.clone()));
    }
    let Some(spec) = svc.spec.as_ref() else {
        return whole(SkipReason::NoClusterIp);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return whole(SkipReason::ExternalName);
    }
    let cluster_ip = match ipv4_cluster_ip(spec.cluster_ip.as_deref(), spec.cluster_ips.as_deref())
    {
        Ok(ip) => ip,
        Err(reason) => return whole(reason),
    };
    let affinity_seconds = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        match timeout {
            None => Some(DEFAULT_AFFINITY_SECONDS),
            Some(t) => match u32::try_from(t) {
                Ok(t) if (1..=MAX_AFFINITY_SECONDS).contains(&t) => Some(t),
                _ => return whole(SkipReason::BadAffinityTimeout(t)),
            },
        }
    } else {
        None
    };
    let policy = |p: Option<&str>| {
        if p == Some("Local") {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        }
    };
    let internal_policy = policy(spec.internal_traffic_policy.as_deref());
    let external_policy = policy(spec.external_traffic_policy.as_deref());
    let node_ports_apply = matches!(
        spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    );
    let external = external_access(svc);

    let namespace: Arc<str> = svc.metadata.namespace.as_deref().unwrap_or_default().into();
    let name: Arc<str> = svc.metadata.name.as_deref().unwrap_or_default().into();
    let mut ports = Vec::new();
    let mut skipped = Vec::new();
    for p in spec.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            skipped.push(skip(SkipReason::UnknownProtocol(
                p.protocol.clone().unwrap_or_default(),
            )));
            continue;
        };
        let Some(port) = nonzero_port(p.port) else {
            skipped.push(skip(SkipReason::BadPort {
                port: port_name,
                value: p.port,
            }));
            continue;
        };
        let node_port = match p.node_port.filter(|_| node_ports_apply) {
            None => None,
            Some(value) => match nonzero_port(value) {
                Some(np) => Some(np),
                None => {
                    skipped.push(skip(SkipReason::BadNodePort {
                        port: port_name,
                        value,
                    }));
                    continue;
                }
            },
        };
        ports.push(ServicePort {
            name: ServicePortName {
                namespace: namespace.clone(),
                name: name.clone(),
                port: port_name.into(),
                protocol,
            },
            cluster_ip,
            port,
            node_port,
            affinity_seconds,
            internal_policy,
            external_policy,
            external: external.clone(),
        });
    }
    (ports, skipped)
}

/// The Service's external IPs, VIP-mode load balancer IPs, source ranges and
/// health check port, IPv4 only; `None` when it has none of them. Addresses
/// that do not parse are left out (the API server validates them), and source
/// ranges may carry the spaces the API's validation lets through.
fn external_access(svc: &Service) -> Option<Box<ExternalAccess>> {
    let spec = svc.spec.as_ref()?;
    let ipv4 = |text: &str| match text.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if !ip.is_unspecified() => Some(ip),
        _ => None,
    };
    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ipv4(ip))
        .collect();
    let load_balancer_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|ing| ing.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ing| ing.ip.as_deref().and_then(ipv4))
        .collect();
    let source_ranges = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|cidr| match cidr.trim().parse::<IpNet>() {
            Ok(IpNet::V4(net)) => Some(net.trunc()),
            _ => None,
        })
        .collect();
    // kube-proxy's NeedsHealthCheck: a LoadBalancer whose external traffic stays local.
    let health_check_node_port = (spec.type_.as_deref() == Some("LoadBalancer")
        && spec.external_traffic_policy.as_deref() == Some("Local"))
    .then_some(spec.health_check_node_port)
    .flatten()
    .and_then(nonzero_port);
    let access = ExternalAccess {
        external_ips,
        load_balancer_ips,
        source_ranges,
        health_check_node_port,
    };
    (access != ExternalAccess::default()).then(|| Box::new(access))
}

fn nonzero_port(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|&p| p != 0)
}

/// The Service's IPv4 cluster IP: spec.clusterIPs holds one per family
/// (the primary first), spec.clusterIP the primary alone.
fn ipv4_cluster_ip(primary: Option<&str>, all: Option<&[String]>) -> Result<Ipv4Addr, SkipReason> {
    let primary = primary.unwrap_or("");
    if primary == "None" {
        return Err(SkipReason::Headless);
    }
    let mut candidates: Vec<&str> = all.unwrap_or(&[]).iter().map(String::as_str).collect();
    if candidates.is_empty() && !primary.is_empty() {
        candidates.push(primary);
    }
    if candidates.is_empty() {
        return Err(SkipReason::NoClusterIp);
    }
    let mut saw_v6 = false;
    for c in &candidates {
        match c.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if !ip.is_unspecified() => return Ok(ip),
            Ok(IpAddr::V6(_)) => saw_v6 = true,
            _ => return Err(SkipReason::BadClusterIp((*c).to_string())),
        }
    }
    if saw_v6 {
        Err(SkipReason::Ipv6)
    } else {
        Err(SkipReason::BadClusterIp(candidates.join(",")))
    }
}

/// The endpoints one EndpointSlice contributes, per service port, and what was skipped.
///
/// Ports are matched to the Service's by name and protocol (the EndpointSlice
/// controller has already resolved named target ports to numbers per endpoint
/// group), so a port name here is the Service port's name.
pub fn slice_endpoints(slice: &EndpointSlice) -> (Vec<(ServicePortName, Endpoint)>, Vec<Skip>) {
    let object = namespaced(&slice.metadata);
    let skip = |reason| Skip {
        kind: ObjectKind::EndpointSlice,
        object: object.clone(),
        reason,
    };
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return (Vec::new(), vec![skip(SkipReason::NoServiceName)]);
    };
    match slice.address_type.as_str() {
        "IPv4" => {}
        "IPv6" => return (Vec::new(), vec![skip(SkipReason::Ipv6)]),
        other => {
            return (
                Vec::new(),
                vec![skip(SkipReason::AddressType(other.to_string()))],
            )
        }
    }
    let namespace: Arc<str> = slice
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .into();
    let service: Arc<str> = service.as_str().into();
    let mut skipped = Vec::new();
    let mut ports = Vec::new();
    for p in slice.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            skipped.push(skip(SkipReason::UnknownProtocol(
                p.protocol.clone().unwrap_or_default(),
            )));
            continue;
        };
        let value = p.port.unwrap_or(0);
        let Some(number) = nonzero_port(value) else {
            skipped.push(skip(SkipReason::BadPort {
                port: port_name,
                value,
            }));
            continue;
        };
        let name = ServicePortName {
            namespace: namespace.clone(),
            name: service.clone(),
            port: port_name.into(),
            protocol,
        };
        ports.push((name, number));
    }

    let mut out = Vec::new();
    for ep in slice.endpoints.iter().flatten() {
        let conditions = ep.conditions.as_ref();
        // As the API documents: unknown readiness means ready, unknown serving means ready.
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        // All addresses of one endpoint are fungible; the first is the one used.
        let Some(address) = ep.addresses.first() else {
            continue;
        };
        let ip = match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if !ip.is_unspecified() && !ip.is_broadcast() => ip,
            Ok(IpAddr::V6(_)) => {
                skipped.push(skip(SkipReason::Ipv6));
                continue;
            }
            _ => {
                skipped.push(skip(SkipReason::BadEndpointAddress(address.clone())));
                continue;
            }
        };
        let node_name: Option<Arc<str>> = ep.node_name.as_deref().map(Into::into);
        let hints = ep.hints.as_ref().and_then(|h| {
            let hints = Hints {
                zones: h
                    .for_zones
                    .iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect(),
                nodes: h
                    .for_nodes
                    .iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect(),
            };
            (hints != Hints::default()).then(|| Arc::new(hints))
        });
        for (name, port) in &ports {
            out.push((
                name.clone(),
                Endpoint {
                    ip,
                    port: *port,
                    ready,
                    serving,
                    terminating,
                    node_name: node_name.clone(),
                    hints: hints.clone(),
                },
            ));
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, ServicePort as K8sServicePort, ServiceSpec, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as K8sEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        }
    }

    fn svc(cluster_ip: &str, ports: Vec<K8sServicePort>) -> Service {
        Service {
            metadata: meta("default", "web", &[]),
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(name: &str, number: i32, protocol: &str) -> K8sServicePort {
        K8sServicePort {
            name: Some(name.into()),
            port: number,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    #[test]
    fn converts_ports_affinity_and_policies() {
        let mut s = svc(
            "10.96.0.10",
            vec![
                port("dns", 53, "UDP"),
                port("dns-tcp", 53, "TCP"),
                port("s", 9, "SCTP"),
            ],
        );
        let spec = s.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        spec.internal_traffic_policy = Some("Local".into());
        let (ports, skips) = service_ports(&s);
        assert!(skips.is_empty(), "{skips:?}");
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[0].name.to_string(), "default/web:dns");
        assert_eq!(ports[0].name.protocol, Protocol::Udp);
        assert_eq!(ports[2].name.protocol, Protocol::Sctp);
        assert_eq!(ports[0].affinity_seconds, Some(60));
        assert_eq!(ports[0].internal_policy, TrafficPolicy::Local);
        assert_eq!(ports[0].external_policy, TrafficPolicy::Cluster);
        assert_eq!(ports[0].node_port, None);
    }

    #[test]
    fn node_ports_only_for_node_port_and_load_balancer_types() {
        let mut p = port("http", 80, "TCP");
        p.node_port = Some(30080);
        let mut s = svc("10.96.0.10", vec![p]);
        assert_eq!(service_ports(&s).0[0].node_port, None);
        s.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        assert_eq!(service_ports(&s).0[0].node_port, Some(30080));
    }

    #[test]
    fn external_addresses_and_the_health_check_port() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
        let mut p = port("http", 80, "TCP");
        p.node_port = Some(30080);
        let mut s = svc("10.96.0.10", vec![p]);
        assert_eq!(
            service_ports(&s).0[0].external,
            None,
            "plain Services carry nothing"
        );
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(32000);
        spec.external_ips = Some(vec!["192.168.5.7".into(), "fd00::7".into()]);
        spec.load_balancer_source_ranges =
            Some(vec![" 203.0.113.9/24 ".into(), "fd00::/64".into()]);
        let ingress = |ip: &str, mode: Option<&str>| LoadBalancerIngress {
            ip: Some(ip.into()),
            ip_mode: mode.map(Into::into),
            ..Default::default()
        };
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    ingress("192.168.5.9", None),
                    ingress("192.168.5.10", Some("VIP")),
                    ingress("192.168.5.11", Some("Proxy")),
                    LoadBalancerIngress {
                        hostname: Some("lb.example".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        let (ports, skips) = service_ports(&s);
        assert!(skips.is_empty(), "{skips:?}");
        let e = ports[0].external.as_deref().unwrap();
        assert_eq!(e.external_ips, [Ipv4Addr::new(192, 168, 5, 7)]);
        assert_eq!(
            e.load_balancer_ips,
            [
                Ipv4Addr::new(192, 168, 5, 9),
                Ipv4Addr::new(192, 168, 5, 10)
            ],
            "ipMode Proxy load balancers send their traffic to the NodePort"
        );
        assert_eq!(
            e.source_ranges,
            ["203.0.113.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(e.health_check_node_port, Some(32000));
        assert!(ports[0].externally_accessible());

        // Only a LoadBalancer with a Local external policy serves a health check.
        s.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
        assert_eq!(service_ports(&s).0[0].health_check_node_port(), None);
    }

    #[test]
    fn endpoint_hints_are_read() {
        use k8s_openapi::api::discovery::v1::{EndpointHints, ForNode, ForZone};
        let mut hinted = ep("10.244.1.5", None, None, Some("n1"));
        hinted.hints = Some(EndpointHints {
            for_zones: Some(vec![ForZone {
                name: "zone-a".into(),
            }]),
            for_nodes: Some(vec![ForNode { name: "n1".into() }]),
        });
        let s = slice(
            "web-1",
            "IPv4",
            vec![eport("http", 8080)],
            vec![hinted, ep("10.244.2.5", None, None, None)],
        );
        let (eps, _) = slice_endpoints(&s);
        assert_eq!(eps[0].1.zone_hints(), ["zone-a"]);
        assert_eq!(eps[0].1.node_hints(), ["n1"]);
        assert!(eps[1].1.hints.is_none());
        assert!(eps[1].1.zone_hints().is_empty());
    }

    #[test]
    fn skips_with_reasons() {
        let reason = |s: &Service| service_ports(s).1.first().map(|s| s.reason.clone());
        assert_eq!(
            reason(&svc("None", vec![port("a", 80, "TCP")])),
            Some(SkipReason::Headless)
        );
        let mut ext = svc("", vec![]);
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert_eq!(reason(&ext), Some(SkipReason::ExternalName));
        let mut other = svc("10.0.0.1", vec![port("a", 80, "TCP")]);
        other.metadata = meta("default", "x", &[(SERVICE_PROXY_NAME_LABEL, "cilium")]);
        assert_eq!(
            reason(&other),
            Some(SkipReason::OtherProxy("cilium".into()))
        );
        assert_eq!(
            reason(&svc("10.0.0.300", vec![])),
            Some(SkipReason::BadClusterIp("10.0.0.300".into()))
        );
        assert_eq!(reason(&svc("fd00::1", vec![])), Some(SkipReason::Ipv6));
        assert_eq!(reason(&svc("", vec![])), Some(SkipReason::NoClusterIp));
        assert_eq!(
            reason(&svc("10.0.0.1", vec![port("zero", 0, "TCP")])),
            Some(SkipReason::BadPort {
                port: "zero".into(),
                value: 0
            })
        );
        assert_eq!(
            reason(&svc("10.0.0.1", vec![port("big", 70000, "TCP")])),
            Some(SkipReason::BadPort {
                port: "big".into(),
                value: 70000
            })
        );
        assert_eq!(
            reason(&svc("10.0.0.1", vec![port("x", 80, "ICMP")])),
            Some(SkipReason::UnknownProtocol("ICMP".into()))
        );
        // A Service with no spec at all does not panic.
        assert_eq!(reason(&Service::default()), Some(SkipReason::NoClusterIp));
    }

    #[test]
    fn dual_stack_uses_the_ipv4_cluster_ip() {
        let mut s = svc("fd00::10", vec![port("a", 80, "TCP")]);
        s.spec.as_mut().unwrap().cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.10".into()]);
        assert_eq!(
            service_ports(&s).0[0].cluster_ip,
            Ipv4Addr::new(10, 96, 0, 10)
        );
    }

    fn slice(
        name: &str,
        address_type: &str,
        ports: Vec<EndpointPort>,
        eps: Vec<K8sEndpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: meta("default", name, &[(SERVICE_NAME_LABEL, "web")]),
            address_type: address_type.into(),
            endpoints: Some(eps),
            ports: Some(ports),
        }
    }

    fn ep(
        ip: &str,
        ready: Option<bool>,
        terminating: Option<bool>,
        node: Option<&str>,
    ) -> K8sEndpoint {
        K8sEndpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving: None,
                terminating,
            }),
            node_name: node.map(Into::into),
            ..Default::default()
        }
    }

    fn eport(name: &str, number: i32) -> EndpointPort {
        EndpointPort {
            name: Some(name.into()),
            port: Some(number),
            protocol: None,
            app_protocol: None,
        }
    }

    #[test]
    fn endpoints_resolve_ports_by_name_and_carry_conditions() {
        let s = slice(
            "web-1",
            "IPv4",
            vec![eport("http", 8080), eport("metrics", 9090)],
            vec![
                ep("10.244.1.5", None, None, Some("n1")),
                ep("10.244.2.5", Some(false), Some(true), None),
            ],
        );
        let (eps, skips) = slice_endpoints(&s);
        assert!(skips.is_empty());
        assert_eq!(eps.len(), 4);
        let (name, first) = &eps[0];
        assert_eq!(name.to_string(), "default/web:http");
        assert_eq!(
            (first.port, first.ready, first.serving, first.terminating),
            (8080, true, true, false)
        );
        assert_eq!(first.node_name.as_deref(), Some("n1"));
        let (_, last) = &eps[3];
        assert_eq!(
            (last.port, last.ready, last.serving, last.terminating),
            (9090, false, false, true)
        );
    }

    #[test]
    fn bad_slices_and_addresses_are_skipped() {
        let mut unlabelled = slice("a", "IPv4", vec![], vec![]);
        unlabelled.metadata.labels = None;
        assert_eq!(
            slice_endpoints(&unlabelled).1[0].reason,
            SkipReason::NoServiceName
        );
        assert_eq!(
            slice_endpoints(&slice("b", "IPv6", vec![], vec![])).1[0].reason,
            SkipReason::Ipv6
        );
        assert_eq!(
            slice_endpoints(&slice("c", "FQDN", vec![], vec![])).1[0].reason,
            SkipReason::AddressType("FQDN".into())
        );
        let s = slice(
            "d",
            "IPv4",
            vec![eport("http", 0), eport("ok", 80)],
            vec![
                ep("10.1.1.1", None, None, None),
                ep("bogus", None, None, None),
                ep("fd00::1", None, None, None),
            ],
        );
        let (eps, skips) = slice_endpoints(&s);
        assert_eq!(eps.len(), 1);
        let reasons: Vec<_> = skips.into_iter().map(|s| s.reason).collect();
        assert_eq!(
            reasons,
            vec![
                SkipReason::BadPort {
                    port: "http".into(),
                    value: 0
                },
                SkipReason::BadEndpointAddress("bogus".into()),
                SkipReason::Ipv6
            ]
        );
    }

    #[test]
    fn model_merges_slices_without_duplicates() {
        let a = slice(
            "web-a",
            "IPv4",
            vec![eport("http", 80)],
            vec![ep("10.1.1.2", None, None, None)],
        );
        let b = slice(
            "web-b",
            "IPv4",
            vec![eport("http", 80)],
            vec![
                ep("10.1.1.2", Some(false), None, None),
                ep("10.1.1.1", None, None, None),
            ],
        );
        let model = Model::build(Vec::<Service>::new(), [&b, &a]);
        let eps: Vec<_> = model
            .endpoints
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|e| (e.address(), e.ready))
            .collect();
        assert_eq!(
            eps,
            vec![
                ("10.1.1.1:80".to_string(), true),
                ("10.1.1.2:80".to_string(), true)
            ]
        );
    }
}
