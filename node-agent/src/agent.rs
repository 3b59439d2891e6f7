//! Wiring: one kube client, one CRI connection, the loops as tokio tasks
//! talking through watch channels, the HTTP server, and a graceful stop on
//! SIGTERM or SIGINT.
//!
//! ```text
//!   config loop ──ConfigReport──┬─> node loop ──NodeReport──┐
//!        │  (switches CRI)      ├─> status writer <─────────┤
//!        └──observed NodeConfig─┘        ^                  │
//!   runtime loop ──RuntimeReport─────────┴──> node loop     │
//!   node loop ──Node owner──> node Lease;  agent Lease      │
//!   config ──spec.proxy──> proxy loop ──ProxyReport──> status writer
//! ```

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use nodeconfig_crds::NodeConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cli::{Config, ModeOverride, DEFAULT_CRI_ENDPOINT};
use crate::config::plan::Overrides;
use crate::config::run::ConfigLoop;
use crate::edge::cri::{CriClient, CriError};
use crate::edge::host::{self, HostFacts};
use crate::edge::kube_client::{self, KubeClientError};
use crate::images::gc::ImageGc;
use crate::images::reclaim::ImageReclaimer;
use crate::images::records::SharedImageRecords;
use crate::node::lease::{self, LeaseRenewer, LeaseTarget};
use crate::node::run::NodeSync;
use crate::pods::events::PodEvents;
use crate::pods::logs::rotator::LogRotator;
use crate::pods::run::PodsLoop;
use crate::proxy::run::ProxyLoop;
use crate::reports::{
    ConfigReport, NodeReport, PodsReport, PressureReport, ProxyReport, RuntimeReport,
};
use crate::runtime::run::run as runtime_loop;
use crate::serve::health::Health;
use crate::serve::metrics::{LeaseKind, Metrics};
use crate::serve::server::{self, ServerState};
use crate::status::run::StatusWriter;

