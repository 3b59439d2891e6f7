//! The proxy's settings (from the NodeConfig's `spec.proxy`) and the node facts it needs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use ipnet::Ipv4Net;
use nodeconfig_crds::ProxySpec;

use super::error::ProxyError;

/// How NC-SERVICES dispatches to the service rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dispatch {
    /// kube-proxy's shape: one rule per service port in NC-SERVICES. Kept to
    /// measure against.
    Linear,
    /// One rule per ClusterIP /24 in NC-SERVICES, jumping to a chain with only
    /// that /24's service ports: a first packet walks (#prefixes + its /24's
    /// ports) rules, and a change rewrites only its /24's chain.
    #[default]
    ByPrefix24,
}

/// What the planner and the sync loop run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub enabled: bool,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    /// Traffic to a Service from outside this CIDR is masqueraded; `None`
    /// masquerades nothing but NodePort and hairpin traffic (as kube-proxy without a
    /// local detector).
    pub cluster_cidr: Option<Ipv4Net>,
    pub masquerade_all: bool,
    /// Node addresses within these CIDRs accept NodePorts; empty: every local address.
    pub node_port_addresses: Vec<Ipv4Net>,
    pub dispatch: Dispatch,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
            cluster_cidr: None,
            masquerade_all: false,
            node_port_addresses: Vec::new(),
            dispatch: Dispatch::default(),
        }
    }
}

impl ProxyConfig {
    /// Reads the NodeConfig's proxy section. IPv6 CIDRs are left out: they are for
    /// the ip6tables side, which this proxy does not program; a clusterCIDR may
    /// list one CIDR per family, comma-separated, as kube-proxy's flag does.
    pub fn from_spec(spec: &ProxySpec) -> Result<Self, ProxyError> {
        let sync_period = parse_duration("syncPeriod", &spec.sync_period)?;
        let min_sync_period = parse_duration("minSyncPeriod", &spec.min_sync_period)?;
        let mut cluster_cidr = None;
        for part in spec
            .cluster_cidr
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if let Some(net) = parse_ipv4_cidr("clusterCIDR", part)? {
                cluster_cidr.get_or_insert(net);
            }
        }
        let mut node_port_addresses = Vec::new();
        for cidr in &spec.node_port_addresses {
            node_port_addresses.extend(parse_ipv4_cidr("nodePortAddresses", cidr.trim())?);
        }
        Ok(Self {
            enabled: spec.enabled,
            sync_period,
            min_sync_period,
            cluster_cidr,
            masquerade_all: spec.masquerade_all,
            node_port_addresses,
            dispatch: Dispatch::default(),
        })
    }
}

/// The node the rules are for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Endpoints with this nodeName are local (traffic policy Local).
    pub name: String,
    /// The node's IPv4 addresses, matched against nodePortAddresses.
    pub ips: Vec<Ipv4Addr>,
    /// The Node's `topology.kubernetes.io/zone` label, for zone hints.
    pub zone: Option<String>,
}

fn invalid(field: &'static str, value: &str, reason: &str) -> ProxyError {
    ProxyError::InvalidConfig {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// An IPv4 CIDR, `None` for an IPv6 one. Host bits are cleared (`10.0.0.1/8` → `10.0.0.0/8`).
fn parse_ipv4_cidr(field: &'static str, value: &str) -> Result<Option<Ipv4Net>, ProxyError> {
    match value.parse::<IpNet>() {
        Ok(IpNet::V4(net)) => Ok(Some(net.trunc())),
        Ok(IpNet::V6(_)) => Ok(None),
        Err(_) => match value.parse::<IpAddr>() {
            Ok(_) => Err(invalid(
                field,
                value,
                "a CIDR needs a prefix length, such as 10.0.0.0/8",
            )),
            Err(_) => Err(invalid(field, value, "not a CIDR")),
        },
    }
}

/// A Go duration (`30s`, `1m30s`, `500ms`), as the CRD's schema admits them.
fn parse_duration(field: &'static str, value: &str) -> Result<Duration, ProxyError> {
    nodeconfig_crds::duration::parse_duration(value)
        .map_err(|e| invalid(field, value, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProxySpec {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }

    #[test]
    fn reads_the_spec() {
        let mut s = spec();
        s.sync_period = "1m30s".into();
        s.min_sync_period = "500ms".into();
        s.cluster_cidr = Some("10.244.0.0/16,fd00:10:244::/56".into());
        s.masquerade_all = true;
        s.node_port_addresses = vec!["192.168.1.7/24".into(), "fd00::/64".into()];
        let cfg = ProxyConfig::from_spec(&s).unwrap();
        assert_eq!(cfg.sync_period, Duration::from_secs(90));
        assert_eq!(cfg.min_sync_period, Duration::from_millis(500));
        assert_eq!(cfg.cluster_cidr, Some("10.244.0.0/16".parse().unwrap()));
        assert!(cfg.masquerade_all);
        assert_eq!(
            cfg.node_port_addresses,
            vec!["192.168.1.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            ProxyConfig::from_spec(&spec()).unwrap().sync_period,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let mut s = spec();
        s.cluster_cidr = Some("10.244.0.0".into());
        let err = ProxyConfig::from_spec(&s).unwrap_err().to_string();
        assert!(
            err.contains("clusterCIDR") && err.contains("prefix length"),
            "{err}"
        );
        let mut s = spec();
        s.sync_period = "30 seconds".into();
        assert!(ProxyConfig::from_spec(&s)
            .unwrap_err()
            .to_string()
            .contains("syncPeriod"));
        let mut s = spec();
        s.node_port_addresses = vec!["nope".into()];
        assert!(ProxyConfig::from_spec(&s)
            .unwrap_err()
            .to_string()
            .contains("nodePortAddresses"));
    }
}
