//! The node loop (Kubelet mode): registers the Node and keeps it as
//! [`crate::node::build`] builds it, as the kubelet's node status loop does: every
//! [`NODE_STATUS_UPDATE_FREQUENCY`] (and at once when the configuration or the
//! runtime changes) it reads the Node and writes only what differs: labels by
//! server-side apply, podCIDR and taints by merge patch, status by server-side
//! apply when a condition changes or the report period is over.
//!
//! It also publishes the Node's owner reference, which the node Lease carries,
//! and a [`NodeReport`] of what the API server refused (Degraded).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{GetParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use nodeconfig_crds::{NodeMode, NodeTaint, PodsSpec};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::edge::host::HostFacts;
use crate::node::build::{self, NodeInputs, PodCidrPlan};
use crate::reports::{ConfigReport, NodeProblem, NodeReport, PressureReport, RuntimeReport};
use crate::serve::metrics::{Metrics, WriteResult};
use crate::FIELD_MANAGER;

/// How often the loop reads the Node and compares (the kubelet's `nodeStatusUpdateFrequency`).
pub const NODE_STATUS_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);

/// Longest wait at start-up for the first NodeConfig decision and runtime check
/// before the Node is written anyway (so a restart does not flap it NotReady).
const STARTUP_SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// Errors of one sync, naming the node and the step.
#[derive(Debug, thiserror::Error)]
#[error("{action} Node {node}: {source}")]
pub struct NodeSyncError {
    node: String,
    action: &'static str,
    #[source]
    source: kube::Error,
}

/// The node loop's inputs and outputs.
pub struct NodeSync {
    /// The kubelet endpoint's port, when the agent serves it (Kubelet mode).
    pub kubelet_port: Option<u16>,
    pub api: Api<Node>,
    pub node_name: String,
    pub internal_ip: Option<IpAddr>,
    pub host: HostFacts,
    pub config: watch::Receiver<ConfigReport>,
    pub runtime: watch::Receiver<RuntimeReport>,
    /// The eviction loop's pressure conditions.
    pub pressure: watch::Receiver<PressureReport>,
    pub report: watch::Sender<NodeReport>,
    /// The Node as owner of its Lease; None while the agent does not keep the Node.
    pub owner: watch::Sender<Option<OwnerReference>>,
    pub metrics: Metrics,
    pub heartbeat: crate::serve::health::LoopHeartbeat,
}

/// What the loop remembers between syncs.
#[derive(Default)]
struct Memory {
    last_status_report: Option<Instant>,
    last_labels: Option<BTreeMap<String, String>>,
    /// spec.pods.taints the API server refused to let the node write, and why
    /// (kept until the spec's taints change, so the refusal is not repeated every round).
    refused_taints: Option<(Vec<NodeTaint>, String)>,
}

