//! The rule planner: the desired rules for one node, in kube-proxy's
//! iptables-mode shape, under our own `NC-` chains. Pure.
//!
//! Packet paths (nat): PREROUTING/OUTPUT → NC-SERVICES → (NC-SVCS-<a.b.c>, one
//! per /24 of ClusterIPs, external IPs and load balancer IPs) → NC-SVC/NC-SVL-<hash>
//! (cluster / node-local endpoints, random spread, ClientIP affinity) →
//! NC-SEP-<hash> (DNAT); NodePorts go NC-SERVICES → NC-NODEPORTS →
//! NC-EXT-<hash> → NC-SVC/NC-SVL, external IPs straight to NC-EXT, load
//! balancer IPs to NC-EXT or, with source ranges, through NC-FW-<hash> first.
//! Masquerade is a mark set in NC-MARK-MASQ and acted on in NC-POSTROUTING. In
//! filter, NC-SERVICES and NC-EXTERNAL-SERVICES reject (no endpoints) or drop
//! (no local endpoints for a Local policy) new connections; NC-PROXY-FIREWALL
//! drops load balancer traffic NC-FW did not let through; NC-NODEPORTS accepts
//! health check node ports; NC-FORWARD lets marked and established service
//! traffic through a default-drop FORWARD.
//!
//! Endpoints are chosen as kube-proxy's CategorizeEndpoints does, topology
//! hints included (see [`categorize`]).
//!
//! Chain names hash the service port exactly as kube-proxy does (so NC-SVC-X
//! and KUBE-SVC-X name the same service port), within iptables' 28 characters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::config::{Dispatch, NodeInfo, ProxyConfig};
use super::model::{
    Endpoint, Model, ObjectKind, Protocol, ServicePort, ServicePortName, Skip, SkipReason,
    TrafficPolicy,
};
use super::ruleset::{probability, RuleSet, RuleSpec, Table};

/// Every chain we own starts with this; nothing else in the tables is ours
/// except our jumps in the built-in chains.
pub const CHAIN_PREFIX: &str = "NC-";
/// Dispatch of service traffic (nat), and reject/drop of it (filter).
pub const SERVICES: &str = "NC-SERVICES";
pub const NODEPORTS: &str = "NC-NODEPORTS";
pub const POSTROUTING: &str = "NC-POSTROUTING";
pub const MARK_MASQ: &str = "NC-MARK-MASQ";
pub const EXTERNAL_SERVICES: &str = "NC-EXTERNAL-SERVICES";
/// filter: drops load balancer traffic from sources outside loadBalancerSourceRanges.
pub const PROXY_FIREWALL: &str = "NC-PROXY-FIREWALL";
pub const FORWARD: &str = "NC-FORWARD";
/// Holds one rule in both tables; when it or its rule is gone, someone flushed
/// the tables behind our back (an empty chain would survive `iptables -F`).
pub const CANARY: &str = "NC-CANARY";
pub const CANARY_RULE: &str = "-j RETURN";
/// The packet mark bit that asks NC-POSTROUTING to masquerade (kube-proxy's bit).
pub const MASQ_MARK: &str = "0x4000";
/// iptables' limit on chain names.
pub const MAX_CHAIN_NAME: usize = 28;
/// Above this many endpoints in all, the rules that lead to and into the
/// endpoints' chains go without comments, as in kube-proxy's "large cluster
/// mode" (a third less restore text and rule memory at 10,000 Services); the
/// dispatch, masquerade and reject rules still name their service port.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

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
    let mut state = PlanState::default();
    state.update(model, None, node, cfg);
    Plan {
        service_ports: state.service_ports(),
        endpoints: state.endpoints,
        skipped: state.skipped(),
        rules: state.rules,
    }
}

