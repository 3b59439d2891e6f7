//! The shell of Kubelet mode's volumes: fetches what a Pod's volumes name
//! (ConfigMaps, Secrets, service account tokens bound to the Pod, the
//! ClusterTrustBundles, pod certificates through
//! [`crate::pods::volumes::pod_certificates`]), plans them
//! ([`crate::pods::volumes::plan`]) and makes them on disk under
//! `<pods_dir>/<uid>/volumes/<plugin>/<volume>`, like the kubelet's
//! `/var/lib/kubelet/pods`.
//!
//! The node's credentials may only read the objects of pods bound to it (the
//! Node authorizer), so every request names exactly what the Pod references;
//! ClusterTrustBundles are cluster-wide and every node may list them.
//! Objects are fetched on every [`VolumeManager::setup`]; the writer rewrites
//! a volume only when its content changed, so running pods see updates as
//! with the kubelet's periodic sync.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_cri::v1 as cri;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, PostParams};

use crate::locked::Locked;
use crate::pods::volumes::atomic_writer::{make_dir, set_mode, write_atomically};
use crate::pods::volumes::plan::{
    container_mounts, mount_sub_path, plan_volumes, required_objects, EmptyDir, FileSource,
    HostPathType, SetUpFailure, TokenKey, VolumeData, VolumeError, VolumePlan,
    EMPTY_DIR_PLUGIN_DIR,
};
use crate::pods::volumes::pod_certificates::PodCertificates;
use crate::pods::volumes::sub_path;
use crate::pods::volumes::sub_path_mount::{self, Fault};
use crate::pods::volumes::tmpfs;

/// `<pods_dir>/<uid>` (and `pods_dir` when missing), like the kubelet's pod directories.
const POD_DIR_MODE: u32 = 0o750;
/// Directories inside a pod's directory.
const DIR_MODE: u32 = 0o755;
/// emptyDir volumes: any user of the pod may write (the kubelet's 0777).
const EMPTY_DIR_MODE: u32 = 0o777;
/// A token is renewed after this long even when it lives longer (the kubelet's maxTTL).
const TOKEN_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Makes and removes the volumes of the pods on this node.
pub struct VolumeManager {
    client: kube::Client,
    pods_dir: PathBuf,
    node_allocatable: BTreeMap<String, Quantity>,
    /// Tokens by (pod UID, request).
    tokens: Mutex<BTreeMap<(String, TokenKey), CachedToken>>,
    pod_certificates: PodCertificates,
}

/// A token the API server issued, and when.
#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

impl CachedToken {
    /// The kubelet's token manager: renew once 80% of the lifetime has
    /// passed, or after 24 hours.
    fn needs_refresh(&self, now: SystemTime) -> bool {
        let lifetime = self.expires.duration_since(self.issued).unwrap_or_default();
        now >= self.issued + lifetime.mul_f64(0.8) || now >= self.issued + TOKEN_MAX_AGE
    }
}

impl VolumeManager {
    /// Volumes go under `pods_dir` (e.g. `/var/lib/nodeconfig/pods`).
    pub fn new(client: kube::Client, pods_dir: PathBuf) -> Self {
        Self {
            pod_certificates: PodCertificates::new(client.clone(), String::new()),
            client,
            pods_dir,
            node_allocatable: BTreeMap::new(),
            tokens: Mutex::new(BTreeMap::new()),
        }
    }

    /// The Node's name, which PodCertificateRequests name.
    pub fn with_node_name(mut self, node_name: &str) -> Self {
        self.pod_certificates = PodCertificates::new(self.client.clone(), node_name.to_string());
        self
    }

    /// The Node's allocatable, which a downward API `resourceFieldRef` to an
    /// unset limit reports.
    pub fn with_node_allocatable(mut self, allocatable: BTreeMap<String, Quantity>) -> Self {
        self.node_allocatable = allocatable;
        self
    }

    /// Makes every volume of the Pod and returns its host path by volume
    /// name. Idempotent: call it on every sync of the pod (not concurrently
    /// for the same pod); volumes whose content changed are rewritten
    /// atomically, the others are left alone.
    pub async fn setup(&self, pod: &Pod) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
        let uid = pod_uid(pod)?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let required = required_objects(pod);

