//! The agent's own endpoints: [`server`] serves `/healthz` ([`health`]),
//! `/readyz` and `/metrics` ([`metrics`]).
pub mod health;
pub mod metrics;
pub mod server;