/// How long the loops get to stop after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no node name: pass --node-name or set NODE_NAME")]
    NoNodeName,
    #[error(transparent)]
    Kube(#[from] KubeClientError),
    #[error("node {node}: {source}")]
    Cri {
        node: String,
        #[source]
        source: CriError,
    },
    #[error("node {node}: cannot listen on {addr}: {source}")]
    Listen {
        node: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: cannot install the signal handler: {source}")]
    Signal {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: cannot serve the kubelet endpoint: {reason}")]
    KubeletServer { node: String, reason: String },
    #[error("node {node}: the {task} loop stopped unexpectedly")]
    LoopStopped { node: String, task: &'static str },
}

/// Runs the agent until SIGTERM/SIGINT (Ok) or until a loop dies (Err).
pub async fn run(config: Config) -> Result<(), AgentError> {
    let node_name = config.node_name.clone().ok_or(AgentError::NoNodeName)?;
    let span = tracing::info_span!("agent", node = %node_name);
    run_node(config, node_name).instrument(span).await
}

async fn run_node(config: Config, node_name: String) -> Result<(), AgentError> {
    let kube_config = kube_client::load_config(config.kubeconfig.as_deref()).await?;
    let internal_ip = match config.node_ip {
        Some(ip) => Some(ip),
        None => node_ip_towards_api_server(&kube_config).await,
    };
    let client = kube_client::client(kube_config)?;
    let host = HostFacts::read();
    tracing::info!(?internal_ip, ?host, "host facts");

    let overrides = Overrides {
        mode: config.mode.map(Into::into),
        cri_endpoint: config.cri_endpoint.clone(),
    };
    let endpoint = config
        .cri_endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_CRI_ENDPOINT.to_string());
    let cri = CriClient::connect_lazy(&endpoint).map_err(|source| AgentError::Cri {
        node: node_name.clone(),
        source,
    })?;
    let (cri_switch, cri_handle) = crate::edge::cri_handle::shared(cri);
    let cri_for_server = cri_handle.clone();

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen {
            node: node_name.clone(),
            addr: config.listen,
            source,
        })?;

    let metrics = Metrics::new();
    let health = Health::default();
    let (config_tx, config_rx) = watch::channel(ConfigReport::default());
    let (observed_tx, observed_rx) = watch::channel(None);
    let (runtime_tx, runtime_rx) = watch::channel(RuntimeReport {
        endpoint,
        ..Default::default()
    });
    let (node_tx, node_rx) = watch::channel(NodeReport::default());
    let (owner_tx, owner_rx) = watch::channel(None);
    let (proxy_tx, proxy_rx) = watch::channel(ProxyReport::default());
    let (pods_tx, pods_rx) = watch::channel(PodsReport::default());
    // Kept here in Companion mode (nothing measures pressure), so its readers never see it closed.
    let (pressure_tx, pressure_rx) = watch::channel(PressureReport::default());
    let mut pressure_tx = Some(pressure_tx);

    let kubelet_mode = matches!(config.mode, Some(ModeOverride::Kubelet));
    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    let mut spawn =
        |name: &'static str,
         task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            let span = tracing::info_span!("loop", name);
            tasks.spawn(
                async move {
                    task.await;
                    name
                }
                .instrument(span),
            );
        };

    spawn(
        "config",
        Box::pin(
            ConfigLoop {
                api: Api::<NodeConfig>::all(client.clone()),
                node_name: node_name.clone(),
                overrides,
                cri: cri_switch,
                report: config_tx,
                observed: observed_tx,
                metrics: metrics.clone(),
                heartbeat: health.register("config"),
            }
            .run(cancel.clone()),
        ),
    );
    spawn(
        "runtime",
        Box::pin(runtime_loop(
            cri_handle,
            runtime_tx,
            metrics.clone(),
            health.register("runtime"),
            cancel.clone(),
        )),
    );
    spawn(
        "node",
        Box::pin(
            NodeSync {
                kubelet_port: kubelet_mode.then_some(config.kubelet_port),
                api: Api::<Node>::all(client.clone()),
                node_name: node_name.clone(),
                internal_ip,
                host: host.clone(),
                config: config_rx.clone(),
                runtime: runtime_rx.clone(),
                pressure: pressure_rx.clone(),
                report: node_tx,
                owner: owner_tx,
                metrics: metrics.clone(),
                heartbeat: health.register("node"),
            }
            .run(cancel.clone()),
        ),
    );
    spawn(
        "node-lease",
        Box::pin(
            LeaseRenewer {
                api: Api::<Lease>::namespaced(client.clone(), lease::NODE_LEASE_NAMESPACE),
                target: LeaseTarget {
                    namespace: lease::NODE_LEASE_NAMESPACE.into(),
                    name: node_name.clone(),
                    holder: node_name.clone(),
                    kind: LeaseKind::Node,
                },
                owner: Some(owner_rx),
                metrics: metrics.clone(),
                heartbeat: health.register("node-lease"),
            }
            .run(cancel.clone()),
        ),
    );
    // A node's own credentials may renew Leases in kube-node-lease only
    // (NodeRestriction); in Kubelet mode the node Lease above is the agent's
    // heartbeat, and the operator reads it. Companion agents renew their own.
    if !kubelet_mode {
        spawn(
            "agent-lease",
            Box::pin(
                LeaseRenewer {
                    api: Api::<Lease>::namespaced(client.clone(), lease::AGENT_LEASE_NAMESPACE),
                    target: LeaseTarget {
                        namespace: lease::AGENT_LEASE_NAMESPACE.into(),
                        name: lease::agent_lease_name(&node_name),
                        holder: node_name.clone(),
                        kind: LeaseKind::Agent,
                    },
                    owner: None,
                    metrics: metrics.clone(),
                    heartbeat: health.register("agent-lease"),
                }
                .run(cancel.clone()),
            ),
        );
    }
    spawn(
        "proxy",
        Box::pin(
            ProxyLoop {
                client: client.clone(),
                node_name: node_name.clone(),
                node_ip: internal_ip,
                config: config_rx.clone(),
                report: proxy_tx,
                metrics: metrics.clone(),
                health: health.clone(),
                heartbeat: health.register("proxy"),
            }
            .run(cancel.clone()),
        ),
    );
    spawn(
        "status",
        Box::pin(
            StatusWriter {
                api: Api::<NodeConfig>::all(client.clone()),
                node_name: node_name.clone(),
                config: config_rx.clone(),
                runtime: runtime_rx,
                node: node_rx,
                proxy: proxy_rx,
                pods: kubelet_mode.then_some(pods_rx),
                pressure: kubelet_mode.then_some(pressure_rx),
                observed: observed_rx,
                metrics: metrics.clone(),
                heartbeat: health.register("status"),
            }
            .run(cancel.clone()),
        ),
    );
    if kubelet_mode {
        let image_records = SharedImageRecords::default();
        spawn(
            "pods",
            Box::pin(
                PodsLoop {
                    client: client.clone(),
                    node_name: node_name.clone(),
                    node_ip: internal_ip,
                    cri: cri_for_server.clone(),
                    root_dir: config.root_dir.clone(),
                    pod_logs_dir: config.pod_logs_dir.clone(),
                    host: host.clone(),
                    allowed_unsafe_sysctls: config.allowed_unsafe_sysctls.clone(),
                    config: config_rx.clone(),
                    report: pods_tx,
                    pressure: pressure_tx.take(),
                    images: ImageReclaimer {
                        cri: cri_for_server.clone(),
                        records: image_records.clone(),
                        metrics: metrics.clone(),
                    },
                    metrics: metrics.clone(),
                    heartbeat: health.register("pods"),
                }
                .run(cancel.clone()),
            ),
        );
        spawn(
            "log-rotation",
            Box::pin(
                LogRotator {
                    cri: cri_for_server.clone(),
                    config: config_rx.clone(),
                    heartbeat: health.register("log-rotation"),
                }
                .run(cancel.clone()),
            ),
        );
        spawn(
            "image-gc",
            Box::pin(
                ImageGc {
                    cri: cri_for_server.clone(),
                    config: config_rx.clone(),
                    events: PodEvents::new(client.clone(), &node_name),
                    node_name: node_name.clone(),
                    metrics: metrics.clone(),
                    period: config.image_gc_period,
                    heartbeat: health.register("image-gc"),
                    records: image_records,
                }
                .run(cancel.clone()),
            ),
        );
    }
    let server_state = ServerState {
        health,
        config: config_rx,
        metrics: metrics.clone(),
    };
    let server_cancel = cancel.clone();
    spawn(
        "server",
        Box::pin(async move {
            if let Err(err) = server::serve(listener, server_state, server_cancel).await {
                tracing::error!(error = %err, "HTTP server failed");
            }
        }),
    );
    if kubelet_mode {
        spawn_kubelet_server(
            &mut spawn,
            &config,
            &node_name,
            internal_ip,
            crate::kubelet_server::KubeletServerState::new(
                cri_for_server.clone(),
                client.clone(),
                &node_name,
                metrics.kubelet_server.clone(),
            ),
            &cancel,
        )
        .await?;
    }
    tracing::info!(listen = %config.listen, "node-agent running");

    let signal = shutdown_signal(&node_name)?;
    let result = tokio::select! {
        () = signal => {
            tracing::info!("stopping");
            Ok(())
        }
        Some(done) = tasks.join_next() => {
            let task = done.unwrap_or("unknown");
            tracing::error!(task, "a loop stopped unexpectedly; stopping");
            Err(AgentError::LoopStopped { node: node_name.clone(), task })
        }
    };
    cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("loops did not stop within {SHUTDOWN_GRACE:?}; leaving them");
    }
    result
}

