//! gRPC probes, as the kubelet's `pkg/probe/grpc`: one `grpc.health.v1.Health/Check`
//! for the probe's `service` (empty: the whole server) over plaintext HTTP/2 to
//! the pod IP, connect and call within the probe's timeout. `SERVING` is
//! success; any other answer, an error status or no connection is a failure
//! with the kubelet's message.
//!
//! ```text
//! pod IP:port -> [ h2c connect, retried until the deadline ] -> Health/Check(service) -> status
//! ```
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::pods::probes::check::{host_port, PROBE_USER_AGENT};
use crate::pods::probes::state::ProbeOutcome;

/// Between connection attempts: the kubelet's gRPC dial blocks until the
/// server answers or the timeout ends, retrying a refused connection.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// Checks `service` on `host:port` within `timeout`.
pub async fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    let address = host_port(host, port);
    let deadline = Instant::now() + timeout;
    let channel = match connect(&address, deadline).await {
        Ok(channel) => channel,
        Err(last_error) => {
            return ProbeOutcome::Failure(format!(
                "timeout: failed to connect service {address:?} within {timeout:?}: \
                 context deadline exceeded (last error: {last_error})"
            ))
        }
    };
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let mut client = HealthClient::new(channel);
    let call = client.check(request);
    let answer = match tokio::time::timeout_at(deadline, call).await {
        Err(_) => Err(tonic::Status::deadline_exceeded("")),
        Ok(answer) => answer,
    };
    match answer {
        Ok(response) => verdict(response.into_inner().status()),
        Err(status) => match status.code() {
            tonic::Code::Unimplemented => ProbeOutcome::Failure(format!(
                "error: this server does not implement the grpc health protocol \
                 (grpc.health.v1.Health): {}",
                status.message()
            )),
            // tonic's own deadline (the request's grpc-timeout) ends the call as Cancelled.
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                if Instant::now() >= deadline =>
            {
                ProbeOutcome::Failure(format!(
                    "timeout: health rpc did not complete within {timeout:?}"
                ))
            }
            code => ProbeOutcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                status.message()
            )),
        },
    }
}

/// `SERVING` is success; anything else names what the server said.
fn verdict(status: ServingStatus) -> ProbeOutcome {
    match status {
        ServingStatus::Serving => ProbeOutcome::Success,
        other => ProbeOutcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
    }
}

/// An HTTP/2 connection to `address`, retried until `deadline`; `Err` is the
/// last attempt's error.
async fn connect(address: &str, deadline: Instant) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .and_then(|endpoint| endpoint.user_agent(PROBE_USER_AGENT))
        .map_err(|error| format!("invalid address {address:?}: {error}"))?;
    let mut last_error = "no attempt".to_string();
    loop {
        let attempt = tokio::time::timeout_at(deadline, endpoint.connect()).await;
        match attempt {
            Err(_) => return Err(last_error),
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(error)) => last_error = error_chain(&error),
        }
        if Instant::now() + RECONNECT_EVERY >= deadline {
            return Err(last_error);
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// tonic's transport error says only "transport error"; its sources say why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tonic::transport::server::TcpIncoming;
    use tonic_health::ServingStatus as Reported;

    use super::*;

    /// A gRPC server on 127.0.0.1 with the health service: the whole server
    /// serving, `"db"` as `db` says.
    async fn health_server(db: Reported) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("db", db).await;
        tokio::spawn(async move {
            let _keep = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
        });
        port
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn serving_is_success_and_other_answers_name_the_status() {
        let port = health_server(Reported::NotServing).await;
        assert_eq!(
            grpc_probe("127.0.0.1", port, "", SECOND).await,
            ProbeOutcome::Success
        );
        assert_eq!(
            grpc_probe("127.0.0.1", port, "db", SECOND).await,
            ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let ProbeOutcome::Failure(message) = grpc_probe("127.0.0.1", port, "nope", SECOND).await
        else {
            panic!("an unknown service must fail");
        };
        assert!(
            message.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_server_without_the_health_service_fails_as_unimplemented() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        // A gRPC server without services: no path is routed.
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let ProbeOutcome::Failure(message) = grpc_probe("127.0.0.1", port, "", SECOND).await else {
            panic!("must fail");
        };
        assert!(
            message.starts_with("error: this server does not implement the grpc health protocol"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_fails_after_retrying_until_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let began = Instant::now();
        let timeout = Duration::from_millis(700);
        let ProbeOutcome::Failure(message) = grpc_probe("127.0.0.1", port, "", timeout).await
        else {
            panic!("a closed port must fail");
        };
        assert!(began.elapsed() >= Duration::from_millis(400), "retried");
        assert!(began.elapsed() < timeout + SECOND, "within the timeout");
        assert!(
            message.starts_with(&format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 700ms"
            )),
            "{message}"
        );
        assert!(message.contains("refused"), "{message}");
    }

    #[tokio::test]
    async fn a_silent_server_fails_with_the_timeout() {
        // Accepts TCP (the kernel does) but never speaks HTTP/2.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let timeout = Duration::from_millis(300);
        let ProbeOutcome::Failure(message) = grpc_probe("127.0.0.1", port, "", timeout).await
        else {
            panic!("must fail");
        };
        assert!(message.starts_with("timeout:"), "{message}");
        drop(listener);
    }
}
