//! Ephemeral containers (`kubectl debug`), as the kubelet treats them: an
//! `EphemeralContainer` of the Pod's `spec.ephemeralContainers` is run as a
//! plain container (the kubelet's `v1.Container(ec.EphemeralContainerCommon)`)
//! in the pod's existing sandbox, once, never restarted, without probes,
//! lifecycle hooks, ports or resources (the API server refuses those fields
//! anyway). With `targetContainerName` it joins that container's process
//! namespace. Pure.
//!
//! ```text
//!   spec.ephemeralContainers --as_container--> plan (start once) --> worker
//!                            --specs---------> api_status (ephemeralContainerStatuses)
//! ```
use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

/// The ephemeral containers of the pod, in spec order.
fn ephemeral_containers(pod: &Pod) -> &[EphemeralContainer] {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
}

/// The ephemeral container as the container the runtime runs: its own
/// image, command, env, volume mounts, security context and terminal; what
/// an ephemeral container may not have is left out.
pub fn as_container(ec: &EphemeralContainer) -> Container {
    Container {
        name: ec.name.clone(),
        image: ec.image.clone(),
        image_pull_policy: ec.image_pull_policy.clone(),
        command: ec.command.clone(),
        args: ec.args.clone(),
        working_dir: ec.working_dir.clone(),
        env: ec.env.clone(),
        env_from: ec.env_from.clone(),
        volume_mounts: ec.volume_mounts.clone(),
        volume_devices: ec.volume_devices.clone(),
        security_context: ec.security_context.clone(),
        stdin: ec.stdin,
        stdin_once: ec.stdin_once,
        tty: ec.tty,
        termination_message_path: ec.termination_message_path.clone(),
        termination_message_policy: ec.termination_message_policy.clone(),
        ..Default::default()
    }
}

/// Every ephemeral container of the pod as a container, in spec order.
pub fn specs(pod: &Pod) -> Vec<Container> {
    ephemeral_containers(pod).iter().map(as_container).collect()
}

/// The ephemeral container `name` of the pod as a container, if there is one.
pub fn container(pod: &Pod, name: &str) -> Option<Container> {
    ephemeral_containers(pod)
        .iter()
        .find(|ec| ec.name == name)
        .map(as_container)
}

/// Whether `name` is one of the pod's ephemeral containers.
pub fn is_ephemeral(pod: &Pod, name: &str) -> bool {
    ephemeral_containers(pod).iter().any(|ec| ec.name == name)
}

/// The container whose process namespace the ephemeral container `name`
/// joins (`targetContainerName`), if it names one.
pub fn target_name<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    ephemeral_containers(pod)
        .iter()
        .find(|ec| ec.name == name)
        .and_then(|ec| ec.target_container_name.as_deref())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "containers": [{"name": "app", "image": "busybox"}],
                "ephemeralContainers": [
                    {"name": "debugger", "image": "busybox", "command": ["sh"],
                     "stdin": true, "tty": true, "targetContainerName": "app",
                     "env": [{"name": "A", "value": "1"}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "plain", "image": "agnhost", "targetContainerName": ""},
                ],
            },
        }))
        .unwrap()
    }

    #[test]
    fn an_ephemeral_container_runs_as_a_container_with_its_own_env_and_mounts() {
        let pod = pod();
        let c = container(&pod, "debugger").unwrap();
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.command, Some(vec!["sh".to_string()]));
        assert_eq!((c.stdin, c.tty), (Some(true), Some(true)));
        assert_eq!(c.env.as_ref().map(Vec::len), Some(1));
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/data");
        assert!(c.liveness_probe.is_none() && c.lifecycle.is_none() && c.ports.is_none());
        assert_eq!(
            specs(&pod)
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["debugger", "plain"]
        );
        assert!(container(&pod, "app").is_none());
        assert!(is_ephemeral(&pod, "plain") && !is_ephemeral(&pod, "app"));
    }

    #[test]
    fn only_a_named_target_shares_its_process_namespace() {
        let pod = pod();
        assert_eq!(target_name(&pod, "debugger"), Some("app"));
        assert_eq!(target_name(&pod, "plain"), None);
        assert_eq!(target_name(&pod, "missing"), None);
    }
}
