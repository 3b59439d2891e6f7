//! Measures the filesystem the runtime keeps its images on, as the kubelet's
//! CRI stats provider does: CRI `ImageFsInfo` names its mountpoint and what
//! the images take; `statfs` of the mountpoint gives capacity and what is
//! available (cadvisor's `GetDirFsInfo`). A runtime that names no
//! mountpoint is measured at its root directory.

use std::io;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;

use super::plan::FsUsage;
use super::runtime_config;
use crate::edge::cri::{CriClient, CriError};

/// The image filesystem, measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFs {
    pub mountpoint: PathBuf,
    /// What the runtime's images take, when it says.
    pub images_bytes: Option<u64>,
    pub usage: FsUsage,
}

/// Why the image filesystem could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ImageFsError {
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("the runtime at {endpoint} names no image filesystem and no root directory")]
    NoMountpoint { endpoint: String },
    #[error("statfs {path}: {source}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub async fn measure(client: &CriClient) -> Result<ImageFs, ImageFsError> {
    let mut c = client.clone();
    let info = c
        .image
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .map_err(|s| client.call_error("ImageFsInfo", s));
    let listed = match info {
        Ok(response) => response
            .into_inner()
            .image_filesystems
            .into_iter()
            .find_map(|fs| {
                let mountpoint = fs.fs_id?.mountpoint;
                (!mountpoint.is_empty())
                    .then(|| (PathBuf::from(mountpoint), fs.used_bytes.map(|u| u.value)))
            }),
        Err(error) => {
            tracing::debug!(%error, "ImageFsInfo failed; measuring the runtime's root");
            None
        }
    };
    let (mountpoint, images_bytes) = match listed {
        Some(found) => found,
        None => {
            let root = runtime_config::read(client).await?.root_dir;
            let root = root.ok_or_else(|| ImageFsError::NoMountpoint {
                endpoint: client.endpoint().to_string(),
            })?;
            (root, None)
        }
    };
    let usage = statfs(&mountpoint).map_err(|source| ImageFsError::Statfs {
        path: mountpoint.clone(),
        source,
    })?;
    Ok(ImageFs {
        mountpoint,
        images_bytes,
        usage,
    })
}

/// Capacity and what an unprivileged writer may still use (`f_bavail`), as cadvisor's `Available`.
fn statfs(path: &Path) -> io::Result<FsUsage> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(FsUsage {
        capacity: stat.f_blocks.saturating_mul(stat.f_frsize),
        available: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statfs_of_a_directory_reports_a_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let usage = statfs(dir.path()).unwrap();
        assert!(
            usage.capacity > 0 && usage.available <= usage.capacity,
            "{usage:?}"
        );
        assert!(usage.used_percent().is_some());
    }
}
