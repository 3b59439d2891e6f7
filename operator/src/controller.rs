//! The leader's controllers: one NodeConfig per Node (with the agents' liveness), the node-agent
//! DaemonSet, and Events for refused defaults. They run only while this replica leads, and are
//! dropped the moment it stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use nodeconfig_crds::conditions::{find_condition, types};
use nodeconfig_crds::{NodeConfig, NodeMode};
use tokio::sync::broadcast;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::cache::{Caches, NodeMeta, Trigger};
use crate::daemonset;
use crate::defaults::Defaults;
use crate::error::{kube as kube_err, Error};
use crate::liveness::{self, Verdict};
use crate::metrics::{Metrics, ReconcileResult};
use crate::nodeconfig::{self, NodeConfigPlan, NodeFacts, FIELD_MANAGER};
use crate::rollout;
use crate::skew;

/// A Node is reconciled at least this often, whatever happens.
const RESYNC: Duration = Duration::from_secs(600);
/// A failed reconcile is tried again after this long, doubling per failure in a row up to
/// `MAX_RETRY`, so that defaults the API server refuses do not hammer it for every Node.
const RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Margin past a Lease's expiry before judging it, so the renewal has time to reach the cache.
const EXPIRY_MARGIN: Duration = Duration::from_millis(500);

/// What a leadership term shares between its controllers.
pub struct Context {
    client: Client,
    caches: Arc<Caches>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// What this term remembers per Node; forgotten when the Node goes.
    memory: Mutex<HashMap<String, NodeMemory>>,
    /// Why the agent rollout was stopped, while it is.
    rollout_stall: Mutex<Option<String>>,
}

/// What a leadership term remembers of one Node.
#[derive(Default)]
struct NodeMemory {
    /// Fingerprint of the last patch applied to its NodeConfig.
    applied: Option<u64>,
    /// When Ready=Unknown was last set on its NodeConfig.
    marked_lost: Option<Instant>,
    /// Failed reconciles in a row.
    failures: u32,
}

impl Context {
    fn remember<T>(&self, node: &str, f: impl FnOnce(&mut NodeMemory) -> T) -> Option<T> {
        let mut memory = self.memory.lock().ok()?;
        Some(f(memory.entry(node.to_string()).or_default()))
    }

    fn forget(&self, node: &str) {
        if let Ok(mut memory) = self.memory.lock() {
            memory.remove(node);
        }
    }
}

/// Runs the leader's controllers until the future is dropped.
pub async fn run_leader_term(
    client: Client,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    identity: String,
    concurrency: u16,
) {
    // Subscribe before waiting, so no change between the sync and the first reconcile is missed.
    let triggers = caches.subscribe();
    caches.wait_synced().await;
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(identity),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        caches,
        metrics,
        memory: Mutex::new(HashMap::new()),
        rollout_stall: Mutex::new(None),
    });
    info!("leading: reconciling Nodes, the agent DaemonSet and the defaults");
    tokio::join!(
        run_nodeconfig_controller(ctx.clone(), triggers, concurrency),
        run_agent_rollout(ctx.clone()),
        report_defaults_problems(ctx),
    );
}

/// Reconciles every Node through kube-runtime's applier (the engine of `Controller`), fed by the
/// caches' triggers rather than by watches of its own, so a new leader starts from warm caches.
async fn run_nodeconfig_controller(
    ctx: Arc<Context>,
    triggers: broadcast::Receiver<Trigger>,
    concurrency: u16,
) {
    let nodes = ctx.caches.nodes.clone();
    let queue = stream::once(async { Trigger::AllNodes })
        .chain(stream::unfold(triggers, |mut rx| async move {
            match rx.recv().await {
                Ok(trigger) => Some((trigger, rx)),
                // Fell behind: some changes were dropped, so look at everything.
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Trigger::AllNodes, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }))
        .flat_map(move |trigger| {
            let names = match trigger {
                Trigger::Node(name) => vec![name],
                Trigger::AllNodes => nodes.state().iter().map(|n| n.name_any()).collect(),
            };
            stream::iter(
                names
                    .into_iter()
                    .map(|name| Ok::<_, Infallible>(ObjectRef::<NodeMeta>::new(&name))),
            )
        });
    let config = controller::Config::default().concurrency(concurrency);
    let store = ctx.caches.nodes.clone();
    let forget = ctx.clone();
    controller::applier(
        |node, ctx| Box::pin(reconcile_node(node, ctx)),
        error_policy,
        ctx,
        store,
        queue,
        config,
    )
    .for_each(|result| {
        match result {
            Ok(_) => {}
            // The Node is gone; its NodeConfig goes with it through its owner reference.
            Err(controller::Error::ObjectNotFound(obj_ref)) => forget.forget(&obj_ref.name),
            Err(error) => debug!(%error, "reconcile did not complete"),
        }
        futures::future::ready(())
    })
    .await;
}

fn error_policy(node: Arc<NodeMeta>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = node.name_any();
    let failures = ctx
        .remember(&name, |m| {
            m.failures = m.failures.saturating_add(1);
            m.failures
        })
        .unwrap_or(1);
    let retry = retry_after(failures);
    warn!(node = %name, %error, failures, retry_in = ?retry, "reconcile failed; retrying");
    ctx.metrics.reconcile_failed(error.metric_label());
    Action::requeue(retry)
}

/// Backoff after `failures` failed reconciles in a row.
fn retry_after(failures: u32) -> Duration {
    RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_RETRY)
}

