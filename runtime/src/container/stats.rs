//! Container stats for ContainerStats and ListContainerStats: CPU and memory from the
//! container's cgroup files (v1 or v2, whatever keys the kernel shows there), the writable layer's disk use from
//! its overlay upper directory.

use std::collections::HashMap;
use std::sync::Mutex;

use skiff_proto::cri::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage,
    MemoryUsage, PsiData, PsiStats, SwapUsage, UInt64Value,
};

use super::ContainerRecord;
use crate::error::Result;
use crate::store;

/// The last CPU sample of each container, for usage in nano-cores between two reads.
#[derive(Default)]
pub struct CpuSamples {
    last: Mutex<HashMap<String, (u64, i64)>>,
}

impl CpuSamples {
    /// Records `usage_ns` at `at_ns` and returns the rate since the previous sample, if any.
    fn rate(&self, id: &str, usage_ns: u64, at_ns: i64) -> Option<u64> {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = m.insert(id.to_string(), (usage_ns, at_ns));
        let (pu, pt) = prev?;
        let dt = at_ns.checked_sub(pt).filter(|d| *d > 0)? as u128;
        let du = usage_ns.checked_sub(pu)? as u128;
        Some((du * 1_000_000_000 / dt) as u64)
    }

    pub fn forget(&self, id: &str) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

fn u(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// Memory limits the kernel reports for "no limit" (v1's page-rounded i64::MAX, v2's max).
fn unlimited(limit: u64) -> bool {
    limit == 0 || limit >= 1 << 62
}

/// Stats of one container; cgroup figures are absent when it has no cgroup (never started).
pub fn collect(rec: &ContainerRecord, samples: &CpuSamples) -> Result<ContainerStats> {
    let cfg = rec.config();
    let now = skiff_shim::api::now_ns();
    let attributes = Some(ContainerAttributes {
        id: rec.id.clone(),
        metadata: cfg.metadata.clone(),
        labels: cfg.labels.clone(),
        annotations: cfg.annotations.clone(),
    });
    let upper = rec.writable_layer();
    let (bytes, inodes) = store::disk_usage(&upper)?;
    let writable_layer = Some(FilesystemUsage {
        timestamp: now,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: upper.display().to_string(),
        }),
        used_bytes: u(bytes),
        inodes_used: u(inodes),
    });
    let usage = cgroup_usage(&rec.cgroup, &rec.id, samples, now)?;
    let (cpu, memory, swap, io) = match usage {
        Some(u) => (Some(u.cpu), Some(u.memory), u.swap, u.io),
        None => (None, None, None, None),
    };
    Ok(ContainerStats {
        attributes,
        cpu,
        memory,
        writable_layer,
        swap,
        io,
    })
}

/// What a cgroup's files say, in the CRI's terms.
pub struct CgroupUsage {
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
    /// Swap: v2's memory.swap.current, v1's memsw usage less memory usage (absent when the
    /// kernel accounts no swap here).
    pub swap: Option<SwapUsage>,
    /// I/O pressure (v2 with PSI only).
    pub io: Option<IoUsage>,
    pub pids: u64,
}

