//! Runs one probe once, as the kubelet's `pkg/probe` does: a command through
//! CRI `ExecSync`, an HTTP(S) GET, a TCP connect, or a gRPC health check
//! ([`super::grpc`]), each within the probe's timeout. `Ok` is the container's answer (success or failure with the
//! kubelet's message); `Err` means the probe could not be run at all (no pod
//! IP, runtime error, unsupported kind), and the kubelet throws such results
//! away.
use std::future::Future;
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::time::Duration;

use futures::future::{Fuse, FutureExt};

use hyper::header::{HeaderName, HeaderValue, ACCEPT, HOST, LOCATION, USER_AGENT};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use tokio::net::TcpStream;

use crate::edge::cri::CriClient;
use crate::pods::probes::redirect::{self, Target};
use crate::pods::probes::state::{HttpScheme, ProbeAction, ProbeOutcome};
use crate::pods::probes::{grpc, tls};

/// `User-Agent` of HTTP probes, as the kubelet of the pinned Kubernetes minor sends it.
pub const PROBE_USER_AGENT: &str = "kube-probe/1.37";

/// The kubelet reads at most this much of an exec probe's output or of an
/// HTTP probe's response body.
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
            scheme,
            host: h,
            port,
            path,
            headers,
        } => Ok(http_probe(*scheme, &host(h)?, *port, path, headers, timeout).await),
        ProbeAction::Tcp { host: h, port } => Ok(tcp_probe(&host(h)?, *port, timeout).await),
        ProbeAction::Grpc { port, service } => {
            let service = service.as_deref().unwrap_or_default();
            Ok(grpc::grpc_probe(&host(&None)?, *port, service, timeout).await)
        }
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

/// GETs `scheme://host:port/path` within `timeout` (connect, TLS,
/// redirects and response together): 200 <= status < 300 is success.
/// Redirects on the same host are followed (up to 10, see [`redirect`]); a
/// 3xx the probe stops at is a success with a warning, as the kubelet has it.
pub async fn http_probe(
    scheme: HttpScheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let url = format!("{}://{}{path}", scheme.as_str(), host_port(host, port));
    let start = Target {
        scheme,
        port,
        path: path.to_string(),
    };
    let result = tokio::time::timeout(timeout, get_following_redirects(host, start, headers));
    match result.await {
        Err(_) => ProbeOutcome::Failure(format!(
            "Get {url:?}: timeout awaiting response headers after {timeout:?}"
        )),
        Ok(Err(error)) => ProbeOutcome::Failure(format!("Get {url:?}: {error}")),
        Ok(Ok(answer)) if (200..300).contains(&answer.status) => ProbeOutcome::Success,
        Ok(Ok(answer)) if (300..400).contains(&answer.status) => ProbeOutcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            answer.body
        )),
        Ok(Ok(answer)) => ProbeOutcome::Failure(format!(
            "HTTP probe failed with statuscode: {}",
            answer.status
        )),
    }
}

/// What one GET got back.
pub(crate) struct Answer {
    status: u16,
    location: Option<String>,
    /// Read (up to 10 KiB) only for a 3xx, whose warning carries it.
    body: String,
}

