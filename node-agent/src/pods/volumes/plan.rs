//! What each of a Pod's volumes holds, and where its containers mount them,
//! after the kubelet's volume plugins (`pkg/volume/{emptydir,hostpath,
//! configmap,secret,downwardapi,projected}`). Pure: the shell fetches the
//! objects [`required_objects`] names, [`plan_volumes`] says which files each
//! volume gets (paths, bytes, modes), and the shell writes them
//! ([`crate::pods::volumes::manager`]); [`container_mounts`] turns `volumeMounts` into
//! CRI mounts (the shell's [`crate::pods::volumes::manager::prepare_mounts`] also
//! creates missing subPaths and keeps them inside their volume). A
//! `subPathExpr` is expanded with the container's environment and then is
//! a `subPath` ([`mount_sub_path`]).
//!
//! clusterTrustBundle projections pick and join the bundles the shell listed
//! ([`trust_bundles`]); podCertificate projections write the credentials
//! the shell got issued for each source ([`PodCertificateSource`]).
//!
//! Not covered: persistent volumes, CSI, image and ephemeral volumes.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::cell::RefCell;

use k8s_cri::v1 as cri;
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::pods::cri_config::env::expand;
use crate::pods::volumes::downward_api;
use crate::pods::volumes::pod_certificate::Credentials;
use crate::pods::volumes::trust_bundles;

/// The mode of a volume's files when the volume sets no `defaultMode` (0644).
pub const DEFAULT_MODE: u32 = 0o644;
/// `expirationSeconds` of a serviceAccountToken projection that sets none.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// One service account token a Pod's projected volumes ask for. The token is
/// bound to the Pod, so the Pod itself is implied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenKey {
    pub service_account: String,
    /// Empty: the API server's own audiences.
    pub audience: String,
    pub expiration_seconds: i64,
}

/// One podCertificate source of a Pod: where it is (volume, index among
/// the volume's sources) and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodCertificateSource {
    pub volume: String,
    pub index: usize,
    pub signer_name: String,
    pub key_type: String,
    pub max_expiration_seconds: Option<i32>,
    pub user_annotations: BTreeMap<String, String>,
}

/// The objects a Pod's volumes name, to fetch before [`plan_volumes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Required {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub tokens: BTreeSet<TokenKey>,
    /// Some clusterTrustBundle projection needs the ClusterTrustBundles.
    pub trust_bundles: bool,
    pub pod_certificates: Vec<PodCertificateSource>,
}

/// What the shell fetched for a Pod's volumes. A ConfigMap or Secret that is
/// `None` (or absent) does not exist.
#[derive(Debug, Clone, Default)]
pub struct VolumeData {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// The token text per requested token.
    pub tokens: BTreeMap<TokenKey, String>,
    /// Every ClusterTrustBundle, when [`Required::trust_bundles`].
    pub cluster_trust_bundles: Vec<ClusterTrustBundle>,
    /// The credentials per podCertificate source (volume, index), or why
    /// there are none yet.
    pub pod_certificates: BTreeMap<(String, usize), Result<Credentials, String>>,
    /// The Node's allocatable: a `resourceFieldRef` to a limit the container
    /// does not set reports this, as the kubelet does.
    pub node_allocatable: BTreeMap<String, Quantity>,
}

/// The medium of an emptyDir: the node's disk, or a tmpfs (`Memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyDir {
    Disk,
    Memory,
}

/// The `type` of a hostPath volume: what must be at the path, or be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check.
    Unchecked,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// Which plugin a volume of files belongs to; names its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSource {
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
}

impl FileSource {
    /// The kubelet's plugin directory name under `<pod>/volumes/`.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            Self::ConfigMap => "kubernetes.io~configmap",
            Self::Secret => "kubernetes.io~secret",
            Self::DownwardApi => "kubernetes.io~downward-api",
            Self::Projected => "kubernetes.io~projected",
        }
    }
}

/// The plugin directory of emptyDir volumes.
pub const EMPTY_DIR_PLUGIN_DIR: &str = "kubernetes.io~empty-dir";

