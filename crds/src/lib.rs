//! The NodeConfig API, `nodeconfig.dev/v1alpha1`.
//!
//! One cluster-scoped `NodeConfig` per Node, named after it. The operator writes
//! `spec` from its defaults; a person may edit it per node; the node's agent is the
//! only writer of `status`. The schema, with its CEL rules, is generated from these
//! types (`crdgen`), so the API server refuses invalid input before any agent sees it.

pub mod conditions;
pub mod crd;
pub mod duration;
mod v1alpha1;

pub use v1alpha1::*;
