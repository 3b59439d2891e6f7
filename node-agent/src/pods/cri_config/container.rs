//! The CRI `ContainerConfig` of one container of a Pod, as the kubelet's
//! `generateContainerConfig`: command and args, environment, mounts, log
//! path, cgroup resources and the effective security context.
use std::collections::BTreeMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{AppArmorProfile, Container, Pod, SeccompProfile};

use crate::pods::cri_config::env::expand;
use crate::pods::cri_config::error::ConfigError;
use crate::pods::cri_config::quantity::{self, Amount};
use crate::pods::cri_config::sandbox::namespace_options;
use crate::pods::runtime_view::{container_annotations, container_labels};
use crate::pods::termination_message;

/// What the container needs besides the Pod.
#[derive(Debug, Clone)]
pub struct ContainerContext<'a> {
    /// Restarts so far; the CRI attempt and the log file's number.
    pub restart_count: u32,
    /// From [`crate::pods::cri_config::env::container_env`].
    pub env: Vec<cri::KeyValue>,
    /// Already resolved by the volume manager.
    pub mounts: Vec<cri::Mount>,
    /// [`crate::pods::container_spec_hash`] of the container.
    pub spec_hash: &'a str,
    /// Bytes of memory of the node, for the Burstable OOM score.
    pub node_memory_capacity: i64,
    /// The user the image runs as, from its `ImageStatus` (uid, or a
    /// non-numeric username); `None` when not known.
    pub image_user: Option<ImageUser<'a>>,
    /// For an ephemeral container with `targetContainerName`: the CRI id of
    /// that container, whose process namespace it joins.
    pub pid_target: Option<&'a str>,
}

/// The user an image's config says it runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUser<'a> {
    Uid(i64),
    Name(&'a str),
}

impl<'a> ImageUser<'a> {
    /// Read as the kubelet's `getImageUser`: the uid, else the username; an
    /// image that names neither runs as root.
    pub fn from_status(uid: Option<i64>, username: &'a str) -> Self {
        match uid {
            Some(uid) => Self::Uid(uid),
            None if !username.is_empty() => Self::Name(username),
            None => Self::Uid(0),
        }
    }
}

/// Whether the container's config needs the image's user: `runAsNonRoot`
/// without a `runAsUser` (pod or container), where only the image says who
/// runs.
pub fn needs_image_user(pod: &Pod, container: &Container) -> bool {
    let (run_as_non_root, run_as_user) = non_root_policy(pod, container);
    run_as_non_root && run_as_user.is_none()
}

/// The effective `runAsNonRoot` and `runAsUser` (the container's over the pod's).
fn non_root_policy(pod: &Pod, container: &Container) -> (bool, Option<i64>) {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_non_root = sc
        .and_then(|sc| sc.run_as_non_root)
        .or(pod_sc.and_then(|sc| sc.run_as_non_root));
    let run_as_user = sc
        .and_then(|sc| sc.run_as_user)
        .or(pod_sc.and_then(|sc| sc.run_as_user));
    (run_as_non_root == Some(true), run_as_user)
}

/// Quality of service class of a pod (the kubelet's `GetPodQOS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// The kubelet's cgroup conversions (`pkg/kubelet/cm`).
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const CPU_PERIOD_US: i64 = 100_000;
const MIN_QUOTA_US: i64 = 1000;
/// The kubelet's OOM score adjustments by QoS class.
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Where the kubelet looks for `Localhost` seccomp profiles.
const SECCOMP_PROFILE_ROOT: &str = "/var/lib/kubelet/seccomp";
/// Paths of /proc and /sys hidden and read-only in unprivileged containers
/// (the kubelet's defaults, the same as Docker's).
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container's log file, relative to the sandbox's log directory.
pub fn container_log_path(container_name: &str, restart_count: u32) -> String {
    format!("{container_name}/{restart_count}.log")
}

