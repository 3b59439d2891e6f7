//! The shell of [`super::sub_path`]: opens a subPath one component at a
//! time from its volume's root without following links (the kubelet's
//! `doSafeMakeDir` and `doSafeOpen`), bind-mounts the opened descriptor
//! through `/proc/<agent>/fd/<N>` onto the agent's own target
//! (`doBindSubPath`), and checks that what is mounted there is what was
//! opened. The targets go with the pod's directory
//! ([`super::manager::remove_pod_dir`] unmounts everything under it, also for
//! pods found after an agent restart).
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxAttributes, StatxFlags, CWD};
use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use super::plan::VolumeError;
use super::sub_path::{
    beneath, components, target_step, Existing, TargetStep, NOT_WHAT_WAS_OPENED, OUTSIDE, SWAPPED,
};

/// Why a subPath could not be mounted: refused (the reason goes into
/// [`VolumeError::SubPath`], where the caller names container and volume),
/// or a failed system call.
#[derive(Debug)]
pub enum Fault {
    Refused(&'static str),
    Io(VolumeError),
}

fn io_fault(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Fault {
    let path = path.to_path_buf();
    move |source| {
        Fault::Io(VolumeError::Io {
            action,
            path,
            source,
        })
    }
}

fn errno_fault(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> Fault {
    let io = io_fault(action, path);
    move |e| io(e.into())
}

/// Opens `sub_path` of the volume at `volume_path` and bind-mounts it on
/// `target`; the caller hands `target` to the runtime.
pub fn bind_sub_path(volume_path: &Path, sub_path: &str, target: &Path) -> Result<(), Fault> {
    let opened = open_in_volume(volume_path, sub_path)?;
    bind_opened(&opened, target)
}

/// `sub_path` of the volume opened as an `O_PATH` descriptor (or, for a
/// directory it had to create, a read-only one), its missing directories
/// created with the volume root's mode, as the kubelet does. Symlinks that
/// stay inside the volume are allowed: they are resolved once, and the
/// resolved path is then opened component by component with `O_NOFOLLOW`,
/// so a link swapped in meanwhile is refused instead of followed.
pub fn open_in_volume(volume_path: &Path, sub_path: &str) -> Result<OwnedFd, Fault> {
    let root = fs::canonicalize(volume_path).map_err(io_fault("resolving", volume_path))?;
    let parts = components(sub_path).ok_or(Fault::Refused(OUTSIDE))?;
    // The longest prefix that exists, following links (findExistingPrefix).
    let existing = (0..=parts.len())
        .rev()
        .find(|&k| k == 0 || fs::metadata(root.join(parts[..k].join("/"))).is_ok())
        .unwrap_or(0);
    let prefix = root.join(parts[..existing].join("/"));
    let resolved = fs::canonicalize(&prefix).map_err(io_fault("resolving", &prefix))?;
    let walk = beneath(&root, &resolved).ok_or(Fault::Refused(OUTSIDE))?;

    let nofollow_path = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root_fd = rustix::fs::open(&root, nofollow_path | OFlags::DIRECTORY, Mode::empty())
        .map_err(errno_fault("opening", &root))?;
    let mode = identity(&root_fd, &root)?.mode & 0o7777;
    let mut fd = root_fd;
    let mut at = root;
    for name in &walk {
        at.push(name);
        let child = rustix::fs::openat(&fd, name.as_os_str(), nofollow_path, Mode::empty())
            .map_err(errno_fault("opening", &at))?;
        if identity(&child, &at)?.file_type == FileType::Symlink {
            return Err(Fault::Refused(SWAPPED));
        }
        fd = child;
    }
    for name in &parts[existing..] {
        at.push(name);
        fd = make_dir_at(&fd, OsStr::new(name), mode, &at)?;
    }
    Ok(fd)
}

/// Makes directory `name` under `parent` (or finds it there) and opens it
/// without following a link; `mode` is set on what it opened, past the
/// umask (doSafeMakeDir).
fn make_dir_at(parent: &OwnedFd, name: &OsStr, mode: u32, at: &Path) -> Result<OwnedFd, Fault> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(errno_fault("creating", at)(e)),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        // O_DIRECTORY|O_NOFOLLOW meets a link with ENOTDIR (or ELOOP).
        Err(e @ (Errno::NOTDIR | Errno::LOOP)) => {
            let link = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
            return Err(if link {
                Fault::Refused(SWAPPED)
            } else {
                errno_fault("opening", at)(e)
            });
        }
        other => other.map_err(errno_fault("opening", at))?,
    };
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
        .map_err(errno_fault("setting the mode of", at))?;
    Ok(dir)
}

/// Bind-mounts the file `opened` refers to on `target` through
/// `/proc/<pid>/fd/<N>`, which no container can redirect; a target that
/// already mounts that very file is kept (a restarted container).
pub fn bind_opened(opened: &OwnedFd, target: &Path) -> Result<(), Fault> {
    let source = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        opened.as_raw_fd()
    ));
    let want = identity(opened, &source)?;
    let want_dir = want.file_type == FileType::Directory;
    // Each step changes the target; more than a few means mounts keep
    // appearing on it.
    for _ in 0..8 {
        match target_step(examine(target, &want)?, want_dir) {
            TargetStep::Reuse => return Ok(()),
            TargetStep::Unmount => unmount(target)?,
            TargetStep::Remove if want_dir => {
                fs::remove_file(target).map_err(io_fault("removing", target))?
            }
            TargetStep::Remove => fs::remove_dir(target).map_err(io_fault("removing", target))?,
            TargetStep::Create => create_target(target, want_dir)?,
            TargetStep::Mount => {
                rustix::mount::mount_bind(&source, target)
                    .map_err(errno_fault("bind-mounting the subPath on", target))?;
                let mounted = examine(target, &want)?;
                if mounted.is_some_and(|e| e.mounted && e.same_file) {
                    return Ok(());
                }
                unmount(target)?;
                return Err(Fault::Refused(NOT_WHAT_WAS_OPENED));
            }
        }
    }
    Err(Fault::Io(VolumeError::Io {
        action: "preparing the subPath mount",
        path: target.to_path_buf(),
        source: io::Error::other("it kept changing"),
    }))
}