/// Makes one Node's NodeConfig what the defaults say, and watches over its agent's liveness.
async fn reconcile_node(node: Arc<NodeMeta>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = node.name_any();
    let span = info_span!("reconcile", node = %name);
    async move {
        let _timer = ctx.metrics.reconcile_timer();
        let defaults = ctx.caches.current_defaults();
        let uid = node.metadata.uid.as_deref().ok_or_else(|| Error::NodeWithoutUid(name.clone()))?;
        let empty = Default::default();
        let facts = NodeFacts { name: &name, uid, labels: node.metadata.labels.as_ref().unwrap_or(&empty) };
        let cached = ctx.caches.nodeconfigs.get(&ObjectRef::new(&name));
        let last_applied = ctx.remember(&name, |m| m.applied).flatten();
        let api: Api<NodeConfig> = Api::all(ctx.client.clone());

        let (result, current) = match nodeconfig::plan(&facts, &defaults, cached.as_deref(), last_applied) {
            NodeConfigPlan::Apply { patch, fingerprint } => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let applied = api.patch(&name, &params, &Patch::Apply(&patch)).await.map_err(kube_err("apply", format!("NodeConfig {name}")))?;
                ctx.remember(&name, |m| m.applied = Some(fingerprint));
                let result = match &cached {
                    None => ReconcileResult::created,
                    Some(old) if old.resource_version() != applied.resource_version() => ReconcileResult::updated,
                    Some(_) => ReconcileResult::unchanged,
                };
                if result != ReconcileResult::unchanged {
                    info!(?result, mode = ?applied.spec.mode, "applied NodeConfig");
                    let (reason, note) = match result {
                        ReconcileResult::created => ("Created", format!("NodeConfig created for Node {name} in mode {:?}", applied.spec.mode)),
                        _ => ("DefaultsApplied", "Operator defaults applied".to_string()),
                    };
                    publish(&ctx, &applied.object_ref(&()), EventType::Normal, reason, "Apply", note).await;
                }
                (result, Some(Arc::new(applied)))
            }
            NodeConfigPlan::UpToDate => (ReconcileResult::unchanged, cached),
            NodeConfigPlan::Delete { uid } => {
                let params = DeleteParams { preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }), ..DeleteParams::default() };
                match api.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(kube_err("delete", format!("NodeConfig {name}"))(e)),
                }
                info!("deleted NodeConfig: the Node no longer matches the node selector");
                ctx.remember(&name, |m| m.applied = None);
                let note = format!("NodeConfig {name} deleted: the Node no longer matches the operator's nodeSelector");
                publish(&ctx, &node.object_ref(&()), EventType::Normal, "NodeConfigDeleted", "Delete", note).await;
                (ReconcileResult::deleted, None)
            }
            NodeConfigPlan::Ignore => (ReconcileResult::ignored, None),
        };
        ctx.metrics.reconciled(result);
        ctx.remember(&name, |m| m.failures = 0);

        let recheck = match current {
            Some(nc) => {
                report_version_skew(&ctx, &api, &nc, &defaults.agent.version).await?;
                watch_liveness(&ctx, &api, &nc, defaults.heartbeat_grace_period).await?
            }
            None => None,
        };
        Ok(Action::requeue(recheck.map_or(RESYNC, |r| r.min(RESYNC))))
    }
    .instrument(span)
    .await
}

