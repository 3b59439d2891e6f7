//! The rule planner: the desired rules for one node, in kube-proxy's
//! iptables-mode shape, under our own `NC-` chains. Pure.
//!
//! Packet paths (nat): PREROUTING/OUTPUT → NC-SERVICES → (NC-SVCS-<a.b.c>, one
//! per ClusterIP /24) → NC-SVC/NC-SVL-<hash> (cluster / node-local endpoints,
//! random spread, ClientIP affinity) → NC-SEP-<hash> (DNAT); NodePorts go
//! NC-SERVICES → NC-NODEPORTS → NC-EXT-<hash> → NC-SVC/NC-SVL. Masquerade is a
//! mark set in NC-MARK-MASQ and acted on in NC-POSTROUTING. In filter,
//! NC-SERVICES and NC-EXTERNAL-SERVICES reject (no endpoints) or drop (no local
//! endpoints for a Local policy) new connections; NC-FORWARD lets marked and
//! established service traffic through a default-drop FORWARD.
//!
//! Chain names hash the service port exactly as kube-proxy does (so NC-SVC-X
//! and KUBE-SVC-X name the same service port), within iptables' 28 characters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::config::{Dispatch, NodeInfo, ProxyConfig};
use super::model::{
    Endpoint, Model, ObjectKind, Protocol, ServicePort, ServicePortName, Skip, SkipReason,
    TrafficPolicy,
};
use super::ruleset::{probability, RuleSet, RuleSpec, TableRules};

/// Every chain we own starts with this; nothing else in the tables is ours
/// except our jumps in the built-in chains.
pub const CHAIN_PREFIX: &str = "NC-";
/// Dispatch of service traffic (nat), and reject/drop of it (filter).
pub const SERVICES: &str = "NC-SERVICES";
pub const NODEPORTS: &str = "NC-NODEPORTS";
pub const POSTROUTING: &str = "NC-POSTROUTING";
pub const MARK_MASQ: &str = "NC-MARK-MASQ";
pub const EXTERNAL_SERVICES: &str = "NC-EXTERNAL-SERVICES";
pub const FORWARD: &str = "NC-FORWARD";
/// Holds one rule in both tables; when it or its rule is gone, someone flushed
/// the tables behind our back (an empty chain would survive `iptables -F`).
pub const CANARY: &str = "NC-CANARY";
pub const CANARY_RULE: &str = "-j RETURN";
/// The packet mark bit that asks NC-POSTROUTING to masquerade (kube-proxy's bit).
pub const MASQ_MARK: &str = "0x4000";
/// iptables' limit on chain names.
pub const MAX_CHAIN_NAME: usize = 28;

/// The desired rules and what they cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub rules: RuleSet,
    /// Service ports with rules (including reject rules).
    pub service_ports: usize,
    /// Endpoint (NC-SEP) chains.
    pub endpoints: usize,
    /// Service ports left out by the planner itself (chain-name collisions).
    pub skipped: Vec<Skip>,
}

/// The desired rule set for `node`.
pub fn plan(model: &Model, node: &NodeInfo, cfg: &ProxyConfig) -> Plan {
    plan_incremental(model, node, cfg, None).0
}

/// What planning each service port produced last time, so that a sync plans
/// again only the service ports whose Service or endpoints changed (kube-proxy
/// re-plans all of them on every sync: at 10,000 Services that is most of a
/// partial sync's time). Built by [`plan_incremental`]; it holds the chain
/// names, not the chains, which stay in the rule set planned with it.
#[derive(Clone, Debug, Default)]
pub struct PlanCache {
    /// The node name and settings the entries were planned for.
    node_name: String,
    cfg: Option<ProxyConfig>,
    ports: HashMap<ServicePortName, PlannedPort>,
    /// Service ports the call that built this cache planned afresh.
    planned: usize,
}

impl PlanCache {
    /// Service ports the call that built this cache planned afresh (not reused).
    pub fn planned(&self) -> usize {
        self.planned
    }
}

