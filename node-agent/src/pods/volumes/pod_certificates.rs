//! The shell of `podCertificate` projections: per pod, volume and source,
//! makes the PodCertificateRequests the kubelet's IssuingManager makes and
//! reads them back, stepping [`crate::pods::volumes::pod_certificate`]'s
//! state machine. Called from volume setup, so a running pod's credentials
//! are refreshed on the volume refresh after `beginRefreshAt`.
//!
//! What the node may do (Node authorizer, NodeRestriction): create a
//! request for a pod bound to it, naming its own Node and the pod's service
//! account with their UIDs (read here); get a request once the authorizer's
//! graph has it, so a forbidden read of a fresh request counts as "not there
//! yet".
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{PodCertificateRequest, PodCertificateRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

use crate::locked::Locked;
use crate::pods::volumes::plan::{service_account, PodCertificateSource};
use crate::pods::volumes::pod_certificate::{
    CredState, Credentials, Pending, Seen, Want, ASSUME_DELETED_AFTER, MAX_JITTER,
};
use crate::pods::volumes::pod_keys::generate_key_and_proof;

/// How long one volume setup waits for a request it made to be issued
/// before failing (and being retried by the pod's worker).
const WAIT_STEPS: u32 = 10;
const WAIT_STEP: Duration = Duration::from_millis(500);

/// One projection: the pod's UID, the volume and the source's index.
type ProjectionKey = (String, String, usize);

/// The pod certificates of the pods on this node.
pub struct PodCertificates {
    client: kube::Client,
    node_name: String,
    node_uid: Mutex<Option<String>>,
    states: Mutex<BTreeMap<ProjectionKey, CredState>>,
}

impl PodCertificates {
    pub fn new(client: kube::Client, node_name: String) -> Self {
        Self {
            client,
            node_name,
            node_uid: Mutex::new(None),
            states: Mutex::new(BTreeMap::new()),
        }
    }

    /// The credentials of one projection of the pod, requesting or
    /// refreshing them as due; an error until they are issued.
    pub async fn credentials(
        &self,
        pod: &Pod,
        uid: &str,
        source: &PodCertificateSource,
    ) -> Result<Credentials, String> {
        let key = (uid.to_string(), source.volume.clone(), source.index);
        for step in 0..=WAIT_STEPS {
            let now = SystemTime::now();
            let state = self.states.locked().get(&key).cloned();
            let next = match CredState::want(state.as_ref(), now) {
                Want::Nothing => break,
                Want::Request => match self.request(pod, uid, source).await {
                    Ok(pending) => Some(CredState::requested(state, pending)),
                    Err(e) if state.is_some() => {
                        tracing::warn!(error = %e, "pod certificate refresh request failed");
                        break;
                    }
                    Err(e) => return Err(e),
                },
                Want::Check(name) => {
                    let seen = self.read(pod, &name).await?;
                    state.and_then(|s| s.observe(seen, now, jitter(now)))
                }
            };
            let waiting = matches!(next, Some(CredState::Wait(_)));
            match next {
                Some(next) => self.states.locked().insert(key.clone(), next),
                None => self.states.locked().remove(&key),
            };
            if !waiting || step == WAIT_STEPS {
                break;
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
        CredState::credentials(self.states.locked().get(&key))
    }

    /// Forgets the pod's projections (its requests are owned by the pod and
    /// go with it).
    pub fn forget(&self, uid: &str) {
        self.states
            .locked()
            .retain(|(pod_uid, _, _), _| pod_uid != uid);
    }

    /// Generates a key and creates a PodCertificateRequest proving it.
    async fn request(
        &self,
        pod: &Pod,
        uid: &str,
        source: &PodCertificateSource,
    ) -> Result<Pending, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let sa_name = service_account(pod);
        let service_account = Api::<ServiceAccount>::namespaced(self.client.clone(), &namespace)
            .get(&sa_name)
            .await
            .map_err(|e| format!("while fetching service account: {e}"))?;
        let node_uid = self.node_uid().await?;
        let (key_pem, proof) = generate_key_and_proof(&source.key_type)?;
        let request = PodCertificateRequest {
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                generate_name: Some("req-".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: pod_name.clone(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: PodCertificateRequestSpec {
                signer_name: source.signer_name.clone(),
                pod_name,
                pod_uid: uid.to_string(),
                service_account_name: sa_name,
                service_account_uid: service_account.metadata.uid.unwrap_or_default(),
                node_name: self.node_name.clone(),
                node_uid,
                max_expiration_seconds: source.max_expiration_seconds,
                stub_pkc_s10_request: ByteString(proof),
                unverified_user_annotations: Some(source.user_annotations.clone())
                    .filter(|a| !a.is_empty()),
            },
            status: None,
        };
        let created = Api::<PodCertificateRequest>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| format!("while creating PodCertificateRequest: {e}"))?;
        let now = SystemTime::now();
        tracing::info!(
            request = created.metadata.name.as_deref().unwrap_or_default(),
            signer = %source.signer_name,
            "PodCertificateRequest created"
        );
        Ok(Pending {
            key_pem,
            name: created.metadata.name.unwrap_or_default(),
            abandon_at: now + ASSUME_DELETED_AFTER + jitter(now),
        })
    }

    /// The Node's UID, read once.
    async fn node_uid(&self) -> Result<String, String> {
        if let Some(uid) = self.node_uid.locked().clone() {
            return Ok(uid);
        }
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.node_name)
            .await
            .map_err(|e| format!("while getting the node object: {e}"))?;
        let uid = node.metadata.uid.unwrap_or_default();
        *self.node_uid.locked() = Some(uid.clone());
        Ok(uid)
    }

    /// What the request says now.
    async fn read(&self, pod: &Pod, name: &str) -> Result<Seen, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api = Api::<PodCertificateRequest>::namespaced(self.client.clone(), &namespace);
        let pcr = match api.get(name).await {
            Ok(pcr) => pcr,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 403 => {
                return Ok(Seen::Missing)
            }
            Err(e) => {
                return Err(format!(
                    "while getting PodCertificateRequest {namespace}/{name}: {e}"
                ))
            }
        };
        Ok(seen(&pcr))
    }
}

/// The request's terminal condition, if any.
fn seen(pcr: &PodCertificateRequest) -> Seen {
    let Some(status) = &pcr.status else {
        return Seen::Pending;
    };
    for condition in status.conditions.iter().flatten() {
        let reason = condition.reason.clone();
        let message = condition.message.clone();
        match condition.type_.as_str() {
            "Denied" => return Seen::Denied { reason, message },
            "Failed" => return Seen::Failed { reason, message },
            "Issued" => {
                let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                    t.as_ref().map(|t| SystemTime::from(t.0))
                };
                let now = SystemTime::now();
                return Seen::Issued {
                    chain: status.certificate_chain.clone().unwrap_or_default(),
                    begin_refresh_at: time(&status.begin_refresh_at).unwrap_or(now),
                    not_after: time(&status.not_after).unwrap_or(now),
                };
            }
            _ => {}
        }
    }
    Seen::Pending
}

/// Up to [`MAX_JITTER`], from the clock's nanoseconds (no need for a good
/// random number: it only spreads refreshes out).
fn jitter(now: SystemTime) -> Duration {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    MAX_JITTER.mul_f64(f64::from(nanos) / 1e9)
}
