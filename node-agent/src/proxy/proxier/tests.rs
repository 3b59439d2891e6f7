//! The proxier's decisions against a fake kernel that interprets restore input
//! the way `iptables-restore --noflush` does (for the commands we emit), and
//! refuses what iptables would refuse.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::proxy::model::{Model, SERVICE_NAME_LABEL};
use crate::proxy::plan::{CANARY, SERVICES};
use crate::proxy::ruleset::Table;

/// Our part of a kernel's nat and filter tables.
#[derive(Default)]
struct FakeKernel {
    state: RuleSet,
    restores: Vec<String>,
    fail_next_restore: bool,
    /// iptables-save reads: costly on a real kernel.
    full_reads: usize,
}

impl FakeKernel {
    fn apply(&self, input: &str) -> Result<RuleSet, String> {
        let mut state = self.state.clone();
        let mut table = Table::Nat;
        for line in input.lines() {
            let words: Vec<&str> = line.splitn(3, ' ').collect();
            let t = state.table_mut(table);
            match words.as_slice() {
                ["*nat"] => table = Table::Nat,
                ["*filter"] => table = Table::Filter,
                ["COMMIT"] => {}
                [decl, "-", "[0:0]"] if decl.starts_with(':') => {
                    t.chains.insert(decl[1..].to_string(), Vec::new());
                }
                ["-A", chain, rule] => match t.chains.get_mut(*chain) {
                    Some(rules) => rules.push(rule.to_string()),
                    None => return Err(format!("{line}: no chain {chain}")),
                },
                ["-I", chain, rest] => {
                    let rule = rest.strip_prefix("1 ").ok_or(format!("{line}: position"))?;
                    t.jumps
                        .entry(chain.to_string())
                        .or_default()
                        .insert(0, rule.to_string());
                }
                ["-D", chain, rule] => {
                    let rules = t
                        .jumps
                        .get_mut(*chain)
                        .ok_or(format!("{line}: no such rule"))?;
                    let at = rules
                        .iter()
                        .position(|r| r == rule)
                        .ok_or(format!("{line}: no such rule"))?;
                    rules.remove(at);
                    if rules.is_empty() {
                        t.jumps.remove(*chain);
                    }
                }
                ["-X", chain] => {
                    if !t.chains.get(*chain).is_some_and(Vec::is_empty) {
                        return Err(format!("{line}: missing or not empty"));
                    }
                    let target = format!("-j {chain}");
                    if t.chains
                        .values()
                        .chain(t.jumps.values())
                        .flatten()
                        .any(|r| r.ends_with(&target))
                    {
                        return Err(format!("{line}: still referenced"));
                    }
                    t.chains.remove(*chain);
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        Ok(state)
    }

    /// `iptables -t nat -F; iptables -t nat -X`: everything of ours in nat is gone.
    fn flush_nat(&mut self) {
        self.state.nat = Default::default();
    }
}

impl Iptables for FakeKernel {
    fn restore(&mut self, input: &str) -> Result<(), ProxyError> {
        self.restores.push(input.to_string());
        if std::mem::take(&mut self.fail_next_restore) {
            return Err(ProxyError::Restore {
                status: "exit status: 1".into(),
                at: String::new(),
                stderr: "injected".into(),
            });
        }
        let state = self.apply(input).map_err(|stderr| ProxyError::Restore {
            status: "exit status: 2".into(),
            at: String::new(),
            stderr,
        })?;
        self.state = state;
        Ok(())
    }

    fn installed(&mut self) -> Result<RuleSet, ProxyError> {
        self.full_reads += 1;
        Ok(self.state.clone())
    }

    fn jumps(&mut self) -> Result<RuleSet, ProxyError> {
        let mut jumps = self.state.clone();
        jumps.nat.chains.clear();
        jumps.filter.chains.clear();
        Ok(jumps)
    }

    fn canary_present(&mut self) -> Result<bool, ProxyError> {
        let canary = |t: Table| {
            self.state
                .table(t)
                .chains
                .get(CANARY)
                .is_some_and(|r| r.len() == 1)
        };
        Ok(canary(Table::Nat) && canary(Table::Filter))
    }

    fn chain_rules(
        &mut self,
        table: Table,
        chain: &str,
    ) -> Result<Option<Vec<String>>, ProxyError> {
        Ok(self.state.table(table).chains.get(chain).cloned())
    }
}

fn service(name: &str, ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(format!("{service}-abc")),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                service.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(
            ips.iter()
                .map(|ip| Endpoint {
                    addresses: vec![ip.to_string()],
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        ips: vec!["192.168.1.10".parse().unwrap()],
        zone: None,
    }
}

fn cfg() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..ProxyConfig::default()
    }
}

fn inputs(services: &[Service], slices: &[EndpointSlice]) -> ProxyInputs {
    ProxyInputs::from_objects(services, slices)
}

fn desired(services: &[Service], slices: &[EndpointSlice]) -> RuleSet {
    crate::proxy::plan::plan(&Model::build(services, slices), &node(), &cfg()).rules
}

#[test]
fn first_sync_is_full_then_partial_writes_only_changes() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10"), service("b", "10.96.1.10")];
    let slices = vec![slice("a", &["10.244.1.1"]), slice("b", &["10.244.1.2"])];
    // One set of inputs throughout, as the proxy loop keeps it.
    let mut watched = inputs(&services, &slices);
    let report = proxier.sync(&mut watched, &node(), &cfg(), false).unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::UnknownState));
    assert_eq!(
        proxier.iptables_mut().full_reads,
        1,
        "nothing known: read back once"
    );
    assert_eq!((report.service_ports, report.endpoints), (2, 2));
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));

    // Nothing changed: no restore at all, nothing planned.
    let report = proxier.sync(&mut watched, &node(), &cfg(), false).unwrap();
    assert_eq!((report.mode, report.restore_bytes), (SyncMode::Partial, 0));
    assert_eq!(report.ports_planned, 0);
    assert_eq!(proxier.iptables_mut().restores.len(), 1);

    // One more endpoint for b: its /24 dispatch chain is untouched, only b's chains.
    let slices = vec![
        slice("a", &["10.244.1.1"]),
        slice("b", &["10.244.1.2", "10.244.1.3"]),
    ];
    watched.apply_slice(&slices[1]);
    let report = proxier.sync(&mut watched, &node(), &cfg(), false).unwrap();
    assert_eq!(report.mode, SyncMode::Partial);
    assert_eq!(report.ports_planned, 1);
    assert_eq!(
        (report.chains_written, report.chains_deleted),
        (2, 0),
        "NC-SVC of b and the new NC-SEP"
    );
    let last = proxier.iptables_mut().restores.last().unwrap().clone();
    assert!(
        !last.contains(&format!(":{SERVICES} ")) && !last.contains("NC-SVCS-"),
        "{last}"
    );
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));

    // Deleting b removes its chains and its /24.
    watched.delete_service(&services[1]);
    watched.delete_slice(&slices[1]);
    let report = proxier.sync(&mut watched, &node(), &cfg(), false).unwrap();
    assert_eq!(
        report.chains_deleted, 4,
        "NC-SVCS-10.96.1, NC-SVC and two NC-SEP"
    );
    assert_eq!(
        proxier.iptables_mut().state,
        desired(&services[..1], &slices[..1])
    );
    assert_eq!(proxier.counters().full_syncs, 1);
    assert_eq!(proxier.counters().partial_syncs, 3);
}

