//! The handlers behind the auth filter: `/healthz`, `/metrics/resource`,
//! `/stats/summary`, `/containerLogs`, `/exec`, `/attach` and `/portForward`, with the kubelet's
//! paths and status codes.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::cri_log::{InvalidLogOptions, LogOptions};
use super::end_apart::EndApart;
use super::exec::{self, InvalidStreamRequest, StreamOptions};
use super::locate::{self, ContainerRef, Instance, LocateError};
use super::logs;
use super::upgrade::proxy_upgrade;
use super::KubeletServerState;
use super::{resource_metrics, stats_summary, summary_source};
use crate::edge::cri::CriError;

/// Path parameters: `{namespace}/{pod}[/{uid}]/{container}`.
type PathParams = Path<HashMap<String, String>>;

/// The query as `(name, value)` pairs; names may repeat (`command`, `port`).
type QueryPairs = Query<Vec<(String, String)>>;

/// What a handler can fail with, and the status the kubelet answers.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Locate(#[from] LocateError),
    #[error(transparent)]
    LogOptions(#[from] InvalidLogOptions),
    #[error(transparent)]
    Stream(#[from] InvalidStreamRequest),
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("container {container:?} in pod {pod:?} has no log file: {reason}")]
    NoLogFile {
        container: String,
        pod: String,
        reason: String,
    },
}

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        let status = match &self {
            RouteError::Locate(
                LocateError::PodNotFound { .. } | LocateError::ContainerNotFound { .. },
            ) => StatusCode::NOT_FOUND,
            RouteError::Locate(LocateError::PreviousNotFound { .. })
            | RouteError::LogOptions(_)
            | RouteError::Stream(_)
            | RouteError::NoLogFile { .. } => StatusCode::BAD_REQUEST,
            RouteError::Locate(LocateError::Cri(e)) | RouteError::Cri(e) => cri_status(e),
        };
        (status, self.to_string()).into_response()
    }
}

/// The HTTP status for a failed CRI call, as the kubelet's streaming errors map gRPC codes.
fn cri_status(error: &CriError) -> StatusCode {
    match error {
        CriError::Call { status, .. } => match status.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn container_ref(params: &HashMap<String, String>) -> ContainerRef {
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    ContainerRef {
        namespace: get("namespace"),
        pod: get("pod"),
        pod_uid: params.get("uid").cloned(),
        container: get("container"),
    }
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics/resource`: the node's and its containers' CPU and memory in
/// the Prometheus text format; a failed read is `resource_scrape_error 1`
/// (status 200), as the kubelet answers.
pub async fn metrics_resource(State(state): State<KubeletServerState>) -> Response {
    let summary = summary_source::read(&state.cri.current()).await;
    if let Err(error) = &summary {
        tracing::warn!(%error, "cannot read the resource metrics");
    }
    (
        [(header::CONTENT_TYPE, resource_metrics::CONTENT_TYPE)],
        resource_metrics::render(summary.as_ref().ok()),
    )
        .into_response()
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`: the container's log as
/// `text/plain`, streamed.
pub async fn container_logs(
    State(state): State<KubeletServerState>,
    Path(params): PathParams,
    Query(query): QueryPairs,
) -> Result<Response, RouteError> {
    let options = LogOptions::from_query(&query, chrono::Utc::now())?;
    let target = container_ref(&params);
    let instance = if options.previous {
        Instance::Previous
    } else {
        Instance::Current
    };
    let mut cri = state.cri.current();
    let found = locate::locate(&mut cri, &target, instance).await?;
    let no_log_file = |reason: String| RouteError::NoLogFile {
        container: target.container.clone(),
        pod: target.pod.clone(),
        reason,
    };
    if found.log_path.is_empty() {
        return Err(no_log_file(
            "the runtime keeps none (no log directory on the sandbox)".into(),
        ));
    }
    let path = std::path::PathBuf::from(&found.log_path);
    tokio::fs::metadata(&path)
        .await
        .map_err(|e| no_log_file(format!("{}: {e}", path.display())))?;

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let handle = state.cri.clone();
    let id = found.id.clone();
    tokio::spawn(async move {
        let running = move || {
            let mut cri = handle.current();
            let id = id.clone();
            async move { locate::is_running(&mut cri, &id).await }
        };
        if let Err(error) = logs::stream_log_file(&path, options, running, tx).await {
            tracing::warn!(%error, path = %path.display(), "reading a container log failed");
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    // The end in a write of its own, never in one TLS record with the last
    // records: the API server's websocket stream would drop them (end_apart).
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(EndApart::new(Box::pin(body))),
    )
        .into_response())
}

/// `GET /stats/summary[?only_cpu_and_memory=true]`: the Summary API's CPU
/// and memory part as JSON (both forms), 500 when it cannot be read.
pub async fn stats_summary(State(state): State<KubeletServerState>) -> Response {
    match summary_source::read(&state.cri.current()).await {
        Ok(summary) => {
            let boot = crate::edge::node_stats::boot_time_seconds().ok().map(|s| {
                i64::try_from(s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000_000)
            });
            let body =
                stats_summary::render(&summary, &state.auth.node_name, boot, &state.cpu_rates);
            axum::Json(body).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the stats summary");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Internal Error: failed to get stats summary: {error}"),
            )
                .into_response()
        }
    }
}

/// `GET|POST /exec/{namespace}/{pod}[/{uid}]/{container}?command=…`.
pub async fn exec(
    State(state): State<KubeletServerState>,
    Path(params): PathParams,
    Query(query): QueryPairs,
    request: Request,
) -> Result<Response, RouteError> {
    let streams = StreamOptions::from_query(&query)?;
    let command = exec::exec_command(&query)?;
    let mut cri = state.cri.current();
    let found = locate::locate(&mut cri, &container_ref(&params), Instance::Current).await?;
    let url = exec::exec_url(&mut cri, &found.id, command, streams).await?;
    Ok(proxy_upgrade(request, &url).await)
}

/// `GET|POST /attach/{namespace}/{pod}[/{uid}]/{container}`.
pub async fn attach(
    State(state): State<KubeletServerState>,
    Path(params): PathParams,
    Query(query): QueryPairs,
    request: Request,
) -> Result<Response, RouteError> {
    let streams = StreamOptions::from_query(&query)?;
    let mut cri = state.cri.current();
    let found = locate::locate(&mut cri, &container_ref(&params), Instance::Current).await?;
    let url = exec::attach_url(&mut cri, &found.id, streams).await?;
    Ok(proxy_upgrade(request, &url).await)
}

/// `GET|POST /portForward/{namespace}/{pod}[/{uid}]`.
pub async fn port_forward(
    State(state): State<KubeletServerState>,
    Path(params): PathParams,
    Query(query): QueryPairs,
    request: Request,
) -> Result<Response, RouteError> {
    let ports = exec::forwarded_ports(&query)?;
    let target = container_ref(&params);
    let mut cri = state.cri.current();
    let sandbox =
        locate::pod_sandbox_id(&mut cri, &target)
            .await?
            .ok_or(LocateError::PodNotFound {
                pod: target.pod.clone(),
            })?;
    let url = exec::port_forward_url(&mut cri, &sandbox, ports).await?;
    Ok(proxy_upgrade(request, &url).await)
}
