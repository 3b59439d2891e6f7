//! The pod loop's [`ContainerRuntime`] over CRI: what the runtime holds for a
//! pod (by the labels the agent sets), a cheap relist of everything for change
//! detection, and the sandbox, image and container operations the planner's
//! actions need.
//! Every call goes to the connection in use ([`CriHandle::current`]), so a
//! restarted runtime is picked up on the next call.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use futures::future::{join_all, BoxFuture};
use k8s_cri::v1 as cri;

use crate::edge::cri::CriError;
use crate::edge::cri_handle::CriHandle;
use crate::pods::container_runtime::{
    fingerprints, newest_ready, ContainerRuntime, ExecOutput, Fingerprint, ImageError,
    ImageUserStatus, PodRuntime, PullPolicy,
};
use crate::pods::runtime_view::LABEL_POD_UID;
use crate::pods::termination_message;

/// Longest wait for the list and status calls of one pod or a relist.
pub const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The pod loop's runtime, over CRI.
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
                    v.message =
                        termination_message::join(&v.message, &read_termination_message(&s));
                    views.push(v);
                }
                // Removed between the list and the status: gone.
                Ok(None) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(err),
            }
        }

        let sandboxes: Vec<&cri::PodSandbox> = sandboxes.iter().collect();
        let ips = match newest_ready(&sandboxes) {
            Some(s) => self.sandbox_ips(&s.id).await?,
            None => Vec::new(),
        };
        Ok(PodRuntime::assemble(&sandboxes, ips, views))
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
        Ok(fingerprints(
            sandboxes
                .iter()
                .map(|s| (s.id.as_str(), &s.labels, s.state)),
            containers
                .iter()
                .map(|c| (c.id.as_str(), &c.labels, c.state)),
        ))
    }
}

impl ContainerRuntime for CriPods {
    /// Everything CRI holds for the pod with this UID, with container
    /// details (times, exit codes) and the sandbox IPs. Bounded by
    /// [`LIST_TIMEOUT`]: a runtime that hangs must not hang the pod's worker.
    fn pod<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<PodRuntime, CriError>> {
        Box::pin(async move { self.bounded("pod listing", self.pod_unbounded(uid)).await })
    }

    /// Every pod UID the agent's labels mark in CRI, with a fingerprint of
    /// its sandboxes' and containers' states. Two list calls, whatever the
    /// number of pods.
    fn relist(&self) -> BoxFuture<'_, Result<BTreeMap<String, Fingerprint>, CriError>> {
        Box::pin(async move { self.bounded("relist", self.relist_unbounded()).await })
    }

    /// Creates and starts a sandbox; returns its id.
    fn run_sandbox(
        &self,
        config: cri::PodSandboxConfig,
    ) -> BoxFuture<'_, Result<String, CriError>> {
        Box::pin(async move {
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
        })
    }

    /// The IPs of a sandbox, primary first (`PodSandboxStatus`).
    fn sandbox_ips<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, CriError>> {
        Box::pin(async move {
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
        })
    }

    /// Stops a sandbox (its containers are killed at once: stop them first
    /// with [`Self::stop_container`] for a graceful end).
    fn stop_sandbox<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            let result = client
                .runtime
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                })
                .await;
            gone_is_done(&client, "StopPodSandbox", result)
        })
    }

    fn remove_sandbox<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            let result = client
                .runtime
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                })
                .await;
            gone_is_done(&client, "RemovePodSandbox", result)
        })
    }

    /// Makes `image` present as `policy` asks; `Ok(true)` when it was pulled,
    /// `Ok(false)` when it was there already.
    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        policy: PullPolicy,
        sandbox: &'a cri::PodSandboxConfig,
    ) -> BoxFuture<'a, Result<bool, ImageError>> {
        Box::pin(async move {
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
                    .map_err(|s| {
                        ImageError::Runtime(client.call_error("ImageStatus", s).to_string())
                    })?
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
        })
    }

    fn image_user<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<ImageUserStatus, CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            let image = client
                .image
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image: image.to_string(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .map_err(|s| client.call_error("ImageStatus", s))?
                .into_inner()
                .image;
            Ok(
                image.map_or_else(ImageUserStatus::default, |i| ImageUserStatus {
                    uid: i.uid.map(|u| u.value),
                    username: i.username,
                }),
            )
        })
    }

    /// Creates a container in the sandbox; returns its id.
    fn create_container<'a>(
        &'a self,
        sandbox_id: &'a str,
        config: cri::ContainerConfig,
        sandbox: &'a cri::PodSandboxConfig,
    ) -> BoxFuture<'a, Result<String, CriError>> {
        Box::pin(async move {
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
        })
    }

    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            client
                .runtime
                .start_container(cri::StartContainerRequest {
                    container_id: id.to_string(),
                })
                .await
                .map(|_| ())
                .map_err(|s| client.call_error("StartContainer", s))
        })
    }

    /// SIGTERM, then SIGKILL after `grace_seconds` (the runtime does both).
    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        grace_seconds: i64,
    ) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            let result = client
                .runtime
                .stop_container(cri::StopContainerRequest {
                    container_id: id.to_string(),
                    timeout: grace_seconds.max(0),
                })
                .await;
            gone_is_done(&client, "StopContainer", result)
        })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            let result = client
                .runtime
                .remove_container(cri::RemoveContainerRequest {
                    container_id: id.to_string(),
                })
                .await;
            gone_is_done(&client, "RemoveContainer", result)
        })
    }

    fn update_container_resources<'a>(
        &'a self,
        id: &'a str,
        resources: cri::LinuxContainerResources,
    ) -> BoxFuture<'a, Result<(), CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            client
                .runtime
                .update_container_resources(cri::UpdateContainerResourcesRequest {
                    container_id: id.to_string(),
                    linux: Some(resources),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| client.call_error("UpdateContainerResources", s))
        })
    }

    fn exec_sync<'a>(
        &'a self,
        id: &'a str,
        command: &'a [String],
        timeout: Option<std::time::Duration>,
    ) -> BoxFuture<'a, Result<ExecOutput, CriError>> {
        Box::pin(async move {
            let mut client = self.cri.current();
            let response = client
                .runtime
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd: command.to_vec(),
                    // 0: no timeout.
                    timeout: timeout.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
                })
                .await
                .map_err(|s| client.call_error("ExecSync", s))?
                .into_inner();
            Ok(ExecOutput {
                exit_code: response.exit_code,
                stdout: response.stdout,
                stderr: response.stderr,
            })
        })
    }
}

