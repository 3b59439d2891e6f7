//! HTTPS probes against real TLS servers on 127.0.0.1: a self-signed
//! certificate for another name is accepted (as the kubelet skips
//! verification), a server that does not speak TLS fails the handshake, and
//! redirects cross between http and https on the same host.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::locked::Locked;
use crate::pods::probes::check::http_probe;
use crate::pods::probes::check::tests::{response, serve};
use crate::pods::probes::state::{HttpScheme, ProbeOutcome};

const SECOND: Duration = Duration::from_secs(1);

/// A TLS server with a self-signed certificate for `name` only.
fn acceptor(name: &str) -> TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
        .expect("config");
    TlsAcceptor::from(Arc::new(config))
}

/// Reads one request's head from `stream` and writes what `respond` says
/// for its request line; returns the request.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    respond: &(dyn Fn(&str) -> String + Send + Sync),
) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let request = String::from_utf8_lossy(&buffer).to_string();
    let line = request.lines().next().unwrap_or_default().to_string();
    stream.write_all(respond(&line).as_bytes()).await.ok()?;
    stream.shutdown().await.ok()?;
    Some(request)
}

struct TlsServer {
    port: u16,
    last_request: Arc<Mutex<String>>,
}

/// An HTTPS server on 127.0.0.1 whose certificate is for `other.example`.
async fn serve_tls(respond: impl Fn(&str) -> String + Send + Sync + 'static) -> TlsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let tls = acceptor("other.example");
    let last_request = Arc::new(Mutex::new(String::new()));
    let last = last_request.clone();
    let respond: Arc<dyn Fn(&str) -> String + Send + Sync> = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tls, last, respond) = (tls.clone(), last.clone(), respond.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tls.accept(stream).await else {
                    return;
                };
                if let Some(request) = answer(&mut stream, respond.as_ref()).await {
                    *last.locked() = request;
                }
            });
        }
    });
    TlsServer { port, last_request }
}

#[tokio::test]
async fn https_accepts_a_certificate_for_another_name_and_sends_the_probe_headers() {
    let server = serve_tls(|_| response(200, "")).await;
    let headers = [("X-Probe".to_string(), "tls".to_string())];
    let outcome = http_probe(
        HttpScheme::Https,
        "127.0.0.1",
        server.port,
        "/readyz",
        &headers,
        SECOND,
    );
    assert_eq!(outcome.await, ProbeOutcome::Success);
    let request = server.last_request.locked().to_ascii_lowercase();
    assert!(request.starts_with("get /readyz http/1.1\r\n"), "{request}");
    for header in ["user-agent: kube-probe/1.37", "accept: */*", "x-probe: tls"] {
        assert!(request.contains(header), "{header} in {request}");
    }
}

#[tokio::test]
async fn https_failures_name_the_status_like_http() {
    let server = serve_tls(|_| response(503, "")).await;
    let outcome = http_probe(
        HttpScheme::Https,
        "127.0.0.1",
        server.port,
        "/",
        &[],
        SECOND,
    );
    assert_eq!(
        outcome.await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_the_handshake() {
    // A plain HTTP server answers the ClientHello as the garbage it is to it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(response(400, "").as_bytes()).await;
        }
    });
    let outcome = http_probe(HttpScheme::Https, "127.0.0.1", port, "/", &[], SECOND);
    let ProbeOutcome::Failure(message) = outcome.await else {
        panic!("no TLS, no success");
    };
    let prefix = format!("Get \"https://127.0.0.1:{port}/\": tls: ");
    assert!(message.starts_with(&prefix), "{message}");
}

#[tokio::test]
async fn plain_http_to_a_tls_server_does_not_succeed() {
    let server = serve_tls(|_| response(200, "")).await;
    let outcome = http_probe(HttpScheme::Http, "127.0.0.1", server.port, "/", &[], SECOND);
    assert!(matches!(outcome.await, ProbeOutcome::Failure(_)));
}

#[tokio::test]
async fn redirects_cross_between_http_and_https_on_the_same_host() {
    let secure = serve_tls(|line| {
        if line.starts_with("GET /ok ") {
            response(200, "")
        } else {
            response(500, "")
        }
    })
    .await;
    let secure_port = secure.port;
    let plain = serve(move |line| {
        if line.starts_with("GET /to-https ") {
            response(
                302,
                &format!("Location: https://127.0.0.1:{secure_port}/ok\r\n"),
            )
        } else {
            response(500, "")
        }
    })
    .await;
    let outcome = http_probe(
        HttpScheme::Http,
        "127.0.0.1",
        plain.port,
        "/to-https",
        &[],
        SECOND,
    );
    assert_eq!(outcome.await, ProbeOutcome::Success);
    assert!(secure.last_request.locked().starts_with("GET /ok "));

    let plain_port = plain.port;
    let back = serve_tls(move |_| {
        response(
            307,
            &format!("Location: http://127.0.0.1:{plain_port}/missing\r\n"),
        )
    })
    .await;
    let outcome = http_probe(HttpScheme::Https, "127.0.0.1", back.port, "/", &[], SECOND);
    assert_eq!(
        outcome.await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into()),
        "followed to the plain server, which answers 500"
    );
}

#[tokio::test]
async fn a_redirect_to_another_host_is_a_warning_carrying_the_body() {
    let server = serve_tls(|_| {
        "HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nmoved"
            .to_string()
    })
    .await;
    let outcome = http_probe(
        HttpScheme::Https,
        "127.0.0.1",
        server.port,
        "/",
        &[],
        SECOND,
    );
    assert_eq!(
        outcome.await,
        ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
    );
}
