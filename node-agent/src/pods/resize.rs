//! In-place pod resize (KEP-1287, GA in 1.35), the decisions of the
//! kubelet's allocation manager and of the resize path of
//! `computePodActions`, as pure functions on plain data:
//!
//! - **allocation**: the resources the node has granted each container
//!   ([`PodAllocation::allocated`], the kubelet's `allocated_pods_state`).
//!   A Pod whose spec asks for other resources is resizing; the resize is
//!   admitted against the node's allocatable cpu and memory
//!   ([`admit_resize`]) or left pending (`PodResizePending`, reason
//!   `Infeasible` or `Deferred`) and looked at again at every sync.
//! - **actuation**: what each running container instance was given
//!   ([`PodAllocation::actuated`], the kubelet's `actuated_pods_state`),
//!   recorded per container id. A running container whose actuated
//!   resources differ from its allocation is updated in place
//!   (`UpdateContainerResources`), or restarted when its `resizePolicy`
//!   says `RestartContainer` for a resource that changed ([`plan_resize`]).
//! - **status**: `containerStatuses[].allocatedResources` (the allocated
//!   requests), `resources` (what the running instance was given, else the
//!   allocation) and the `PodResizePending`/`PodResizeInProgress`
//!   conditions with their `observedGeneration` ([`apply_status`]).
//!
//! The planner works on the *allocated* Pod ([`allocated_pod`]), so a
//! container started while a resize waits gets the allocated resources,
//! as the kubelet's `UpdatePodFromAllocation` does. The QoS class never
//! changes (the API server refuses such a resize); this node has no pod
//! level cgroup limits, so only containers are updated.
use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Pod, PodCondition, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::pods::cri_config::quantity::{self, Amount};
use crate::pods::plan::{
    is_sidecar, ContainerKill, ContainerStart, KillReason, PodActions, StartReason,
};
use crate::pods::runtime_view::{ContainerState, PodRuntimeView};

/// Condition type: a resize the node has not allocated yet.
pub const POD_RESIZE_PENDING: &str = "PodResizePending";
/// Condition type: an allocated resize not yet applied to every running container.
pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
/// `PodResizePending` reason: the node can never fit the resize.
pub const REASON_INFEASIBLE: &str = "Infeasible";
/// `PodResizePending` reason: the node cannot fit it now (other pods use the room).
pub const REASON_DEFERRED: &str = "Deferred";
/// `PodResizeInProgress` reason when applying it failed.
pub const REASON_ERROR: &str = "Error";

/// What the node granted one pod and gave its running containers; kept
/// under the agent's root directory so a restart loses neither.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodAllocation {
    /// Allocated resources per container name (app containers and sidecars).
    pub allocated: BTreeMap<String, ResourceRequirements>,
    /// The Pod's generation when the allocation last changed (the
    /// `observedGeneration` of `PodResizeInProgress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// What each container's current instance was given.
    #[serde(default)]
    pub actuated: BTreeMap<String, Actuated>,
}

/// The resources one container instance runs with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actuated {
    pub container_id: String,
    pub resources: ResourceRequirements,
}

/// The containers whose resources can change in place: the app containers
/// and the sidecars (restartable init containers).
pub fn resizable_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(
            spec.and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default()
                .iter()
                .filter(|c| is_sidecar(c)),
        )
}

fn resources_of(c: &Container) -> ResourceRequirements {
    let r = c.resources.clone().unwrap_or_default();
    ResourceRequirements {
        requests: r.requests.filter(|m| !m.is_empty()),
        limits: r.limits.filter(|m| !m.is_empty()),
        ..r
    }
}

impl PodAllocation {
    /// The allocation of a newly admitted pod: what its spec asks for.
    pub fn of(pod: &Pod) -> Self {
        Self {
            allocated: resizable_containers(pod)
                .map(|c| (c.name.clone(), resources_of(c)))
                .collect(),
            generation: pod.metadata.generation,
            actuated: BTreeMap::new(),
        }
    }

    /// Records what running instances not seen before were created with:
    /// the allocation in force, since the pod's worker creates containers
    /// only from the allocated Pod and records them before it changes the
    /// allocation. `true` when something was recorded.
    pub fn record_started(&mut self, runtime: &PodRuntimeView) -> bool {
        let mut changed = false;
        for (name, allocated) in &self.allocated {
            let Some(latest) = runtime
                .latest(name)
                .filter(|c| c.state == ContainerState::Running)
            else {
                continue;
            };
            if self
                .actuated
                .get(name)
                .is_some_and(|a| a.container_id == latest.id)
            {
                continue;
            }
            self.actuated.insert(
                name.clone(),
                Actuated {
                    container_id: latest.id.clone(),
                    resources: allocated.clone(),
                },
            );
            changed = true;
        }
        changed
    }