/// Device, inode, type and mode of a file.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    dev: (u32, u32),
    ino: u64,
    file_type: FileType,
    mode: u32,
    mount_root: Option<bool>,
}

fn identity_of(s: &rustix::fs::Statx) -> Identity {
    let mode = u32::from(s.stx_mode);
    Identity {
        dev: (s.stx_dev_major, s.stx_dev_minor),
        ino: s.stx_ino,
        file_type: FileType::from_raw_mode(mode),
        mode,
        mount_root: s
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
            .then(|| s.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)),
    }
}

/// The identity of what `fd` refers to (also an `O_PATH` descriptor).
fn identity(fd: impl AsFd, shown: &Path) -> Result<Identity, Fault> {
    let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
    rustix::fs::statx(fd, "", flags, StatxFlags::BASIC_STATS)
        .map(|s| identity_of(&s))
        .map_err(errno_fault("inspecting", shown))
}

/// What is at `target` now, compared with the opened file `want`.
fn examine(target: &Path, want: &Identity) -> Result<Option<Existing>, Fault> {
    let found = match rustix::fs::statx(
        CWD,
        target,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Err(Errno::NOENT) => return Ok(None),
        other => identity_of(&other.map_err(errno_fault("inspecting", target))?),
    };
    let mounted = match found.mount_root {
        Some(root) => root,
        // Kernels before 5.8 do not say; the mount table does.
        None => super::tmpfs::is_listed_mount(target).map_err(Fault::Io)?,
    };
    Ok(Some(Existing {
        mounted,
        same_file: found.dev == want.dev && found.ino == want.ino,
        is_dir: found.file_type == FileType::Directory,
    }))
}

/// An empty directory (0750) or file (0640) to mount on, its parents made
/// as needed; all of it in the pod's directory, which only the agent writes.
fn create_target(target: &Path, dir: bool) -> Result<(), Fault> {
    if let Some(parent) = target.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(io_fault("creating", parent))?;
    }
    let made = if dir {
        fs::DirBuilder::new().mode(0o750).create(target)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(target)
            .map(drop)
    };
    match made {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_fault("creating", target)(e)),
        _ => Ok(()),
    }
}

