//! The one writer of the NodeConfig status: waits for any loop's report (or a
//! change of the NodeConfig as observed), lets a burst settle for
//! [`DEBOUNCE`], computes the status ([`crate::status::desired::desired_status`]) and
//! server-side applies it with field manager `node-agent` only when the
//! status on the server differs — which also puts back a condition someone
//! else changed (the operator's `Ready=Unknown` while the agent is alive).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use nodeconfig_crds::{NodeConfig, NodeConfigStatus};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::reports::{
    ConfigReport, NodeReport, PodsReport, PressureReport, ProxyReport, RuntimeReport,
};
use crate::serve::health::LoopHeartbeat;
use crate::serve::metrics::{Metrics, WriteResult};
use crate::status::desired::{
    desired_status, inputs_settled, needs_write, proxy_settled, StatusInputs,
};
use crate::FIELD_MANAGER;

/// How long a burst of reports may settle before one write.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest wait at start-up for the loops' first reports before writing anyway.
const STARTUP_SETTLE_LIMIT: Duration = Duration::from_secs(15);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub struct StatusWriter {
    pub api: Api<NodeConfig>,
    pub node_name: String,
    pub config: watch::Receiver<ConfigReport>,
    pub runtime: watch::Receiver<RuntimeReport>,
    pub node: watch::Receiver<NodeReport>,
    pub proxy: watch::Receiver<ProxyReport>,
    /// The pod loop's counts (Kubelet mode only).
    pub pods: Option<watch::Receiver<PodsReport>>,
    /// The eviction loop's pressure (Kubelet mode).
    pub pressure: Option<watch::Receiver<PressureReport>>,
    pub observed: watch::Receiver<Option<Arc<NodeConfig>>>,
    pub metrics: Metrics,
    pub heartbeat: LoopHeartbeat,
}

/// Our last write: the resourceVersion observed when we wrote, the status the
/// server answered with (until the watch shows a newer object, the freshest
/// status there is), and what we asked for, when.
struct LastWrite {
    /// Which NodeConfig: one deleted and re-created starts with an empty status.
    uid: Option<String>,
    observed_resource_version: Option<String>,
    answered: NodeConfigStatus,
    desired: NodeConfigStatus,
    at: Instant,
}

/// Another writer keeps overwriting what we wrote (say an operator that
/// believes the agent is gone): re-assert, but with growing pauses, so two
/// writers do not hammer the API server.
const CONTESTED_MIN: Duration = Duration::from_secs(1);
const CONTESTED_MAX: Duration = Duration::from_secs(30);

/// Resolves when an optional report changes; never when there is none.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

impl StatusWriter {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut last_write: Option<LastWrite> = None;
        let started = Instant::now();
        let mut wake_at: Option<Instant> = None;
        let mut error_backoff: Option<Duration> = None;
        let mut contested_wait = CONTESTED_MIN;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            let wake = async move {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = wake => {}
                r = self.config.changed() => if r.is_err() { return },
                r = self.runtime.changed() => if r.is_err() { return },
                r = self.node.changed() => if r.is_err() { return },
                r = self.proxy.changed() => if r.is_err() { return },
                r = changed(&mut self.pods) => if r.is_err() { return },
                r = changed(&mut self.pressure) => if r.is_err() { return },
                r = self.observed.changed() => if r.is_err() { return },
            }
            self.heartbeat.beat();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(DEBOUNCE) => {}
            }
            wake_at = None;
            let config = self.config.borrow_and_update().clone();
            let runtime = self.runtime.borrow_and_update().clone();
            let node = self.node.borrow_and_update().clone();
            let proxy = self.proxy.borrow_and_update().clone();
            let pods = self.pods.as_mut().map(|p| p.borrow_and_update().clone());
            let pressure = self
                .pressure
                .as_mut()
                .map(|p| p.borrow_and_update().clone());
            let Some(observed) = self.observed.borrow_and_update().clone() else {
                // No NodeConfig: nothing to write to.
                continue;
            };
            if !(inputs_settled(&config, &runtime) && proxy_settled(&config, &proxy))
                && started.elapsed() < STARTUP_SETTLE_LIMIT
            {
                continue;
            }
            let observed_rv = observed.resource_version();
            let current = match &last_write {
                Some(w) if w.observed_resource_version == observed_rv => w.answered.clone(),
                _ => observed.status.clone().unwrap_or_default(),
            };
            let inputs = StatusInputs {
                config: &config,
                runtime: &runtime,
                node: &node,
                proxy: &proxy,
                pods: pods.as_ref(),
                pressure: pressure.as_ref(),
                spec_mode: observed.spec.mode,
            };
            let desired = desired_status(inputs, &current, Time(Timestamp::now()));
            if !needs_write(&desired, &current) {
                error_backoff = None;
                continue;
            }
            let now = Instant::now();
            // The same status as our last write, yet the server differs: someone overwrote it.
            let contested = last_write
                .as_ref()
                .filter(|w| w.uid == observed.uid() && !needs_write(&desired, &w.desired))
                .map(|w| w.at);
            if let Some(written_at) = contested {
                if now.duration_since(written_at) > 2 * CONTESTED_MAX {
                    contested_wait = CONTESTED_MIN;
                }
                let due = written_at + contested_wait;
                if now < due {
                    wake_at = Some(due);
                    continue;
                }
            }
            match self.apply(&desired).await {
                Ok(written) => {
                    self.metrics.status_write(WriteResult::Success);
                    if contested.is_some() {
                        tracing::info!(wait = ?contested_wait, "NodeConfig status was changed by another writer; re-applied the agent's");
                        contested_wait = (contested_wait * 2).min(CONTESTED_MAX);
                    } else {
                        contested_wait = CONTESTED_MIN;
                        tracing::debug!(observed_generation = ?desired.observed_generation, "NodeConfig status written");
                    }
                    last_write = Some(LastWrite {
                        uid: observed.uid(),
                        observed_resource_version: observed_rv,
                        answered: written.status.unwrap_or_default(),
                        desired,
                        at: now,
                    });
                    error_backoff = None;
                }
                Err(err) => {
                    self.metrics.status_write(WriteResult::Error);
                    let backoff = error_backoff.map_or(RETRY_MIN, |r| (r * 2).min(RETRY_MAX));
                    tracing::warn!(error = %err, retry_in = ?backoff, "writing the NodeConfig status failed");
                    error_backoff = Some(backoff);
                    wake_at = Some(now + backoff);
                }
            }
        }
    }

    async fn apply(&self, status: &NodeConfigStatus) -> Result<NodeConfig, kube::Error> {
        let body = json!({
            "apiVersion": NodeConfig::api_version(&()),
            "kind": NodeConfig::kind(&()),
            "metadata": {"name": self.node_name},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch_status(&self.node_name, &params, &Patch::Apply(body))
            .await
    }
}