/// The container to create in the pod's sandbox.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    ctx: ContainerContext<'_>,
) -> Result<cri::ContainerConfig, ConfigError> {
    verify_run_as_non_root(pod, container, ctx.image_user)?;
    let m = &pod.metadata;
    let name = m.name.as_deref().unwrap_or_default();
    let namespace = m.namespace.as_deref().unwrap_or("default");
    let uid = m.uid.as_deref().unwrap_or_default();
    let lookup = |var: &str| {
        ctx.env
            .iter()
            .rev()
            .find(|kv| kv.key == var)
            .map(|kv| kv.value.as_str())
    };
    let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter().flatten().map(|s| expand(s, lookup)).collect()
    };
    let image = container.image.clone().unwrap_or_default();
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt: ctx.restart_count,
        }),
        image: Some(cri::ImageSpec {
            image: image.clone(),
            user_specified_image: image,
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        labels: container_labels(uid, name, namespace, &container.name),
        annotations: container_annotations(ctx.spec_hash, ctx.restart_count)
            .into_iter()
            .chain(termination_message::annotations(container))
            .collect(),
        log_path: container_log_path(&container.name, ctx.restart_count),
        stdin: container.stdin == Some(true),
        stdin_once: container.stdin_once == Some(true),
        tty: container.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(pod, container, ctx.node_memory_capacity)),
            security_context: Some(security_context(pod, container, ctx.pid_target)),
        }),
        envs: ctx.env,
        mounts: ctx.mounts,
        ..Default::default()
    })
}

/// cgroup settings from the container's requests and limits, as the
/// kubelet's `calculateLinuxResources` (also what an in-place resize sends
/// to `UpdateContainerResources`).
pub fn resources(
    pod: &Pod,
    container: &Container,
    node_memory_capacity: i64,
) -> cri::LinuxContainerResources {
    let requests = quantity::requests(container);
    let limits = quantity::limits(container);
    let milli =
        |list: &BTreeMap<String, Amount>, name: &str| list.get(name).map_or(0, |a| a.milli_ceil());
    cri::LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(milli(&requests, "cpu")),
        cpu_period: CPU_PERIOD_US,
        cpu_quota: milli_cpu_to_quota(milli(&limits, "cpu"), CPU_PERIOD_US),
        memory_limit_in_bytes: limits.get("memory").map_or(0, |a| a.value_ceil()).max(0),
        oom_score_adj: oom_score_adj(pod, container, node_memory_capacity),
        ..Default::default()
    }
}

/// CPU shares for a cpu request (the kubelet's `MilliCPUToShares`): 1024 per
/// CPU, at least 2 (the kernel's minimum, also for no request).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    (milli_cpu * SHARES_PER_CPU / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota in µs per period for a cpu limit (the kubelet's
/// `MilliCPUToQuota`): 0 (none) without a limit, else at least 1ms.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: i64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    (milli_cpu * period / 1000).max(MIN_QUOTA_US)
}

/// The kubelet's `GetContainerOOMScoreAdjust`: node-critical and Guaranteed
/// pods last to be killed, BestEffort first, Burstable in between by how
/// much of the node's memory the container requests.
fn oom_score_adj(pod: &Pod, container: &Container, node_memory_capacity: i64) -> i64 {
    let priority_class = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref());
    if priority_class == Some("system-node-critical") {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let request = quantity::requests(container)
                .get("memory")
                .map_or(0, |a| a.value_ceil());
            let capacity = node_memory_capacity.max(1);
            let adj = 1000 - (1000 * i128::from(request) / i128::from(capacity)) as i64;
            // Above any Guaranteed container, below any BestEffort one.
            adj.clamp(
                1000 + GUARANTEED_OOM_SCORE_ADJ,
                BEST_EFFORT_OOM_SCORE_ADJ - 1,
            )
        }
    }
}

