//! Image garbage collection, as the kubelet's image GC manager
//! (`pkg/kubelet/images/image_gc_manager.go`): every period the images the
//! runtime holds are compared with the containers that use them; when the
//! image filesystem is at `imageGCHighThresholdPercent` or more, unused
//! images are removed, the least recently used first, until it is down to
//! `imageGCLowThresholdPercent`; images unused for `imageMaximumGCAge` go
//! whatever the usage.
//!
//! ```text
//!   CRI ListImages, ListContainers ──> records (first seen, last used)
//!   CRI ImageFsInfo + statvfs ──> usage ──┐
//!   policy (NodeConfig) ─────────────────┴─> plan ──> CRI RemoveImage
//! ```
//!
//! [`policy`] (the NodeConfig fields, checked), [`records`] (what the agent
//! remembers of each image) and [`plan`] (which images go) are pure;
//! [`image_fs`] measures the filesystem, [`runtime_config`] reads the
//! runtime's sandbox image and root, [`gc`] is the loop, and [`reclaim`]
//! removes every unused image when the eviction loop asks (disk pressure).
pub mod gc;
pub mod image_fs;
pub mod plan;
pub mod policy;
pub mod reclaim;
pub mod records;
pub mod runtime_config;