fn unmount(target: &Path) -> Result<(), Fault> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(errno_fault("unmounting", target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Where an opened descriptor leads, as the kernel names it.
    fn path_of(fd: &OwnedFd) -> PathBuf {
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn refused(result: Result<OwnedFd, Fault>) -> &'static str {
        match result {
            Err(Fault::Refused(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn sub_paths_are_opened_inside_the_volume_and_missing_ones_created() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("scratch");
        fs::create_dir(&volume).unwrap();
        fs::set_permissions(&volume, fs::Permissions::from_mode(0o777)).unwrap();
        let root = volume.canonicalize().unwrap();
        fs::create_dir(volume.join("real")).unwrap();
        symlink("real", volume.join("inside")).unwrap();
        symlink("/etc", volume.join("escape")).unwrap();
        symlink("/", volume.join("slash")).unwrap();

        let created = open_in_volume(&volume, "data//./db").unwrap();
        assert_eq!(path_of(&created), root.join("data/db"));
        for dir in ["data", "data/db"] {
            let mode = fs::metadata(root.join(dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o777, "{dir}");
        }
        // A link that stays inside is followed once, then opened as what it names.
        assert_eq!(
            path_of(&open_in_volume(&volume, "inside").unwrap()),
            root.join("real")
        );
        let below = open_in_volume(&volume, "inside/new").unwrap();
        assert_eq!(path_of(&below), root.join("real/new"));
        assert_eq!(path_of(&open_in_volume(&volume, "").unwrap()), root);

        assert_eq!(refused(open_in_volume(&volume, "escape/passwd")), OUTSIDE);
        assert_eq!(refused(open_in_volume(&volume, "slash")), OUTSIDE);
        assert_eq!(refused(open_in_volume(&volume, "slash/tmp/x")), OUTSIDE);
        assert!(!Path::new("/tmp/x").exists());
    }

    #[test]
    fn a_link_met_while_walking_is_refused_not_followed() {
        // What a swap after the check looks like to the walk: the resolved
        // path's component is a symlink by the time it is opened.
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("v");
        fs::create_dir(&volume).unwrap();
        symlink("/", volume.join("d")).unwrap();
        let root_fd = rustix::fs::open(
            &volume,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let child = rustix::fs::openat(
            &root_fd,
            "d",
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            identity(&child, &volume).unwrap().file_type,
            FileType::Symlink
        );
        // And the step that creates a missing directory refuses a link in its place.
        let made = make_dir_at(&root_fd, OsStr::new("d"), 0o755, &volume.join("d"));
        assert!(matches!(made, Err(Fault::Refused(SWAPPED))), "{made:?}");
    }

    /// Mounts for real, so it needs root: `cargo test -p node-agent -- --ignored bind_`.
    #[test]
    #[ignore = "mounts: needs root"]
    fn bind_mounts_the_opened_file_reuses_it_and_goes_with_the_pod_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("pod/volumes/v");
        fs::create_dir_all(volume.join("d")).unwrap();
        fs::write(volume.join("d/marker"), "real").unwrap();
        fs::write(volume.join("file"), "a file").unwrap();
        let pod_dir = tmp.path().join("pod");
        let dir_target = pod_dir.join("volume-subpaths/v/app/0");
        let file_target = pod_dir.join("volume-subpaths/v/app/1");

        bind_sub_path(&volume, "d", &dir_target).unwrap();
        bind_sub_path(&volume, "file", &file_target).unwrap();
        assert_eq!(
            fs::read_to_string(dir_target.join("marker")).unwrap(),
            "real"
        );
        assert_eq!(fs::read_to_string(&file_target).unwrap(), "a file");
        // Again (a restart): the same mount, not a second one on top.
        bind_sub_path(&volume, "d", &dir_target).unwrap();
        let mounts = |dir: &Path| {
            fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains(dir.to_str().unwrap()))
                .count()
        };
        assert_eq!(mounts(&pod_dir), 2);
        // The directory is replaced by a link to /: refused, and the old
        // mount is left alone (it is what the previous instance saw).
        fs::rename(volume.join("d"), volume.join("old")).unwrap();
        symlink("/", volume.join("d")).unwrap();
        assert!(matches!(
            bind_sub_path(&volume, "d", &dir_target),
            Err(Fault::Refused(OUTSIDE))
        ));
        // Another directory there now: the target is remounted from it.
        fs::remove_file(volume.join("d")).unwrap();
        fs::create_dir(volume.join("d")).unwrap();
        bind_sub_path(&volume, "d", &dir_target).unwrap();
        assert!(!dir_target.join("marker").exists());
        assert_eq!(mounts(&pod_dir), 2);

        super::super::manager::remove_pod_dir(tmp.path(), "pod").unwrap();
        assert_eq!(mounts(&pod_dir), 0);
        assert!(!pod_dir.exists());
    }
}
