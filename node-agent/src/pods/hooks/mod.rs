//! Container lifecycle hooks, as the kubelet runs them
//! (`pkg/kubelet/lifecycle/handlers.go`, `kuberuntime_container.go`):
//! postStart right after `StartContainer`, preStop before `StopContainer`
//! within the termination grace period.
//!
//! ```text
//!   Lifecycle handler --handler::hook_action--> HookAction --runner::run_hook--> CRI ExecSync
//!                                                                          \--> http::get (pod IP)
//!                                                                          \--> sleep
//! ```
//!
//! [`handler`] is pure (what to run, the kubelet's messages, the grace left
//! for the stop); [`runner`] and [`http`] do it.
pub mod handler;
pub mod http;
pub mod runner;

pub use handler::{hook_action, stop_grace, HookAction, HookKind, HttpGet};
pub use runner::{run_hook, HookFailure, HookTarget};
