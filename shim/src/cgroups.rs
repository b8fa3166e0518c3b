//! Placing processes in cgroups (cgroupfs layout), shared by skiffd and the shim: the container's
//! init joins its cgroup before it execs, the supervisor reads OOM kills and member PIDs from it,
//! and skiffd removes it. Limits are applied elsewhere; this only creates, joins, reads, removes.
//!
//! On a cgroup v2 host (`/sys/fs/cgroup` is cgroup2) a cgroup is one directory. On v1 and hybrid
//! hosts it is one directory in each controller hierarchy mounted under `/sys/fs/cgroup`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the node mounts its cgroup hierarchies (v1) or its one cgroup2 tree.
pub const ROOT: &str = "/sys/fs/cgroup";
/// v1 hierarchies a container is placed in (those mounted on the host).
const V1_CONTROLLERS: &[&str] = &[
    "memory",
    "cpu,cpuacct",
    "cpu",
    "cpuacct",
    "pids",
    "cpuset",
    "blkio",
    "devices",
    "freezer",
    "hugetlb",
    "net_cls,net_prio",
    "perf_event",
];

/// Whether this host mounts the unified (v2) hierarchy at /sys/fs/cgroup. Read once per
/// process: a node's cgroup layout is set at boot.
pub fn is_v2() -> bool {
    static V2: OnceLock<bool> = OnceLock::new();
    *V2.get_or_init(|| {
        nix::sys::statfs::statfs(ROOT)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
    })
}

/// Checks a cgroup path is absolute-or-relative without `..` or empty components, and makes it
/// relative to the hierarchy roots.
pub fn clean_path(path: &str) -> Result<PathBuf, String> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Err("cgroup path is empty".into());
    }
    for comp in rel.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(format!(
                "cgroup path {path:?} has an empty, . or .. component"
            ));
        }
    }
    Ok(PathBuf::from(rel))
}

/// The directories that make up cgroup `path` on this host (existing or not).
pub fn dirs(path: &str) -> Result<Vec<PathBuf>, String> {
    let rel = clean_path(path)?;
    if is_v2() {
        return Ok(vec![Path::new(ROOT).join(rel)]);
    }
    Ok(v1_dirs(&rel))
}

/// The directories of cgroup `rel` (clean, relative) in this v1 host's hierarchies.
fn v1_dirs(rel: &Path) -> Vec<PathBuf> {
    v1_hierarchies().iter().map(|h| h.join(rel)).collect()
}

/// The roots of the v1 hierarchies mounted on this host, looked up once per process.
fn v1_hierarchies() -> &'static [PathBuf] {
    static ROOTS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        V1_CONTROLLERS
            .iter()
            .map(|c| Path::new(ROOT).join(c))
            // cpu and cpuacct are often one hierarchy with two names linking to it.
            .filter(|h| {
                h.is_dir()
                    && !fs::symlink_metadata(h)
                        .map(|m| m.is_symlink())
                        .unwrap_or(true)
            })
            .collect()
    })
}

/// Creates cgroup `path` in every hierarchy (cpuset.cpus/mems copied from the parent on v1,
/// where a new cpuset is otherwise empty and refuses tasks). On v2 the controllers are enabled
/// in each ancestor's `cgroup.subtree_control`, so that the new cgroup has their files.
pub fn create(path: &str) -> io::Result<()> {
    let rel = clean_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if is_v2() {
        let mut d = PathBuf::from(ROOT);
        for comp in rel.iter() {
            enable_controllers(&d)?;
            d.push(comp);
            match fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
            }
        }
        return Ok(());
    }
    create_v1(&v1_dirs(&rel))
}

/// Creates the directories `ds` of a v1 cgroup, one per hierarchy.
fn create_v1(ds: &[PathBuf]) -> io::Result<()> {
    for d in ds {
        if d.starts_with(Path::new(ROOT).join("cpuset")) {
            create_cpuset(d)?;
        } else {
            fs::create_dir_all(d)?;
        }
    }
    Ok(())
}

