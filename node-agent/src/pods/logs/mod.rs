//! Container log rotation, as the kubelet's container log manager does it:
//! every `containerLogMonitorInterval` each running container's log file is
//! checked, and one past `containerLogMaxSize` is renamed to
//! `<log>.<timestamp>` and the runtime told to reopen it (CRI
//! `ReopenContainerLog`); older rotated files are gzip-compressed and the
//! oldest removed so at most `containerLogMaxFiles` files remain.
//!
//! [`policy`] (the NodeConfig fields, checked) and [`rotation`] (which files
//! to remove, compress and rename) are pure; [`rotator`] is the loop that
//! asks CRI and touches the files.
pub mod policy;
pub mod rotation;
pub mod rotator;
