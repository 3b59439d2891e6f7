//! Container probes, as the kubelet's prober: thresholds and verdicts
//! ([`state`], pure), one probe run by exec, HTTP(S) GET, TCP connect or gRPC
//! health check ([`check`], the kubelet's `pkg/probe`; its redirects in
//! [`redirect`], pure; its TLS client in [`tls`]; gRPC in [`grpc`]), and one
//! task per probe of a running container ([`manager`]) that wakes the pod
//! worker when a result flips.
pub mod check;
pub mod grpc;
pub mod manager;
pub mod redirect;
pub mod state;
pub mod tls;

#[cfg(test)]
mod https_tests;
