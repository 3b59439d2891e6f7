//! Types of `nodeconfig.dev/v1alpha1`. Every doc comment becomes a description in
//! the CRD schema, so `kubectl explain nodeconfig.spec` reads them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration such as `30s`, `1m30s` or `500ms`, as CEL's `duration()` parses it.
const DURATION_RULE: &str = "self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')";

/// Desired configuration of one node's agent. One per Node, named after it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodeconfig.dev",
    version = "v1alpha1",
    kind = "NodeConfig",
    plural = "nodeconfigs",
    singular = "nodeconfig",
    shortname = "nc",
    category = "nodeconfig",
    status = "NodeConfigStatus",
    derive = "PartialEq",
    doc = "NodeConfig is the configuration and reported state of the nodeconfig agent on one Node. It is cluster-scoped and named after its Node.",
    validation = Rule::new("self.spec.nodeName == self.metadata.name")
        .message("spec.nodeName must equal metadata.name")
        .field_path(".spec.nodeName"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode", description = "Kubelet: the agent runs the node's pods; Companion: a kubelet runs them"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Status of the Ready condition"),
    printcolumn(name = "Pods", type_ = "string", json_path = ".status.pods.summary", description = "Running/desired pods on the node"),
    printcolumn(name = "Services", type_ = "integer", json_path = ".status.proxy.services", description = "Services the proxy programs"),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.proxy.rules", description = "iptables rules the proxy owns"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".status.agent.version", description = "Version of the node's agent"),
    printcolumn(name = "Up-To-Date", type_ = "string", json_path = ".status.conditions[?(@.type==\"AgentUpToDate\")].status", description = "Whether the node's agent runs the version the operator's defaults ask for"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Runtime", type_ = "string", json_path = ".status.runtime.version", priority = "1", description = "Container runtime name and version"),
    printcolumn(name = "Image-FS", type_ = "integer", json_path = ".status.runtime.imageFs.usedPercent", priority = "1", description = "Percent of the image filesystem in use"),
    printcolumn(name = "Config", type_ = "string", json_path = ".status.conditions[?(@.type==\"ConfigApplied\")].reason", priority = "1", description = "Reason of the ConfigApplied condition"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused", priority = "1", description = "Whether the agent keeps its last applied configuration"),
    printcolumn(name = "Last-Sync", type_ = "date", json_path = ".status.proxy.lastSyncTime", priority = "1", description = "Time of the proxy's last successful sync")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigSpec {
    /// Name of the Node this configuration belongs to. Equals metadata.name and cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.nodeName is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,

    /// How the agent runs on this node. `Kubelet`: the agent is the node's kubelet; it registers
    /// the Node and runs the pods bound to it. `Companion`: a kubelet already runs there; the agent
    /// never starts or stops pods, it programs the proxy rules and looks after the runtime.
    #[serde(default)]
    pub mode: NodeMode,

    /// Keep the last applied configuration and report the Paused reason instead of applying changes.
    #[serde(default)]
    pub paused: bool,

    /// The container runtime the agent talks to through CRI.
    #[serde(default)]
    pub runtime: RuntimeSpec,

    /// Pods and Node registration (Kubelet mode only).
    #[serde(default)]
    pub pods: PodsSpec,

    /// The service proxy: Services and EndpointSlices programmed as iptables rules.
    #[serde(default)]
    pub proxy: ProxySpec,
}

/// How the agent runs on a node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NodeMode {
    /// The agent is the node's kubelet: it registers the Node and runs its pods through CRI.
    Kubelet,
    /// A kubelet already runs on the node: the agent programs proxy rules and looks after the runtime.
    #[default]
    Companion,
}

/// The container runtime, reached through CRI.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// CRI endpoint of the container runtime, a unix socket such as `unix:///run/containerd/containerd.sock`.
    #[serde(default = "default_cri_endpoint")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('unix:///')").message("criEndpoint must be a unix socket URL such as unix:///run/containerd/containerd.sock"))]
    pub cri_endpoint: String,

    /// Image of the pause container that holds each pod sandbox's namespaces.
    #[serde(default = "default_sandbox_image")]
    #[schemars(length(min = 1, max = 512))]
    pub sandbox_image: String,

    /// Images to pull ahead of time, so pods that use them start without waiting.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub pre_pull_images: Vec<String>,
}

/// Pods and Node registration, used in Kubelet mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.imageGCLowThresholdPercent < self.imageGCHighThresholdPercent"
).message("imageGCLowThresholdPercent must be less than imageGCHighThresholdPercent").field_path(".imageGCLowThresholdPercent"))]
#[x_kube(validation = Rule::new(
    "!self.imageMaximumGCAge.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.imageMinimumGCAge.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.imageMaximumGCAge) == duration('0s') || duration(self.imageMaximumGCAge) > duration(self.imageMinimumGCAge)"
).message("imageMaximumGCAge must be 0s (off) or longer than imageMinimumGCAge").field_path(".imageMaximumGCAge"))]
pub struct PodsSpec {
    /// Most pods the node admits; further pods bound to it fail with reason OutOfpods.
    #[serde(default = "default_max_pods")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_pods: i32,

