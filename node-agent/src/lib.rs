//! The node agent: the node's kubelet and kube-proxy, steered by its NodeConfig.
//!
//! One folder per loop, the loop in its `run.rs` and its pure core in named
//! siblings; what the loops tell the status writer is plain data in [`reports`]:
//!
//! ```text
//!            [ NodeConfig ]                 [ Pods ] [ Services, EndpointSlices ]
//!                  |                            |                |
//!              config::run --ConfigReport--> pods::run      proxy::run --> iptables
//!                  |       \                    |  \             |
//!   CRI <-- runtime::run    node::run --> Node  |   CRI          |
//!                  \            |               |                |
//!                   +-----------+--- reports ---+----------------+
//!                                      |
//!                                 status::run --> NodeConfig status
//! ```
//!
//! - [`config`]: the NodeConfig watch and what a generation means ([`config::plan`]).
//! - [`runtime`]: CRI Version/Status and the runtime's inventory.
//! - [`node`]: the Node (Kubelet mode) as the kubelet builds it, and heartbeat Leases.
//! - [`pods`]: Kubelet mode's pods: planner, CRI configs, probes, volumes, workers.
//! - [`images`]: Kubelet mode's image garbage collection (thresholds of the image filesystem).
//! - [`proxy`]: kube-proxy's iptables mode.
//! - [`status`]: the NodeConfig status, computed from the [`reports`] and written on change.
//! - [`kubelet_server`]: the node's daemon endpoint (:10250: logs, exec, attach, port-forward).
//! - [`serve`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`edge`]: the clients of the outside world (kube, CRI, the host).
//!
//! Wired in [`agent`]; the command line is [`cli`].
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod edge;
pub mod eviction;
pub mod images;
pub mod kubelet_server;
pub mod locked;
pub mod node;
pub mod pods;
pub mod proxy;
pub mod reports;
pub mod runtime;
pub mod serve;
pub mod status;

/// Field manager of every write the agent makes (NodeConfig status, Node, Leases).
pub const FIELD_MANAGER: &str = "node-agent";
