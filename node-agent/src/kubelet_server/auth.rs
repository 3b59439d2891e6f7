//! Who is asking and whether they may: the kubelet's authentication and
//! authorization filter, in front of every route.
//!
//! Authentication: a verified client certificate (user = CN, groups = O, as the API
//! server's x509 authenticator reads it), else an `Authorization: Bearer` token
//! checked with a TokenReview. Nothing of either: 401 `Unauthorized`. An
//! authenticated request keeps its connection's place ([`super::connections`]).
//!
//! Authorization: the request becomes attributes on the node object, as the kubelet
//! maps them (`pkg/kubelet/server/auth.go`): resource `nodes`, name = this node,
//! verb from the HTTP method, subresource from the path (`/containerLogs` and
//! `/exec` → `proxy`; `/healthz` → `healthz` then `proxy`, …). Any allowed attribute
//! lets the request through; else 403 with the kubelet's message.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::connections::ConnectionTicket;

/// An authenticated user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra attributes (from a TokenReview), passed on to SubjectAccessReviews.
    pub extra: Vec<(String, Vec<String>)>,
}

/// The identity of the connection's verified client certificate, put on every
/// request of the connection by the server.
#[derive(Clone, Debug, Default)]
pub struct ClientCertIdentity(pub Option<UserInfo>);

/// What a request asks to do to the node object (the kubelet's authorizer attributes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAttributes {
    pub verb: &'static str,
    pub subresource: &'static str,
    pub node_name: String,
    pub path: String,
}

/// The attributes the kubelet checks for `method` and `path`, in order; any one
/// allowed lets the request through.
pub fn node_attributes(method: &Method, path: &str, node_name: &str) -> Vec<NodeAttributes> {
    let verb = match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    // Fine-grained subresources first (KubeletFineGrainedAuthz, GA and locked on).
    let mut subresources = Vec::new();
    if is_subpath(path, "/pods") || is_subpath(path, "/runningpods") {
        subresources.push("pods");
    } else if is_subpath(path, "/healthz") {
        subresources.push("healthz");
    } else if is_subpath(path, "/configz") {
        subresources.push("configz");
    }
    subresources.push(if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs") {
        "log"
    } else if is_subpath(path, "/checkpoint") {
        "checkpoint"
    } else if is_subpath(path, "/statusz") {
        "statusz"
    } else if is_subpath(path, "/flagz") {
        "configz"
    } else {
        "proxy"
    });
    subresources
        .into_iter()
        .map(|subresource| NodeAttributes {
            verb,
            subresource,
            node_name: node_name.to_string(),
            path: path.to_string(),
        })
        .collect()
}

/// `path` is `prefix` or below it.
fn is_subpath(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The kubelet's 403 body.
pub fn forbidden_message(user: &UserInfo, attributes: &[NodeAttributes]) -> String {
    let (verb, subresources) = match attributes.first() {
        Some(first) => (
            first.verb,
            attributes.iter().map(|a| a.subresource).collect::<Vec<_>>(),
        ),
        None => ("", Vec::new()),
    };
    format!(
        "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
        user.name,
        subresources.join(" ")
    )
}

/// The user a client certificate names: CN, and each O as a group.
pub fn identity_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo {
        name,
        groups,
        ..Default::default()
    })
}

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error reaching the API server for a review.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// Checks bearer tokens (the real one sends a TokenReview).
pub trait TokenAuthenticator: Send + Sync {
    /// The token's user, `None` when the token is not valid.
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, ReviewError>>;
}

/// Decides whether a user may do what the attributes say (the real one sends a
/// SubjectAccessReview).
pub trait Authorizer: Send + Sync {
    fn allowed<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a NodeAttributes,
    ) -> BoxFuture<'a, Result<bool, ReviewError>>;
}

/// The filter's configuration: this node's name, and who checks tokens and decisions.
#[derive(Clone)]
pub struct Auth {
    pub node_name: String,
    /// `None`: bearer tokens are not accepted (client certificates only).
    pub tokens: Option<Arc<dyn TokenAuthenticator>>,
    pub authorizer: Arc<dyn Authorizer>,
}

