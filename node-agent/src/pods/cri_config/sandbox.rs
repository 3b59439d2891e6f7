//! The CRI `PodSandboxConfig` of a Pod, as the kubelet's
//! `generatePodSandboxConfig`: identity, hostname, DNS, log directory, host
//! ports and the Linux namespaces and identity of the pod.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

use crate::pods::cri_config::dns::{pod_dns, ClusterDns};
use crate::pods::cri_config::error::ConfigError;
use crate::pods::cri_config::hostname::{kernel_hostname, pod_hostname};
use crate::pods::runtime_view::sandbox_labels;
use crate::pods::sysctls::with_dots;

/// What the sandbox needs besides the Pod.
#[derive(Debug, Clone, Copy)]
pub struct SandboxContext<'a> {
    /// Hostname of host-network pods.
    pub node_name: &'a str,
    /// Root of the pods' log directories (the kubelet's `/var/log/pods`).
    pub pod_logs_root: &'a Path,
    /// How many sandboxes the pod had before this one.
    pub attempt: u32,
    /// The node's resolver configuration
    /// ([`parse_resolv_conf`](crate::pods::cri_config::dns::parse_resolv_conf) of its resolv.conf).
    pub host_dns: &'a cri::DnsConfig,
    /// The cluster's DNS service and domain, for pods with cluster DNS.
    pub cluster_dns: ClusterDns<'a>,
}

/// The pod's log directory, `<root>/<namespace>_<name>_<uid>` as the kubelet lays out `/var/log/pods`.
pub fn pod_log_dir(pod_logs_root: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    pod_logs_root.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

/// The sandbox to create for the pod; fails only when `setHostnameAsFQDN`
/// asks for an FQDN longer than Linux takes.
pub fn sandbox_config(
    pod: &Pod,
    ctx: &SandboxContext<'_>,
) -> Result<cri::PodSandboxConfig, ConfigError> {
    let m = &pod.metadata;
    let name = m.name.as_deref().unwrap_or_default();
    let namespace = m.namespace.as_deref().unwrap_or("default");
    let uid = m.uid.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    // The kubelet's userns manager: a pod of its own user namespace cannot
    // run where the runtime does not offer one (FailedCreatePodSandBox).
    if spec.and_then(|s| s.host_users) == Some(false) {
        return Err(ConfigError::UserNamespacesUnsupported);
    }
    let host_network = is_host_network(pod);
    // On the host's network the pod shares the host's UTS namespace too:
    // the runtime may not set a hostname there (runc refuses), and the pod
    // sees the node's own, as with the kubelet.
    let hostname = if host_network {
        String::new()
    } else {
        kernel_hostname(pod, &pod_hostname(pod, ctx.cluster_dns.domain))?
    };
    let sc = spec.and_then(|s| s.security_context.as_ref());
    let sysctls = sc
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (with_dots(&s.name), s.value.clone()))
        .collect();
    let mut supplemental_groups: Vec<i64> = sc.and_then(|sc| sc.fs_group).into_iter().collect();
    supplemental_groups.extend(
        sc.and_then(|sc| sc.supplemental_groups.clone())
            .unwrap_or_default(),
    );
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            attempt: ctx.attempt,
        }),
        hostname,
        log_directory: pod_log_dir(ctx.pod_logs_root, pod).display().to_string(),
        dns_config: Some(pod_dns(pod, ctx.host_dns, &ctx.cluster_dns).config),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels(uid, name, namespace),
        annotations: m
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<HashMap<_, _>>(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: sc
                    .and_then(|sc| sc.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: sc
                    .and_then(|sc| sc.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                supplemental_groups,
                // containerd refuses privileged containers in an unprivileged sandbox.
                privileged: has_privileged_container(pod),
                // The pause container runs under the runtime's default seccomp profile.
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    })
}

pub(crate) fn is_host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// The pod's Linux namespaces, shared by its sandbox and containers.
pub fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    use cri::NamespaceMode::{Container, Node, Pod as PodMode};
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f) == Some(true)
    };
    let pid = if flag(|s| s.host_pid) {
        Node
    } else if flag(|s| s.share_process_namespace) {
        PodMode
    } else {
        Container
    };
    cri::NamespaceOption {
        network: if flag(|s| s.host_network) {
            Node
        } else {
            PodMode
        } as i32,
        pid: pid as i32,
        ipc: if flag(|s| s.host_ipc) { Node } else { PodMode } as i32,
        ..Default::default()
    }
}

fn has_privileged_container(pod: &Pod) -> bool {
    crate::pods::cri_config::env::all_containers(pod)
        .any(|c| c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true))
}

/// Host ports of the pod's containers, once each.
fn port_mappings(pod: &Pod) -> Vec<cri::PortMapping> {
    let mut mappings: Vec<cri::PortMapping> = Vec::new();
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    for port in containers.flat_map(|c| c.ports.iter().flatten()) {
        let Some(host_port) = port.host_port.filter(|p| *p > 0) else {
            continue;
        };
        let protocol = match port.protocol.as_deref() {
            Some("UDP") => cri::Protocol::Udp,
            Some("SCTP") => cri::Protocol::Sctp,
            _ => cri::Protocol::Tcp,
        };
        let mapping = cri::PortMapping {
            protocol: protocol as i32,
            container_port: port.container_port,
            host_port,
            host_ip: port.host_ip.clone().unwrap_or_default(),
        };
        if !mappings.contains(&mapping) {
            mappings.push(mapping);
        }
    }
    mappings
}