/// CPU, memory and process count of cgroup `cgroup` (None when it does not exist). `key` names
/// the CPU sample kept for the nano-cores rate.
pub fn cgroup_usage(
    cgroup: &str,
    key: &str,
    samples: &CpuSamples,
    now: i64,
) -> Result<Option<CgroupUsage>> {
    let exists = skiff_shim::cgroups::dirs(cgroup)
        .map(|d| d.iter().any(|p| p.is_dir()))
        .unwrap_or(false);
    if !exists {
        return Ok(None);
    }
    let dirs = skiff_shim::cgroups::dirs(cgroup).unwrap_or_default();
    let files = CgroupFiles(&dirs);
    // v2's cpu.stat (usage_usec: present whether or not the cpu controller is enabled there, the
    // throttling lines only when it is), else v1's cpuacct.usage (ns).
    let usage = match files.keyed("cpu.stat").get("usage_usec") {
        Some(us) => us.saturating_mul(1000),
        None => files.number("cpuacct.usage").unwrap_or(0),
    };
    let cpu = CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: u(usage),
        usage_nano_cores: samples.rate(key, usage, now).and_then(u),
        psi: files.psi("cpu.pressure"),
    };
    let m = files.keyed("memory.stat");
    let get = |keys: &[&str]| keys.iter().find_map(|k| m.get(*k).copied());
    let mem_usage = files
        .number("memory.current")
        .or_else(|| files.number("memory.usage_in_bytes"))
        .unwrap_or(0);
    // "max" (v2's no limit) reads as none; v1's page-rounded i64::MAX is caught by `unlimited`.
    let limit = files
        .number("memory.max")
        .or_else(|| files.number("memory.limit_in_bytes"))
        .unwrap_or(0);
    let inactive_file = get(&["total_inactive_file", "inactive_file"]).unwrap_or(0);
    let working_set = mem_usage.saturating_sub(inactive_file);
    let available = (!unlimited(limit)).then(|| limit.saturating_sub(working_set));
    let memory = MemoryUsage {
        timestamp: now,
        working_set_bytes: u(working_set),
        available_bytes: available.and_then(u),
        usage_bytes: u(mem_usage),
        rss_bytes: get(&["total_rss", "rss", "anon"]).and_then(u),
        page_faults: get(&["total_pgfault", "pgfault"]).and_then(u),
        major_page_faults: get(&["total_pgmajfault", "pgmajfault"]).and_then(u),
        psi: files.psi("memory.pressure"),
    };
    let swap = match files.number("memory.swap.current") {
        Some(used) => Some((used, files.number("memory.swap.max"))),
        None => files
            .number("memory.memsw.usage_in_bytes")
            .map(|both| (both.saturating_sub(mem_usage), None)),
    }
    .map(|(used, max)| SwapUsage {
        timestamp: now,
        swap_usage_bytes: u(used),
        swap_available_bytes: max.map(|m| m.saturating_sub(used)).and_then(u),
    });
    let io = files.psi("io.pressure").map(|psi| IoUsage {
        timestamp: now,
        psi: Some(psi),
    });
    let pids = files.number("pids.current").unwrap_or(0);
    Ok(Some(CgroupUsage {
        cpu,
        memory,
        swap,
        io,
        pids,
    }))
}

/// A cgroup's files, read from whichever of its directories (one on v2, one per v1 hierarchy)
/// has them. Only what a file holds is read: a key or file the kernel does not show here (v2's
/// cpu.stat without the cpu controller, a v1 hierarchy not mounted) is simply absent.
pub(crate) struct CgroupFiles<'a>(pub(crate) &'a [std::path::PathBuf]);

impl CgroupFiles<'_> {
    /// File `name` of the cgroup. Among v1 hierarchies, a controller's file (`memory.stat`,
    /// `cpu.shares`) is looked for only in the hierarchy of that controller (`memory`,
    /// `cpu,cpuacct`): a file it lacks (v2's `cpu.max`) costs one failed open, not one per
    /// hierarchy. Other files (`cgroup.procs`) come from the first directory that has them.
    pub(crate) fn read(&self, name: &str) -> Option<String> {
        let controller = name.split('.').next().unwrap_or("");
        if self.0.len() > 1 {
            if let Some(d) = self.0.iter().find(|d| hierarchy_of(d, controller)) {
                return std::fs::read_to_string(d.join(name)).ok();
            }
        }
        self.0
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
    }

    /// A file holding one number ("max" and unreadable files give None).
    pub(crate) fn number(&self, name: &str) -> Option<u64> {
        self.read(name)?.trim().parse().ok()
    }

    /// A file of "key value" lines (cpu.stat, memory.stat).
    pub(crate) fn keyed(&self, name: &str) -> HashMap<String, u64> {
        self.read(name).map(|t| parse_keyed(&t)).unwrap_or_default()
    }

    /// A pressure file (cpu.pressure, memory.pressure, io.pressure: v2 with PSI).
    fn psi(&self, name: &str) -> Option<PsiStats> {
        parse_psi(&self.read(name)?)
    }
}

