//! The image garbage collection loop (Kubelet mode): every `--image-gc-period`
//! (5 minutes, the kubelet's `ImageGCPeriod`) it lists images and
//! containers, updates the records, measures the image filesystem and
//! removes what [`plan::plan`] says through CRI `RemoveImage`. When unused
//! images cannot bring usage down to the low threshold it says so on the
//! Node (`FreeDiskSpaceFailed`); a round that fails twice in a row is an
//! `ImageGCFailed` event, as the kubelet's `StartGarbageCollection`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::ObjectReference;
use nodeconfig_crds::RuntimeSpec;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::image_fs::{self, ImageFsError};
use super::plan::{self, free_disk_space_failed, GcInput, Removal, Space};
use super::policy::GcPolicy;
use super::records::{images_in_use, ListedImage, SharedImageRecords};
use super::runtime_config;
use crate::edge::cri::{CriClient, CriError};
use crate::edge::cri_handle::CriHandle;
use crate::locked::Locked;
use crate::pods::events::PodEvents;
use crate::reports::ConfigReport;
use crate::serve::health::LoopHeartbeat;
use crate::serve::metrics::{ImageGcReason, Metrics};

/// The loop beats at least this often while it waits for the next round.
const BEAT_EVERY: Duration = Duration::from_secs(30);

/// Why a round failed (the next one tries again).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error(transparent)]
    ImageFs(#[from] ImageFsError),
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    #[error("wanted to free {to_free} bytes, but freed {freed} bytes space with errors in image deletion: {errors}")]
    Removal {
        to_free: u64,
        freed: u64,
        errors: String,
    },
    #[error("{0}")]
    NotEnoughFreed(String),
    #[error("freed {freed} bytes, but removing unused images failed: {errors}")]
    UnusedRemoval { freed: u64, errors: String },
}

pub struct ImageGc {
    pub cri: CriHandle,
    pub config: watch::Receiver<ConfigReport>,
    pub events: PodEvents,
    pub node_name: String,
    pub metrics: Metrics,
    pub period: Duration,
    pub heartbeat: LoopHeartbeat,
    /// What is known of each image, shared with the eviction loop's reclaim.
    pub records: SharedImageRecords,
}

