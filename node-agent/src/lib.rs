//! The node agent: the node's kubelet and kube-proxy, steered by its NodeConfig.
//!
//! Functional core: [`config_plan`], [`node`], [`status`], [`lease::renewed`],
//! the parsers of [`host`] and [`runtime`], the proxy's planner, renderer,
//! [`proxy::Scheduler`] and conntrack decisions are pure and unit-tested.
//! The pod loop's planner, status and configs ([`pods`]) are pure too.
//! Imperative shell: the loops ([`config_loop`], [`runtime::run`], [`node_sync`],
//! [`lease::LeaseRenewer`], [`proxy_loop`], [`pods_loop`], [`status_writer`]),
//! the [`server`] and the [`kubelet_server`], wired in [`agent`].
pub mod agent;
pub mod config;
pub mod config_loop;
pub mod config_plan;
pub mod cri;
pub mod cri_handle;
pub mod health;
pub mod host;
pub mod kube_client;
pub mod kubelet_server;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod node_sync;
pub mod pods;
pub mod pods_loop;
pub mod proxy;
pub mod proxy_loop;
pub mod runtime;
pub mod server;
pub mod status;
pub mod status_writer;

/// Field manager of every write the agent makes (NodeConfig status, Node, Leases).
pub const FIELD_MANAGER: &str = "node-agent";