/// One service port's inputs and what they produced (its nat chains live in
/// the rule set planned along with the cache).
#[derive(Clone, Debug)]
struct PlannedPort {
    service: ServicePort,
    endpoints: Vec<Endpoint>,
    chains: Vec<String>,
    endpoint_chains: usize,
    cluster_ip: Option<String>,
    node_port: Option<String>,
    filter_cluster_ip: Option<String>,
    filter_node_port: Option<String>,
}

/// What [`plan_incremental`] may reuse: the cache of the last plan and that
/// plan's rules, both as a successful sync left them.
pub struct Previous<'a> {
    pub cache: PlanCache,
    pub rules: &'a RuleSet,
}

/// [`plan`], reusing from `previous` the rules of every service port whose
/// Service and endpoints are unchanged (and all of them only when the node name
/// and settings are the same); returns the cache for the next call. The plan is
/// exactly the one [`plan`] makes of `model`.
pub fn plan_incremental(
    model: &Model,
    node: &NodeInfo,
    cfg: &ProxyConfig,
    previous: Option<Previous<'_>>,
) -> (Plan, PlanCache) {
    let mut nat = TableRules::default();
    let mut filter = TableRules::default();
    let mut out = Plan::default();
    // ClusterIP capture rules by /24 (one key, 0.0.0.0/0, when dispatch is linear).
    let mut dispatch: BTreeMap<Ipv4Net, Vec<String>> = BTreeMap::new();
    let mut filter_services = Vec::new();
    let mut filter_external = Vec::new();
    let mut node_ports = Vec::new();
    let (mut old, old_rules) = match previous {
        Some(p) if p.cache.node_name == node.name && p.cache.cfg.as_ref() == Some(cfg) => {
            (p.cache.ports, Some(p.rules))
        }
        _ => (HashMap::new(), None),
    };
    let mut cache = PlanCache {
        node_name: node.name.clone(),
        cfg: Some(cfg.clone()),
        ports: HashMap::with_capacity(model.services.len()),
        planned: 0,
    };

    for (name, svc) in &model.services {
        let endpoints = model.endpoints.get(name).map(Vec::as_slice).unwrap_or(&[]);
        // The old entry's key is reused: no new strings for an unchanged port.
        let old_entry = old.remove_entry(name);
        let reused = old_rules
            .zip(old_entry)
            .and_then(|(rules, (port_key, planned))| {
                if planned.service != *svc || planned.endpoints != endpoints {
                    return None;
                }
                let chains = planned
                    .chains
                    .iter()
                    .map(|c| Some((c.clone(), rules.nat.chains.get(c)?.clone())))
                    .collect::<Option<BTreeMap<_, _>>>()?;
                Some((port_key, planned, chains))
            });
        let (port_key, planned, chains) = match reused {
            Some(found) => found,
            None => {
                cache.planned += 1;
                let rules = service_rules(svc, endpoints, &node.name, cfg);
                let planned = PlannedPort {
                    service: svc.clone(),
                    endpoints: endpoints.to_vec(),
                    chains: rules.chains.keys().cloned().collect(),
                    endpoint_chains: rules
                        .chains
                        .keys()
                        .filter(|c| c.starts_with("NC-SEP-"))
                        .count(),
                    cluster_ip: rules.cluster_ip,
                    node_port: rules.node_port,
                    filter_cluster_ip: rules.filter_cluster_ip,
                    filter_node_port: rules.filter_node_port,
                };
                (name.clone(), planned, rules.chains)
            }
        };
        // Service chains are all in nat; a name taken means a hash collision.
        if let Some(taken) = chains.keys().find(|c| nat.chains.contains_key(*c)) {
            out.skipped.push(Skip {
                kind: ObjectKind::Service,
                object: format!("{}/{}", name.namespace, name.name),
                reason: SkipReason::ChainNameCollision(taken.clone()),
            });
            continue;
        }
        out.service_ports += 1;
        out.endpoints += planned.endpoint_chains;
        nat.chains.extend(chains);
        let key = match cfg.dispatch {
            Dispatch::Linear => Ipv4Net::default(),
            Dispatch::ByPrefix24 => prefix24(svc.cluster_ip),
        };
        dispatch
            .entry(key)
            .or_default()
            .extend(planned.cluster_ip.clone());
        filter_services.extend(planned.filter_cluster_ip.clone());
        filter_external.extend(planned.filter_node_port.clone());
        node_ports.extend(planned.node_port.clone());
        cache.ports.insert(port_key, planned);
    }

    let mut services = Vec::new();
    match cfg.dispatch {
        Dispatch::Linear => services.extend(dispatch.into_values().flatten()),
        Dispatch::ByPrefix24 => {
            for (prefix, rules) in dispatch.into_iter().filter(|(_, r)| !r.is_empty()) {
                let chain = prefix_chain(prefix);
                services.push(RuleSpec::new().destination(prefix).jump(&chain));
                nat.chains.insert(chain, rules);
            }
        }
    }
    services.extend(node_port_dispatch(node, cfg));
    nat.chains.insert(SERVICES.into(), services);
    nat.chains.insert(NODEPORTS.into(), node_ports);
    nat.chains.insert(
        POSTROUTING.into(),
        vec![
            RuleSpec::new()
                .matched(&format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK}"))
                .jump("RETURN"),
            RuleSpec::new().jump(&format!("MARK --set-xmark {MASQ_MARK}/0x0")),
            RuleSpec::new()
                .comment("nodeconfig service traffic requiring SNAT")
                .jump("MASQUERADE --random-fully"),
        ],
    );
    nat.chains.insert(
        MARK_MASQ.into(),
        vec![RuleSpec::new().jump(&format!("MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}"))],
    );
    nat.chains.insert(CANARY.into(), vec![CANARY_RULE.into()]);
    let portals = RuleSpec::new()
        .comment("nodeconfig service portals")
        .jump(SERVICES);
    nat.jumps.insert("PREROUTING".into(), vec![portals.clone()]);
    nat.jumps.insert("OUTPUT".into(), vec![portals]);
    nat.jumps.insert(
        "POSTROUTING".into(),
        vec![RuleSpec::new()
            .comment("nodeconfig postrouting rules")
            .jump(POSTROUTING)],
    );

    filter.chains.insert(SERVICES.into(), filter_services);
    filter
        .chains
        .insert(EXTERNAL_SERVICES.into(), filter_external);
    filter.chains.insert(
        FORWARD.into(),
        vec![
            RuleSpec::new()
                .matched("-m conntrack --ctstate INVALID")
                .jump("DROP"),
            RuleSpec::new()
                .comment("nodeconfig forwarding rules")
                .matched(&format!("-m mark --mark {MASQ_MARK}/{MASQ_MARK}"))
                .jump("ACCEPT"),
            RuleSpec::new()
                .comment("nodeconfig forwarding conntrack rule")
                .matched("-m conntrack --ctstate RELATED,ESTABLISHED")
                .jump("ACCEPT"),
        ],
    );
    filter
        .chains
        .insert(CANARY.into(), vec![CANARY_RULE.into()]);
    let new_conn = |comment: &str, target: &str| {
        RuleSpec::new()
            .matched("-m conntrack --ctstate NEW")
            .comment(comment)
            .jump(target)
    };
    let external = new_conn(
        "nodeconfig externally-visible service portals",
        EXTERNAL_SERVICES,
    );
    let service = new_conn("nodeconfig service portals", SERVICES);
    filter.jumps.insert("INPUT".into(), vec![external.clone()]);
    filter.jumps.insert(
        "FORWARD".into(),
        vec![
            RuleSpec::new()
                .comment("nodeconfig forwarding rules")
                .jump(FORWARD),
            service.clone(),
            external,
        ],
    );
    filter.jumps.insert("OUTPUT".into(), vec![service]);

    out.rules = RuleSet { nat, filter };
    (out, cache)
}

