//! `skiff-shim init BUNDLE`: turns itself into the container's process. Single-threaded from
//! its first instruction (forked from the single-threaded supervisor, or exec'd from the
//! read-only shim binary when the supervisor has threads: see `helper`), so everything between
//! fork and exec here is ordinary code.
//!
//! Order: join the cgroup → join the pod's pinned namespaces (and create the container's own) →
//! report the container process's PID on the sync socket (fd 3): our own, or, when a PID
//! namespace other than ours was joined or created, a child's, forked to be inside it, the
//! parent exiting (a forked init the supervisor started as PID 1 of the container's new PID
//! namespace reports none: the supervisor has it) → that process sets up its root filesystem
//! in its own mount namespace, pivots into it, drops to the configured user and capabilities
//! and execs.
//! OCI hooks run on the way (see `hooks`): the runtime's by a runner forked first. A
//! failure is written to the sync socket as one JSON line; a successful exec closes it.
//!
//! Its parts: `rootfs` (the root filesystem), `process` (the last steps before exec, shared with
//! `exec`), `seccomp` (the filter), `hooks` (OCI hooks, with the runner forked before init joins
//! the container's namespaces).

pub mod hooks;
pub mod process;
pub mod rootfs;
pub mod seccomp;

use std::convert::Infallible;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use skiff_shim::api::{Rootfs, ROOTFS_FILE};
use skiff_shim::podshm::PodShm;
use skiff_shim::{cgroups, fsutil};

use hooks::Stage;

/// The sync socket every helper inherits as fd 3.
pub const SYNC_FD: i32 = 3;

pub fn sync_socket() -> File {
    // SAFETY: fd 3 was set up by the supervisor (dup2 in pre_exec) for exactly this purpose and
    // nothing else in this process owns it.
    let f = unsafe { File::from_raw_fd(SYNC_FD) };
    // SAFETY: F_SETFD on our own descriptor: it must not leak into the container.
    unsafe {
        libc::fcntl(SYNC_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    f
}

/// Sends one JSON message on the sync socket as one line in one write, so the lines of the
/// helper's two processes never interleave.
pub fn send(sync: &mut File, msg: serde_json::Value) -> std::io::Result<()> {
    let mut line = msg.to_string();
    line.push('\n');
    sync.write_all(line.as_bytes())
}

/// Makes the process that goes on to exec, and reports its PID in the supervisor's namespace
/// on the sync socket. A PID namespace joined or created (`entered_pid_ns`, one other than
/// ours) holds only the children of the process that entered it, so then we fork: the parent
/// reports the child's PID and exits, and this returns in the child. Otherwise (the pod's PID
/// namespace, which the supervisor is PID 1 of, or the node's) this process, a child of the
/// supervisor and in its PID namespace, goes on itself and reports its own PID, sparing a fork
/// and an exit on every container start and exec.
pub fn become_reported_process(sync: &mut File, entered_pid_ns: bool) -> Result<(), String> {
    if !entered_pid_ns {
        return send(sync, serde_json::json!({ "pid": std::process::id() }))
            .map_err(|e| format!("reporting the pid: {e}"));
    }
    fork_reporting_pid(sync)
}

/// Whether namespace file `f` is the namespace at `path` (`/proc/self/ns/pid`, …).
pub fn same_namespace(f: &File, path: &str) -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    let a = f
        .metadata()
        .map_err(|e| format!("fstat of a namespace: {e}"))?;
    let b = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// Forks (so the child lands in the PID namespace just joined or created); the parent reports
/// the child's PID (in the supervisor's namespace) on the sync socket and exits. Returns in the
/// child.
fn fork_reporting_pid(sync: &mut File) -> Result<(), String> {
    // SAFETY: helpers are single-threaded, so the child may run any code after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            send(sync, serde_json::json!({ "pid": child.as_raw() }))
                .map_err(|e| format!("reporting the pid: {e}"))?;
            std::process::exit(0)
        }
        Ok(ForkResult::Child) => Ok(()),
        Err(e) => Err(format!("fork: {e}")),
    }
}

pub fn report_error(sync: &mut File, msg: &str) {
    let _ = send(sync, serde_json::json!({ "error": msg }));
}

