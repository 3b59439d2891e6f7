//! The kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`): the files
//! of a configMap, secret, downwardAPI or projected volume live in a hidden
//! timestamped directory; `..data` is a symlink to it, swapped in one
//! `rename`; each top-level entry the user sees is a symlink through `..data`.
//! A reader therefore sees either the old set of files or the new one, never
//! a mix, and can watch `..data` for updates.
//!
//! Nothing is written when the content is unchanged, so the pod loop can call
//! [`write_atomically`] on every sync.
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::jiff::Timestamp;

use crate::pods::volumes::plan::{FileEntry, VolumeError};

/// The symlink to the current timestamped directory.
pub const DATA_DIR: &str = "..data";
const NEW_DATA_DIR: &str = "..data_tmp";
/// Mode of every directory the writer makes: others must traverse them.
const DIR_MODE: u32 = 0o755;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError + use<> {
    let path = path.to_path_buf();
    move |source| VolumeError::Io {
        action,
        path,
        source,
    }
}

/// Makes `target_dir` hold exactly `files` (paths relative and clean, as
/// [`crate::pods::volumes::plan::plan_volumes`] gives them), each with its mode and, with
/// `fs_group`, that group. Returns whether anything changed on disk.
pub fn write_atomically(
    target_dir: &Path,
    files: &[FileEntry],
    fs_group: Option<u32>,
) -> Result<bool, VolumeError> {
    make_dir(target_dir, DIR_MODE)?;
    let data_link = target_dir.join(DATA_DIR);
    let old_ts_dir = match fs::read_link(&data_link) {
        Ok(target) => Some(target_dir.join(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("reading the link", &data_link)(e)),
    };

    let wanted = wanted_paths(files);
    let stale: BTreeSet<PathBuf> = match &old_ts_dir {
        Some(old) => existing_paths(old)?.difference(&wanted).cloned().collect(),
        None => BTreeSet::new(),
    };
    if let Some(old) = &old_ts_dir {
        if stale.is_empty() && !content_differs(old, files, fs_group)? {
            return Ok(false);
        }
    }

    let ts_dir = new_timestamped_dir(target_dir)?;
    write_files(&ts_dir, files, fs_group)?;
    create_visible_links(target_dir, files)?;

    let new_link = target_dir.join(NEW_DATA_DIR);
    let _ = fs::remove_file(&new_link); // Left by a crash between symlink and rename.
    let ts_name = ts_dir.file_name().unwrap_or_default();
    std::os::unix::fs::symlink(ts_name, &new_link)
        .map_err(io_error("creating the link", &new_link))?;
    fs::rename(&new_link, &data_link).map_err(io_error("renaming the link to", &data_link))?;

    // Top-level entries no longer in the payload; nested ones went with the old dir.
    for path in &stale {
        if path.components().count() == 1 {
            let visible = target_dir.join(path);
            match fs::remove_file(&visible) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("removing", &visible)(e))
                }
                _ => {}
            }
        }
    }
    remove_old_timestamped_dirs(target_dir, &ts_dir)?;
    Ok(true)
}

/// Every path of the payload, with its parent directories.
fn wanted_paths(files: &[FileEntry]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .flat_map(|f| f.path.ancestors().filter(|a| !a.as_os_str().is_empty()))
        .map(Path::to_path_buf)
        .collect()
}

/// Every file and directory under `dir`, relative to it.
fn existing_paths(dir: &Path) -> Result<BTreeSet<PathBuf>, VolumeError> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("listing", &current)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &current))?;
            let path = entry.path();
            if let Ok(relative) = path.strip_prefix(dir) {
                found.insert(relative.to_path_buf());
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                pending.push(path);
            }
        }
    }
    Ok(found)
}

/// Whether any file's bytes, mode or group differ from what `dir` holds.
fn content_differs(
    dir: &Path,
    files: &[FileEntry],
    fs_group: Option<u32>,
) -> Result<bool, VolumeError> {
    for file in files {
        let path = dir.join(&file.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_error("inspecting", &path)(e)),
        };
        if !meta.is_file()
            || meta.permissions().mode() & 0o7777 != file.mode
            || fs_group.is_some_and(|g| meta.gid() != g)
        {
            return Ok(true);
        }
        let bytes = fs::read(&path).map_err(io_error("reading", &path))?;
        if bytes != file.bytes {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `..2026_01_31_12_00_00.<unique>`, 0755 whatever the umask.
fn new_timestamped_dir(target_dir: &Path) -> Result<PathBuf, VolumeError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = Timestamp::now();
    let name = format!(
        "{}{}{:09}{}",
        now.strftime("..%Y_%m_%d_%H_%M_%S."),
        std::process::id(),
        now.subsec_nanosecond(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = target_dir.join(name);
    fs::create_dir(&dir).map_err(io_error("creating", &dir))?;
    set_mode(&dir, DIR_MODE)?;
    Ok(dir)
}

fn write_files(dir: &Path, files: &[FileEntry], fs_group: Option<u32>) -> Result<(), VolumeError> {
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            make_dir(parent, DIR_MODE)?;
        }
        fs::write(&path, &file.bytes).map_err(io_error("writing", &path))?;
        if let Some(group) = fs_group {
            rustix::fs::chown(&path, None, Some(rustix::fs::Gid::from_raw(group)))
                .map_err(|e| io_error("changing the group of", &path)(e.into()))?;
        }
        // After chown, which may clear set-id bits; and whatever the umask.
        set_mode(&path, file.mode)?;
    }
    Ok(())
}

/// `name -> ..data/name` for each top-level entry of the payload.
fn create_visible_links(target_dir: &Path, files: &[FileEntry]) -> Result<(), VolumeError> {
    let top_level: BTreeSet<_> = files
        .iter()
        .filter_map(|f| f.path.components().next())
        .collect();
    for first in top_level {
        let visible = target_dir.join(first);
        if fs::symlink_metadata(&visible).is_ok() {
            continue;
        }
        let through_data = Path::new(DATA_DIR).join(first);
        std::os::unix::fs::symlink(&through_data, &visible)
            .map_err(io_error("creating the link", &visible))?;
    }
    Ok(())
}

/// Removes every `..`-prefixed directory but the current one: the previous
/// version, and any a crash left behind.
fn remove_old_timestamped_dirs(target_dir: &Path, current: &Path) -> Result<(), VolumeError> {
    let entries = fs::read_dir(target_dir).map_err(io_error("listing", target_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("listing", target_dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && path != current && entry.file_name().to_string_lossy().starts_with("..") {
            fs::remove_dir_all(&path).map_err(io_error("removing", &path))?;
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, each with `mode`.
pub(super) fn make_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dir(parent, mode)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => set_mode(dir, mode),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_error("creating", dir)(e)),
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("setting the mode of", path))
}