/// Where NC-SERVICES hands over to NC-NODEPORTS: the last rule(s) of NC-SERVICES,
/// so ClusterIP rules win for a node address that is also a Service's.
fn node_port_dispatch(node: &NodeInfo, cfg: &ProxyConfig) -> Vec<String> {
    let comment = "nodeconfig service nodeports; NOTE: this must be the last rule in this chain";
    if cfg.node_port_addresses.is_empty() {
        return vec![RuleSpec::new()
            .comment(comment)
            .matched("-m addrtype --dst-type LOCAL")
            .jump(NODEPORTS)];
    }
    let ips: BTreeSet<Ipv4Addr> = node
        .ips
        .iter()
        .copied()
        .filter(|ip| cfg.node_port_addresses.iter().any(|net| net.contains(ip)))
        .collect();
    ips.into_iter()
        .map(|ip| {
            RuleSpec::new()
                .destination_ip(ip)
                .comment(comment)
                .jump(NODEPORTS)
        })
        .collect()
}

/// The rules one service port contributes, before they are placed.
#[derive(Default)]
struct ServiceRules {
    /// Its own nat chains (SVC, SVL, EXT, SEPs).
    chains: BTreeMap<String, Vec<String>>,
    /// The ClusterIP capture rule for the dispatch chain.
    cluster_ip: Option<String>,
    /// The NC-NODEPORTS rule.
    node_port: Option<String>,
    /// Reject/drop of the ClusterIP (filter NC-SERVICES).
    filter_cluster_ip: Option<String>,
    /// Reject/drop of the NodePort (filter NC-EXTERNAL-SERVICES).
    filter_node_port: Option<String>,
}