/// The planner between syncs: the desired rule set, what each service port
/// contributed to it, and which chains changed since the set was last applied.
///
/// [`PlanState::update`] plans again only the service ports whose Service or
/// endpoints changed (kube-proxy plans all of them on every sync: at 10,000
/// Services that was most of a partial sync's time), rewrites the dispatch
/// chains they are in, and records each chain it changes with the rules it had,
/// so a partial sync writes only those ([`PlanState::changes`]) and an
/// unchanged chain is neither copied nor compared.
#[derive(Clone, Debug, Default)]
pub struct PlanState {
    /// The node and settings the rules were planned for.
    node: Option<NodeInfo>,
    cfg: Option<ProxyConfig>,
    /// More than [`LARGE_CLUSTER_ENDPOINTS`] endpoints when planned.
    large: bool,
    rules: RuleSet,
    ports: BTreeMap<ServicePortName, PlannedPort>,
    /// ClusterIP /24s with a dispatch chain (numeric order: NC-SERVICES' order).
    prefixes: BTreeSet<Ipv4Net>,
    /// Service ports left out because a chain name of theirs was taken.
    collisions: BTreeMap<ServicePortName, Skip>,
    /// NC-SEP chains in `rules`.
    endpoints: usize,
    /// Chains changed since [`PlanState::commit`], with the rules they had then
    /// (`None`: the chain did not exist).
    touched: BTreeMap<(Table, String), Option<Vec<String>>>,
    /// Service ports the last update planned.
    planned: usize,
}

/// What one service port contributed to the rule set.
#[derive(Clone, Debug)]
struct PlannedPort {
    /// Its own nat chains.
    chains: Vec<String>,
    endpoint_chains: usize,
    /// Its dispatch chain's key (0.0.0.0/0 for linear dispatch).
    prefix: Ipv4Net,
    cluster_ip: Option<String>,
    /// External and load balancer IP captures, with their dispatch chain's key.
    external: Vec<(Ipv4Net, String)>,
    node_port: Option<String>,
    filter_cluster_ip: Option<String>,
    /// Reject/drop of the NodePort, external and load balancer IPs.
    filter_external: Vec<String>,
    /// Drops of load balancer traffic NC-FW did not let through.
    firewall: Vec<String>,
    /// Accepts the health check node port.
    health_check: Option<String>,
}

/// Which shared chains an update must rebuild.
#[derive(Default)]
struct Dirty {
    prefixes: BTreeSet<Ipv4Net>,
    node_ports: bool,
    filter_services: bool,
    filter_external: bool,
    firewall: bool,
    health_checks: bool,
}

impl Dirty {
    fn add(&mut self, port: &PlannedPort) {
        if port.cluster_ip.is_some() {
            self.prefixes.insert(port.prefix);
        }
        self.prefixes.extend(port.external.iter().map(|(p, _)| *p));
        self.node_ports |= port.node_port.is_some();
        self.filter_services |= port.filter_cluster_ip.is_some();
        self.filter_external |= !port.filter_external.is_empty();
        self.firewall |= !port.firewall.is_empty();
        self.health_checks |= port.health_check.is_some();
    }
}

impl PlanState {
    /// The desired rules (all of them).
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Service ports with rules (including reject rules).
    pub fn service_ports(&self) -> usize {
        self.ports.len()
    }

    /// NC-SEP chains.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// Service ports the last update planned afresh.
    pub fn planned(&self) -> usize {
        self.planned
    }

    /// Service ports left out by the planner itself (chain-name collisions).
    pub fn skipped(&self) -> Vec<Skip> {
        self.collisions.values().cloned().collect()
    }

