//! Why a container's CRI config could not be built.

/// Why a container's config could not be built; the pod loop reports it as
/// the container's `CreateContainerConfigError` and retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { name: String },
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("field label not supported: {path}")]
    UnsupportedFieldPath { path: String },
    #[error("unsupported container resource: {resource}")]
    UnsupportedResource { resource: String },
    #[error("container {name} not found")]
    ContainerNotFound { name: String },
    #[error("invalid quantity {value:?} for {what}")]
    InvalidQuantity { what: String, value: String },
    #[error("{what} is not supported by this node")]
    Unsupported { what: String },
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserIsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})")]
    ImageUserNotNumeric {
        user: String,
        pod: String,
        container: String,
    },
    /// `spec.hostUsers: false` asks for a user namespace, which the agent
    /// does not set up (nor does containerd 1.6 offer one).
    #[error("can't set `spec.hostUsers: false`, runtime does not support user namespaces")]
    UserNamespacesUnsupported,
    #[error("failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, {len} characters requested)")]
    FqdnTooLong { fqdn: String, len: usize },
}

impl ConfigError {
    /// The waiting reason the container shows.
    pub fn reason(&self) -> &'static str {
        "CreateContainerConfigError"
    }
}