/// Which endpoints get traffic, as kube-proxy's CategorizeEndpoints decides:
/// ready ones; only when none is ready anywhere, serving-but-terminating ones
/// (so connections drain through a rollout instead of failing); Local policies
/// see this node's endpoints only.
struct Categorized<'a> {
    cluster: Vec<&'a Endpoint>,
    local: Vec<&'a Endpoint>,
    /// Cluster ∪ local: the endpoints that get a NC-SEP chain.
    reachable: Vec<&'a Endpoint>,
    /// Some endpoint anywhere can take traffic.
    any: bool,
}

fn categorize<'a>(svc: &ServicePort, endpoints: &'a [Endpoint], node: &str) -> Categorized<'a> {
    let usable = |ready: bool| {
        move |e: &&'a Endpoint| {
            if ready {
                e.ready
            } else {
                e.serving && e.terminating
            }
        }
    };
    let is_local = |e: &&Endpoint| e.node_name.as_deref() == Some(node);
    let pick = |local_only: bool| -> Vec<&'a Endpoint> {
        let scope = |e: &&'a Endpoint| !local_only || is_local(e);
        let ready: Vec<_> = endpoints
            .iter()
            .filter(scope)
            .filter(usable(true))
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        endpoints
            .iter()
            .filter(scope)
            .filter(usable(false))
            .collect()
    };
    let uses_cluster = svc.internal_policy == TrafficPolicy::Cluster || svc.externally_accessible();
    let uses_local = svc.internal_policy == TrafficPolicy::Local
        || (svc.externally_accessible() && svc.external_policy == TrafficPolicy::Local);
    let cluster = if uses_cluster {
        pick(false)
    } else {
        Vec::new()
    };
    let local = if uses_local { pick(true) } else { Vec::new() };
    let any = endpoints
        .iter()
        .any(|e| e.ready || (e.serving && e.terminating));
    let mut reachable: Vec<&Endpoint> = cluster.iter().chain(local.iter()).copied().collect();
    reachable.sort_by_key(|e| (e.ip, e.port));
    reachable.dedup_by_key(|e| (e.ip, e.port));
    Categorized {
        cluster,
        local,
        reachable,
        any,
    }
}