    /// CIDR that pod IPs of this node come from, registered as the Node's spec.podCIDR.
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("podCIDR must be a CIDR such as 10.244.1.0/24"))]
    pub pod_cidr: Option<String>,

    /// Labels to register on the Node, in addition to nodeconfig.dev/agent-managed=true.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64), inner(length(max = 63)))]
    pub labels: BTreeMap<String, String>,

    /// Taints to register on the Node.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub taints: Vec<NodeTaint>,

    /// IP addresses of the cluster's DNS service (the kubelet's `clusterDNS`):
    /// the nameservers of pods with dnsPolicy ClusterFirst, and of host-network
    /// pods with ClusterFirstWithHostNet. Empty: such pods use the node's
    /// resolver, with a MissingClusterDNS event, as the kubelet does.
    #[serde(default, rename = "clusterDNS")]
    #[schemars(length(max = 3), inner(length(max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))").message("clusterDNS must be IP addresses such as 10.96.0.10"))]
    pub cluster_dns: Vec<String>,

    /// The cluster's DNS domain (the kubelet's `clusterDomain`): pods with
    /// cluster DNS search `<namespace>.svc.<domain>`, `svc.<domain>` and
    /// `<domain>` before the node's search domains.
    #[serde(default = "default_cluster_domain")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub cluster_domain: String,

    /// Largest size of a container's log file before it is rotated (the
    /// kubelet's `containerLogMaxSize`), a quantity such as `10Mi`. Checked
    /// every `containerLogMonitorInterval`, so a fast writer can pass it by
    /// what it writes in one interval.
    #[serde(default = "default_container_log_max_size")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("containerLogMaxSize must be a positive quantity such as 10Mi"))]
    pub container_log_max_size: String,

    /// Most log files kept per container, the one being written included
    /// (the kubelet's `containerLogMaxFiles`); older rotated files are
    /// gzip-compressed, all but the newest.
    #[serde(default = "default_container_log_max_files")]
    #[schemars(range(min = 2, max = 100))]
    pub container_log_max_files: i32,

    /// How often container log sizes are checked (the kubelet's
    /// `containerLogMonitorInterval`), a duration of at least `3s`.
    #[serde(default = "default_container_log_monitor_interval")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('3s')").message("containerLogMonitorInterval must be a duration of at least 3s, such as 10s"))]
    pub container_log_monitor_interval: String,

    /// Hard eviction thresholds (the kubelet's `evictionHard`): for each
    /// signal, the level of what is left below which the node is under
    /// pressure (MemoryPressure, DiskPressure, PIDPressure) and evicts pods,
    /// one every 10 s, until it is above again. Signals: `memory.available`,
    /// `nodefs.available`, `nodefs.inodesFree`, `imagefs.available`,
    /// `imagefs.inodesFree`, `pid.available`; a threshold is a quantity such
    /// as `100Mi` or a percentage of the capacity such as `10%` (`0%` and
    /// `100%` turn the signal off). As with the kubelet, a map that is set
    /// replaces the defaults whole: a signal left out has no threshold.
    #[serde(default = "default_eviction_hard")]
    #[schemars(extend("maxProperties" = 6, "additionalProperties" = {"type": "string", "minLength": 1, "maxLength": 32}))]
    #[x_kube(validation = Rule::new("self.all(k, k in ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available'])").message("evictionHard signals are memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree and pid.available"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].matches('^([0-9]{1,2}([.][0-9]+)?|100([.]0+)?)%$') || (isQuantity(self[k]) && quantity(self[k]).isGreaterThan(quantity('0'))))").message("evictionHard thresholds are positive quantities such as 100Mi or percentages from 0% to 100%"))]
    pub eviction_hard: BTreeMap<String, String>,

    /// How long a pressure condition stays True after its signal went back
    /// above the threshold (the kubelet's `evictionPressureTransitionPeriod`),
    /// so a node near a threshold does not flap; a duration such as `5m`.
    #[serde(default = "default_eviction_pressure_transition_period")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("evictionPressureTransitionPeriod must be a duration such as 5m or 30s"))]
    pub eviction_pressure_transition_period: String,

    /// Percent of the image filesystem's capacity in use at which unused
    /// images are removed (the kubelet's `imageGCHighThresholdPercent`),
    /// 0 to 100: the least recently used go first until usage is down to
    /// `imageGCLowThresholdPercent`. 100 turns this off.
    #[serde(
        default = "default_image_gc_high_threshold_percent",
        rename = "imageGCHighThresholdPercent"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_high_threshold_percent: i32,

    /// Percent of the image filesystem's capacity that image garbage
    /// collection frees down to (the kubelet's `imageGCLowThresholdPercent`),
    /// less than `imageGCHighThresholdPercent`.
    #[serde(
        default = "default_image_gc_low_threshold_percent",
        rename = "imageGCLowThresholdPercent"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_low_threshold_percent: i32,

    /// Youngest an unused image may be and still be removed (the kubelet's
    /// `imageMinimumGCAge`), counted from when the agent first saw it; a
    /// duration such as `2m`, `0s` for none.
    #[serde(default = "default_image_minimum_gc_age", rename = "imageMinimumGCAge")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("imageMinimumGCAge must be a duration such as 2m or 0s"))]
    pub image_minimum_gc_age: String,

    /// How long an image may go unused before it is removed whatever the
    /// disk usage (the kubelet's `imageMaximumGCAge`); `0s` turns this off.
    /// Longer than `imageMinimumGCAge` when set.
    #[serde(default = "default_image_maximum_gc_age", rename = "imageMaximumGCAge")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("imageMaximumGCAge must be a duration such as 24h, or 0s for off"))]
    pub image_maximum_gc_age: String,
}

