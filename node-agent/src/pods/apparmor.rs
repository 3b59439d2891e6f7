//! AppArmor admission as the kubelet's `appArmorAdmitHandler` does it: a new
//! (Pending) pod that asks for an AppArmor profile other than `Unconfined`,
//! by field (pod or container `securityContext.appArmorProfile`) or by the
//! deprecated `container.apparmor.security.beta.kubernetes.io/` annotations,
//! is rejected with reason `AppArmor` on a host whose kernel does not enable
//! AppArmor: nothing would enforce the profile.
use k8s_openapi::api::core::v1::{AppArmorProfile, Pod};

use crate::pods::admit::Admission;

/// Reason of a rejection for an AppArmor profile the node cannot enforce.
pub const REASON_APPARMOR: &str = "AppArmor";

/// Prefix of the deprecated per-container annotations.
const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Admits `pod` when it needs no AppArmor or the host enforces it.
pub fn admit_apparmor(pod: &Pod, host_enabled: bool) -> Admission {
    let pending = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|phase| phase == "Pending");
    if host_enabled || !pending || !requires_apparmor(pod) {
        return Admission::Admit;
    }
    Admission::Reject {
        reason: REASON_APPARMOR,
        message: "Cannot enforce AppArmor: AppArmor is not enabled on the host".into(),
    }
}

/// The kubelet's `isRequired`.
fn requires_apparmor(pod: &Pod) -> bool {
    let confined = |p: Option<&AppArmorProfile>| p.is_some_and(|p| p.type_ != "Unconfined");
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if confined(
        spec.security_context
            .as_ref()
            .and_then(|sc| sc.app_armor_profile.as_ref()),
    ) {
        return true;
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.security_context.as_ref());
    if containers
        .map(|c| c.security_context.as_ref())
        .chain(ephemeral)
        .any(|sc| confined(sc.and_then(|sc| sc.app_armor_profile.as_ref())))
    {
        return true;
    }
    // As the kubelet: the first annotation of the prefix decides.
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .find(|(key, _)| key.starts_with(ANNOTATION_PREFIX))
        .is_some_and(|(_, value)| value != "unconfined")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(annotations: serde_json::Value, spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "annotations": annotations},
            "spec": spec, "status": {"phase": "Pending"}}),
        )
        .unwrap()
    }

    fn container(sc: serde_json::Value) -> serde_json::Value {
        json!({"containers": [{"name": "c", "image": "i", "securityContext": sc}]})
    }

    #[test]
    fn a_confining_profile_is_refused_on_a_host_without_apparmor() {
        let cases = [
            ("no profile", pod(json!({}), container(json!({}))), true),
            (
                "pod RuntimeDefault",
                pod(
                    json!({}),
                    json!({"containers": [], "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}),
                ),
                false,
            ),
            (
                "container Localhost",
                pod(
                    json!({}),
                    container(
                        json!({"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-x"}}),
                    ),
                ),
                false,
            ),
            (
                "container Unconfined",
                pod(
                    json!({}),
                    container(json!({"appArmorProfile": {"type": "Unconfined"}})),
                ),
                true,
            ),
            (
                "annotation runtime/default",
                pod(
                    json!({"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}),
                    container(json!({})),
                ),
                false,
            ),
            (
                "annotation unconfined",
                pod(
                    json!({"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}),
                    container(json!({})),
                ),
                true,
            ),
        ];
        for (name, p, admitted) in cases {
            let got = admit_apparmor(&p, false);
            assert_eq!(got == Admission::Admit, admitted, "{name}: {got:?}");
            assert_eq!(
                admit_apparmor(&p, true),
                Admission::Admit,
                "{name} with AppArmor"
            );
        }
        let refused = admit_apparmor(
            &pod(
                json!({}),
                container(json!({"appArmorProfile": {"type": "RuntimeDefault"}})),
            ),
            false,
        );
        assert_eq!(
            refused,
            Admission::Reject {
                reason: "AppArmor",
                message: "Cannot enforce AppArmor: AppArmor is not enabled on the host".into()
            }
        );
    }

    #[test]
    fn a_running_pod_is_not_checked_again() {
        let mut p = pod(
            json!({}),
            container(json!({"appArmorProfile": {"type": "RuntimeDefault"}})),
        );
        p.status.as_mut().unwrap().phase = Some("Running".into());
        assert_eq!(admit_apparmor(&p, false), Admission::Admit);
    }
}