fn service_rules(
    svc: &ServicePort,
    endpoints: &[Endpoint],
    node: &str,
    cfg: &ProxyConfig,
) -> ServiceRules {
    let name = &svc.name;
    let label = name.to_string();
    let proto = name.protocol;
    let svc_chain = service_chain("SVC", name);
    let svl_chain = service_chain("SVL", name);
    let ext_chain = service_chain("EXT", name);
    let eps = categorize(svc, endpoints, node);

    let internal_local = svc.internal_policy == TrafficPolicy::Local;
    let external_local = svc.external_policy == TrafficPolicy::Local;
    let has_internal = eps.any && (!internal_local || !eps.local.is_empty());
    let has_external = eps.any && (!external_local || !eps.local.is_empty());
    let internal_chain = if internal_local {
        &svl_chain
    } else {
        &svc_chain
    };
    let external_policy_chain = if external_local {
        &svl_chain
    } else {
        &svc_chain
    };

    let (internal_block, external_block) = if !eps.any {
        // A TCP reset refuses the connect() at once; kube-proxy's ICMP
        // port-unreachable is only noticed on the SYN's retransmit, a second later.
        let target = match proto {
            Protocol::Tcp => "REJECT --reject-with tcp-reset",
            Protocol::Udp | Protocol::Sctp => "REJECT --reject-with icmp-port-unreachable",
        };
        let reject = (target, format!("{label} has no endpoints"));
        (Some(reject.clone()), Some(reject))
    } else {
        let drop = ("DROP", format!("{label} has no local endpoints"));
        (
            (!has_internal).then(|| drop.clone()),
            (!has_external).then_some(drop),
        )
    };

    let mut out = ServiceRules::default();
    let cluster_ip_match = || {
        RuleSpec::new()
            .destination_ip(svc.cluster_ip)
            .protocol(proto)
            .comment(&format!("{label} cluster IP"))
            .dport(svc.port)
    };
    if has_internal {
        out.cluster_ip = Some(cluster_ip_match().jump(internal_chain));
    } else if let Some((target, comment)) = &internal_block {
        out.filter_cluster_ip = Some(
            RuleSpec::new()
                .destination_ip(svc.cluster_ip)
                .protocol(proto)
                .comment(comment)
                .dport(svc.port)
                .jump(target),
        );
    }

    if let Some(node_port) = svc.node_port {
        if eps.any {
            out.node_port = Some(
                RuleSpec::new()
                    .protocol(proto)
                    .comment(&label)
                    .dport(node_port)
                    .jump(&ext_chain),
            );
        }
        if let Some((target, comment)) = &external_block {
            out.filter_node_port = Some(
                RuleSpec::new()
                    .protocol(proto)
                    .comment(comment)
                    .matched("-m addrtype --dst-type LOCAL")
                    .dport(node_port)
                    .jump(target),
            );
        }
    }

    // Masquerade ClusterIP traffic that may leave the node with a source the
    // endpoint cannot answer (from outside the cluster network, or always).
    let masquerade = if !has_internal {
        None
    } else if cfg.masquerade_all {
        Some(cluster_ip_match().jump(MARK_MASQ))
    } else {
        cfg.cluster_cidr
            .map(|cidr| cluster_ip_match().not_source(cidr).jump(MARK_MASQ))
    };

    if eps.any && svc.externally_accessible() {
        let mut ext = Vec::new();
        if !external_local {
            // The endpoint may be on another node: masquerade so replies come back here.
            ext.push(
                RuleSpec::new()
                    .comment(&format!(
                        "masquerade traffic for {label} external destinations"
                    ))
                    .jump(MARK_MASQ),
            );
        } else {
            // Pod and host traffic to an external address behaves as if it had
            // gone out to a load balancer and back: any endpoint, not just local.
            if let Some(cidr) = cfg.cluster_cidr {
                ext.push(
                    RuleSpec::new()
                        .source(cidr)
                        .comment(&format!("pod traffic for {label} external destinations"))
                        .jump(&svc_chain),
                );
            }
            ext.push(
                RuleSpec::new()
                    .comment(&format!(
                        "masquerade LOCAL traffic for {label} external destinations"
                    ))
                    .matched("-m addrtype --src-type LOCAL")
                    .jump(MARK_MASQ),
            );
            ext.push(
                RuleSpec::new()
                    .comment(&format!(
                        "route LOCAL traffic for {label} external destinations"
                    ))
                    .matched("-m addrtype --src-type LOCAL")
                    .jump(&svc_chain),
            );
        }
        if has_external {
            ext.push(RuleSpec::new().jump(external_policy_chain));
        }
        out.chains.insert(ext_chain.clone(), ext);
    }

    let sep_chains: BTreeMap<(Ipv4Addr, u16), String> = eps
        .reachable
        .iter()
        .map(|ep| ((ep.ip, ep.port), endpoint_chain(name, ep)))
        .collect();
    // Each policy chain exists only when its policy is in use and has endpoints
    // (categorize leaves the list of an unused policy empty).
    for (chain, chosen) in [(&svc_chain, &eps.cluster), (&svl_chain, &eps.local)] {
        if chosen.is_empty() {
            continue;
        }
        let mut rules = Vec::new();
        if chain == internal_chain {
            rules.extend(masquerade.clone());
        }
        rules.extend(endpoint_dispatch(svc, &label, chosen, &sep_chains));
        out.chains.insert(chain.clone(), rules);
    }

    for ep in &eps.reachable {
        let chain = sep_chains
            .get(&(ep.ip, ep.port))
            .cloned()
            .unwrap_or_default();
        let mut dnat = RuleSpec::new().protocol(proto).comment(&label);
        if svc.affinity_seconds.is_some() {
            dnat = dnat.matched(&format!(
                "-m recent --set --name {chain} --mask 255.255.255.255 --rsource"
            ));
        }
        let rules = vec![
            // Hairpin: an endpoint reaching itself through the Service needs a
            // source other than its own address.
            RuleSpec::new()
                .source_ip(ep.ip)
                .comment(&label)
                .jump(MARK_MASQ),
            dnat.proto_match()
                .jump(&format!("DNAT --to-destination {}", ep.address())),
        ];
        out.chains.insert(chain, rules);
    }
    out
}

