//! The node's kubelet port (:10250) under abuse, end to end (`e2e/cluster up`):
//! a slow-loris flood of connections does not stop `kubectl logs`, and the
//! connections past the server's bound are closed; a bad bearer token sent again
//! and again costs one TokenReview, not one per request.
//!
//! The tests talk to nc-node-1's agent directly: HTTPS on 10.200.1.2:10250 (its
//! self-signed serving certificate is not checked, as the API server here does
//! not check it) and its metrics on 10.200.1.2:10356. They take turns: a flood
//! would close the other test's unauthenticated connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeconfig_e2e::kubectl::{eventually, get_json, kubectl};
use nodeconfig_e2e::namespace::{apply_json, Namespace};
use nodeconfig_e2e::node::node_ip;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUSYBOX: &str = "nodeconfig.local/busybox:1.35";
const NODE: &str = "nc-node-1";
/// The agent's bound on connections that have not authenticated a request
/// (`kubelet_server::connections::Limits::default().max_unauthenticated`).
const MAX_UNAUTHENTICATED: usize = 128;
/// Slow-loris connections the test opens: half stuck in the TLS handshake, half
/// past it and sending their request headers a byte at a time.
const FLOOD: usize = 200;

static TURN: Mutex<()> = Mutex::new(());

fn kubelet_address() -> String {
    format!("{}:10250", node_ip(1))
}

/// The agent's metrics text (plain HTTP on the node IP).
async fn metrics() -> String {
    let mut tcp = TcpStream::connect(format!("{}:10356", node_ip(1)))
        .await
        .expect("the agent's metrics endpoint");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
        .await
        .expect("metrics request");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("metrics answer");
    text
}

/// The value of the sample `name{labels}` (0 when it is not there yet).
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Accepts any serving certificate: the agent's is self-signed.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(kubelet_address()).await?;
    let name = ServerName::try_from(node_ip(1)).expect("an IP address is a server name");
    connector.connect(name, tcp).await
}

/// One `GET path` with a bearer token on its own connection: the status code.
async fn get_with_token(connector: &tokio_rustls::TlsConnector, path: &str, token: &str) -> u16 {
    let mut tls = tls_connect(connector)
        .await
        .expect("TLS to the kubelet port");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {NODE}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    // The server may close without TLS close_notify; what arrived is enough.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Sends `bytes` one at a time, a byte every half second, until the server
/// closes the connection; then counts it in `closed`.
async fn drip<S>(mut stream: S, bytes: Vec<u8>, closed: Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut next = bytes.iter().cycle();
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                let byte = *next.next().unwrap_or(&b'x');
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
            }
        }
    }
    closed.fetch_add(1, Ordering::SeqCst);
}

fn talker(ns: &str) {
    apply_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talker", "namespace": ns},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "echo hello from talker; exec sleep 3600"]}],
        },
    }));
    eventually(Duration::from_secs(90), "talker's first log line", || {
        get_json("pod", "talker", Some(ns))?;
        let run = kubectl(&["logs", "-n", ns, "talker", "--request-timeout=20s"]);
        (run.ok && run.stdout.contains("hello from talker")).then_some(())
    });
}

/// A ClusterRole and its binding that let `ns`'s default ServiceAccount read
/// logs through the kubelet port (`nodes/proxy`); deleted when dropped.
struct LogReader(String);

impl LogReader {
    fn grant(ns: &str) -> Self {
        let name = format!("{ns}-kubelet-logs");
        kubectl(&[
            "create",
            "clusterrole",
            &name,
            "--verb=get",
            "--resource=nodes/proxy",
        ])
        .expect_ok("create clusterrole");
        let reader = LogReader(name);
        let subject = format!("--serviceaccount={ns}:default");
        let role = format!("--clusterrole={}", reader.0);
        kubectl(&["create", "clusterrolebinding", &reader.0, &role, &subject])
            .expect_ok("create clusterrolebinding");
        reader
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "clusterrolebinding", &self.0, "--wait=false"]);
        let _ = kubectl(&["delete", "clusterrole", &self.0, "--wait=false"]);
    }
}

