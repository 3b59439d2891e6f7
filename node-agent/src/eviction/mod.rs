//! Node-pressure eviction, as the kubelet's eviction manager
//! (`pkg/kubelet/eviction`).
//!
//! ```text
//!   NodeConfig evictionHard --> thresholds::EvictionPolicy
//!   edge::node_stats, CRI stats --> signals --> {MemoryPressure, DiskPressure, PIDPressure} --> Node, NodeConfig
//!                                          \--> rank / local_storage --> orders --> the pod's worker
//! ```
//!
//! Functional core: the thresholds NodeConfig asks for ([`thresholds`]),
//! the signals and the pressure they make ([`signals`]), the order pods go
//! in ([`rank`]), local storage limits ([`local_storage`]), admission under
//! pressure ([`admit`], asked by the pods' workers), what is reclaimed
//! before a pod is evicted for disk ([`reclaim`]). Shell: the loop
//! ([`run`]) and the orders it hands the pods' workers ([`orders`]).
pub mod admit;
pub mod local_storage;
pub mod orders;
pub mod rank;
pub mod reclaim;
pub mod run;
pub mod signals;
pub mod thresholds;