        let mut data = VolumeData {
            node_allocatable: self.node_allocatable.clone(),
            ..VolumeData::default()
        };
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        for name in required.config_maps {
            let found = config_maps
                .get_opt(&name)
                .await
                .map_err(|source| VolumeError::Api {
                    kind: "configmap",
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                })?;
            data.config_maps.insert(name, found);
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        for name in required.secrets {
            let found = secrets
                .get_opt(&name)
                .await
                .map_err(|source| VolumeError::Api {
                    kind: "secret",
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                })?;
            data.secrets.insert(name, found);
        }
        for key in required.tokens {
            let token = self.token(pod, &uid, &namespace, &key).await?;
            data.tokens.insert(key, token);
        }
        if required.trust_bundles {
            data.cluster_trust_bundles = Api::<ClusterTrustBundle>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|source| VolumeError::Api {
                    kind: "clustertrustbundles",
                    namespace: String::new(),
                    name: String::new(),
                    source: Box::new(source),
                })?
                .items;
        }
        for source in required.pod_certificates {
            let credentials = self.pod_certificates.credentials(pod, &uid, &source).await;
            data.pod_certificates
                .insert((source.volume, source.index), credentials);
        }

        let plans = plan_volumes(pod, &data)?;
        let pod_dir = self.pods_dir.join(&uid);
        tokio::task::spawn_blocking(move || make_volumes(&pod_dir, &plans))
            .await
            .map_err(|e| VolumeError::Io {
                action: "setting up the volumes in",
                path: self.pods_dir.join(&uid),
                source: io::Error::other(e),
            })?
    }

    /// The cached token for this pod and request, renewed when due. When the
    /// renewal fails, a token that has not expired yet is still used.
    async fn token(
        &self,
        pod: &Pod,
        uid: &str,
        namespace: &str,
        key: &TokenKey,
    ) -> Result<String, VolumeError> {
        let cache_key = (uid.to_string(), key.clone());
        let now = SystemTime::now();
        let cached = self.lock_tokens().get(&cache_key).cloned();
        if let Some(cached) = &cached {
            if !cached.needs_refresh(now) {
                return Ok(cached.token.clone());
            }
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        match request_token(&self.client, namespace, &pod_name, uid, key).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                self.lock_tokens().insert(cache_key, fresh);
                Ok(token)
            }
            Err(e) => match cached {
                Some(cached) if cached.expires > now => {
                    tracing::warn!(error = %e, "token renewal failed; keeping the current token");
                    Ok(cached.token)
                }
                _ => Err(e),
            },
        }
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, TokenKey), CachedToken>> {
        // A panic elsewhere cannot leave the map half-updated: inserts and removes are single calls.
        self.tokens.locked()
    }

    /// Removes everything under `<pods_dir>/<uid>` and the pod's cached
    /// tokens. hostPath volumes are never under it, so never touched. Call it
    /// once the pod's containers are gone.
    pub async fn teardown(&self, uid: &str) -> Result<(), VolumeError> {
        self.lock_tokens().retain(|(pod_uid, _), _| pod_uid != uid);
        self.pod_certificates.forget(uid);
        let pods_dir = self.pods_dir.clone();
        let uid = uid.to_string();
        let dir = pods_dir.join(&uid);
        tokio::task::spawn_blocking(move || remove_pod_dir(&pods_dir, &uid))
            .await
            .map_err(|e| VolumeError::Io {
                action: "removing",
                path: dir,
                source: io::Error::other(e),
            })?
    }

    /// `<pods_dir>/<uid>`: the pod's directory, where its volumes and the
    /// kubelet's other per-pod files (`etc-hosts`) live.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// UIDs of the pods that have a directory under `pods_dir`, to clean up
    /// the volumes of pods deleted while the agent was down.
    pub fn known_pod_dirs(&self) -> Vec<String> {
        known_pod_dirs(&self.pods_dir)
    }
}

fn pod_uid(pod: &Pod) -> Result<String, VolumeError> {
    pod.metadata
        .uid
        .clone()
        .filter(|uid| is_single_component(uid))
        .ok_or_else(|| VolumeError::NoUid {
            pod: pod.metadata.name.clone().unwrap_or_default(),
        })
}

/// A UID that names one directory: no separator, not `.` or `..`.
fn is_single_component(uid: &str) -> bool {
    !uid.is_empty() && !uid.contains('/') && uid != "." && uid != ".."
}

