//! `skiff check`: the node preflight an operator runs before pointing kubelet at skiff. Each
//! check looks at the machine as skiffd would with the same configuration and says ok, warning
//! (skiff runs, something is missing or unwise) or error (skiffd or its pods will fail), with
//! what to do. The probes are skiffd's own (`userns::probe`, `network::current`,
//! `checkpoint::probe`, `apparmor::availability`, …), so what the check says is what skiffd
//! will find.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{CgroupDriver, Config};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The check's name (`kernel`, `cgroup`, `cni`, …).
    pub check: &'static str,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when ok).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Ok,
        detail: detail.into(),
        fix: String::new(),
    }
}

fn warning(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Warning,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn error(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Error,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// What loading the configuration `file` gave: ok, or the error skiffd would stop with.
pub fn config(file: &Path, failed: Option<String>) -> Finding {
    match failed {
        None if file.exists() => ok("config", format!("{}", file.display())),
        None => ok(
            "config",
            format!("{} does not exist: the defaults apply", file.display()),
        ),
        Some(e) => error(
            "config",
            e,
            "fix the config file: skiffd refuses to start with it",
        ),
    }
}

/// Every check, in the order they are printed.
pub fn run(cfg: &Config) -> Vec<Finding> {
    let mut out = vec![kernel(), cgroup(), systemd(cfg.cgroup_driver)];
    out.push(user_namespaces(cfg));
    out.push(overlayfs());
    out.push(seccomp());
    out.push(apparmor());
    out.push(selinux());
    out.push(criu(&cfg.criu_binary));
    out.push(cni(cfg));
    out.push(shim(cfg));
    out.extend(directories(cfg));
    out.push(clock());
    out.push(entropy());
    out
}

/// `major.minor` of a kernel release string (`6.12.48+deb13-cloud-amd64` → (6, 12)).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel() -> Finding {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    match kernel_version(&release) {
        Some(v) if v < (5, 12) => error(
            "kernel",
            format!("Linux {release}: older than 5.12"),
            "skiff needs Linux 5.12 or later (openat2, pidfd_open, mount_setattr): upgrade the kernel",
        ),
        Some(v) if v < (5, 19) => warning(
            "kernel",
            format!("Linux {release}: idmapped overlay mounts need 5.19"),
            "pods with hostUsers: false need Linux 5.19 or later (6.3 for their tmpfs volumes)",
        ),
        Some(_) => ok("kernel", format!("Linux {release}")),
        None => error(
            "kernel",
            format!("cannot read the kernel's version ({release:?})"),
            "check that uname(2) works",
        ),
    }
}

/// The controllers skiff needs to limit pods and the ones it uses when present.
const NEEDED_V2: [&str; 3] = ["cpu", "memory", "pids"];
const NEEDED_V1: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

fn cgroup() -> Finding {
    if skiff_shim::cgroups::is_v2() {
        let controllers =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let have: Vec<&str> = controllers.split_whitespace().collect();
        let missing: Vec<&str> = NEEDED_V2
            .iter()
            .copied()
            .filter(|c| !have.contains(c))
            .collect();
        if !missing.is_empty() {
            return error(
                "cgroup",
                format!(
                    "cgroup v2 without the {} controller(s) (has: {})",
                    missing.join(", "),
                    have.join(" ")
                ),
                "enable them in the kernel (CONFIG_MEMCG, CONFIG_CGROUP_PIDS, CONFIG_CGROUP_SCHED) \
                 and on its command line (cgroup_enable=memory)",
            );
        }
        return ok("cgroup", format!("v2, controllers: {}", have.join(" ")));
    }
    let root = Path::new("/sys/fs/cgroup");
    let missing: Vec<&str> = NEEDED_V1
        .iter()
        .copied()
        .filter(|c| !root.join(c).join("cgroup.procs").exists())
        .collect();
    if !missing.is_empty() {
        return error(
            "cgroup",
            format!(
                "no cgroup v2 at /sys/fs/cgroup, and cgroup v1 lacks the {} hierarchy(ies)",
                missing.join(", ")
            ),
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2), or mount the v1 \
             hierarchies",
        );
    }
    warning(
        "cgroup",
        "v1 (cpu, cpuacct, memory, pids, devices mounted): PSI, swap limits and memory.high are \
         v2-only",
        "boot with systemd.unified_cgroup_hierarchy=1: kubelet 1.35 and later refuse cgroup v1 \
         unless failCgroupV1 is false",
    )
}

fn systemd(driver: CgroupDriver) -> Finding {
    let running = Path::new("/run/systemd/system").is_dir();
    match (running, driver) {
        (true, CgroupDriver::Systemd) => ok(
            "systemd",
            "systemd runs the machine; cgroup_driver = systemd (pods are transient units)",
        ),
        (true, CgroupDriver::Cgroupfs) => warning(
            "systemd",
            "systemd runs the machine but cgroup_driver = cgroupfs: systemd and skiff would both \
             manage the cgroups",
            "set cgroup_driver = \"systemd\" in the config and cgroupDriver: systemd in kubelet's",
        ),
        (false, CgroupDriver::Systemd) => error(
            "systemd",
            "cgroup_driver = systemd, but systemd does not run this machine",
            "set cgroup_driver = \"cgroupfs\" in the config (and cgroupDriver: cgroupfs in \
             kubelet's)",
        ),
        (false, CgroupDriver::Cgroupfs) => ok(
            "systemd",
            "not running; cgroup_driver = cgroupfs (pods' shims run detached, without units)",
        ),
    }
}

