//! `skiff-shim pod POD.json`: creates the pod's namespaces and makes them reachable by path,
//! then becomes the pod's supervisor.
//!
//! skiffd runs this (single-threaded at that point) and reads its report on stdout: the process
//! leaves skiffd's session and unshares the namespaces the pod owns. Then the supervisor sets
//! them up, makes them reachable under the pod directory (the network and user namespaces pinned
//! by bind mounts, which outlive us; the others as symbolic links to our own `/proc/<pid>/ns/*`),
//! and reports its host PID (or the error). The supervisor is this process itself when the pod
//! config allows it to stay (`stay`, skiffd's own launcher) and the pod makes no PID namespace
//! or this process was born as its PID 1 (`born_in_pid_ns`); otherwise a child forked here, PID
//! 1 of the pod's PID namespace when there is one, and this process prints the child's report
//! and exits (as systemd's `Type=forking` expects).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, pipe2, setsid, ForkResult};
use skiff_shim::api::{NsMode, PidMode, PodConfig, Ready, NS_DIR};
use skiff_shim::{fsutil, idmap};

use crate::supervisor;

pub fn main(config_path: &Path) -> ! {
    let cfg: PodConfig = match fsutil::read_json(config_path) {
        Ok(c) => c,
        Err(e) => report_and_exit(Ready::Error(format!(
            "reading pod config {}: {e}",
            config_path.display()
        ))),
    };
    // Detached from skiffd: its own session, so neither signals to skiffd's group nor skiffd's
    // exit reach the pod.
    let _ = setsid();
    if let Some(leaf) = &cfg.cgroup_leaf {
        if let Err(e) = skiff_shim::cgroups::join(leaf, std::process::id() as i32) {
            report_and_exit(Ready::Error(format!("joining cgroup {leaf}: {e}")));
        }
    }
    let mut flags = CloneFlags::empty();
    if cfg.network == NsMode::Pod {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if cfg.ipc == NsMode::Pod {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if cfg.uts == NsMode::Pod {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if cfg.born_in_pid_ns {
        // The launcher made the pod's PID namespace with this process, its PID 1, which must
        // stay: the namespace ends with it.
        if cfg.pid != PidMode::Pod || cfg.userns.is_some() || !cfg.stay || std::process::id() != 1 {
            report_and_exit(Ready::Error(format!(
                "pod config {}: born_in_pid_ns needs pid Pod, no user namespace and stay, \
                 and the shim to be PID 1 (it is {})",
                config_path.display(),
                std::process::id()
            )));
        }
    } else if cfg.pid == PidMode::Pod {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    // Hooks of the runtime's stages run in the namespaces the pod leaves now.
    let runtime_ns = match crate::init::hooks::open_runtime_ns(flags) {
        Ok(ns) => ns,
        Err(e) => report_and_exit(Ready::Error(e)),
    };
    let made = match &cfg.userns {
        None => unshare(flags).map_err(|e| format!("creating the pod's namespaces: {e}")),
        // The PID namespace comes later, from inside the user namespace (`pod_init`).
        Some(maps) => namespaces_in_userns(&cfg, maps, flags - CloneFlags::CLONE_NEWPID),
    };
    if let Err(e) = made {
        report_and_exit(Ready::Error(e));
    }
    let shm = match cfg.ipc {
        NsMode::Pod => match make_shm_ns(&cfg) {
            Ok(ns) => Some(ns),
            Err(e) => report_and_exit(Ready::Error(e)),
        },
        _ => None,
    };
    if cfg.stay && !flags.contains(CloneFlags::CLONE_NEWPID) {
        match setup(&cfg).and_then(|s| Ok((s, host_pid()?))) {
            Ok(((listener, exe, pod_init), pid)) => {
                report(&cfg, Ready::Pid(pid));
                detach_stdout();
                supervisor::run(cfg, listener, exe, pod_init, runtime_ns, shm)
            }
            Err(e) => report_and_exit(Ready::Error(e)),
        }
    }
    let (r, w) = match pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => report_and_exit(Ready::Error(format!("pipe: {e}"))),
    };
    // SAFETY: this process is single-threaded (nothing has spawned a thread yet), so the child
    // may do anything after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let mut msg = String::new();
            let _ = File::from(r).read_to_string(&mut msg);
            if msg.trim() == "ok" {
                report(&cfg, Ready::Pid(child.as_raw()));
                std::process::exit(0)
            }
            let err = if msg.is_empty() {
                "the pod supervisor died while setting up the pod".to_string()
            } else {
                msg
            };
            report_and_exit(Ready::Error(err))
        }
        Ok(ForkResult::Child) => {
            drop(r);
            detach_stdout();
            let mut ready = File::from(w);
            match setup(&cfg) {
                Ok((listener, exe, pod_init)) => {
                    let _ = ready.write_all(b"ok");
                    drop(ready);
                    supervisor::run(cfg, listener, exe, pod_init, runtime_ns, shm)
                }
                Err(e) => {
                    let _ = ready.write_all(e.as_bytes());
                    std::process::exit(1)
                }
            }
        }
        Err(e) => report_and_exit(Ready::Error(format!("fork: {e}"))),
    }
}

/// A pod with its own user namespace: a child creates it (we write its maps) and then the
/// pod's network, IPC and UTS namespaces inside it, so they belong to it. We pin the user
/// namespace and join the others, staying root on the host ourselves: the supervisor forked
/// next lives in them.
fn namespaces_in_userns(
    cfg: &PodConfig,
    maps: &idmap::Maps,
    flags: CloneFlags,
) -> Result<(), String> {
    let child = idmap::UsernsChild::spawn(maps, flags.bits())
        .map_err(|e| format!("creating the pod's user namespace: {e}"))?;
    let ns_dir = cfg.dir.join(NS_DIR);
    fs::create_dir_all(&ns_dir).map_err(|e| format!("creating {}: {e}", ns_dir.display()))?;
    pin(
        &format!("/proc/{}/ns/user", child.pid()),
        &cfg.ns_path("user"),
    )?;
    for (name, flag) in [
        ("net", CloneFlags::CLONE_NEWNET),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
    ] {
        if flags.contains(flag) {
            let f = child
                .ns(name)
                .map_err(|e| format!("opening the pod's {name} namespace: {e}"))?;
            nix::sched::setns(&f, flag)
                .map_err(|e| format!("joining the pod's {name} namespace: {e}"))?;
        }
    }
    Ok(())
}

/// The pod's /dev/shm (see [`skiff_shim::podshm`]): a tmpfs mounted over the root of a mount
/// namespace of the pod's own, copied from skiffd's one-mount namespace (from the node's, made
/// private, when skiffd has none). Returns the namespace, which lives as long as the
/// descriptor. A pod with a user namespace has it made from inside that namespace by a child of
/// ours, so that the tmpfs belongs to it and its root owns it; otherwise we make it ourselves
/// and come back, without a child that would take a PID in the pod's new PID namespace.
fn make_shm_ns(cfg: &PodConfig) -> Result<OwnedFd, String> {
    let empty = match &cfg.empty_mntns {
        Some(p) => Some(File::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?),
        None => None,
    };
    if cfg.userns.is_none() {
        let made = skiff_shim::podshm::returning(|| make_shm_ns_here(empty.as_ref(), None))
            .map_err(|e| format!("returning to the shim's mount namespace: {e}"))?;
        // SAFETY: openat returned this descriptor and nothing else owns it.
        return made.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    }
    use nix::sys::socket::{
        recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
        SockFlag, SockType,
    };
    let userns = File::open(cfg.ns_path("user"))
        .map_err(|e| format!("opening the pod's user namespace: {e}"))?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: this process is single-threaded, so the child may run any code.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            let made = make_shm_ns_here(empty.as_ref(), Some(&userns));
            let sent = match &made {
                Ok(fd) => sendmsg::<()>(
                    theirs.as_raw_fd(),
                    &[std::io::IoSlice::new(b"ok")],
                    &[ControlMessage::ScmRights(&[*fd])],
                    MsgFlags::empty(),
                    None,
                ),
                Err(e) => sendmsg::<()>(
                    theirs.as_raw_fd(),
                    &[std::io::IoSlice::new(e.as_bytes())],
                    &[],
                    MsgFlags::empty(),
                    None,
                ),
            };
            std::process::exit(if made.is_ok() && sent.is_ok() { 0 } else { 1 })
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("fork: {e}")),
    };
    drop(theirs);
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let got = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        recvmsg::<()>(
            ours.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receiving the pod's /dev/shm: {e}"))
        .map(|m| {
            let fd = m.cmsgs().ok().and_then(|mut c| {
                c.find_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                })
            });
            (m.bytes, fd)
        })
    };
    let _ = nix::sys::wait::waitpid(child, None);
    let (n, fd) = got?;
    match fd {
        // SAFETY: the descriptor arrived in our message and nothing else owns it.
        Some(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        None => Err(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

/// The steps of [`make_shm_ns`] in the calling process, which they leave in the new mount
/// namespace (and in `userns`, when given): joins `empty` (if any) and `userns`, makes a mount
/// namespace, mounts the tmpfs over its root, and opens the namespace.
fn make_shm_ns_here(
    empty: Option<&File>,
    userns: Option<&File>,
) -> Result<std::os::fd::RawFd, String> {
    // Where the new namespace is found once the one joined has no /proc.
    let own_ns = File::open("/proc/self/ns").map_err(|e| format!("/proc/self/ns: {e}"))?;
    if let Some(f) = empty {
        nix::sched::setns(f, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("joining the empty mount namespace: {e}"))?;
    }
    if let Some(u) = userns {
        nix::sched::setns(u, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the pod's user namespace: {e}"))?;
        crate::init::become_userns_root()?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("creating a mount namespace: {e}"))?;
    // Copied in the node's user namespace, shared mounts stay shared: nothing mounted here may
    // reach the node. (A user namespace's copy has only slaves.)
    if userns.is_none() {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making the mount namespace private: {e}"))?;
    }
    const NOSUID_NODEV_NOEXEC: u64 = 0x2 | 0x4 | 0x8;
    let tree = idmap::tmpfs_tree(
        &[(c"size", c"65536k"), (c"mode", c"1777")],
        NOSUID_NODEV_NOEXEC,
    )
    .map_err(|e| format!("making the pod's /dev/shm: {e}"))?;
    let root = fsutil::open_dir(Path::new("/")).map_err(|e| format!("opening /: {e}"))?;
    idmap::attach(&tree, &root).map_err(|e| format!("mounting the pod's /dev/shm: {e}"))?;
    nix::fcntl::openat(
        Some(own_ns.as_raw_fd()),
        "mnt",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening the new mount namespace: {e}"))
}

/// Reports the supervisor's PID on stdout, after writing it to the pod's PID file when it has
/// one; a PID file that cannot be written ends this process with that error instead.
fn report(cfg: &PodConfig, r: Ready) {
    if let (Ready::Pid(pid), Some(f)) = (&r, &cfg.pid_file) {
        if let Err(e) = fsutil::write_atomic_volatile(f, pid.to_string().as_bytes()) {
            report_and_exit(Ready::Error(format!("writing {}: {e}", f.display())));
        }
    }
    print_line(&r);
}

fn print_line(r: &Ready) {
    let line = serde_json::to_string(r).unwrap_or_else(|_| "{\"error\":\"encoding\"}".into());
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn report_and_exit(r: Ready) -> ! {
    print_line(&r);
    std::process::exit(if matches!(r, Ready::Pid(_)) { 0 } else { 1 })
}

/// skiffd reads our stdout to its end: the long-lived supervisor must not hold it open.
fn detach_stdout() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto fds 0 and 1 of this process; `null` stays valid during the call.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// This process's PID as the node sees it (its own PID namespace may be the pod's): /proc here
/// is the node's.
fn host_pid() -> Result<i32, String> {
    let me = fs::read_link("/proc/self").map_err(|e| format!("reading /proc/self: {e}"))?;
    me.to_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("/proc/self is {}", me.display()))
}

/// Sets the pod's namespaces up and makes them reachable by path; returns the bound shim API
/// socket, the read-only binary helpers run from, and the pod's PID 1 when it is not the
/// supervisor (see [`pod_init`]).
type Setup = (std::os::unix::net::UnixListener, PathBuf, Option<PodInit>);

fn setup(cfg: &PodConfig) -> Result<Setup, String> {
    let exe = crate::selfexe::helper_binary().map_err(|e| e.to_string())?;
    if cfg.network == NsMode::Pod {
        loopback_up().map_err(|e| format!("bringing lo up in the pod network: {e}"))?;
    }
    if cfg.uts == NsMode::Pod && !cfg.hostname.is_empty() {
        nix::unistd::sethostname(&cfg.hostname)
            .map_err(|e| format!("setting hostname {:?}: {e}", cfg.hostname))?;
    }
    for (key, value) in &cfg.sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    let ns_dir = cfg.dir.join(NS_DIR);
    fs::create_dir_all(&ns_dir).map_err(|e| format!("creating {}: {e}", ns_dir.display()))?;
    let owned = [
        ("net", cfg.network == NsMode::Pod),
        ("ipc", cfg.ipc == NsMode::Pod),
        ("uts", cfg.uts == NsMode::Pod),
        ("pid", cfg.pid == PidMode::Pod),
    ];
    let host_pid = host_pid()?;
    let mut pod_init = None;
    for (name, own) in owned {
        if !own {
            continue;
        }
        if name == "pid" && cfg.userns.is_some() {
            let init = start_pod_init(cfg)?;
            pin(&format!("/proc/{}/ns/pid", init.reaper), &cfg.ns_path(name))?;
            pod_init = Some(init);
        } else if name == "net" {
            // CNI DEL and port forwarding reach it by path, also once we are gone.
            pin(&format!("/proc/self/ns/{name}"), &cfg.ns_path(name))?;
        } else {
            link(&format!("/proc/{host_pid}/ns/{name}"), &cfg.ns_path(name))?;
        }
    }
    let sock = cfg.socket();
    let _ = fs::remove_file(&sock);
    let (_dir, addr) =
        fsutil::socket_address(&sock).map_err(|e| format!("binding {}: {e}", sock.display()))?;
    let l = std::os::unix::net::UnixListener::bind(&addr)
        .map_err(|e| format!("binding {}: {e}", sock.display()))?;
    Ok((l, exe, pod_init))
}

/// The PID 1 of a pod's PID namespace when the pod has its own user namespace. That PID
/// namespace must belong to the user namespace (for /proc to be mountable inside), so it is
/// created from inside it by a child of ours, and its first process — this reaper of orphans,
/// as the pause process is elsewhere — cannot be us: we stay root on the host. Both die with
/// the supervisor (parent-death signals, and [`PodInit::stop`] when it exits), taking the PID
/// namespace down with them. Returns
/// both processes.
fn start_pod_init(cfg: &PodConfig) -> Result<PodInit, String> {
    let userns = File::open(cfg.ns_path("user"))
        .map_err(|e| format!("opening the pod's user namespace: {e}"))?;
    let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the supervisor is single-threaded here (its runtime is not started yet), so the
    // child may run any code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let mut msg = String::new();
            let _ = File::from(r).read_to_string(&mut msg);
            let reaper = msg
                .trim()
                .parse::<i32>()
                .map_err(|_| format!("starting the pod's PID 1: {}", msg.trim()))?;
            Ok(PodInit {
                creator: child.as_raw(),
                reaper,
            })
        }
        Ok(ForkResult::Child) => {
            drop(r);
            let mut out = File::from(w);
            let supervisor = nix::unistd::getppid();
            let made = nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER)
                .and_then(|_| unshare(CloneFlags::CLONE_NEWPID));
            if let Err(e) = made {
                let _ = write!(out, "creating the PID namespace in the user namespace: {e}");
                std::process::exit(1);
            }
            // Set after joining the user namespace: changing credentials clears it.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if nix::unistd::getppid() != supervisor {
                std::process::exit(1);
            }
            drop(userns);
            // Nothing of the supervisor's (its ready pipe above all) may stay open here.
            close_from(3, &[out.as_raw_fd()]);
            // SAFETY: single-threaded, see above.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    let _ = write!(out, "{}", child.as_raw());
                    drop(out);
                    // Lives as long as the reaper, and takes it down if the supervisor dies.
                    let _ = nix::sys::wait::waitpid(child, None);
                    std::process::exit(0)
                }
                Ok(ForkResult::Child) => {
                    drop(out);
                    close_from(3, &[]);
                    // SAFETY: prctl with integer arguments.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    loop {
                        match nix::sys::wait::waitpid(None::<nix::unistd::Pid>, None) {
                            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
                        }
                    }
                }
                Err(e) => {
                    let _ = write!(out, "fork: {e}");
                    std::process::exit(1)
                }
            }
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// The PID 1 of a pod in a user namespace, and its parent (our child).
pub struct PodInit {
    creator: i32,
    reaper: i32,
}

impl PodInit {
    /// Kills the pod's PID 1 (and with it whatever is left in its PID namespace) and reaps
    /// its parent, which exits with it.
    pub fn stop(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.reaper),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.creator), None);
    }
}

