//! The Node (Kubelet mode): built as the kubelet builds it ([`build`], pure),
//! registered and kept by the node loop ([`run`]); heartbeat Leases ([`lease`]).
pub mod build;
pub mod lease;
pub mod run;
