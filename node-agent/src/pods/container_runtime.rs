//! The container runtime as the pod loop uses it ([`ContainerRuntime`]): the
//! calls the [`crate::pods::worker`] and [`crate::pods::run`] make, and the
//! plain data they speak. The kubelet's counterpart is `kubecontainer.Runtime`
//! over CRI's `RuntimeService` and `ImageService`; here it is the few calls the
//! shell needs, so a recording fake can stand in for CRI in tests.
//!
//! ```text
//!   run (relist) --+                    +--> CriPods (CRI over gRPC)
//!                  +--> ContainerRuntime
//!   worker --------+                    +--> FakeRuntime (tests)
//! ```
use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;
use k8s_cri::v1 as cri;

use crate::edge::cri::CriError;
use crate::pods::runtime_view::{ContainerView, PodRuntimeView, SandboxView, LABEL_POD_UID};

/// The runtime calls of the pod loop. Every call is bounded by its
/// implementation where the runtime may hang (listings), and a stop or
/// remove of something already gone succeeds.
pub trait ContainerRuntime: Send + Sync {
    /// Everything the runtime holds for the pod with this UID, with
    /// container details (times, exit codes) and the newest ready sandbox's IPs.
    fn pod<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<PodRuntime, CriError>>;

    /// Every pod UID the agent's labels mark, with a [`Fingerprint`] of its
    /// sandboxes and containers (the PLEG's relist).
    fn relist(&self) -> BoxFuture<'_, Result<BTreeMap<String, Fingerprint>, CriError>>;

    /// Creates and starts a sandbox (`RunPodSandbox`); returns its id.
    fn run_sandbox(&self, config: cri::PodSandboxConfig)
        -> BoxFuture<'_, Result<String, CriError>>;

    /// The IPs of a sandbox, primary first (`PodSandboxStatus`).
    fn sandbox_ips<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, CriError>>;

    /// Stops a sandbox; its containers are killed at once.
    fn stop_sandbox<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>>;

    fn remove_sandbox<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>>;

    /// Makes `image` present as `policy` asks; `Ok(true)` when it was pulled,
    /// `Ok(false)` when it was there already.
    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        sandbox: &'a cri::PodSandboxConfig,
    ) -> BoxFuture<'a, Result<bool, ImageError>>;

    /// The user `image`'s config names, from `ImageStatus` (the kubelet's
    /// `getImageUser`); an image the runtime does not know names none.
    fn image_user<'a>(&'a self, image: &'a str)
        -> BoxFuture<'a, Result<ImageUserStatus, CriError>>;

    /// Creates a container in the sandbox; returns its id.
    fn create_container<'a>(
        &'a self,
        sandbox_id: &'a str,
        config: cri::ContainerConfig,
        sandbox: &'a cri::PodSandboxConfig,
    ) -> BoxFuture<'a, Result<String, CriError>>;

    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>>;

    /// SIGTERM, then SIGKILL after `grace_seconds` (the runtime does both).
    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        grace_seconds: i64,
    ) -> BoxFuture<'a, Result<(), CriError>>;

    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>>;

    /// Changes a running container's cgroup settings in place
    /// (`UpdateContainerResources`), for an in-place resize.
    fn update_container_resources<'a>(
        &'a self,
        id: &'a str,
        resources: cri::LinuxContainerResources,
    ) -> BoxFuture<'a, Result<(), CriError>>;

    /// Runs `command` in the container and waits for it (`ExecSync`), at
    /// most `timeout` when given (the runtime kills it then); the lifecycle
    /// hooks' exec, which the kubelet runs without a timeout.
    fn exec_sync<'a>(
        &'a self,
        id: &'a str,
        command: &'a [String],
        timeout: Option<std::time::Duration>,
    ) -> BoxFuture<'a, Result<ExecOutput, CriError>>;
}

/// The user of an image as CRI's `Image` gives it: a numeric `uid`, or else
/// a `username` (both absent: the image names no user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUserStatus {
    pub uid: Option<i64>,
    pub username: String,
}

/// What a command run in a container left: its exit code and output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One pod's sandboxes and containers with their details, and the newest
/// ready sandbox's IPs (primary first).
#[derive(Debug, Clone, Default)]
pub struct PodRuntime {
    pub view: PodRuntimeView,
    pub ips: Vec<String>,
}

