//! Which images go, as the kubelet's `GarbageCollect` decides it
//! (`imagesInEvictionOrder`, `freeOldImages`, `freeSpace`), on plain data.
//!
//! Candidates are the images no container uses, the runtime does not pin and
//! the agent does not protect (the sandbox image, images to pre-pull), the
//! least recently used first (never used before used; then the first seen
//! first). With a maximum age, every candidate unused for longer goes, once
//! the agent has run that long. Then, when the filesystem is at the high
//! threshold or more, candidates at least the minimum age old go in order
//! until what they take adds up to what brings usage down to the low
//! threshold. The kubelet measures the filesystem again after the age pass;
//! here the age pass's sizes count as freed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::policy::GcPolicy;
use super::records::ImageRecord;

/// The image filesystem's size and what is free for use, in bytes (statfs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
}

impl FsUsage {
    /// Percent in use as the kubelet reckons it, `100 - available * 100 /
    /// capacity` (so rounded up); `None` for a capacity of 0.
    pub fn used_percent(&self) -> Option<u8> {
        if self.capacity == 0 {
            return None;
        }
        let available = u128::from(self.available.min(self.capacity));
        let free = available * 100 / u128::from(self.capacity);
        Some(100 - u8::try_from(free).unwrap_or(100))
    }
}

/// What a round knows.
#[derive(Clone, Copy, Debug)]
pub struct GcInput<'a> {
    pub policy: &'a GcPolicy,
    pub images: &'a [ImageRecord],
    pub in_use: &'a BTreeSet<String>,
    /// Image IDs that always stay (sandbox image, images to pre-pull).
    pub protected: &'a BTreeSet<String>,
    pub usage: FsUsage,
    pub now: Instant,
    /// How long image collection has run: the maximum age waits until it is
    /// longer, so that a restart does not count every image as old.
    pub running_for: Duration,
}

/// One image to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub id: String,
    pub size: u64,
}

/// What the round does about the filesystem's usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Space {
    /// Below the high threshold (after the age pass): nothing to free.
    Enough { used_percent: u8 },
    /// At or above it: `to_free` bytes would bring usage to the low threshold.
    Reclaim {
        used_percent: u8,
        to_free: u64,
        /// What the planned removals add up to; less than `to_free` means
        /// the unused images cannot bring usage down to the low threshold.
        planned: u64,
    },
    /// The filesystem reports no capacity (the kubelet's `InvalidDiskCapacity`).
    InvalidCapacity,
}

/// The round's removals, in the order to make them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcPlan {
    /// Unused longer than the maximum age.
    pub by_age: Vec<Removal>,
    /// Freeing space down to the low threshold.
    pub by_space: Vec<Removal>,
    pub space: Space,
}

/// The candidates, least recently used first.
fn eviction_order<'a>(input: &GcInput<'a>) -> Vec<&'a ImageRecord> {
    let mut candidates: Vec<&ImageRecord> = input
        .images
        .iter()
        .filter(|r| !r.pinned && !input.in_use.contains(&r.id) && !input.protected.contains(&r.id))
        .collect();
    candidates.sort_by(|a, b| {
        (a.last_used, a.first_seen, &a.id).cmp(&(b.last_used, b.first_seen, &b.id))
    });
    candidates
}

pub fn plan(input: &GcInput<'_>) -> GcPlan {
    let policy = input.policy;
    let since = |t: Instant| input.now.saturating_duration_since(t);
    let removal = |r: &ImageRecord| Removal {
        id: r.id.clone(),
        size: r.size,
    };
    let mut candidates = eviction_order(input);

    let mut by_age = Vec::new();
    if let Some(max_age) = policy.max_age.filter(|max| input.running_for > *max) {
        // Never used: unused since first seen.
        candidates.retain(|r| {
            let expired = since(r.last_used.unwrap_or(r.first_seen)) > max_age;
            if expired {
                by_age.push(removal(r));
            }
            !expired
        });
    }

    let freed_by_age: u64 = by_age.iter().map(|r| r.size).sum();
    let usage = FsUsage {
        capacity: input.usage.capacity,
        available: input
            .usage
            .available
            .saturating_add(freed_by_age)
            .min(input.usage.capacity),
    };
    let Some(used_percent) = usage.used_percent() else {
        return GcPlan {
            by_age,
            by_space: Vec::new(),
            space: Space::InvalidCapacity,
        };
    };
    if used_percent < policy.high_threshold_percent {
        return GcPlan {
            by_age,
            by_space: Vec::new(),
            space: Space::Enough { used_percent },
        };
    }
    let low_free =
        u128::from(usage.capacity) * u128::from(100 - policy.low_threshold_percent) / 100;
    let to_free =
        u64::try_from(low_free.saturating_sub(u128::from(usage.available))).unwrap_or(u64::MAX);
    let mut by_space = Vec::new();
    let mut planned = 0u64;
    for record in candidates {
        if planned >= to_free {
            break;
        }
        // Maybe just pulled for a container about to start.
        if since(record.first_seen) < policy.min_age {
            continue;
        }
        planned = planned.saturating_add(record.size);
        by_space.push(removal(record));
    }
    GcPlan {
        by_age,
        by_space,
        space: Space::Reclaim {
            used_percent,
            to_free,
            planned,
        },
    }
}