/// Asks the API server for a token of the pod's service account, bound to
/// the pod (it stops working once the pod is gone).
async fn request_token(
    client: &kube::Client,
    namespace: &str,
    pod_name: &str,
    pod_uid: &str,
    key: &TokenKey,
) -> Result<CachedToken, VolumeError> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // None: the API server's audiences.
            audiences: Some(
                Some(key.audience.clone())
                    .filter(|a| !a.is_empty())
                    .into_iter()
                    .collect(),
            ),
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name.into()),
                uid: Some(pod_uid.into()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = SystemTime::now();
    let error = |source| VolumeError::TokenRequest {
        namespace: namespace.into(),
        service_account: key.service_account.clone(),
        source: Box::new(source),
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(&key.service_account, &PostParams::default(), &request)
        .await
        .map_err(error)?;
    let status = response.status.unwrap_or_default();
    let expires = status
        .expiration_timestamp
        .map(|t| SystemTime::from(t.0))
        .unwrap_or(issued + Duration::from_secs(key.expiration_seconds.max(0) as u64));
    Ok(CachedToken {
        token: status.token.unwrap_or_default(),
        issued,
        expires,
    })
}

/// Makes the planned volumes of one pod under `pod_dir` and returns the host
/// path of each.
pub fn make_volumes(
    pod_dir: &Path,
    plans: &[VolumePlan],
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    // Host users other than root must not read the pod's secrets; containers
    // see their volumes through bind mounts and never traverse this.
    make_dir(pod_dir, POD_DIR_MODE)?;
    let mut paths = BTreeMap::new();
    for plan in plans {
        let path = match plan {
            VolumePlan::Dir {
                name,
                kind,
                fs_group,
            } => {
                let dir = pod_dir
                    .join("volumes")
                    .join(EMPTY_DIR_PLUGIN_DIR)
                    .join(name);
                make_empty_dir(&dir, *kind, *fs_group)?;
                dir
            }
            VolumePlan::HostPath { name, path, type_ } => {
                check_host_path(path, *type_).map_err(|reason| VolumeError::SetUp {
                    volume: name.clone(),
                    reason: SetUpFailure::HostPathType(reason),
                })?;
                path.clone()
            }
            VolumePlan::Files {
                name,
                source,
                files,
                fs_group,
            } => {
                let dir = pod_dir.join("volumes").join(source.plugin_dir()).join(name);
                if matches!(source, FileSource::Secret | FileSource::Projected) {
                    // The kubelet keeps secrets and tokens off the node's disk.
                    make_dir(&dir, DIR_MODE)?;
                    tmpfs::ensure_tmpfs(&dir, DIR_MODE)?;
                }
                if write_atomically(&dir, files, *fs_group)? {
                    tracing::debug!(volume = %name, path = %dir.display(), "volume written");
                }
                dir
            }
        };
        paths.insert(plan.name().to_string(), path);
    }
    Ok(paths)
}

/// A 0777 directory (a tmpfs for `Memory`); with an fsGroup, owned by that
/// group and set-gid so new files inherit it (the kubelet's SetVolumeOwnership).
fn make_empty_dir(dir: &Path, kind: EmptyDir, fs_group: Option<u32>) -> Result<(), VolumeError> {
    let existed = dir.is_dir();
    make_dir(dir, DIR_MODE)?;
    let fresh = match kind {
        EmptyDir::Disk => !existed,
        EmptyDir::Memory => tmpfs::ensure_tmpfs(dir, EMPTY_DIR_MODE)?,
    };
    if !fresh {
        return Ok(()); // Keep whatever the pod did to its own directory.
    }
    let mut mode = EMPTY_DIR_MODE;
    if let Some(group) = fs_group {
        rustix::fs::chown(dir, None, Some(rustix::fs::Gid::from_raw(group))).map_err(|e| {
            VolumeError::Io {
                action: "changing the group of",
                path: dir.to_path_buf(),
                source: e.into(),
            }
        })?;
        mode |= 0o2000;
    }
    set_mode(dir, mode)
}

/// The kubelet's hostPath type check: `*OrCreate` makes what is missing,
/// the others must find the right kind of file.
fn check_host_path(path: &Path, type_: HostPathType) -> Result<(), String> {
    let shown = path.display();
    let meta = fs::metadata(path);
    let file_type = meta.as_ref().map(|m| m.file_type());
    match type_ {
        HostPathType::Unchecked => Ok(()),
        HostPathType::DirectoryOrCreate if meta.is_err() => fs::create_dir_all(path)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("creating {shown}: {e}")),
        HostPathType::FileOrCreate if meta.is_err() => fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o644)))
            .map_err(|e| format!("creating {shown}: {e}")),
        HostPathType::Directory | HostPathType::DirectoryOrCreate => match file_type {
            Ok(t) if t.is_dir() => Ok(()),
            Ok(_) => Err(format!("{shown} is not a directory")),
            Err(_) => Err(format!("{shown} does not exist")),
        },
        HostPathType::File | HostPathType::FileOrCreate => match file_type {
            Ok(t) if t.is_file() => Ok(()),
            Ok(_) => Err(format!("{shown} is not a file")),
            Err(_) => Err(format!("{shown} does not exist")),
        },
        HostPathType::Socket => match file_type {
            Ok(t) if t.is_socket() => Ok(()),
            Ok(_) => Err(format!("{shown} is not a socket file")),
            Err(_) => Err(format!("{shown} does not exist")),
        },
        HostPathType::CharDevice => match file_type {
            Ok(t) if t.is_char_device() => Ok(()),
            Ok(_) => Err(format!("{shown} is not a character device")),
            Err(_) => Err(format!("{shown} does not exist")),
        },
        HostPathType::BlockDevice => match file_type {
            Ok(t) if t.is_block_device() => Ok(()),
            Ok(_) => Err(format!("{shown} is not a block device")),
            Err(_) => Err(format!("{shown} does not exist")),
        },
    }
}

