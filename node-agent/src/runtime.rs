//! The runtime loop: asks the container runtime through CRI how it is
//! (`Version`, `Status`) and what it holds (sandboxes, containers, images)
//! every [`POLL_INTERVAL`], and publishes a [`RuntimeReport`] when that changed.
//!
//! The CRI connection it polls is the one the config loop hands it (see
//! [`crate::cri_handle`]); a switch of endpoint triggers a poll at once.

use std::time::Duration;

use k8s_cri::v1::{
    ContainerState, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    RuntimeCondition, StatusRequest,
};
use nodeconfig_crds::{ContainerCounts, RuntimeStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cri::{CriClient, CriError};
use crate::cri_handle::CriHandle;
use crate::health::LoopHeartbeat;
use crate::metrics::Metrics;

/// How often the runtime is asked, as the kubelet's PLEG relists (1s there; status every 10s).
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Longest wait for one CRI call before the runtime counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the runtime loop last learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeReport {
    /// The CRI endpoint asked.
    pub endpoint: String,
    /// Runtime name and version from CRI `Version`, once it answered.
    pub version: Option<RuntimeVersion>,
    pub health: RuntimeHealth,
    /// Last successful inventory; kept while the runtime is unreachable.
    pub inventory: Option<RuntimeInventory>,
}

/// CRI `Version`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// `containerd`.
    pub name: String,
    /// `1.6.20~ds1`.
    pub version: String,
}

impl RuntimeVersion {
    /// `containerd 1.6.20`, as the NodeConfig status shows it.
    pub fn display(&self) -> String {
        format!("{} {}", self.name, self.version)
    }

    /// `containerd://1.6.20`, as a Node's `nodeInfo.containerRuntimeVersion` spells it.
    pub fn node_info(&self) -> String {
        format!("{}://{}", self.name, self.version)
    }
}

/// Health of the runtime as CRI `Status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RuntimeHealth {
    /// Not asked yet.
    #[default]
    NotChecked,
    /// `RuntimeReady` and `NetworkReady` are both true.
    Ready,
    /// A CRI call failed or timed out.
    Unreachable { message: String },
    /// The runtime answers but says `RuntimeReady=false`.
    NotReady { reason: String, message: String },
    /// The runtime is ready but its pod network (CNI) is not.
    NetworkNotReady { reason: String, message: String },
}

/// What the runtime holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInventory {
    pub sandboxes: i32,
    pub containers: ContainerCounts,
    pub images: i32,
}

impl RuntimeReport {
    /// The status block of the NodeConfig, once the runtime answered.
    pub fn status(&self) -> Option<RuntimeStatus> {
        let version = self.version.as_ref()?;
        let inventory = self.inventory.clone().unwrap_or_default();
        Some(RuntimeStatus {
            version: version.display(),
            sandboxes: inventory.sandboxes,
            containers: inventory.containers,
            images: inventory.images,
        })
    }
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

fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Runs `call` with [`CALL_TIMEOUT`], turning a timeout into a message naming the endpoint.
async fn timed<T>(
    endpoint: &str,
    method: &str,
    call: impl std::future::Future<Output = Result<T, CriError>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "CRI {method} on {endpoint} did not answer within {CALL_TIMEOUT:?}"
        )),
    }
}

/// One round of questions to the runtime. `previous` supplies the inventory
/// kept while the runtime does not answer.
pub async fn probe(cri: &CriClient, previous: &RuntimeReport) -> RuntimeReport {
    let endpoint = cri.endpoint().to_string();
    let kept_inventory = if previous.endpoint == endpoint {
        previous.inventory.clone()
    } else {
        None
    };
    let unreachable = |message: String| RuntimeReport {
        endpoint: endpoint.clone(),
        version: if previous.endpoint == endpoint {
            previous.version.clone()
        } else {
            None
        },
        health: RuntimeHealth::Unreachable { message },
        inventory: kept_inventory.clone(),
    };

    let mut client = cri.clone();
    let version = match timed(&endpoint, "Version", client.version()).await {
        Ok(v) => RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
        },
        Err(message) => return unreachable(message),
    };
    let status = timed(&endpoint, "Status", async {
        let mut c = cri.clone();
        c.runtime
            .status(StatusRequest { verbose: false })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| cri.call_error("Status", s))
    })
    .await;
    let health = match status {
        Ok(resp) => health_from_conditions(&resp.status.map(|s| s.conditions).unwrap_or_default()),
        Err(message) => return unreachable(message),
    };
    let inventory = match inventory(cri, &endpoint).await {
        Ok(inventory) => Some(inventory),
        Err(message) => {
            tracing::warn!(%endpoint, error = %message, "runtime inventory failed");
            kept_inventory
        }
    };
    RuntimeReport {
        endpoint,
        version: Some(version),
        health,
        inventory,
    }
}

async fn inventory(cri: &CriClient, endpoint: &str) -> Result<RuntimeInventory, String> {
    let sandboxes = timed(endpoint, "ListPodSandbox", async {
        let mut c = cri.clone();
        c.runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map(|r| r.into_inner().items.len())
            .map_err(|s| cri.call_error("ListPodSandbox", s))
    })
    .await?;
    let containers = timed(endpoint, "ListContainers", async {
        let mut c = cri.clone();
        c.runtime
            .list_containers(ListContainersRequest { filter: None })
            .await
            .map(|r| count_containers(r.into_inner().containers.iter().map(|c| c.state)))
            .map_err(|s| cri.call_error("ListContainers", s))
    })
    .await?;
    let images = timed(endpoint, "ListImages", async {
        let mut c = cri.clone();
        c.image
            .list_images(ListImagesRequest { filter: None })
            .await
            .map(|r| r.into_inner().images.len())
            .map_err(|s| cri.call_error("ListImages", s))
    })
    .await?;
    Ok(RuntimeInventory {
        sandboxes: saturating_i32(sandboxes),
        containers,
        images: saturating_i32(images),
    })
}

/// The runtime loop. Publishes into `report` only when something changed.
pub async fn run(
    mut cri: CriHandle,
    report: watch::Sender<RuntimeReport>,
    metrics: Metrics,
    heartbeat: LoopHeartbeat,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            changed = cri.changed() => if changed.is_err() { return },
        }
        heartbeat.beat();
        let client = cri.current();
        let previous = report.borrow().clone();
        let next = probe(&client, &previous).await;
        metrics
            .runtime_ready
            .set(i64::from(next.health == RuntimeHealth::Ready));
        if next.health != previous.health {
            match &next.health {
                RuntimeHealth::Ready => {
                    tracing::info!(endpoint = %next.endpoint, "container runtime ready")
                }
                other => {
                    tracing::warn!(endpoint = %next.endpoint, health = ?other, "container runtime not ready")
                }
            }
        }
        report.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
    }
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

    #[test]
    fn status_block_needs_a_version() {
        let mut report = RuntimeReport::default();
        assert_eq!(report.status(), None);
        report.version = Some(RuntimeVersion {
            name: "containerd".into(),
            version: "1.6.20".into(),
        });
        report.inventory = Some(RuntimeInventory {
            sandboxes: 2,
            containers: ContainerCounts::default(),
            images: 5,
        });
        let status = report.status().expect("status");
        assert_eq!(status.version, "containerd 1.6.20");
        assert_eq!((status.sandboxes, status.images), (2, 5));
    }
}