type Spawn<'a> =
    dyn FnMut(&'static str, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) + 'a;

/// The kubelet's HTTPS endpoint (`kubectl logs`, `kubectl exec`) on the node
/// IP and `--kubelet-port`, with a self-signed certificate as the kubelet
/// makes without --tls-cert-file. Without `--client-ca-file` it is not served
/// (nothing could authenticate the API server's certificate).
async fn spawn_kubelet_server(
    spawn: &mut Spawn<'_>,
    config: &Config,
    node_name: &str,
    internal_ip: Option<IpAddr>,
    state: crate::kubelet_server::KubeletServerState,
    cancel: &CancellationToken,
) -> Result<(), AgentError> {
    use crate::kubelet_server::{self, tls};
    let Some(ca) = config.client_ca_file.as_deref() else {
        tracing::warn!("no --client-ca-file: kubectl logs and exec are not served on this node");
        return Ok(());
    };
    let serving = tls::ServingCert::SelfSigned {
        node_name: node_name.to_string(),
        addresses: internal_ip.into_iter().collect(),
    };
    let tls = tls::server_config(&serving, ca).map_err(|e| AgentError::KubeletServer {
        node: node_name.to_string(),
        reason: e.to_string(),
    })?;
    let ip = internal_ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, config.kubelet_port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen {
            node: node_name.to_string(),
            addr,
            source,
        })?;
    let cancel = cancel.clone();
    spawn(
        "kubelet-server",
        Box::pin(async move {
            if let Err(err) =
                kubelet_server::serve(listener, tls, state, Default::default(), cancel).await
            {
                tracing::error!(error = %err, "kubelet HTTPS server failed");
            }
        }),
    );
    tracing::info!(%addr, "kubelet endpoint (logs, exec) serving");
    Ok(())
}

/// Resolves when SIGTERM or SIGINT arrives.
fn shutdown_signal(node: &str) -> Result<impl std::future::Future<Output = ()>, AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let err = |source| AgentError::Signal {
        node: node.to_string(),
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn node_ip_towards_api_server(config: &kube::Config) -> Option<IpAddr> {
    let peer = kube_client::api_server_address(config).await?;
    match host::source_address_towards(peer) {
        Ok(ip) => Some(ip),
        Err(err) => {
            tracing::warn!(%peer, error = %err, "cannot find the node's address towards the API server; pass --node-ip");
            None
        }
    }
}