/// The last response, after following same-host redirects (also the
/// lifecycle hooks' GET, [`crate::pods::hooks::http`]).
pub(crate) async fn get_following_redirects(
    host: &str,
    start: Target,
    headers: &[(String, String)],
) -> Result<Answer, String> {
    let mut target = start;
    for _ in 0..=MAX_REDIRECTS {
        let answer = get_once(host, &target, headers).await?;
        let next = answer
            .location
            .as_deref()
            .filter(|_| redirect::is_followed(answer.status))
            .and_then(|location| redirect::next_target(host, &target, location));
        match next {
            Some(next) => target = next,
            None => return Ok(answer),
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// One GET on a fresh connection (the kubelet disables keep-alives), over
/// TLS for `https` ([`tls`]).
async fn get_once(
    host: &str,
    target: &Target,
    headers: &[(String, String)],
) -> Result<Answer, String> {
    let request = probe_request(host, target.port, &target.path, headers)?;
    let stream = TcpStream::connect((host, target.port))
        .await
        .map_err(|error| format!("dial tcp {}: {error}", host_port(host, target.port)))?;
    match target.scheme {
        HttpScheme::Http => exchange(TokioIo::new(stream), request).await,
        HttpScheme::Https => {
            exchange(TokioIo::new(tls::connect(stream, host).await?), request).await
        }
    }
}

/// Sends `request` on `io` and reads the answer.
async fn exchange<IO>(io: IO, request: hyper::Request<String>) -> Result<Answer, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| error.to_string())?;
    // The connection is driven here, not in a spawned task, so a server that
    // never answers cannot outlive the probe's timeout.
    let mut connection = pin!(connection.fuse());
    let response = driving(connection.as_mut(), sender.send_request(request))
        .await?
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = if (300..400).contains(&status) {
        driving(connection, body_prefix(response.into_body())).await?
    } else {
        String::new()
    };
    Ok(Answer {
        status,
        location,
        body,
    })
}

/// Awaits `work` while driving the `connection` it needs. The connection may
/// end (the server closes it) in the same poll that hands the work its
/// result: then the work is ready.
async fn driving<C, W>(connection: Pin<&mut Fuse<C>>, work: W) -> Result<W::Output, String>
where
    C: Future<Output = hyper::Result<()>>,
    W: Future,
{
    let mut work = pin!(work);
    tokio::select! {
        biased;
        output = &mut work => Ok(output),
        ended = connection => match ended {
            Ok(()) => Ok(work.await),
            Err(error) => Err(error.to_string()),
        },
    }
}

/// The first 10 KiB of a response body, as text.
async fn body_prefix(mut body: hyper::body::Incoming) -> String {
    use hyper::body::Body;
    let mut bytes = Vec::new();
    while bytes.len() < MAX_OUTPUT {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    bytes.truncate(MAX_OUTPUT);
    String::from_utf8_lossy(&bytes).into_owned()
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
pub(super) fn host_port(host: &str, port: u16) -> String {
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
        let server = serve(|_| response(399, "")).await;
        let outcome = http_probe(HttpScheme::Http, "127.0.0.1", server.port, "/", &[], SECOND);
        assert!(
            matches!(outcome.await, ProbeOutcome::Warning(_)),
            "a 3xx warns"
        );
        for (status, ok) in [(200, true), (204, true), (400, false), (500, false)] {
            let server = serve(move |_| response(status, "")).await;
            let outcome = http_probe(
                HttpScheme::Http,
                "127.0.0.1",
                server.port,
                "/healthz",
                &[],
                SECOND,
            )
            .await;
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
        http_probe(
            HttpScheme::Http,
            "127.0.0.1",
            server.port,
            "/ready?x=1",
            &headers,
            SECOND,
        )
        .await;
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
        http_probe(
            HttpScheme::Http,
            "127.0.0.1",
            server.port,
            "/",
            &headers,
            SECOND,
        )
        .await;
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
        let probe = |path: &'static str| {
            http_probe(
                HttpScheme::Http,
                "127.0.0.1",
                server.port,
                path,
                &[],
                SECOND,
            )
        };
        assert_eq!(
            probe("/old").await,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            probe("/away").await,
            ProbeOutcome::Warning("Probe terminated redirects, Response body: ".into())
        );
        let ProbeOutcome::Failure(message) = probe("/loop").await else {
            panic!("endless redirects must fail");
        };
        assert!(message.contains("stopped after 10 redirects"), "{message}");
    }

    #[tokio::test]
    async fn http_to_a_silent_server_fails_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Accepts (the kernel does) but never answers.
        let outcome = http_probe(
            HttpScheme::Http,
            "127.0.0.1",
            port,
            "/",
            &[],
            Duration::from_millis(200),
        )
        .await;
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
        let no_ip = run_probe(&grpc, SECOND, None, cri.clone(), "c1").await;
        assert!(no_ip.is_err_and(|e| e.contains("no IP")));
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let exec = ProbeAction::Exec {
            command: vec!["true".into()],
        };
        let no_runtime = run_probe(&exec, SECOND, ip, cri, "c1").await;
        assert!(no_runtime.is_err_and(|e| e.contains("ExecSync")));
    }
}
