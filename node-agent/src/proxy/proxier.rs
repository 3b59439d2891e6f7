//! The sync step the proxy loop calls: plan, decide full or partial, render,
//! restore, remember what was applied.
//!
//! The loop (watches, minSyncPeriod burst limit, syncPeriod timer, metrics and
//! status) lives elsewhere; this type holds the only state a sync needs — the
//! set applied last — and reaches iptables only through [`Iptables`], so its
//! decisions are tested with a fake kernel.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::config::{NodeInfo, ProxyConfig};
use super::conntrack::{udp_services, UdpServices};
use super::iptables::Iptables;
use super::model::{Model, Skip};
use super::plan::{plan_incremental, PlanCache, Previous, SERVICES};
use super::render::{render_restore_input, SyncMode};
use super::ruleset::{RuleSet, Table};
use super::ProxyError;

/// Why a sync rewrote all our chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullSyncReason {
    /// The caller asked (the syncPeriod timer).
    Requested,
    /// Nothing applied yet (agent start), or the last sync failed: the
    /// kernel's rules are read back and whatever differs is rewritten.
    UnknownState,
    /// NC-CANARY or its rule was gone: someone flushed the tables.
    CanaryMissing,
    /// The canary stood but nat NC-SERVICES was not what the last sync wrote:
    /// someone flushed or edited that chain.
    ServicesChainChanged,
    /// The proxy is turned off: all our rules are removed.
    Disabled,
}

/// What one sync did, for logs, metrics and the NodeConfig status.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncReport {
    /// How the restore was rendered: every chain (Full), or only the chains
    /// that differ (Partial; also after reading the kernel back on UnknownState).
    pub mode: SyncMode,
    /// Why this was a full sync; `None` for a partial one.
    pub full_reason: Option<FullSyncReason>,
    /// Service ports with rules.
    pub service_ports: usize,
    /// Endpoints with rules (NC-SEP chains).
    pub endpoints: usize,
    /// Rules of ours now in the kernel.
    pub rules: usize,
    pub chains: usize,
    pub chains_written: usize,
    pub chains_deleted: usize,
    /// Size of the restore input; 0 when nothing changed and no restore ran.
    pub restore_bytes: usize,
    /// Objects or ports that got no rules (warn on [`crate::proxy::SkipReason::is_malformed`]).
    pub skipped: Vec<Skip>,
    /// UDP service ports and the endpoints now DNATed to (stale conntrack entries).
    pub udp: UdpServices,
    /// The whole sync: planning, checks, restore.
    pub duration: Duration,
    /// Building the model and planning the rules.
    pub plan_duration: Duration,
    /// Service ports planned afresh (the others reused their last rules).
    pub ports_planned: usize,
    pub restore_duration: Duration,
}

/// Running totals since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    pub syncs: u64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    pub failed_syncs: u64,
    pub canary_missing: u64,
    pub services_chain_changed: u64,
}

/// The service proxy's sync engine for one node.
pub struct Proxier<I> {
    iptables: I,
    /// What the last successful sync left in the kernel; `None` when unknown.
    applied: Option<RuleSet>,
    /// How `applied` was planned, per service port; only with `applied`.
    cache: Option<PlanCache>,
    /// Our rules were removed because the proxy is turned off.
    removed: bool,
    counters: SyncCounters,
}

impl<I: Iptables> Proxier<I> {
    pub fn new(iptables: I) -> Self {
        Self {
            iptables,
            applied: None,
            cache: None,
            removed: false,
            counters: SyncCounters::default(),
        }
    }

    /// The rule set the last successful sync applied.
    pub fn applied(&self) -> Option<&RuleSet> {
        self.applied.as_ref()
    }

    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    pub fn iptables_mut(&mut self) -> &mut I {
        &mut self.iptables
    }

