//! The kubelet's own files in a pod's directory on the node, made when a
//! container starts and bind-mounted into it: the pod's `etc-hosts`
//! ([`crate::pods::etc_hosts`] says what it holds) and one empty
//! termination-message file per container instance under
//! `containers/<name>/` (the kubelet's `PodContainerDir`), which
//! [`crate::pods::termination_message`] reads back when it exits.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::pods::cri_config::hostname::PodHostname;
use crate::pods::etc_hosts;

/// `containers/<name>` in the pod's directory (the kubelet's 0750).
const CONTAINER_DIR_MODE: u32 = 0o750;
/// Any user the container runs as may write its message.
const TERMINATION_FILE_MODE: u32 = 0o666;

/// Writes the pod's hosts file into `pod_dir` (again at each container
/// start, as the kubelet does) and returns its mount at `/etc/hosts`.
pub fn etc_hosts_mount(
    pod_dir: &Path,
    pod: &Pod,
    pod_ips: &[String],
    names: &PodHostname,
) -> Result<cri::Mount, String> {
    let spec = pod.spec.as_ref();
    let aliases = spec
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    let content = if spec.and_then(|s| s.host_network) == Some(true) {
        let node_hosts = fs::read_to_string(etc_hosts::ETC_HOSTS_PATH)
            .map_err(|e| format!("reading the node's {}: {e}", etc_hosts::ETC_HOSTS_PATH))?;
        etc_hosts::host_network_hosts(&node_hosts, aliases)
    } else {
        etc_hosts::managed_hosts(pod_ips, names, aliases)
    };
    let path = pod_dir.join(etc_hosts::ETC_HOSTS_FILE);
    fs::create_dir_all(pod_dir)
        .and_then(|()| fs::write(&path, content))
        .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o644)))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(cri::Mount {
        container_path: etc_hosts::ETC_HOSTS_PATH.into(),
        host_path: path.display().to_string(),
        ..Default::default()
    })
}

/// A new empty file for this container instance's termination message,
/// mounted at its `terminationMessagePath`; none without a path.
pub fn termination_message_mount(
    pod_dir: &Path,
    container: &Container,
) -> Result<Option<cri::Mount>, String> {
    let Some(path_in_container) = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let dir = pod_dir.join("containers").join(&container.name);
    // Unique enough per instance, as the kubelet's random name.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    let file = dir.join(format!("{nanos:08x}"));
    fs::create_dir_all(&dir)
        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(CONTAINER_DIR_MODE)))
        .and_then(|()| fs::File::create(&file).map(drop))
        .and_then(|()| {
            fs::set_permissions(&file, fs::Permissions::from_mode(TERMINATION_FILE_MODE))
        })
        .map_err(|e| format!("creating {}: {e}", file.display()))?;
    Ok(Some(cri::Mount {
        container_path: path_in_container.to_string(),
        host_path: file.display().to_string(),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_termination_file_per_instance_writable_by_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "terminationMessagePath": "/dev/termination-log"}))
        .unwrap();
        let mount = termination_message_mount(dir.path(), &c).unwrap().unwrap();
        assert_eq!(mount.container_path, "/dev/termination-log");
        let file = Path::new(&mount.host_path);
        assert!(file.starts_with(dir.path().join("containers/app")));
        let meta = fs::metadata(file).unwrap();
        assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (0, 0o666));

        let bare: Container = serde_json::from_value(serde_json::json!({"name": "app"})).unwrap();
        assert_eq!(termination_message_mount(dir.path(), &bare).unwrap(), None);
    }

    #[test]
    fn the_hosts_file_lands_in_the_pod_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"}, "spec": {"containers": []}}))
        .unwrap();
        let names = PodHostname {
            hostname: "web".into(),
            domain: None,
        };
        let pod_dir = dir.path().join("uid-1");
        let mount = etc_hosts_mount(&pod_dir, &pod, &["10.0.0.5".into()], &names).unwrap();
        assert_eq!(mount.container_path, "/etc/hosts");
        let content = fs::read_to_string(pod_dir.join("etc-hosts")).unwrap();
        assert!(content.ends_with("10.0.0.5\tweb\n"));
    }
}
