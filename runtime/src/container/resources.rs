//! A container's resources (CRI `LinuxContainerResources`) as cgroup limits, written through the
//! `libcgroups` crate on cgroup v1 or v2 (the crate detects which). skiffd applies them to the
//! container's cgroup at CreateContainer, before its process exists and joins it, and again on
//! UpdateContainerResources.

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxResources,
    LinuxResourcesBuilder,
};
use skiff_proto::cri::LinuxContainerResources;
use skiff_shim::cgroups;

use crate::error::{Error, Result};

fn bad(field: &str, why: String) -> Error {
    Error::InvalidArgument(format!("resources.{field}: {why}"))
}

/// Checks the request's values and turns them into OCI resources.
pub fn to_oci(r: &LinuxContainerResources) -> Result<LinuxResources> {
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares != 0 {
        if !(2..=262_144).contains(&r.cpu_shares) {
            return Err(bad(
                "cpu_shares",
                format!("{} is outside 2..262144", r.cpu_shares),
            ));
        }
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_period != 0 {
        if !(1_000..=1_000_000).contains(&r.cpu_period) {
            return Err(bad(
                "cpu_period",
                format!("{} µs is outside 1000..1000000", r.cpu_period),
            ));
        }
        cpu = cpu.period(r.cpu_period as u64);
    }
    if r.cpu_quota != 0 {
        if r.cpu_quota != -1 && r.cpu_quota < 1_000 {
            return Err(bad(
                "cpu_quota",
                format!(
                    "{} µs is neither -1 (unlimited) nor at least 1000",
                    r.cpu_quota
                ),
            ));
        }
        cpu = cpu.quota(r.cpu_quota);
    }
    if !r.cpuset_cpus.is_empty() {
        check_cpuset("cpuset_cpus", &r.cpuset_cpus)?;
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        check_cpuset("cpuset_mems", &r.cpuset_mems)?;
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes != 0 {
        if r.memory_limit_in_bytes < 4 << 20 {
            return Err(bad(
                "memory_limit_in_bytes",
                format!(
                    "{} is below the 4 MiB a container needs to start",
                    r.memory_limit_in_bytes
                ),
            ));
        }
        memory = memory.limit(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes != 0 {
        if r.memory_swap_limit_in_bytes != -1
            && r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes
        {
            return Err(bad(
                "memory_swap_limit_in_bytes",
                format!(
                    "{} is below memory_limit_in_bytes {} (it counts memory plus swap)",
                    r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
                ),
            ));
        }
        memory = memory.swap(r.memory_swap_limit_in_bytes);
    }
    let mut hugepages = vec![];
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if h.page_size.is_empty() {
            return Err(bad(
                &format!("hugepage_limits[{i}].page_size"),
                "is empty".into(),
            ));
        }
        hugepages.push(
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(h.limit as i64)
                .build()
                .map_err(|e| Error::Internal(format!("hugepage limit: {e}")))?,
        );
    }
    if !r.unified.is_empty() && !cgroups::is_v2() {
        return Err(bad(
            "unified",
            "cgroup v2 keys were given and this node mounts cgroup v1".into(),
        ));
    }
    for k in r.unified.keys() {
        if k.contains('/') || k.contains("..") || !k.contains('.') {
            return Err(bad(
                "unified",
                format!("{k:?} is not a cgroup v2 file name"),
            ));
        }
    }
    LinuxResourcesBuilder::default()
        .cpu(
            cpu.build()
                .map_err(|e| Error::Internal(format!("cpu: {e}")))?,
        )
        .memory(
            memory
                .build()
                .map_err(|e| Error::Internal(format!("memory: {e}")))?,
        )
        .hugepage_limits(hugepages)
        .unified(
            r.unified
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .map_err(|e| Error::Internal(format!("resources: {e}")))
}

fn check_cpuset(field: &str, s: &str) -> Result<()> {
    let ok = s.split(',').all(|part| {
        let mut it = part.splitn(2, '-');
        let a = it
            .next()
            .map(|x| x.trim().parse::<u32>().is_ok())
            .unwrap_or(false);
        let b = it
            .next()
            .map(|x| x.trim().parse::<u32>().is_ok())
            .unwrap_or(true);
        a && b
    });
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{s:?} is not a cpu/node list like 0-2,4"),
        ))
    }
}

/// Creates the container's cgroup (if needed) and writes `r` into it.
pub fn apply(cgroup: &str, r: &LinuxContainerResources) -> Result<()> {
    let mut oci = to_oci(r)?;
    if !r.hugepage_limits.is_empty() && !hugetlb_available() {
        // kubelet sends a limit for every page size the node has; without the controller there
        // is nothing to limit them with (runc skips them too).
        if r.hugepage_limits.iter().any(|h| h.limit != 0) {
            tracing::warn!(cgroup, "hugepage limits given and this node's cgroups have no hugetlb controller: not applied");
        }
        oci.set_hugepage_limits(None);
    }
    cgroups::create(cgroup).map_err(|e| Error::io(format!("creating cgroup {cgroup}"), e))?;
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroup.into(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| Error::FailedPrecondition(format!("cgroup {cgroup}: {e}")))?;
    manager
        .apply(&ControllerOpt {
            resources: &oci,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| {
            Error::FailedPrecondition(format!("applying resources to cgroup {cgroup}: {e}"))
        })
}

/// What cgroup `cgroup` really holds, in the CRI's terms (ContainerStatus.resources after an
/// in-place resize): CPU shares (v2: from cpu.weight), quota and period, memory limit, cpusets,
/// read from the kernel's files on v1 or v2. What the files do not say (oom_score_adj, swap,
/// hugepages, unified) is `configured`'s. None when the cgroup does not exist.
pub fn read_back(
    cgroup: &str,
    configured: Option<&LinuxContainerResources>,
) -> Option<LinuxContainerResources> {
    let dirs = cgroups::dirs(cgroup).ok()?;
    if !dirs.iter().any(|d| d.is_dir()) {
        return None;
    }
    let f = crate::container::stats::CgroupFiles(&dirs);
    let mut r = configured.cloned().unwrap_or_default();
    let configured_shares = r.cpu_shares;
    if let Some(max) = cgroups::is_v2().then(|| f.read("cpu.max")).flatten() {
        // v2: "QUOTA PERIOD" or "max PERIOD".
        let mut it = max.split_whitespace();
        let (quota, period) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        if let Ok(p) = period.parse::<i64>() {
            r.cpu_period = p;
        }
        r.cpu_quota = match quota.parse::<i64>() {
            Ok(q) => q,
            Err(_) if r.cpu_quota > 0 => -1,
            Err(_) => r.cpu_quota,
        };
        if let Some(w) = f.number("cpu.weight") {
            // The configured shares when they map to this weight (the mapping loses
            // precision), else the weight mapped back.
            r.cpu_shares =
                if configured_shares > 0 && shares_to_weight(configured_shares as u64) == w {
                    configured_shares
                } else {
                    weight_to_shares(w) as i64
                };
        }
        r.memory_limit_in_bytes = match f.read("memory.max").as_deref().map(str::trim) {
            Some("max") | None => 0,
            Some(v) => v.parse().unwrap_or(0),
        };
    } else {
        // v1.
        if let Some(s) = f.number("cpu.shares") {
            r.cpu_shares = s as i64;
        }
        if let Some(p) = f.number("cpu.cfs_period_us") {
            r.cpu_period = p as i64;
        }
        if let Some(q) = f
            .read("cpu.cfs_quota_us")
            .and_then(|q| q.trim().parse::<i64>().ok())
        {
            r.cpu_quota = if q < 0 && r.cpu_quota <= 0 {
                r.cpu_quota
            } else {
                q
            };
        }
        if let Some(m) = f.number("memory.limit_in_bytes") {
            // v1's "no limit" is i64::MAX rounded down to a page.
            r.memory_limit_in_bytes = if m >= 1 << 62 { 0 } else { m as i64 };
        }
    }
    for (file, field) in [
        ("cpuset.cpus", &mut r.cpuset_cpus),
        ("cpuset.mems", &mut r.cpuset_mems),
    ] {
        // Only a configured cpuset is read back (an empty one stays empty).
        if field.is_empty() {
            continue;
        }
        if let Some(v) = f.read(file).map(|v| v.trim().to_string()) {
            if !v.is_empty() {
                *field = v;
            }
        }
    }
    Some(r)
}

/// cgroup v1 CPU shares as the v2 weight libcgroups writes for them: runc's quadratic fit
/// (runc 1.3.2), which keeps the extremes and maps the default 1024 to 100.
fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

/// The shares a v2 weight stands for: [`shares_to_weight`] solved for the shares, taken mid-way
/// in the range that rounds up to `weight`.
fn weight_to_shares(weight: u64) -> u64 {
    if weight == 100 {
        return 1024; // both defaults
    }
    let w = weight.clamp(1, 10_000) as f64 - 0.5;
    let c = 612.0 * (w.log10() + 7.0 / 34.0);
    let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * c).sqrt()) / 2.0;
    (2f64.powf(l).round() as u64).clamp(2, 262_144)
}

