//! Memory-backed volume directories, as the kubelet makes them: a tmpfs
//! mounted on the volume's directory for `emptyDir.medium: Memory`, secret
//! and projected volumes (so secrets never reach the node's disk), and every
//! mount under a pod's directory taken away before the directory goes.
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use super::plan::VolumeError;

/// Mounts a tmpfs on `dir` unless one is mounted there already (each sync
/// sets volumes up again). The tmpfs's root gets `mode`. True when it mounted.
pub fn ensure_tmpfs(dir: &Path, mode: u32) -> Result<bool, VolumeError> {
    if is_mount_point(dir)? {
        return Ok(false);
    }
    let data = std::ffi::CString::new(format!("mode={mode:o}")).expect("no NUL in a mode");
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map(|()| true)
    .map_err(|e| VolumeError::Io {
        action: "mounting a tmpfs on",
        path: dir.to_path_buf(),
        source: e.into(),
    })
}

/// Whether `dir` is the root of a mount: its device differs from its
/// parent's (the test `mountpoint` makes).
fn is_mount_point(dir: &Path) -> Result<bool, VolumeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::Io {
            action: "inspecting",
            path,
            source,
        }
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let here = fs::symlink_metadata(dir).map_err(io(dir))?;
    let above = fs::metadata(parent).map_err(io(parent))?;
    Ok(here.dev() != above.dev() || here.ino() == above.ino())
}

/// Unmounts everything mounted at or below `dir`, deepest first, detaching
/// what is busy. Nothing to do when nothing is mounted there.
pub fn unmount_under(dir: &Path) -> Result<(), VolumeError> {
    for target in mounts_under(&read_mountinfo()?, dir) {
        rustix::mount::unmount(&target, UnmountFlags::DETACH).map_err(|e| VolumeError::Io {
            action: "unmounting",
            path: target.clone(),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Whether `path` is a mount point in this process's mount table.
pub fn is_listed_mount(path: &Path) -> Result<bool, VolumeError> {
    Ok(mounts_under(&read_mountinfo()?, path)
        .iter()
        .any(|p| p == path))
}

/// This process's mount table (empty without /proc).
fn read_mountinfo() -> Result<String, VolumeError> {
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(VolumeError::Io {
            action: "reading",
            path: "/proc/self/mountinfo".into(),
            source,
        }),
    }
}

/// The mount points at or below `dir` in a mountinfo text, deepest first.
fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .filter(|target| target.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:40 / /var/lib/pods/uid-1/volumes/kubernetes.io~empty-dir/cache rw,nosuid,nodev - tmpfs tmpfs rw
31 22 0:41 / /var/lib/pods/uid-1/volumes/kubernetes.io~secret/my\\040secret rw - tmpfs tmpfs rw
32 30 0:42 / /var/lib/pods/uid-1/volumes/kubernetes.io~empty-dir/cache/inner rw - tmpfs tmpfs rw
33 22 0:43 / /var/lib/pods/uid-10/volumes/kubernetes.io~secret/s rw - tmpfs tmpfs rw
";

    #[test]
    fn only_the_pods_own_mounts_are_found_deepest_first() {
        let found = mounts_under(MOUNTINFO, Path::new("/var/lib/pods/uid-1"));
        assert_eq!(
            found,
            vec![
                PathBuf::from("/var/lib/pods/uid-1/volumes/kubernetes.io~empty-dir/cache/inner"),
                PathBuf::from("/var/lib/pods/uid-1/volumes/kubernetes.io~empty-dir/cache"),
                PathBuf::from("/var/lib/pods/uid-1/volumes/kubernetes.io~secret/my secret"),
            ]
        );
    }

    #[test]
    fn octal_escapes_are_decoded_and_the_rest_kept() {
        assert_eq!(unescape_octal(r"a\040b\011c\134d\08"), "a b\tc\\d\\08");
    }
}