/// `dir`, or its nearest ancestor that exists (skiffd creates the rest at start).
fn existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

fn user_namespaces(cfg: &Config) -> Finding {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if max == 0 {
        return warning(
            "user namespaces",
            "user.max_user_namespaces is 0",
            "pods with hostUsers: false need it: sysctl -w user.max_user_namespaces=65536",
        );
    }
    let (root, run_root) = (existing(&cfg.root), existing(&cfg.run_root));
    match crate::userns::probe(&root, &run_root) {
        Ok(()) => ok(
            "user namespaces",
            format!(
                "user namespaces and idmapped mounts work on {} and {}",
                root.display(),
                run_root.display()
            ),
        ),
        Err(e) => warning(
            "user namespaces",
            e,
            "pods with hostUsers: false are refused: put root on a filesystem that supports \
             idmapped mounts (ext4, xfs, btrfs, tmpfs on 6.3+)",
        ),
    }
}

fn overlayfs() -> Finding {
    // fsopen finds the filesystem type as a mount would, loading its module if need be.
    let name = c"overlay";
    // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(libc::SYS_fsopen, name.as_ptr(), 1 /* FSOPEN_CLOEXEC */)
    };
    if fd >= 0 {
        // SAFETY: fsopen returned a descriptor nothing else owns; it is closed once.
        unsafe { libc::close(fd as i32) };
        ok("overlayfs", "the kernel has the overlay filesystem")
    } else {
        error(
            "overlayfs",
            format!(
                "the kernel has no overlay filesystem (fsopen: {})",
                std::io::Error::last_os_error()
            ),
            "load the overlay module (modprobe overlay; add it to /etc/modules-load.d): \
             containers' root filesystems are overlays",
        )
    }
}

fn seccomp() -> Finding {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return error(
            "seccomp",
            "the kernel has no seccomp (no Seccomp: line in /proc/self/status)",
            "use a kernel built with CONFIG_SECCOMP_FILTER: RuntimeDefault profiles need it",
        );
    }
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "unknown".into());
    ok("seccomp", format!("seccomp filters; libseccomp {v}"))
}

fn apparmor() -> Finding {
    match crate::container::apparmor::availability().clone() {
        Ok(()) => ok(
            "apparmor",
            "enabled; containers get skiff-default unless they name a profile",
        ),
        Err(e) if crate::container::apparmor::enabled() => warning(
            "apparmor",
            e,
            "install the apparmor package: without apparmor_parser containers run unconfined",
        ),
        Err(_) => ok(
            "apparmor",
            "not enabled by the kernel (containers naming a Localhost profile are refused)",
        ),
    }
}

fn selinux() -> Finding {
    if !crate::container::selinux::enabled() {
        return ok(
            "selinux",
            "not enabled (pods asking for SELinux labels are refused)",
        );
    }
    let enforce = std::fs::read_to_string("/sys/fs/selinux/enforce").unwrap_or_default();
    let mode = if enforce.trim() == "1" {
        "enforcing"
    } else {
        "permissive"
    };
    ok(
        "selinux",
        format!("enabled, {mode}; containers get their pod's labels"),
    )
}

fn criu(binary: &Path) -> Finding {
    match crate::checkpoint::probe(binary) {
        Ok(v) => ok("criu", format!("criu {v}: checkpoint and restore work")),
        Err(e) => warning(
            "criu",
            e,
            format!(
                "install CRIU {}.{} or later (criu_binary in the config) for CheckpointContainer \
                 and restores; everything else works without it",
                crate::checkpoint::MIN_VERSION.0,
                crate::checkpoint::MIN_VERSION.1
            ),
        ),
    }
}

