//! Stale UDP conntrack entries. UDP has no connection to end: once a flow to a
//! ClusterIP has been DNATed to an endpoint, conntrack keeps sending the
//! client's packets there, rules or not, until the entry times out. So when an
//! endpoint stops receiving a UDP service's traffic its entries are deleted, as
//! kube-proxy does.
//!
//! The decision ([`stale_flows`]) is pure: the UDP service ports with the
//! endpoints the rules sent traffic to, before and after a sync, in; the
//! deletions out. [`Conntrack`] runs them with Debian's `conntrack` tool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::error::ProxyError;
use super::model::{Model, Protocol, ServicePortName};
use super::plan::endpoint_chain;
use super::ruleset::RuleSet;

/// One UDP service port as the rules program it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpServicePort {
    pub cluster_ip: Ipv4Addr,
    pub node_port: Option<u16>,
    /// Endpoints with a NC-SEP chain: the ones traffic may be DNATed to.
    pub endpoints: BTreeSet<Ipv4Addr>,
}

/// Every UDP service port with rules, endpoints or not.
pub type UdpServices = BTreeMap<ServicePortName, UdpServicePort>;

/// The UDP service ports of `model` and the endpoints `rules` DNAT them to.
pub fn udp_services(model: &Model, rules: &RuleSet) -> UdpServices {
    model
        .services
        .iter()
        .filter(|(name, _)| name.protocol == Protocol::Udp)
        .map(|(name, svc)| {
            let endpoints = model
                .endpoints
                .get(name)
                .into_iter()
                .flatten()
                .filter(|ep| rules.nat.chains.contains_key(&endpoint_chain(name, ep)))
                .map(|ep| ep.ip)
                .collect();
            let port = UdpServicePort {
                cluster_ip: svc.cluster_ip,
                node_port: svc.node_port,
                endpoints,
            };
            (name.clone(), port)
        })
        .collect()
}

/// One `conntrack -D` to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowDeletion {
    /// Every UDP flow to the ClusterIP: the service lost all its endpoints or
    /// went away, or it gained its first endpoints (flows that hit it while it
    /// had none would otherwise keep missing the new DNAT).
    ClusterIp { cluster_ip: Ipv4Addr },
    /// UDP flows to the ClusterIP that were DNATed to an endpoint that is gone.
    Endpoint {
        cluster_ip: Ipv4Addr,
        endpoint: Ipv4Addr,
    },
    /// UDP flows to a NodePort that were DNATed to an endpoint that is gone.
    NodePortEndpoint { node_port: u16, endpoint: Ipv4Addr },
}