/// What an exited container left as its termination message, read from
/// the node as [`termination_message::source`] says (the kubelet reads it
/// the same way on every status).
fn read_termination_message(status: &cri::ContainerStatus) -> String {
    use termination_message::{from_log_tail, TerminationSource, MAX_FILE_BYTES};
    let (file, or_logs) = match termination_message::source(status) {
        TerminationSource::None => return String::new(),
        TerminationSource::Logs => (None, true),
        TerminationSource::File { host_path, or_logs } => (Some(host_path), or_logs),
    };
    if let Some(path) = file {
        match read_end(Path::new(&path), MAX_FILE_BYTES) {
            Ok((data, _)) if !data.is_empty() || !or_logs => {
                return String::from_utf8_lossy(&data).into_owned()
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !or_logs {
                    return String::new();
                }
            }
            Err(e) => return format!("Error on reading termination log {path}: {e}"),
        }
    }
    match read_end(Path::new(&status.log_path), LOG_TAIL_BYTES) {
        Ok((data, whole)) => from_log_tail(&data, whole),
        Err(e) => format!("Error on reading termination message from logs: {e}"),
    }
}

/// How much of a log's end is read for its last lines: more than 80 lines
/// can hold once only their last 2 KiB are kept.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The last `max` bytes of a file, and whether that is all of it.
fn read_end(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::new();
    file.take(max).read_to_end(&mut data)?;
    Ok((data, start == 0))
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
    use std::collections::HashMap;

    use super::*;
    use crate::pods::termination_message::{ANNOTATION_PATH, ANNOTATION_POLICY};

    /// An exited container whose message file holds `file` and whose log holds `log`.
    fn exited(
        dir: &Path,
        exit_code: i32,
        fallback: bool,
        file: &str,
        log: &str,
    ) -> cri::ContainerStatus {
        let host_path = dir.join("message");
        std::fs::write(&host_path, file).unwrap();
        let log_path = dir.join("0.log");
        std::fs::write(&log_path, log).unwrap();
        let mut annotations = HashMap::from([(
            ANNOTATION_PATH.to_string(),
            "/dev/termination-log".to_string(),
        )]);
        if fallback {
            annotations.insert(
                ANNOTATION_POLICY.to_string(),
                "FallbackToLogsOnError".to_string(),
            );
        }
        cri::ContainerStatus {
            state: cri::ContainerState::ContainerExited as i32,
            exit_code,
            annotations,
            mounts: vec![cri::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: host_path.display().to_string(),
                ..Default::default()
            }],
            log_path: log_path.display().to_string(),
            ..Default::default()
        }
    }

    const LOG: &str = "2026-01-01T00:00:00.1Z stdout P DONE\n";

    #[test]
    fn termination_messages_as_the_conformance_tests_expect() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Path set, written by the container.
        assert_eq!(
            read_termination_message(&exited(d, 0, false, "DONE", "")),
            "DONE"
        );
        // FallbackToLogsOnError, failed, nothing written: the log's end.
        assert_eq!(
            read_termination_message(&exited(d, 1, true, "", LOG)),
            "DONE"
        );
        // FallbackToLogsOnError, succeeded, nothing written: empty.
        assert_eq!(read_termination_message(&exited(d, 0, true, "", LOG)), "");
        // FallbackToLogsOnError, succeeded, written: the file.
        assert_eq!(
            read_termination_message(&exited(d, 0, true, "OK", LOG)),
            "OK"
        );
        // At most the file's last 4 KiB.
        let big = format!("{}END", "x".repeat(5000));
        let message = read_termination_message(&exited(d, 0, false, &big, ""));
        assert_eq!(message.len(), 4096);
        assert!(message.ends_with("END"));
    }

    #[test]
    fn a_missing_message_file_falls_back_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut status = exited(dir.path(), 1, true, "", LOG);
        std::fs::remove_file(dir.path().join("message")).unwrap();
        assert_eq!(read_termination_message(&status), "DONE");
        status.annotations.remove(ANNOTATION_POLICY);
        assert_eq!(read_termination_message(&status), "");
    }
}