impl NodeSync {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut memory = Memory::default();
        let started = Instant::now();
        let mut tick = tokio::time::interval(NODE_STATUS_UPDATE_FREQUENCY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                changed = self.config.changed() => if changed.is_err() { return },
                changed = self.runtime.changed() => if changed.is_err() { return },
                changed = self.pressure.changed() => if changed.is_err() { return },
            }
            self.heartbeat.beat();
            let config = self.config.borrow_and_update().clone();
            let runtime = self.runtime.borrow_and_update().clone();
            let pressure = self.pressure.borrow_and_update().clone();
            if config.mode != Some(NodeMode::Kubelet) {
                self.owner.send_if_modified(|o| o.take().is_some());
                self.report
                    .send_if_modified(|r| std::mem::take(r) != NodeReport::default());
                memory = Memory::default();
                continue;
            }
            if !crate::status::desired::inputs_settled(&config, &runtime)
                && started.elapsed() < STARTUP_SETTLE_LIMIT
            {
                continue;
            }
            let default_pods = PodsSpec::default();
            let pods = config.applied.as_ref().map_or(&default_pods, |a| &a.pods);
            let report = match self.sync(pods, &runtime, &pressure, &mut memory).await {
                Ok(problems) => NodeReport {
                    registered: true,
                    problems,
                },
                Err(err) => {
                    tracing::warn!(error = %err, "node sync failed; retrying");
                    NodeReport {
                        registered: false,
                        problems: vec![NodeProblem {
                            reason: "NodeSyncFailed",
                            message: err.to_string(),
                        }],
                    }
                }
            };
            self.report.send_if_modified(|r| {
                let changed = *r != report;
                *r = report;
                changed
            });
        }
    }

    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> NodeSyncError + '_ {
        move |source| NodeSyncError {
            node: self.node_name.clone(),
            action,
            source,
        }
    }

    /// One round: register or read the Node, then write what differs.
    async fn sync(
        &self,
        pods: &PodsSpec,
        runtime: &RuntimeReport,
        pressure: &PressureReport,
        memory: &mut Memory,
    ) -> Result<Vec<NodeProblem>, NodeSyncError> {
        let now = Time(Timestamp::now());
        let inputs = NodeInputs {
            name: &self.node_name,
            internal_ip: self.internal_ip,
            host: &self.host,
            pods,
            runtime,
            pressure,
            kubelet_port: self.kubelet_port,
        };
        let mut problems = Vec::new();
        let mut node = match self.read_node().await? {
            Some(node) => node,
            None => {
                let created = self.register(&inputs, &now).await?;
                memory.last_status_report = Some(Instant::now());
                created
            }
        };
        self.owner.send_if_modified(|owner| {
            let wanted = node_owner(&node);
            let changed = *owner != wanted;
            *owner = wanted;
            changed
        });

        let labels = build::desired_labels(&inputs);
        if build::labels_need_apply(&labels, memory.last_labels.as_ref(), &node) {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let apply = Patch::Apply(build::labels_apply(&inputs));
            node = self
                .api
                .patch(&self.node_name, &params, &apply)
                .await
                .map_err(self.err("labelling"))?;
            tracing::info!(?labels, "Node labels applied");
            memory.last_labels = Some(labels);
        }

        match build::pod_cidr_plan(pods.pod_cidr.as_deref(), &node) {
            PodCidrPlan::Keep => {}
            PodCidrPlan::Set(cidr) => {
                let patch = Patch::Merge(json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}));
                node = self
                    .api
                    .patch(&self.node_name, &PatchParams::default(), &patch)
                    .await
                    .map_err(self.err("setting podCIDR of"))?;
                tracing::info!(%cidr, "Node podCIDR set");
            }
            PodCidrPlan::Conflict { registered, wanted } => problems.push(NodeProblem {
                reason: "PodCIDRConflict",
                message: format!(
                    "Node {} has podCIDR {registered}, which cannot change; spec.pods.podCIDR {wanted} is not used",
                    self.node_name
                ),
            }),
        }

        match build::taints_to_write(&pods.taints, &node) {
            None => memory.refused_taints = None,
            Some(taints) => match &memory.refused_taints {
                Some((refused, why)) if *refused == pods.taints => problems.push(NodeProblem {
                    reason: "NodeTaintsRefused",
                    message: why.clone(),
                }),
                _ => {
                    // resourceVersion: fail rather than drop a taint a controller added meanwhile.
                    let patch = Patch::Merge(json!({
                        "metadata": {"resourceVersion": node.resource_version()},
                        "spec": {"taints": taints},
                    }));
                    match self
                        .api
                        .patch(&self.node_name, &PatchParams::default(), &patch)
                        .await
                    {
                        Ok(patched) => {
                            tracing::info!(?taints, "Node taints updated");
                            node = patched;
                            memory.refused_taints = None;
                        }
                        // The Node changed since it was read (the read comes from the API server's cache).
                        Err(kube::Error::Api(status)) if status.code == 409 => {
                            tracing::debug!(
                                "Node changed while its taints were written; next round"
                            );
                        }
                        Err(kube::Error::Api(status))
                            if status.code == 403 || status.code == 422 =>
                        {
                            let why = format!(
                                "the API server refused the taints of spec.pods.taints on Node {} ({}); a node may set its taints only when it registers, so they apply when the Node is created",
                                self.node_name, status.message
                            );
                            tracing::warn!(%why, "Node taints not updated");
                            problems.push(NodeProblem {
                                reason: "NodeTaintsRefused",
                                message: why.clone(),
                            });
                            memory.refused_taints = Some((pods.taints.clone(), why));
                        }
                        Err(err) => return Err(self.err("tainting")(err)),
                    }
                }
            },
        }

        let current_conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let status = build::desired_status(&inputs, &current_conditions, &now);
        let since = memory.last_status_report.map(|at| at.elapsed());
        if build::status_needs_update(&status, node.status.as_ref(), since) {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let apply = Patch::Apply(build::status_apply(&self.node_name, status));
            match self
                .api
                .patch_status(&self.node_name, &params, &apply)
                .await
            {
                Ok(_) => {
                    self.metrics.node_status_update(WriteResult::Success);
                    memory.last_status_report = Some(Instant::now());
                    tracing::debug!("Node status written");
                }
                Err(err) => {
                    self.metrics.node_status_update(WriteResult::Error);
                    return Err(self.err("writing the status of")(err));
                }
            }
        }
        Ok(problems)
    }

    /// The Node, from the API server's watch cache (resourceVersion 0) as the
    /// kubelet reads it every round, so that a thousand nodes do not each
    /// cost a quorum read every 10s.
    async fn read_node(&self) -> Result<Option<Node>, NodeSyncError> {
        match self.api.get_with(&self.node_name, &GetParams::any()).await {
            Ok(node) => Ok(Some(node)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(err) => Err(self.err("reading")(err)),
        }
    }

    async fn register(&self, inputs: &NodeInputs<'_>, now: &Time) -> Result<Node, NodeSyncError> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match self
            .api
            .create(&params, &build::registration(inputs, now))
            .await
        {
            Ok(node) => {
                tracing::info!("Node registered");
                self.metrics.node_status_update(WriteResult::Success);
                Ok(node)
            }
            // Registered meanwhile (a previous run, or a race): keep it, as the kubelet does.
            Err(kube::Error::Api(status)) if status.code == 409 => self
                .api
                .get(&self.node_name)
                .await
                .map_err(self.err("reading")),
            Err(err) => Err(self.err("registering")(err)),
        }
    }
}

fn node_owner(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.name_any(),
        uid: node.uid()?,
        ..Default::default()
    })
}
