//! Where an HTTP probe's redirect leads, as the kubelet's prober decides
//! (`pkg/probe/http`'s `RedirectChecker` on Go's client): a redirect is
//! followed only to the host the probe started on (its port and scheme may
//! change, so `http` may lead to `https` and back); anywhere else the probe
//! stops and the 3xx it got is the answer, which the kubelet counts as a
//! success with a warning. Pure.
use crate::pods::probes::state::HttpScheme;

/// One request of a probe on its (fixed) host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: HttpScheme,
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
}

/// The statuses Go's client follows (with a `Location`); any other 3xx is
/// the final answer.
pub fn is_followed(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Resolves `location` (a redirect from `from`, on `host`) to the next
/// request, or `None` when the probe stops here: another host, an empty or
/// unreadable location, or a scheme other than http and https.
pub fn next_target(host: &str, from: &Target, location: &str) -> Option<Target> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    if let Some(rest) = location.strip_prefix("//") {
        // Scheme-relative: another authority on the same scheme.
        return absolute(host, &format!("{}://{rest}", from.scheme.as_str()));
    }
    if location.starts_with('/') {
        return Some(Target {
            path: location.to_string(),
            ..from.clone()
        });
    }
    if location.contains("://") {
        return absolute(host, location);
    }
    // Relative to the current path's directory (the query is not part of it).
    let current = from.path.split('?').next().unwrap_or_default();
    let directory = &current[..current.rfind('/').map_or(0, |i| i + 1)];
    Some(Target {
        path: format!("{directory}{location}"),
        ..from.clone()
    })
}

/// An absolute URL: followed when its host is the probe's host.
fn absolute(host: &str, location: &str) -> Option<Target> {
    let uri = location.parse::<hyper::Uri>().ok()?;
    let scheme = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
        "http" => HttpScheme::Http,
        "https" => HttpScheme::Https,
        _ => return None,
    };
    let next = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    if !next.eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']')) {
        return None;
    }
    Some(Target {
        scheme,
        port: uri.port_u16().unwrap_or(scheme.default_port()),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpScheme::{Http, Https};

    fn target(scheme: HttpScheme, port: u16, path: &str) -> Option<Target> {
        Some(Target {
            scheme,
            port,
            path: path.to_string(),
        })
    }

    #[test]
    fn redirects_on_the_same_host_are_followed_across_ports_and_schemes() {
        let from = Target {
            scheme: Http,
            port: 8080,
            path: "/a/b?q=/x".to_string(),
        };
        let cases = [
            ("/c", target(Http, 8080, "/c")),
            ("c?d=1", target(Http, 8080, "/a/c?d=1")),
            ("http://10.0.0.1:9090/x", target(Http, 9090, "/x")),
            ("http://10.0.0.1", target(Http, 80, "/")),
            ("https://10.0.0.1/secure", target(Https, 443, "/secure")),
            ("HTTPS://10.0.0.1:8443", target(Https, 8443, "/")),
            ("//10.0.0.1:81/y", target(Http, 81, "/y")),
        ];
        for (location, expected) in cases {
            assert_eq!(
                next_target("10.0.0.1", &from, location),
                expected,
                "{location}"
            );
        }
        let secure = Target {
            scheme: Https,
            port: 8443,
            path: "/".to_string(),
        };
        assert_eq!(
            next_target("10.0.0.1", &secure, "http://10.0.0.1/plain"),
            target(Http, 80, "/plain")
        );
        assert_eq!(
            next_target("10.0.0.1", &secure, "/next"),
            target(Https, 8443, "/next")
        );
    }

    #[test]
    fn redirects_elsewhere_stop_the_probe() {
        let from = Target {
            scheme: Https,
            port: 8443,
            path: "/".to_string(),
        };
        for location in [
            "",
            "http://10.0.0.2/",
            "https://elsewhere.example/",
            "//evil/",
            "ftp://10.0.0.1/",
            "http://[::1]/",
        ] {
            assert_eq!(
                next_target("10.0.0.1", &from, location),
                None,
                "{location:?}"
            );
        }
        assert_eq!(
            next_target("fd00::1", &from, "https://[fd00::1]:9443/v6"),
            target(Https, 9443, "/v6")
        );
    }

    #[test]
    fn only_the_redirect_statuses_go_s_client_follows() {
        let followed: Vec<u16> = (300..400).filter(|s| is_followed(*s)).collect();
        assert_eq!(followed, [301, 302, 303, 307, 308]);
    }
}
