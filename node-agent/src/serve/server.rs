//! `/healthz`, `/readyz` and `/metrics` on `--listen` (axum).
//!
//! - `/healthz`: every loop turned within [`health::STALE_AFTER`], and no
//!   queued work is past its deadline (the proxy's changes: 2 × syncPeriod).
//! - `/readyz`: the NodeConfig was seen and the agent runs with it (applied or paused).
//! - `/metrics`: Prometheus text ([`Metrics`]).

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::reports::ConfigReport;
use crate::serve::health::{self, Health};
use crate::serve::metrics::Metrics;

#[derive(Clone)]
pub struct ServerState {
    pub health: Health,
    pub config: watch::Receiver<ConfigReport>,
    pub metrics: Metrics,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until `cancel`.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

async fn healthz(State(state): State<ServerState>) -> (StatusCode, String) {
    let now = Instant::now();
    let stale = state.health.stale_loops(now, health::STALE_AFTER);
    let overdue = state.health.overdue(now);
    let mut problems = Vec::new();
    if !stale.is_empty() {
        problems.push(format!("loops not turning: {}", stale.join(", ")));
    }
    if !overdue.is_empty() {
        problems.push(format!(
            "queued changes not applied in time: {}",
            overdue.join(", ")
        ));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("; ")),
        )
    }
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, String) {
    let report = state.config.borrow().clone();
    if report.is_ready() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NodeConfig not applied: {:?}\n", report.state),
        )
    }
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