    /// Brings the rules in line with `model`. `changed` names the service
    /// ports whose Service or endpoints changed since the last update; `None`
    /// (or other node or settings) plans every one again. On a chain-name
    /// collision the service port planned first keeps the chain; the other is
    /// retried at every update.
    pub fn update(
        &mut self,
        model: &Model,
        changed: Option<&BTreeSet<ServicePortName>>,
        node: &NodeInfo,
        cfg: &ProxyConfig,
    ) {
        self.planned = 0;
        let large = model.endpoints.values().map(Vec::len).sum::<usize>() > LARGE_CLUSTER_ENDPOINTS;
        let everything = changed.is_none()
            || self.node.as_ref() != Some(node)
            || self.cfg.as_ref() != Some(cfg)
            || self.large != large;
        let names: BTreeSet<ServicePortName> = match changed {
            Some(changed) if !everything => changed
                .iter()
                .chain(self.collisions.keys())
                .cloned()
                .collect(),
            _ => self
                .ports
                .keys()
                .chain(self.collisions.keys())
                .chain(model.services.keys())
                .cloned()
                .collect(),
        };
        if everything {
            self.node = Some(node.clone());
            self.cfg = Some(cfg.clone());
            self.large = large;
        }
        let mut dirty = Dirty::default();
        for name in names {
            self.replan_port(name, model, node, cfg, &mut dirty);
        }
        self.rebuild_dispatch(node, cfg, everything, &dirty.prefixes);
        let collect = |pick: fn(&PlannedPort) -> &Option<String>| -> Vec<String> {
            self.ports
                .values()
                .filter_map(|p| pick(p).clone())
                .collect()
        };
        let collect_all = |pick: fn(&PlannedPort) -> &Vec<String>| -> Vec<String> {
            self.ports.values().flat_map(|p| pick(p).clone()).collect()
        };
        let node_ports = (everything || dirty.node_ports).then(|| collect(|p| &p.node_port));
        let filter_services =
            (everything || dirty.filter_services).then(|| collect(|p| &p.filter_cluster_ip));
        let filter_external =
            (everything || dirty.filter_external).then(|| collect_all(|p| &p.filter_external));
        let firewall = (everything || dirty.firewall).then(|| collect_all(|p| &p.firewall));
        let health_checks =
            (everything || dirty.health_checks).then(|| collect(|p| &p.health_check));
        if let Some(rules) = node_ports {
            self.set_chain(Table::Nat, NODEPORTS, Some(rules));
        }
        if let Some(rules) = filter_services {
            self.set_chain(Table::Filter, SERVICES, Some(rules));
        }
        if let Some(rules) = filter_external {
            self.set_chain(Table::Filter, EXTERNAL_SERVICES, Some(rules));
        }
        if let Some(rules) = firewall {
            self.set_chain(Table::Filter, PROXY_FIREWALL, Some(rules));
        }
        if let Some(rules) = health_checks {
            self.set_chain(Table::Filter, NODEPORTS, Some(rules));
        }
        if everything {
            self.set_fixed_chains();
        }
    }

    /// Removes what `name` contributed and, if the model still has it, plans it again.
    fn replan_port(
        &mut self,
        name: ServicePortName,
        model: &Model,
        node: &NodeInfo,
        cfg: &ProxyConfig,
        dirty: &mut Dirty,
    ) {
        self.collisions.remove(&name);
        if let Some(old) = self.ports.remove(&name) {
            dirty.add(&old);
            self.endpoints -= old.endpoint_chains;
            for chain in &old.chains {
                self.set_chain(Table::Nat, chain, None);
            }
        }
        let Some(svc) = model.services.get(&name) else {
            return;
        };
        self.planned += 1;
        let endpoints = model.endpoints.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        let rules = service_rules(svc, endpoints, node, cfg, !self.large);
        // Service chains are all in nat; a name taken means a hash collision.
        if let Some(taken) = rules
            .chains
            .keys()
            .find(|c| self.rules.nat.chains.contains_key(*c))
        {
            let skip = Skip {
                kind: ObjectKind::Service,
                object: format!("{}/{}", name.namespace, name.name),
                reason: SkipReason::ChainNameCollision(taken.clone()),
            };
            self.collisions.insert(name, skip);
            return;
        }
        let dispatch_key = |ip: Ipv4Addr| match cfg.dispatch {
            Dispatch::Linear => Ipv4Net::default(),
            Dispatch::ByPrefix24 => prefix24(ip),
        };
        let planned = PlannedPort {
            chains: rules.chains.keys().cloned().collect(),
            endpoint_chains: rules
                .chains
                .keys()
                .filter(|c| c.starts_with("NC-SEP-"))
                .count(),
            prefix: dispatch_key(svc.cluster_ip),
            cluster_ip: rules.cluster_ip,
            external: rules
                .external
                .into_iter()
                .map(|(ip, rule)| (dispatch_key(ip), rule))
                .collect(),
            node_port: rules.node_port,
            filter_cluster_ip: rules.filter_cluster_ip,
            filter_external: rules.filter_external,
            firewall: rules.firewall,
            health_check: rules.health_check,
        };
        dirty.add(&planned);
        self.endpoints += planned.endpoint_chains;
        for (chain, chain_rules) in rules.chains {
            self.set_chain(Table::Nat, &chain, Some(chain_rules));
        }
        self.ports.insert(name, planned);
    }