/// A taint to register on the Node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTaint {
    /// Taint key, such as `dedicated` or `example.com/gpu`.
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub value: Option<String>,
    /// What happens to pods that do not tolerate the taint.
    pub effect: TaintEffect,
}

/// Effect of a taint on pods that do not tolerate it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaintEffect {
    /// New pods are not scheduled onto the node.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted and new ones are not scheduled.
    NoExecute,
}

/// The service proxy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!self.syncPeriod.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.minSyncPeriod.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.minSyncPeriod) <= duration(self.syncPeriod)"
).message("minSyncPeriod must not be longer than syncPeriod").field_path(".minSyncPeriod"))]
pub struct ProxySpec {
    /// Program service rules on this node. Turning it off removes the agent's rules.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Proxy implementation.
    #[serde(default)]
    pub mode: ProxyMode,

    /// Period of the full resync of all rules, a duration such as `30s`.
    #[serde(default = "default_sync_period")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("syncPeriod must be a duration such as 30s or 1m"))]
    pub sync_period: String,

    /// Shortest interval between two syncs: a burst of changes within it is applied at once.
    #[serde(default = "default_min_sync_period")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("minSyncPeriod must be a duration such as 1s or 500ms"))]
    pub min_sync_period: String,

    /// CIDR of the cluster's pods. Traffic to a Service from outside it is masqueraded.
    #[serde(
        default,
        rename = "clusterCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("clusterCIDR must be a CIDR such as 10.244.0.0/16"))]
    pub cluster_cidr: Option<String>,

    /// Masquerade all traffic to Services, not only traffic from outside clusterCIDR.
    #[serde(default)]
    pub masquerade_all: bool,

    /// CIDRs of the node addresses that accept NodePort traffic; empty means all of them.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(a, isCIDR(a))").message("nodePortAddresses must be CIDRs such as 10.0.0.0/8"))]
    pub node_port_addresses: Vec<String>,
}

/// Proxy implementation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProxyMode {
    /// Rules written with iptables-restore, as kube-proxy's iptables mode does.
    #[default]
    #[serde(rename = "iptables")]
    Iptables,
}

/// What the node's agent reports. Written by the agent only, on change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigStatus {
    /// The metadata.generation of the spec the agent last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current state: Ready (summary), ConfigApplied, RuntimeReady, PodsReady, ProxyReady, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The agent that reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,

    /// The container runtime, as CRI reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStatus>,

    /// Pods on the node (Kubelet mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsStatus>,

    /// The service proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyStatus>,
}

/// The agent that reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Version of the node-agent binary.
    #[schemars(length(max = 64))]
    pub version: String,
    /// The mode the agent runs in.
    pub mode: NodeMode,
}