/// Sets the NodeConfig's AgentUpToDate condition when the agent's reported version and the
/// desired one no longer agree with it.
async fn report_version_skew(
    ctx: &Context,
    api: &Api<NodeConfig>,
    nc: &NodeConfig,
    desired: &str,
) -> Result<(), Error> {
    let status = nc.status.as_ref();
    let current = status.and_then(|s| find_condition(&s.conditions, types::AGENT_UP_TO_DATE));
    let reported = status.and_then(|s| s.agent.as_ref());
    let stall = ctx.rollout_stall.lock().ok().and_then(|s| s.clone());
    let stall = stall.filter(|_| nc.spec.mode == NodeMode::Companion);
    let now = Timestamp::now();
    let Some(condition) =
        skew::up_to_date_condition(desired, reported, stall.as_deref(), current, now)
    else {
        return Ok(());
    };
    apply_condition(api, &nc.name_any(), skew::FIELD_MANAGER, &condition).await?;
    info!(status = %condition.status, message = %condition.message, "agent version");
    if condition.reason == skew::VERSION_SKEW
        && current.is_none_or(|c| c.reason != skew::VERSION_SKEW)
    {
        publish(
            ctx,
            &nc.object_ref(&()),
            EventType::Normal,
            skew::VERSION_SKEW,
            "CompareAgentVersion",
            condition.message,
        )
        .await;
    }
    Ok(())
}

/// Applies one status condition of NodeConfig `name` as `manager` (server-side apply, forced:
/// each manager owns its own condition types).
async fn apply_condition(
    api: &Api<NodeConfig>,
    name: &str,
    manager: &str,
    condition: &Condition,
) -> Result<(), Error> {
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(nodeconfig::condition_patch(name, condition)),
    )
    .await
    .map_err(kube_err("apply status", format!("NodeConfig {name}")))?;
    Ok(())
}

/// Sets Ready=Unknown when the agent's Leases have expired; returns when to look again.
async fn watch_liveness(
    ctx: &Context,
    api: &Api<NodeConfig>,
    nc: &NodeConfig,
    grace: Duration,
) -> Result<Option<Duration>, Error> {
    let name = nc.name_any();
    let leases = liveness::heartbeat_leases(&name, nc.spec.mode, &ctx.caches.namespace);
    let last_renewal = leases
        .iter()
        .filter_map(|key| ctx.caches.lease(key))
        .filter_map(|lease| {
            lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
                .map(|t| t.0)
        })
        .max();
    let now = Timestamp::now();
    match liveness::judge(
        liveness::has_reported(nc.status.as_ref()),
        last_renewal,
        grace,
        now,
    ) {
        Verdict::NeverReported => Ok(None),
        Verdict::Alive { recheck_in } => Ok(Some(recheck_in + EXPIRY_MARGIN)),
        Verdict::Lost { last_renewal } => {
            // An agent that writes its status but renews no Lease would set Ready back at once;
            // answer it once per grace period, not in a tight loop.
            let last_mark = ctx.remember(&name, |m| m.marked_lost).flatten();
            if let Some(wait) = last_mark.and_then(|at| grace.checked_sub(at.elapsed())) {
                return Ok(Some(wait));
            }
            let names = leases
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            let Some(condition) = liveness::heartbeat_lost_condition(
                liveness::ready_condition(nc),
                &names,
                last_renewal,
                grace,
                now,
            ) else {
                return Ok(None);
            };
            apply_condition(api, &name, FIELD_MANAGER, &condition).await?;
            ctx.remember(&name, |m| m.marked_lost = Some(Instant::now()));
            warn!(message = %condition.message, "agent heartbeat lost: Ready=Unknown");
            ctx.metrics.heartbeats_lost.inc();
            publish(
                ctx,
                &nc.object_ref(&()),
                EventType::Warning,
                liveness::HEARTBEAT_LOST,
                "SetReadyUnknown",
                condition.message,
            )
            .await;
            Ok(None)
        }
    }
}

