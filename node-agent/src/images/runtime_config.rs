//! What the runtime's own configuration says about images: the sandbox
//! (pause) image it starts every pod sandbox from, which must never be
//! collected, and its root directory, measured when CRI `ImageFsInfo` names
//! no filesystem. containerd gives its configuration as JSON under `config`
//! in a verbose CRI `Status` (`sandboxImage`, `containerdRootDir`).

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1 as cri;
use serde::Deserialize;

use crate::edge::cri::{CriClient, CriError};

/// The parts of the runtime's configuration image collection needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub sandbox_image: Option<String>,
    pub root_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerdConfig {
    #[serde(default)]
    sandbox_image: String,
    #[serde(default)]
    containerd_root_dir: String,
}

/// Reads a verbose `Status`'s info; a runtime that tells nothing gives the default.
pub fn parse(info: &HashMap<String, String>) -> RuntimeConfig {
    let Some(config) = info
        .get("config")
        .and_then(|json| serde_json::from_str::<ContainerdConfig>(json).ok())
    else {
        return RuntimeConfig::default();
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    RuntimeConfig {
        sandbox_image: non_empty(config.sandbox_image),
        root_dir: non_empty(config.containerd_root_dir).map(PathBuf::from),
    }
}

/// Asks the runtime (CRI `Status` with `verbose`).
pub async fn read(client: &CriClient) -> Result<RuntimeConfig, CriError> {
    let mut c = client.clone();
    let status = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .map_err(|s| client.call_error("Status", s))?
        .into_inner();
    Ok(parse(&status.info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_names_its_sandbox_image_and_root() {
        let info = HashMap::from([(
            "config".to_string(),
            r#"{"containerd":{"snapshotter":"overlayfs"},"sandboxImage":"nodeconfig.local/pause:3.10","containerdRootDir":"/var/lib/containerd"}"#
                .to_string(),
        )]);
        assert_eq!(
            parse(&info),
            RuntimeConfig {
                sandbox_image: Some("nodeconfig.local/pause:3.10".into()),
                root_dir: Some("/var/lib/containerd".into()),
            }
        );
    }

    #[test]
    fn a_runtime_that_tells_nothing_gives_nothing() {
        assert_eq!(parse(&HashMap::new()), RuntimeConfig::default());
        let info = HashMap::from([("config".to_string(), "not json".to_string())]);
        assert_eq!(parse(&info), RuntimeConfig::default());
    }
}
