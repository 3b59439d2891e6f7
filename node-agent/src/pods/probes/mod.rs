//! Container probes, as the kubelet's prober: thresholds and verdicts
//! ([`state`], pure), one probe run by exec, HTTP GET or TCP connect ([`check`],
//! the kubelet's `pkg/probe`), and one task per probe of a running container
//! ([`manager`]) that wakes the pod worker when a result flips.
pub mod check;
pub mod manager;
pub mod state;
