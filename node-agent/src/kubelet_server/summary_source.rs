//! Reads what [`super::summary`] assembles: CRI `ListPodSandbox`,
//! `ListContainers` and `ListContainerStats` (one call each, at once), and
//! the node's root cgroup (`crate::edge::node_stats`). A failed read fails the
//! whole summary, as the kubelet's `GetCPUAndMemoryStats` does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;

use super::summary::{self, CpuStats, MemoryStats, NodeStats, Summary, SwapStats, UnixNanos};
use crate::edge::cri::{CriClient, CriError};
use crate::edge::node_stats;

/// How long the runtime may take for each list; a scrape fails after it.
const CRI_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no summary could be read.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("CRI {method} on {endpoint} did not answer within {timeout:?}")]
    Timeout {
        endpoint: String,
        method: &'static str,
        timeout: Duration,
    },
    #[error("cannot read the node's {what}: {source}")]
    Node {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The node's and its pods' CPU and memory use now.
pub async fn read(cri: &CriClient) -> Result<Summary, SummaryError> {
    let (mut a, mut b, mut c) = (cri.clone(), cri.clone(), cri.clone());
    let (sandboxes, containers, stats) = tokio::try_join!(
        timed(cri, "ListPodSandbox", async move {
            a.runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                .await
                .map(|r| r.into_inner().items)
        }),
        timed(cri, "ListContainers", async move {
            b.runtime
                .list_containers(cri::ListContainersRequest { filter: None })
                .await
                .map(|r| r.into_inner().containers)
        }),
        timed(cri, "ListContainerStats", async move {
            c.runtime
                .list_container_stats(cri::ListContainerStatsRequest { filter: None })
                .await
                .map(|r| r.into_inner().stats)
        }),
    )?;
    let node = read_node()?;
    let pods = summary::pods_from_cri(
        &sandboxes,
        &containers,
        &stats,
        unix_nanos(SystemTime::now()),
    );
    Ok(Summary { node, pods })
}

/// One CRI call within [`CRI_TIMEOUT`], its failure named.
async fn timed<T>(
    cri: &CriClient,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, SummaryError> {
    match tokio::time::timeout(CRI_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(status)) => Err(cri.call_error(method, status).into()),
        Err(_) => Err(SummaryError::Timeout {
            endpoint: cri.endpoint().to_string(),
            method,
            timeout: CRI_TIMEOUT,
        }),
    }
}

/// The root cgroup's CPU time and memory working set (usage less inactive
/// file pages, as cAdvisor computes it), and the machine's swap in use.
fn read_node() -> Result<NodeStats, SummaryError> {
    let node_error = |what| move |source| SummaryError::Node { what, source };
    let cpu = node_stats::cpu_usage_nanoseconds().map_err(node_error("CPU time"))?;
    let cpu_time = unix_nanos(SystemTime::now());
    let memory = node_stats::memory().map_err(node_error("memory"))?;
    let memory_time = unix_nanos(SystemTime::now());
    let swap = node_stats::swap_usage().ok();
    Ok(NodeStats {
        cpu: Some(CpuStats {
            time: cpu_time,
            usage_core_nano_seconds: Some(cpu),
        }),
        memory: Some(MemoryStats {
            time: memory_time,
            working_set_bytes: Some(memory.usage.saturating_sub(memory.inactive_file)),
        }),
        swap: swap.map(|usage| SwapStats {
            time: memory_time,
            swap_usage_bytes: Some(usage),
            swap_available_bytes: None,
        }),
    })
}

fn unix_nanos(time: SystemTime) -> UnixNanos {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
