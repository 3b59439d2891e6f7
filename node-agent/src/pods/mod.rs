//! Kubelet mode's pod loop. Functional core: what CRI reports for a pod
//! ([`runtime_view`]), whether the node takes the pod ([`mod@admit`]), what to do
//! to make the runtime match the spec ([`plan`]), the crash-loop back-off
//! ([`backoff`]), the phase and conditions ([`phase`]) and the API status
//! ([`api_status`]) to report, the CRI requests that create a pod's sandbox
//! ([`sandbox_config`]) and containers ([`container_config`], with their
//! environment from [`env`]), the probes' thresholds ([`probe`]), what each
//! volume holds ([`volumes`], [`downward_api`]) and the node's counts
//! ([`report`]). All pure.
//!
//! Imperative shell: the runtime calls ([`cri_pods`]), one probe run
//! ([`probe_run`]) and one task per probe ([`prober`]), the volumes written
//! with the kubelet's [`atomic_writer`] ([`volume_manager`]), and the pod
//! [`worker`] that runs the planner's actions; the loop is `crate::pods_loop`.
pub mod admit;
pub mod api_status;
pub mod atomic_writer;
pub mod backoff;
pub mod container_config;
pub mod cri_pods;
pub mod downward_api;
pub mod env;
pub mod events;
pub mod phase;
pub mod plan;
pub mod probe;
pub mod probe_run;
pub mod prober;
pub mod quantity;
pub mod report;
pub mod runtime_view;
pub mod sandbox_config;
pub mod volume_manager;
pub mod volumes;
pub mod worker;

#[cfg(test)]
mod container_config_tests;
#[cfg(test)]
mod env_tests;
#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod sandbox_config_tests;
#[cfg(test)]
mod volumes_tests;

pub use admit::{admit, Admission};
pub use backoff::{Backoff, BackoffKey};
pub use container_config::{
    container_config, container_log_path, qos_class, ConfigError, ContainerContext, ImageUser,
    QosClass,
};
pub use env::{container_env, service_env, EnvSources, PodFacts};
pub use phase::{pod_status, PodPhase, PodStatusView};
pub use plan::{compute_pod_actions, container_spec_hash, PodActions, ProbeFailures};
pub use probe::{probe_action, probe_timing, ProbeAction, ProbeKind, ProbeOutcome, ProbeState};
pub use prober::{ProbeManager, ProbeResults, RunningContainer};
pub use runtime_view::PodRuntimeView;
pub use sandbox_config::{parse_resolv_conf, pod_log_dir, sandbox_config, SandboxContext};
pub use volume_manager::{prepare_mounts, VolumeManager};
pub use volumes::{
    container_mounts, plan_volumes, required_objects, VolumeData, VolumeError, VolumePlan,
};
