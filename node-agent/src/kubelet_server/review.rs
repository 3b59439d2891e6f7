//! The API server as the kubelet server's token authenticator (TokenReview) and
//! authorizer (SubjectAccessReview), with the kubelet's webhook cache lifetimes:
//! tokens 2 min, allowed decisions 5 min, denied 30 s.
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

use crate::locked::Locked;

use super::auth::{
    Authorizer, BoxFuture, NodeAttributes, ReviewError, TokenAuthenticator, UserInfo,
};

/// How long a token's user is remembered (the kubelet's `authentication.webhook.cacheTTL`).
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(120);
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
    cache: TtlCache<String, UserInfo>,
}

impl TokenReviewAuthenticator {
    pub fn new(client: kube::Client) -> Self {
        TokenReviewAuthenticator {
            api: Api::all(client),
            cache: TtlCache::new(),
        }
    }
}

impl TokenAuthenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, ReviewError>> {
        Box::pin(async move {
            if let Some(user) = self.cache.get(&token.to_string(), Instant::now()) {
                return Ok(Some(user));
            }
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
            let user = match (status.authenticated, status.user) {
                (Some(true), Some(user)) => UserInfo {
                    name: user.username.unwrap_or_default(),
                    uid: user.uid.unwrap_or_default(),
                    groups: user.groups.unwrap_or_default(),
                    extra: user.extra.unwrap_or_default().into_iter().collect(),
                },
                _ => return Ok(None),
            };
            self.cache.insert(
                token.to_string(),
                user.clone(),
                TOKEN_CACHE_TTL,
                Instant::now(),
            );
            Ok(Some(user))
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
    use super::*;

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
