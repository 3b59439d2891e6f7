//! nodeconfig-operator: one NodeConfig per Node, the node-agent DaemonSet, and the agents'
//! liveness, with leader election so that of several replicas exactly one writes.

mod cache;
mod config;
mod controller;
mod daemonset;
mod defaults;
mod error;
mod leader;
mod liveness;
mod metrics;
mod nodeconfig;
mod rollout;
mod server;
mod skew;

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cache::Caches;
use crate::config::{Config, LogFormat};
use crate::leader::{ElectionTiming, LeaderElector};
use crate::metrics::Metrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate().map_err(|e| anyhow!(e))?;
    init_tracing(config.log_format);
    let identity = config.identity();
    info!(?config, %identity, version = env!("CARGO_PKG_VERSION"), "nodeconfig-operator starting");

    let client = client(&config).await?;
    let metrics = Arc::new(Metrics::default());
    let (caches, cache_tasks) = Caches::start(&client, &config.namespace, metrics.clone());

    let (stop_server, server_stopped) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let server = tokio::spawn(server::serve(
        listener,
        caches.clone(),
        metrics.clone(),
        server_stopped,
    ));

    let timing = ElectionTiming {
        lease_duration: config.lease_duration,
        renew_deadline: config.renew_deadline,
        retry_period: config.retry_period,
    };
    let leases = Api::namespaced(client.clone(), &config.namespace);
    let (elector, mut leading) =
        LeaderElector::new(leases, config.lease_name.clone(), identity.clone(), timing);
    let (stop_elector, elector_stopped) = watch::channel(false);
    let elector = tokio::spawn(elector.run(elector_stopped));

    let mut term: Option<JoinHandle<()>> = None;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: shutting down"); break; }
            changed = leading.changed() => {
                if changed.is_err() { warn!("leader election ended"); break; }
                let is_leader = *leading.borrow_and_update();
                if is_leader && term.is_none() {
                    metrics.leader.set(1);
                    metrics.leader_transitions.inc();
                    term = Some(tokio::spawn(controller::run_leader_term(
                        client.clone(), caches.clone(), metrics.clone(), identity.clone(), config.concurrency,
                    )));
                } else if !is_leader {
                    // Not the leader any more: stop writing now, in-flight requests included.
                    if let Some(term) = term.take() {
                        term.abort();
                        info!("stopped leading");
                    }
                    metrics.leader.set(0);
                }
            }
        }
    }

    // Stop writing before the lease is released, so the next leader never overlaps with us.
    if let Some(term) = term.take() {
        term.abort();
        let _ = term.await;
    }
    metrics.leader.set(0);
    stop_elector.send_replace(true);
    let _ = elector.await;
    stop_server.send_replace(true);
    match server.await {
        Ok(Err(error)) => warn!(%error, "metrics server failed"),
        Err(error) => warn!(%error, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    for task in cache_tasks {
        task.abort();
    }
    info!("stopped");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn client(config: &Config) -> anyhow::Result<Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no in-cluster configuration")?,
    };
    Client::try_from(kube_config).context("building the Kubernetes client")
}
