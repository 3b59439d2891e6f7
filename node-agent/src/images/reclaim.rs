//! Every unused image removed at once when the eviction loop asks, before
//! it evicts a pod for disk pressure (the kubelet's `DeleteUnusedImages`):
//! the images are listed and recorded again, and [`plan::unused`] says which
//! go, with the records the image GC loop keeps (so the minimum age counts
//! from when that loop first saw each image).

use std::time::Instant;

use nodeconfig_crds::RuntimeSpec;

use super::gc::{detect_images, protected_images, remove_image, GcError};
use super::plan::{self, FsUsage, GcInput};
use super::policy::GcPolicy;
use super::records::SharedImageRecords;
use crate::edge::cri_handle::CriHandle;
use crate::locked::Locked;
use crate::serve::metrics::{ImageGcReason, Metrics};

/// What one reclaim removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Freed {
    pub images: usize,
    pub bytes: u64,
}

/// Removes unused images on the eviction loop's demand.
#[derive(Clone)]
pub struct ImageReclaimer {
    pub cri: CriHandle,
    pub records: SharedImageRecords,
    pub metrics: Metrics,
}

impl ImageReclaimer {
    /// Removes every unused image at least `policy.min_age` old that is not
    /// `runtime`'s sandbox or pre-pull image nor the runtime's sandbox
    /// image. Removals that fail are skipped and named in the error, after
    /// the others were tried.
    pub async fn delete_unused(
        &self,
        policy: &GcPolicy,
        runtime: &RuntimeSpec,
    ) -> Result<Freed, GcError> {
        let client = self.cri.current();
        let now = Instant::now();
        let in_use = detect_images(&client, &self.records, now).await?;
        let protected = protected_images(&client, runtime).await?;
        let images = self.records.locked().records();
        let removals = plan::unused(&GcInput {
            policy,
            images: &images,
            in_use: &in_use,
            protected: &protected,
            usage: FsUsage::default(),
            now,
            running_for: std::time::Duration::ZERO,
        });
        let mut freed = Freed::default();
        let mut errors = Vec::new();
        for removal in &removals {
            match remove_image(&client, removal, &self.records).await {
                Ok(()) => {
                    self.metrics.image_garbage_collected(ImageGcReason::Space);
                    freed.images += 1;
                    freed.bytes = freed.bytes.saturating_add(removal.size);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(freed)
        } else {
            Err(GcError::UnusedRemoval {
                freed: freed.bytes,
                errors: errors.join("; "),
            })
        }
    }
}