/// Reports this process's PID as the host sees it. The fork above returned our PID in the
/// supervisor's PID namespace (the pod's, when it has one): right for waitpid and kill there,
/// wrong for anyone reading the host's /proc. The host's procfs, still mounted at /proc until
/// pivot_root, resolves `self` in the host's namespace.
pub fn report_host_pid(sync: &mut File) -> Result<i32, String> {
    let me = std::fs::read_link("/proc/self").map_err(|e| format!("reading /proc/self: {e}"))?;
    let host: i32 = me
        .to_string_lossy()
        .parse()
        .map_err(|_| format!("/proc/self is {}", me.display()))?;
    send(sync, serde_json::json!({ "host_pid": host }))
        .map_err(|e| format!("reporting the host pid: {e}"))?;
    Ok(host)
}

/// A process forked before the init process joins any namespace or cgroup, which runs the
/// `prestart` and `createRuntime` hooks in the runtime's namespaces once it is told the
/// container process's host PID, and answers with the first failure (or nothing).
struct HookRunner {
    pid_w: File,
    result_r: File,
}

impl HookRunner {
    fn fork(
        spec: &Spec,
        bundle: &Path,
        runtime_ns: &[(String, std::os::fd::RawFd)],
    ) -> Result<HookRunner, String> {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map(|(r, w)| (File::from(r), File::from(w)))
                .map_err(|e| format!("pipe: {e}"))
        };
        let (mut pid_r, pid_w) = pipe()?;
        let (result_r, mut result_w) = pipe()?;
        // SAFETY: this process is single-threaded (see the module comment), so the child may
        // run any code after fork.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { .. }) => Ok(HookRunner { pid_w, result_r }),
            Ok(ForkResult::Child) => {
                // SAFETY: closing the child's copies of descriptors it must not hold: the sync
                // socket (the supervisor waits for its last copy to close) and the pipe ends
                // that are the parent's.
                unsafe {
                    libc::close(SYNC_FD);
                }
                drop((pid_w, result_r));
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut pid_r, &mut text);
                let answer = match text.trim().parse::<i32>() {
                    // The container never got that far: nothing to run.
                    Err(_) => String::new(),
                    Ok(pid) => hooks::join_runtime_ns(runtime_ns)
                        .and_then(|()| hooks::run(spec, bundle, Stage::Prestart, pid))
                        .and_then(|()| hooks::run(spec, bundle, Stage::CreateRuntime, pid))
                        .err()
                        .unwrap_or_default(),
                };
                let _ = result_w.write_all(answer.as_bytes());
                std::process::exit(0)
            }
            Err(e) => Err(format!("fork: {e}")),
        }
    }

    /// Hands over the container process's host PID and waits for the hooks' outcome.
    fn run_for(self, host_pid: i32) -> Result<(), String> {
        let HookRunner {
            mut pid_w,
            mut result_r,
        } = self;
        pid_w
            .write_all(host_pid.to_string().as_bytes())
            .map_err(|e| format!("starting the runtime hooks: {e}"))?;
        drop(pid_w);
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut result_r, &mut answer)
            .map_err(|e| format!("waiting for the runtime hooks: {e}"))?;
        if answer.is_empty() {
            Ok(())
        } else {
            Err(answer)
        }
    }
}

/// After joining a user namespace our ids are still the host's root, which it does not map:
/// become its root (files we create are then owned by it; capabilities are kept).
pub fn become_userns_root() -> Result<(), String> {
    let (g, u) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(g, g, g)
        .map_err(|e| format!("becoming the user namespace's root group: {e}"))?;
    nix::unistd::setresuid(u, u, u).map_err(|e| format!("becoming the user namespace's root: {e}"))
}

/// The host uid and gid of the user namespace's root, from the spec's mappings.
fn userns_maps(linux: &oci_spec::runtime::Linux) -> Option<(u32, u32)> {
    let maps = skiff_shim::idmap::Maps::from_oci(
        linux.uid_mappings().as_deref().unwrap_or(&[]),
        linux.gid_mappings().as_deref().unwrap_or(&[]),
    );
    Some((maps.host_uid(0)?, maps.host_gid(0)?))
}