/// The pod's QoS class: the one the API server recorded in its status, else
/// computed from the cpu and memory of all its (init) containers as the
/// kubelet does.
pub fn qos_class(pod: &Pod) -> QosClass {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => return QosClass::Guaranteed,
        Some("Burstable") => return QosClass::Burstable,
        Some("BestEffort") => return QosClass::BestEffort,
        _ => {}
    }
    let compute = ["cpu", "memory"];
    let mut requests = BTreeMap::<&str, Amount>::new();
    let mut limits = BTreeMap::<&str, Amount>::new();
    let mut guaranteed = true;
    for container in crate::pods::cri_config::env::all_containers(pod) {
        for (list, sums) in [
            (quantity::requests(container), &mut requests),
            (quantity::limits(container), &mut limits),
        ] {
            for name in compute {
                if let Some(amount) = list.get(name).filter(|a| **a > Amount::default()) {
                    let sum = sums.entry(name).or_default();
                    *sum = *sum + *amount;
                }
            }
        }
        let container_limits = quantity::limits(container);
        if !compute.iter().all(|n| {
            container_limits
                .get(*n)
                .is_some_and(|a| *a > Amount::default())
        }) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        QosClass::BestEffort
    } else if guaranteed && requests == limits {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The kubelet's `verifyRunAsNonRoot`: with `runAsNonRoot`, the container
/// must not run as uid 0, whether `runAsUser` or the image says so.
fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user: Option<ImageUser<'_>>,
) -> Result<(), ConfigError> {
    let (run_as_non_root, run_as_user) = non_root_policy(pod, container);
    if !run_as_non_root {
        return Ok(());
    }
    let who = || {
        let m = &pod.metadata;
        (
            format!(
                "{}_{}({})",
                m.name.as_deref().unwrap_or_default(),
                m.namespace.as_deref().unwrap_or_default(),
                m.uid.as_deref().unwrap_or_default()
            ),
            container.name.clone(),
        )
    };
    match (run_as_user, image_user) {
        (Some(0), _) => {
            let (pod, container) = who();
            Err(ConfigError::RunAsUserIsRoot { pod, container })
        }
        (Some(_), _) | (None, None) => Ok(()),
        (None, Some(ImageUser::Uid(0))) => {
            let (pod, container) = who();
            Err(ConfigError::ImageRunsAsRoot { pod, container })
        }
        (None, Some(ImageUser::Uid(_))) => Ok(()),
        (None, Some(ImageUser::Name(user))) => {
            let (pod, container) = who();
            Err(ConfigError::ImageUserNotNumeric {
                user: user.to_string(),
                pod,
                container,
            })
        }
    }
}

