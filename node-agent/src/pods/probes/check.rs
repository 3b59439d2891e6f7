//! Runs one probe once, as the kubelet's `pkg/probe` does: a command through
//! CRI `ExecSync`, an HTTP GET, or a TCP connect, each within the probe's
//! timeout. `Ok` is the container's answer (success or failure with the
//! kubelet's message); `Err` means the probe could not be run at all (no pod
//! IP, runtime error, unsupported kind), and the kubelet throws such results
//! away.
use std::net::IpAddr;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue, ACCEPT, HOST, LOCATION, USER_AGENT};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use tokio::net::TcpStream;

use crate::edge::cri::CriClient;
use crate::pods::probes::state::{HttpScheme, ProbeAction, ProbeOutcome};

/// `User-Agent` of HTTP probes, as the kubelet of the pinned Kubernetes minor sends it.
pub const PROBE_USER_AGENT: &str = "kube-probe/1.37";

/// The kubelet reads at most this much of an exec probe's output.
const MAX_OUTPUT: usize = 10 * 1024;

/// The kubelet follows at most this many redirects to the same host.
const MAX_REDIRECTS: usize = 10;

/// How long past the probe's timeout to wait for `ExecSync` itself (the
/// runtime enforces the timeout; this only guards against a hung runtime).
const EXEC_GRACE: Duration = Duration::from_secs(5);

/// Runs `action` once against a container `container_id` of a pod at `pod_ip`.
pub async fn run_probe(
    action: &ProbeAction,
    timeout: Duration,
    pod_ip: Option<IpAddr>,
    cri: CriClient,
    container_id: &str,
) -> Result<ProbeOutcome, String> {
    let host = |host: &Option<String>| match (host, pod_ip) {
        (Some(host), _) => Ok(host.clone()),
        (None, Some(ip)) => Ok(ip.to_string()),
        (None, None) => Err("the pod has no IP address yet".to_string()),
    };
    match action {
        ProbeAction::Exec { command } => exec_probe(cri, container_id, command, timeout).await,
        ProbeAction::Http {
            scheme: HttpScheme::Https,
            ..
        } => Err("HTTPS probes are not supported by this agent".to_string()),
        ProbeAction::Http {
            scheme: HttpScheme::Http,
            host: h,
            port,
            path,
            headers,
        } => Ok(http_probe(&host(h)?, *port, path, headers, timeout).await),
        ProbeAction::Tcp { host: h, port } => Ok(tcp_probe(&host(h)?, *port, timeout).await),
        ProbeAction::Grpc { .. } => Err("gRPC probes are not supported by this agent".to_string()),
    }
}

/// Runs `command` in the container through CRI `ExecSync`: exit code 0 is
/// success; otherwise the output (stdout then stderr) is the message. A
/// command that outlives the timeout fails with the kubelet's message.
pub async fn exec_probe(
    mut cri: CriClient,
    container_id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<ProbeOutcome, String> {
    let timed_out = || ProbeOutcome::Failure(format!("command {:?} timed out", command.join(" ")));
    let request = cri::ExecSyncRequest {
        container_id: container_id.to_string(),
        cmd: command.to_vec(),
        timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
    };
    let response = match tokio::time::timeout(timeout + EXEC_GRACE, cri.runtime.exec_sync(request))
        .await
    {
        Err(_) => return Ok(timed_out()),
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => return Ok(timed_out()),
        Ok(Err(status)) => return Err(cri.call_error("ExecSync", status).to_string()),
        Ok(Ok(response)) => response.into_inner(),
    };
    if response.exit_code == 0 {
        return Ok(ProbeOutcome::Success);
    }
    let mut output = response.stdout;
    output.extend_from_slice(&response.stderr);
    output.truncate(MAX_OUTPUT);
    let output = String::from_utf8_lossy(&output).trim_end().to_string();
    Ok(ProbeOutcome::Failure(if output.is_empty() {
        format!(
            "command {:?} exited with code {}",
            command.join(" "),
            response.exit_code
        )
    } else {
        output
    }))
}

/// Connects to `host:port` within `timeout`; an accepted connection is success.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    let address = host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => ProbeOutcome::Success,
        Ok(Err(error)) => ProbeOutcome::Failure(format!("dial tcp {address}: {error}")),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {address}: i/o timeout")),
    }
}

/// GETs `http://host:port/path` within `timeout` (connect, redirects and
/// response headers together): 200 <= status < 400 is success. Redirects to
/// the same host are followed (up to 10); a redirect elsewhere counts as the
/// 3xx it is, a success, as the kubelet does.
pub async fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let url = format!("http://{}{path}", host_port(host, port));
    let result = tokio::time::timeout(timeout, get_following_redirects(host, port, path, headers));
    match result.await {
        Err(_) => ProbeOutcome::Failure(format!(
            "Get {url:?}: timeout awaiting response headers after {timeout:?}"
        )),
        Ok(Err(error)) => ProbeOutcome::Failure(format!("Get {url:?}: {error}")),
        Ok(Ok(status)) if (200..400).contains(&status) => ProbeOutcome::Success,
        Ok(Ok(status)) => {
            ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
        }
    }
}

