//! The pod loop's CRI calls: what the runtime holds for a pod (by the labels
//! the agent sets), a cheap relist of everything for change detection, and
//! the sandbox, image and container operations the planner's actions need.
//! Every call goes to the connection in use ([`CriHandle::current`]), so a
//! restarted runtime is picked up on the next call.
use std::collections::{BTreeMap, HashMap};

use futures::future::join_all;
use k8s_cri::v1 as cri;

use crate::edge::cri::CriError;
use crate::edge::cri_handle::CriHandle;
use crate::pods::runtime_view::{PodRuntimeView, SandboxView, LABEL_POD_UID};

/// Longest wait for the list and status calls of one pod or a relist.
pub const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// One pod's sandboxes and containers with their details, and the newest
/// ready sandbox's IPs (primary first).
#[derive(Debug, Clone, Default)]
pub struct PodRuntime {
    pub view: PodRuntimeView,
    pub ips: Vec<String>,
}

/// What a relist sees of one pod: ids and states of its sandboxes and
/// containers, sorted; a change means the pod's worker should look again.
pub type Fingerprint = Vec<(String, i32)>;

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

/// The pod loop's view of the runtime.
#[derive(Clone, Debug)]
pub struct CriPods {
    cri: CriHandle,
}

fn uid_selector(uid: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())])
}

impl CriPods {
    pub fn new(cri: CriHandle) -> Self {
        Self { cri }
    }

