//! The node's readings for eviction and the kubelet's resource metrics (what
//! the kubelet's summary API gets from cAdvisor): the machine's memory working
//! set from the root memory cgroup, its CPU time from the root cpu cgroup,
//! filesystem sizes from statvfs, the process table's use, and the disk use
//! of a directory tree. Plain reads of `/proc`, `/sys/fs/cgroup` and the
//! filesystem; the arithmetic on them is in [`crate::eviction::signals`] and
//! [`crate::kubelet_server::summary`].

use std::io;
use std::path::Path;

/// The machine's memory as the kubelet's `memory.available` sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// `MemTotal`.
    pub capacity: u64,
    /// The root cgroup's usage (cgroup v1 `memory.usage_in_bytes`; on v2,
    /// `MemTotal - MemFree`).
    pub usage: u64,
    /// Inactive file pages, reclaimable without eviction
    /// (`total_inactive_file` on v1, `inactive_file` on v2).
    pub inactive_file: u64,
}

/// One filesystem's size and what is left of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsReading {
    pub capacity_bytes: u64,
    /// Bytes an unprivileged writer may still use (`f_bavail`), as cAdvisor counts them.
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// The process table: its size and use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidReading {
    /// The smaller of `kernel.pid_max` and `kernel.threads-max`, as the kubelet takes it.
    pub max: u64,
    /// Tasks (threads) in the system, as `/proc/loadavg` counts them.
    pub running: u64,
}

/// Reads the root memory cgroup (v1 when the memory hierarchy is mounted,
/// as on this project's hosts; v2 otherwise).
pub fn memory() -> io::Result<MemoryReading> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| meminfo_field(&meminfo, name);
    let capacity = field("MemTotal").ok_or_else(|| missing("MemTotal in /proc/meminfo"))?;
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    if v1.exists() {
        let usage = read_number(v1)?;
        let stat = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.stat")?;
        return Ok(MemoryReading {
            capacity,
            usage,
            inactive_file: stat_field(&stat, "total_inactive_file").unwrap_or(0),
        });
    }
    let free = field("MemFree").ok_or_else(|| missing("MemFree in /proc/meminfo"))?;
    let stat = std::fs::read_to_string("/sys/fs/cgroup/memory.stat").unwrap_or_default();
    Ok(MemoryReading {
        capacity,
        usage: capacity.saturating_sub(free),
        inactive_file: stat_field(&stat, "inactive_file").unwrap_or(0),
    })
}

/// Swap in use on the machine (`SwapTotal - SwapFree`), bytes.
pub fn swap_usage() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| meminfo_field(&meminfo, name).unwrap_or(0);
    Ok(field("SwapTotal").saturating_sub(field("SwapFree")))
}

/// The CPU time the machine has used, all cores, in nanoseconds: the root
/// cgroup's (`cpuacct.usage` on cgroup v1, `usage_usec` of `cpu.stat` on v2),
/// as cAdvisor reads `/` for the kubelet; `/proc/stat` where neither is there.
pub fn cpu_usage_nanoseconds() -> io::Result<u64> {
    for v1 in [
        "/sys/fs/cgroup/cpuacct/cpuacct.usage",
        "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage",
    ] {
        if let Ok(usage) = read_number(Path::new(v1)) {
            return Ok(usage);
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/sys/fs/cgroup/cpu.stat") {
        if let Some(usec) = stat_field(&stat, "usage_usec") {
            return Ok(usec.saturating_mul(1000));
        }
    }
    let stat = std::fs::read_to_string("/proc/stat")?;
    // /proc/stat counts in USER_HZ, which the kernel fixes at 100 for user space.
    proc_stat_cpu_nanoseconds(&stat, 100).ok_or_else(|| missing("the cpu line of /proc/stat"))
}

/// When the machine booted, seconds since the epoch (`btime` of `/proc/stat`).
pub fn boot_time_seconds() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .ok_or_else(|| missing("btime in /proc/stat"))
}

