//! The API server as the kubelet server's token authenticator (TokenReview) and
//! authorizer (SubjectAccessReview), with the kubelet's webhook cache lifetimes:
//! tokens 2 min, valid or not (the kubelet's delegating authenticator caches both
//! with `authentication.webhook.cacheTTL`), allowed decisions 5 min, denied 30 s.
//! A review that fails (the API server did not answer) is not remembered. Tokens
//! are kept as SHA-256 digests, not in the clear.
//!
//! With the node's own credentials (`system:node:<name>`) both creates are allowed
//! by the Node authorizer: they are in the bootstrap policy's `NodeRules`. An agent
//! running as a ServiceAccount needs the `system:auth-delegator` ClusterRole.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;
use sha2::{Digest, Sha256};

use crate::locked::Locked;
use crate::serve::metrics::{KubeletServerMetrics, TokenReviewResult};

use super::auth::{
    Authorizer, BoxFuture, NodeAttributes, ReviewError, TokenAuthenticator, UserInfo,
};

/// How long a token's user is remembered (the kubelet's `authentication.webhook.cacheTTL`).
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(120);
/// How long a token the API server did not authenticate is remembered: the same
/// TTL, as the kubelet's token cache is built (`cache.New(auth, false, ttl, ttl)`),
/// so a client repeating a bad token costs one TokenReview per token and TTL.
pub const INVALID_TOKEN_CACHE_TTL: Duration = TOKEN_CACHE_TTL;
/// How long an allowed decision is remembered (`authorization.webhook.cacheAuthorizedTTL`).
pub const ALLOWED_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a denied decision is remembered (`authorization.webhook.cacheUnauthorizedTTL`).
pub const DENIED_CACHE_TTL: Duration = Duration::from_secs(30);

/// Bounds the caches: past this, expired entries are dropped, then everything.
const MAX_CACHE_ENTRIES: usize = 4096;

/// A map whose entries expire.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key` if it has not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.locked();
        entries
            .get(key)
            .filter(|(until, _)| *until > now)
            .map(|(_, v)| v.clone())
    }

    /// Entries held, expired or not.
    pub fn len(&self) -> usize {
        self.entries.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers `value` for `ttl` from `now`.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let mut entries = self.entries.locked();
        if entries.len() >= MAX_CACHE_ENTRIES {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

impl<K: Eq + Hash, V: Clone> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Bearer tokens checked with TokenReviews (audiences: the API server's default).
pub struct TokenReviewAuthenticator {
    api: Api<TokenReview>,
    /// Tokens by digest: their user, or `None` for a token that is not valid. Kept
    /// in two caches so that a flood of bad tokens cannot push out the good ones.
    valid: TtlCache<TokenDigest, UserInfo>,
    invalid: TtlCache<TokenDigest, ()>,
    metrics: KubeletServerMetrics,
}

/// A token's SHA-256 digest: what the caches keep instead of the token.
type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenReviewAuthenticator {
    pub fn new(client: kube::Client, metrics: KubeletServerMetrics) -> Self {
        TokenReviewAuthenticator {
            api: Api::all(client),
            valid: TtlCache::new(),
            invalid: TtlCache::new(),
            metrics,
        }
    }

    /// What the caches know of `token` at `now`: `Some(Some(user))`, `Some(None)`
    /// (known bad), or `None` (ask the API server).
    fn cached(&self, token: &TokenDigest, now: Instant) -> Option<Option<UserInfo>> {
        if let Some(user) = self.valid.get(token, now) {
            return Some(Some(user));
        }
        self.invalid.get(token, now).map(|()| None)
    }

    /// Remembers what a TokenReview said of `token`.
    fn remember(&self, token: TokenDigest, user: Option<&UserInfo>, now: Instant) {
        match user {
            Some(user) => self.valid.insert(token, user.clone(), TOKEN_CACHE_TTL, now),
            None => self.invalid.insert(token, (), INVALID_TOKEN_CACHE_TTL, now),
        }
    }

    async fn review(&self, token: &str) -> Result<Option<UserInfo>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError(format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        Ok(match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Some(UserInfo {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default().into_iter().collect(),
            }),
            _ => None,
        })
    }
}

impl TokenAuthenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, ReviewError>> {
        Box::pin(async move {
            let key = digest(token);
            if let Some(known) = self.cached(&key, Instant::now()) {
                return Ok(known);
            }
            let reviewed = self.review(token).await;
            self.metrics.token_review(match &reviewed {
                Ok(Some(_)) => TokenReviewResult::Authenticated,
                Ok(None) => TokenReviewResult::Unauthenticated,
                Err(_) => TokenReviewResult::Error,
            });
            if let Ok(user) = &reviewed {
                self.remember(key, user.as_ref(), Instant::now());
            }
            reviewed
        })
    }
}

/// Decisions asked of the API server with SubjectAccessReviews.
pub struct SubjectAccessReviewAuthorizer {
    api: Api<SubjectAccessReview>,
    cache: TtlCache<(UserInfo, NodeAttributes), bool>,
}

impl SubjectAccessReviewAuthorizer {
    pub fn new(client: kube::Client) -> Self {
        SubjectAccessReviewAuthorizer {
            api: Api::all(client),
            cache: TtlCache::new(),
        }
    }
}

/// The review the kubelet's webhook authorizer sends for `attributes`.
pub fn access_review(user: &UserInfo, attributes: &NodeAttributes) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
            groups: Some(user.groups.clone()),
            extra: Some(user.extra.iter().cloned().collect::<BTreeMap<_, _>>())
                .filter(|e| !e.is_empty()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(attributes.verb.to_string()),
                group: Some(String::new()),
                version: Some("v1".into()),
                resource: Some("nodes".into()),
                subresource: Some(attributes.subresource.to_string()),
                name: Some(attributes.node_name.clone()),
                namespace: Some(String::new()),
                ..Default::default()
            }),
            non_resource_attributes: None,
        },
        ..Default::default()
    }
}

