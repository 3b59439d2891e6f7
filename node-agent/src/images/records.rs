//! What the agent remembers of each image between rounds, as the kubelet's
//! `imageRecords`: when it first saw the image (`firstDetected`), when it
//! last saw a container use it (`lastUsed`), its size and whether the
//! runtime pins it. Kept in memory: after a restart every image counts as
//! first seen then, so none is young enough to go for `imageMinimumGCAge`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// An image as CRI `ListImages` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedImage {
    /// The image ID (`sha256:` of its config).
    pub id: String,
    /// Its repository tags and digests: names a container may refer to it by.
    pub names: Vec<String>,
    pub size: u64,
    /// The runtime says it must stay (CRI `pinned`).
    pub pinned: bool,
}

/// One image's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: String,
    pub size: u64,
    pub pinned: bool,
    pub first_seen: Instant,
    /// The last round that found a container of it; `None`: never seen used.
    pub last_used: Option<Instant>,
}

/// The records of the images the runtime holds.
#[derive(Clone, Debug, Default)]
pub struct ImageRecords {
    by_id: BTreeMap<String, ImageRecord>,
}

impl ImageRecords {
    /// One round's listing, as the kubelet's `detectImages`: a new image is
    /// first seen `now`, an image in use was last used `now`, an image the
    /// runtime no longer holds is forgotten.
    pub fn observe(&mut self, now: Instant, listed: &[ListedImage], in_use: &BTreeSet<String>) {
        let present: BTreeSet<&str> = listed.iter().map(|i| i.id.as_str()).collect();
        self.by_id.retain(|id, _| present.contains(id.as_str()));
        for image in listed {
            let record = self
                .by_id
                .entry(image.id.clone())
                .or_insert_with(|| ImageRecord {
                    id: image.id.clone(),
                    size: image.size,
                    pinned: image.pinned,
                    first_seen: now,
                    last_used: None,
                });
            record.size = image.size;
            record.pinned = image.pinned;
            if in_use.contains(&image.id) {
                record.last_used = Some(now);
            }
        }
    }

    /// An image removed by the agent.
    pub fn forget(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    pub fn records(&self) -> Vec<ImageRecord> {
        self.by_id.values().cloned().collect()
    }
}

/// The records, shared by the image GC loop and the eviction loop's reclaim
/// of unused images (the kubelet's one image manager serves both).
pub type SharedImageRecords = std::sync::Arc<std::sync::Mutex<ImageRecords>>;

/// The IDs of the listed images that containers refer to, by ID, tag or
/// digest (a container's `image`, `imageRef` or `imageId`, as CRI gives them).
pub fn images_in_use<'a>(
    listed: &[ListedImage],
    container_refs: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let refs: BTreeSet<&str> = container_refs
        .into_iter()
        .filter(|r| !r.is_empty())
        .collect();
    listed
        .iter()
        .filter(|image| {
            refs.contains(image.id.as_str())
                || image.names.iter().any(|n| refs.contains(n.as_str()))
        })
        .map(|image| image.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn listed(id: &str, size: u64) -> ListedImage {
        ListedImage {
            id: id.into(),
            names: vec![format!("example.com/{id}:1")],
            size,
            pinned: false,
        }
    }

    #[test]
    fn first_seen_stays_last_used_moves_and_gone_images_are_forgotten() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(300);
        let mut records = ImageRecords::default();
        records.observe(
            t0,
            &[listed("a", 1), listed("b", 2)],
            &BTreeSet::from(["a".to_string()]),
        );
        records.observe(
            t1,
            &[
                listed("a", 1),
                ListedImage {
                    pinned: true,
                    ..listed("c", 3)
                },
            ],
            &BTreeSet::new(),
        );
        let all = records.records();
        assert_eq!(all.len(), 2, "b is gone: {all:?}");
        assert_eq!((all[0].first_seen, all[0].last_used), (t0, Some(t0)));
        assert_eq!(
            (all[1].id.as_str(), all[1].first_seen, all[1].last_used),
            ("c", t1, None)
        );
        assert!(all[1].pinned);
        records.forget("a");
        assert_eq!(records.records().len(), 1);
    }

    #[test]
    fn containers_use_images_by_id_tag_or_digest() {
        let images = [
            listed("sha256:aa", 1),
            ListedImage {
                names: vec!["example.com/b@sha256:bd".into()],
                ..listed("sha256:bb", 1)
            },
            listed("sha256:cc", 1),
            listed("sha256:dd", 1),
        ];
        let used = images_in_use(
            &images,
            [
                "sha256:aa",
                "example.com/b@sha256:bd",
                "example.com/sha256:cc:1",
                "",
            ],
        );
        assert_eq!(
            used,
            BTreeSet::from(["sha256:aa".into(), "sha256:bb".into(), "sha256:cc".into()])
        );
    }
}