    /// Brings the kernel's rules in line with these Services and EndpointSlices.
    ///
    /// Partial unless `full`, unless nothing is known of the kernel's state (first
    /// sync, a failed one before), the canary is gone, or nat NC-SERVICES is not
    /// what the last sync wrote. On error the previous
    /// rules stay in place (restore commits per table) and the next sync is full.
    /// Runs processes and may take seconds on a large set: call it from a
    /// blocking thread.
    pub fn sync<S, E>(
        &mut self,
        services: impl IntoIterator<Item = S>,
        slices: impl IntoIterator<Item = E>,
        node: &NodeInfo,
        cfg: &ProxyConfig,
        full: bool,
    ) -> Result<SyncReport, ProxyError>
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        let started = Instant::now();
        self.counters.syncs += 1;
        let result = if cfg.enabled {
            self.sync_enabled(services, slices, node, cfg, full, started)
        } else {
            self.disable(started)
        };
        if result.is_err() {
            self.applied = None;
            self.cache = None;
            self.counters.failed_syncs += 1;
        }
        result
    }

    /// Removes every rule of ours (`node-agent cleanup`, or the proxy turned off).
    /// Returns how many rules went.
    pub fn cleanup(&mut self) -> Result<usize, ProxyError> {
        self.applied = None;
        self.cache = None;
        self.iptables.cleanup()
    }

    fn sync_enabled<S, E>(
        &mut self,
        services: impl IntoIterator<Item = S>,
        slices: impl IntoIterator<Item = E>,
        node: &NodeInfo,
        cfg: &ProxyConfig,
        full: bool,
        started: Instant,
    ) -> Result<SyncReport, ProxyError>
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        self.removed = false;
        let model = Model::build(services, slices);
        // Only a partial sync reuses the last planning: the periodic full sync
        // plans every service port again.
        let previous = match (full, self.cache.take(), self.applied.as_ref()) {
            (false, Some(cache), Some(rules)) => Some(Previous { cache, rules }),
            _ => None,
        };
        let (desired, cache) = plan_incremental(&model, node, cfg, previous);
        let plan_duration = started.elapsed();

        let full_reason = if self.applied.is_none() {
            Some(FullSyncReason::UnknownState)
        } else if full {
            Some(FullSyncReason::Requested)
        } else if !self.iptables.canary_present()? {
            self.counters.canary_missing += 1;
            Some(FullSyncReason::CanaryMissing)
        } else if !self.services_chain_intact()? {
            self.counters.services_chain_changed += 1;
            Some(FullSyncReason::ServicesChainChanged)
        } else {
            None
        };
        // What the kernel holds, as cheaply as it can be known. Reading it all
        // back costs as much as writing it on nf_tables, so that happens only
        // when nothing is known; otherwise it is the set applied last, with our
        // jumps in the built-in chains listed afresh for a full sync (so a
        // hand-deleted jump comes back).
        let (current, mode) = match (full_reason, self.applied.take()) {
            (None, Some(applied)) => (applied, SyncMode::Partial),
            (Some(FullSyncReason::UnknownState), _) | (_, None) => {
                (self.iptables.installed()?, SyncMode::Partial)
            }
            (Some(_), Some(mut applied)) => {
                let jumps = self.iptables.jumps()?;
                applied.nat.jumps = jumps.nat.jumps;
                applied.filter.jumps = jumps.filter.jumps;
                (applied, SyncMode::Full)
            }
        };
        let input = render_restore_input(&desired.rules, &current, mode);
        let restore_started = Instant::now();
        if !input.is_empty() {
            self.iptables.restore(&input.text)?;
        }
        let restore_duration = restore_started.elapsed();

        match full_reason {
            Some(_) => self.counters.full_syncs += 1,
            None => self.counters.partial_syncs += 1,
        }
        let udp = udp_services(&model, &desired.rules);
        let mut skipped = model.skipped;
        skipped.extend(desired.skipped);
        let report = SyncReport {
            mode,
            full_reason,
            service_ports: desired.service_ports,
            endpoints: desired.endpoints,
            rules: desired.rules.rule_count(),
            chains: desired.rules.chain_count(),
            chains_written: input.chains_written,
            chains_deleted: input.chains_deleted,
            restore_bytes: input.text.len(),
            skipped,
            udp,
            duration: started.elapsed(),
            plan_duration,
            ports_planned: cache.planned(),
            restore_duration,
        };
        self.applied = Some(desired.rules);
        self.cache = Some(cache);
        Ok(report)
    }

    /// Whether nat NC-SERVICES in the kernel is what the last sync wrote: a
    /// flush of that chain alone (which leaves the canary) stops all service
    /// traffic, and a listing of it costs a few hundred rules at 10,000 Services.
    fn services_chain_intact(&mut self) -> Result<bool, ProxyError> {
        let listed = self.iptables.chain_rules(Table::Nat, SERVICES)?;
        Ok(chain_as_applied(
            self.applied.as_ref(),
            Table::Nat,
            SERVICES,
            listed.as_deref(),
        ))
    }

    fn disable(&mut self, started: Instant) -> Result<SyncReport, ProxyError> {
        let mut report = SyncReport {
            mode: SyncMode::Full,
            full_reason: Some(FullSyncReason::Disabled),
            service_ports: 0,
            endpoints: 0,
            rules: 0,
            chains: 0,
            chains_written: 0,
            chains_deleted: 0,
            restore_bytes: 0,
            skipped: Vec::new(),
            udp: UdpServices::new(),
            duration: Duration::ZERO,
            plan_duration: Duration::ZERO,
            ports_planned: 0,
            restore_duration: Duration::ZERO,
        };
        if !self.removed {
            let restore_started = Instant::now();
            let installed = self.iptables.installed()?;
            let input = super::render::render_cleanup(&installed);
            if !input.is_empty() {
                self.iptables.restore(&input.text)?;
            }
            report.chains_deleted = input.chains_deleted;
            report.restore_bytes = input.text.len();
            report.restore_duration = restore_started.elapsed();
            self.removed = true;
            self.counters.full_syncs += 1;
        }
        self.applied = None;
        self.cache = None;
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// Whether a chain as listed from the kernel (`None`: missing) holds exactly
/// the rules `applied` has for it; nothing applied means nothing to trust.
fn chain_as_applied(
    applied: Option<&RuleSet>,
    table: Table,
    chain: &str,
    listed: Option<&[String]>,
) -> bool {
    match (
        applied.and_then(|a| a.table(table).chains.get(chain)),
        listed,
    ) {
        (Some(want), Some(have)) => want.as_slice() == have,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
