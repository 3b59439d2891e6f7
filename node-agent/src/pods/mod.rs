//! Kubelet mode's pods: the kubelet's sync loop ([`run`]) and one [`worker`]
//! per pod UID that makes the runtime match the Pod's spec.
//!
//! ```text
//!   Pod events, CRI relist, probe flips --> run --poke--> worker --> ContainerRuntime
//!                                            |              |        (CRI; a fake in tests)
//!                         dispatch (who runs, whom to wake) |
//!       runtime_view + spec + back-off + probes --> plan::compute_pod_actions
//! ```
//!
//! Functional core: which workers run and which one an event wakes
//! ([`dispatch`]), what CRI reports for a pod ([`runtime_view`]), whether the
//! node takes the pod ([`mod@admit`], with what the pod asks of it in
//! [`pod_requests`] and [`host_ports`], and [`apparmor`]), what to do to make the runtime match the
//! spec ([`plan`]), the crash-loop back-off ([`backoff`]), the phase and
//! conditions ([`phase`]) and the API status ([`api_status`]) to report, the
//! CRI requests that create a pod's sandbox and containers ([`cri_config`]),
//! ephemeral containers as containers ([`ephemeral`]),
//! the pod's `/etc/hosts` ([`etc_hosts`]), a container's termination
//! message ([`termination_message`]), the active deadline
//! ([`active_deadline`]), in-place resize ([`resize`]),
//! the probes' thresholds ([`probes::state`]), what each volume holds
//! ([`volumes::plan`]) and the node's counts ([`report`]). All pure.
//!
//! Imperative shell: the runtime calls ([`container_runtime`], over CRI in
//! [`cri_pods`]), the probes ([`probes::check`], [`probes::manager`]), the
//! volumes written on the node ([`volumes::manager`]), the kubelet's own
//! per-pod files ([`pod_files`]), the [`worker`] that
//! runs the planner's actions with its resize shell ([`resize_sync`],
//! [`resize_store`]), the kubelet's [`events`], and the loop
//! ([`run`]). The shell's hard cases run the real worker against a recording
//! fake runtime (`fake_runtime`, `worker_tests`).
pub mod active_deadline;
pub mod admit;
pub mod api_status;
pub mod apparmor;
pub mod backoff;
pub mod container_runtime;
pub mod cri_config;
pub mod cri_pods;
pub mod dispatch;
pub mod ephemeral;
pub mod etc_hosts;
pub mod events;
pub mod hooks;
pub mod host_ports;
pub mod logs;
pub mod phase;
pub mod plan;
pub mod pod_files;
pub mod pod_requests;
pub mod probes;
pub mod report;
pub mod resize;
pub mod resize_store;
pub mod resize_sync;
pub mod run;
pub mod runtime_view;
pub mod sysctls;
pub mod termination_message;
pub mod volumes;
pub mod worker;

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod fake_runtime;
#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod resize_tests;
#[cfg(test)]
mod worker_tests;

pub use admit::{admit, Admission};
pub use backoff::{Backoff, BackoffKey};
pub use cri_config::container::{
    container_config, container_log_path, qos_class, ContainerContext, ImageUser, QosClass,
};
pub use cri_config::dns::{parse_resolv_conf, pod_dns, ClusterDns, PodDns};
pub use cri_config::env::{container_env, service_env, EnvSources, PodFacts};
pub use cri_config::error::ConfigError;
pub use cri_config::sandbox::{pod_log_dir, sandbox_config, SandboxContext};
pub use phase::{pod_status, PodPhase, PodStatusView};
pub use plan::{compute_pod_actions, container_spec_hash, PodActions, ProbeFailures};
pub use probes::manager::{ProbeManager, ProbeResults, RunningContainer};
pub use probes::state::{
    probe_action, probe_timing, ProbeAction, ProbeKind, ProbeOutcome, ProbeState,
};
pub use runtime_view::PodRuntimeView;
pub use volumes::manager::{prepare_mounts, VolumeManager};
pub use volumes::plan::{
    container_mounts, plan_volumes, required_objects, VolumeData, VolumeError, VolumePlan,
};