    /// The ClusterIP dispatch: the /24 chains whose service ports changed (all
    /// of them with `everything`), and NC-SERVICES when the set of /24s (or,
    /// for linear dispatch, any capture rule) changed.
    fn rebuild_dispatch(
        &mut self,
        node: &NodeInfo,
        cfg: &ProxyConfig,
        everything: bool,
        dirty: &BTreeSet<Ipv4Net>,
    ) {
        let mut services = Vec::new();
        match cfg.dispatch {
            Dispatch::Linear => {
                if !everything && dirty.is_empty() {
                    return;
                }
                for prefix in std::mem::take(&mut self.prefixes) {
                    self.set_chain(Table::Nat, &prefix_chain(prefix), None);
                }
                for port in self.ports.values() {
                    services.extend(port.cluster_ip.clone());
                    services.extend(port.external.iter().map(|(_, rule)| rule.clone()));
                }
            }
            Dispatch::ByPrefix24 => {
                let mut chains: BTreeMap<Ipv4Net, Vec<String>> = if everything {
                    self.prefixes.iter().map(|p| (*p, Vec::new())).collect()
                } else {
                    dirty.iter().map(|p| (*p, Vec::new())).collect()
                };
                let wanted = |prefix: &Ipv4Net| everything || dirty.contains(prefix);
                for port in self.ports.values() {
                    if let Some(rule) = &port.cluster_ip {
                        if wanted(&port.prefix) {
                            chains.entry(port.prefix).or_default().push(rule.clone());
                        }
                    }
                    for (prefix, rule) in &port.external {
                        if wanted(prefix) {
                            chains.entry(*prefix).or_default().push(rule.clone());
                        }
                    }
                }
                let mut set_changed = everything;
                for (prefix, rules) in chains {
                    let present = !rules.is_empty();
                    set_changed |= if present {
                        self.prefixes.insert(prefix)
                    } else {
                        self.prefixes.remove(&prefix)
                    };
                    self.set_chain(Table::Nat, &prefix_chain(prefix), present.then_some(rules));
                }
                if !set_changed {
                    return;
                }
                services.extend(
                    self.prefixes
                        .iter()
                        .map(|p| RuleSpec::new().destination(*p).jump(&prefix_chain(*p))),
                );
            }
        }
        services.extend(node_port_dispatch(node, cfg));
        self.set_chain(Table::Nat, SERVICES, Some(services));
    }

    /// The chains and jumps that no Service changes.
    fn set_fixed_chains(&mut self) {
        self.set_chain(
            Table::Nat,
            POSTROUTING,
            Some(vec![
                RuleSpec::new()
                    .matched(&format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK}"))
                    .jump("RETURN"),
                RuleSpec::new().jump(&format!("MARK --set-xmark {MASQ_MARK}/0x0")),
                RuleSpec::new()
                    .comment("nodeconfig service traffic requiring SNAT")
                    .jump("MASQUERADE --random-fully"),
            ]),
        );
        self.set_chain(
            Table::Nat,
            MARK_MASQ,
            Some(vec![
                RuleSpec::new().jump(&format!("MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}"))
            ]),
        );
        self.set_chain(Table::Nat, CANARY, Some(vec![CANARY_RULE.into()]));
        self.set_chain(
            Table::Filter,
            FORWARD,
            Some(vec![
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
            ]),
        );
        self.set_chain(Table::Filter, CANARY, Some(vec![CANARY_RULE.into()]));

        let nat = &mut self.rules.nat.jumps;
        let portals = RuleSpec::new()
            .comment("nodeconfig service portals")
            .jump(SERVICES);
        nat.insert("PREROUTING".into(), vec![portals.clone()]);
        nat.insert("OUTPUT".into(), vec![portals]);
        nat.insert(
            "POSTROUTING".into(),
            vec![RuleSpec::new()
                .comment("nodeconfig postrouting rules")
                .jump(POSTROUTING)],
        );
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
        let firewall = new_conn("nodeconfig load balancer firewall", PROXY_FIREWALL);
        let health_checks = RuleSpec::new()
            .comment("nodeconfig health check service ports")
            .jump(NODEPORTS);
        let filter = &mut self.rules.filter.jumps;
        filter.insert(
            "INPUT".into(),
            vec![external.clone(), health_checks, firewall.clone()],
        );
        filter.insert(
            "FORWARD".into(),
            vec![
                RuleSpec::new()
                    .comment("nodeconfig forwarding rules")
                    .jump(FORWARD),
                service.clone(),
                external,
                firewall.clone(),
            ],
        );
        filter.insert("OUTPUT".into(), vec![service, firewall]);
    }

