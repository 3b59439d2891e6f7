//! The HTTP(S) GET of a lifecycle hook: the prober's client
//! ([`crate::pods::probes::check`]: a fresh connection, TLS without
//! verification for `https`, same-host redirects followed), but any answer is a success, as the kubelet's handler only
//! fails when the request itself does. No timeout of its own, as the
//! kubelet's: a preStop GET is bounded by the grace period.
use crate::pods::hooks::handler::HttpGet;
use crate::pods::probes::check::get_following_redirects;
use crate::pods::probes::redirect::Target;

/// GETs the hook's URL at `host` (the hook's own host, or the pod IP);
/// `Err` says why no answer came.
pub async fn get(hook: &HttpGet, host: &str) -> Result<(), String> {
    let start = Target {
        scheme: hook.scheme,
        port: hook.port,
        path: hook.path.clone(),
    };
    get_following_redirects(host, start, &hook.headers)
        .await
        .map(|_answer| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locked::Locked;
    use crate::pods::hooks::handler::HOOK_USER_AGENT;
    use crate::pods::probes::check::tests::serve;
    use crate::pods::probes::state::HttpScheme;

    fn hook(port: u16, path: &str) -> HttpGet {
        HttpGet {
            scheme: HttpScheme::Http,
            host: None,
            port,
            path: path.into(),
            headers: vec![("User-Agent".into(), HOOK_USER_AGENT.into())],
        }
    }

    #[tokio::test]
    async fn any_answer_is_a_success_and_the_request_names_the_lifecycle_agent() {
        let server =
            serve(|_| "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".into())
                .await;
        get(&hook(server.port, "/echo?msg=poststart"), "127.0.0.1")
            .await
            .expect("a 500 is an answer");
        let request = server.last_request.locked().clone();
        assert!(
            request.starts_with("GET /echo?msg=poststart HTTP/1.1"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("user-agent: kube-lifecycle/1.37"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn no_answer_is_a_failure() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let error = get(&hook(port, "/"), "127.0.0.1")
            .await
            .expect_err("refused");
        assert!(error.contains("dial tcp"), "{error}");
    }
}