    /// Whether the Pod's spec asks for other resources than allocated.
    pub fn resize_requested(&self, pod: &Pod) -> bool {
        resizable_containers(pod).any(|c| {
            self.allocated
                .get(&c.name)
                .is_some_and(|a| !same_resources(a, &resources_of(c)))
        })
    }

    /// Allocates what the Pod's spec asks for (an admitted resize).
    pub fn allocate(&mut self, pod: &Pod) {
        for c in resizable_containers(pod) {
            self.allocated.insert(c.name.clone(), resources_of(c));
        }
        self.generation = pod.metadata.generation;
    }

    /// Whether a running container still runs with other resources than allocated.
    pub fn in_progress(&self, runtime: &PodRuntimeView) -> bool {
        self.allocated.iter().any(|(name, allocated)| {
            runtime
                .latest(name)
                .filter(|c| c.state == ContainerState::Running)
                .is_some_and(|latest| match self.actuated.get(name) {
                    Some(a) if a.container_id == latest.id => {
                        !same_resources(&a.resources, allocated)
                    }
                    _ => true,
                })
        })
    }

    /// Records that the instance `id` of `name` now runs with its allocation.
    pub fn actuate(&mut self, name: &str, id: &str) {
        if let Some(allocated) = self.allocated.get(name) {
            self.actuated.insert(
                name.to_string(),
                Actuated {
                    container_id: id.to_string(),
                    resources: allocated.clone(),
                },
            );
        }
    }
}

/// The Pod as the node runs it: each resizable container with its
/// allocated resources (the Pod itself when nothing differs).
pub fn allocated_pod<'a>(pod: &'a Pod, allocation: &PodAllocation) -> Cow<'a, Pod> {
    if !allocation.resize_requested(pod) {
        return Cow::Borrowed(pod);
    }
    let mut pod = pod.clone();
    if let Some(spec) = pod.spec.as_mut() {
        let containers = spec.containers.iter_mut().chain(
            spec.init_containers
                .iter_mut()
                .flatten()
                .filter(|c| is_sidecar(c)),
        );
        for c in containers {
            if let Some(allocated) = allocation.allocated.get(&c.name) {
                c.resources = Some(allocated.clone());
            }
        }
    }
    Cow::Owned(pod)
}

/// Quantities compared by value (`1` = `1000m`); a missing list is an empty one.
pub fn same_resources(a: &ResourceRequirements, b: &ResourceRequirements) -> bool {
    same_list(a.requests.as_ref(), b.requests.as_ref())
        && same_list(a.limits.as_ref(), b.limits.as_ref())
}

fn same_list(
    a: Option<&BTreeMap<String, Quantity>>,
    b: Option<&BTreeMap<String, Quantity>>,
) -> bool {
    let parse =
        |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, Result<Amount, String>> {
            m.into_iter()
                .flatten()
                .map(|(k, q)| (k.clone(), Amount::of(q).ok_or_else(|| q.0.clone())))
                .collect()
        };
    parse(a) == parse(b)
}

fn amount(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<Amount> {
    list.and_then(|m| m.get(name)).and_then(Amount::of)
}

/// Whether `resource` (`cpu`, `memory`) differs between two settings.
fn resource_changed(a: &ResourceRequirements, b: &ResourceRequirements, resource: &str) -> bool {
    amount(a.requests.as_ref(), resource) != amount(b.requests.as_ref(), resource)
        || amount(a.limits.as_ref(), resource) != amount(b.limits.as_ref(), resource)
}

/// The cpu (millicores) and memory (bytes) a pod or a node has or needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Requests {
    /// A pod's effective requests, as the scheduler counts them: its app
    /// containers and sidecars together, or its largest init container if
    /// that is more.
    pub fn of_pod(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let one = |c: &Container| {
            let r = quantity::requests(c);
            Requests {
                milli_cpu: r.get("cpu").map_or(0, |a| a.milli_ceil()),
                memory: r.get("memory").map_or(0, |a| a.value_ceil()),
            }
        };
        let mut sum = Requests::default();
        for c in resizable_containers(pod) {
            let r = one(c);
            sum.milli_cpu += r.milli_cpu;
            sum.memory += r.memory;
        }
        for c in spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| !is_sidecar(c))
        {
            let r = one(c);
            sum.milli_cpu = sum.milli_cpu.max(r.milli_cpu);
            sum.memory = sum.memory.max(r.memory);
        }
        sum
    }
}

/// Whether the node takes a resize now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizeAdmission {
    Allocate,
    /// `PodResizePending` with this reason and message.
    Pending {
        reason: &'static str,
        message: String,
    },
}

