//! The HTTPS server with a throwaway CA: who gets in, and the upgrade proxy's bytes.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::auth::{
    Auth, Authorizer, BoxFuture, NodeAttributes, ReviewError, TokenAuthenticator, UserInfo,
};
use super::connections::Limits;
use super::*;
use crate::locked::Locked;

struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn test_ca(name: &str) -> TestCa {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate and key (PEM) issued by `ca`.
fn issue(ca: &TestCa, cn: &str, orgs: &[&str], sans: &[&str]) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Allows the listed users, and records every decision asked for.
struct AllowUsers {
    users: Vec<&'static str>,
    asked: Mutex<Vec<(String, NodeAttributes)>>,
}

impl Authorizer for AllowUsers {
    fn allowed<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a NodeAttributes,
    ) -> BoxFuture<'a, Result<bool, ReviewError>> {
        self.asked
            .locked()
            .push((user.name.clone(), attributes.clone()));
        let allowed = self.users.contains(&user.name.as_str());
        Box::pin(async move { Ok(allowed) })
    }
}

/// Knows one token.
struct OneToken;

impl TokenAuthenticator for OneToken {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, ReviewError>> {
        let user = (token == "good-token").then(|| UserInfo {
            name: "system:serviceaccount:monitoring:scraper".into(),
            ..Default::default()
        });
        Box::pin(async move { Ok(user) })
    }
}

struct Server {
    address: std::net::SocketAddr,
    server_ca: TestCa,
    authorizer: Arc<AllowUsers>,
    _cancel: tokio_util::sync::DropGuard,
}

/// Starts the server on 127.0.0.1 trusting `client_ca` for client certificates.
async fn start_server(client_ca: &TestCa) -> Server {
    start_server_with(client_ca, Limits::default()).await
}