#[test]
fn a_flushed_table_is_noticed_and_repaired_with_a_full_sync() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10")];
    let slices = vec![slice("a", &["10.244.1.1"])];
    proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    proxier.iptables_mut().flush_nat();
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(
        (report.mode, report.full_reason),
        (SyncMode::Full, Some(FullSyncReason::CanaryMissing))
    );
    assert_eq!(
        proxier.iptables_mut().full_reads,
        1,
        "repaired from what was applied, not read back"
    );
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));
    assert_eq!(proxier.counters().canary_missing, 1);
}

#[test]
fn a_flushed_services_chain_is_noticed_although_the_canary_stands() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10"), service("b", "10.96.1.10")];
    let slices = vec![slice("a", &["10.244.1.1"]), slice("b", &["10.244.1.2"])];
    proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    let quiet = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(quiet.full_reason, None, "an intact chain is trusted");
    // `iptables -t nat -F NC-SERVICES`: every ClusterIP stops working.
    let kernel = proxier.iptables_mut();
    kernel.state.nat.chains.get_mut(SERVICES).unwrap().clear();
    assert!(kernel.canary_present().unwrap());
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(
        (report.mode, report.full_reason),
        (SyncMode::Full, Some(FullSyncReason::ServicesChainChanged))
    );
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));
    assert_eq!(proxier.counters().services_chain_changed, 1);
    // One rule edited by hand counts too.
    let kernel = proxier.iptables_mut();
    kernel.state.nat.chains.get_mut(SERVICES).unwrap()[0].push_str(" -m mark");
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(
        report.full_reason,
        Some(FullSyncReason::ServicesChainChanged)
    );
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));
}

#[test]
fn the_services_chain_is_trusted_only_as_applied() {
    let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut applied = RuleSet::default();
    applied.nat.chains.insert(
        SERVICES.into(),
        rules(&["-d 10.96.0.0/24 -j NC-SVCS-10.96.0"]),
    );
    let check = |applied: Option<&RuleSet>, listed: Option<&[&str]>| {
        let listed = listed.map(rules);
        chain_as_applied(
            applied.and_then(|a| a.nat.chains.get(SERVICES)),
            listed.as_deref(),
        )
    };
    assert!(check(
        Some(&applied),
        Some(&["-d 10.96.0.0/24 -j NC-SVCS-10.96.0"])
    ));
    assert!(!check(Some(&applied), Some(&[])), "flushed");
    assert!(!check(Some(&applied), None), "deleted");
    assert!(
        !check(
            Some(&applied),
            Some(&["-d 10.96.0.0/24 -j NC-SVCS-10.96.0", "-j DROP"])
        ),
        "a rule added"
    );
    assert!(
        !check(
            Some(&applied),
            Some(&["-d 10.96.1.0/24 -j NC-SVCS-10.96.0"])
        ),
        "edited"
    );
    assert!(!check(None, Some(&[])), "nothing applied to compare with");
    assert!(
        !check(Some(&RuleSet::default()), Some(&[])),
        "the chain was never written"
    );
}

