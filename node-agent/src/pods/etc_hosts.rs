//! The `/etc/hosts` the kubelet gives a pod's containers (`makeHostsMount`,
//! `managedHostsFileContent`, `nodeHostsFileContent`): written to the pod's
//! directory as `etc-hosts` and bind-mounted at `/etc/hosts` in each
//! container that does not mount something there itself. Pure: the worker
//! writes the file.
//!
//! ```text
//!   pod network:   header, localhost lines, <pod IP> <fqdn> <hostname>, aliases
//!   host network:  header (host network), the node's /etc/hosts, aliases
//! ```
use std::fmt::Write;

use k8s_openapi::api::core::v1::{Container, HostAlias, Pod};

use crate::pods::cri_config::hostname::PodHostname;

/// Where containers see the file.
pub const ETC_HOSTS_PATH: &str = "/etc/hosts";
/// The file's name in the pod's directory, as the kubelet names it.
pub const ETC_HOSTS_FILE: &str = "etc-hosts";
/// First line of a file the kubelet made from the pod's IPs.
const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// First line of a host-network pod's copy of the node's file.
const HOST_NETWORK_HEADER: &str = "# Kubernetes-managed hosts file (host network).\n";

/// Whether the container gets the pod's hosts file (`shouldMountHostsFile`
/// and `makeMounts`): a host-network pod always, another once it has an IP,
/// and never a container that mounts a volume at `/etc/hosts` itself.
pub fn should_mount(pod: &Pod, container: &Container, pod_ips: &[String]) -> bool {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    let mounts_its_own = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == ETC_HOSTS_PATH);
    (host_network || !pod_ips.is_empty()) && !mounts_its_own
}

/// The file of a pod on the pod network: localhost, the pod's IPs with its
/// names (FQDN first when it has a domain), then the host aliases.
pub fn managed_hosts(pod_ips: &[String], names: &PodHostname, aliases: &[HostAlias]) -> String {
    let mut out = String::from(MANAGED_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        let _ = match &names.domain {
            Some(domain) => writeln!(out, "{ip}\t{}.{domain}\t{}", names.hostname, names.hostname),
            None => writeln!(out, "{ip}\t{}", names.hostname),
        };
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// The file of a host-network pod: the node's own `/etc/hosts` as it is,
/// then the host aliases.
pub fn host_network_hosts(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(HOST_NETWORK_HEADER);
    out.push_str(node_hosts);
    out.push_str(&alias_entries(aliases));
    out
}

/// `hostsEntriesFromHostAliases`: one line per alias, its names tab-separated.
fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        let _ = writeln!(out, "{}\t{names}", alias.ip);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(hostname: &str, domain: Option<&str>) -> PodHostname {
        PodHostname {
            hostname: hostname.into(),
            domain: domain.map(str::to_string),
        }
    }

    fn aliases() -> Vec<HostAlias> {
        serde_json::from_value(json!([
            {"ip": "123.45.67.89", "hostnames": ["foo", "bar"]},
            {"ip": "10.0.0.1", "hostnames": ["baz"]}
        ]))
        .unwrap()
    }

    const LOCALHOST: &str = "# Kubernetes-managed hosts file.\n\
        127.0.0.1\tlocalhost\n\
        ::1\tlocalhost ip6-localhost ip6-loopback\n\
        fe00::0\tip6-localnet\n\
        fe00::0\tip6-mcastprefix\n\
        fe00::1\tip6-allnodes\n\
        fe00::2\tip6-allrouters\n";

    #[test]
    fn pod_ips_with_the_hostname() {
        let ips = ["10.244.1.5".to_string()];
        assert_eq!(
            managed_hosts(&ips, &names("web-0", None), &[]),
            format!("{LOCALHOST}10.244.1.5\tweb-0\n")
        );
    }

    #[test]
    fn a_subdomain_puts_the_fqdn_first_for_every_ip() {
        let ips = ["10.244.1.5".to_string(), "fd00::5".to_string()];
        let names = names("db", Some("sts.shop.svc.cluster.local"));
        assert_eq!(
            managed_hosts(&ips, &names, &[]),
            format!(
                "{LOCALHOST}10.244.1.5\tdb.sts.shop.svc.cluster.local\tdb\n\
                 fd00::5\tdb.sts.shop.svc.cluster.local\tdb\n"
            )
        );
    }

    #[test]
    fn host_aliases_follow_in_their_own_section() {
        let ips = ["10.244.1.5".to_string()];
        let file = managed_hosts(&ips, &names("web-0", None), &aliases());
        assert!(file.ends_with(
            "10.244.1.5\tweb-0\n\n# Entries added by HostAliases.\n\
             123.45.67.89\tfoo\tbar\n10.0.0.1\tbaz\n"
        ));
    }

    #[test]
    fn host_network_pods_get_the_nodes_file_and_their_aliases() {
        let node = "127.0.0.1\tlocalhost\n10.0.0.2\tnode-a\n";
        assert_eq!(
            host_network_hosts(node, &[]),
            format!("# Kubernetes-managed hosts file (host network).\n{node}")
        );
        let file = host_network_hosts(node, &aliases());
        assert!(
            file.contains("node-a\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n")
        );
        // Not "managed" in the sense of the upstream test's prefix check.
        assert!(!file.starts_with(MANAGED_HEADER));
    }

    #[test]
    fn who_gets_the_file() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
        };
        let plain: Container = serde_json::from_value(json!({"name": "a"})).unwrap();
        let own: Container = serde_json::from_value(json!({"name": "b",
            "volumeMounts": [{"name": "h", "mountPath": "/etc/hosts"}]}))
        .unwrap();
        let on_pod_network = pod(json!({"containers": []}));
        let on_host_network = pod(json!({"containers": [], "hostNetwork": true}));
        let ips = ["10.244.1.5".to_string()];
        assert!(should_mount(&on_pod_network, &plain, &ips));
        assert!(!should_mount(&on_pod_network, &plain, &[]));
        assert!(!should_mount(&on_pod_network, &own, &ips));
        assert!(should_mount(&on_host_network, &plain, &[]));
        assert!(!should_mount(&on_host_network, &own, &[]));
    }
}