/// Closes every descriptor from `first` up except those in `keep`.
fn close_from(first: u32, keep: &[i32]) {
    let mut from = first;
    let mut keep: Vec<u32> = keep
        .iter()
        .map(|k| *k as u32)
        .filter(|k| *k >= first)
        .collect();
    keep.sort_unstable();
    for k in keep {
        if k > from {
            // SAFETY: close_range only closes descriptors of this process.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// Bind-mounts namespace file `ns` onto `target` (created empty), keeping the namespace alive
/// for as long as the mount exists, whatever happens to the processes in it.
fn pin(ns: &str, target: &Path) -> Result<(), String> {
    File::create(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    mount(
        Some(ns),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pinning {ns} at {}: {e}", target.display()))
}

/// Points `target` at namespace file `ns` of this process, for namespaces only our own children
/// join (IPC, UTS, the PID namespace we are PID 1 of): they live exactly as long as we do, so a
/// symbolic link does what a bind mount would, without adding a mount to the node's table that
/// every container's new mount namespace would copy.
fn link(ns: &str, target: &Path) -> Result<(), String> {
    let _ = fs::remove_file(target);
    std::os::unix::fs::symlink(ns, target)
        .map_err(|e| format!("linking {} to {ns}: {e}", target.display()))
}

/// `ip link set lo up`, with the SIOCSIFFLAGS ioctl.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in req into req.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads req, a valid ifreq for "lo".
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