/// Every candidate old enough to go, least recently used first: the
/// kubelet's `DeleteUnusedImages` (its `freeSpace` with no bound), which the
/// eviction manager calls under disk pressure whatever the thresholds, so
/// also while collection is off. Only the policy's minimum age is read;
/// `usage` and `running_for` are not.
pub fn unused(input: &GcInput<'_>) -> Vec<Removal> {
    eviction_order(input)
        .into_iter()
        .filter(|r| input.now.saturating_duration_since(r.first_seen) >= input.policy.min_age)
        .map(|r| Removal {
            id: r.id.clone(),
            size: r.size,
        })
        .collect()
}

/// The note of the kubelet's `FreeDiskSpaceFailed` event.
pub fn free_disk_space_failed(used_percent: u8, capacity: u64, freed: u64) -> String {
    format!(
        "Insufficient free disk space on the node's image filesystem ({used_percent}% of {} used). \
         Failed to free sufficient space by deleting unused images (freed {freed} bytes). \
         Investigate disk usage, as it could be used by active images, logs, volumes, or other data.",
        format_size(capacity)
    )
}

/// A size as the kubelet's `formatSize` writes it: `512 B`, `1.5 KiB`, `251.9 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;

    struct Image {
        id: &'static str,
        size: u64,
        /// Seconds before now.
        seen: u64,
        used: Option<u64>,
        pinned: bool,
    }

    fn image(id: &'static str, size: u64, seen: u64, used: Option<u64>) -> Image {
        Image {
            id,
            size,
            seen,
            used,
            pinned: false,
        }
    }

    struct Case {
        name: &'static str,
        policy: GcPolicy,
        images: Vec<Image>,
        in_use: &'static [&'static str],
        protected: &'static [&'static str],
        usage: FsUsage,
        running_for: u64,
        by_age: &'static [&'static str],
        by_space: &'static [&'static str],
        space: Space,
    }

    fn policy(high: u8, low: u8, min_age: u64, max_age: Option<u64>) -> GcPolicy {
        GcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            min_age: Duration::from_secs(min_age),
            max_age: max_age.map(Duration::from_secs),
        }
    }

    fn usage(capacity: u64, available: u64) -> FsUsage {
        FsUsage {
            capacity,
            available,
        }
    }

    fn run(case: &Case) {
        let now = Instant::now() + Duration::from_secs(100_000);
        let ago = |s: u64| now - Duration::from_secs(s);
        let images: Vec<ImageRecord> = case
            .images
            .iter()
            .map(|i| ImageRecord {
                id: i.id.into(),
                size: i.size,
                pinned: i.pinned,
                first_seen: ago(i.seen),
                last_used: i.used.map(ago),
            })
            .collect();
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let (in_use, protected) = (set(case.in_use), set(case.protected));
        let plan = plan(&GcInput {
            policy: &case.policy,
            images: &images,
            in_use: &in_use,
            protected: &protected,
            usage: case.usage,
            now,
            running_for: Duration::from_secs(case.running_for),
        });
        let ids = |rs: &[Removal]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&plan.by_age), case.by_age, "{}: by age", case.name);
        assert_eq!(
            ids(&plan.by_space),
            case.by_space,
            "{}: by space",
            case.name
        );
        assert_eq!(plan.space, case.space, "{}: space", case.name);
    }

    #[test]
    fn plans_as_the_kubelets_image_gc_manager() {
        let cases = [
            Case {
                name: "under the high threshold nothing goes",
                policy: GcPolicy::default(),
                images: vec![image("old", 500 * MB, 3600, None)],
                in_use: &[],
                protected: &[],
                usage: usage(100 * GB, 16 * GB),
                running_for: 3600,
                by_age: &[],
                by_space: &[],
                space: Space::Enough { used_percent: 84 },
            },
            Case {
                name:
                    "at the high threshold the least recently used go until the low one is reached",
                policy: GcPolicy::default(),
                images: vec![
                    image("used-late", 2 * GB, 3600, Some(60)),
                    image("never-used", 2 * GB, 3000, None),
                    image("used-early", 2 * GB, 3600, Some(1800)),
                    image("never-used-older", GB, 3500, None),
                ],
                in_use: &[],
                protected: &[],
                // 85 % used; 80 % needs 5 GiB more free.
                usage: usage(100 * GB, 15 * GB),
                running_for: 3600,
                by_age: &[],
                by_space: &["never-used-older", "never-used", "used-early"],
                space: Space::Reclaim {
                    used_percent: 85,
                    to_free: 5 * GB,
                    planned: 5 * GB,
                },
            },
            Case {
                name: "images in use, pinned or protected stay; so do young ones",
                policy: GcPolicy::default(),
                images: vec![
                    image("app", GB, 3600, Some(0)),
                    Image {
                        pinned: true,
                        ..image("pinned", GB, 3600, None)
                    },
                    image("pause", GB, 3600, None),
                    image("just-pulled", GB, 30, None),
                    image("unused", GB, 3600, None),
                ],
                in_use: &["app"],
                protected: &["pause"],
                usage: usage(100 * GB, 5 * GB),
                running_for: 3600,
                by_age: &[],
                by_space: &["unused"],
                space: Space::Reclaim {
                    used_percent: 95,
                    to_free: 15 * GB,
                    planned: GB,
                },
            },
            Case {
                name: "a minimum age of 0 lets an image go as soon as it is seen",
                policy: policy(85, 80, 0, None),
                images: vec![image("just-pulled", GB, 0, None)],
                in_use: &[],
                protected: &[],
                usage: usage(100 * GB, 10 * GB),
                running_for: 0,
                by_age: &[],
                by_space: &["just-pulled"],
                space: Space::Reclaim {
                    used_percent: 90,
                    to_free: 10 * GB,
                    planned: GB,
                },
            },
            Case {
                name: "usage is rounded up as the kubelet's integer percent",
                policy: policy(92, 91, 0, None),
                images: vec![image("a", MB, 600, None)],
                in_use: &[],
                protected: &[],
                // 91.4 % used: 8.6 % free, which the kubelet counts as 8.
                usage: usage(1000 * MB, 86 * MB),
                running_for: 600,
                by_age: &[],
                by_space: &["a"],
                space: Space::Reclaim {
                    used_percent: 92,
                    to_free: 4 * MB,
                    planned: MB,
                },
            },
            Case {
                name:
                    "the maximum age removes what was unused longer, once the agent ran that long",
                policy: policy(85, 80, 60, Some(3600)),
                images: vec![
                    image("stale", GB, 10_000, Some(4000)),
                    image("never-used", GB, 5000, None),
                    image("recent", GB, 10_000, Some(100)),
                ],
                in_use: &[],
                protected: &[],
                usage: usage(100 * GB, 50 * GB),
                running_for: 3601,
                by_age: &["never-used", "stale"],
                by_space: &[],
                space: Space::Enough { used_percent: 48 },
            },
            Case {
                name: "no maximum age before the agent ran that long",
                policy: policy(85, 80, 60, Some(3600)),
                images: vec![image("stale", GB, 10_000, Some(4000))],
                in_use: &[],
                protected: &[],
                usage: usage(100 * GB, 50 * GB),
                running_for: 3600,
                by_age: &[],
                by_space: &[],
                space: Space::Enough { used_percent: 50 },
            },
            Case {
                name: "what the age pass frees counts before the space pass",
                policy: policy(85, 80, 60, Some(3600)),
                images: vec![
                    image("stale", 3 * GB, 10_000, Some(4000)),
                    image("recent", 4 * GB, 10_000, Some(100)),
                ],
                in_use: &[],
                protected: &[],
                // 86 % used before, 83 % once the stale image is gone.
                usage: usage(100 * GB, 14 * GB),
                running_for: 7200,
                by_age: &["stale"],
                by_space: &[],
                space: Space::Enough { used_percent: 83 },
            },
            Case {
                name: "a filesystem without capacity frees nothing for space",
                policy: GcPolicy::default(),
                images: vec![image("a", GB, 3600, None)],
                in_use: &[],
                protected: &[],
                usage: usage(0, 0),
                running_for: 3600,
                by_age: &[],
                by_space: &[],
                space: Space::InvalidCapacity,
            },
        ];
        for case in &cases {
            run(case);
        }
    }

    #[test]
    fn the_failure_note_reads_as_the_kubelets() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(270_553_059_328), "252.0 GiB");
        assert_eq!(
            free_disk_space_failed(92, 1536, 0),
            "Insufficient free disk space on the node's image filesystem (92% of 1.5 KiB used). \
             Failed to free sufficient space by deleting unused images (freed 0 bytes). \
             Investigate disk usage, as it could be used by active images, logs, volumes, or other data."
        );
    }
    #[test]
    fn eviction_takes_every_unused_image_old_enough_whatever_the_usage() {
        let now = Instant::now() + Duration::from_secs(100_000);
        let ago = |s: u64| now - Duration::from_secs(s);
        let record = |id: &str, seen: u64, used: Option<u64>, pinned: bool| ImageRecord {
            id: id.into(),
            size: MB,
            pinned,
            first_seen: ago(seen),
            last_used: used.map(ago),
        };
        let images = vec![
            record("recent", 3600, Some(10), false),
            record("never-used", 3600, None, false),
            record("young", 60, None, false),
            record("in-use", 3600, Some(0), false),
            record("pause", 3600, None, false),
            record("pinned", 3600, None, true),
            record("long-ago", 3600, Some(1800), false),
        ];
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let (in_use, protected) = (set(&["in-use"]), set(&["pause"]));
        // Collection off (high threshold 100) and a nearly empty disk: still all of them.
        let policy = policy(100, 99, 120, None);
        let removals = unused(&GcInput {
            policy: &policy,
            images: &images,
            in_use: &in_use,
            protected: &protected,
            usage: usage(100 * GB, 99 * GB),
            now,
            running_for: Duration::ZERO,
        });
        let ids: Vec<&str> = removals.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["never-used", "long-ago", "recent"]);
    }
}