/// Keeps the node-agent DaemonSet as the defaults say: applied when a term starts, when the
/// defaults change, and when someone else changes or deletes it; follows its rollout and stops
/// one that makes no progress within the defaults' `agent.progressDeadline`.
async fn run_agent_rollout(ctx: Arc<Context>) {
    let namespace = ctx.caches.namespace.clone();
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut defaults_rx = ctx.caches.defaults.clone();
    let events = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", daemonset::NAME)),
    )
    .default_backoff();
    let mut events = std::pin::pin!(events);
    // The generation our last apply produced: any other generation means someone else wrote.
    let mut applied_generation: Option<i64> = None;
    let mut applied_spec: Option<DaemonSet> = None;
    let mut due = true;
    // Made from the DaemonSet in the cluster before the first apply, so that a stop decided by
    // an earlier leader holds.
    let mut tracker: Option<rollout::Tracker> = None;
    let mut progress: Option<rollout::Progress> = None;
    // The DaemonSet as last seen, which the rollout's Events regard.
    let mut seen: Option<ObjectReference> = None;
    loop {
        let defaults = ctx.caches.current_defaults();
        if tracker.is_none() {
            match api.get_opt(daemonset::NAME).await {
                Ok(found) => {
                    let stalled = found.as_ref().and_then(rollout::stalled_image);
                    let t = rollout::Tracker::new(&defaults.agent.image, stalled, Instant::now());
                    if let rollout::Phase::Stalled(message) = t.phase() {
                        set_rollout_stall(&ctx, Some(message.clone()));
                    }
                    tracker = Some(t);
                }
                Err(error) => warn!(%error, "reading the node-agent DaemonSet failed; retrying"),
            }
        }
        if let Some(t) = tracker.as_mut() {
            let was_stalled = t.stalled();
            t.target(&defaults.agent.image, Instant::now());
            if was_stalled && !t.stalled() {
                set_rollout_stall(&ctx, None);
                due = true;
            }
        }
        if due {
            if let Some(t) = &tracker {
                let desired = desired_daemonset(&namespace, &defaults, t);
                match apply_daemonset(&ctx, &api, &desired).await {
                    Ok(generation) => {
                        applied_generation = generation;
                        applied_spec = Some(desired);
                        due = false;
                    }
                    Err(error) => {
                        warn!(%error, "applying the node-agent DaemonSet failed; retrying");
                        ctx.metrics.reconcile_failed(error.metric_label());
                    }
                }
            }
        }
        let deadline = defaults.agent.progress_deadline;
        let wait = if due || tracker.is_none() {
            RETRY
        } else {
            RESYNC
        };
        let deadline_in = tracker
            .as_ref()
            .and_then(|t| t.deadline_in(deadline, Instant::now()));
        let timer = tokio::time::sleep(deadline_in.map_or(wait, |d| d.min(wait)));
        tokio::select! {
            _ = timer => {
                if deadline_in.is_some_and(|d| d < wait) {
                    due = follow_rollout(&ctx, tracker.as_mut(), progress.as_ref(), seen.as_ref(), deadline).await || due;
                } else {
                    due = true;
                }
            }
            changed = defaults_rx.changed() => {
                if changed.is_err() { return; }
                let defaults = defaults_rx.borrow_and_update().defaults.clone();
                if let Some(t) = tracker.as_mut() {
                    t.target(&defaults.agent.image, Instant::now());
                    let desired = desired_daemonset(&namespace, &defaults, t);
                    due = due || applied_spec.as_ref() != Some(&desired);
                }
            }
            event = events.next() => match event {
                Some(Ok(Event::Apply(ds) | Event::InitApply(ds))) => {
                    due = due || ds.metadata.generation != applied_generation;
                    progress = rollout::Progress::of(&ds);
                    seen = Some(rollout::event_reference(&ds));
                    due = follow_rollout(&ctx, tracker.as_mut(), progress.as_ref(), seen.as_ref(), deadline).await || due;
                }
                Some(Ok(Event::Delete(_))) => due = true,
                Some(Ok(Event::Init)) => {}
                Some(Ok(Event::InitDone)) => {}
                Some(Err(error)) => warn!(%error, "watch of the node-agent DaemonSet failed; retrying with backoff"),
                None => return,
            },
        }
    }
}

/// The DaemonSet the defaults ask for, stopped when its rollout stalled.
fn desired_daemonset(
    namespace: &str,
    defaults: &Defaults,
    tracker: &rollout::Tracker,
) -> DaemonSet {
    let mut desired = daemonset::desired(namespace, defaults);
    if tracker.stalled() {
        rollout::stop(&mut desired, &defaults.agent.image);
    }
    desired
}

