//! The service health check listeners: one HTTP server per
//! `healthCheckNodePort`, as kube-proxy's ServiceHealthServer runs them.
//!
//! [`HealthServers::sync`] takes the planned [`HealthCheck`]s after every
//! successful sync: it opens the ports that are new, closes the ones gone, and
//! updates the counts the open ones answer with (through [`respond`]). A port
//! that cannot be opened (taken by another process) is warned about and tried
//! again at the next sync, as kube-proxy does. Every path answers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

use super::service_health::{respond, HealthCheck};
use crate::locked::Locked;
use crate::serve::health::Health;

/// What the open ports answer with: the latest checks, by port.
type Checks = Arc<Mutex<BTreeMap<u16, HealthCheck>>>;

/// The open health check ports of this node.
pub struct HealthServers {
    checks: Checks,
    /// Open listeners by port: the addresses they serve and their tasks.
    open: BTreeMap<u16, Listening>,
    health: Health,
    /// The deadline name in [`Health`] that makes the proxy unhealthy.
    proxy: &'static str,
}

struct Listening {
    addresses: Vec<IpAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct PortState {
    port: u16,
    checks: Checks,
    health: Health,
    proxy: &'static str,
}

impl HealthServers {
    /// `proxy` names the proxy's deadline in `health`: past it the proxy is
    /// unhealthy and every port answers 503.
    pub fn new(health: Health, proxy: &'static str) -> Self {
        Self {
            checks: Arc::default(),
            open: BTreeMap::new(),
            health,
            proxy,
        }
    }

    /// Ports open now.
    pub fn ports(&self) -> Vec<u16> {
        self.open.keys().copied().collect()
    }

    /// Serves exactly `checks` on `addresses` (the unspecified address: all of
    /// the node's). Call from within the Tokio runtime.
    pub async fn sync(&mut self, checks: BTreeMap<u16, HealthCheck>, addresses: &[IpAddr]) {
        self.open
            .retain(|port, l| checks.contains_key(port) && l.addresses == addresses);
        for (&port, check) in &checks {
            if self.open.contains_key(&port) {
                continue;
            }
            match self.listen(port, addresses).await {
                Ok(listening) => {
                    tracing::info!(port, service = %format!("{}/{}", check.namespace, check.name), "serving the service health check");
                    self.open.insert(port, listening);
                }
                Err(err) => {
                    tracing::warn!(port, service = %format!("{}/{}", check.namespace, check.name), error = %err, "cannot open the service health check port; trying again at the next sync");
                }
            }
        }
        *self.checks.locked() = checks;
    }

    async fn listen(&self, port: u16, addresses: &[IpAddr]) -> std::io::Result<Listening> {
        let state = PortState {
            port,
            checks: self.checks.clone(),
            health: self.health.clone(),
            proxy: self.proxy,
        };
        let mut listening = Listening {
            addresses: addresses.to_vec(),
            tasks: Vec::new(),
        };
        for &ip in addresses {
            // Dropping `listening` on an error closes what opened before it.
            let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
            let app = Router::new().fallback(answer).with_state(state.clone());
            listening.tasks.push(tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::warn!(port, error = %err, "the service health check server stopped");
                }
            }));
        }
        Ok(listening)
    }
}

async fn answer(State(state): State<PortState>) -> Response {
    let check = state.checks.locked().get(&state.port).cloned();
    let Some(check) = check else {
        // Closing: the port goes with the next sync.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let healthy = !state.health.overdue(Instant::now()).contains(&state.proxy);
    let answer = respond(&check, healthy);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    fn check(port: u16, local: usize) -> BTreeMap<u16, HealthCheck> {
        BTreeMap::from([(
            port,
            HealthCheck {
                namespace: "shop".into(),
                name: "web".into(),
                port,
                local_endpoints: local,
            },
        )])
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    #[tokio::test]
    async fn opens_answers_updates_and_closes_ports() {
        let mut servers = HealthServers::new(Health::default(), "proxy");
        let port = free_port();
        let local: [IpAddr; 1] = [IpAddr::from([127, 0, 0, 1])];
        servers.sync(check(port, 1), &local).await;
        assert_eq!(servers.ports(), [port]);
        let answer = get(port).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains("\"localEndpoints\":1"), "{answer}");

        servers.sync(check(port, 0), &local).await;
        let answer = get(port).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

        servers.sync(BTreeMap::new(), &local).await;
        assert!(servers.ports().is_empty());
        tokio::task::yield_now().await;
        assert!(get(port).await.is_err(), "the port is closed");
    }

    #[tokio::test]
    async fn a_taken_port_is_tried_again() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut servers = HealthServers::new(Health::default(), "proxy");
        let local: [IpAddr; 1] = [IpAddr::from([127, 0, 0, 1])];
        servers.sync(check(port, 1), &local).await;
        assert!(servers.ports().is_empty());
        drop(taken);
        servers.sync(check(port, 1), &local).await;
        assert_eq!(servers.ports(), [port]);
    }
}