/// The busy time of `/proc/stat`'s `cpu` line (user, nice, system, irq,
/// softirq, steal; idle and iowait left out) in nanoseconds, for `ticks` per second.
pub fn proc_stat_cpu_nanoseconds(stat: &str, ticks: u64) -> Option<u64> {
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    (ticks > 0).then(|| busy.saturating_mul(1_000_000_000) / ticks)
}

/// statvfs of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> io::Result<FsReading> {
    let stat = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(FsReading {
        capacity_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        available_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        inodes: stat.f_files,
        inodes_free: stat.f_ffree,
    })
}

/// The device of the filesystem holding `path` (two paths on one
/// filesystem have the same).
pub fn device(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.dev())
}

/// The process table's size and use.
pub fn pids() -> io::Result<PidReading> {
    let pid_max = read_number(Path::new("/proc/sys/kernel/pid_max"))?;
    let threads_max = read_number(Path::new("/proc/sys/kernel/threads-max")).unwrap_or(pid_max);
    let loadavg = std::fs::read_to_string("/proc/loadavg")?;
    let running = parse_loadavg_tasks(&loadavg).ok_or_else(|| missing("tasks in /proc/loadavg"))?;
    Ok(PidReading {
        max: pid_max.min(threads_max),
        running,
    })
}

/// Disk use of the tree at `root`, as `du` counts it (allocated blocks; hard
/// links once is not attempted), without following links or leaving the
/// filesystem of `root`, and stopping after `max_entries` entries so a
/// directory of millions of files costs a bounded walk (the total is then a
/// lower bound, which is what a limit check needs). A missing root is 0.
pub fn disk_usage(root: &Path, max_entries: usize) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    let device = top.dev();
    let mut total = top.blocks() * 512;
    let mut seen = 1usize;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return total;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

fn read_number(path: &Path) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|_| missing(&format!("a number in {}", path.display())))
}

fn missing(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot read {what}"))
}

/// A `/proc/meminfo` field in bytes (`MemTotal:  24683456 kB`).
pub fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        if key != name {
            return None;
        }
        let mut parts = rest.split_whitespace();
        let number: u64 = parts.next()?.parse().ok()?;
        Some(match parts.next() {
            Some("kB") => number * 1024,
            _ => number,
        })
    })
}

/// A `memory.stat` field (`total_inactive_file 123`).
pub fn stat_field(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// The task count of `/proc/loadavg` (`0.10 0.20 0.30 2/345 6789`: 345).
pub fn parse_loadavg_tasks(loadavg: &str) -> Option<u64> {
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_and_cgroup_files_are_read_as_the_kernel_writes_them() {
        let meminfo = "MemTotal:       24683456 kB\nMemFree:         5895448 kB\n";
        assert_eq!(meminfo_field(meminfo, "MemTotal"), Some(24_683_456 * 1024));
        assert_eq!(meminfo_field(meminfo, "MemFree"), Some(5_895_448 * 1024));
        assert_eq!(meminfo_field(meminfo, "Mem"), None);
        let stat = "cache 10\ntotal_inactive_file 4096\ninactive_file 1\n";
        assert_eq!(stat_field(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_field(stat, "inactive_file"), Some(1));
        assert_eq!(
            parse_loadavg_tasks("0.10 0.20 0.30 2/345 6789\n"),
            Some(345)
        );
        assert_eq!(parse_loadavg_tasks("garbage"), None);
        let proc_stat = "cpu  100 10 50 9000 40 0 5 2 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        // user + nice + system + irq + softirq + steal = 167 ticks of 10 ms.
        assert_eq!(
            proc_stat_cpu_nanoseconds(proc_stat, 100),
            Some(1_670_000_000)
        );
        assert_eq!(proc_stat_cpu_nanoseconds("intr 1 2", 100), None);
        assert_eq!(
            stat_field("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            Some(1234)
        );
    }

    #[test]
    fn disk_usage_counts_blocks_and_stops_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(dir.path().join("b"), vec![1u8; 64 * 1024]).unwrap();
        let all = disk_usage(dir.path(), 1000);
        assert!(all >= 128 * 1024, "{all}");
        assert!(disk_usage(dir.path(), 2) < all);
        assert_eq!(disk_usage(&dir.path().join("missing"), 1000), 0);
    }
}