    /// Sets (or with `None` removes) one chain, remembering what it held when
    /// last applied; a chain set back to that is no longer a change.
    fn set_chain(&mut self, table: Table, name: &str, rules: Option<Vec<String>>) {
        let chains = &mut self.rules.table_mut(table).chains;
        if chains.get(name) == rules.as_ref() {
            return;
        }
        let before = match rules {
            Some(rules) => chains.insert(name.to_string(), rules),
            None => chains.remove(name),
        };
        let key = (table, name.to_string());
        match self.touched.get(&key) {
            Some(applied) if applied.as_ref() == chains.get(name) => {
                self.touched.remove(&key);
            }
            Some(_) => {}
            None => {
                self.touched.insert(key, before);
            }
        }
    }

    /// The rules a chain held when last applied (as planned then).
    pub fn applied_chain(&self, table: Table, name: &str) -> Option<&Vec<String>> {
        match self.touched.get(&(table, name.to_string())) {
            Some(before) => before.as_ref(),
            None => self.rules.table(table).chains.get(name),
        }
    }

    /// The chains changed since the last commit: as they are to be, and as
    /// they were when applied (our jumps, which do not change, in both). The
    /// partial restore is rendered from these two small sets.
    pub fn changes(&self) -> (RuleSet, RuleSet) {
        let (mut desired, mut applied) = (RuleSet::default(), RuleSet::default());
        for ((table, name), before) in &self.touched {
            let now = self.rules.table(*table).chains.get(name);
            if now == before.as_ref() {
                continue;
            }
            if let Some(rules) = now {
                desired
                    .table_mut(*table)
                    .chains
                    .insert(name.clone(), rules.clone());
            }
            if let Some(rules) = before {
                applied
                    .table_mut(*table)
                    .chains
                    .insert(name.clone(), rules.clone());
            }
        }
        for table in Table::ALL {
            let jumps = &self.rules.table(table).jumps;
            desired.table_mut(table).jumps = jumps.clone();
            applied.table_mut(table).jumps = jumps.clone();
        }
        (desired, applied)
    }

    /// Chains of ours applied before and now gone from the rules.
    pub fn removed_chains(&self) -> impl Iterator<Item = (Table, &str)> {
        self.touched
            .iter()
            .filter(|((table, name), before)| {
                before.is_some() && !self.rules.table(*table).chains.contains_key(name)
            })
            .map(|((table, name), _)| (*table, name.as_str()))
    }

    /// The rules are in the kernel now: nothing is a change any more.
    pub fn commit(&mut self) {
        self.touched.clear();
    }
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
    /// Its own nat chains (SVC, SVL, EXT, FW, SEPs).
    chains: BTreeMap<String, Vec<String>>,
    /// The ClusterIP capture rule for the dispatch chain.
    cluster_ip: Option<String>,
    /// External and load balancer IP capture rules, by destination, for the dispatch chains.
    external: Vec<(Ipv4Addr, String)>,
    /// The NC-NODEPORTS rule.
    node_port: Option<String>,
    /// Reject/drop of the ClusterIP (filter NC-SERVICES).
    filter_cluster_ip: Option<String>,
    /// Reject/drop of the NodePort, external and load balancer IPs (filter NC-EXTERNAL-SERVICES).
    filter_external: Vec<String>,
    /// Drops in filter NC-PROXY-FIREWALL.
    firewall: Vec<String>,
    /// The health check node port's accept in filter NC-NODEPORTS.
    health_check: Option<String>,
}

/// Which endpoints get traffic, as kube-proxy's CategorizeEndpoints decides:
/// ready ones; only when none is ready anywhere, serving-but-terminating ones
/// (so connections drain through a rollout instead of failing); Local policies
/// see this node's endpoints only; Cluster policies follow the topology hints
/// when [`topology`] says they apply.
struct Categorized<'a> {
    cluster: Vec<&'a Endpoint>,
    local: Vec<&'a Endpoint>,
    /// Cluster ∪ local: the endpoints that get a NC-SEP chain.
    reachable: Vec<&'a Endpoint>,
    /// Some endpoint anywhere can take traffic.
    any: bool,
}

