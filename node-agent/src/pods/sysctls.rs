//! Pod sysctls as the kubelet's `pkg/kubelet/sysctl` admits them: a sysctl
//! in the safe set (namespaced and isolated, so it cannot touch other pods)
//! or on the node's allowed list, and not one of a namespace the pod shares
//! with the host. Anything else rejects the pod with `SysctlForbidden`.
//!
//! The kubelet drops a safe sysctl whose kernel is too old to have it; this
//! node assumes a kernel of 4.15 or later, which has them all.
use k8s_openapi::api::core::v1::Pod;

use crate::pods::admit::Admission;

/// Reason of a rejection for a sysctl that is not allowed.
pub const REASON_SYSCTL_FORBIDDEN: &str = "SysctlForbidden";

/// The kubelet's `safeSysctls`.
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The kernel namespace a sysctl belongs to, where one is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Ipc,
    Net,
}

impl Namespace {
    fn of(sysctl: &str) -> Option<Self> {
        if sysctl == "kernel.sem"
            || ["kernel.shm", "kernel.msg", "fs.mqueue."]
                .iter()
                .any(|p| sysctl.starts_with(p))
        {
            Some(Self::Ipc)
        } else if sysctl.starts_with("net.") {
            Some(Self::Net)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ipc => "ipc",
            Self::Net => "net",
        }
    }
}

/// A sysctl name with `.` separators: one written with `/` first (as
/// `net/ipv4/conf/eth0.100/forwarding`) has its `/` and `.` swapped, the
/// sysctl.d(5) rule the kubelet applies.
pub fn with_dots(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(at) if name.as_bytes()[at] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                other => other,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Admits the pod's `securityContext.sysctls` against the safe set plus
/// `allowed_unsafe` (names, or prefixes ending in `*`, as the kubelet's
/// `--allowed-unsafe-sysctls`); the first one refused rejects the pod.
pub fn admit_sysctls(pod: &Pod, allowed_unsafe: &[String]) -> Admission {
    let Some(spec) = pod.spec.as_ref() else {
        return Admission::Admit;
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.sysctls.as_deref())
        .unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let host_ipc = spec.host_ipc == Some(true);
    for sysctl in sysctls {
        let name = with_dots(&sysctl.name);
        if let Err(why) = check(&name, allowed_unsafe, host_network, host_ipc) {
            return Admission::Reject {
                reason: REASON_SYSCTL_FORBIDDEN,
                message: format!("forbidden sysctl: {why}"),
            };
        }
    }
    Admission::Admit
}

fn check(
    name: &str,
    allowed_unsafe: &[String],
    host_network: bool,
    host_ipc: bool,
) -> Result<(), String> {
    let allowed = SAFE_SYSCTLS.contains(&name)
        || allowed_unsafe.iter().any(|pattern| {
            let pattern = with_dots(pattern);
            match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pattern == name,
            }
        });
    // The kubelet refuses at start-up an allowed pattern of no known
    // namespace; here such a sysctl is simply not allowed.
    let namespace = Namespace::of(name).filter(|_| allowed);
    match namespace {
        None => Err(format!("{name:?} not allowlisted")),
        Some(ns @ Namespace::Ipc) if host_ipc => Err(format!(
            "{name:?} not allowed with host {} enabled",
            ns.name()
        )),
        Some(ns @ Namespace::Net) if host_network => Err(format!(
            "{name:?} not allowed with host {} enabled",
            ns.name()
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn with_sysctls(names: &[&str], extra: serde_json::Value) -> Pod {
        let sysctls: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n, "value": "1"}))
            .collect();
        let mut spec = json!({"containers": [], "securityContext": {"sysctls": sysctls}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        pod(spec)
    }

    fn rejection(pod: &Pod, allowed: &[&str]) -> Option<String> {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        match admit_sysctls(pod, &allowed) {
            Admission::Admit => None,
            Admission::Reject { reason, message } => {
                assert_eq!(reason, "SysctlForbidden");
                Some(message)
            }
        }
    }

    #[test]
    fn safe_sysctls_are_admitted_and_others_rejected_as_the_kubelet_says() {
        for name in SAFE_SYSCTLS {
            assert_eq!(
                rejection(&with_sysctls(&[name], json!({})), &[]),
                None,
                "{name}"
            );
        }
        assert_eq!(rejection(&pod(json!({"containers": []})), &[]), None);
        let pod = with_sysctls(
            &[
                "kernel.shm_rmid_forced",
                "kernel.msgmax",
                "net.core.somaxconn",
            ],
            json!({}),
        );
        assert_eq!(
            rejection(&pod, &[]).as_deref(),
            Some("forbidden sysctl: \"kernel.msgmax\" not allowlisted")
        );
        assert_eq!(
            rejection(&pod, &["kernel.msg*"]).as_deref(),
            Some("forbidden sysctl: \"net.core.somaxconn\" not allowlisted")
        );
        assert_eq!(
            rejection(&pod, &["kernel.msg*", "net.core.somaxconn"]),
            None
        );
        // Allowed but in no known namespace: still refused.
        let vm = with_sysctls(&["vm.swappiness"], json!({}));
        assert!(rejection(&vm, &["vm.swappiness"]).is_some());
    }

    #[test]
    fn sysctls_of_a_namespace_shared_with_the_host_are_rejected() {
        let net = with_sysctls(&["net.ipv4.tcp_syncookies"], json!({"hostNetwork": true}));
        assert_eq!(
            rejection(&net, &[]).as_deref(),
            Some("forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled")
        );
        let ipc = with_sysctls(&["kernel.shm_rmid_forced"], json!({"hostIPC": true}));
        assert_eq!(
            rejection(&ipc, &[]).as_deref(),
            Some("forbidden sysctl: \"kernel.shm_rmid_forced\" not allowed with host ipc enabled")
        );
        let ipc_only = with_sysctls(&["net.ipv4.tcp_syncookies"], json!({"hostIPC": true}));
        assert_eq!(rejection(&ipc_only, &[]), None);
    }

    #[test]
    fn slash_separated_names_are_read_with_dots() {
        assert_eq!(
            with_dots("net/ipv4/tcp_syncookies"),
            "net.ipv4.tcp_syncookies"
        );
        assert_eq!(
            with_dots("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
        assert_eq!(
            with_dots("net.ipv4.conf.eth0/100.forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
        assert_eq!(with_dots("kernel"), "kernel");
        assert_eq!(
            rejection(&with_sysctls(&["net/ipv4/tcp_syncookies"], json!({})), &[]),
            None
        );
    }
}
