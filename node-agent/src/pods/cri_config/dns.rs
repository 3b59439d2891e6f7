//! A pod's resolver (its resolv.conf, handed to the runtime in the sandbox
//! config), as the kubelet's `pkg/kubelet/network/dns` forms it. Pure.
//!
//! ```text
//!   dnsPolicy ──> base: cluster DNS | the node's resolv.conf | empty
//!   + spec.dnsConfig (merged) ──> fitted to the limits ──> cri::DnsConfig
//! ```
//!
//! - `ClusterFirst` (not on the host network) and `ClusterFirstWithHostNet`:
//!   the cluster's DNS servers only, searching `<ns>.svc.<domain>`,
//!   `svc.<domain>`, `<domain>` and then the node's domains, `ndots:5`.
//!   Without `clusterDNS` the node's resolver, and a `MissingClusterDNS` event.
//! - `ClusterFirst` on the host network, and `Default`: the node's resolver.
//! - `None`: nothing but `spec.dnsConfig`.
//!
//! Then `spec.dnsConfig` is appended (servers and searches without
//! duplicates; options by name, the pod's winning), and the result is cut to
//! what resolvers take: 3 nameservers, 32 search domains of at most 253
//! characters each, 2048 characters of search line, with a `DNSConfigForming`
//! event saying what was applied.
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};

/// Nameservers a resolver reads (glibc's MAXNS).
const MAX_DNS_NAMESERVERS: usize = 3;
/// Search domains and search-line length the kubelet allows (ExpandedDNSConfig, GA).
const MAX_DNS_SEARCH_PATHS: usize = 32;
const MAX_DNS_SEARCH_CHARS: usize = 2048;
/// Longest search domain: longer ones make some resolvers abort.
const MAX_DNS_SEARCH_PATH_LEN: usize = 253;
/// The options of a cluster-DNS pod (the kubelet's `defaultDNSOptions`).
const CLUSTER_DNS_OPTIONS: &str = "ndots:5";

/// The cluster's DNS settings of the node (NodeConfig `spec.pods.clusterDNS`
/// and `clusterDomain`, the kubelet's flags of the same names).
#[derive(Debug, Clone, Copy)]
pub struct ClusterDns<'a> {
    /// The cluster DNS service's addresses; empty when the node has none.
    pub servers: &'a [String],
    /// `cluster.local`; empty: no cluster search domains.
    pub domain: &'a str,
}

impl ClusterDns<'_> {
    /// No cluster DNS: pods that ask for it get the node's resolver.
    pub const NONE: ClusterDns<'static> = ClusterDns {
        servers: &[],
        domain: "",
    };
}

/// The pod's resolver, and what the kubelet would say about forming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDns {
    pub config: cri::DnsConfig,
    /// Warning events for the pod (`reason`, `message`), as the kubelet records them.
    pub warnings: Vec<DnsWarning>,
}

/// A warning event about the pod's DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsWarning {
    /// `MissingClusterDNS` or `DNSConfigForming`.
    pub reason: &'static str,
    pub message: String,
}

/// Which resolver a pod starts from (the kubelet's `podDNSType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Cluster,
    Host,
    Empty,
}

fn base_of(pod: &Pod) -> Base {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match spec.and_then(|s| s.dns_policy.as_deref()) {
        Some("None") => Base::Empty,
        Some("Default") => Base::Host,
        Some("ClusterFirstWithHostNet") => Base::Cluster,
        // ClusterFirst, the API's default, falls back to the node's on its network.
        _ if host_network => Base::Host,
        _ => Base::Cluster,
    }
}

