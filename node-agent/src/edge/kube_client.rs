//! The kube client: from `--kubeconfig` when given, else the in-cluster
//! service account (the DaemonSet).

use std::net::SocketAddr;
use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no --kubeconfig given and no in-cluster configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot build the kube client: {0}")]
    Client(#[source] kube::Error),
}

/// The client configuration.
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeClientError> {
    match kubeconfig {
        Some(path) => {
            let err = |source| KubeClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(err)
        }
        None => kube::Config::incluster().map_err(KubeClientError::InCluster),
    }
}

pub fn client(config: kube::Config) -> Result<kube::Client, KubeClientError> {
    kube::Client::try_from(config).map_err(KubeClientError::Client)
}

/// The API server's address, resolved, to find the node's own address on the way to it.
pub async fn api_server_address(config: &kube::Config) -> Option<SocketAddr> {
    let url = &config.cluster_url;
    let host = url
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_u16().unwrap_or(443);
    let mut addresses = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
    addresses.next()
}