/// Which hints narrow the Cluster-policy endpoints (kube-proxy's topology modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    /// No hints apply: every endpoint.
    All,
    /// Only endpoints hinted for this node (`forNodes`, trafficDistribution PreferSameNode).
    SameNode,
    /// Only endpoints hinted for this node's zone (`forZones`, PreferSameZone/PreferClose).
    SameZone,
}

/// The hints apply only when every ready endpoint carries them and one of
/// them is for this node (node hints) or its zone (zone hints); node hints win.
/// Otherwise all endpoints take traffic, so a half-hinted or foreign-zone slice
/// never blackholes a Service.
fn topology(endpoints: &[Endpoint], node: &NodeInfo) -> Topology {
    let zone = node.zone.as_deref().unwrap_or_default();
    let mut ready = endpoints.iter().filter(|e| e.ready).peekable();
    if ready.peek().is_none() {
        return Topology::All;
    }
    let (mut all_nodes, mut for_node, mut all_zones, mut for_zone) = (true, false, true, false);
    for e in ready {
        let (nodes, zones) = (e.node_hints(), e.zone_hints());
        all_nodes &= !nodes.is_empty();
        for_node |= nodes.contains(&node.name);
        all_zones &= !zones.is_empty();
        for_zone |= zones.iter().any(|z| z == zone);
    }
    if all_nodes && for_node {
        Topology::SameNode
    } else if all_zones && for_zone {
        Topology::SameZone
    } else {
        Topology::All
    }
}