/// Whether this node's cgroups have the hugetlb controller: in the v2 root's controllers, or
/// mounted as a v1 hierarchy. Looked up once: it does not change while skiffd runs.
fn hugetlb_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(probe_hugetlb)
}

fn probe_hugetlb() -> bool {
    if cgroups::is_v2() {
        return std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .map(|c| c.split_whitespace().any(|x| x == "hugetlb"))
            .unwrap_or(false);
    }
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                l.split_once(" - ").is_some_and(|(_, fs)| {
                    let mut f = fs.split(' ');
                    f.next() == Some("cgroup")
                        && f.nth(1)
                            .is_some_and(|o| o.split(',').any(|x| x == "hugetlb"))
                })
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_map_back_to_shares() {
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        for shares in [2u64, 512, 1024, 2048, 100_000, 262_144] {
            let w = shares_to_weight(shares);
            assert_eq!(shares_to_weight(weight_to_shares(w)), w, "{shares}");
        }
        assert_eq!(weight_to_shares(100), 1024);
    }

    #[test]
    fn absurd_values_are_refused_by_field() {
        for (r, field) in [
            (
                LinuxContainerResources {
                    cpu_shares: 1,
                    ..Default::default()
                },
                "cpu_shares",
            ),
            (
                LinuxContainerResources {
                    cpu_period: 5,
                    ..Default::default()
                },
                "cpu_period",
            ),
            (
                LinuxContainerResources {
                    cpu_quota: -5,
                    ..Default::default()
                },
                "cpu_quota",
            ),
            (
                LinuxContainerResources {
                    memory_limit_in_bytes: -1,
                    ..Default::default()
                },
                "memory_limit_in_bytes",
            ),
            (
                LinuxContainerResources {
                    memory_limit_in_bytes: 100 << 20,
                    memory_swap_limit_in_bytes: 1 << 20,
                    ..Default::default()
                },
                "memory_swap_limit_in_bytes",
            ),
            (
                LinuxContainerResources {
                    cpuset_cpus: "0-x".into(),
                    ..Default::default()
                },
                "cpuset_cpus",
            ),
        ] {
            let e = to_oci(&r).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let ok = to_oci(&LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.memory().as_ref().unwrap().limit(), Some(64 << 20));
    }
}