/// Affinity lookups first (a client seen within the timeout goes back to its
/// endpoint), then an even random spread: rule i of n matches with 1/(n-i).
fn endpoint_dispatch(
    svc: &ServicePort,
    label: &str,
    endpoints: &[&Endpoint],
    sep_chains: &BTreeMap<(Ipv4Addr, u16), String>,
) -> Vec<String> {
    let chain_of = |ep: &Endpoint| {
        sep_chains
            .get(&(ep.ip, ep.port))
            .map(String::as_str)
            .unwrap_or_default()
    };
    let mut rules = Vec::new();
    let comment = |ep: &Endpoint| format!("{label} -> {}", ep.address());
    if let Some(seconds) = svc.affinity_seconds {
        for ep in endpoints {
            let chain = chain_of(ep);
            rules.push(
                RuleSpec::new()
                    .comment(&comment(ep))
                    .matched(&format!(
                        "-m recent --rcheck --seconds {seconds} --reap --name {chain} --mask 255.255.255.255 --rsource"
                    ))
                    .jump(chain),
            );
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let mut rule = RuleSpec::new().comment(&comment(ep));
        if i + 1 < n {
            rule = rule.matched(&format!(
                "-m statistic --mode random --probability {}",
                probability(n - i)
            ));
        }
        rules.push(rule.jump(chain_of(ep)));
    }
    rules
}

fn prefix24(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 24).map(|n| n.trunc()).unwrap_or_default()
}

/// `NC-SVCS-10.96.3`: the dispatch chain of ClusterIPs in 10.96.3.0/24. The
/// prefix itself is short and stable, so it is the name (readable in iptables-save).
pub fn prefix_chain(prefix: Ipv4Net) -> String {
    let [a, b, c, _] = prefix.network().octets();
    format!("NC-SVCS-{a}.{b}.{c}")
}

/// `NC-SVC-`, `NC-SVL-` or `NC-EXT-` + kube-proxy's hash of the service port.
pub fn service_chain(kind: &str, name: &ServicePortName) -> String {
    format!(
        "{CHAIN_PREFIX}{kind}-{}",
        hash16(&format!("{name}{}", name.protocol.iptables_name()))
    )
}

/// `NC-SEP-` + kube-proxy's hash of the service port and endpoint.
pub fn endpoint_chain(name: &ServicePortName, ep: &Endpoint) -> String {
    format!(
        "{CHAIN_PREFIX}SEP-{}",
        hash16(&format!(
            "{name}{}{}",
            name.protocol.iptables_name(),
            ep.address()
        ))
    )
}

/// The first 16 base32 characters of SHA-256 (80 bits), as kube-proxy's names.
fn hash16(input: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(input.as_bytes());
    let bits = digest
        .iter()
        .take(10)
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    (0..16)
        .rev()
        .map(|i| char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]))
        .collect()
}

/// Whether a chain is ours.
pub fn is_owned(chain: &str) -> bool {
    chain.starts_with(CHAIN_PREFIX)
}

#[cfg(test)]
mod tests;
