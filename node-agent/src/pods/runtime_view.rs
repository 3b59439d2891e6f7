//! What CRI reports for one pod, as plain data: its sandboxes and containers,
//! found by the labels the agent sets on them (the kubelet's
//! `io.kubernetes.pod.uid` and friends, under our own prefix so the agent never
//! adopts a kubelet's sandboxes in Companion mode).
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;

/// Label on sandboxes and containers: the Pod's UID.
pub const LABEL_POD_UID: &str = "nodeconfig.dev/pod-uid";
/// Label on sandboxes and containers: the Pod's name.
pub const LABEL_POD_NAME: &str = "nodeconfig.dev/pod-name";
/// Label on sandboxes and containers: the Pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "nodeconfig.dev/pod-namespace";
/// Label on containers: the container's name in the Pod spec.
pub const LABEL_CONTAINER_NAME: &str = "nodeconfig.dev/container-name";
/// Annotation on containers: [`crate::pods::container_spec_hash`] of the spec it was created from.
pub const ANNOTATION_CONTAINER_HASH: &str = "nodeconfig.dev/container-hash";
/// Annotation on containers: the container's restart count when it was created.
pub const ANNOTATION_RESTART_COUNT: &str = "nodeconfig.dev/restart-count";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// One pod sandbox as CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxView {
    pub id: String,
    pub state: SandboxState,
    pub attempt: u32,
    pub created_at: SystemTime,
    /// Primary IP from `PodSandboxStatus.network`; `None` until the shell
    /// asked (or when the sandbox has none).
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// One container as CRI lists (and, for times and exit code, inspects) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub id: String,
    /// The name in the Pod spec (label [`LABEL_CONTAINER_NAME`], else the CRI metadata name).
    pub name: String,
    pub sandbox_id: String,
    pub state: ContainerState,
    pub exit_code: i32,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub attempt: u32,
    pub restart_count: u32,
    pub spec_hash: Option<String>,
    pub reason: String,
    pub message: String,
    /// The image's digest reference (`ContainerStatus.image_ref`), the Pod's `imageID`.
    pub image_ref: String,
}

/// Everything CRI holds for one pod; sandboxes and containers newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntimeView {
    pub sandboxes: Vec<SandboxView>,
    pub containers: Vec<ContainerView>,
}

impl PodRuntimeView {
    /// Builds the view from plain parts, sorting newest first.
    pub fn new(mut sandboxes: Vec<SandboxView>, mut containers: Vec<ContainerView>) -> Self {
        sandboxes.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(b.attempt.cmp(&a.attempt))
        });
        containers.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(b.attempt.cmp(&a.attempt))
        });
        Self {
            sandboxes,
            containers,
        }
    }

    /// Groups CRI's sandboxes and container statuses by the pod UID label;
    /// objects without it are not ours and are left out. `sandbox_ips` maps a
    /// sandbox id to its IP from `PodSandboxStatus`.
    pub fn group_by_pod(
        sandboxes: &[cri::PodSandbox],
        containers: &[cri::ContainerStatus],
        sandbox_ips: &HashMap<String, String>,
    ) -> HashMap<String, PodRuntimeView> {
        let mut parts: HashMap<String, (Vec<SandboxView>, Vec<ContainerView>)> = HashMap::new();
        for s in sandboxes {
            if let Some(uid) = s.labels.get(LABEL_POD_UID) {
                let ip = sandbox_ips.get(&s.id).cloned();
                parts
                    .entry(uid.clone())
                    .or_default()
                    .0
                    .push(SandboxView::from_cri(s, ip));
            }
        }
        for c in containers {
            if let Some(uid) = c.labels.get(LABEL_POD_UID) {
                parts
                    .entry(uid.clone())
                    .or_default()
                    .1
                    .push(ContainerView::from_cri_status(c));
            }
        }
        parts
            .into_iter()
            .map(|(uid, (s, c))| (uid, PodRuntimeView::new(s, c)))
            .collect()
    }

    /// The newest instance of a container, as the kubelet's `FindContainerStatusByName`.
    pub fn latest(&self, name: &str) -> Option<&ContainerView> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }
}

