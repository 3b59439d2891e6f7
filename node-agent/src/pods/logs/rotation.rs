//! What one rotation of a container's log does, decided from the file's size
//! and its directory's names, as the kubelet's container log manager does:
//! temporary and already-compressed leftovers go, the oldest rotated files go
//! so that `maxFiles - 2` are left, those are gzip-compressed, and the file
//! being written is renamed to `<log>.<timestamp>` before the runtime is told
//! to reopen it.

use super::policy::LogPolicy;

/// Suffix of a compressed rotated file.
pub const COMPRESSED_SUFFIX: &str = ".gz";
/// Suffix of a file being compressed (removed if a rotation was interrupted).
pub const TMP_SUFFIX: &str = ".tmp";
/// The rotated file's timestamp, as the kubelet writes it (`20060102-150405` in Go).
pub const TIMESTAMP_FORMAT: &str = "%Y%m%d-%H%M%S";

/// What to do with one container's log this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Under the size limit.
    Nothing,
    /// The file is missing (renamed, and the runtime not told): ask the runtime
    /// to reopen it.
    Reopen,
    /// Rotate: these steps in order, names relative to the log's directory.
    Rotate(Vec<Step>),
}

/// One file operation of a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Remove(String),
    /// gzip `name` into `name.gz` (through `name.gz.tmp`), then remove `name`.
    Compress(String),
    /// Rename the log to `rotated` and ask the runtime to reopen it; if that
    /// fails, rename it back so the next round tries again.
    RenameAndReopen {
        rotated: String,
    },
}

/// The rotation of the log file `log` (its name in its directory), whose size
/// is `size` (`None`: it does not exist), among `siblings` (every name in the
/// directory), at `timestamp` (formatted with [`TIMESTAMP_FORMAT`]).
pub fn plan(
    policy: &LogPolicy,
    log: &str,
    size: Option<u64>,
    siblings: &[String],
    timestamp: &str,
) -> Rotation {
    let Some(size) = size else {
        return Rotation::Reopen;
    };
    if !due(policy, size) {
        return Rotation::Nothing;
    }
    let prefix = format!("{log}.");
    let mut rotated: Vec<&str> = siblings
        .iter()
        .map(String::as_str)
        .filter(|name| name.starts_with(&prefix))
        .collect();
    // Sorted names are oldest first: the timestamps sort as text.
    rotated.sort_unstable();
    let mut steps = Vec::new();
    let (in_use, unused): (Vec<&str>, Vec<&str>) =
        rotated.iter().partition(|name| in_use(name, &rotated));
    steps.extend(unused.iter().map(|name| Step::Remove((*name).to_string())));
    // The file being written and the one rotated now are not counted.
    let keep = policy.max_files.saturating_sub(2);
    let excess = in_use.len().saturating_sub(keep);
    steps.extend(
        in_use[..excess]
            .iter()
            .map(|name| Step::Remove((*name).to_string())),
    );
    steps.extend(
        in_use[excess..]
            .iter()
            .filter(|name| !name.ends_with(COMPRESSED_SUFFIX))
            .map(|name| Step::Compress((*name).to_string())),
    );
    steps.push(Step::RenameAndReopen {
        rotated: format!("{log}.{timestamp}"),
    });
    Rotation::Rotate(steps)
}

/// Whether a log of `size` bytes is at the policy's limit (only then is its
/// directory worth reading).
pub fn due(policy: &LogPolicy, size: u64) -> bool {
    size >= policy.max_size
}

/// Whether a rotated file is kept: not a temporary file, and not an
/// uncompressed file whose compressed copy exists (compression was
/// interrupted before the original was removed).
fn in_use(name: &str, all: &[&str]) -> bool {
    if name.ends_with(TMP_SUFFIX) {
        return false;
    }
    if name.ends_with(COMPRESSED_SUFFIX) {
        return true;
    }
    let compressed = format!("{name}{COMPRESSED_SUFFIX}");
    !all.contains(&compressed.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_size: u64, max_files: usize) -> LogPolicy {
        LogPolicy {
            max_size,
            max_files,
            ..Default::default()
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const NOW: &str = "20261203-130000";

    #[test]
    fn a_file_under_the_limit_is_left_alone() {
        let p = policy(100, 5);
        assert_eq!(
            plan(&p, "0.log", Some(99), &names(&["0.log"]), NOW),
            Rotation::Nothing
        );
    }

    #[test]
    fn a_missing_file_is_reopened() {
        let p = policy(100, 5);
        assert_eq!(plan(&p, "0.log", None, &[], NOW), Rotation::Reopen);
    }

    #[test]
    fn the_first_rotation_only_renames() {
        let p = policy(100, 5);
        assert_eq!(
            plan(&p, "0.log", Some(100), &names(&["0.log", "1.log"]), NOW),
            Rotation::Rotate(vec![Step::RenameAndReopen {
                rotated: "0.log.20261203-130000".into()
            }])
        );
    }

    #[test]
    fn older_files_are_compressed_and_the_oldest_removed_to_keep_max_files() {
        // max 4 files: the current, the one rotated now and 2 older ones.
        let p = policy(100, 4);
        let dir = names(&[
            "0.log",
            "0.log.20261203-120000.gz",
            "0.log.20261203-120010.gz",
            "0.log.20261203-120020",
            // Another container instance's log is not this one's.
            "1.log",
            "1.log.20261203-110000",
        ]);
        assert_eq!(
            plan(&p, "0.log", Some(500), &dir, NOW),
            Rotation::Rotate(vec![
                Step::Remove("0.log.20261203-120000.gz".into()),
                Step::Compress("0.log.20261203-120020".into()),
                Step::RenameAndReopen {
                    rotated: "0.log.20261203-130000".into()
                },
            ])
        );
    }

    #[test]
    fn two_files_keep_only_the_newest_rotated_one() {
        let p = policy(100, 2);
        let dir = names(&["0.log", "0.log.20261203-120000"]);
        assert_eq!(
            plan(&p, "0.log", Some(100), &dir, NOW),
            Rotation::Rotate(vec![
                Step::Remove("0.log.20261203-120000".into()),
                Step::RenameAndReopen {
                    rotated: "0.log.20261203-130000".into()
                },
            ])
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_compression_are_removed_first() {
        let p = policy(100, 5);
        let dir = names(&[
            "0.log",
            "0.log.20261203-120000",
            "0.log.20261203-120000.gz",
            "0.log.20261203-120010.gz.tmp",
            "0.log.20261203-120010",
        ]);
        assert_eq!(
            plan(&p, "0.log", Some(100), &dir, NOW),
            Rotation::Rotate(vec![
                Step::Remove("0.log.20261203-120000".into()),
                Step::Remove("0.log.20261203-120010.gz.tmp".into()),
                Step::Compress("0.log.20261203-120010".into()),
                Step::RenameAndReopen {
                    rotated: "0.log.20261203-130000".into()
                },
            ])
        );
    }
}
