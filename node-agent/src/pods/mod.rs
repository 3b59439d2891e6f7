//! Kubelet mode's pod loop, functional core: what CRI reports for a pod
//! ([`runtime_view`]), whether the node takes the pod ([`mod@admit`]), what to do
//! to make the runtime match the spec ([`plan`]), the crash-loop back-off
//! ([`backoff`]), and the phase and conditions to report ([`phase`]). All
//! pure; the CRI and API calls live in the shell. Volumes: what each holds and
//! how containers mount them ([`volumes`], [`downward_api`]: pure), and the
//! shell that fetches their objects and writes them ([`volume_manager`], with
//! the kubelet's [`atomic_writer`]).
pub mod admit;
pub mod atomic_writer;
pub mod backoff;
pub mod downward_api;
pub mod phase;
pub mod plan;
pub mod runtime_view;
pub mod volume_manager;
pub mod volumes;

#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod volumes_tests;

pub use admit::{admit, Admission};
pub use backoff::{Backoff, BackoffKey};
pub use phase::{pod_status, PodPhase, PodStatusView};
pub use plan::{compute_pod_actions, container_spec_hash, PodActions, ProbeFailures};
pub use runtime_view::PodRuntimeView;
pub use volume_manager::{prepare_mounts, VolumeManager};
pub use volumes::{
    container_mounts, plan_volumes, required_objects, VolumeData, VolumeError, VolumePlan,
};
