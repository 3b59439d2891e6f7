//! What CRI's answers mean for the NodeConfig: the runtime's health from the
//! conditions of `Status`, and its containers counted by state. Pure; the
//! runtime loop ([`super::run`]) asks.

use k8s_cri::v1::{ContainerState, RuntimeCondition};
use nodeconfig_crds::{ContainerCounts, ImageFsStatus};

use crate::images::image_fs::ImageFs;
use crate::reports::RuntimeHealth;

/// The status block of the image filesystem; none for one without capacity.
/// What the images take is left out: containerd counts the containers'
/// writable layers in it, so it would change the status at every poll.
pub fn image_fs_status(fs: &ImageFs) -> Option<ImageFsStatus> {
    let used_percent = fs.usage.used_percent()?;
    Some(ImageFsStatus {
        capacity_bytes: i64::try_from(fs.usage.capacity).unwrap_or(i64::MAX),
        used_percent: i32::from(used_percent),
    })
}

/// Health from the conditions of CRI `Status`. A runtime that omits a condition
/// is not ready in it, as the kubelet reads it.
pub fn health_from_conditions(conditions: &[RuntimeCondition]) -> RuntimeHealth {
    let find = |t: &str| conditions.iter().find(|c| c.r#type == t);
    match find("RuntimeReady") {
        Some(c) if c.status => {}
        Some(c) => {
            return RuntimeHealth::NotReady {
                reason: c.reason.clone(),
                message: c.message.clone(),
            }
        }
        None => {
            return RuntimeHealth::NotReady {
                reason: "RuntimeReadyMissing".into(),
                message: "the runtime reports no RuntimeReady condition".into(),
            }
        }
    }
    match find("NetworkReady") {
        Some(c) if c.status => RuntimeHealth::Ready,
        Some(c) => RuntimeHealth::NetworkNotReady {
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        None => RuntimeHealth::NetworkNotReady {
            reason: "NetworkReadyMissing".into(),
            message: "the runtime reports no NetworkReady condition".into(),
        },
    }
}

/// Counts containers by CRI state (`ContainerState` values).
pub fn count_containers(states: impl IntoIterator<Item = i32>) -> ContainerCounts {
    let mut counts = ContainerCounts::default();
    for state in states {
        match ContainerState::try_from(state) {
            Ok(ContainerState::ContainerCreated) => counts.created += 1,
            Ok(ContainerState::ContainerRunning) => counts.running += 1,
            Ok(ContainerState::ContainerExited) => counts.exited += 1,
            Ok(ContainerState::ContainerUnknown) | Err(_) => counts.unknown += 1,
        }
    }
    counts
}

pub(crate) fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: bool, reason: &str) -> RuntimeCondition {
        RuntimeCondition {
            r#type: type_.into(),
            status,
            reason: reason.into(),
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn runtime_and_network_ready_is_ready() {
        let conditions = [
            condition("RuntimeReady", true, ""),
            condition("NetworkReady", true, ""),
        ];
        assert_eq!(health_from_conditions(&conditions), RuntimeHealth::Ready);
    }

    #[test]
    fn runtime_not_ready_wins_over_network() {
        let conditions = [
            condition("RuntimeReady", false, "Broken"),
            condition("NetworkReady", false, "NoCni"),
        ];
        assert_eq!(
            health_from_conditions(&conditions),
            RuntimeHealth::NotReady {
                reason: "Broken".into(),
                message: "Broken message".into()
            }
        );
    }

    #[test]
    fn network_not_ready_is_reported_with_its_reason() {
        let conditions = [
            condition("RuntimeReady", true, ""),
            condition("NetworkReady", false, "NetworkPluginNotReady"),
        ];
        assert_eq!(
            health_from_conditions(&conditions),
            RuntimeHealth::NetworkNotReady {
                reason: "NetworkPluginNotReady".into(),
                message: "NetworkPluginNotReady message".into()
            }
        );
    }

    #[test]
    fn missing_conditions_are_not_ready() {
        assert!(matches!(
            health_from_conditions(&[]),
            RuntimeHealth::NotReady { .. }
        ));
        assert!(matches!(
            health_from_conditions(&[condition("RuntimeReady", true, "")]),
            RuntimeHealth::NetworkNotReady { .. }
        ));
    }

    #[test]
    fn containers_are_counted_by_state() {
        let counts = count_containers([0, 1, 1, 2, 3, 42]);
        assert_eq!(
            counts,
            ContainerCounts {
                created: 1,
                running: 2,
                exited: 1,
                unknown: 2
            }
        );
    }
}