async fn start_server_with(client_ca: &TestCa, limits: Limits) -> Server {
    let server_ca = test_ca("serving-ca");
    let (cert, key) = issue(&server_ca, "node-1", &[], &["127.0.0.1"]);
    let tls = tls::server_config_from_pem(
        cert.as_bytes(),
        key.as_bytes(),
        client_ca.cert_pem.as_bytes(),
    )
    .unwrap();
    let authorizer = Arc::new(AllowUsers {
        users: vec![
            "kube-apiserver-kubelet-client",
            "system:serviceaccount:monitoring:scraper",
        ],
        asked: Mutex::new(Vec::new()),
    });
    // CRI is never reached by these requests: a lazy client to nowhere.
    let cri =
        crate::edge::cri::CriClient::connect_lazy("unix:///nonexistent/kubelet-server-test.sock")
            .unwrap();
    let (_switch, cri) = crate::edge::cri_handle::shared(cri);
    let state = KubeletServerState {
        cri,
        auth: Auth {
            node_name: "node-1".into(),
            tokens: Some(Arc::new(OneToken)),
            authorizer: authorizer.clone(),
        },
        metrics: crate::serve::metrics::Metrics::new().kubelet_server,
        cpu_rates: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(serve(listener, tls, state, limits, cancel.clone()));
    Server {
        address,
        server_ca,
        authorizer,
        _cancel: cancel.drop_guard(),
    }
}

/// GET `path` over TLS, with a client certificate when given; `Err` when the
/// connection is refused at any point.
async fn get(
    server: &Server,
    path: &str,
    client_cert: Option<&(String, String)>,
    bearer: Option<&str>,
) -> Result<(StatusCode, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server.server_ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.address)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "node-1");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Body::empty()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn without_a_client_certificate_or_token_the_answer_is_401() {
    let cluster_ca = test_ca("cluster-ca");
    let server = start_server(&cluster_ca).await;
    let (status, body) = get(&server, "/healthz", None, None).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthorized")
    );
    // Unknown paths too: authentication comes before routing.
    let (status, _) = get(&server, "/nope", None, Some("bad-token"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_api_servers_client_certificate_is_authenticated_and_authorized() {
    let cluster_ca = test_ca("cluster-ca");
    let server = start_server(&cluster_ca).await;
    let api_server = issue(
        &cluster_ca,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
    );
    let (status, body) = get(&server, "/healthz", Some(&api_server), None)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let asked = server.authorizer.asked.locked().clone();
    assert_eq!(asked[0].0, "kube-apiserver-kubelet-client");
    assert_eq!(
        (asked[0].1.verb, asked[0].1.subresource),
        ("get", "healthz")
    );
    assert_eq!(asked[0].1.node_name, "node-1");
}

#[tokio::test]
async fn resource_metrics_are_authorized_as_node_metrics_and_report_a_runtime_down() {
    let cluster_ca = test_ca("cluster-ca");
    let server = start_server(&cluster_ca).await;
    let api_server = issue(
        &cluster_ca,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
    );
    // No runtime behind the socket: the kubelet's answer to a failed read.
    let (status, body) = get(&server, "/metrics/resource", Some(&api_server), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("resource_scrape_error 1\n"), "{body}");
    let (status, _) = get(&server, "/stats/summary", Some(&api_server), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let asked = server.authorizer.asked.locked().clone();
    let subresources: Vec<_> = asked.iter().map(|(_, a)| a.subresource).collect();
    assert_eq!(subresources, ["metrics", "stats"]);
}

#[tokio::test]
async fn a_known_user_without_permission_gets_the_kubelets_403() {
    let cluster_ca = test_ca("cluster-ca");
    let server = start_server(&cluster_ca).await;
    let someone = issue(&cluster_ca, "jane", &["developers"], &[]);
    let (status, body) = get(
        &server,
        "/containerLogs/default/web/app",
        Some(&someone),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "Forbidden (user=jane, verb=get, resource=nodes, subresource(s)=[proxy])\n"
    );
}

#[tokio::test]
async fn a_bearer_token_is_checked_by_the_token_authenticator() {
    let cluster_ca = test_ca("cluster-ca");
    let server = start_server(&cluster_ca).await;
    let (status, _) = get(&server, "/healthz", None, Some("good-token"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let cluster_ca = test_ca("cluster-ca");
    let server = start_server(&cluster_ca).await;
    let other_ca = test_ca("other-ca");
    let impostor = issue(
        &other_ca,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
    );
    let result = get(&server, "/healthz", Some(&impostor), None).await;
    assert!(result.is_err(), "the handshake must fail, got {result:?}");
}

/// Whether the server closes `tcp` (EOF or reset) before `within`.
async fn closed_by_server(tcp: &mut TcpStream, within: std::time::Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_flood_of_silent_connections_does_not_keep_the_api_server_out() {
    let cluster_ca = test_ca("cluster-ca");
    let limits = Limits {
        max_unauthenticated: 3,
        ..Limits::default()
    };
    let server = start_server_with(&cluster_ca, limits).await;
    let api_server = issue(
        &cluster_ca,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
    );
    // Slow-loris: connections that never finish their handshake.
    let mut flood = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(server.address).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        flood.push(tcp);
    }
    let (status, _) = get(&server, "/healthz", Some(&api_server), None)
        .await
        .expect("the API server gets in");
    assert_eq!(status, StatusCode::OK);
    assert!(
        closed_by_server(&mut flood[0], std::time::Duration::from_secs(10)).await,
        "the oldest waiting connection made room"
    );
    // More of the flood: the authenticated client still gets in each time.
    for _ in 0..5 {
        flood.push(TcpStream::connect(server.address).await.unwrap());
        let (status, _) = get(&server, "/healthz", Some(&api_server), None)
            .await
            .expect("the API server gets in");
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let cluster_ca = test_ca("cluster-ca");
    let limits = Limits {
        first_request_timeout: std::time::Duration::from_millis(200),
        ..Limits::default()
    };
    let server = start_server_with(&cluster_ca, limits).await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    assert!(closed_by_server(&mut silent, std::time::Duration::from_secs(10)).await);
    // A client that authenticates is served.
    let (status, _) = get(&server, "/healthz", None, Some("good-token"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn a_self_signed_serving_certificate_is_made_for_the_node() {
    let cluster_ca = test_ca("cluster-ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &cluster_ca.cert_pem).unwrap();
    let serving = tls::ServingCert::SelfSigned {
        node_name: "node-1".into(),
        addresses: vec!["10.0.0.7".parse().unwrap()],
    };
    let config = tls::server_config(&serving, &ca_file).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let err = tls::server_config(&serving, &dir.path().join("missing.crt")).unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

/// A streaming server that checks the request, switches protocols, greets, then echoes.
async fn fake_streaming_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        tcp.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\nhello from upstream\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            tcp.write_all(&buf[..n]).await.unwrap();
        }
        String::from_utf8(head).unwrap()
    });
    (address, task)
}

/// A plain HTTP front that proxies every request to `target`.
async fn proxy_front(target: String) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let target = target.clone();
        async move { upgrade::proxy_upgrade(request, &target).await }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn upgraded_streams_flow_both_ways_through_the_proxy() {
    let (upstream, upstream_task) = fake_streaming_server().await;
    let front = proxy_front(format!("http://{upstream}/exec/one-time-token")).await;

    let mut client = TcpStream::connect(front).await.unwrap();
    client
        .write_all(
            b"POST /exec/default/web/app?command=sh&stdin=1 HTTP/1.1\r\nHost: node-1\r\n\
              Authorization: Bearer secret\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut client).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );

    let mut greeting = [0u8; 20];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"hello from upstream\n", "upstream to client");
    client.write_all(b"ping over spdy").await.unwrap();
    let mut echo = [0u8; 14];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping over spdy", "client to upstream and back");

    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let request_head = upstream_task.await.unwrap().to_ascii_lowercase();
    assert!(
        request_head.starts_with("post /exec/one-time-token http/1.1"),
        "{request_head}"
    );
    assert!(request_head.contains("upgrade: spdy/3.1"), "{request_head}");
    assert!(
        request_head.contains(&format!("host: {upstream}")),
        "{request_head}"
    );
    assert!(
        !request_head.contains("authorization"),
        "credentials stay here: {request_head}"
    );
}

#[tokio::test]
async fn a_request_without_upgrade_is_refused_and_upstream_errors_pass_through() {
    let front = proxy_front("http://127.0.0.1:1/exec/x".into()).await;
    let mut client = TcpStream::connect(front).await.unwrap();
    client
        .write_all(b"POST /exec/a/b/c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // A streaming server that says no (an expired token): its answer reaches the client.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        read_head(&mut tcp).await;
        tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nno such token")
            .await
            .unwrap();
    });
    let front = proxy_front(format!("http://{upstream}/exec/expired")).await;
    let mut client = TcpStream::connect(front).await.unwrap();
    client
        .write_all(b"POST /exec/a/b/c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let mut body = [0u8; 13];
    client.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"no such token");
}