/// One file of a volume: its path inside the volume (relative, clean), its
/// content and its mode bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// One volume of a Pod, as the shell must make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePlan {
    /// An emptyDir: a directory every user of the pod can write (0777), its
    /// group the pod's `fsGroup` when set.
    Dir {
        name: String,
        kind: EmptyDir,
        fs_group: Option<u32>,
    },
    /// A directory or file of the host, mounted as it is.
    HostPath {
        name: String,
        path: PathBuf,
        type_: HostPathType,
    },
    /// configMap, secret, downwardAPI and projected volumes: files written
    /// atomically, owned by group `fs_group` when set (modes already allow it
    /// to read them).
    Files {
        name: String,
        source: FileSource,
        files: Vec<FileEntry>,
        fs_group: Option<u32>,
    },
}

impl VolumePlan {
    /// The volume's name in the Pod spec.
    pub fn name(&self) -> &str {
        match self {
            Self::Dir { name, .. } | Self::HostPath { name, .. } | Self::Files { name, .. } => name,
        }
    }
}

/// Why one volume could not be set up; reads like the reason in the kubelet's
/// FailedMount events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetUpFailure {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKeyMissing(String),
    #[error("secret references non-existent secret key: {0}")]
    SecretKeyMissing(String),
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("downward API: {0}")]
    DownwardApi(String),
    #[error("no token for service account {0:?} (the TokenRequest failed or was not made)")]
    TokenMissing(String),
    /// The clusterTrustBundle manager's text.
    #[error("{0}")]
    TrustBundle(String),
    /// The pod certificate manager's text.
    #[error("{0}")]
    PodCertificate(String),
    #[error("hostPath type check failed: {0}")]
    HostPathType(String),
    #[error("{0} volumes are not supported by this node")]
    Unsupported(String),
}

/// Errors of volume planning and setup.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?} : {reason}")]
    SetUp {
        volume: String,
        reason: SetUpFailure,
    },
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    NoSuchVolume { container: String, volume: String },
    #[error("container {container:?}: subPath {sub_path:?} of volume {volume:?} {reason}")]
    SubPath {
        container: String,
        volume: String,
        sub_path: String,
        reason: &'static str,
    },
    #[error("container {container:?}: subPathExpr {expr:?} of volume {volume:?}: missing value for {}", missing.join(", "))]
    SubPathExpr {
        container: String,
        volume: String,
        expr: String,
        missing: Vec<String>,
    },
    #[error("pod {pod:?} has no UID usable as a directory name")]
    NoUid { pod: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("getting {kind} {namespace}/{name}: {source}")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("requesting a token for service account {namespace}/{service_account}: {source}")]
    TokenRequest {
        namespace: String,
        service_account: String,
        source: Box<kube::Error>,
    },
}

impl VolumeError {
    fn set_up(volume: &Volume, reason: SetUpFailure) -> Self {
        Self::SetUp {
            volume: volume.name.clone(),
            reason,
        }
    }
}

/// The ConfigMaps, Secrets and tokens the Pod's volumes reference, by name
/// (exactly what the Node authorizer lets the node read for this pod),
/// whether ClusterTrustBundles are needed, and the podCertificate sources.
pub fn required_objects(pod: &Pod) -> Required {
    let mut required = Required::default();
    for volume in volumes(pod) {
        if let Some(cm) = &volume.config_map {
            required.config_maps.insert(cm.name.clone());
        }
        if let Some(secret) = &volume.secret {
            required
                .secrets
                .insert(secret.secret_name.clone().unwrap_or_default());
        }
        for (index, source) in projections(volume).enumerate() {
            if let Some(cm) = &source.config_map {
                required.config_maps.insert(cm.name.clone());
            }
            if source.cluster_trust_bundle.is_some() {
                required.trust_bundles = true;
            }
            if let Some(cert) = &source.pod_certificate {
                required.pod_certificates.push(PodCertificateSource {
                    volume: volume.name.clone(),
                    index,
                    signer_name: cert.signer_name.clone(),
                    key_type: cert.key_type.clone(),
                    max_expiration_seconds: cert.max_expiration_seconds,
                    user_annotations: cert.user_annotations.clone().unwrap_or_default(),
                });
            }
            if let Some(secret) = &source.secret {
                required.secrets.insert(secret.name.clone());
            }
            if let Some(token) = &source.service_account_token {
                required.tokens.insert(token_key(pod, token));
            }
        }
    }
    required
}