/// Controllers skiff sets limits with, enabled below a v2 cgroup when it has them.
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

/// Enables in `d`'s `cgroup.subtree_control` every controller of [`V2_CONTROLLERS`] that `d`
/// has and has not enabled yet. A cgroup holding processes (other than the root) refuses: the
/// error says so.
fn enable_controllers(d: &Path) -> io::Result<()> {
    let have = fs::read_to_string(d.join("cgroup.controllers")).unwrap_or_default();
    let on = fs::read_to_string(d.join("cgroup.subtree_control")).unwrap_or_default();
    let want: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| have.split_whitespace().any(|h| h == **c))
        .filter(|c| !on.split_whitespace().any(|h| h == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    fs::write(d.join("cgroup.subtree_control"), want.join(" ")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "enabling {} in {}/cgroup.subtree_control: {e}",
                want.join(" "),
                d.display()
            ),
        )
    })
}

fn create_cpuset(d: &Path) -> io::Result<()> {
    if d.is_dir() {
        return Ok(());
    }
    if let Some(parent) = d.parent() {
        if !parent.is_dir() {
            create_cpuset(parent)?;
        }
    }
    fs::create_dir(d).or_else(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    if let Some(parent) = d.parent() {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let cur = fs::read_to_string(d.join(f)).unwrap_or_default();
            if cur.trim().is_empty() {
                // On a v1 cpuset that balances load (all of them by default), each write of
                // cpuset.cpus rebuilds the kernel's scheduling domains under a global lock.
                let v = fs::read_to_string(parent.join(f))?;
                fs::write(d.join(f), v.trim())?;
            }
        }
    }
    // Cgroups made below this one start with its cpus and mems (the kernel copies them when it
    // creates the child, which rebuilds nothing), so a container's cpuset needs no writes.
    fs::write(d.join("cgroup.clone_children"), "1")?;
    Ok(())
}

/// Moves process `pid` into cgroup `path`, creating it as needed (on v2 without enabling
/// controllers: a process may be joining a leaf of the cgroup it is in).
pub fn join(path: &str, pid: i32) -> io::Result<()> {
    let ds = dirs(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if is_v2() {
        for d in &ds {
            fs::create_dir_all(d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        }
    } else {
        create(path)?;
    }
    for d in ds {
        fs::write(d.join("cgroup.procs"), pid.to_string())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
    }
    Ok(())
}

/// The devices every container may use (and any device may be created, not opened): the list
/// runc and containerd allow by default.
const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts
    "c 10:200 rwm", // tun
];

/// Restricts cgroup `path` (a leaf) to the default devices and the `extra` rules
/// (`c 8:0 rw` …): on v1 through the devices controller (deny all, then allow), on v2 with an
/// eBPF device filter attached to the cgroup ([`crate::devfilter`]). With `allow_all`
/// (privileged containers) nothing is restricted.
pub fn restrict_devices(path: &str, extra: &[String], allow_all: bool) -> io::Result<()> {
    if is_v2() {
        if allow_all {
            return Ok(());
        }
        let rules = ALLOWED_DEVICES
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .map(crate::devfilter::Rule::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let rel = clean_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        return crate::devfilter::attach(&Path::new(ROOT).join(rel), &rules);
    }
    let rel = clean_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let d = Path::new(ROOT).join("devices").join(rel);
    if !d.is_dir() {
        return Ok(());
    }
    // One rule per write(2), all through one open file.
    let open = |file: &str| {
        fs::OpenOptions::new()
            .write(true)
            .open(d.join(file))
            .map_err(|e| io::Error::new(e.kind(), format!("{}/{file}: {e}", d.display())))
    };
    let write = |f: &mut fs::File, file: &str, rule: &str| {
        f.write_all(rule.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("{}/{file} {rule:?}: {e}", d.display())))
    };
    let mut allow = open("devices.allow")?;
    if allow_all {
        return write(&mut allow, "devices.allow", "a");
    }
    write(&mut open("devices.deny")?, "devices.deny", "a")?;
    for rule in ALLOWED_DEVICES
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        write(&mut allow, "devices.allow", rule)?;
    }
    Ok(())
}