/// [`container_mounts`] with each `subPath` (or expanded `subPathExpr`)
/// made safe, as the kubelet's `doBindSubPath`: a missing subPath is created
/// as a directory (with its volume's mode); the subPath is opened from the
/// volume's root one component at a time without following links, must
/// stay inside the volume, and is bind-mounted from the opened descriptor
/// onto `<pod_dir>/volume-subpaths/<volume>/<container>/<index>`, the host
/// path the runtime gets. A pod that swaps a component for a link to `/`
/// meanwhile gets a refusal, never the host's files.
pub fn prepare_mounts(
    container: &Container,
    host_paths: &BTreeMap<String, PathBuf>,
    envs: &[cri::KeyValue],
    pod_dir: &Path,
) -> Result<Vec<cri::Mount>, VolumeError> {
    let mut mounts = container_mounts(container, host_paths, envs)?;
    for (index, (mount, spec)) in mounts
        .iter_mut()
        .zip(container.volume_mounts.iter().flatten())
        .enumerate()
    {
        let (Some(sub_path), Some(volume_path)) = (
            mount_sub_path(container, spec, envs)?,
            host_paths.get(&spec.name),
        ) else {
            continue;
        };
        let refused = |reason| VolumeError::SubPath {
            container: container.name.clone(),
            volume: spec.name.clone(),
            sub_path: sub_path.clone(),
            reason,
        };
        let target = sub_path::bind_target(pod_dir, &spec.name, &container.name, index)
            .ok_or_else(|| refused("has no usable mount target"))?;
        match sub_path_mount::bind_sub_path(volume_path, &sub_path, &target) {
            Ok(()) => mount.host_path = target.to_string_lossy().into_owned(),
            Err(Fault::Refused(reason)) => return Err(refused(reason)),
            Err(Fault::Io(e)) => return Err(e),
        }
    }
    Ok(mounts)
}

/// Removes `<pods_dir>/<uid>`. Refuses a UID that is not one path component.
pub fn remove_pod_dir(pods_dir: &Path, uid: &str) -> Result<(), VolumeError> {
    if !is_single_component(uid) {
        return Err(VolumeError::NoUid {
            pod: uid.to_string(),
        });
    }
    let dir = pods_dir.join(uid);
    tmpfs::unmount_under(&dir)?;
    // remove_dir_all does not follow symlinks, so a hostPath or a link a pod
    // made in its emptyDir never leads it outside the pod's directory.
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VolumeError::Io {
            action: "removing",
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Names of the directories under `pods_dir` (none when it does not exist).
pub fn known_pod_dirs(pods_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    let mut uids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    uids.sort();
    uids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_at_80_percent_of_its_life_or_after_a_day() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = CachedToken {
            token: "t".into(),
            issued: t0,
            expires: t0 + Duration::from_secs(3600),
        };
        assert!(!hour.needs_refresh(t0 + Duration::from_secs(2879)));
        assert!(hour.needs_refresh(t0 + Duration::from_secs(2880)));
        let year = CachedToken {
            expires: t0 + Duration::from_secs(365 * 24 * 3600),
            ..hour
        };
        assert!(!year.needs_refresh(t0 + Duration::from_secs(23 * 3600)));
        assert!(year.needs_refresh(t0 + TOKEN_MAX_AGE));
    }
}
