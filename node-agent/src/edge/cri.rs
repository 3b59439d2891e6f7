//! CRI v1 client: the agent's edge to the node's container runtime (containerd).
//!
//! The kubelet talks to the runtime over gRPC on a Unix socket; so does the agent.
//! This module only connects and hands out the two generated gRPC clients
//! (`RuntimeService` for sandboxes and containers, `ImageService` for images),
//! plus errors that always say which endpoint failed, because a node can have
//! several runtimes (and the local cluster runs one containerd per node).

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{VersionRequest, VersionResponse};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// CRI API version the agent speaks (sent in `VersionRequest`).
pub const CRI_API_VERSION: &str = "v1";

/// How long [`CriClient::connect`] waits for the runtime to accept the connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest gRPC message accepted from the runtime. tonic's default (4 MiB) is
/// too small for `ListContainers` on a busy node; the kubelet uses 16 MiB too.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Errors of the CRI edge. Each names the endpoint, so a log line alone says
/// which runtime misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// Only Unix sockets are supported (`unix:///path` or a plain path), as on
    /// every Linux kubelet.
    #[error("CRI endpoint {endpoint:?} is not a Unix socket (expected unix:///path/to.sock or /path/to.sock)")]
    UnsupportedEndpoint { endpoint: String },

    /// The socket did not accept a gRPC connection (runtime down, wrong path,
    /// no permission). `reason` is the innermost cause (e.g. "No such file or
    /// directory (os error 2)"): tonic's own message is just "transport error".
    #[error("cannot connect to CRI endpoint {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },

    /// The runtime did not accept the connection in time (a hung runtime keeps
    /// its socket but never answers).
    #[error("CRI endpoint {endpoint} did not accept a connection within {timeout:?}")]
    ConnectTimeout { endpoint: String, timeout: Duration },

    /// The runtime accepted the calls but did not answer in time.
    #[error("CRI {what} on {endpoint} did not answer within {timeout:?}")]
    CallTimeout {
        endpoint: String,
        what: &'static str,
        timeout: Duration,
    },

    /// A CRI call failed; `method` is the gRPC method, e.g. `RunPodSandbox`.
    /// The message carries the status code and message; `status` is kept for
    /// callers that branch on the code (e.g. `NotFound` during clean-up).
    #[error("CRI {method} on {endpoint} failed: {}: {}", .status.code(), .status.message())]
    Call {
        endpoint: String,
        method: &'static str,
        status: Box<tonic::Status>,
    },
}

/// The socket path of a CRI endpoint: `unix:///run/x.sock` or `/run/x.sock`.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(rest) => rest,
        None if endpoint.contains("://") => "",
        None => endpoint,
    };
    if path.is_empty() {
        return Err(CriError::UnsupportedEndpoint {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(PathBuf::from(path))
}

/// The innermost error's message: what actually went wrong.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A connection to one CRI runtime. Cloning is cheap and shares the connection
/// (tonic channels multiplex); if the runtime restarts, the channel reconnects
/// on the next call.
#[derive(Clone, Debug)]
pub struct CriClient {
    endpoint: String,
    /// Sandboxes, containers, exec, status.
    pub runtime: RuntimeServiceClient<Channel>,
    /// Images: list, status, pull, remove.
    pub image: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to `endpoint` (`unix:///path` or `/path`) and fails if the
    /// runtime does not accept the connection within [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(endpoint: &str) -> Result<Self, CriError> {
        Self::connect_with_timeout(endpoint, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`CriClient::connect`] with an explicit connect timeout.
    pub async fn connect_with_timeout(endpoint: &str, timeout: Duration) -> Result<Self, CriError> {
        let connector = unix_connector(socket_path(endpoint)?);
        let channel = tokio::time::timeout(
            timeout,
            placeholder_endpoint()
                .connect_timeout(timeout)
                .connect_with_connector(connector),
        )
        .await
        .map_err(|_| CriError::ConnectTimeout {
            endpoint: endpoint.to_string(),
            timeout,
        })?
        .map_err(|error| CriError::Connect {
            endpoint: endpoint.to_string(),
            reason: root_cause(&error),
        })?;
        Ok(Self::from_channel(endpoint, channel))
    }

    /// A client that connects on its first call and reconnects after failures,
    /// so the agent can start while its runtime is down and pick it up later.
    /// Fails only for an endpoint that is not a Unix socket.
    pub fn connect_lazy(endpoint: &str) -> Result<Self, CriError> {
        let connector = unix_connector(socket_path(endpoint)?);
        let channel = placeholder_endpoint()
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
            .connect_with_connector_lazy(connector);
        Ok(Self::from_channel(endpoint, channel))
    }

    /// Wraps an existing channel (tests, or a channel built elsewhere).
    pub fn from_channel(endpoint: &str, channel: Channel) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            image: ImageServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        }
    }

    /// The endpoint this client was made for, as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Turns a failed call's status into a [`CriError`] naming this endpoint,
    /// e.g. `client.runtime.run_pod_sandbox(req).await.map_err(|s| client.call_error("RunPodSandbox", s))`.
    pub fn call_error(&self, method: &'static str, status: tonic::Status) -> CriError {
        CriError::Call {
            endpoint: self.endpoint.clone(),
            method,
            status: Box::new(status),
        }
    }

    /// CRI `Version`: runtime name and version, and the CRI API version it serves.
    /// The cheapest call there is, so also the agent's runtime liveness check.
    pub async fn version(&mut self) -> Result<VersionResponse, CriError> {
        let request = VersionRequest {
            version: CRI_API_VERSION.to_string(),
        };
        match self.runtime.version(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.call_error("Version", status)),
        }
    }
}

/// Dials the Unix socket at `path` whatever URI tonic asks for.
fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<UnixStream>,
    Error = std::io::Error,
    Future = impl std::future::Future<Output = Result<TokioIo<UnixStream>, std::io::Error>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    })
}

/// The URI is a placeholder: the connector ignores it and dials the socket.
/// It must still be a valid http URI for tonic.
fn placeholder_endpoint() -> Endpoint {
    Endpoint::from_static("http://[::]:50051")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_accepts_unix_urls_and_plain_paths() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").ok(),
            Some(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            socket_path("/run/x.sock").ok(),
            Some(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(socket_path("x.sock").ok(), Some(PathBuf::from("x.sock")));
    }

    #[test]
    fn socket_path_refuses_other_schemes_and_empty_paths() {
        for e in ["tcp://127.0.0.1:1234", "npipe:////./pipe/x", "unix://", ""] {
            let err = socket_path(e).expect_err(e);
            assert!(err.to_string().contains(&format!("{e:?}")), "{err}");
        }
    }

    #[tokio::test]
    async fn connect_error_names_the_endpoint() {
        let endpoint = "unix:///nonexistent/nodeconfig-test/cri.sock";
        let err = CriClient::connect_with_timeout(endpoint, Duration::from_secs(2))
            .await
            .expect_err("no runtime there");
        let s = err.to_string();
        assert!(
            s.contains(endpoint) && s.contains("No such file or directory"),
            "{s}"
        );
    }

    #[test]
    fn call_error_names_endpoint_and_method() {
        let err = CriError::Call {
            endpoint: "unix:///run/c.sock".into(),
            method: "RunPodSandbox",
            status: Box::new(tonic::Status::not_found("no such image")),
        };
        let s = err.to_string();
        assert!(
            s.contains("unix:///run/c.sock")
                && s.contains("RunPodSandbox")
                && s.contains("no such image"),
            "{s}"
        );
    }
}