/// Moves the calling process, which must be single-threaded, into cgroup `path`.
///
/// On v1 hierarchies this writes `0` to `tasks`: moving only the current thread lets the kernel
/// skip the global threadgroup lock whose write side waits for an RCU grace period (10-30 ms
/// here, on every pod start), and for a single-threaded process the thread is the process.
pub fn join_self_single_threaded(path: &str) -> io::Result<()> {
    if is_v2() {
        return join(path, 0);
    }
    let rel = clean_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let ds = v1_dirs(&rel);
    create_v1(&ds)?;
    for d in ds {
        fs::write(d.join("tasks"), "0")
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
    }
    Ok(())
}

/// Delegates cgroup `path` to `uid`:`gid` (a pod user namespace's root, as the host numbers
/// it), as systemd delegates: the directory and the files a delegatee writes to manage its
/// processes and children, in every hierarchy. Limits stay the host's.
pub fn delegate(path: &str, uid: u32, gid: u32) -> io::Result<()> {
    let ds = dirs(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    for d in ds {
        for f in [
            "",
            "cgroup.procs",
            "tasks",
            "cgroup.threads",
            "cgroup.subtree_control",
        ] {
            let p = if f.is_empty() { d.clone() } else { d.join(f) };
            match std::os::unix::fs::chown(&p, Some(uid), Some(gid)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            }
        }
    }
    Ok(())
}

/// PIDs in cgroup `path` (and its children on v2 is not included: containers have none).
pub fn pids(path: &str) -> Vec<i32> {
    let Ok(ds) = dirs(path) else { return vec![] };
    let file = ds
        .iter()
        .find(|d| {
            is_v2()
                || d.starts_with(Path::new(ROOT).join("pids"))
                || d.starts_with(Path::new(ROOT).join("memory"))
        })
        .map(|d| d.join("cgroup.procs"));
    let Some(file) = file else { return vec![] };
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// How many processes the kernel's OOM killer killed in cgroup `path`.
pub fn oom_kills(path: &str) -> u64 {
    let Ok(ds) = dirs(path) else { return 0 };
    let (file, key) = if is_v2() {
        (ds.first().map(|d| d.join("memory.events")), "oom_kill")
    } else {
        (
            ds.iter()
                .find(|d| d.starts_with(Path::new(ROOT).join("memory")))
                .map(|d| d.join("memory.oom_control")),
            "oom_kill",
        )
    };
    let Some(file) = file else { return 0 };
    keyed_value(&file, key).unwrap_or(0)
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines, as `memory.stat`).
fn keyed_value(file: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(file)
        .ok()?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Removes cgroup `path` from every hierarchy (its processes must be gone). Absent is fine.
pub fn remove(path: &str) -> io::Result<()> {
    let ds = dirs(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    for d in ds {
        // v1: reclaim the page cache still charged to the cgroup first. Otherwise the removed
        // memory cgroup lingers in the kernel ("dying") for as long as those pages stay cached,
        // and every later cgroup operation on the node slows down with their count. A reclaim
        // costs milliseconds (the kernel walks every filesystem's shrinkers), so a cgroup with
        // no page cache (a pod's, once its containers' are gone) skips it.
        let force_empty = d.join("memory.force_empty");
        if force_empty.exists() && has_page_cache(&d) {
            let _ = fs::write(&force_empty, "0");
        }
        match fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
        }
    }
    Ok(())
}

/// Whether v1 memory cgroup directory `d` (its dying children included) holds page cache.
fn has_page_cache(d: &Path) -> bool {
    keyed_value(&d.join("memory.stat"), "total_cache").is_some_and(|v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_not_escape() {
        assert!(clean_path("/a/../b").is_err());
        assert!(clean_path("a//b").is_err());
        assert!(clean_path("/").is_err());
        assert_eq!(
            clean_path("/skiff/p/c").unwrap(),
            PathBuf::from("skiff/p/c")
        );
    }
}