/// The pod's resolver from its dnsPolicy and dnsConfig, the node's resolver
/// (`host`, read by [`parse_resolv_conf`]) and the cluster's DNS settings.
pub fn pod_dns(pod: &Pod, host: &cri::DnsConfig, cluster: &ClusterDns<'_>) -> PodDns {
    let mut warnings = Vec::new();
    let mut config = match base_of(pod) {
        Base::Empty => cri::DnsConfig::default(),
        Base::Cluster if !cluster.servers.is_empty() => cri::DnsConfig {
            servers: cluster.servers.to_vec(),
            searches: cluster_searches(pod, &host.searches, cluster.domain),
            options: vec![CLUSTER_DNS_OPTIONS.to_string()],
        },
        Base::Cluster => {
            warnings.push(DnsWarning {
                reason: "MissingClusterDNS",
                message: format!(
                    "pod: {:?}. node-agent has no clusterDNS configured (NodeConfig \
                     spec.pods.clusterDNS) and cannot create Pod using \"ClusterFirst\" \
                     policy. Falling back to \"Default\" policy.",
                    pod_ref(pod)
                ),
            });
            host.clone()
        }
        Base::Host => host.clone(),
    };
    if let Some(extra) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        merge_dns(&mut config, extra);
    }
    fit_limits(&mut config, &mut warnings);
    PodDns { config, warnings }
}

/// `name_namespace(uid)`, as the kubelet names a pod in its messages.
fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or("default"),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// The cluster's search domains for the pod's namespace, then the node's.
fn cluster_searches(pod: &Pod, host: &[String], domain: &str) -> Vec<String> {
    if domain.is_empty() {
        return host.to_vec();
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut searches = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    for search in host {
        push_unique(&mut searches, search);
    }
    searches
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|i| i == item) {
        list.push(item.to_string());
    }
}

/// Nameservers and searches appended without duplicates; options by name,
/// the pod's replacing the base's.
fn merge_dns(dns: &mut cri::DnsConfig, extra: &PodDNSConfig) {
    for server in extra.nameservers.iter().flatten() {
        push_unique(&mut dns.servers, server);
    }
    for search in extra.searches.iter().flatten() {
        push_unique(&mut dns.searches, search);
    }
    for option in extra.options.iter().flatten() {
        let Some(name) = option.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let text = match option.value.as_deref() {
            Some(value) if !value.is_empty() => format!("{name}:{value}"),
            _ => name.to_string(),
        };
        set_option(&mut dns.options, text);
    }
}

/// Adds a resolver option, replacing one of the same name (`ndots:2` replaces `ndots:5`).
fn set_option(options: &mut Vec<String>, option: String) {
    let name = |o: &str| o.split(':').next().unwrap_or_default().to_string();
    let new_name = name(&option);
    match options.iter_mut().find(|o| name(o) == new_name) {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

/// Cuts the configuration to what resolvers take, saying so as the kubelet does.
fn fit_limits(dns: &mut cri::DnsConfig, warnings: &mut Vec<DnsWarning>) {
    if dns.servers.len() > MAX_DNS_NAMESERVERS {
        dns.servers.truncate(MAX_DNS_NAMESERVERS);
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, \
                 the applied nameserver line is: {}",
                dns.servers.join(" ")
            ),
        });
    }
    let before = dns.searches.len();
    dns.searches.truncate(MAX_DNS_SEARCH_PATHS);
    dns.searches.retain(|s| s.len() <= MAX_DNS_SEARCH_PATH_LEN);
    let mut cut = dns.searches.len() < before;
    while line_len(&dns.searches) > MAX_DNS_SEARCH_CHARS {
        dns.searches.pop();
        cut = true;
    }
    if cut {
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, \
                 the applied search line is: {}",
                dns.searches.join(" ")
            ),
        });
    }
}

/// Length of the search line's domains joined by spaces.
fn line_len(searches: &[String]) -> usize {
    searches.iter().map(String::len).sum::<usize>() + searches.len().saturating_sub(1)
}

/// The node's resolver configuration from its resolv.conf, read as the
/// kubelet does: `nameserver` lines accumulate, the last `search` line wins
/// (without `.` and trailing dots), `options` accumulate by name.
pub fn parse_resolv_conf(text: &str) -> cri::DnsConfig {
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => dns.servers.extend(fields.next().map(str::to_string)),
            Some("search") => {
                dns.searches = fields
                    .filter(|s| *s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            Some("options") => {
                for option in fields {
                    set_option(&mut dns.options, option.to_string());
                }
            }
            _ => {}
        }
    }
    dns
}