/// Admits a resize as the kubelet's resource fit does: the resized pod's
/// requests next to what the other admitted pods were allocated (`used`),
/// within the node's allocatable cpu and memory. More than the node has at
/// all is `Infeasible` (the API server refuses most such resizes already,
/// as 1.37 checks allocatable); more than is free now is `Deferred`, with
/// the kubelet's message.
pub fn admit_resize(pod: &Pod, used: Requests, allocatable: Requests) -> ResizeAdmission {
    let want = Requests::of_pod(pod);
    for (name, requested, used, capacity) in [
        ("cpu", want.milli_cpu, used.milli_cpu, allocatable.milli_cpu),
        ("memory", want.memory, used.memory, allocatable.memory),
    ] {
        if capacity <= 0 {
            continue;
        }
        if requested > capacity {
            return ResizeAdmission::Pending {
                reason: REASON_INFEASIBLE,
                message: format!(
                    "Node didn't have enough capacity: {name}, requested: {requested}, capacity: {capacity}"
                ),
            };
        }
        if requested + used > capacity {
            return ResizeAdmission::Pending {
                reason: REASON_DEFERRED,
                message: format!(
                    "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            };
        }
    }
    ResizeAdmission::Allocate
}

/// One running container whose resources change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerResize {
    pub name: String,
    pub id: String,
    pub restart_count: u32,
    /// A sidecar (starts with the init containers).
    pub init: bool,
}

/// How the allocation reaches the running containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResizePlan {
    /// Updated in place (`UpdateContainerResources`).
    pub updates: Vec<ContainerResize>,
    /// Restarted, as their `resizePolicy` asks for a changed resource.
    pub restarts: Vec<ContainerResize>,
}

/// The resize path of the kubelet's `computePodActions`: each running
/// container (of `pod`, the allocated Pod) whose recorded resources differ
/// from its allocation is updated, or restarted when a changed resource's
/// `resizePolicy` is `RestartContainer`. Instances not yet recorded are
/// left for [`PodAllocation::record_started`].
pub fn plan_resize(pod: &Pod, allocation: &PodAllocation, runtime: &PodRuntimeView) -> ResizePlan {
    let mut plan = ResizePlan::default();
    for c in resizable_containers(pod) {
        let (Some(allocated), Some(latest)) = (
            allocation.allocated.get(&c.name),
            runtime
                .latest(&c.name)
                .filter(|l| l.state == ContainerState::Running),
        ) else {
            continue;
        };
        let Some(actuated) = allocation
            .actuated
            .get(&c.name)
            .filter(|a| a.container_id == latest.id)
        else {
            continue;
        };
        if same_resources(&actuated.resources, allocated) {
            continue;
        }
        let restart = ["cpu", "memory"].iter().any(|resource| {
            resource_changed(&actuated.resources, allocated, resource)
                && c.resize_policy
                    .iter()
                    .flatten()
                    .any(|p| p.resource_name == *resource && p.restart_policy == "RestartContainer")
        });
        let resize = ContainerResize {
            name: c.name.clone(),
            id: latest.id.clone(),
            restart_count: latest.restart_count,
            init: is_sidecar(c),
        };
        if restart {
            plan.restarts.push(resize);
        } else {
            plan.updates.push(resize);
        }
    }
    plan
}

/// Adds the resize restarts to the planner's actions: each container is
/// killed and started again at once (no back-off), unless the actions
/// already kill it or recreate the pod.
pub fn add_restarts(actions: &mut PodActions, restarts: &[ContainerResize]) {
    if actions.kill_pod || actions.create_sandbox {
        return;
    }
    for r in restarts {
        if actions.containers_to_kill.iter().any(|k| k.id == r.id) {
            continue;
        }
        actions.containers_to_kill.push(ContainerKill {
            id: r.id.clone(),
            name: r.name.clone(),
            reason: KillReason::ResizeRestart,
        });
        let start = ContainerStart {
            name: r.name.clone(),
            reason: StartReason::Replace(KillReason::ResizeRestart),
            restart_count: r.restart_count + 1,
            previous_exit: None,
        };
        if r.init {
            actions.init_containers_to_start.push(start);
        } else {
            actions.containers_to_start.push(start);
        }
    }
}

/// The resize conditions a sync found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResizeConditions {
    /// `PodResizePending`: (reason, message), observed at the Pod's generation.
    pub pending: Option<(String, String)>,
    /// `PodResizeInProgress`: `Some(None)` while being applied,
    /// `Some(Some(message))` when applying it failed.
    pub in_progress: Option<Option<String>>,
}

