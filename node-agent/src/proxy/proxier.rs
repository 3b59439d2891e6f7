//! The sync step the proxy loop calls: plan, decide full or partial, render,
//! restore, remember what was applied.
//!
//! The loop (watches, minSyncPeriod burst limit, syncPeriod timer, metrics and
//! status) lives elsewhere; this type holds the only state a sync needs — the
//! set applied last — and reaches iptables only through [`Iptables`], so its
//! decisions are tested with a fake kernel.

use std::time::{Duration, Instant};

use super::config::{NodeInfo, ProxyConfig};
use super::conntrack::{udp_services, UdpServices};
use super::error::ProxyError;
use super::inputs::ProxyInputs;
use super::iptables::Iptables;
use super::model::Skip;
use super::plan::{PlanState, SERVICES};
use super::render::{render_restore_input, SyncMode};
use super::ruleset::{RuleSet, Table};

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
    /// The desired rules, planned incrementally, with the chains changed since
    /// they were last applied.
    state: PlanState,
    /// The kernel holds `state`'s rules as of its last commit; false at start
    /// and after a failed sync (the kernel is read back then).
    known: bool,
    /// Our rules were removed because the proxy is turned off.
    removed: bool,
    counters: SyncCounters,
}

/// A sync planned and not applied yet: [`Proxier::plan`] needs the inputs
/// (briefly), [`Proxier::apply`] runs iptables without them.
#[derive(Debug)]
pub struct PlannedSync {
    full: bool,
    enabled: bool,
    started: Instant,
    plan_duration: Duration,
    skipped: Vec<Skip>,
    udp: UdpServices,
}

impl<I: Iptables> Proxier<I> {
    pub fn new(iptables: I) -> Self {
        Self {
            iptables,
            state: PlanState::default(),
            known: false,
            removed: false,
            counters: SyncCounters::default(),
        }
    }

    /// The rule set the last successful sync applied.
    pub fn applied(&self) -> Option<&RuleSet> {
        self.known.then(|| self.state.rules())
    }

    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    pub fn iptables_mut(&mut self) -> &mut I {
        &mut self.iptables
    }

    /// Brings the kernel's rules in line with the inputs: [`Self::plan`], then [`Self::apply`].
    pub fn sync(
        &mut self,
        inputs: &mut ProxyInputs,
        node: &NodeInfo,
        cfg: &ProxyConfig,
        full: bool,
    ) -> Result<SyncReport, ProxyError> {
        let planned = self.plan(inputs, node, cfg, full);
        self.apply(planned)
    }

    /// Plans the rules for the service ports changed in `inputs` since the last
    /// plan (all of them for a `full` sync, other settings or node). Takes
    /// milliseconds, not the time of a restore: hold the inputs only for this.
    pub fn plan(
        &mut self,
        inputs: &mut ProxyInputs,
        node: &NodeInfo,
        cfg: &ProxyConfig,
        full: bool,
    ) -> PlannedSync {
        let started = Instant::now();
        let changed = inputs.take_changed();
        let (skipped, udp) = if cfg.enabled {
            let changed = if full { None } else { changed };
            self.state
                .update(inputs.model(), changed.as_ref(), node, cfg);
            let mut skipped = inputs.skipped();
            skipped.extend(self.state.skipped());
            (skipped, udp_services(inputs.model(), self.state.rules()))
        } else {
            (Vec::new(), UdpServices::new())
        };
        PlannedSync {
            full,
            enabled: cfg.enabled,
            started,
            plan_duration: started.elapsed(),
            skipped,
            udp,
        }
    }

    /// Writes a planned sync: partial unless `full` was asked, unless nothing is
    /// known of the kernel's state (first sync, a failed one before), the canary
    /// is gone, or nat NC-SERVICES is not what the last sync wrote. On error the
    /// previous rules stay in place (restore commits per table) and the next
    /// sync reads the kernel back. Runs processes and may take seconds on a
    /// large set: call it from a blocking thread.
    pub fn apply(&mut self, planned: PlannedSync) -> Result<SyncReport, ProxyError> {
        self.counters.syncs += 1;
        let result = if planned.enabled {
            self.apply_enabled(planned)
        } else {
            self.disable(planned.started)
        };
        if result.is_err() {
            self.known = false;
            self.counters.failed_syncs += 1;
        }
        result
    }

    /// Removes every rule of ours (`node-agent cleanup`, or the proxy turned off).
    /// Returns how many rules went.
    pub fn cleanup(&mut self) -> Result<usize, ProxyError> {
        self.known = false;
        self.iptables.cleanup()
    }

    fn apply_enabled(&mut self, planned: PlannedSync) -> Result<SyncReport, ProxyError> {
        self.removed = false;
        let full_reason = if !self.known {
            Some(FullSyncReason::UnknownState)
        } else if planned.full {
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
        // when nothing is known; a partial sync renders only the chains changed
        // since the last commit; a full one writes every chain, deletes the
        // ones gone since, and lists our jumps in the built-in chains afresh
        // (so a hand-deleted jump comes back).
        let (input, mode) = match full_reason {
            None => {
                let (desired, applied) = self.state.changes();
                (
                    render_restore_input(&desired, &applied, SyncMode::Partial),
                    SyncMode::Partial,
                )
            }
            Some(FullSyncReason::UnknownState) => {
                let installed = self.iptables.installed()?;
                (
                    render_restore_input(self.state.rules(), &installed, SyncMode::Partial),
                    SyncMode::Partial,
                )
            }
            Some(_) => {
                let mut current = self.iptables.jumps()?;
                for (table, chain) in self.state.removed_chains() {
                    current
                        .table_mut(table)
                        .chains
                        .insert(chain.to_string(), Vec::new());
                }
                (
                    render_restore_input(self.state.rules(), &current, SyncMode::Full),
                    SyncMode::Full,
                )
            }
        };
        let restore_started = Instant::now();
        if !input.is_empty() {
            self.iptables.restore(&input.text)?;
        }
        let restore_duration = restore_started.elapsed();
        self.state.commit();
        self.known = true;

        match full_reason {
            Some(_) => self.counters.full_syncs += 1,
            None => self.counters.partial_syncs += 1,
        }
        let rules = self.state.rules();
        Ok(SyncReport {
            mode,
            full_reason,
            service_ports: self.state.service_ports(),
            endpoints: self.state.endpoints(),
            rules: rules.rule_count(),
            chains: rules.chain_count(),
            chains_written: input.chains_written,
            chains_deleted: input.chains_deleted,
            restore_bytes: input.text.len(),
            skipped: planned.skipped,
            udp: planned.udp,
            duration: planned.started.elapsed(),
            plan_duration: planned.plan_duration,
            ports_planned: self.state.planned(),
            restore_duration,
        })
    }

    /// Whether nat NC-SERVICES in the kernel is what the last sync wrote: a
    /// flush of that chain alone (which leaves the canary) stops all service
    /// traffic, and a listing of it costs a few hundred rules at 10,000 Services.
    fn services_chain_intact(&mut self) -> Result<bool, ProxyError> {
        let listed = self.iptables.chain_rules(Table::Nat, SERVICES)?;
        Ok(chain_as_applied(
            self.state.applied_chain(Table::Nat, SERVICES),
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
        self.known = false;
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// Whether a chain as listed from the kernel (`None`: missing) holds exactly
/// the rules applied to it; nothing applied means nothing to trust.
fn chain_as_applied(applied: Option<&Vec<String>>, listed: Option<&[String]>) -> bool {
    match (applied, listed) {
        (Some(want), Some(have)) => want.as_slice() == have,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
