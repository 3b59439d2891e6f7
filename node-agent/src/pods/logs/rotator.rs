//! The log rotation loop (Kubelet mode): every `containerLogMonitorInterval`
//! each running container's log file is checked and, past
//! `containerLogMaxSize`, rotated as [`rotation::plan`] says. One container at
//! a time, as the kubelet's default `containerLogMaxWorkers` of 1.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::policy::LogPolicy;
use super::rotation::{self, Rotation, Step, COMPRESSED_SUFFIX, TIMESTAMP_FORMAT, TMP_SUFFIX};
use crate::edge::cri::{CriClient, CriError};
use crate::edge::cri_handle::CriHandle;
use crate::reports::ConfigReport;
use crate::serve::health::LoopHeartbeat;

/// The loop beats at least this often while it waits for the next round.
const BEAT_EVERY: Duration = Duration::from_secs(30);

/// Why one container's rotation failed (the next round tries again).
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub struct LogRotator {
    pub cri: CriHandle,
    pub config: watch::Receiver<ConfigReport>,
    pub heartbeat: LoopHeartbeat,
}

impl LogRotator {
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let policy = self.policy();
            self.heartbeat.beat();
            if let Err(error) = self.round(&policy).await {
                tracing::warn!(%error, "container log rotation: cannot list running containers");
            }
            let mut left = policy.interval;
            while !left.is_zero() {
                let step = left.min(BEAT_EVERY);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(step) => {}
                }
                left -= step;
                self.heartbeat.beat();
            }
        }
    }

    /// The applied NodeConfig's policy; the kubelet's defaults before one is
    /// applied (a bad policy never is: the config loop refuses it).
    fn policy(&self) -> LogPolicy {
        self.config
            .borrow()
            .applied
            .as_ref()
            .and_then(|applied| LogPolicy::from_spec(&applied.pods).ok())
            .unwrap_or_default()
    }

    async fn round(&self, policy: &LogPolicy) -> Result<(), CriError> {
        let mut client = self.cri.current();
        let running = client
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    state: Some(cri::ContainerStateValue {
                        state: cri::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| client.call_error("ListContainers", s))?
            .into_inner()
            .containers;
        for container in running {
            if let Err(error) = rotate_container(&mut client, &container.id, policy).await {
                tracing::warn!(container = %container.id, %error, "container log rotation failed");
            }
        }
        Ok(())
    }
}

/// Checks one container's log and rotates it if the policy says so.
async fn rotate_container(
    client: &mut CriClient,
    id: &str,
    policy: &LogPolicy,
) -> Result<(), RotateError> {
    let status = client
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(|s| client.call_error("ContainerStatus", s))?
        .into_inner()
        .status;
    let Some(status) = status else {
        return Ok(());
    };
    // A container may run without a log file (a CRI client other than the agent made it).
    if status.log_path.is_empty() {
        return Ok(());
    }
    let path = PathBuf::from(&status.log_path);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let size = match tokio::fs::metadata(&path).await {
        Ok(meta) => Some(meta.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(RotateError::File { path, source }),
    };
    // Most rounds find the file under the limit: no directory read then.
    if size.is_some_and(|size| !rotation::due(policy, size)) {
        return Ok(());
    }
    let siblings = list_dir(dir).await?;
    let timestamp = chrono::Utc::now().format(TIMESTAMP_FORMAT).to_string();
    match rotation::plan(policy, name, size, &siblings, &timestamp) {
        Rotation::Nothing => Ok(()),
        Rotation::Reopen => reopen(client, id).await,
        Rotation::Rotate(steps) => {
            for step in steps {
                run_step(client, id, dir, name, step).await?;
            }
            tracing::info!(container = %id, log = %path.display(), "rotated the container's log");
            Ok(())
        }
    }
}

async fn run_step(
    client: &mut CriClient,
    id: &str,
    dir: &Path,
    log: &str,
    step: Step,
) -> Result<(), RotateError> {
    let file_error = |path: PathBuf| move |source| RotateError::File { path, source };
    match step {
        Step::Remove(name) => {
            let path = dir.join(name);
            tokio::fs::remove_file(&path)
                .await
                .map_err(file_error(path))
        }
        Step::Compress(name) => {
            let path = dir.join(name);
            let blocking_path = path.clone();
            tokio::task::spawn_blocking(move || compress(&blocking_path))
                .await
                .map_err(|join| io::Error::other(join.to_string()))
                .and_then(|r| r)
                .map_err(file_error(path))
        }
        Step::RenameAndReopen { rotated } => {
            let from = dir.join(log);
            let to = dir.join(rotated);
            tokio::fs::rename(&from, &to)
                .await
                .map_err(file_error(from.clone()))?;
            if let Err(error) = reopen(client, id).await {
                // Put it back so that the next round tries again.
                if let Err(source) = tokio::fs::rename(&to, &from).await {
                    tracing::warn!(container = %id, %source, "cannot rename the rotated log back");
                }
                return Err(error);
            }
            Ok(())
        }
    }
}

async fn reopen(client: &mut CriClient, id: &str) -> Result<(), RotateError> {
    client
        .runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(|s| client.call_error("ReopenContainerLog", s))?;
    Ok(())
}

/// gzips `path` into `path.gz` through a temporary file, then removes `path`.
fn compress(path: &Path) -> io::Result<()> {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let done = with_suffix(COMPRESSED_SUFFIX);
    let tmp = with_suffix(&format!("{COMPRESSED_SUFFIX}{TMP_SUFFIX}"));
    let mut input = std::fs::File::open(path)?;
    let output = std::fs::File::create(&tmp)?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::rename(&tmp, &done)?;
    std::fs::remove_file(path)
}

async fn list_dir(dir: &Path) -> Result<Vec<String>, RotateError> {
    let error = |source| RotateError::File {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(error)?;
    let mut names = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(error)? {
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn compress_leaves_only_the_gzip_with_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log.20261203-130000");
        let content = "2026-12-03T13:00:00Z stdout F hello\n".repeat(1000);
        std::fs::write(&path, &content).unwrap();
        compress(&path).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["0.log.20261203-130000.gz"]);
        let gz = std::fs::File::open(dir.path().join(&names[0])).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, content);
    }
}
