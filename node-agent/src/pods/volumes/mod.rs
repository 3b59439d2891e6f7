//! Pod volumes: what each volume holds ([`plan`], [`downward_api`],
//! [`trust_bundles`], [`pod_certificate`]; pure) and how it is written on the
//! node ([`manager`], with the kubelet's [`atomic_writer`] layout,
//! memory-backed ones on a [`tmpfs`]; pod certificates requested by
//! [`pod_certificates`] with keys from [`pod_keys`]; each `subPath` opened
//! without following links and bind-mounted from the descriptor,
//! [`sub_path`] and [`sub_path_mount`]).
pub mod atomic_writer;
pub mod downward_api;
pub mod manager;
pub mod plan;
pub mod pod_certificate;
pub mod pod_certificates;
pub mod pod_keys;
pub mod sub_path;
pub mod sub_path_mount;
pub mod tmpfs;
pub mod trust_bundles;

#[cfg(test)]
mod tests;