/// The container runtime, as CRI reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    /// Runtime name and version, such as `containerd 1.6.20`.
    #[schemars(length(max = 128))]
    pub version: String,
    /// Pod sandboxes the runtime holds.
    pub sandboxes: i32,
    /// Containers by state.
    pub containers: ContainerCounts,
    /// Images the runtime holds.
    pub images: i32,
    /// The filesystem the images are on, as image garbage collection measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<ImageFsStatus>,
}

/// The filesystem the runtime keeps its images on (CRI `ImageFsInfo`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFsStatus {
    /// Size of the filesystem in bytes.
    pub capacity_bytes: i64,
    /// Percent of the capacity in use (by anything, not only images), rounded
    /// up: what `imageGCHighThresholdPercent` is compared with.
    pub used_percent: i32,
}

/// Containers by state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCounts {
    /// Created but not started.
    pub created: i32,
    /// Running.
    pub running: i32,
    /// Exited.
    pub exited: i32,
    /// In an unknown state.
    pub unknown: i32,
}

/// Pods bound to the node (Kubelet mode).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodsStatus {
    /// Running/desired, as the PODS column shows it.
    #[schemars(length(max = 32))]
    pub summary: String,
    /// Pods bound to the node that are not finished.
    pub desired: i32,
    /// Pods in phase Running.
    pub running: i32,
    /// Pods in phase Pending.
    pub pending: i32,
    /// Pods in phase Failed.
    pub failed: i32,
    /// Container restarts summed over the node's pods.
    pub restarts: i32,
}

/// The service proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// Service ports programmed.
    pub services: i32,
    /// Endpoints programmed.
    pub endpoints: i32,
    /// iptables rules in the agent's chains.
    pub rules: i32,
    /// When the last successful sync finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// How long the last successful sync took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_duration_seconds: Option<f64>,
    /// Syncs that failed since the agent started.
    pub failed_syncs: i64,
}

fn default_cri_endpoint() -> String {
    "unix:///run/containerd/containerd.sock".into()
}
fn default_sandbox_image() -> String {
    "registry.k8s.io/pause:3.10".into()
}
fn default_max_pods() -> i32 {
    110
}
fn default_cluster_domain() -> String {
    "cluster.local".to_string()
}
fn default_container_log_max_size() -> String {
    "10Mi".into()
}
fn default_container_log_max_files() -> i32 {
    5
}
fn default_container_log_monitor_interval() -> String {
    "10s".into()
}
/// The kubelet's default `evictionHard` on Linux.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("nodefs.inodesFree", "5%"),
        ("imagefs.available", "15%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
fn default_eviction_pressure_transition_period() -> String {
    "5m".into()
}
fn default_image_gc_high_threshold_percent() -> i32 {
    85
}
fn default_image_gc_low_threshold_percent() -> i32 {
    80
}
fn default_image_minimum_gc_age() -> String {
    "2m".into()
}
fn default_image_maximum_gc_age() -> String {
    "0s".into()
}
fn default_true() -> bool {
    true
}
fn default_sync_period() -> String {
    "30s".into()
}
fn default_min_sync_period() -> String {
    "1s".into()
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        Self {
            cri_endpoint: default_cri_endpoint(),
            sandbox_image: default_sandbox_image(),
            pre_pull_images: Vec::new(),
        }
    }
}

impl Default for PodsSpec {
    fn default() -> Self {
        Self {
            max_pods: default_max_pods(),
            pod_cidr: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cluster_dns: Vec::new(),
            cluster_domain: default_cluster_domain(),
            container_log_max_size: default_container_log_max_size(),
            container_log_max_files: default_container_log_max_files(),
            container_log_monitor_interval: default_container_log_monitor_interval(),
            eviction_hard: default_eviction_hard(),
            eviction_pressure_transition_period: default_eviction_pressure_transition_period(),
            image_gc_high_threshold_percent: default_image_gc_high_threshold_percent(),
            image_gc_low_threshold_percent: default_image_gc_low_threshold_percent(),
            image_minimum_gc_age: default_image_minimum_gc_age(),
            image_maximum_gc_age: default_image_maximum_gc_age(),
        }
    }
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: ProxyMode::Iptables,
            sync_period: default_sync_period(),
            min_sync_period: default_min_sync_period(),
            cluster_cidr: None,
            masquerade_all: false,
            node_port_addresses: Vec::new(),
        }
    }
}

impl NodeConfigSpec {
    /// A spec for `node_name` with every other field at its default.
    pub fn for_node(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            mode: NodeMode::default(),
            paused: false,
            runtime: RuntimeSpec::default(),
            pods: PodsSpec::default(),
            proxy: ProxySpec::default(),
        }
    }
}
