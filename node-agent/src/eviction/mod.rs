//! Node-pressure eviction, as the kubelet's eviction manager
//! (`pkg/kubelet/eviction`).
//!
//! ```text
//!   NodeConfig evictionHard --> thresholds::EvictionPolicy
//! ```
//!
//! Functional core: the thresholds NodeConfig asks for ([`thresholds`]).
pub mod thresholds;
