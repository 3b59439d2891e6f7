//! The pod's hostname and domain, as the kubelet's
//! `GeneratePodHostNameAndDomain`, and the name its UTS namespace gets
//! (`GetNodenameForKernel`). Both the sandbox and the pod's `/etc/hosts`
//! ([`crate::pods::etc_hosts`]) take them from here.
use k8s_openapi::api::core::v1::Pod;

use crate::pods::cri_config::error::ConfigError;

/// Linux's limit on a hostname (64 bytes with the terminating NUL).
const MAX_HOSTNAME_LEN: usize = 63;
/// Linux's `nodename` field holds a 64-character FQDN.
const MAX_FQDN_LEN: usize = 64;

/// The pod's short hostname and, with `spec.subdomain`, its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHostname {
    /// `spec.hostnameOverride`, else `spec.hostname`, else the pod's name,
    /// cut to 63 characters.
    pub hostname: String,
    /// `<subdomain>.<namespace>.svc.<clusterDomain>`; none without a
    /// subdomain or with `hostnameOverride`.
    pub domain: Option<String>,
}

impl PodHostname {
    /// `hostname.domain`, or the hostname alone without a domain.
    pub fn fqdn(&self) -> String {
        match &self.domain {
            Some(domain) => format!("{}.{domain}", self.hostname),
            None => self.hostname.clone(),
        }
    }
}

/// The pod's hostname and domain. `hostnameOverride` (the HostnameOverride
/// feature, on in v1.37) replaces both: the pod then has no domain.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> PodHostname {
    let spec = pod.spec.as_ref();
    if let Some(name) = spec
        .and_then(|s| s.hostname_override.as_deref())
        .filter(|h| !h.is_empty())
    {
        return PodHostname {
            hostname: truncate(name),
            domain: None,
        };
    }
    let hostname = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .or(pod.metadata.name.as_deref())
        .unwrap_or_default();
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|subdomain| {
            format!(
                "{subdomain}.{}.svc.{cluster_domain}",
                pod.metadata.namespace.as_deref().unwrap_or("default")
            )
        });
    PodHostname {
        hostname: truncate(hostname),
        domain,
    }
}

/// The name the pod's UTS namespace gets: the FQDN with
/// `setHostnameAsFQDN` (when the pod has a domain), else the short name.
/// An FQDN longer than Linux takes fails the sandbox, as with the kubelet.
pub fn kernel_hostname(pod: &Pod, names: &PodHostname) -> Result<String, ConfigError> {
    let as_fqdn = pod.spec.as_ref().and_then(|s| s.set_hostname_as_fqdn) == Some(true);
    if !as_fqdn || names.domain.is_none() {
        return Ok(names.hostname.clone());
    }
    let fqdn = names.fqdn();
    if fqdn.len() > MAX_FQDN_LEN {
        return Err(ConfigError::FqdnTooLong {
            len: fqdn.len(),
            fqdn,
        });
    }
    Ok(fqdn)
}

/// At most 63 characters, without a trailing `-` or `.` after the cut.
fn truncate(hostname: &str) -> String {
    if hostname.len() <= MAX_HOSTNAME_LEN {
        return hostname.to_string();
    }
    let cut: String = hostname.chars().take(MAX_HOSTNAME_LEN).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn pod(spec: Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "app", "image": "busybox"}]);
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn name_hostname_and_subdomain() {
        let cases = [
            (json!({}), "web-0", None),
            (json!({"hostname": "db"}), "db", None),
            (
                json!({"hostname": "db", "subdomain": "sts"}),
                "db",
                Some("sts.shop.svc.cluster.local"),
            ),
            (
                json!({"subdomain": "sts"}),
                "web-0",
                Some("sts.shop.svc.cluster.local"),
            ),
            (
                json!({"hostname": "db", "subdomain": "sts", "hostnameOverride": "my.host"}),
                "my.host",
                None,
            ),
        ];
        for (spec, hostname, domain) in cases {
            let names = pod_hostname(&pod(spec.clone()), "cluster.local");
            assert_eq!(names.hostname, hostname, "{spec}");
            assert_eq!(names.domain.as_deref(), domain, "{spec}");
        }
    }

    #[test]
    fn long_names_are_cut_without_a_trailing_dash() {
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let names = pod_hostname(&pod(json!({"hostname": long})), "cluster.local");
        assert_eq!(names.hostname, "a".repeat(62));
    }

    #[test]
    fn the_kernel_gets_the_fqdn_only_when_asked_and_when_it_fits() {
        let plain = pod(json!({"hostname": "db", "subdomain": "sts"}));
        let names = pod_hostname(&plain, "cluster.local");
        assert_eq!(kernel_hostname(&plain, &names).unwrap(), "db");

        let fqdn = pod(json!({"hostname": "db", "subdomain": "sts", "setHostnameAsFQDN": true}));
        let names = pod_hostname(&fqdn, "cluster.local");
        assert_eq!(
            kernel_hostname(&fqdn, &names).unwrap(),
            "db.sts.shop.svc.cluster.local"
        );

        let no_domain = pod(json!({"setHostnameAsFQDN": true}));
        let names = pod_hostname(&no_domain, "cluster.local");
        assert_eq!(kernel_hostname(&no_domain, &names).unwrap(), "web-0");

        let long =
            pod(json!({"hostname": "h".repeat(40), "subdomain": "sts", "setHostnameAsFQDN": true}));
        let names = pod_hostname(&long, "cluster.local");
        let err = kernel_hostname(&long, &names).unwrap_err();
        assert!(
            err.to_string()
                .contains("is too long (64 characters is the max, 67 characters requested)"),
            "{err}"
        );
    }
}
