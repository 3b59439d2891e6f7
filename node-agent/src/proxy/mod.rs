//! The service proxy: kube-proxy's iptables mode, in our own `NC-` chains.
//!
//! Pipeline, one pure step after another, with iptables at the end:
//! Services + EndpointSlices, object by object → [`ProxyInputs`] (the
//! [`model::Model`] and the service ports that changed; skips reported, never
//! fatal) → [`plan::PlanState`] (the desired [`RuleSet`], planning only the
//! changed service ports, and the chains that changed since the last commit)
//! → [`render::render_restore_input`] (one `iptables-restore --noflush`
//! transaction, only the changed chains on a partial sync) →
//! [`iptables::Iptables::restore`]. [`Proxier`] decides between partial and
//! full syncs and what it must read back from the kernel.
//!
//! Past kube-proxy: ClusterIP dispatch is split by /24 ([`Dispatch::ByPrefix24`]),
//! so neither a first packet nor a sync walks or rewrites one list of every
//! Service; and a sync costs what changed, not what exists.

pub mod config;
pub mod conntrack;
pub mod error;
pub mod health_server;
pub mod inputs;
pub mod iptables;
pub mod model;
pub mod plan;
pub mod proxier;
pub mod render;
pub mod ruleset;
pub mod run;
pub mod schedule;
pub mod service_health;

pub use config::{Dispatch, NodeInfo, ProxyConfig};
pub use conntrack::{Conntrack, FlowDeletion, UdpServices};
pub use error::ProxyError;
pub use inputs::ProxyInputs;
pub use iptables::{Iptables, IptablesCommand};
pub use model::{Model, ServicePortName, Skip, SkipReason};
pub use proxier::{FullSyncReason, PlannedSync, Proxier, SyncCounters, SyncReport};
pub use render::{render_restore_input, RestoreInput, SyncMode};
pub use ruleset::{RuleSet, Table};
pub use schedule::{Scheduler, SyncDue};
