//! Proxying an upgraded connection (SPDY or WebSocket) to the runtime's streaming
//! server, as the kubelet's `UpgradeAwareHandler` does for exec, attach and
//! port-forward.
//!
//! CRI `Exec` answers with a one-time URL on containerd's streaming server
//! (`http://127.0.0.1:<port>/exec/<token>`, in the node's network namespace, where
//! the agent runs too). The client's request goes there with the same method and
//! headers; when the server switches protocols, the client gets its 101 and the two
//! upgraded connections are joined byte for byte until either side closes.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Headers not passed upstream: the client's credentials for this server, and
/// framing that hyper sets itself.
const NOT_FORWARDED: [header::HeaderName; 4] = [
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Whether `headers` ask for a protocol upgrade (`Connection: Upgrade` and an `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// Sends `request` to `target` (an `http://host:port/path?query` URL from CRI) and,
/// on `101 Switching Protocols`, joins the client's upgraded connection to the
/// upstream's. Any other answer is passed back as it is.
pub async fn proxy_upgrade(mut request: Request, target: &str) -> Response {
    if !is_upgrade_request(request.headers()) {
        return (StatusCode::BAD_REQUEST, "Upgrade request required").into_response();
    }
    let target: Uri = match target.parse() {
        Ok(uri) => uri,
        Err(error) => {
            return bad_gateway(format!(
                "runtime returned an invalid streaming URL {target:?}: {error}"
            ))
        }
    };
    let (Some("http"), Some(authority)) = (target.scheme_str(), target.authority().cloned()) else {
        return bad_gateway(format!(
            "unsupported streaming URL {target} (only http://host:port)"
        ));
    };
    let path = target
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();

    let client_upgrade = hyper::upgrade::on(&mut request);
    let tcp = match TcpStream::connect(authority.as_str()).await {
        Ok(tcp) => tcp,
        Err(error) => {
            return bad_gateway(format!(
                "cannot reach the runtime's streaming server at {authority}: {error}"
            ))
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(error) => return bad_gateway(format!("streaming server at {authority}: {error}")),
        };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "streaming server connection ended");
        }
    });

    let mut upstream = match Request::builder()
        .method(request.method().clone())
        .uri(path)
        .body(Body::empty())
    {
        Ok(upstream) => upstream,
        Err(error) => {
            return bad_gateway(format!("cannot build the request to {authority}: {error}"))
        }
    };
    for (name, value) in request.headers() {
        if !NOT_FORWARDED.contains(name) {
            upstream.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        upstream.headers_mut().insert(header::HOST, host);
    }

    let mut response = match sender.send_request(upstream).await {
        Ok(response) => response,
        Err(error) => return bad_gateway(format!("streaming server at {authority}: {error}")),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response.map(Body::new);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((to_upstream, to_client)) => {
                tracing::debug!(to_upstream, to_client, "stream closed")
            }
            Err(error) => tracing::debug!(%error, "stream ended"),
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

fn bad_gateway(message: String) -> Response {
    tracing::warn!(%message, "streaming proxy failed");
    (StatusCode::BAD_GATEWAY, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_need_connection_upgrade_and_an_upgrade_header() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(!is_upgrade_request(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(is_upgrade_request(&h));
    }
}
