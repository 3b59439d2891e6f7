//! Pod volumes: what each volume holds ([`plan`], [`downward_api`]; pure) and
//! how it is written on the node ([`manager`], with the kubelet's
//! [`atomic_writer`] layout, memory-backed ones on a [`tmpfs`]).
pub mod atomic_writer;
pub mod downward_api;
pub mod manager;
pub mod plan;
pub mod tmpfs;

#[cfg(test)]
mod tests;