impl Auth {
    /// The user of a request: its client certificate's, else its bearer token's.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<UserInfo>,
    ) -> Result<Option<UserInfo>, ReviewError> {
        if cert.is_some() {
            return Ok(cert);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match (token, &self.tokens) {
            (Some(token), Some(tokens)) => tokens.authenticate(token).await,
            _ => Ok(None),
        }
    }
}

/// The axum middleware: 401 without a user, 403 when no attribute is allowed.
pub async fn filter(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let cert = request
        .extensions()
        .get::<ClientCertIdentity>()
        .and_then(|identity| identity.0.clone());
    let user = match auth.authenticate(request.headers(), cert).await {
        Ok(Some(user)) => {
            if let Some(ticket) = request.extensions().get::<ConnectionTicket>() {
                ticket.authenticated();
            }
            user
        }
        Ok(None) => return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot authenticate a request");
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
    };
    let attributes = node_attributes(request.method(), request.uri().path(), &auth.node_name);
    for attribute in &attributes {
        match auth.authorizer.allowed(&user, attribute).await {
            Ok(true) => return next.run(request).await,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, user = %user.name, verb = attribute.verb, subresource = attribute.subresource, "authorization error");
                let message = format!(
                    "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                    user.name, attribute.verb, attribute.subresource
                );
                return (StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
            }
        }
    }
    tracing::debug!(user = %user.name, path = %request.uri().path(), "forbidden");
    (StatusCode::FORBIDDEN, forbidden_message(&user, &attributes)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subresources(method: Method, path: &str) -> (Vec<&'static str>, &'static str) {
        let attrs = node_attributes(&method, path, "node-1");
        assert!(attrs.iter().all(|a| a.node_name == "node-1"));
        (attrs.iter().map(|a| a.subresource).collect(), attrs[0].verb)
    }

    #[test]
    fn paths_map_to_node_subresources_like_the_kubelet() {
        assert_eq!(
            subresources(Method::GET, "/containerLogs/ns/p/c"),
            (vec!["proxy"], "get")
        );
        assert_eq!(
            subresources(Method::POST, "/exec/ns/p/c"),
            (vec!["proxy"], "create")
        );
        assert_eq!(
            subresources(Method::GET, "/exec/ns/p/c"),
            (vec!["proxy"], "get")
        );
        assert_eq!(
            subresources(Method::GET, "/healthz"),
            (vec!["healthz", "proxy"], "get")
        );
        assert_eq!(
            subresources(Method::GET, "/pods"),
            (vec!["pods", "proxy"], "get")
        );
        assert_eq!(
            subresources(Method::GET, "/stats/summary"),
            (vec!["stats"], "get")
        );
        assert_eq!(
            subresources(Method::GET, "/metrics/cadvisor"),
            (vec!["metrics"], "get")
        );
        assert_eq!(
            subresources(Method::GET, "/metrics/resource"),
            (vec!["metrics"], "get")
        );
        assert_eq!(
            subresources(Method::GET, "/logs/syslog"),
            (vec!["log"], "get")
        );
        // A prefix only counts at a path boundary.
        assert_eq!(
            subresources(Method::GET, "/healthzz"),
            (vec!["proxy"], "get")
        );
        assert_eq!(
            subresources(Method::DELETE, "/statsx"),
            (vec!["proxy"], "delete")
        );
    }

    #[test]
    fn forbidden_message_is_the_kubelets() {
        let user = UserInfo {
            name: "jane".into(),
            ..Default::default()
        };
        let attrs = node_attributes(&Method::GET, "/healthz", "n");
        assert_eq!(
            forbidden_message(&user, &attrs),
            "Forbidden (user=jane, verb=get, resource=nodes, subresource(s)=[healthz proxy])\n"
        );
    }

    #[test]
    fn certificate_identity_is_cn_and_organizations() {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = identity_from_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, vec!["system:masters".to_string()]);

        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let nameless = params.self_signed(&key).unwrap();
        assert_eq!(identity_from_certificate(nameless.der()), None);
    }
}