/// Adds what a resize shows to a status made by
/// [`crate::pods::api_status::api_status`]: per container with an
/// instance, `allocatedResources` and `resources` (what the running
/// instance was given, else the allocation, as the kubelet's
/// `convertContainerStatusResources`), and the resize conditions in place
/// of the previous ones (a condition keeps its transition time while its
/// reason stays).
pub fn apply_status(
    status: &mut PodStatus,
    pod: &Pod,
    allocation: &PodAllocation,
    runtime: &PodRuntimeView,
    conditions: &ResizeConditions,
    now: Timestamp,
) {
    let spec = pod.spec.as_ref();
    let all: Vec<&Container> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(
            spec.and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default()
                .iter(),
        )
        .collect();
    let lists = [
        status.container_statuses.as_mut(),
        status.init_container_statuses.as_mut(),
    ];
    for s in lists.into_iter().flatten().flatten() {
        if s.container_id.is_none() {
            continue;
        }
        let Some(c) = all.iter().find(|c| c.name == s.name) else {
            continue;
        };
        let allocated = allocation
            .allocated
            .get(&c.name)
            .cloned()
            .unwrap_or_else(|| resources_of(c));
        set_container_resources(s, allocation, runtime, allocated);
    }

    let previous = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let mut list: Vec<PodCondition> = status
        .conditions
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != POD_RESIZE_PENDING && c.type_ != POD_RESIZE_IN_PROGRESS)
        .collect();
    let mut add = |type_: &str, reason: Option<String>, message: Option<String>, generation| {
        let kept = previous
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.reason == reason && c.status == "True");
        let at = kept
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(Timestamp::from_second(now.as_second()).unwrap_or(now)));
        list.push(PodCondition {
            type_: type_.to_string(),
            status: "True".into(),
            reason,
            message,
            last_probe_time: Some(at.clone()),
            last_transition_time: Some(at),
            observed_generation: generation,
        });
    };
    if let Some((reason, message)) = &conditions.pending {
        add(
            POD_RESIZE_PENDING,
            Some(reason.clone()),
            Some(message.clone()),
            pod.metadata.generation,
        );
    }
    if let Some(error) = &conditions.in_progress {
        let (reason, message) = match error {
            Some(m) => (Some(REASON_ERROR.to_string()), Some(m.clone())),
            None => (None, None),
        };
        add(
            POD_RESIZE_IN_PROGRESS,
            reason,
            message,
            allocation.generation.or(pod.metadata.generation),
        );
    }
    status.conditions = Some(list);
}

fn set_container_resources(
    s: &mut ContainerStatus,
    allocation: &PodAllocation,
    runtime: &PodRuntimeView,
    allocated: ResourceRequirements,
) {
    let running = runtime
        .latest(&s.name)
        .filter(|l| l.state == ContainerState::Running);
    let applied = running.and_then(|l| {
        allocation
            .actuated
            .get(&s.name)
            .filter(|a| a.container_id == l.id)
            .map(|a| a.resources.clone())
    });
    s.allocated_resources = allocated.requests.clone();
    let shown = applied.unwrap_or(allocated);
    s.resources = Some(ResourceRequirements {
        claims: None,
        requests: shown.requests,
        limits: shown.limits,
    });
}

/// The `PodResizeInProgress`/`Error` message of a failed in-place update of
/// `container`: runc's refusal to set a memory limit below the usage
/// (`unable to set memory limit to L (current usage: U, ...`) in the
/// kubelet's words, which it checks before the update; anything else as
/// the runtime said it.
pub fn update_error_message(container: &str, error: &str) -> String {
    let number_after = |text: &str, marker: &str| -> Option<u64> {
        let rest = &text[text.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (
        number_after(error, "unable to set memory limit to "),
        number_after(error, "(current usage: "),
    ) {
        (Some(limit), Some(usage)) => format!(
            "attempting to set container {container:?} memory limit ({limit}) below current usage ({usage})"
        ),
        _ => format!("container {container}: {error}"),
    }
}

/// The event note of a resize, as the kubelet's `podResizeMessage`:
/// what it is about and the allocated containers' resources.
pub fn event_note(prefix: &str, pod: &Pod, generation: Option<i64>, error: Option<&str>) -> String {
    let containers: Vec<serde_json::Value> = resizable_containers(pod)
        .map(|c| serde_json::json!({"name": c.name, "resources": resources_of(c)}))
        .collect();
    let mut summary = serde_json::json!({"containers": containers});
    if let Some(g) = generation {
        summary["generation"] = g.into();
    }
    if let Some(e) = error {
        summary["error"] = e.into();
    }
    format!("{prefix}: {summary}")
}
