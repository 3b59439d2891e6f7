//! The kubelet's HTTPS server (port 10250), for what the API server proxies to a
//! node: `kubectl logs` (`/containerLogs`), `kubectl exec` (`/exec`), `attach`
//! and `port-forward`, the resource metrics metrics-server scrapes
//! (`/metrics/resource`, [`resource_metrics`] of a [`summary`] read by
//! [`summary_source`]) and their Summary API form (`/stats/summary`,
//! [`stats_summary`]), plus `/healthz`.
//!
//! Every request goes through [`auth::filter`] (client certificate or bearer token,
//! then a decision on `nodes/<subresource>` of this node). Containers are found
//! through CRI by the pod loop's labels ([`locate`]); logs are read from the CRI
//! log file ([`logs`], format in [`cri_log`], the response's end flushed apart
//! from its data by [`end_apart`]); exec, attach and port-forward are
//! proxied to the runtime's streaming server ([`upgrade`]). How many connections
//! are held, and for how long before they authenticate, is [`connections`]'s.

pub mod auth;
pub mod connections;
pub mod cri_log;
pub mod end_apart;
pub mod exec;
pub mod locate;
pub mod logs;
pub mod resource_metrics;
pub mod review;
pub mod routes;
pub mod stats_summary;
pub mod summary;
pub mod summary_source;
pub mod tls;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::edge::cri_handle::CriHandle;
use crate::serve::metrics::KubeletServerMetrics;
use auth::{Auth, ClientCertIdentity};
use connections::{ConnectionSlot, Connections, Limits};

/// What the handlers share.
#[derive(Clone)]
pub struct KubeletServerState {
    /// The node's CRI connection.
    pub cri: CriHandle,
    /// Authentication and authorization of every request.
    pub auth: Auth,
    pub metrics: KubeletServerMetrics,
    /// The previous CPU readings `/stats/summary`'s rates are computed against.
    pub cpu_rates: Arc<stats_summary::CpuRates>,
}

impl KubeletServerState {
    /// The state with the API server as token authenticator and authorizer
    /// (TokenReview, SubjectAccessReview), for node `node_name`.
    pub fn new(
        cri: CriHandle,
        client: kube::Client,
        node_name: &str,
        metrics: KubeletServerMetrics,
    ) -> Self {
        KubeletServerState {
            cri,
            auth: Auth {
                node_name: node_name.to_string(),
                tokens: Some(Arc::new(review::TokenReviewAuthenticator::new(
                    client.clone(),
                    metrics.clone(),
                ))),
                authorizer: Arc::new(review::SubjectAccessReviewAuthorizer::new(client)),
            },
            metrics: metrics.clone(),
            cpu_rates: Arc::default(),
        }
    }
}

/// The routes, behind the auth filter.
pub fn router(state: KubeletServerState) -> Router {
    let exec = get(routes::exec).post(routes::exec);
    let attach = get(routes::attach).post(routes::attach);
    let port_forward = get(routes::port_forward).post(routes::port_forward);
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/metrics/resource", get(routes::metrics_resource))
        .route("/stats/summary", get(routes::stats_summary))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(routes::container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", exec.clone())
        .route("/exec/{namespace}/{pod}/{uid}/{container}", exec)
        .route("/attach/{namespace}/{pod}/{container}", attach.clone())
        .route("/attach/{namespace}/{pod}/{uid}/{container}", attach)
        .route("/portForward/{namespace}/{pod}", port_forward.clone())
        .route("/portForward/{namespace}/{pod}/{uid}", port_forward)
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::filter,
        ))
        .with_state(state)
}

/// Serves HTTPS on `listener` with `tls` until `cancel`, within `limits`; open
/// connections are dropped then (exec sessions end with the agent, as with a
/// kubelet restart).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: KubeletServerState,
    limits: Limits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Connections::new(&limits, state.metrics.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    let app = router(state);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "kubelet server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit() else {
            tracing::debug!(%peer, "kubelet server full of authenticated connections: closing a new one");
            continue;
        };
        let connection = Connection {
            acceptor: acceptor.clone(),
            app: app.clone(),
            http: http.clone(),
            limits: limits.clone(),
            slot,
        };
        tokio::spawn(connection.serve(tcp, peer, cancel.clone()));
    }
}

/// One accepted connection and what serving it takes.
struct Connection {
    acceptor: TlsAcceptor,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    limits: Limits,
    slot: ConnectionSlot,
}

impl Connection {
    /// The handshake, then HTTP/1.1 until the client or `cancel` ends it, it is
    /// evicted, or it has not authenticated a request in time.
    async fn serve(self, tcp: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
        let accepted = tokio::time::Instant::now();
        let deadline = accepted + self.limits.first_request_timeout;
        let evicted = self.slot.evicted().clone();
        let handshake = tokio::time::timeout_at(
            deadline.min(accepted + self.limits.handshake_timeout),
            self.acceptor.accept(tcp),
        );
        let tls = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = evicted.cancelled() => {
                tracing::debug!(%peer, "closing a connection in its TLS handshake to make room");
                return;
            }
            handshake = handshake => match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
        };
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| auth::identity_from_certificate(cert));
        let ticket = self.slot.ticket();
        if identity.is_some() {
            // A certificate of the client CA: authenticated at the handshake.
            ticket.authenticated();
        }
        let identity = ClientCertIdentity(identity);
        let request_ticket = ticket.clone();
        let service = self.app.map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(identity.clone());
                request.extensions_mut().insert(request_ticket.clone());
                request
            },
        );
        let connection = self
            .http
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(connection);
        let mut first_request_due = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = evicted.cancelled() => {
                    tracing::debug!(%peer, "closing an unauthenticated connection to make room");
                    return;
                }
                _ = tokio::time::sleep_until(deadline), if first_request_due => {
                    if !ticket.is_authenticated() {
                        tracing::debug!(%peer, "no authenticated request in time: closing");
                        return;
                    }
                    first_request_due = false;
                }
                result = &mut connection => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "kubelet server connection ended");
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod server_tests;
