//! Pod volumes: what each volume holds ([`plan`], [`downward_api`]; pure) and
//! how it is written on the node ([`manager`], with the kubelet's
//! [`atomic_writer`] layout).
pub mod atomic_writer;
pub mod downward_api;
pub mod manager;
pub mod plan;

#[cfg(test)]
mod tests;