/// Takes in the DaemonSet's progress; on a change of phase, says so (Events on `ds`, the
/// DaemonSet as last seen; the lagging nodes' conditions; the metric). Returns whether the
/// DaemonSet must be applied again.
async fn follow_rollout(
    ctx: &Context,
    tracker: Option<&mut rollout::Tracker>,
    progress: Option<&rollout::Progress>,
    ds: Option<&ObjectReference>,
    deadline: Duration,
) -> bool {
    let (Some(tracker), Some(progress), Some(ds)) = (tracker, progress, ds) else {
        return false;
    };
    let Some(phase) = tracker.observe(progress, deadline, Instant::now()) else {
        return false;
    };
    let image = ctx.caches.current_defaults().agent.image.clone();
    match phase {
        rollout::Phase::Stalled(message) => {
            warn!(%message, "agent rollout stalled; stopping it");
            set_rollout_stall(ctx, Some(message.clone()));
            let note = format!(
                "{message}; the rollout is stopped (updateStrategy OnDelete): set another agent.image or agent.version to roll again"
            );
            publish(
                ctx,
                ds,
                EventType::Warning,
                rollout::STALLED,
                "StopRollout",
                note,
            )
            .await;
            true
        }
        rollout::Phase::Complete if progress.desired > 0 => {
            info!(%image, agents = progress.desired, "agent rollout complete");
            let note = format!(
                "all {} scheduled agents run {image} and are available",
                progress.desired
            );
            publish(
                ctx,
                ds,
                EventType::Normal,
                rollout::COMPLETE,
                "Rollout",
                note,
            )
            .await;
            false
        }
        rollout::Phase::Complete | rollout::Phase::Progressing => false,
    }
}

/// Records whether the agent rollout is stopped, for the lagging nodes' conditions, and has
/// every Node looked at again when that changes.
fn set_rollout_stall(ctx: &Context, stall: Option<String>) {
    ctx.metrics
        .agent_rollout_stalled
        .set(i64::from(stall.is_some()));
    let changed = match ctx.rollout_stall.lock() {
        Ok(mut current) if *current != stall => {
            *current = stall;
            true
        }
        _ => false,
    };
    if changed {
        ctx.caches.trigger_all();
    }
}

async fn apply_daemonset(
    ctx: &Context,
    api: &Api<DaemonSet>,
    desired: &DaemonSet,
) -> Result<Option<i64>, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let before = api
        .get_opt(daemonset::NAME)
        .await
        .map_err(kube_err("get", "DaemonSet node-agent"))?;
    let applied = api
        .patch(daemonset::NAME, &params, &Patch::Apply(desired))
        .await
        .map_err(kube_err("apply", "DaemonSet node-agent"))?;
    let changed =
        before.as_ref().map(|b| b.metadata.generation) != Some(applied.metadata.generation);
    if changed {
        let image = &ctx.caches.current_defaults().agent.image;
        let (reason, note) = match before {
            None => (
                "Created",
                format!("node-agent DaemonSet created with image {image}"),
            ),
            Some(_) => (
                "AgentRolloutUpdated",
                format!("node-agent DaemonSet updated: image {image}"),
            ),
        };
        info!(%image, generation = ?applied.metadata.generation, "applied the node-agent DaemonSet");
        ctx.metrics.agent_rollouts.inc();
        publish(
            ctx,
            &applied.object_ref(&()),
            EventType::Normal,
            reason,
            "Apply",
            note,
        )
        .await;
    }
    Ok(applied.metadata.generation)
}

/// Emits a Warning Event on the defaults ConfigMap for each refused version of it.
async fn report_defaults_problems(ctx: Arc<Context>) {
    let mut defaults_rx = ctx.caches.defaults.clone();
    let mut reported: Option<ObjectReference> = None;
    loop {
        let problem = defaults_rx.borrow_and_update().problem.clone();
        if let Some(problem) = problem {
            if reported.as_ref() != Some(&problem.config_map) {
                let note = format!("{}; the last good defaults stay in force", problem.message);
                publish(
                    &ctx,
                    &problem.config_map,
                    EventType::Warning,
                    "InvalidDefaults",
                    "ParseDefaults",
                    note,
                )
                .await;
                reported = Some(problem.config_map);
            }
        }
        if defaults_rx.changed().await.is_err() {
            return;
        }
    }
}

/// Publishes an Event; a failure is logged, never fatal: Events are for people.
async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, regarding).await {
        warn!(%error, reason, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }
}