fn categorize<'a>(
    svc: &ServicePort,
    endpoints: &'a [Endpoint],
    node: &NodeInfo,
) -> Categorized<'a> {
    let is_local = |e: &&Endpoint| e.node_name.as_deref() == Some(node.name.as_str());
    let serving_terminating = |e: &&Endpoint| e.serving && e.terminating;
    let uses_cluster = svc.internal_policy == TrafficPolicy::Cluster || svc.externally_accessible();
    let uses_local = svc.internal_policy == TrafficPolicy::Local
        || (svc.externally_accessible() && svc.external_policy == TrafficPolicy::Local);
    let cluster = if uses_cluster {
        let topology = topology(endpoints, node);
        let in_topology = |e: &&Endpoint| match topology {
            Topology::All => true,
            Topology::SameNode => e.node_hints().contains(&node.name),
            Topology::SameZone => {
                let zone = node.zone.as_deref().unwrap_or_default();
                e.zone_hints().iter().any(|z| z == zone)
            }
        };
        let ready: Vec<_> = endpoints
            .iter()
            .filter(|e| e.ready)
            .filter(in_topology)
            .collect();
        if ready.is_empty() {
            // No ready endpoint anywhere (a topology is only chosen with one in it).
            endpoints.iter().filter(serving_terminating).collect()
        } else {
            ready
        }
    } else {
        Vec::new()
    };
    let local = if uses_local {
        let ready: Vec<_> = endpoints
            .iter()
            .filter(is_local)
            .filter(|e| e.ready)
            .collect();
        if ready.is_empty() {
            endpoints
                .iter()
                .filter(is_local)
                .filter(serving_terminating)
                .collect()
        } else {
            ready
        }
    } else {
        Vec::new()
    };
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
    node: &NodeInfo,
    cfg: &ProxyConfig,
    endpoint_comments: bool,
) -> ServiceRules {
    let name = &svc.name;
    let label = name.to_string();
    let proto = name.protocol;
    let svc_chain = service_chain("SVC", name);
    let svl_chain = service_chain("SVL", name);
    let ext_chain = service_chain("EXT", name);
    let fw_chain = service_chain("FW", name);
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
            out.filter_external.push(
                RuleSpec::new()
                    .protocol(proto)
                    .comment(comment)
                    .matched("-m addrtype --dst-type LOCAL")
                    .dport(node_port)
                    .jump(target),
            );
        }
    }

    // External IPs go to the EXT chain, as NodePorts do.
    let to_address = |ip: Ipv4Addr, comment: &str| {
        RuleSpec::new()
            .destination_ip(ip)
            .protocol(proto)
            .comment(comment)
            .dport(svc.port)
    };
    for &ip in svc.external_ips() {
        if eps.any {
            out.external.push((
                ip,
                to_address(ip, &format!("{label} external IP")).jump(&ext_chain),
            ));
        }
        if let Some((target, comment)) = &external_block {
            out.filter_external
                .push(to_address(ip, comment).jump(target));
        }
    }

    // Load balancer IPs go to the EXT chain too, or first through the FW chain
    // when loadBalancerSourceRanges limit who may use them: what it does not
    // let through keeps its destination and is dropped in filter
    // NC-PROXY-FIREWALL. (NodePorts are not limited by the ranges, as in kube-proxy.)
    let lb_ips = svc.load_balancer_ips();
    let uses_firewall = eps.any && !lb_ips.is_empty() && !svc.source_ranges().is_empty();
    let lb_chain = if uses_firewall { &fw_chain } else { &ext_chain };
    for &ip in lb_ips {
        if eps.any {
            out.external.push((
                ip,
                to_address(ip, &format!("{label} loadbalancer IP")).jump(lb_chain),
            ));
        }
        if uses_firewall {
            out.firewall.push(
                to_address(ip, &format!("{label} traffic not accepted by {fw_chain}")).jump("DROP"),
            );
        }
    }
    if let Some((target, comment)) = &external_block {
        for &ip in lb_ips {
            out.filter_external
                .push(to_address(ip, comment).jump(target));
        }
    }
    if uses_firewall {
        let allow = |source: Ipv4Net| {
            RuleSpec::new()
                .source(source)
                .comment(&format!("{label} loadbalancer IP"))
                .jump(&ext_chain)
        };
        let mut fw: Vec<String> = svc.source_ranges().iter().map(|&net| allow(net)).collect();
        // A VIP often is a local address of the node too; the node's own
        // requests to it then come from the VIP itself.
        let node_allowed = svc
            .source_ranges()
            .iter()
            .any(|net| node.ips.iter().any(|ip| net.contains(ip)));
        if node_allowed {
            fw.extend(lb_ips.iter().map(|&ip| allow(Ipv4Net::from(ip))));
        }
        fw.push(
            RuleSpec::new()
                .comment(&format!(
                    "other traffic to {label} will be dropped by {PROXY_FIREWALL}"
                ))
                .no_target(),
        );
        out.chains.insert(fw_chain.clone(), fw);
    }

    // The health check node port is open whether or not there are local endpoints.
    if let Some(port) = svc.health_check_node_port() {
        out.health_check = Some(
            RuleSpec::new()
                .protocol(Protocol::Tcp)
                .comment(&format!("{label} health check node port"))
                .dport(port)
                .jump("ACCEPT"),
        );
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
        let label = endpoint_comments.then_some(label.as_str());
        rules.extend(endpoint_dispatch(svc, label, chosen, &sep_chains));
        out.chains.insert(chain.clone(), rules);
    }

    for ep in &eps.reachable {
        let chain = sep_chains
            .get(&(ep.ip, ep.port))
            .cloned()
            .unwrap_or_default();
        let commented = |rule: RuleSpec| {
            if endpoint_comments {
                rule.comment(&label)
            } else {
                rule
            }
        };
        let mut dnat = commented(RuleSpec::new().protocol(proto));
        if svc.affinity_seconds.is_some() {
            dnat = dnat.matched(&format!(
                "-m recent --set --name {chain} --mask 255.255.255.255 --rsource"
            ));
        }
        let rules = vec![
            // Hairpin: an endpoint reaching itself through the Service needs a
            // source other than its own address.
            commented(RuleSpec::new().source_ip(ep.ip)).jump(MARK_MASQ),
            dnat.proto_match()
                .jump(&format!("DNAT --to-destination {}", ep.address())),
        ];
        out.chains.insert(chain, rules);
    }
    out
}

/// Affinity lookups first (a client seen within the timeout goes back to its
/// endpoint), then an even random spread: rule i of n matches with 1/(n-i).
/// Each names its service port and endpoint when `label` is given.
fn endpoint_dispatch(
    svc: &ServicePort,
    label: Option<&str>,
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
    let commented = |ep: &Endpoint| match label {
        Some(label) => RuleSpec::new().comment(&format!("{label} -> {}", ep.address())),
        None => RuleSpec::new(),
    };
    if let Some(seconds) = svc.affinity_seconds {
        for ep in endpoints {
            let chain = chain_of(ep);
            rules.push(
                commented(ep)
                    .matched(&format!(
                        "-m recent --rcheck --seconds {seconds} --reap --name {chain} --mask 255.255.255.255 --rsource"
                    ))
                    .jump(chain),
            );
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let mut rule = commented(ep);
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
