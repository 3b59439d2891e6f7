//! A container's `subPath`, made safe the kubelet's way
//! (`pkg/volume/util/subpath/subpath_linux.go`): where its bind mount goes
//! (`getSubpathBindTarget`), which components are opened from the volume's
//! root (the segments `doSafeOpen` walks, with `PathWithinBase` as the
//! escape check), and what to do with what is already at the target
//! (`prepareSubpathTarget`). Pure; the opening and mounting is
//! [`super::sub_path_mount`].
//!
//! ```text
//! <volume root> --openat(O_PATH|O_NOFOLLOW) per component--> fd N
//! /proc/<agent>/fd/N --bind--> <pod dir>/volume-subpaths/<volume>/<container>/<index>
//!                                 ^ the host path the runtime mounts
//! ```
//! The runtime is handed a path in the agent's own directory, never one a
//! pod can change: swapping a component of the subPath for a link to `/`
//! after the check changes nothing that is mounted.
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// The folder of a pod's directory holding its subPath bind mounts, as the
/// kubelet's `containerSubPathDirectoryName`.
pub const SUBPATHS_DIR: &str = "volume-subpaths";

/// Why a subPath is refused (the end of a [`super::plan::VolumeError::SubPath`] message).
pub const OUTSIDE: &str = "resolves outside its volume";
/// A component that resolved to a directory was a symlink when opened:
/// something changed it in between (the CVE-2017-1002101 race).
pub const SWAPPED: &str = "had a symbolic link swapped in while it was being mounted";
/// The mount found at the target is not the file that was opened.
pub const NOT_WHAT_WAS_OPENED: &str = "was not what the agent opened after mounting it";

/// `<pod_dir>/volume-subpaths/<volume>/<container>/<index>`: the bind
/// mount target of a container's `index`th volume mount; `None` when a name
/// is not one plain path component (the API allows only DNS labels).
pub fn bind_target(pod_dir: &Path, volume: &str, container: &str, index: usize) -> Option<PathBuf> {
    let plain = |name: &str| {
        let mut parts = Path::new(name).components();
        matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) && !name.contains('/')
    };
    (plain(volume) && plain(container)).then(|| {
        pod_dir
            .join(SUBPATHS_DIR)
            .join(volume)
            .join(container)
            .join(index.to_string())
    })
}

/// The components of a relative subPath (`a//b/./c` is `a`, `b`, `c`);
/// `None` when it is absolute or steps up with `..`.
pub fn components(sub_path: &str) -> Option<Vec<&str>> {
    if sub_path.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = sub_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (!parts.contains(&"..")).then_some(parts)
}

/// The components that lead from `root` down to `resolved` (both already
/// free of symlinks); `None` when `resolved` is not inside `root`.
pub fn beneath(root: &Path, resolved: &Path) -> Option<Vec<OsString>> {
    let rest = resolved.strip_prefix(root).ok()?;
    rest.components()
        .map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            _ => None,
        })
        .collect()
}

/// What is at a bind target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// Something is mounted on it.
    pub mounted: bool,
    /// It is the very file that was opened (same device and inode).
    pub same_file: bool,
    pub is_dir: bool,
}

/// The next step to bring a bind target to the opened file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStep {
    /// Already mounted from the opened file (a restarted container, or a
    /// start after an agent restart): nothing to do.
    Reuse,
    /// Mounted, but from another file: unmount, then look again.
    Unmount,
    /// A leftover of the wrong kind (a file where a directory is wanted, or
    /// the reverse): remove it.
    Remove,
    /// Nothing there: make an empty directory or file to mount on.
    Create,
    /// An empty target of the right kind: bind-mount the opened file on it.
    Mount,
}

/// The next step for a target in state `existing` when the opened file is
/// a directory (`want_dir`) or not; mount points are only ever unmounted,
/// never removed, so nothing below them is touched.
pub fn target_step(existing: Option<Existing>, want_dir: bool) -> TargetStep {
    match existing {
        None => TargetStep::Create,
        Some(e) if e.mounted && e.same_file => TargetStep::Reuse,
        Some(e) if e.mounted => TargetStep::Unmount,
        Some(e) if e.is_dir != want_dir => TargetStep::Remove,
        Some(_) => TargetStep::Mount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_per_volume_container_and_mount_index() {
        assert_eq!(
            bind_target(Path::new("/var/lib/pods/uid-1"), "data", "app", 2),
            Some(PathBuf::from(
                "/var/lib/pods/uid-1/volume-subpaths/data/app/2"
            ))
        );
        for (volume, container) in [("..", "app"), ("data", "a/b"), ("", "app"), ("data", ".")] {
            assert_eq!(
                bind_target(Path::new("/p"), volume, container, 0),
                None,
                "{volume:?} {container:?}"
            );
        }
    }

    #[test]
    fn sub_paths_split_into_plain_components() {
        assert_eq!(components("a//b/./c/"), Some(vec!["a", "b", "c"]));
        assert_eq!(components("d"), Some(vec!["d"]));
        assert_eq!(components("."), Some(vec![]));
        assert_eq!(components("/etc"), None);
        assert_eq!(components("a/../../etc"), None);
        assert_eq!(components("..a/b.."), Some(vec!["..a", "b.."]));
    }

    #[test]
    fn only_what_resolves_inside_the_root_is_walked() {
        let root = Path::new("/pods/u/volumes/kubernetes.io~empty-dir/shared");
        assert_eq!(
            beneath(root, &root.join("d/e")),
            Some(vec![OsString::from("d"), OsString::from("e")])
        );
        assert_eq!(beneath(root, root), Some(vec![]));
        assert_eq!(beneath(root, Path::new("/")), None);
        assert_eq!(beneath(root, Path::new("/pods/u/volumes")), None);
        // A sibling sharing the root's name as a prefix is outside.
        assert_eq!(
            beneath(
                root,
                Path::new("/pods/u/volumes/kubernetes.io~empty-dir/shared2")
            ),
            None
        );
    }

    #[test]
    fn a_target_is_reused_only_when_it_mounts_the_opened_file() {
        let e = |mounted, same_file, is_dir| {
            Some(Existing {
                mounted,
                same_file,
                is_dir,
            })
        };
        use TargetStep::*;
        let cases = [
            (None, true, Create),
            (e(true, true, true), true, Reuse),
            (e(true, false, true), true, Unmount),
            (e(true, false, false), true, Unmount),
            (e(false, false, false), true, Remove),
            (e(false, false, true), false, Remove),
            (e(false, false, true), true, Mount),
            (e(false, false, false), false, Mount),
            // The target itself (not mounted) can never be the opened file,
            // but if it were, it is still mounted over, not trusted.
            (e(false, true, true), true, Mount),
        ];
        for (existing, want_dir, step) in cases {
            assert_eq!(
                target_step(existing, want_dir),
                step,
                "{existing:?} {want_dir}"
            );
        }
    }
}