impl ImageGc {
    pub async fn run(self, cancel: CancellationToken) {
        let began = Instant::now();
        let mut failed_before = false;
        loop {
            self.heartbeat.beat();
            match self.round(began).await {
                Ok(()) => {
                    if failed_before {
                        tracing::info!("image garbage collection succeeded");
                    }
                    failed_before = false;
                }
                Err(error) => {
                    if failed_before {
                        tracing::warn!(%error, "image garbage collection failed multiple times in a row");
                        self.node_event("ImageGCFailed", error.to_string());
                    } else {
                        tracing::warn!(%error, "image garbage collection failed once");
                    }
                    failed_before = true;
                }
            }
            let mut left = self.period;
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

    /// The applied NodeConfig's policy and runtime settings; none before one
    /// is applied (a bad policy never is: the config loop refuses it).
    fn settings(&self) -> Option<(GcPolicy, RuntimeSpec)> {
        let report = self.config.borrow();
        let applied = report.applied.as_ref()?;
        let policy = GcPolicy::from_spec(&applied.pods).ok()?;
        Some((policy, applied.runtime.clone()))
    }

    async fn round(&self, began: Instant) -> Result<(), GcError> {
        let client = self.cri.current();
        let now = Instant::now();
        let in_use = detect_images(&client, &self.records, now).await?;
        let Some((policy, runtime)) = self.settings().filter(|(p, _)| p.enabled()) else {
            return Ok(());
        };
        let protected = protected_images(&client, &runtime).await?;
        let fs = image_fs::measure(&client).await?;
        let images = self.records.locked().records();
        let plan = plan::plan(&GcInput {
            policy: &policy,
            images: &images,
            in_use: &in_use,
            protected: &protected,
            usage: fs.usage,
            now,
            running_for: now.saturating_duration_since(began),
        });
        let mut errors = Vec::new();
        for removal in &plan.by_age {
            match remove_image(&client, removal, &self.records).await {
                Ok(()) => self.metrics.image_garbage_collected(ImageGcReason::Age),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let mut freed = 0u64;
        for removal in &plan.by_space {
            match remove_image(&client, removal, &self.records).await {
                Ok(()) => {
                    self.metrics.image_garbage_collected(ImageGcReason::Space);
                    freed = freed.saturating_add(removal.size);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let to_free = match plan.space {
            Space::Enough { .. } => 0,
            Space::InvalidCapacity => {
                self.node_event("InvalidDiskCapacity", GcError::InvalidCapacity.to_string());
                return Err(GcError::InvalidCapacity);
            }
            Space::Reclaim {
                used_percent,
                to_free,
                planned,
            } => {
                tracing::info!(
                    usage = used_percent,
                    high_threshold = policy.high_threshold_percent,
                    low_threshold = policy.low_threshold_percent,
                    to_free,
                    eligible = planned,
                    mountpoint = %fs.mountpoint.display(),
                    images_bytes = ?fs.images_bytes,
                    "image filesystem usage is over the high threshold, freeing bytes down to the low threshold"
                );
                if errors.is_empty() && freed < to_free {
                    let note = free_disk_space_failed(used_percent, fs.usage.capacity, freed);
                    self.node_event("FreeDiskSpaceFailed", note.clone());
                    return Err(GcError::NotEnoughFreed(note));
                }
                to_free
            }
        };
        if errors.is_empty() {
            Ok(())
        } else {
            Err(GcError::Removal {
                to_free,
                freed,
                errors: errors.join("; "),
            })
        }
    }

    /// A Warning event on the Node, as the kubelet's node reference names it.
    fn node_event(&self, reason: &str, note: String) {
        let node = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node_name.clone()),
            uid: Some(self.node_name.clone()),
            ..Default::default()
        };
        self.events.send_about(node, true, reason, note);
    }
}

/// Lists the images and what containers (any state) use, records them at
/// `now` (the kubelet's `detectImages`) and returns the IDs in use.
pub(super) async fn detect_images(
    client: &CriClient,
    records: &SharedImageRecords,
    now: Instant,
) -> Result<BTreeSet<String>, CriError> {
    let listed = list_images(client).await?;
    let refs = container_image_refs(client).await?;
    let in_use = images_in_use(&listed, refs.iter().map(String::as_str));
    records.locked().observe(now, &listed, &in_use);
    Ok(in_use)
}

/// CRI `RemoveImage`; the image's record goes with it.
pub(super) async fn remove_image(
    client: &CriClient,
    removal: &Removal,
    records: &SharedImageRecords,
) -> Result<(), CriError> {
    tracing::info!(image = %removal.id, size = removal.size, "removing image to free bytes");
    let mut c = client.clone();
    c.image
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: removal.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| client.call_error("RemoveImage", s))?;
    records.locked().forget(&removal.id);
    Ok(())
}

async fn list_images(client: &CriClient) -> Result<Vec<ListedImage>, CriError> {
    let mut c = client.clone();
    let images = c
        .image
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .map_err(|s| client.call_error("ListImages", s))?
        .into_inner()
        .images;
    Ok(images
        .into_iter()
        .map(|image| ListedImage {
            names: image
                .repo_tags
                .into_iter()
                .chain(image.repo_digests)
                .collect(),
            id: image.id,
            size: image.size,
            pinned: image.pinned,
        })
        .collect())
}

/// What every container, in any state, names its image by.
async fn container_image_refs(client: &CriClient) -> Result<Vec<String>, CriError> {
    let mut c = client.clone();
    let containers = c
        .runtime
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .map_err(|s| client.call_error("ListContainers", s))?
        .into_inner()
        .containers;
    Ok(containers
        .into_iter()
        .flat_map(|c| {
            let spec = c.image.map(|i| i.image).unwrap_or_default();
            [spec, c.image_ref, c.image_id]
        })
        .collect())
}

/// The IDs of the images that always stay: the sandbox image the runtime
/// starts sandboxes from, and spec.runtime's sandbox image and images to
/// pre-pull. A runtime that cannot say its configuration or find its own
/// sandbox image fails the round: without its pause image no new pod could
/// start. A NodeConfig reference the runtime cannot read only protects nothing.
pub(super) async fn protected_images(
    client: &CriClient,
    runtime: &RuntimeSpec,
) -> Result<BTreeSet<String>, CriError> {
    let config = runtime_config::read(client).await?;
    let mut ids = BTreeSet::new();
    if let Some(sandbox_image) = config.sandbox_image {
        ids.extend(image_id(client, &sandbox_image).await?);
    }
    let configured = std::iter::once(&runtime.sandbox_image).chain(&runtime.pre_pull_images);
    for reference in configured {
        match image_id(client, reference).await {
            Ok(id) => ids.extend(id),
            Err(error) => tracing::debug!(%reference, %error, "cannot look up an image to keep"),
        }
    }
    Ok(ids)
}

/// The ID of the image `reference` names, if the runtime holds it (CRI `ImageStatus`).
async fn image_id(client: &CriClient, reference: &str) -> Result<Option<String>, CriError> {
    let mut c = client.clone();
    let status = c
        .image
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|s| client.call_error("ImageStatus", s))?
        .into_inner();
    Ok(status.image.map(|i| i.id))
}
