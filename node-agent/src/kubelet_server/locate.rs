//! Finding a pod's container through CRI alone, by the labels the pod loop puts
//! on what it creates (no API call: the pod on this node is what CRI holds).

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use crate::edge::cri::{CriClient, CriError};
use crate::pods::runtime_view::{
    LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

/// Which pod and container a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    /// Given in `/exec/{ns}/{pod}/{uid}/{container}`: only that instance of the pod.
    pub pod_uid: Option<String>,
    pub container: String,
}

/// Which instance of the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    /// The newest one.
    Current,
    /// The one before the newest (`kubectl logs --previous`).
    Previous,
}

/// The container found, with what logs and exec need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedContainer {
    pub id: String,
    /// Absolute path of its CRI log file; empty when the runtime keeps none.
    pub log_path: String,
    pub running: bool,
}

/// Why no container was found; the messages are the kubelet's.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("pod {pod:?} does not exist")]
    PodNotFound { pod: String },
    #[error("container {container:?} not found in pod {pod:?}")]
    ContainerNotFound { container: String, pod: String },
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    PreviousNotFound { container: String, pod: String },
    #[error(transparent)]
    Cri(#[from] CriError),
}

/// The labels that select this pod's sandboxes (`container: false`) or this container's instances.
pub fn label_selector(target: &ContainerRef, container: bool) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_POD_NAMESPACE.to_string(), target.namespace.clone()),
        (LABEL_POD_NAME.to_string(), target.pod.clone()),
    ]);
    if let Some(uid) = &target.pod_uid {
        labels.insert(LABEL_POD_UID.to_string(), uid.clone());
    }
    if container {
        labels.insert(LABEL_CONTAINER_NAME.to_string(), target.container.clone());
    }
    labels
}

/// Picks the instance among the container's instances (any order): newest by
/// creation time, or the one before it.
pub fn pick_instance<'a>(
    target: &ContainerRef,
    instances: &'a [cri::Container],
    instance: Instance,
) -> Result<&'a cri::Container, LocateError> {
    let mut newest_first: Vec<&cri::Container> = instances.iter().collect();
    newest_first.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let index = match instance {
        Instance::Current => 0,
        Instance::Previous => 1,
    };
    newest_first
        .get(index)
        .copied()
        .ok_or_else(|| match instance {
            Instance::Current => LocateError::ContainerNotFound {
                container: target.container.clone(),
                pod: target.pod.clone(),
            },
            Instance::Previous => LocateError::PreviousNotFound {
                container: target.container.clone(),
                pod: target.pod.clone(),
            },
        })
}

/// Finds the container through CRI: `ListContainers` by label, then
/// `ContainerStatus` of the chosen instance for its log path and state.
pub async fn locate(
    cri: &mut CriClient,
    target: &ContainerRef,
    instance: Instance,
) -> Result<LocatedContainer, LocateError> {
    let containers = list_containers(cri, target).await?;
    if containers.is_empty() && pod_sandbox_id(cri, target).await?.is_none() {
        return Err(LocateError::PodNotFound {
            pod: target.pod.clone(),
        });
    }
    let chosen = pick_instance(target, &containers, instance)?;
    let request = cri::ContainerStatusRequest {
        container_id: chosen.id.clone(),
        verbose: false,
    };
    let status = cri
        .runtime
        .container_status(request)
        .await
        .map_err(|s| cri.call_error("ContainerStatus", s))?
        .into_inner()
        .status
        .unwrap_or_default();
    Ok(LocatedContainer {
        id: chosen.id.clone(),
        log_path: status.log_path,
        running: status.state == cri::ContainerState::ContainerRunning as i32,
    })
}

/// Whether the container still runs (`ContainerStatus`); false once it is gone.
pub async fn is_running(cri: &mut CriClient, container_id: &str) -> bool {
    let request = cri::ContainerStatusRequest {
        container_id: container_id.to_string(),
        verbose: false,
    };
    match cri.runtime.container_status(request).await {
        Ok(response) => response
            .into_inner()
            .status
            .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32),
        Err(_) => false,
    }
}

/// The newest sandbox of the pod, if it has one on this node (for port-forward).
pub async fn pod_sandbox_id(
    cri: &mut CriClient,
    target: &ContainerRef,
) -> Result<Option<String>, CriError> {
    let request = cri::ListPodSandboxRequest {
        filter: Some(cri::PodSandboxFilter {
            label_selector: label_selector(target, false),
            ..Default::default()
        }),
    };
    let sandboxes = cri
        .runtime
        .list_pod_sandbox(request)
        .await
        .map_err(|s| cri.call_error("ListPodSandbox", s))?
        .into_inner()
        .items;
    Ok(sandboxes
        .into_iter()
        .max_by_key(|s| s.created_at)
        .map(|s| s.id))
}

async fn list_containers(
    cri: &mut CriClient,
    target: &ContainerRef,
) -> Result<Vec<cri::Container>, CriError> {
    let request = cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            label_selector: label_selector(target, true),
            ..Default::default()
        }),
    };
    Ok(cri
        .runtime
        .list_containers(request)
        .await
        .map_err(|s| cri.call_error("ListContainers", s))?
        .into_inner()
        .containers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ContainerRef {
        ContainerRef {
            namespace: "default".into(),
            pod: "web".into(),
            pod_uid: None,
            container: "app".into(),
        }
    }

    fn container(id: &str, created_at: i64) -> cri::Container {
        cri::Container {
            id: id.into(),
            created_at,
            ..Default::default()
        }
    }

    #[test]
    fn current_is_the_newest_and_previous_the_one_before() {
        let instances = [
            container("old", 1),
            container("newest", 3),
            container("middle", 2),
        ];
        let current = pick_instance(&target(), &instances, Instance::Current).unwrap();
        assert_eq!(current.id, "newest");
        let previous = pick_instance(&target(), &instances, Instance::Previous).unwrap();
        assert_eq!(previous.id, "middle");
    }

    #[test]
    fn missing_instances_use_the_kubelets_words() {
        let one = [container("only", 1)];
        let err = pick_instance(&target(), &one, Instance::Previous).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"previous terminated container "app" in pod "web" not found"#
        );
        let err = pick_instance(&target(), &[], Instance::Current).unwrap_err();
        assert_eq!(err.to_string(), r#"container "app" not found in pod "web""#);
    }

    #[test]
    fn selector_names_pod_container_and_uid_when_given() {
        let mut t = target();
        assert_eq!(label_selector(&t, false).len(), 2);
        t.pod_uid = Some("u-1".into());
        let labels = label_selector(&t, true);
        assert_eq!(labels.get(LABEL_POD_UID).map(String::as_str), Some("u-1"));
        assert_eq!(
            labels.get(LABEL_CONTAINER_NAME).map(String::as_str),
            Some("app")
        );
        assert_eq!(
            labels.get(LABEL_POD_NAMESPACE).map(String::as_str),
            Some("default")
        );
    }
}