/// Whether `dir`, a cgroup's directory in a v1 hierarchy (`/sys/fs/cgroup/cpu,cpuacct/…`), is
/// in the hierarchy of `controller`.
fn hierarchy_of(dir: &std::path::Path, controller: &str) -> bool {
    dir.strip_prefix(skiff_shim::cgroups::ROOT)
        .ok()
        .and_then(|rel| rel.components().next())
        .is_some_and(|h| {
            h.as_os_str()
                .to_str()
                .is_some_and(|h| h.split(',').any(|c| c == controller))
        })
}

/// `some avg10=0.12 avg60=0.05 avg300=0.01 total=12345` (and a `full` line); totals are in
/// microseconds in the file, nanoseconds in the CRI.
fn parse_psi(text: &str) -> Option<PsiStats> {
    let line = |kind: &str| -> Option<PsiData> {
        let l = text.lines().find(|l| l.starts_with(kind))?;
        let mut d = PsiData::default();
        for field in l.split_whitespace().skip(1) {
            let (k, v) = field.split_once('=')?;
            match k {
                "avg10" => d.avg10 = v.parse().ok()?,
                "avg60" => d.avg60 = v.parse().ok()?,
                "avg300" => d.avg300 = v.parse().ok()?,
                "total" => d.total = v.parse::<u64>().ok()?.saturating_mul(1000),
                _ => {}
            }
        }
        Some(d)
    };
    let some = line("some ")?;
    Some(PsiStats {
        some: Some(some),
        full: line("full "),
    })
}

fn parse_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controllers_file_is_looked_for_in_its_own_hierarchy() {
        let p = std::path::Path::new;
        assert!(hierarchy_of(p("/sys/fs/cgroup/cpu,cpuacct/skiff/c"), "cpu"));
        assert!(hierarchy_of(
            p("/sys/fs/cgroup/cpu,cpuacct/skiff/c"),
            "cpuacct"
        ));
        assert!(!hierarchy_of(
            p("/sys/fs/cgroup/cpu,cpuacct/skiff/c"),
            "cpuset"
        ));
        assert!(hierarchy_of(p("/sys/fs/cgroup/memory/skiff/c"), "memory"));
        assert!(!hierarchy_of(p("/sys/fs/cgroup/memory/skiff/c"), "cgroup"));
        assert!(!hierarchy_of(p("/tmp/memory/c"), "memory"));
    }

    #[test]
    fn nano_cores_from_two_samples() {
        let s = CpuSamples::default();
        assert_eq!(s.rate("c", 1_000, 0), None);
        // Half a core: 0.5 s of CPU over 1 s.
        assert_eq!(s.rate("c", 500_001_000, 1_000_000_000), Some(500_000_000));
    }

    #[test]
    fn pressure_files_are_read_in_nanoseconds() {
        let p = parse_psi(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        let some = p.some.unwrap();
        assert_eq!((some.avg10, some.avg60, some.total), (1.5, 0.25, 1_234_000));
        assert_eq!(p.full.unwrap().total, 7000);
        assert!(parse_psi("").is_none());
    }

    #[test]
    fn cpu_stat_without_throttling_lines_is_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .unwrap();
        std::fs::write(d.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(d.path().join("memory.current"), "4096\n").unwrap();
        let dirs = [d.path().to_path_buf()];
        let f = CgroupFiles(&dirs);
        assert_eq!(f.keyed("cpu.stat").get("usage_usec"), Some(&1500));
        assert_eq!(f.number("memory.max"), None);
        assert_eq!(f.number("memory.current"), Some(4096));
        assert_eq!(f.number("pids.current"), None);
    }
}