impl SandboxView {
    pub fn from_cri(s: &cri::PodSandbox, ip: Option<String>) -> Self {
        Self {
            id: s.id.clone(),
            state: if s.state == cri::PodSandboxState::SandboxReady as i32 {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
            created_at: from_nanos(s.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
            ip: ip.filter(|ip| !ip.is_empty()),
        }
    }
}

impl ContainerView {
    /// From `ListContainers`; times after creation and the exit code need [`Self::from_cri_status`].
    pub fn from_cri(c: &cri::Container) -> Self {
        let name = container_name(&c.labels, c.metadata.as_ref());
        let (spec_hash, restart_count) = annotations(&c.annotations);
        Self {
            id: c.id.clone(),
            name,
            sandbox_id: c.pod_sandbox_id.clone(),
            state: container_state(c.state),
            exit_code: 0,
            created_at: from_nanos(c.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
            started_at: None,
            finished_at: None,
            attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
            restart_count,
            spec_hash,
            reason: String::new(),
            message: String::new(),
            image_ref: c.image_ref.clone(),
        }
    }

    /// From `ContainerStatus` (which does not carry the sandbox id: it comes
    /// from the container's pod-uid-labelled sandbox, left empty here).
    pub fn from_cri_status(c: &cri::ContainerStatus) -> Self {
        let name = container_name(&c.labels, c.metadata.as_ref());
        let (spec_hash, restart_count) = annotations(&c.annotations);
        Self {
            id: c.id.clone(),
            name,
            sandbox_id: String::new(),
            state: container_state(c.state),
            exit_code: c.exit_code,
            created_at: from_nanos(c.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
            started_at: from_nanos(c.started_at),
            finished_at: from_nanos(c.finished_at),
            attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
            restart_count,
            spec_hash,
            reason: c.reason.clone(),
            message: c.message.clone(),
            image_ref: c.image_ref.clone(),
        }
    }
}

/// Labels the agent puts on a pod's sandbox.
pub fn sandbox_labels(uid: &str, name: &str, namespace: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_UID.to_string(), uid.to_string()),
        (LABEL_POD_NAME.to_string(), name.to_string()),
        (LABEL_POD_NAMESPACE.to_string(), namespace.to_string()),
    ])
}

/// Labels the agent puts on a pod's container.
pub fn container_labels(
    uid: &str,
    name: &str,
    namespace: &str,
    container: &str,
) -> HashMap<String, String> {
    let mut labels = sandbox_labels(uid, name, namespace);
    labels.insert(LABEL_CONTAINER_NAME.to_string(), container.to_string());
    labels
}

/// Annotations the agent puts on a container.
pub fn container_annotations(spec_hash: &str, restart_count: u32) -> HashMap<String, String> {
    HashMap::from([
        (ANNOTATION_CONTAINER_HASH.to_string(), spec_hash.to_string()),
        (
            ANNOTATION_RESTART_COUNT.to_string(),
            restart_count.to_string(),
        ),
    ])
}

/// CRI times are nanoseconds since the epoch; 0 means "not yet".
fn from_nanos(nanos: i64) -> Option<SystemTime> {
    u64::try_from(nanos)
        .ok()
        .filter(|n| *n > 0)
        .map(|n| SystemTime::UNIX_EPOCH + Duration::from_nanos(n))
}

fn container_state(state: i32) -> ContainerState {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

fn container_name(
    labels: &HashMap<String, String>,
    metadata: Option<&cri::ContainerMetadata>,
) -> String {
    labels
        .get(LABEL_CONTAINER_NAME)
        .cloned()
        .or_else(|| metadata.map(|m| m.name.clone()))
        .unwrap_or_default()
}

fn annotations(annotations: &HashMap<String, String>) -> (Option<String>, u32) {
    let hash = annotations.get(ANNOTATION_CONTAINER_HASH).cloned();
    let restarts = annotations
        .get(ANNOTATION_RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (hash, restarts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri_sandbox(
        id: &str,
        uid: Option<&str>,
        ready: bool,
        attempt: u32,
        created: i64,
    ) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt,
            }),
            state: if ready {
                cri::PodSandboxState::SandboxReady
            } else {
                cri::PodSandboxState::SandboxNotready
            } as i32,
            created_at: created,
            labels: uid
                .map(|u| sandbox_labels(u, "web", "ns"))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn groups_our_objects_by_pod_uid_newest_first() {
        let sandboxes = vec![
            cri_sandbox("s-old", Some("u1"), false, 0, 1_000),
            cri_sandbox("s-new", Some("u1"), true, 1, 2_000),
            cri_sandbox("s-kubelet", None, true, 0, 3_000),
        ];
        let status = cri::ContainerStatus {
            id: "c1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            state: cri::ContainerState::ContainerExited as i32,
            created_at: 5_000,
            started_at: 6_000,
            finished_at: 7_000,
            exit_code: 137,
            labels: container_labels("u1", "web", "ns", "app"),
            annotations: container_annotations("abc", 2),
            reason: "OOMKilled".into(),
            ..Default::default()
        };
        let ips = HashMap::from([("s-new".to_string(), "10.0.0.5".to_string())]);
        let pods = PodRuntimeView::group_by_pod(&sandboxes, &[status], &ips);
        assert_eq!(pods.len(), 1);
        let view = &pods["u1"];
        assert_eq!(
            view.sandboxes
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            ["s-new", "s-old"]
        );
        assert_eq!(view.sandboxes[0].ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(view.sandboxes[0].state, SandboxState::Ready);
        assert_eq!(view.sandboxes[1].ip, None);
        let c = view.latest("app").unwrap();
        assert_eq!(c.state, ContainerState::Exited);
        assert_eq!((c.exit_code, c.attempt, c.restart_count), (137, 2, 2));
        assert_eq!(c.spec_hash.as_deref(), Some("abc"));
        assert_eq!(
            c.finished_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(7_000))
        );
    }

    #[test]
    fn zero_times_are_absent_and_unknown_states_are_unknown() {
        let c = cri::Container {
            id: "c".into(),
            pod_sandbox_id: "s".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            state: 42,
            ..Default::default()
        };
        let v = ContainerView::from_cri(&c);
        assert_eq!(v.name, "app");
        assert_eq!(v.state, ContainerState::Unknown);
        assert_eq!(v.spec_hash, None);
        assert_eq!(v.started_at, None);
    }
}