/// `runtime_ns`: the runtime's namespaces as inherited descriptors, for hooks.
/// `born_in_pid_ns`: the supervisor made this process PID 1 of the container's new PID
/// namespace (see `supervisor::helper::spawn_init`), and knows its PID.
/// `pod_shm`: the pod's /dev/shm, when the pod has its own IPC namespace.
pub fn main(
    bundle: &Path,
    born_in_pid_ns: bool,
    runtime_ns: Vec<(String, std::os::fd::RawFd)>,
    pod_shm: Option<PodShm>,
) -> ! {
    // Until the exec, this process lives in the pod's namespaces: keep it out of reach of
    // ptrace and /proc from there (the exec of the container's binary resets this).
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let mut sync = sync_socket();
    for fd in runtime_ns
        .iter()
        .map(|(_, fd)| fd)
        .chain(pod_shm.iter().map(|s| &s.ns))
    {
        // SAFETY: F_SETFD on an inherited descriptor: it must not leak into the container.
        unsafe {
            libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    let err = match run(bundle, born_in_pid_ns, &runtime_ns, pod_shm, &mut sync) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    report_error(&mut sync, &err);
    std::process::exit(1)
}

/// A detached copy of the pod's /dev/shm and the index of the spec's mount that binds the
/// pod's shm directory, when there is one.
pub fn pod_shm_tree(
    spec: &Spec,
    pod_shm: Option<&PodShm>,
) -> Result<Option<(usize, OwnedFd)>, String> {
    let Some(shm) = pod_shm else { return Ok(None) };
    let Some(i) = spec.mounts().iter().flatten().position(|m| {
        rootfs::is_bind(m) && m.source().as_deref().is_some_and(|p| shm.is_source(p))
    }) else {
        return Ok(None);
    };
    let tree = shm
        .clone_tree()
        .map_err(|e| format!("copying the pod's /dev/shm: {e}"))?;
    Ok(Some((i, tree)))
}

fn ns_flag(t: LinuxNamespaceType) -> Option<CloneFlags> {
    Some(match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        _ => return None,
    })
}

/// The spec's device cgroup rules as v1 `devices.allow` lines, and whether one allows all.
fn device_rules(linux: &oci_spec::runtime::Linux) -> (Vec<String>, bool) {
    use oci_spec::runtime::LinuxDeviceType as T;
    let mut rules = vec![];
    let mut all = false;
    for r in linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default()
    {
        if !r.allow() {
            continue;
        }
        let typ = match r.typ().unwrap_or(T::A) {
            T::A => {
                all = true;
                continue;
            }
            T::B => "b",
            _ => "c",
        };
        let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
        let access = r.access().clone().unwrap_or_else(|| "rwm".into());
        rules.push(format!("{typ} {}:{} {access}", n(r.major()), n(r.minor())));
    }
    (rules, all)
}

/// Moves this (single-threaded) process into the container's cgroup, whose device rules are
/// set first: what it starts is the container's.
pub fn enter_cgroup(linux: &oci_spec::runtime::Linux) -> Result<(), String> {
    if let Some(cg) = linux.cgroups_path() {
        let cg = cg.display().to_string();
        // Single-threaded: this process was exec'd or forked from the single-threaded supervisor.
        cgroups::join_self_single_threaded(&cg).map_err(|e| format!("joining cgroup {cg}: {e}"))?;
        let (rules, allow_all) = device_rules(linux);
        cgroups::restrict_devices(&cg, &rules, allow_all)
            .map_err(|e| format!("device rules of {cg}: {e}"))?;
    }
    Ok(())
}

fn run(
    bundle: &Path,
    born_in_pid_ns: bool,
    runtime_ns: &[(String, std::os::fd::RawFd)],
    pod_shm: Option<PodShm>,
    sync: &mut File,
) -> Result<Infallible, String> {
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
    let rootfs: Rootfs = fsutil::read_json(&bundle.join(ROOTFS_FILE))
        .map_err(|e| format!("reading {}/{ROOTFS_FILE}: {e}", bundle.display()))?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or("config.json has no linux section")?;
    let runner = if hooks::any(&spec, &[Stage::Prestart, Stage::CreateRuntime]) {
        Some(HookRunner::fork(&spec, bundle, runtime_ns)?)
    } else {
        None
    };
    enter_cgroup(linux)?;

    // A container in its pod's user namespace: what only root on the host can do happens now,
    // before joining it (idmapped layers and volumes, device nodes). The bundle's files are
    // the host root's and unreadable from inside, so the filter is read now too.
    let userns = linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .and_then(|n| n.path().clone());
    if let (Some(cg), Some(maps)) = (linux.cgroups_path(), userns_maps(linux)) {
        // The container's cgroup is its root's to manage below (not to raise its limits).
        let cg = cg.display().to_string();
        cgroups::delegate(&cg, maps.0, maps.1)
            .map_err(|e| format!("delegating cgroup {cg} to the pod's root: {e}"))?;
    }
    // A copy of the pod's /dev/shm for the mount that binds its directory, made now, from
    // the node's mount namespace (see `skiff_shim::podshm`).
    let mut shm = pod_shm_tree(&spec, pod_shm.as_ref())?;
    let prepared = match (&userns, rootfs.idmap) {
        (Some(p), _) => {
            let f = File::open(p).map_err(|e| format!("user namespace {}: {e}", p.display()))?;
            Some(rootfs::prepare_userns(
                &spec,
                &rootfs,
                bundle,
                &f,
                shm.take(),
            )?)
        }
        (None, true) => {
            return Err(format!(
                "{}/{ROOTFS_FILE} asks for idmapped layers but config.json has no user namespace",
                bundle.display()
            ))
        }
        (None, false) => None,
    };
    let filter = seccomp::read(&spec, bundle, "creating")?;
    let proc_spec = spec
        .process()
        .as_ref()
        .ok_or("config.json has no process")?;
    process::set_oom_score_adj(proc_spec)?;

    let mut new = CloneFlags::CLONE_NEWNS;
    let mut joins: Vec<(File, CloneFlags, String)> = vec![];
    for ns in linux.namespaces().iter().flatten() {
        let Some(flag) = ns_flag(ns.typ()) else {
            continue;
        };
        match ns.path() {
            Some(p) => {
                let f = File::open(p).map_err(|e| format!("namespace {}: {e}", p.display()))?;
                joins.push((f, flag, p.display().to_string()));
            }
            None => new |= flag,
        }
    }
    let mut entered_pid_ns = new.contains(CloneFlags::CLONE_NEWPID);
    for (f, flag, _) in &joins {
        if *flag == CloneFlags::CLONE_NEWPID && !same_namespace(f, "/proc/self/ns/pid")? {
            entered_pid_ns = true;
        }
    }
    // A user namespace first: the others may belong to it.
    joins.sort_by_key(|(_, f, _)| *f != CloneFlags::CLONE_NEWUSER);
    for (f, flag, path) in &joins {
        setns(f.as_fd(), *flag).map_err(|e| format!("joining namespace {path}: {e}"))?;
        if *flag == CloneFlags::CLONE_NEWUSER {
            become_userns_root()?;
        }
    }
    if born_in_pid_ns {
        // Created with this process (the supervisor checked the spec asks for it).
        if !new.contains(CloneFlags::CLONE_NEWPID) {
            return Err("started in a new PID namespace the spec does not ask for".into());
        }
        new.remove(CloneFlags::CLONE_NEWPID);
    }
    unshare(new).map_err(|e| format!("creating the container's namespaces: {e}"))?;

    if !born_in_pid_ns {
        become_reported_process(sync, entered_pid_ns)?;
    }
    let host_pid = report_host_pid(sync)?;
    if let Some(r) = runner {
        r.run_for(host_pid)?;
    }
    // createContainer hooks: in the container's mount namespace, before pivot_root.
    let before_pivot = || hooks::run(&spec, bundle, Stage::CreateContainer, host_pid);
    match prepared {
        Some(p) => rootfs::setup_in_userns(&spec, p, before_pivot)?,
        None => rootfs::setup(&spec, &rootfs, bundle, shm, before_pivot)?,
    }
    hooks::run(&spec, bundle, Stage::StartContainer, host_pid)?;
    process::exec_process(proc_spec, filter.as_ref())
}
