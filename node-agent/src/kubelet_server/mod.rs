//! The kubelet's HTTPS server (port 10250), for what the API server proxies to a
//! node: `kubectl logs` (`/containerLogs`), `kubectl exec` (`/exec`), `attach`
//! and `port-forward`, plus `/healthz`.
//!
//! Every request goes through [`auth::filter`] (client certificate or bearer token,
//! then a decision on `nodes/<subresource>` of this node). Containers are found
//! through CRI by the pod loop's labels ([`locate`]); logs are read from the CRI
//! log file ([`logs`], format in [`cri_log`]); exec, attach and port-forward are
//! proxied to the runtime's streaming server ([`upgrade`]).

pub mod auth;
pub mod cri_log;
pub mod exec;
pub mod locate;
pub mod logs;
pub mod review;
pub mod routes;
pub mod tls;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::edge::cri_handle::CriHandle;
use auth::{Auth, ClientCertIdentity};

/// A TLS handshake that takes longer is dropped (a client that connects and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct KubeletServerState {
    /// The node's CRI connection.
    pub cri: CriHandle,
    /// Authentication and authorization of every request.
    pub auth: Auth,
}

impl KubeletServerState {
    /// The state with the API server as token authenticator and authorizer
    /// (TokenReview, SubjectAccessReview), for node `node_name`.
    pub fn new(cri: CriHandle, client: kube::Client, node_name: &str) -> Self {
        KubeletServerState {
            cri,
            auth: Auth {
                node_name: node_name.to_string(),
                tokens: Some(Arc::new(review::TokenReviewAuthenticator::new(
                    client.clone(),
                ))),
                authorizer: Arc::new(review::SubjectAccessReviewAuthorizer::new(client)),
            },
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

/// Serves HTTPS on `listener` with `tls` until `cancel`; open connections are
/// dropped then (exec sessions end with the agent, as with a kubelet restart).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: KubeletServerState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
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
        let acceptor = acceptor.clone();
        let app = app.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| auth::identity_from_certificate(cert));
            let identity = ClientCertIdentity(identity);
            let service = app.map_request(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(identity.clone());
                    request
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "kubelet server connection ended");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod server_tests;