/// The container's security context over the pod's, as the kubelet's
/// `determineEffectiveSecurityContext`. A `pid_target` takes the place of
/// the container's own process namespace only (the kubelet's
/// `NamespaceMode_TARGET`); a pod sharing one (or the host's) keeps it.
// `apparmor_profile` is deprecated in CRI, but containerd 1.6 reads only it.
#[allow(deprecated)]
fn security_context(
    pod: &Pod,
    container: &Container,
    pid_target: Option<&str>,
) -> cri::LinuxContainerSecurityContext {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let privileged = sc.and_then(|sc| sc.privileged) == Some(true);
    let capabilities = sc.and_then(|sc| sc.capabilities.as_ref());
    let cap_names = |list: Option<&Vec<String>>| -> Vec<String> {
        list.into_iter()
            .flatten()
            .map(|c| cri_capability(c))
            .collect()
    };
    let add = cap_names(capabilities.and_then(|c| c.add.as_ref()));
    let drop = cap_names(capabilities.and_then(|c| c.drop.as_ref()));
    // allowPrivilegeEscalation is always true for privileged containers and
    // those with CAP_SYS_ADMIN; otherwise no_new_privs only when it is false.
    let no_new_privs = sc.and_then(|sc| sc.allow_privilege_escalation) == Some(false)
        && !privileged
        && !add.iter().any(|c| c == "SYS_ADMIN");
    let unmasked = privileged || sc.and_then(|sc| sc.proc_mount.as_deref()) == Some("Unmasked");
    let paths = |list: &[&str]| -> Vec<String> {
        if unmasked {
            Vec::new()
        } else {
            list.iter().map(|p| p.to_string()).collect()
        }
    };
    let mut supplemental_groups: Vec<i64> = pod_sc.and_then(|sc| sc.fs_group).into_iter().collect();
    supplemental_groups.extend(
        pod_sc
            .and_then(|sc| sc.supplemental_groups.clone())
            .unwrap_or_default(),
    );
    let int64 = |value: Option<i64>| value.map(|value| cri::Int64Value { value });
    let mut namespaces = namespace_options(pod);
    if let Some(id) = pid_target {
        if namespaces.pid == cri::NamespaceMode::Container as i32 {
            namespaces.pid = cri::NamespaceMode::Target as i32;
            namespaces.target_id = id.to_string();
        }
    }
    let (apparmor, apparmor_profile) = apparmor(pod, container).unzip();
    cri::LinuxContainerSecurityContext {
        capabilities: (!add.is_empty() || !drop.is_empty()).then(|| cri::Capability {
            add_capabilities: add,
            drop_capabilities: drop,
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(namespaces),
        run_as_user: int64(
            sc.and_then(|sc| sc.run_as_user)
                .or(pod_sc.and_then(|sc| sc.run_as_user)),
        ),
        run_as_group: int64(
            sc.and_then(|sc| sc.run_as_group)
                .or(pod_sc.and_then(|sc| sc.run_as_group)),
        ),
        readonly_rootfs: sc.and_then(|sc| sc.read_only_root_filesystem) == Some(true),
        supplemental_groups,
        no_new_privs,
        masked_paths: paths(DEFAULT_MASKED_PATHS),
        readonly_paths: paths(DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp(
            sc.and_then(|sc| sc.seccomp_profile.as_ref())
                .or(pod_sc.and_then(|sc| sc.seccomp_profile.as_ref())),
        )),
        apparmor,
        apparmor_profile: apparmor_profile.unwrap_or_default(),
        ..Default::default()
    }
}

/// The container's AppArmor profile as the kubelet's `getAppArmorProfile`
/// hands it to the runtime: the CRI profile and the older string form
/// (`runtime/default`, `localhost/<name>`, `unconfined`), which containerd
/// 1.6 reads. The container's field, else its annotation, else the pod's
/// field; none set lets the runtime choose. (The node admits a confining
/// profile only where AppArmor is enabled: `pods::apparmor`.)
fn apparmor(pod: &Pod, container: &Container) -> Option<(cri::SecurityProfile, String)> {
    use cri::security_profile::ProfileType;
    let annotation = || {
        let key = format!(
            "container.apparmor.security.beta.kubernetes.io/{}",
            container.name
        );
        let value = pod.metadata.annotations.as_ref()?.get(&key)?;
        Some(match value.as_str() {
            "runtime/default" => ("RuntimeDefault", None),
            "unconfined" => ("Unconfined", None),
            other => ("Localhost", Some(other.strip_prefix("localhost/")?)),
        })
    };
    let field = |p: &'_ AppArmorProfile| (p.type_.clone(), p.localhost_profile.clone());
    let (type_, localhost) = container
        .security_context
        .as_ref()
        .and_then(|sc| sc.app_armor_profile.as_ref())
        .map(field)
        .or_else(|| annotation().map(|(t, l)| (t.to_string(), l.map(str::to_string))))
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|sc| sc.app_armor_profile.as_ref())
                .map(field)
        })?;
    let profile = |profile_type: ProfileType, localhost_ref: String| cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref,
    };
    match (type_.as_str(), localhost) {
        ("RuntimeDefault", _) => Some((
            profile(ProfileType::RuntimeDefault, String::new()),
            "runtime/default".into(),
        )),
        ("Unconfined", _) => Some((
            profile(ProfileType::Unconfined, String::new()),
            "unconfined".into(),
        )),
        // The API server refuses Localhost without a name.
        ("Localhost", Some(name)) if !name.is_empty() => Some((
            profile(ProfileType::Localhost, name.clone()),
            format!("localhost/{name}"),
        )),
        _ => None,
    }
}

/// CRI capability names carry no `CAP_` prefix: containerd prepends it.
fn cri_capability(name: &str) -> String {
    let upper = name.to_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

/// The container's seccomp profile; none set means `Unconfined`, the
/// kubelet's default without `seccompDefault`.
fn seccomp(profile: Option<&SeccompProfile>) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType;
    let (profile_type, localhost_ref) = match profile.map(|p| p.type_.as_str()) {
        Some("RuntimeDefault") => (ProfileType::RuntimeDefault, String::new()),
        Some("Localhost") => (
            ProfileType::Localhost,
            format!(
                "{SECCOMP_PROFILE_ROOT}/{}",
                profile
                    .and_then(|p| p.localhost_profile.as_deref())
                    .unwrap_or_default()
            ),
        ),
        _ => (ProfileType::Unconfined, String::new()),
    };
    cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref,
    }
}
