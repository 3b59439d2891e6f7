//! Kubelet mode's pod loop, functional core: what CRI reports for a pod
//! ([`runtime_view`]), whether the node takes the pod ([`mod@admit`]), what to do
//! to make the runtime match the spec ([`plan`]), the crash-loop back-off
//! ([`backoff`]), the probes' thresholds ([`probe`]), and the phase and
//! conditions to report ([`phase`]). All pure; the CRI and API calls live in
//! the shell, of which the probes' part is here: running one probe
//! ([`probe_run`]) and one task per probe ([`prober`]).
pub mod admit;
pub mod backoff;
pub mod phase;
pub mod plan;
pub mod probe;
pub mod probe_run;
pub mod prober;
pub mod runtime_view;

#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod plan_tests;

pub use admit::{admit, Admission};
pub use backoff::{Backoff, BackoffKey};
pub use phase::{pod_status, PodPhase, PodStatusView};
pub use plan::{compute_pod_actions, container_spec_hash, PodActions, ProbeFailures};
pub use probe::{probe_action, probe_timing, ProbeAction, ProbeKind, ProbeOutcome, ProbeState};
pub use prober::{ProbeManager, ProbeResults, RunningContainer};
pub use runtime_view::PodRuntimeView;
