//! The config loop: watches this node's NodeConfig (and nothing else: a field
//! selector on its name), decides with [`plan::plan`] what each new
//! generation means, applies it, and publishes a [`ConfigReport`] for the
//! other loops (mode, pods settings) and the status writer (ConfigApplied).
//!
//! Applying is mostly publishing: the node loop registers the new labels,
//! taints and maxPods, the runtime loop follows the CRI connection. The one
//! effect here is the CRI switch, checked before it is made, so a dead
//! endpoint leaves the old connection in use.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use nodeconfig_crds::NodeConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::plan::{self, ConfigPlan, Observed, Overrides, Rejection};
use crate::edge::cri::CriClient;
use crate::edge::cri_handle::CriSwitch;
use crate::reports::{ConfigReport, ConfigState};
use crate::serve::health::LoopHeartbeat;
use crate::serve::metrics::{ApplyResult, Metrics};

/// How long a new CRI endpoint gets to accept a connection and answer `Version`.
pub const ENDPOINT_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// First and longest wait before a generation refused for a reason that may pass is tried again.
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The config loop's inputs and outputs.
pub struct ConfigLoop {
    pub api: Api<NodeConfig>,
    pub node_name: String,
    pub overrides: Overrides,
    pub cri: CriSwitch,
    /// ConfigApplied, the applied configuration, the mode.
    pub report: watch::Sender<ConfigReport>,
    /// The NodeConfig as last seen (its status is what the status writer compares with).
    pub observed: watch::Sender<Option<Arc<NodeConfig>>>,
    pub metrics: Metrics,
    pub heartbeat: LoopHeartbeat,
}

impl ConfigLoop {
    pub async fn run(self, cancel: CancellationToken) {
        let selector = format!("metadata.name={}", self.node_name);
        let stream = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff();
        let mut stream = std::pin::pin!(stream);
        self.publish(|report| report.mode = plan::effective_mode(&self.overrides, None));

        let mut seen_in_relist = false;
        // Generation last decided, so the events of our own status writes do not re-plan.
        let mut decided: Option<(String, i64)> = None;
        // A refused generation to try again: when, after which wait, and which one.
        let mut retry: Option<(tokio::time::Instant, Duration, (String, i64))> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            let retry_at = retry.as_ref().map(|(at, _, _)| *at);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    continue;
                }
                _ = sleep_until(retry_at) => {
                    decided = None;
                }
                event = stream.next() => match event {
                    None => return,
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "watching the NodeConfig failed; retrying");
                        continue;
                    }
                    Some(Ok(watcher::Event::Init)) => {
                        seen_in_relist = false;
                        continue;
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if !seen_in_relist {
                            self.on_absent(&mut decided);
                        }
                        self.publish(|r| r.synced = true);
                        continue;
                    }
                    Some(Ok(watcher::Event::Delete(_))) => {
                        self.on_absent(&mut decided);
                        continue;
                    }
                    Some(Ok(watcher::Event::Apply(nc) | watcher::Event::InitApply(nc))) => {
                        seen_in_relist = true;
                        self.observed.send_replace(Some(Arc::new(nc)));
                    }
                },
            }
            self.heartbeat.beat();
            let Some(nc) = self.observed.borrow().clone() else {
                retry = None;
                continue;
            };
            let key = (
                nc.uid().unwrap_or_default(),
                nc.metadata.generation.unwrap_or(0),
            );
            if decided.as_ref() == Some(&key) {
                continue;
            }
            let previous = retry.take();
            if let Some(first_wait) = self.decide(&nc).await {
                let wait = match previous {
                    Some((_, waited, previous_key)) if previous_key == key => {
                        (waited * 2).min(RETRY_MAX)
                    }
                    _ => first_wait,
                };
                retry = Some((tokio::time::Instant::now() + wait, wait, key.clone()));
            }
            decided = Some(key);
        }
    }

    /// Plans and applies one observed generation. Returns a wait before the
    /// next try when the generation was refused for a reason that may pass.
    async fn decide(&self, nc: &NodeConfig) -> Option<Duration> {
        let generation = nc.metadata.generation.unwrap_or(0);
        let uid = nc.uid().unwrap_or_default();
        let applied = self.report.borrow().applied.clone();
        let observed = Observed {
            uid: &uid,
            spec: &nc.spec,
            generation,
            status_observed_generation: nc.status.as_ref().and_then(|s| s.observed_generation),
        };
        let planned = plan::plan(
            observed,
            applied.as_ref(),
            &self.cri.endpoint(),
            &self.overrides,
        );
        match planned {
            ConfigPlan::UpToDate => {
                self.publish(|r| r.state = ConfigState::Applied { generation });
                None
            }
            ConfigPlan::Paused => {
                tracing::info!(generation, applied = ?applied.as_ref().map(|a| a.generation), "NodeConfig paused; keeping the applied configuration");
                self.publish(|r| r.state = ConfigState::Paused { latest: generation });
                None
            }
            ConfigPlan::Reject(rejection) => self.reject(generation, rejection),
            ConfigPlan::Apply {
                config,
                switch_cri_to,
            } => {
                if let Some(endpoint) = switch_cri_to {
                    match check_endpoint(&endpoint).await {
                        Ok(client) => self.cri.switch(client),
                        Err(error) => {
                            return self.reject(
                                generation,
                                Rejection::runtime_unreachable(&endpoint, &error),
                            )
                        }
                    }
                }
                tracing::info!(generation, mode = ?config.mode, cri_endpoint = %config.cri_endpoint, "NodeConfig applied");
                self.metrics.config_apply(ApplyResult::Applied);
                let mode = plan::effective_mode(&self.overrides, Some(config.as_ref()));
                self.publish(|r| {
                    r.state = ConfigState::Applied { generation };
                    r.applied = Some(*config);
                    r.mode = mode;
                });
                None
            }
        }
    }

    fn reject(&self, generation: i64, rejection: Rejection) -> Option<Duration> {
        tracing::warn!(generation, reason = rejection.reason, message = %rejection.message, "NodeConfig not applied; the last applied configuration stays");
        self.metrics.config_apply(ApplyResult::Rejected);
        let retry = rejection.retry.then_some(RETRY_MIN);
        self.publish(|r| {
            r.state = ConfigState::Rejected {
                generation,
                rejection,
            }
        });
        retry
    }

    fn on_absent(&self, decided: &mut Option<(String, i64)>) {
        if self.observed.borrow().is_some() {
            tracing::info!("no NodeConfig for this node; the last applied configuration stays");
        }
        self.observed.send_replace(None);
        *decided = None;
        self.publish(|r| r.state = ConfigState::NotSeen);
    }

    fn publish(&self, change: impl FnOnce(&mut ConfigReport)) {
        self.report.send_if_modified(|report| {
            let before = report.clone();
            change(report);
            *report != before
        });
    }
}

/// Connects to `endpoint` and asks its `Version`, within [`ENDPOINT_CHECK_TIMEOUT`] each.
pub async fn check_endpoint(endpoint: &str) -> Result<CriClient, String> {
    let mut client = CriClient::connect_with_timeout(endpoint, ENDPOINT_CHECK_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ENDPOINT_CHECK_TIMEOUT, client.version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to CRI Version within {ENDPOINT_CHECK_TIMEOUT:?}"
        )),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
