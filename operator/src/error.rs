//! The operator's errors, each with a short label for the error metrics.

/// What went wrong while reconciling one object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} of {object} failed: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("Node {0} has no uid in the cache")]
    NodeWithoutUid(String),
}

impl Error {
    /// A label for `nodeconfig_operator_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "conflict",
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 422 || status.code == 400 => "invalid",
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => "forbidden",
            Self::Kube {
                source: kube::Error::Api(_),
                ..
            } => "api",
            Self::Kube { .. } => "transport",
            Self::NodeWithoutUid(_) => "node_without_uid",
        }
    }
}

/// Wraps a kube error with what was being done to which object.
pub fn kube(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Kube {
        action,
        object,
        source,
    }
}
