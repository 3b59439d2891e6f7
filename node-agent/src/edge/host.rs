//! Facts about the machine the agent runs on, read once at start-up: what the
//! kubelet reports in a Node's capacity and `nodeInfo` (through cAdvisor there,
//! straight from /proc and /etc here).
//!
//! The parsers are pure and tested on sample text; [`HostFacts::read`] is the
//! only part that touches the filesystem.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

/// What the agent reports about its machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Online CPUs.
    pub cpus: u32,
    /// Physical memory, bytes (MemTotal).
    pub memory_bytes: u64,
    /// Size of the filesystem that holds `/var/lib` (the kubelet's root), bytes; 0 when unknown.
    pub ephemeral_storage_bytes: u64,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// DMI product UUID, or the machine id where there is none (VMs without DMI, containers).
    pub system_uuid: String,
    /// Changes on every boot; the node lifecycle controller uses it to notice reboots.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// PRETTY_NAME of /etc/os-release.
    pub os_image: String,
    /// `amd64`, `arm64`… as Kubernetes spells GOARCH.
    pub architecture: String,
    /// The kernel enforces AppArmor profiles (securityfs has `apparmor` and
    /// the module says `Y`), as runc's `apparmor.IsEnabled`.
    pub apparmor_enabled: bool,
}

impl HostFacts {
    /// Reads the facts from /proc, /sys and /etc. Missing files give empty
    /// values rather than errors: a Node with an unknown machine id still works.
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let machine_id = read("/etc/machine-id").trim().to_string();
        let system_uuid = match read("/sys/class/dmi/id/product_uuid").trim() {
            "" => machine_id.clone(),
            uuid => uuid.to_string(),
        };
        Self {
            cpus: parse_cpu_list(&read("/sys/devices/system/cpu/online"))
                .or_else(|| {
                    std::thread::available_parallelism()
                        .ok()
                        .map(|n| n.get() as u32)
                })
                .unwrap_or(1),
            memory_bytes: parse_mem_total(&read("/proc/meminfo")).unwrap_or(0),
            ephemeral_storage_bytes: filesystem_size(Path::new("/var/lib")).unwrap_or(0),
            machine_id,
            system_uuid,
            boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
            kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image: parse_pretty_name(&read("/etc/os-release"))
                .unwrap_or_else(|| "Linux".to_string()),
            architecture: kubernetes_arch(std::env::consts::ARCH).to_string(),
            apparmor_enabled: Path::new("/sys/kernel/security/apparmor").exists()
                && read("/sys/module/apparmor/parameters/enabled").starts_with('Y'),
        }
    }
}

/// Counts the CPUs of a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(list: &str) -> Option<u32> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    let mut count = 0u32;
    for part in list.split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u32, u32) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
                count += hi.checked_sub(lo)? + 1;
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                count += 1;
            }
        }
    }
    Some(count)
}

/// MemTotal of /proc/meminfo, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// PRETTY_NAME of an os-release file, unquoted.
pub fn parse_pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    (!value.is_empty()).then(|| value.to_string())
}

/// Rust's architecture name as Go (and so Kubernetes) spells it.
pub fn kubernetes_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

fn filesystem_size(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    stat.f_blocks.checked_mul(stat.f_frsize)
}

/// The address this machine uses to reach `peer` (the API server): the
/// source address of the route towards it, as the kubelet picks the address
/// of its default-route interface when given no `--node-ip`. Connecting a UDP
/// socket sends no packet.
pub fn source_address_towards(peer: SocketAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let socket = UdpSocket::bind(bind)?;
    socket.connect(peer)?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683652 kB\nMemFree:        19081500 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24683652 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn pretty_name_is_unquoted() {
        let os_release = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            parse_pretty_name(os_release).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_pretty_name("ID=x\n"), None);
    }

    #[test]
    fn architectures_are_spelled_as_go_does() {
        assert_eq!(kubernetes_arch("x86_64"), "amd64");
        assert_eq!(kubernetes_arch("aarch64"), "arm64");
    }

    #[test]
    fn source_address_towards_loopback_is_loopback() {
        let addr = source_address_towards("127.0.0.1:6443".parse().expect("address"));
        assert_eq!(addr.ok(), Some("127.0.0.1".parse().expect("address")));
    }
}
