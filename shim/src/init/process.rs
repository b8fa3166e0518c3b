//! The last steps before a container process runs, shared by container init and exec: terminal,
//! rlimits, working directory, user and groups, capabilities, no_new_privs, closing
//! every inherited descriptor, the seccomp filter, and exec with the spec's environment.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Process;
use skiff_shim::fsutil;

use crate::init::seccomp::Filter;

type R<T> = Result<T, String>;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `process` in place of this one, with `filter` loaded just before the exec.
pub fn exec_process(process: &Process, filter: Option<&Filter>) -> R<Infallible> {
    if !process.terminal().unwrap_or(false) {
        // A session of its own, as with a terminal: the container's processes share nothing
        // with the shim's (what CRIU needs to checkpoint them too). An exec helper has made one
        // already (EPERM).
        let _ = nix::unistd::setsid();
    } else {
        // The pty slave on fds 0-2 becomes our controlling terminal.
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        // SAFETY: TIOCSCTTY on fd 0 with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!(
                "making the pty the controlling terminal (fd 0 is {:?}): {}",
                std::fs::read_link("/proc/self/fd/0").ok(),
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(profile) = process.apparmor_profile() {
        apparmor_on_exec(profile)?;
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        // SELinux's exec attribute (a node runs SELinux or AppArmor, never both): the label
        // the next exec transitions to.
        write_proc_attr(Path::new("/proc/thread-self/attr/exec"), label)
            .map_err(|e| format!("setting SELinux label {label:?}: {e}"))?;
    }
    for rl in process.rlimits().iter().flatten() {
        let res = rlimit_resource(&format!("{:?}", rl.typ()))?;
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(format!(
                "setting rlimit {:?} to soft {} hard {}: {}",
                rl.typ(),
                rl.soft(),
                rl.hard(),
                std::io::Error::last_os_error()
            ));
        }
    }
    // Every inherited descriptor is close-on-exec before the working directory is touched, and
    // the directory is resolved inside the root (no symlink or /proc magic link out of it:
    // CVE-2024-21626); created as root (containerd does too for the image's WorkingDir),
    // entered as the user.
    close_inherited_fds();
    let cwd = process.cwd();
    let cwd_fd = if cwd.as_os_str().is_empty() {
        None
    } else {
        if !cwd.is_absolute() {
            return Err(format!("cwd {}: not an absolute path", cwd.display()));
        }
        let root = fsutil::open_dir(Path::new("/")).map_err(|e| format!("opening /: {e}"))?;
        Some(match fsutil::clean(cwd) {
            Some(rel) => fsutil::mkdir_all_in_root(&root, &rel)
                .map_err(|e| format!("creating cwd {}: {e}", cwd.display()))?,
            None => root,
        })
    };
    let user = process.user();
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    // Loading a filter needs no_new_privs or CAP_SYS_ADMIN. Without no_new_privs we keep
    // CAP_SYS_ADMIN effective until the filter is in: the exec drops it again, since it is not in
    // the bounding set unless the container was granted it.
    set_user_and_caps(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
        process,
        filter.is_some() && !no_new_privs,
    )?;
    if let Some(fd) = cwd_fd {
        nix::unistd::fchdir(fd.as_raw_fd()).map_err(|e| format!("chdir {}: {e}", cwd.display()))?;
        // Reachable from the root, or getcwd fails.
        std::env::current_dir()
            .map_err(|e| format!("cwd {}: outside the container's root: {e}", cwd.display()))?;
    }
    if no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
    }
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    if args.is_empty() {
        return Err("the container has no command".into());
    }
    let path = resolve(&args[0], &env)?;
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in command")?;
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| format!("NUL in argument {a:?}")))
        .collect::<R<_>>()?;
    let cenv: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_bytes()).map_err(|_| format!("NUL in env {e:?}")))
        .collect::<R<_>>()?;
    // The last step before exec: from here on only execve runs under the filter.
    if let Some(f) = filter {
        f.load()?;
    }
    let e = match nix::unistd::execve(&cpath, &cargs, &cenv) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(format!("exec {:?}: {e}", args[0]))
}

/// Makes AppArmor profile `name` this process's from its next exec on (as aa_change_onexec):
/// `exec <name>` into the process's AppArmor exec attribute (the LSM-specific file, or the
/// generic one of older kernels).
fn apparmor_on_exec(name: &str) -> R<()> {
    let value = format!("exec {name}");
    let mut last = None;
    for f in ["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"] {
        match write_proc_attr(Path::new(f), &value) {
            Ok(()) => return Ok(()),
            // Only a kernel without the LSM-specific file moves on to the generic one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => last = Some(format!("{f}: {e}")),
            Err(e) => return Err(format!("setting AppArmor profile {name:?}: {f}: {e}")),
        }
    }
    Err(format!(
        "setting AppArmor profile {name:?}: {}",
        last.unwrap_or_default()
    ))
}

/// Writes an LSM attribute file of this process, after making sure the file opened is on
/// procfs: after pivot_root, /proc is the container's to shape (a symlink in the image, a volume
/// over it), and a label written to an ordinary file would leave the container unconfined.
fn write_proc_attr(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let fs = nix::sys::statfs::fstatfs(&f)?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(std::io::Error::other(format!(
            "{} is not on procfs: refusing to run the container unconfined",
            path.display()
        )));
    }
    f.write_all(value.as_bytes())
}