/// Where a redirect leads: the same host (host, port, path) or elsewhere.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    SameHost(String, u16, String),
    Elsewhere,
}

/// Resolves a `Location` against the request it answers. Only plain HTTP on
/// the same host name is followed (the kubelet compares host names, not ports).
fn redirect(host: &str, port: u16, path: &str, location: &str) -> Redirect {
    if location.starts_with("//") || location.is_empty() {
        return Redirect::Elsewhere;
    }
    if location.starts_with('/') {
        return Redirect::SameHost(host.to_string(), port, location.to_string());
    }
    if !location.contains("://") {
        // Relative to the current path's directory.
        let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        return Redirect::SameHost(host.to_string(), port, format!("{directory}{location}"));
    }
    let Ok(uri) = location.parse::<hyper::Uri>() else {
        return Redirect::Elsewhere;
    };
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(next))
            if next
                .trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(host) =>
        {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            Redirect::SameHost(
                host.to_string(),
                uri.port_u16().unwrap_or(80),
                path.to_string(),
            )
        }
        _ => Redirect::Elsewhere,
    }
}

/// The status of the last response, after following same-host redirects
/// (also the lifecycle hooks' GET, [`crate::pods::hooks::http`]).
pub(crate) async fn get_following_redirects(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let (mut port, mut path) = (port, path.to_string());
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = get_once(host, port, &path, headers).await?;
        let Some(location) = location.filter(|_| (300..400).contains(&status)) else {
            return Ok(status);
        };
        match redirect(host, port, &path, &location) {
            Redirect::SameHost(_, next_port, next_path) => (port, path) = (next_port, next_path),
            Redirect::Elsewhere => return Ok(status),
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// One GET on a fresh connection (the kubelet disables keep-alives): the
/// status and the `Location` header.
async fn get_once(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>), String> {
    let request = probe_request(host, port, path, headers)?;
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|error| format!("dial tcp {}: {error}", host_port(host, port)))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    // The connection is driven here, not in a spawned task, so a server that
    // never answers cannot outlive the probe's timeout.
    let mut connection = std::pin::pin!(connection);
    let mut sent = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut sent => response,
        // The connection may end (the server closes it) in the same poll
        // that hands the response over: then the response is ready.
        ended = &mut connection => match ended {
            Ok(()) => sent.await,
            Err(error) => return Err(error.to_string()),
        },
    }
    .map_err(|error| error.to_string())?;
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((response.status().as_u16(), location))
}

