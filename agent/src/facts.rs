//! What the agent reports about its host: CPU cores and memory as limited by cgroups (v1 and
//! v2) where they are, OS, kernel, architecture. Reads under a root prefix so tests can supply
//! their own /proc and /sys.

use std::path::Path;

use tasknode_protocol::validate::MAX_TEXT_LEN;
use tasknode_protocol::wire::HostFacts;

pub fn collect(root: &Path) -> HostFacts {
    let uts = rustix::system::uname();
    HostFacts {
        hostname: clean(&uts.nodename().to_string_lossy()),
        cpu_cores: cpu_cores(root),
        memory_bytes: memory_bytes(root),
        os: clean(&os_name(root)),
        arch: std::env::consts::ARCH.to_owned(),
        kernel: clean(&uts.release().to_string_lossy()),
        agent_version: crate::version().to_owned(),
    }
}

/// Cores this process may use: the smaller of the CPUs it may run on and a cgroup CPU quota.
pub fn cpu_cores(root: &Path) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    match cgroup_cpu_quota(root) {
        Some(q) if q > 0.0 => cpus.min(q),
        _ => cpus,
    }
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// cgroup v2 `cpu.max` ("quota period" or "max period"), else v1 `cpu.cfs_quota_us` /
/// `cpu.cfs_period_us`.
fn cgroup_cpu_quota(root: &Path) -> Option<f64> {
    if let Some(text) = read(root, "sys/fs/cgroup/cpu.max") {
        let mut parts = text.split_whitespace();
        let quota = parts.next()?.parse::<f64>().ok()?;
        let period = parts.next()?.parse::<f64>().ok()?;
        return (period > 0.0).then(|| quota / period);
    }
    let quota = read(root, "sys/fs/cgroup/cpu/cpu.cfs_quota_us")?
        .trim()
        .parse::<f64>()
        .ok()?;
    let period = read(root, "sys/fs/cgroup/cpu/cpu.cfs_period_us")?
        .trim()
        .parse::<f64>()
        .ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// Physical memory (`MemTotal`) or a cgroup memory limit, whichever is smaller.
pub fn memory_bytes(root: &Path) -> u64 {
    let total = read(root, "proc/meminfo")
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb.saturating_mul(1024));
    let limit = [
        "sys/fs/cgroup/memory.max",
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|rel| read(root, rel)?.trim().parse::<u64>().ok());
    match limit {
        // v1 reports "no limit" as a huge page-aligned number.
        Some(l) if l > 0 && (total == 0 || l < total) => l,
        _ => total.max(1),
    }
}

/// `PRETTY_NAME` from os-release, else the first line of redhat-release or alinux-release.
fn os_name(root: &Path) -> String {
    if let Some(text) = read(root, "etc/os-release")
        && let Some(v) = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))
    {
        return v.trim().trim_matches('"').to_owned();
    }
    ["etc/alinux-release", "etc/redhat-release"]
        .iter()
        .find_map(|rel| read(root, rel))
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Makes a host string acceptable to the console: no control characters, bounded length.
fn clean(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    let mut end = s.len().min(MAX_TEXT_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn cgroup_v2_limits_win_over_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "proc/meminfo",
            "MemTotal:       16303428 kB\nMemFree: 1 kB\n",
        );
        write(root, "sys/fs/cgroup/memory.max", "4294967296\n");
        write(root, "sys/fs/cgroup/cpu.max", "150000 100000\n");
        assert_eq!(memory_bytes(root), 4 << 30);
        assert!((cpu_cores(root) - 1.5).abs() < 1e-9 || cpu_cores(root) < 1.5);
    }

    #[test]
    fn cgroup_v1_unlimited_means_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "proc/meminfo", "MemTotal:       16303428 kB\n");
        write(
            root,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(root, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        write(root, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        assert_eq!(memory_bytes(root), 16303428 * 1024);
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        assert_eq!(cpu_cores(root), cpus);
    }

    #[test]
    fn os_name_falls_back_to_redhat_release() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "etc/redhat-release",
            "CentOS release 6.10 (Final)\n",
        );
        assert_eq!(os_name(dir.path()), "CentOS release 6.10 (Final)");
        write(
            dir.path(),
            "etc/os-release",
            "NAME=x\nPRETTY_NAME=\"Alibaba Cloud Linux 3\"\n",
        );
        assert_eq!(os_name(dir.path()), "Alibaba Cloud Linux 3");
    }

    #[test]
    fn host_strings_are_cleaned() {
        assert_eq!(clean("a\nb\0c"), "abc");
        assert_eq!(clean(&"é".repeat(300)).len(), 256);
    }
}