/// The process's oom_score_adj, if the spec sets one. Init and exec set it before joining the
/// container's namespaces: from inside a user namespace, /proc/self of our non-dumpable process
/// is not ours to write. Inherited across fork and exec.
pub fn set_oom_score_adj(process: &Process) -> R<()> {
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("setting oom_score_adj {adj}: {e}"))?;
    }
    Ok(())
}

/// The type setrlimit takes for a resource: an enum in glibc, an int in musl.
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

fn rlimit_resource(name: &str) -> R<RlimitResource> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "RLIMITCPU" | "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMITFSIZE" | "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMITDATA" | "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMITSTACK" | "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMITCORE" | "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMITRSS" | "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMITNPROC" | "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMITNOFILE" | "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMITMEMLOCK" | "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMITAS" | "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMITLOCKS" | "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMITSIGPENDING" | "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMITMSGQUEUE" | "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMITNICE" | "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMITRTPRIO" | "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMITRTTIME" | "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        other => return Err(format!("unknown rlimit {other}")),
    })
}

fn cap_set(names: Option<&oci_spec::runtime::Capabilities>) -> R<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in names.into_iter().flatten() {
        let name = format!("CAP_{}", c.to_string().trim_start_matches("CAP_"));
        let cap: Capability = name
            .parse()
            .map_err(|_| format!("capability {name} is unknown to this kernel"))?;
        out.insert(cap);
    }
    Ok(out)
}

/// Groups, then gid and uid keeping capabilities across the switch, then the spec's capability
/// sets (bounding first: dropping from it needs the full set we hold as root). With
/// `keep_sys_admin`, CAP_SYS_ADMIN also stays effective and permitted (not bounding) for loading
/// the seccomp filter; the exec drops it.
fn set_user_and_caps(
    uid: u32,
    gid: u32,
    groups: &[u32],
    process: &Process,
    keep_sys_admin: bool,
) -> R<()> {
    let caps_spec = process.capabilities().as_ref();
    let bounding = cap_set(caps_spec.and_then(|c| c.bounding().as_ref()))?;
    let effective = cap_set(caps_spec.and_then(|c| c.effective().as_ref()))?;
    let permitted = cap_set(caps_spec.and_then(|c| c.permitted().as_ref()))?;
    let inheritable = cap_set(caps_spec.and_then(|c| c.inheritable().as_ref()))?;
    let ambient = cap_set(caps_spec.and_then(|c| c.ambient().as_ref()))?;
    // Only capabilities this kernel knows can be in its bounding set.
    for cap in caps::runtime::thread_all_supported() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
    }
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups {groups:?}: {e}"))?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| format!("setgid {gid}: {e}"))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| format!("setuid {uid}: {e}"))?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    // A capability the node does not grant us (not in our bounding set) cannot be given to the
    // container; everything else is.
    let available = caps::read(None, CapSet::Bounding).map_err(|e| format!("bounding set: {e}"))?;
    let mut effective: CapsHashSet = effective.intersection(&available).copied().collect();
    let mut permitted: CapsHashSet = permitted.intersection(&available).copied().collect();
    if keep_sys_admin {
        effective.insert(Capability::CAP_SYS_ADMIN);
        permitted.insert(Capability::CAP_SYS_ADMIN);
    }
    let inheritable: CapsHashSet = inheritable.intersection(&available).copied().collect();
    let ambient: CapsHashSet = ambient.intersection(&available).copied().collect();
    caps::set(None, CapSet::Effective, &effective).map_err(|e| format!("effective caps: {e}"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| format!("permitted caps: {e}"))?;
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| format!("inheritable caps: {e}"))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("ambient caps: {e}"))?;
    for cap in ambient {
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|e| format!("raising ambient {cap}: {e}"))?;
    }
    Ok(())
}

/// Marks every descriptor above 2 close-on-exec: nothing of ours reaches the container
/// (CVE-2024-21626), and the sync socket closes exactly when exec succeeds.
fn close_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        // Older kernels: walk /proc/self/fd.
        if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = rd
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .filter(|fd| *fd > 2)
                .collect();
            for fd in fds {
                // SAFETY: F_SETFD with an integer flag on a descriptor number.
                unsafe {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// Finds `cmd` on the container's PATH (from its environment), as execvp would.
fn resolve(cmd: &str, env: &[String]) -> R<PathBuf> {
    if cmd.contains('/') {
        return Ok(PathBuf::from(cmd));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(cmd);
        if let Ok(m) = std::fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(format!("exec: {cmd:?}: executable file not found in $PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_attributes_are_written_only_on_procfs() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("exec");
        std::fs::write(&fake, "").unwrap();
        let err = write_proc_attr(&fake, "exec x").unwrap_err();
        assert!(err.to_string().contains("not on procfs"), "{err}");
        assert_eq!(std::fs::read_to_string(&fake).unwrap(), "");
        // A symlink to it (an image's /proc) is not followed.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&fake, &link).unwrap();
        assert!(write_proc_attr(&link, "exec x").is_err());
        assert_eq!(std::fs::read_to_string(&fake).unwrap(), "");
        // The real thing (a procfs file of this thread) is written.
        write_proc_attr(Path::new("/proc/thread-self/comm"), "skiff-test").unwrap();
    }
}