impl PodRuntime {
    /// A pod's view from its sandboxes (`ips` being those of the newest ready
    /// one, [`newest_ready`]) and its containers' views.
    pub fn assemble(
        sandboxes: &[&cri::PodSandbox],
        ips: Vec<String>,
        containers: Vec<ContainerView>,
    ) -> Self {
        let newest = newest_ready(sandboxes).map(|s| s.id.as_str());
        let sandbox_views = sandboxes
            .iter()
            .map(|s| {
                let ip = (Some(s.id.as_str()) == newest)
                    .then(|| ips.first().cloned())
                    .flatten();
                SandboxView::from_cri(s, ip)
            })
            .collect();
        Self {
            view: PodRuntimeView::new(sandbox_views, containers),
            ips,
        }
    }
}

/// The newest ready sandbox of a pod: the one whose IPs the pod reports.
pub fn newest_ready<'a>(sandboxes: &[&'a cri::PodSandbox]) -> Option<&'a cri::PodSandbox> {
    sandboxes
        .iter()
        .copied()
        .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        .max_by_key(|s| s.created_at)
}

/// What a relist sees of one pod: ids and states of its sandboxes and
/// containers, sorted; a change means the pod's worker should look again.
pub type Fingerprint = Vec<(String, i32)>;

/// One sandbox or container as a relist lists it: id, labels, CRI state.
pub type Listed<'a> = (&'a str, &'a HashMap<String, String>, i32);

/// The [`Fingerprint`] of every pod the agent's labels mark, from a relist's
/// sandboxes and containers (a container's state is offset by 100, so a
/// sandbox and a container in the same numeric state differ).
pub fn fingerprints<'a>(
    sandboxes: impl IntoIterator<Item = Listed<'a>>,
    containers: impl IntoIterator<Item = Listed<'a>>,
) -> BTreeMap<String, Fingerprint> {
    let mut pods: BTreeMap<String, Fingerprint> = BTreeMap::new();
    let containers = containers
        .into_iter()
        .map(|(id, labels, state)| (id, labels, 100 + state));
    for (id, labels, state) in sandboxes.into_iter().chain(containers) {
        if let Some(uid) = labels.get(LABEL_POD_UID) {
            pods.entry(uid.clone())
                .or_default()
                .push((id.to_string(), state));
        }
    }
    for f in pods.values_mut() {
        f.sort();
    }
    pods
}

/// How an image is made present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The container's `imagePullPolicy`, defaulted as the API server does
    /// (`Always` for `:latest` or an untagged image, else `IfNotPresent`).
    pub fn of(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                    Self::IfNotPresent
                } else {
                    Self::Always
                }
            }
        }
    }
}

/// Why an image is not there, with the kubelet's reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("Container image \"{0}\" is not present with pull policy of Never")]
    NeverPull(String),
    #[error("failed to pull image \"{image}\": {message}")]
    Pull { image: String, message: String },
    #[error("{0}")]
    Runtime(String),
}

impl ImageError {
    /// The container's waiting reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NeverPull(_) => "ErrImageNeverPull",
            Self::Pull { .. } => "ErrImagePull",
            Self::Runtime(_) => "ErrImagePull",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_as_the_api_server() {
        use PullPolicy::*;
        for (policy, image, want) in [
            (None, "busybox", Always),
            (None, "busybox:latest", Always),
            (None, "nodeconfig.local/busybox:1.35", IfNotPresent),
            (None, "registry:5000/busybox", Always),
            (None, "busybox@sha256:abc", IfNotPresent),
            (Some("Never"), "busybox", Never),
            (Some("Always"), "busybox:1.35", Always),
            (Some("IfNotPresent"), "busybox", IfNotPresent),
        ] {
            assert_eq!(PullPolicy::of(policy, image), want, "{policy:?} {image}");
        }
    }

    #[test]
    fn image_errors_carry_the_kubelet_reasons() {
        assert_eq!(
            ImageError::NeverPull("x".into()).reason(),
            "ErrImageNeverPull"
        );
        let pull = ImageError::Pull {
            image: "x".into(),
            message: "not found".into(),
        };
        assert_eq!(pull.reason(), "ErrImagePull");
        assert!(pull.to_string().contains("failed to pull image \"x\""));
    }
}