impl Authorizer for SubjectAccessReviewAuthorizer {
    fn allowed<'a>(
        &'a self,
        user: &'a UserInfo,
        attributes: &'a NodeAttributes,
    ) -> BoxFuture<'a, Result<bool, ReviewError>> {
        Box::pin(async move {
            // The path does not change the decision; leave it out of the key.
            let key = (
                user.clone(),
                NodeAttributes {
                    path: String::new(),
                    ..attributes.clone()
                },
            );
            if let Some(allowed) = self.cache.get(&key, Instant::now()) {
                return Ok(allowed);
            }
            let reviewed = self
                .api
                .create(&PostParams::default(), &access_review(user, attributes))
                .await
                .map_err(|e| ReviewError(format!("SubjectAccessReview failed: {e}")))?;
            let allowed = reviewed.status.is_some_and(|s| s.allowed);
            let ttl = if allowed {
                ALLOWED_CACHE_TTL
            } else {
                DENIED_CACHE_TTL
            };
            self.cache.insert(key, allowed, ttl, Instant::now());
            Ok(allowed)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use hyper::{Request, Response};
    use kube::client::Body;

    use super::*;
    use crate::serve::metrics::Metrics;

    /// An API server that answers TokenReviews, knowing one token, and counts them.
    fn token_reviewer(reviews: Arc<AtomicUsize>) -> kube::Client {
        let service = tower::service_fn(move |request: Request<Body>| {
            let reviews = reviews.clone();
            async move {
                reviews.fetch_add(1, Ordering::SeqCst);
                let body = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let status = if review["spec"]["token"] == "good" {
                    serde_json::json!({"authenticated": true, "user": {"username": "jane"}})
                } else {
                    serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
                };
                let answer = serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "metadata": {}, "spec": review["spec"], "status": status,
                });
                let mut response = Response::new(Body::from(answer.to_string().into_bytes()));
                *response.status_mut() = hyper::StatusCode::CREATED;
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn a_repeated_token_costs_one_review_valid_or_not() {
        let reviews = Arc::new(AtomicUsize::new(0));
        let metrics = Metrics::new();
        let tokens = TokenReviewAuthenticator::new(
            token_reviewer(reviews.clone()),
            metrics.kubelet_server.clone(),
        );
        for _ in 0..20 {
            assert_eq!(tokens.authenticate("bad").await.unwrap(), None);
        }
        assert_eq!(reviews.load(Ordering::SeqCst), 1);
        for _ in 0..5 {
            let user = tokens.authenticate("good").await.unwrap().unwrap();
            assert_eq!(user.name, "jane");
        }
        assert_eq!(reviews.load(Ordering::SeqCst), 2);
        assert_eq!(tokens.authenticate("worse").await.unwrap(), None);
        assert_eq!(reviews.load(Ordering::SeqCst), 3);
        let text = metrics.encode();
        assert!(
            text.contains("kubelet_server_token_reviews_total{result=\"unauthenticated\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_bad_token_is_asked_again_after_its_ttl() {
        let reviews = Arc::new(AtomicUsize::new(0));
        let tokens =
            TokenReviewAuthenticator::new(token_reviewer(reviews), Metrics::new().kubelet_server);
        let t0 = Instant::now();
        let (bad, good) = (digest("bad"), digest("good"));
        let user = UserInfo {
            name: "jane".into(),
            ..Default::default()
        };
        tokens.remember(bad, None, t0);
        tokens.remember(good, Some(&user), t0);
        let later = |s| t0 + Duration::from_secs(s);
        assert_eq!(tokens.cached(&bad, later(119)), Some(None));
        assert_eq!(tokens.cached(&bad, later(120)), None);
        assert_eq!(tokens.cached(&good, later(119)), Some(Some(user)));
        assert_eq!(tokens.cached(&good, later(120)), None);
    }

    #[tokio::test]
    async fn a_flood_of_bad_tokens_keeps_the_cache_bounded_and_the_good_ones() {
        let reviews = Arc::new(AtomicUsize::new(0));
        let tokens =
            TokenReviewAuthenticator::new(token_reviewer(reviews), Metrics::new().kubelet_server);
        let t0 = Instant::now();
        let user = UserInfo::default();
        tokens.remember(digest("good"), Some(&user), t0);
        for i in 0..3 * MAX_CACHE_ENTRIES {
            tokens.remember(digest(&format!("bad-{i}")), None, t0);
        }
        assert!(tokens.invalid.len() <= MAX_CACHE_ENTRIES);
        assert_eq!(tokens.cached(&digest("good"), t0), Some(Some(user)));
    }

    #[test]
    fn cache_entries_expire() {
        let cache = TtlCache::new();
        let t0 = Instant::now();
        cache.insert("a", true, DENIED_CACHE_TTL, t0);
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(29)), Some(true));
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(30)), None);
    }

    #[test]
    fn access_review_names_the_node_subresource() {
        let user = UserInfo {
            name: "kube-apiserver-kubelet-client".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        };
        let attrs = NodeAttributes {
            verb: "create",
            subresource: "proxy",
            node_name: "node-1".into(),
            path: "/exec/default/web/app".into(),
        };
        let review = access_review(&user, &attrs);
        let json = serde_json::to_value(&review.spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "user": "kube-apiserver-kubelet-client",
                "groups": ["system:masters"],
                "resourceAttributes": {
                    "verb": "create", "group": "", "version": "v1", "resource": "nodes",
                    "subresource": "proxy", "name": "node-1", "namespace": ""
                }
            })
        );
    }
}