#[test]
fn a_failed_restore_keeps_the_old_rules_and_forces_a_full_sync() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10")];
    let before = vec![slice("a", &["10.244.1.1"])];
    proxier
        .sync(&mut inputs(&services, &before), &node(), &cfg(), false)
        .unwrap();
    let after = vec![slice("a", &["10.244.1.9"])];
    proxier.iptables_mut().fail_next_restore = true;
    let err = proxier
        .sync(&mut inputs(&services, &after), &node(), &cfg(), false)
        .unwrap_err();
    assert_eq!(err.metric_label(), "restore");
    assert_eq!(proxier.iptables_mut().state, desired(&services, &before));
    assert_eq!(proxier.applied(), None);
    assert_eq!(proxier.counters().failed_syncs, 1);

    let report = proxier
        .sync(&mut inputs(&services, &after), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::UnknownState));
    assert_eq!(proxier.iptables_mut().state, desired(&services, &after));
}

#[test]
fn a_full_sync_removes_what_an_earlier_agent_left() {
    let mut kernel = FakeKernel::default();
    let old = vec![service("gone", "10.96.3.3")];
    let old_slices = vec![slice("gone", &["10.244.1.1"])];
    kernel.state = desired(&old, &old_slices);
    let mut proxier = Proxier::new(kernel);
    let services = vec![service("a", "10.96.0.10")];
    let slices = vec![slice("a", &["10.244.1.1"])];
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), true)
        .unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::UnknownState));
    assert_eq!(report.chains_deleted, 3);
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));
}

#[test]
fn turning_the_proxy_off_removes_every_rule_once() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10")];
    let slices = vec![slice("a", &["10.244.1.1"])];
    proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    let off = ProxyConfig {
        enabled: false,
        ..cfg()
    };
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &off, false)
        .unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::Disabled));
    assert!(
        proxier.iptables_mut().state.is_empty(),
        "{:?}",
        proxier.iptables_mut().state
    );
    proxier
        .sync(&mut inputs(&services, &slices), &node(), &off, false)
        .unwrap();
    assert_eq!(
        proxier.iptables_mut().restores.len(),
        2,
        "nothing left to remove the second time"
    );

    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(report.full_reason, Some(FullSyncReason::UnknownState));
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));
}

#[test]
fn cleanup_leaves_nothing_of_ours() {
    let mut proxier = Proxier::new(FakeKernel::default());
    proxier
        .sync(
            &mut inputs(
                &[service("a", "10.96.0.10")],
                &[slice("a", &["10.244.1.1"])],
            ),
            &node(),
            &cfg(),
            false,
        )
        .unwrap();
    let removed = proxier.cleanup().unwrap();
    assert!(removed > 10);
    assert!(proxier.iptables_mut().state.is_empty());
}

#[test]
fn bad_objects_are_reported_and_the_rest_syncs() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10"), service("bad", "10.96.0.300")];
    let slices = vec![slice("a", &["10.244.1.1", "not-an-ip"])];
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    assert_eq!(report.service_ports, 1);
    let reasons: Vec<String> = report.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(
        reasons,
        [
            "Service default/bad: bad clusterIP \"10.96.0.300\"",
            "EndpointSlice default/a-abc: bad endpoint address \"not-an-ip\""
        ]
    );
    assert!(report.skipped.iter().all(|s| s.reason.is_malformed()));
}

#[test]
fn a_requested_full_sync_rewrites_everything_without_reading_it_back() {
    let mut proxier = Proxier::new(FakeKernel::default());
    let services = vec![service("a", "10.96.0.10")];
    let slices = vec![slice("a", &["10.244.1.1"])];
    proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), false)
        .unwrap();
    // Someone deletes our PREROUTING jump by hand; the canary stays.
    proxier.iptables_mut().state.nat.jumps.remove("PREROUTING");
    let report = proxier
        .sync(&mut inputs(&services, &slices), &node(), &cfg(), true)
        .unwrap();
    assert_eq!(
        (report.mode, report.full_reason),
        (SyncMode::Full, Some(FullSyncReason::Requested))
    );
    assert_eq!(report.chains_written, report.chains);
    assert_eq!(
        proxier.iptables_mut().full_reads,
        1,
        "only the first sync read the tables back"
    );
    assert_eq!(proxier.iptables_mut().state, desired(&services, &slices));
}