/// The GET request: the user's headers, then `Host`, `User-Agent` and
/// `Accept: */*` unless the user set them (an empty `Accept` removes it).
fn probe_request(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<hyper::Request<String>, String> {
    let mut request = hyper::Request::get(path)
        .header(hyper::header::CONNECTION, "close")
        .body(String::new())
        .map_err(|error| format!("invalid probe path {path:?}: {error}"))?;
    let map = request.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|error| format!("invalid header name {name:?}: {error}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|error| format!("invalid value of header {name}: {error}"))?;
        map.append(name, value);
    }
    if map.get(ACCEPT).is_some_and(|v| v.is_empty()) {
        map.remove(ACCEPT);
    } else if !map.contains_key(ACCEPT) {
        map.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
    if !map.contains_key(USER_AGENT) {
        map.insert(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT));
    }
    if !map.contains_key(HOST) {
        let value = HeaderValue::from_str(&host_port(host, port))
            .map_err(|error| format!("invalid host {host:?}: {error}"))?;
        map.insert(HOST, value);
    }
    Ok(request)
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::locked::Locked;

    /// A one-line HTTP server on 127.0.0.1: answers every request with the
    /// response `respond` gives for its request line, and keeps the last request.
    pub(crate) struct TestServer {
        pub port: u16,
        pub last_request: Arc<Mutex<String>>,
    }

    pub(crate) async fn serve(
        respond: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let last_request = Arc::new(Mutex::new(String::new()));
        let last = last_request.clone();
        let respond = Arc::new(respond);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (last, respond) = (last.clone(), respond.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&buffer).to_string();
                    let line = request.lines().next().unwrap_or_default().to_string();
                    *last.locked() = request;
                    let _ = stream.write_all(respond(&line).as_bytes()).await;
                });
            }
        });
        TestServer { port, last_request }
    }

    pub(crate) fn response(status: u16, extra: &str) -> String {
        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n")
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn http_success_is_2xx_and_3xx_and_failure_names_the_status() {
        for (status, ok) in [
            (200, true),
            (204, true),
            (399, true),
            (400, false),
            (500, false),
        ] {
            let server = serve(move |_| response(status, "")).await;
            let outcome = http_probe("127.0.0.1", server.port, "/healthz", &[], SECOND).await;
            if ok {
                assert_eq!(outcome, ProbeOutcome::Success, "{status}");
            } else {
                assert_eq!(
                    outcome,
                    ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
                );
            }
        }
    }

    #[tokio::test]
    async fn http_request_carries_host_user_agent_and_user_headers() {
        let server = serve(|_| response(200, "")).await;
        let headers = [("X-Probe".to_string(), "yes".to_string())];
        http_probe("127.0.0.1", server.port, "/ready?x=1", &headers, SECOND).await;
        let request = server.last_request.locked().to_ascii_lowercase();
        assert!(
            request.starts_with("get /ready?x=1 http/1.1\r\n"),
            "{request}"
        );
        for header in [
            format!("host: 127.0.0.1:{}", server.port),
            "user-agent: kube-probe/1.37".to_string(),
            "accept: */*".to_string(),
            "x-probe: yes".to_string(),
        ] {
            assert!(request.contains(&header), "{header} in {request}");
        }

        let headers = [
            ("Host".to_string(), "app.example".to_string()),
            ("User-Agent".to_string(), "mine".to_string()),
            ("Accept".to_string(), String::new()),
        ];
        http_probe("127.0.0.1", server.port, "/", &headers, SECOND).await;
        let request = server.last_request.locked().to_ascii_lowercase();
        assert!(request.contains("host: app.example\r\n"), "{request}");
        assert!(request.contains("user-agent: mine\r\n"), "{request}");
        assert!(!request.contains("accept:"), "{request}");
    }

    #[tokio::test]
    async fn http_follows_redirects_to_the_same_host_only() {
        let server = serve(|line| {
            if line.starts_with("GET /old ") {
                response(301, "Location: /broken\r\n")
            } else if line.starts_with("GET /away ") {
                response(302, "Location: http://elsewhere.example/\r\n")
            } else if line.starts_with("GET /loop ") {
                response(302, "Location: loop\r\n")
            } else {
                response(500, "")
            }
        })
        .await;
        let probe = |path: &'static str| http_probe("127.0.0.1", server.port, path, &[], SECOND);
        assert_eq!(
            probe("/old").await,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(probe("/away").await, ProbeOutcome::Success);
        let ProbeOutcome::Failure(message) = probe("/loop").await else {
            panic!("endless redirects must fail");
        };
        assert!(message.contains("stopped after 10 redirects"), "{message}");
    }

    #[test]
    fn redirect_resolution() {
        let same = |port, path: &str| Redirect::SameHost("10.0.0.1".into(), port, path.into());
        assert_eq!(redirect("10.0.0.1", 8080, "/a/b", "/c"), same(8080, "/c"));
        assert_eq!(
            redirect("10.0.0.1", 8080, "/a/b", "c?d=1"),
            same(8080, "/a/c?d=1")
        );
        assert_eq!(
            redirect("10.0.0.1", 8080, "/", "http://10.0.0.1:9090/x"),
            same(9090, "/x")
        );
        assert_eq!(
            redirect("10.0.0.1", 8080, "/", "http://10.0.0.1"),
            same(80, "/")
        );
        assert_eq!(
            redirect("10.0.0.1", 8080, "/", "http://10.0.0.2/"),
            Redirect::Elsewhere
        );
        assert_eq!(
            redirect("10.0.0.1", 8080, "/", "https://10.0.0.1/"),
            Redirect::Elsewhere
        );
        assert_eq!(
            redirect("10.0.0.1", 8080, "/", "//evil/"),
            Redirect::Elsewhere
        );
    }

    #[tokio::test]
    async fn http_to_a_silent_server_fails_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Accepts (the kernel does) but never answers.
        let outcome = http_probe("127.0.0.1", port, "/", &[], Duration::from_millis(200)).await;
        let ProbeOutcome::Failure(message) = outcome else {
            panic!("must fail");
        };
        assert!(message.contains("timeout"), "{message}");
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_success_is_an_accepted_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        assert_eq!(
            tcp_probe("127.0.0.1", port, SECOND).await,
            ProbeOutcome::Success
        );
        drop(listener);
        let ProbeOutcome::Failure(message) = tcp_probe("127.0.0.1", port, SECOND).await else {
            panic!("a closed port must fail");
        };
        assert!(
            message.starts_with(&format!("dial tcp 127.0.0.1:{port}: ")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn probes_that_cannot_run_are_errors_not_failures() {
        let cri = CriClient::connect_lazy("unix:///nonexistent/nodeconfig-test/cri.sock")
            .expect("lazy client");
        let tcp = ProbeAction::Tcp {
            host: None,
            port: 80,
        };
        let no_ip = run_probe(&tcp, SECOND, None, cri.clone(), "c1").await;
        assert!(no_ip.is_err_and(|e| e.contains("no IP")));
        let grpc = ProbeAction::Grpc {
            port: 50051,
            service: None,
        };
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let unsupported = run_probe(&grpc, SECOND, ip, cri.clone(), "c1").await;
        assert!(unsupported.is_err_and(|e| e.contains("gRPC probes are not supported")));
        let exec = ProbeAction::Exec {
            command: vec!["true".into()],
        };
        let no_runtime = run_probe(&exec, SECOND, ip, cri, "c1").await;
        assert!(no_runtime.is_err_and(|e| e.contains("ExecSync")));
    }
}
