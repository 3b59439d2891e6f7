//! The shell of an in-place resize, for a pod's worker: keeps the pod's
//! [`PodAllocation`] (in the shared map and on disk, [`resize_store`]),
//! admits a requested resize against what the other pods were allocated,
//! applies the allocation to the running containers through
//! `UpdateContainerResources`, and sends the kubelet's resize events. The
//! decisions are [`crate::pods::resize`]'s.
//!
//! A sync goes: [`ResizeSync::begin`] (record new instances, admit a
//! resize) → the planner on the allocated Pod, with the resize restarts →
//! [`ResizeSync::actuate`] (record the instances just started, update the
//! others) → the status with [`resize::apply_status`].
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::locked::Locked;
use crate::pods::container_runtime::ContainerRuntime;
use crate::pods::cri_config::container::resources;
use crate::pods::events::PodEvents;
use crate::pods::resize::{
    self, admit_resize, allocated_pod, plan_resize, PodAllocation, Requests, ResizeAdmission,
    ResizeConditions, POD_RESIZE_IN_PROGRESS, POD_RESIZE_PENDING, REASON_INFEASIBLE,
};
use crate::pods::resize_store;
use crate::pods::runtime_view::PodRuntimeView;

/// Every pod's allocation, by UID: what a resize is admitted against.
pub type Allocations = Mutex<BTreeMap<String, PodAllocation>>;

/// What one sync of one pod needs for its resize.
pub struct ResizeSync<'a> {
    pub cri: &'a dyn ContainerRuntime,
    pub events: &'a PodEvents,
    pub allocations: &'a Allocations,
    pub uid: &'a str,
    /// The pod's directory, where its allocation is kept.
    pub pod_dir: PathBuf,
    /// The node's allocatable cpu and memory.
    pub allocatable: Requests,
    /// For the containers' OOM score in the update.
    pub node_memory_capacity: i64,
}

impl ResizeSync<'_> {
    /// The pod's allocation (kept, or made from the spec for a pod seen for
    /// the first time), with the running instances recorded; a requested
    /// resize is allocated when it fits next to `others` (the other admitted
    /// pods), else returned as the `PodResizePending` (reason, message).
    pub fn begin(
        &self,
        pod: &Pod,
        runtime: &PodRuntimeView,
        others: &[Arc<Pod>],
    ) -> (PodAllocation, Option<(String, String)>) {
        let kept = self.allocations.locked().get(self.uid).cloned();
        let (mut allocation, mut changed) = match kept.or_else(|| resize_store::load(&self.pod_dir))
        {
            Some(a) => (a, false),
            None => (PodAllocation::of(pod), true),
        };
        changed |= allocation.record_started(runtime);
        let mut pending = None;
        if allocation.resize_requested(pod) {
            let used = self.used_by(others);
            match admit_resize(pod, used, self.allocatable) {
                ResizeAdmission::Allocate => {
                    allocation.allocate(pod);
                    changed = true;
                    tracing::info!(generation = ?pod.metadata.generation, "pod resize allocated");
                    self.events.normal(
                        pod,
                        None,
                        "ResizeStarted",
                        resize::event_note(
                            "Pod resize started",
                            pod,
                            pod.metadata.generation,
                            None,
                        ),
                    );
                }
                ResizeAdmission::Pending { reason, message } => {
                    let already = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| {
                            c.type_ == POD_RESIZE_PENDING
                                && c.reason.as_deref() == Some(reason)
                                && c.observed_generation == pod.metadata.generation
                        });
                    if !already {
                        tracing::info!(reason, message, "pod resize pending");
                        let event = if reason == REASON_INFEASIBLE {
                            "ResizeInfeasible"
                        } else {
                            "ResizeDeferred"
                        };
                        self.events.warning(
                            pod,
                            None,
                            event,
                            resize::event_note(
                                &format!("Pod resize {reason}"),
                                pod,
                                pod.metadata.generation,
                                Some(&message),
                            ),
                        );
                    }
                    pending = Some((reason.to_string(), message));
                }
            }
        }
        if changed {
            self.keep(&allocation);
        }
        (allocation, pending)
    }

    /// The allocated requests of the other admitted pods.
    fn used_by(&self, others: &[Arc<Pod>]) -> Requests {
        let allocations = self.allocations.locked();
        let mut used = Requests::default();
        for p in others {
            let uid = p.metadata.uid.as_deref().unwrap_or_default();
            if uid == self.uid || is_terminal(p) {
                continue;
            }
            let r = match allocations.get(uid) {
                Some(a) => Requests::of_pod(&allocated_pod(p, a)),
                None => Requests::of_pod(p),
            };
            used.milli_cpu += r.milli_cpu;
            used.memory += r.memory;
        }
        used
    }

    /// Brings the running containers to the allocation: instances started
    /// in this sync are recorded, the others updated in place (the resize
    /// restarts were the planner's). Returns the `PodResizeInProgress`
    /// state left: `None` when every running container has its allocation.
    pub async fn actuate(
        &self,
        pod: &Pod,
        allocation: &mut PodAllocation,
        runtime: &PodRuntimeView,
    ) -> Option<Option<String>> {
        let was_in_progress = has_condition(pod, POD_RESIZE_IN_PROGRESS);
        let mut changed = allocation.record_started(runtime);
        let allocated = allocated_pod(pod, allocation);
        let plan = plan_resize(&allocated, allocation, runtime);
        let mut error = None;
        for update in &plan.updates {
            let Some(container) = find(&allocated, &update.name) else {
                continue;
            };
            let linux = resources(&allocated, container, self.node_memory_capacity);
            match self.cri.update_container_resources(&update.id, linux).await {
                Ok(()) => {
                    tracing::info!(container = %update.name, "container resources updated in place");
                    allocation.actuate(&update.name, &update.id);
                    changed = true;
                }
                Err(err) => {
                    let message = resize::update_error_message(&update.name, &err.to_string());
                    tracing::warn!(%message, "cannot resize a container in place");
                    self.events.warning(
                        pod,
                        Some(&update.name),
                        "ResizeError",
                        resize::event_note(
                            "Pod resize error",
                            &allocated,
                            allocation.generation,
                            Some(&message),
                        ),
                    );
                    error = Some(message);
                }
            }
        }
        if changed {
            self.keep(allocation);
        }
        if allocation.in_progress(runtime) || error.is_some() {
            return Some(error);
        }
        if was_in_progress || changed && !plan.updates.is_empty() {
            self.events.normal(
                pod,
                None,
                "ResizeCompleted",
                resize::event_note(
                    "Pod resize completed",
                    &allocated,
                    allocation.generation,
                    None,
                ),
            );
        }
        None
    }

    /// Keeps the allocation in the shared map and on disk.
    fn keep(&self, allocation: &PodAllocation) {
        self.allocations
            .locked()
            .insert(self.uid.to_string(), allocation.clone());
        if let Err(err) = resize_store::save(&self.pod_dir, allocation) {
            tracing::warn!(error = %err, "cannot keep the pod's resize state on disk");
        }
    }
}

/// The status conditions of this sync's resize.
pub fn conditions(
    pending: Option<(String, String)>,
    in_progress: Option<Option<String>>,
) -> ResizeConditions {
    ResizeConditions {
        pending,
        in_progress,
    }
}

fn has_condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_)
}

fn find<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    resize::resizable_containers(pod).find(|c| c.name == name)
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}
