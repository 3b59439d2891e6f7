//! The runtime loop: asks the container runtime through CRI how it is
//! (`Version`, `Status`) and what it holds (sandboxes, containers, images)
//! every [`POLL_INTERVAL`], and publishes a [`RuntimeReport`] when that changed.
//!
//! The CRI connection it polls is the one the config loop hands it (see
//! [`crate::edge::cri_handle`]); a switch of endpoint triggers a poll at once.

use std::time::Duration;

use k8s_cri::v1::{ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, StatusRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::edge::cri::{CriClient, CriError};
use crate::edge::cri_handle::CriHandle;
use crate::images::image_fs;
use crate::reports::{RuntimeHealth, RuntimeInventory, RuntimeReport, RuntimeVersion};
use crate::runtime::inventory::{
    count_containers, health_from_conditions, image_fs_status, saturating_i32,
};
use crate::serve::health::LoopHeartbeat;
use crate::serve::metrics::Metrics;

/// How often the runtime is asked, as the kubelet's PLEG relists (1s there; status every 10s).
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Longest wait for one CRI call before the runtime counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

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
    // Not part of the inventory's success: a runtime may not tell its image filesystem.
    let image_fs = match tokio::time::timeout(CALL_TIMEOUT, image_fs::measure(cri)).await {
        Ok(Ok(fs)) => image_fs_status(&fs),
        Ok(Err(error)) => {
            tracing::debug!(%endpoint, %error, "cannot measure the image filesystem");
            None
        }
        Err(_) => None,
    };
    Ok(RuntimeInventory {
        sandboxes: saturating_i32(sandboxes),
        containers,
        images: saturating_i32(images),
        image_fs,
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