fn cni(cfg: &Config) -> Finding {
    match crate::network::current(
        &cfg.cni_conf_dir,
        &cfg.cni_bin_dirs,
        cfg.cni_conf_name.as_deref(),
    ) {
        Ok(list) => {
            let plugins: Vec<&str> = list
                .plugins
                .iter()
                .filter_map(|p| p["type"].as_str())
                .collect();
            ok(
                "cni",
                format!(
                    "network {:?} ({}): plugins {}",
                    list.name,
                    list.file.display(),
                    plugins.join(", ")
                ),
            )
        }
        // No configuration at all: host-network pods run, others wait for one.
        Err(e)
            if crate::network::cni::load_dir(&cfg.cni_conf_dir)
                .map(|l| l.is_empty())
                .unwrap_or(true)
                && cfg.cni_conf_name.is_none() =>
        {
            warning(
                "cni",
                e,
                format!(
                    "pods with their own network are refused until a network config is in {} \
                     (README, First steps, has a minimal bridge one); host-network pods run",
                    cfg.cni_conf_dir.display()
                ),
            )
        }
        Err(e) => error(
            "cni",
            e,
            format!(
                "install the plugin binaries in one of {} or fix the network config",
                cfg.cni_bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

fn shim(cfg: &Config) -> Finding {
    let configured = cfg.shim_binary.clone().or_else(|| {
        // `skiff` runs beside skiffd: the shim skiffd would find is next to both.
        std::env::current_exe()
            .ok()
            .map(|e| e.with_file_name("skiff-shim"))
    });
    match crate::pod::launch::locate_shim(configured.as_deref()) {
        Ok(p) => ok(
            "shim",
            format!("{} (protocol {})", p.display(), skiff_shim::api::PROTOCOL),
        ),
        Err(e) => error(
            "shim",
            e.to_string(),
            "install skiff-shim from skiffd's build next to skiffd, or set shim_binary in the \
             config",
        ),
    }
}

/// root, run_root and the socket's directory: owned by root and writable by no one else (they
/// hold pods' state and the CRI socket); the socket itself not open to others.
fn directories(cfg: &Config) -> Vec<Finding> {
    let socket_dir = cfg.listen.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut out = vec![];
    let mut problems = vec![];
    let mut seen = vec![];
    for (what, dir) in [
        ("root", &cfg.root),
        ("run_root", &cfg.run_root),
        ("the socket's directory", &socket_dir),
    ] {
        match std::fs::metadata(dir) {
            Ok(m) if m.uid() != 0 => problems.push(format!(
                "{what} {} is owned by uid {}",
                dir.display(),
                m.uid()
            )),
            Ok(m) if m.mode() & 0o022 != 0 => problems.push(format!(
                "{what} {} is writable by group or others (mode {:o})",
                dir.display(),
                m.mode() & 0o7777
            )),
            Ok(_) => seen.push(format!("{what} {}", dir.display())),
            Err(_) => seen.push(format!("{what} {} (created at start)", dir.display())),
        }
    }
    if let Ok(m) = std::fs::metadata(&cfg.listen) {
        if m.mode() & 0o007 != 0 {
            problems.push(format!(
                "the socket {} is open to others (mode {:o})",
                cfg.listen.display(),
                m.mode() & 0o7777
            ));
        }
    }
    if problems.is_empty() {
        out.push(ok(
            "permissions",
            format!("root-owned, not writable by others: {}", seen.join(", ")),
        ));
    } else {
        out.push(error(
            "permissions",
            problems.join("; "),
            "chown root: and chmod go-w the directories, chmod o-rwx the socket: whoever can \
             write them controls every pod",
        ));
    }
    out
}

fn clock() -> Finding {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 2025-01-01: a clock behind that is wrong, whatever NTP says.
    if now < 1_735_689_600 {
        return error(
            "clock",
            "the system clock is before 2025",
            "set the time (timedatectl, chrony): registries' TLS certificates and image \
             timestamps fail with a wrong clock",
        );
    }
    let mut tx = zeroed_timex();
    // SAFETY: adjtimex with modes 0 only reads the kernel's clock state into `tx`.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state == libc::TIME_ERROR {
        warning(
            "clock",
            "the system clock is not synchronized (adjtimex: TIME_ERROR)",
            "run an NTP client (systemd-timesyncd, chrony): certificates and log timestamps \
             need the right time",
        )
    } else {
        ok("clock", "synchronized")
    }
}

fn zeroed_timex() -> libc::timex {
    // SAFETY: timex is a plain C struct of integers, for which all zero bytes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn entropy() -> Finding {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    if n < 0 {
        warning(
            "entropy",
            "the kernel's random pool is not initialized yet (getrandom would block)",
            "wait for boot to finish or add an entropy source (virtio-rng, haveged): TLS to \
             registries blocks until it is ready",
        )
    } else {
        ok("entropy", "the kernel's random pool is initialized")
    }
}

/// The findings as `skiff check` prints them: one line each, then what to do.
pub fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        s.push_str(&format!(
            "{:<8} {:<16} {}\n",
            f.level.as_str(),
            f.check,
            f.detail
        ));
        if !f.fix.is_empty() {
            s.push_str(&format!("{:<25} → {}\n", "", f.fix));
        }
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings
        .iter()
        .filter(|f| f.level == Level::Warning)
        .count();
    s.push_str(&format!("{errors} error(s), {warnings} warning(s)\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.12.48+deb13-cloud-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("6.18"), Some((6, 18)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn rendering_counts_errors_and_warnings() {
        let text = render(&[
            ok("kernel", "Linux 6.18"),
            warning("cgroup", "v1", "boot with v2"),
            error("cni", "plugin \"x\" not found", "install it"),
        ]);
        assert!(text.contains("ok       kernel"), "{text}");
        assert!(text.contains("→ boot with v2"), "{text}");
        assert!(text.ends_with("1 error(s), 1 warning(s)\n"), "{text}");
    }
}