impl FlowDeletion {
    /// The arguments of `conntrack`.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
        match *self {
            FlowDeletion::ClusterIp { cluster_ip } => {
                args.extend(["--orig-dst".into(), cluster_ip.to_string()]);
            }
            FlowDeletion::Endpoint {
                cluster_ip,
                endpoint,
            } => args.extend([
                "--orig-dst".into(),
                cluster_ip.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            FlowDeletion::NodePortEndpoint {
                node_port,
                endpoint,
            } => args.extend([
                "--orig-port-dst".into(),
                node_port.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
        }
        args
    }
}

/// The deletions a sync from `old` to `new` calls for. Endpoints are compared
/// per ClusterIP (and per NodePort), over all of a Service's UDP ports: an
/// address still used by another port of the same ClusterIP keeps its flows.
pub fn stale_flows(old: &UdpServices, new: &UdpServices) -> Vec<FlowDeletion> {
    let by_cluster_ip = |set: &UdpServices| {
        let mut out: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for port in set.values() {
            out.entry(port.cluster_ip)
                .or_default()
                .extend(&port.endpoints);
        }
        out
    };
    let by_node_port = |set: &UdpServices| {
        let mut out: BTreeMap<u16, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for port in set.values() {
            if let Some(node_port) = port.node_port {
                out.entry(node_port).or_default().extend(&port.endpoints);
            }
        }
        out
    };
    let (old_ips, new_ips) = (by_cluster_ip(old), by_cluster_ip(new));
    let mut out = BTreeSet::new();
    for (&cluster_ip, old_eps) in &old_ips {
        let new_eps = new_ips.get(&cluster_ip);
        match new_eps {
            _ if old_eps.is_empty() => {}
            None => {
                out.insert(FlowDeletion::ClusterIp { cluster_ip });
            }
            Some(new_eps) if new_eps.is_empty() => {
                out.insert(FlowDeletion::ClusterIp { cluster_ip });
            }
            Some(new_eps) => {
                out.extend(
                    old_eps
                        .difference(new_eps)
                        .map(|&endpoint| FlowDeletion::Endpoint {
                            cluster_ip,
                            endpoint,
                        }),
                );
            }
        }
    }
    for (&cluster_ip, new_eps) in &new_ips {
        if !new_eps.is_empty() && old_ips.get(&cluster_ip).is_some_and(BTreeSet::is_empty) {
            out.insert(FlowDeletion::ClusterIp { cluster_ip });
        }
    }
    let new_ports = by_node_port(new);
    for (node_port, old_eps) in by_node_port(old) {
        let empty = BTreeSet::new();
        let new_eps = new_ports.get(&node_port).unwrap_or(&empty);
        out.extend(
            old_eps
                .difference(new_eps)
                .map(|&endpoint| FlowDeletion::NodePortEndpoint {
                    node_port,
                    endpoint,
                }),
        );
    }
    out.into_iter().collect()
}

/// Debian's `conntrack` tool, in the current network namespace.
#[derive(Clone, Debug)]
pub struct Conntrack {
    program: String,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self {
            program: "conntrack".into(),
        }
    }
}

impl Conntrack {
    /// Runs one deletion; returns how many entries went. Exit status 1 with
    /// "0 flow entries have been deleted" means there were none: not an error.
    pub fn delete(&self, deletion: &FlowDeletion) -> Result<u64, ProxyError> {
        let output = Command::new(&self.program)
            .args(deletion.args())
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ProxyError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let deleted = deleted_count(&stderr);
        match (output.status.code(), deleted) {
            (Some(0), n) => Ok(n.unwrap_or(0)),
            (Some(1), Some(0)) => Ok(0),
            _ => Err(ProxyError::Command {
                program: format!("{} {}", self.program, deletion.args().join(" ")),
                status: output.status.to_string(),
                stderr: stderr.trim().to_string(),
            }),
        }
    }
}

/// `N flow entries have been deleted.` → N.
fn deleted_count(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_suffix("flow entries have been deleted.")?;
        rest.trim().rsplit(' ').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn port(
        name: &str,
        cluster_ip: &str,
        node_port: Option<u16>,
        eps: &[&str],
    ) -> (ServicePortName, UdpServicePort) {
        (
            ServicePortName {
                namespace: "ns".into(),
                name: "svc".into(),
                port: name.into(),
                protocol: Protocol::Udp,
            },
            UdpServicePort {
                cluster_ip: ip(cluster_ip),
                node_port,
                endpoints: eps.iter().map(|e| ip(e)).collect(),
            },
        )
    }

    fn set(ports: &[(ServicePortName, UdpServicePort)]) -> UdpServices {
        ports.iter().cloned().collect()
    }

    #[test]
    fn table_of_endpoint_changes() {
        let vip = "10.96.0.10";
        let cases: Vec<(&str, UdpServices, UdpServices, Vec<FlowDeletion>)> = vec![
            (
                "unchanged",
                set(&[port("dns", vip, None, &["10.0.0.1", "10.0.0.2"])]),
                set(&[port("dns", vip, None, &["10.0.0.1", "10.0.0.2"])]),
                vec![],
            ),
            (
                "one endpoint goes",
                set(&[port("dns", vip, None, &["10.0.0.1", "10.0.0.2"])]),
                set(&[port("dns", vip, None, &["10.0.0.1"])]),
                vec![FlowDeletion::Endpoint {
                    cluster_ip: ip(vip),
                    endpoint: ip("10.0.0.2"),
                }],
            ),
            (
                "an endpoint is added",
                set(&[port("dns", vip, None, &["10.0.0.1"])]),
                set(&[port("dns", vip, None, &["10.0.0.1", "10.0.0.2"])]),
                vec![],
            ),
            (
                "all endpoints go: the whole ClusterIP",
                set(&[port("dns", vip, None, &["10.0.0.1", "10.0.0.2"])]),
                set(&[port("dns", vip, None, &[])]),
                vec![FlowDeletion::ClusterIp {
                    cluster_ip: ip(vip),
                }],
            ),
            (
                "the service goes",
                set(&[port("dns", vip, None, &["10.0.0.1"])]),
                set(&[]),
                vec![FlowDeletion::ClusterIp {
                    cluster_ip: ip(vip),
                }],
            ),
            (
                "a service without endpoints goes: nothing was DNATed",
                set(&[port("dns", vip, None, &[])]),
                set(&[]),
                vec![],
            ),
            (
                "first endpoints of a known service",
                set(&[port("dns", vip, None, &[])]),
                set(&[port("dns", vip, None, &["10.0.0.1"])]),
                vec![FlowDeletion::ClusterIp {
                    cluster_ip: ip(vip),
                }],
            ),
            (
                "a new service with endpoints",
                set(&[]),
                set(&[port("dns", vip, None, &["10.0.0.1"])]),
                vec![],
            ),
            (
                "an address still used by another port of the ClusterIP keeps its flows",
                set(&[
                    port("a", vip, None, &["10.0.0.1"]),
                    port("b", vip, None, &["10.0.0.1"]),
                ]),
                set(&[
                    port("a", vip, None, &[]),
                    port("b", vip, None, &["10.0.0.1"]),
                ]),
                vec![],
            ),
            (
                "NodePort endpoint goes",
                set(&[port("dns", vip, Some(30053), &["10.0.0.1", "10.0.0.2"])]),
                set(&[port("dns", vip, Some(30053), &["10.0.0.1"])]),
                vec![
                    FlowDeletion::Endpoint {
                        cluster_ip: ip(vip),
                        endpoint: ip("10.0.0.2"),
                    },
                    FlowDeletion::NodePortEndpoint {
                        node_port: 30053,
                        endpoint: ip("10.0.0.2"),
                    },
                ],
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(stale_flows(&old, &new), want, "{name}");
        }
    }

    #[test]
    fn arguments_as_conntrack_takes_them() {
        let d = FlowDeletion::Endpoint {
            cluster_ip: ip("10.96.0.10"),
            endpoint: ip("10.244.1.5"),
        };
        assert_eq!(
            d.args().join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.5"
        );
        assert_eq!(
            FlowDeletion::ClusterIp {
                cluster_ip: ip("10.96.0.10")
            }
            .args()
            .join(" "),
            "-D -p udp --orig-dst 10.96.0.10"
        );
        assert_eq!(
            FlowDeletion::NodePortEndpoint {
                node_port: 30053,
                endpoint: ip("10.244.1.5")
            }
            .args()
            .join(" "),
            "-D -p udp --orig-port-dst 30053 --dst-nat 10.244.1.5"
        );
    }

    #[test]
    fn reads_the_deleted_count() {
        let out = "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n";
        assert_eq!(deleted_count(out), Some(0));
        let out = "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n";
        assert_eq!(deleted_count(out), Some(3));
        assert_eq!(deleted_count("conntrack: operation failed"), None);
    }
}