fn volumes(pod: &Pod) -> impl Iterator<Item = &Volume> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
}

fn projections(
    volume: &Volume,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::VolumeProjection> {
    volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten()
}

fn token_key(
    pod: &Pod,
    token: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> TokenKey {
    TokenKey {
        service_account: service_account(pod),
        audience: token.audience.clone().unwrap_or_default(),
        expiration_seconds: token
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
    }
}

/// The Pod's `serviceAccountName` (`default` when unset).
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The volumes of the Pod, in spec order, with the files of those that hold
/// files. Fails on the first volume that cannot be set up.
pub fn plan_volumes(pod: &Pod, data: &VolumeData) -> Result<Vec<VolumePlan>, VolumeError> {
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    volumes(pod)
        .map(|volume| plan_volume(pod, volume, data, fs_group))
        .collect()
}

fn plan_volume(
    pod: &Pod,
    volume: &Volume,
    data: &VolumeData,
    fs_group: Option<u32>,
) -> Result<VolumePlan, VolumeError> {
    let name = volume.name.clone();
    let fail = |reason| VolumeError::set_up(volume, reason);
    let files = |source, payload: Payload| -> Result<VolumePlan, VolumeError> {
        Ok(VolumePlan::Files {
            name: volume.name.clone(),
            source,
            files: payload.into_files(fs_group),
            fs_group,
        })
    };
    if let Some(empty_dir) = &volume.empty_dir {
        let kind = match empty_dir.medium.as_deref() {
            Some("Memory") => EmptyDir::Memory,
            _ => EmptyDir::Disk,
        };
        return Ok(VolumePlan::Dir {
            name,
            kind,
            fs_group,
        });
    }
    if let Some(host_path) = &volume.host_path {
        let type_ = match host_path.type_.as_deref().unwrap_or_default() {
            "" => HostPathType::Unchecked,
            "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
            "Directory" => HostPathType::Directory,
            "FileOrCreate" => HostPathType::FileOrCreate,
            "File" => HostPathType::File,
            "Socket" => HostPathType::Socket,
            "CharDevice" => HostPathType::CharDevice,
            "BlockDevice" => HostPathType::BlockDevice,
            other => {
                return Err(fail(SetUpFailure::HostPathType(format!(
                    "unknown type {other:?}"
                ))))
            }
        };
        return Ok(VolumePlan::HostPath {
            name,
            path: PathBuf::from(&host_path.path),
            type_,
        });
    }
    if let Some(cm) = &volume.config_map {
        let mut payload = Payload::default();
        let mode = mode_or_default(cm.default_mode);
        add_config_map(
            &mut payload,
            data,
            &cm.name,
            cm.items.as_deref(),
            mode,
            cm.optional,
        )
        .map_err(fail)?;
        return files(FileSource::ConfigMap, payload);
    }
    if let Some(secret) = &volume.secret {
        let mut payload = Payload::default();
        let mode = mode_or_default(secret.default_mode);
        let secret_name = secret.secret_name.as_deref().unwrap_or_default();
        add_secret(
            &mut payload,
            data,
            secret_name,
            secret.items.as_deref(),
            mode,
            secret.optional,
        )
        .map_err(fail)?;
        return files(FileSource::Secret, payload);
    }
    if let Some(downward) = &volume.downward_api {
        let mut payload = Payload::default();
        let mode = mode_or_default(downward.default_mode);
        add_downward_api(&mut payload, pod, data, downward.items.as_deref(), mode).map_err(fail)?;
        return files(FileSource::DownwardApi, payload);
    }
    if let Some(projected) = &volume.projected {
        let mut payload = Payload::default();
        let mode = mode_or_default(projected.default_mode);
        // With an fsGroup, tokens, trust bundles and pod certificates are
        // 0600 and the group's read bit is added below (the kubelet's
        // SetVolumeOwnership): 0640.
        let private_mode = if fs_group.is_some() { 0o600 } else { mode };
        for (index, source) in projections(volume).enumerate() {
            if let Some(cm) = &source.config_map {
                add_config_map(
                    &mut payload,
                    data,
                    &cm.name,
                    cm.items.as_deref(),
                    mode,
                    cm.optional,
                )
                .map_err(fail)?;
            } else if let Some(secret) = &source.secret {
                add_secret(
                    &mut payload,
                    data,
                    &secret.name,
                    secret.items.as_deref(),
                    mode,
                    secret.optional,
                )
                .map_err(fail)?;
            } else if let Some(downward) = &source.downward_api {
                add_downward_api(&mut payload, pod, data, downward.items.as_deref(), mode)
                    .map_err(fail)?;
            } else if let Some(token) = &source.service_account_token {
                let key = token_key(pod, token);
                let text = data
                    .tokens
                    .get(&key)
                    .ok_or_else(|| fail(SetUpFailure::TokenMissing(key.service_account.clone())))?;
                payload
                    .insert(&token.path, text.as_bytes().to_vec(), private_mode)
                    .map_err(fail)?;
            } else if let Some(ctb) = &source.cluster_trust_bundle {
                let anchors = trust_bundles::trust_anchors(&data.cluster_trust_bundles, ctb)
                    .map_err(|e| fail(SetUpFailure::TrustBundle(e)))?;
                payload
                    .insert(&ctb.path, anchors, private_mode)
                    .map_err(fail)?;
            } else if let Some(cert) = &source.pod_certificate {
                let credentials = data
                    .pod_certificates
                    .get(&(volume.name.clone(), index))
                    .cloned()
                    .unwrap_or_else(|| Err("credential bundle is not issued yet".into()))
                    .map_err(|e| fail(SetUpFailure::PodCertificate(e)))?;
                add_pod_certificate(&mut payload, cert, credentials, private_mode).map_err(fail)?;
            } else {
                return Err(fail(SetUpFailure::Unsupported(
                    "projected sources other than configMap, secret, downwardAPI, serviceAccountToken, clusterTrustBundle and podCertificate"
                        .into(),
                )));
            }
        }
        return files(FileSource::Projected, payload);
    }
    Err(fail(SetUpFailure::Unsupported(volume_kind(volume))))
}

/// The name of the volume's source field (`persistentVolumeClaim`, `nfs`, ...).
fn volume_kind(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "sourceless".into())
}

fn mode_or_default(mode: Option<i32>) -> u32 {
    mode.map(|m| (m as u32) & 0o7777).unwrap_or(DEFAULT_MODE)
}

/// The files of one volume, by clean relative path; a later source wins.
#[derive(Default)]
struct Payload(BTreeMap<PathBuf, (Vec<u8>, u32)>);

impl Payload {
    fn insert(&mut self, path: &str, bytes: Vec<u8>, mode: u32) -> Result<(), SetUpFailure> {
        let path = clean_relative_path(path)?;
        self.0.insert(path, (bytes, mode));
        Ok(())
    }

    /// With an fsGroup, every file is made readable by the group.
    fn into_files(self, fs_group: Option<u32>) -> Vec<FileEntry> {
        self.0
            .into_iter()
            .map(|(path, (bytes, mode))| FileEntry {
                path,
                bytes,
                mode: if fs_group.is_some() {
                    mode | 0o440
                } else {
                    mode
                },
            })
            .collect()
    }
}

/// The atomic writer's path rules: relative, no `..` element, not starting
/// with `..` (reserved for its own entries), names of at most 255 bytes, at
/// most 4096 in all. Returns the path cleaned of `.` and repeated slashes.
fn clean_relative_path(path: &str) -> Result<PathBuf, SetUpFailure> {
    let invalid = |reason| SetUpFailure::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.starts_with('/') {
        return Err(invalid("must be a relative path"));
    }
    if path.len() > 4096 {
        return Err(invalid("must be at most 4096 characters"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if parts.contains(&"..") {
        return Err(invalid("must not contain '..'"));
    }
    if parts.iter().any(|p| p.len() > 255) {
        return Err(invalid("file names must be at most 255 characters"));
    }
    if parts[0].starts_with("..") {
        return Err(invalid("must not start with '..'"));
    }
    Ok(parts.iter().collect())
}

/// The item's mode, else the volume's.
fn item_mode(item: &KeyToPath, default: u32) -> u32 {
    item.mode.map(|m| (m as u32) & 0o7777).unwrap_or(default)
}

/// The kubelet's configmap `MakePayload`: every key, or the listed items.
fn add_config_map(
    payload: &mut Payload,
    data: &VolumeData,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
) -> Result<(), SetUpFailure> {
    let optional = optional.unwrap_or(false);
    let Some(cm) = data.config_maps.get(name).and_then(Option::as_ref) else {
        return if optional {
            Ok(())
        } else {
            Err(SetUpFailure::ConfigMapNotFound(name.to_string()))
        };
    };
    let lookup = |key: &str| -> Option<Vec<u8>> {
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
            })
    };
    match items.filter(|i| !i.is_empty()) {
        None => {
            let keys = cm.data.iter().flat_map(|d| d.keys());
            let binary_keys = cm.binary_data.iter().flat_map(|d| d.keys());
            for key in keys.chain(binary_keys) {
                payload.insert(key, lookup(key).unwrap_or_default(), mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match lookup(&item.key) {
                    Some(bytes) => payload.insert(&item.path, bytes, item_mode(item, mode))?,
                    None if optional => {}
                    None => return Err(SetUpFailure::ConfigMapKeyMissing(item.key.clone())),
                }
            }
        }
    }
    Ok(())
}

/// The kubelet's secret `MakePayload`: every key, or the listed items.
fn add_secret(
    payload: &mut Payload,
    data: &VolumeData,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
) -> Result<(), SetUpFailure> {
    let optional = optional.unwrap_or(false);
    let Some(secret) = data.secrets.get(name).and_then(Option::as_ref) else {
        return if optional {
            Ok(())
        } else {
            Err(SetUpFailure::SecretNotFound(name.to_string()))
        };
    };
    let entries = secret.data.as_ref();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, bytes) in entries.into_iter().flatten() {
                payload.insert(key, bytes.0.clone(), mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match entries.and_then(|d| d.get(&item.key)) {
                    Some(bytes) => {
                        payload.insert(&item.path, bytes.0.clone(), item_mode(item, mode))?
                    }
                    None if optional => {}
                    None => return Err(SetUpFailure::SecretKeyMissing(item.key.clone())),
                }
            }
        }
    }
    Ok(())
}

/// The files of a podCertificate source: the credential bundle (key, then
/// chain), the key and the chain, each at its path when one is given.
fn add_pod_certificate(
    payload: &mut Payload,
    cert: &k8s_openapi::api::core::v1::PodCertificateProjection,
    credentials: Credentials,
    mode: u32,
) -> Result<(), SetUpFailure> {
    let path = |p: &Option<String>| p.clone().filter(|p| !p.is_empty());
    if let Some(bundle_path) = path(&cert.credential_bundle_path) {
        let mut bundle = credentials.key_pem.clone();
        bundle.extend_from_slice(&credentials.chain_pem);
        payload.insert(&bundle_path, bundle, mode)?;
    }
    if let Some(key_path) = path(&cert.key_path) {
        payload.insert(&key_path, credentials.key_pem.clone(), mode)?;
    }
    if let Some(chain_path) = path(&cert.certificate_chain_path) {
        payload.insert(&chain_path, credentials.chain_pem, mode)?;
    }
    Ok(())
}

/// The kubelet's downwardapi `CollectData`.
fn add_downward_api(
    payload: &mut Payload,
    pod: &Pod,
    data: &VolumeData,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: u32,
) -> Result<(), SetUpFailure> {
    for item in items.into_iter().flatten() {
        let value = if let Some(field) = &item.field_ref {
            downward_api::pod_field(pod, &field.field_path)
        } else if let Some(resource) = &item.resource_field_ref {
            downward_api::container_resource(pod, resource, &data.node_allocatable)
        } else {
            Ok(String::new())
        }
        .map_err(SetUpFailure::DownwardApi)?;
        let mode = item.mode.map(|m| (m as u32) & 0o7777).unwrap_or(mode);
        payload.insert(&item.path, value.into_bytes(), mode)?;
    }
    Ok(())
}

/// The CRI mounts of one container: each `volumeMount` at its `mountPath`,
/// from the volume's host path (`host_paths`, by volume name) joined with its
/// [`mount_sub_path`] (`envs`, the container's environment, expands a
/// `subPathExpr`). API data volumes (configMap, secret, downwardAPI,
/// projected, recognised by their plugin directory) are always read-only, as
/// the kubelet mounts them.
pub fn container_mounts(
    container: &Container,
    host_paths: &BTreeMap<String, PathBuf>,
    envs: &[cri::KeyValue],
) -> Result<Vec<cri::Mount>, VolumeError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let volume_path =
                host_paths
                    .get(&mount.name)
                    .ok_or_else(|| VolumeError::NoSuchVolume {
                        container: container.name.clone(),
                        volume: mount.name.clone(),
                    })?;
            let host_path = match mount_sub_path(container, mount, envs)? {
                None => volume_path.clone(),
                Some(sub_path) => volume_path.join(sub_path),
            };
            let propagation = match mount.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
                _ => cri::MountPropagation::PropagationPrivate,
            };
            Ok(cri::Mount {
                container_path: mount.mount_path.clone(),
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: mount.read_only.unwrap_or(false) || is_api_data_volume(volume_path),
                selinux_relabel: false,
                propagation: propagation as i32,
                ..Default::default()
            })
        })
        .collect()
}