    /// Everything CRI holds for the pod with this UID, with container
    /// details (times, exit codes) and the sandbox IPs. Bounded by
    /// [`LIST_TIMEOUT`]: a runtime that hangs must not hang the pod's worker.
    pub async fn pod(&self, uid: &str) -> Result<PodRuntime, CriError> {
        self.bounded("pod listing", self.pod_unbounded(uid)).await
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, CriError>>,
    ) -> Result<T, CriError> {
        tokio::time::timeout(LIST_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(CriError::CallTimeout {
                    endpoint: self.cri.current().endpoint().to_string(),
                    what,
                    timeout: LIST_TIMEOUT,
                })
            })
    }

    async fn pod_unbounded(&self, uid: &str) -> Result<PodRuntime, CriError> {
        let mut client = self.cri.current();
        let sandboxes = client
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: uid_selector(uid),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| client.call_error("ListPodSandbox", s))?
            .into_inner()
            .items;
        let containers = client
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: uid_selector(uid),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| client.call_error("ListContainers", s))?
            .into_inner()
            .containers;

        let statuses = join_all(containers.iter().map(|c| {
            let mut client = client.clone();
            let id = c.id.clone();
            async move {
                client
                    .runtime
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .map(|r| r.into_inner().status)
                    .map_err(|s| client.call_error("ContainerStatus", s))
            }
        }))
        .await;
        let mut views = Vec::new();
        for (c, status) in containers.iter().zip(statuses) {
            match status {
                Ok(Some(s)) => {
                    let mut v = crate::pods::runtime_view::ContainerView::from_cri_status(&s);
                    v.sandbox_id = c.pod_sandbox_id.clone();
                    views.push(v);
                }
                // Removed between the list and the status: gone.
                Ok(None) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(err),
            }
        }

        let newest_ready = sandboxes
            .iter()
            .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at);
        let ips = match newest_ready {
            Some(s) => self.sandbox_ips(&s.id).await?,
            None => Vec::new(),
        };
        let sandbox_views = sandboxes
            .iter()
            .map(|s| {
                let ip = (Some(s) == newest_ready)
                    .then(|| ips.first().cloned())
                    .flatten();
                SandboxView::from_cri(s, ip)
            })
            .collect();
        Ok(PodRuntime {
            view: PodRuntimeView::new(sandbox_views, views),
            ips,
        })
    }

    /// Every pod UID the agent's labels mark in CRI, with a fingerprint of
    /// its sandboxes' and containers' states. Two list calls, whatever the
    /// number of pods.
    pub async fn relist(&self) -> Result<BTreeMap<String, Fingerprint>, CriError> {
        self.bounded("relist", self.relist_unbounded()).await
    }

    async fn relist_unbounded(&self) -> Result<BTreeMap<String, Fingerprint>, CriError> {
        let mut client = self.cri.current();
        let sandboxes = client
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| client.call_error("ListPodSandbox", s))?
            .into_inner()
            .items;
        let containers = client
            .runtime
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .map_err(|s| client.call_error("ListContainers", s))?
            .into_inner()
            .containers;
        let mut pods: BTreeMap<String, Fingerprint> = BTreeMap::new();
        for s in &sandboxes {
            if let Some(uid) = s.labels.get(LABEL_POD_UID) {
                pods.entry(uid.clone())
                    .or_default()
                    .push((s.id.clone(), s.state));
            }
        }
        for c in &containers {
            if let Some(uid) = c.labels.get(LABEL_POD_UID) {
                pods.entry(uid.clone())
                    .or_default()
                    .push((c.id.clone(), 100 + c.state));
            }
        }
        for f in pods.values_mut() {
            f.sort();
        }
        Ok(pods)
    }

    /// Creates and starts a sandbox; returns its id.
    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, CriError> {
        let mut client = self.cri.current();
        client
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|s| client.call_error("RunPodSandbox", s))
    }

    /// The IPs of a sandbox, primary first (`PodSandboxStatus`).
    pub async fn sandbox_ips(&self, id: &str) -> Result<Vec<String>, CriError> {
        let mut client = self.cri.current();
        let status = client
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|s| client.call_error("PodSandboxStatus", s))?
            .into_inner();
        let mut ips = Vec::new();
        if let Some(net) = status.status.and_then(|s| s.network) {
            if !net.ip.is_empty() {
                ips.push(net.ip);
            }
            ips.extend(net.additional_ips.into_iter().map(|ip| ip.ip));
        }
        Ok(ips)
    }

    /// Stops a sandbox (its containers are killed at once: stop them first
    /// with [`Self::stop_container`] for a graceful end).
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut client = self.cri.current();
        let result = client
            .runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await;
        gone_is_done(&client, "StopPodSandbox", result)
    }

    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut client = self.cri.current();
        let result = client
            .runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await;
        gone_is_done(&client, "RemovePodSandbox", result)
    }

    /// Makes `image` present as `policy` asks; `Ok(true)` when it was pulled,
    /// `Ok(false)` when it was there already.
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<bool, ImageError> {
        let mut client = self.cri.current();
        let spec = cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        if policy != PullPolicy::Always {
            let present = client
                .image
                .image_status(cri::ImageStatusRequest {
                    image: Some(spec.clone()),
                    verbose: false,
                })
                .await
                .map_err(|s| ImageError::Runtime(client.call_error("ImageStatus", s).to_string()))?
                .into_inner()
                .image
                .is_some();
            if present {
                return Ok(false);
            }
            if policy == PullPolicy::Never {
                return Err(ImageError::NeverPull(image.to_string()));
            }
        }
        client
            .image
            .pull_image(cri::PullImageRequest {
                image: Some(spec),
                auth: None,
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map(|_| true)
            .map_err(|s| ImageError::Pull {
                image: image.to_string(),
                message: s.message().to_string(),
            })
    }

    /// Creates a container in the sandbox; returns its id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut client = self.cri.current();
        client
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(|s| client.call_error("CreateContainer", s))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut client = self.cri.current();
        client
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|s| client.call_error("StartContainer", s))
    }

    /// SIGTERM, then SIGKILL after `grace_seconds` (the runtime does both).
    pub async fn stop_container(&self, id: &str, grace_seconds: i64) -> Result<(), CriError> {
        let mut client = self.cri.current();
        let result = client
            .runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout: grace_seconds.max(0),
            })
            .await;
        gone_is_done(&client, "StopContainer", result)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut client = self.cri.current();
        let result = client
            .runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await;
        gone_is_done(&client, "RemoveContainer", result)
    }
}

/// A stop or remove of something already gone has done its job.
fn gone_is_done<T>(
    client: &crate::edge::cri::CriClient,
    method: &'static str,
    result: Result<T, tonic::Status>,
) -> Result<(), CriError> {
    match result {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(client.call_error(method, s)),
    }
}

fn is_not_found(err: &CriError) -> bool {
    matches!(err, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
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