#[test]
fn a_slow_loris_flood_does_not_stop_kubectl_logs_and_its_excess_is_closed() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Namespace::new("slowloris");
    talker(&ns.0);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    // A client of the kubelet port with a bearer token, on a new connection each time.
    let _reader = LogReader::grant(&ns.0);
    let token = kubectl(&["create", "token", "default", "-n", &ns.0])
        .expect_ok("create token")
        .trim()
        .to_string();
    let logs_path = format!("/containerLogs/{}/talker/app", ns.0);
    let direct = tls_connector();
    eventually(Duration::from_secs(30), "logs read with a token", || {
        let status = runtime.block_on(get_with_token(&direct, &logs_path, &token));
        (status == 200).then_some(())
    });
    let evicted = "nodeconfig_agent_kubelet_server_connections_shed_total{reason=\"evicted\"}";
    let evicted_before = sample(&runtime.block_on(metrics()), evicted);

    let closed = Arc::new(AtomicUsize::new(0));
    let connector = tls_connector();
    let mut drips = Vec::new();
    runtime.block_on(async {
        for i in 0..FLOOD {
            if i % 2 == 0 {
                // Stuck in the handshake: a TLS record header announcing 512 bytes, then a trickle.
                let tcp = TcpStream::connect(kubelet_address())
                    .await
                    .expect("TCP to the kubelet port");
                let trickle = [&[0x16u8, 0x03, 0x01, 0x02, 0x00][..], &[0x01; 64]].concat();
                drips.push(tokio::spawn(drip(tcp, trickle, closed.clone())));
            } else {
                // Past the handshake, without credentials, its headers a byte at a time.
                let Ok(tls) = tls_connect(&connector).await else {
                    // Evicted while shaking hands: the flood's excess at work.
                    closed.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let headers = b"GET /healthz HTTP/1.1\r\nHost: nc-node-1\r\nX-Slow: ".to_vec();
                drips.push(tokio::spawn(drip(tls, headers, closed.clone())));
            }
        }
    });
    println!("{FLOOD} slow connections open");

    // The API server's connection to the node gets in while the flood holds on.
    for _ in 0..3 {
        let logs = kubectl(&["logs", "-n", &ns.0, "talker", "--request-timeout=20s"])
            .expect_ok("logs during the flood");
        assert!(logs.contains("hello from talker"), "{logs}");
        // And a client that must open a new connection into the flood.
        let status = runtime.block_on(get_with_token(&direct, &logs_path, &token));
        assert_eq!(
            status, 200,
            "logs with a token on a new connection during the flood"
        );
    }

    let excess = FLOOD - MAX_UNAUTHENTICATED;
    let evicted_after = sample(&runtime.block_on(metrics()), evicted);
    assert!(
        evicted_after - evicted_before >= excess as u64,
        "at least {excess} of the flood's connections were closed to make room, the agent counts {}",
        evicted_after - evicted_before
    );
    let seen = eventually(Duration::from_secs(20), "the flood's excess closed", || {
        let n = closed.load(Ordering::SeqCst);
        (n >= excess).then_some(n)
    });
    println!("{seen} of {FLOOD} slow connections closed by the agent");
    for d in drips {
        d.abort();
    }
}

#[test]
fn a_bad_token_sent_again_and_again_costs_one_token_review() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Namespace::new("tokens");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let connector = tls_connector();
    let unauthenticated =
        "nodeconfig_agent_kubelet_server_token_reviews_total{result=\"unauthenticated\"}";
    let authenticated =
        "nodeconfig_agent_kubelet_server_token_reviews_total{result=\"authenticated\"}";
    let before = runtime.block_on(metrics());

    let bad = format!("not-a-token-{}", ns.0);
    for _ in 0..25 {
        let status = runtime.block_on(get_with_token(&connector, "/healthz", &bad));
        assert_eq!(status, 401, "a bad token is refused every time");
    }
    // A real ServiceAccount token: authenticated, but not allowed nodes/proxy.
    let token = kubectl(&["create", "token", "default", "-n", &ns.0])
        .expect_ok("create token")
        .trim()
        .to_string();
    for _ in 0..5 {
        let status = runtime.block_on(get_with_token(&connector, "/containerLogs/a/b/c", &token));
        assert_eq!(status, 403, "known, not allowed");
    }

    let after = runtime.block_on(metrics());
    let reviews = |series| sample(&after, series) - sample(&before, series);
    assert_eq!(
        (reviews(unauthenticated), reviews(authenticated)),
        (1, 1),
        "TokenReviews for 25 requests with one bad token and 5 with one good token"
    );
}