/// The path inside its volume that `mount` mounts, as the kubelet's
/// `makeMounts`: its `subPathExpr` expanded with the container's environment
/// (`$(VAR)` only, `$$` escapes; a variable unset or empty is an error, as
/// `ExpandContainerVolumeMounts`), else its `subPath`; `None` for the whole
/// volume. Either must be relative and may not step out with `..`.
pub fn mount_sub_path(
    container: &Container,
    mount: &VolumeMount,
    envs: &[cri::KeyValue],
) -> Result<Option<String>, VolumeError> {
    let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        Some(expr) => {
            expand_sub_path_expr(expr, envs).map_err(|missing| VolumeError::SubPathExpr {
                container: container.name.clone(),
                volume: mount.name.clone(),
                expr: expr.to_string(),
                missing,
            })?
        }
        None => mount.sub_path.clone().unwrap_or_default(),
    };
    if sub_path.is_empty() {
        return Ok(None);
    }
    let error = |reason| VolumeError::SubPath {
        container: container.name.clone(),
        volume: mount.name.clone(),
        sub_path: sub_path.clone(),
        reason,
    };
    if sub_path.starts_with('/') {
        return Err(error("must not be an absolute path"));
    }
    if sub_path.split('/').any(|part| part == "..") {
        return Err(error("must not contain '..'"));
    }
    Ok(Some(sub_path))
}

/// `expr` with its `$(VAR)` references replaced from `envs` (the last
/// definition of a name wins); `Err` lists, sorted, the names unset or empty.
fn expand_sub_path_expr(expr: &str, envs: &[cri::KeyValue]) -> Result<String, Vec<String>> {
    let values: BTreeMap<&str, &str> = envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    let missing = RefCell::new(BTreeSet::new());
    let expanded = expand(expr, |name| {
        let value = values.get(name).copied().filter(|v| !v.is_empty());
        if value.is_none() {
            missing.borrow_mut().insert(name.to_string());
        }
        value
    });
    let missing = missing.into_inner();
    if missing.is_empty() {
        Ok(expanded)
    } else {
        Err(missing.into_iter().collect())
    }
}

/// Whether the volume directory is one of a plugin whose files come from the API.
fn is_api_data_volume(volume_path: &Path) -> bool {
    let plugin = volume_path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    [
        FileSource::ConfigMap,
        FileSource::Secret,
        FileSource::DownwardApi,
        FileSource::Projected,
    ]
    .iter()
    .any(|s| Some(s.plugin_dir()) == plugin)
}
