//! Running the shim's single-threaded helpers (`init`, `exec`): the read-only shim binary with
//! the given stdio and a sync socket on fd 3, over which the helper reports PIDs and errors as
//! JSON lines and which closes once the helper's process has exec'd.
//!
//! Container init is started by a plain fork of the supervisor when the supervisor is
//! single-threaded (its tokio runtime is current-thread and nothing spawns threads), which saves
//! an exec per container start; otherwise, and for exec helpers, by exec of the binary. Either
//! way the process's executable is the read-only shim binary (CVE-2019-5736).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use skiff_shim::podshm::PodShm;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::UnixStream;
use tonic::Status;

/// The supervisor's end of a helper's sync socket, read line by line.
pub type SyncLines = Lines<BufReader<UnixStream>>;

/// Starts `skiff-shim ARGS…` from `exe` with the given stdio; returns its sync socket.
pub fn spawn(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<SyncLines, Status> {
    spawn_with(exe, args, stdin, stdout, stderr, &[])
}

/// [`spawn`], the descriptors `extra` inherited by the helper under the same numbers.
pub fn spawn_with(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    extra: &[RawFd],
) -> Result<SyncLines, Status> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Status::internal(format!("socketpair: {e}")))?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg0("skiff-shim")
        .args(args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: the closure runs between fork and exec and calls only dup2 and fcntl, which are
    // async-signal-safe; `theirs_fd` and `extra` stay open in the parent until spawn returns.
    let extra = extra.to_vec();
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in &extra {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(theirs);
    drop(cmd); // closes our copies of the child's stdio
               // The helper's parent is reaped by the supervisor's reaper; nothing waits on the Child.
    spawned.map_err(|e| Status::internal(format!("starting {}: {e}", exe.display())))?;
    ours.set_nonblocking(true)
        .map_err(|e| Status::internal(format!("sync socket: {e}")))?;
    let ours =
        UnixStream::from_std(ours).map_err(|e| Status::internal(format!("sync socket: {e}")))?;
    Ok(BufReader::new(ours).lines())
}

/// Whether this process has exactly one thread, so that a forked child may run ordinary code.
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        == Some(1)
}

/// Starts container init for `bundle`: forked from this (single-threaded) supervisor, or
/// exec'd from `exe` when the supervisor has threads.
/// The runtime's namespaces (`runtime_ns`, for hooks) and the pod's /dev/shm go along as
/// descriptors; `stdio` becomes init's 0, 1 and 2.
///
/// With `new_pid_ns` (the container has a PID namespace of its own, and no user namespace or
/// runtime hooks), a forked init is born as PID 1 of that namespace: the supervisor creates it
/// for its next child (`unshare`), forks, and returns to its own for the ones after (`setns`).
/// Init then neither creates it nor forks to enter it, and its PID here, which it cannot see,
/// is returned with the sync socket. Otherwise the PID comes over the sync socket.
pub fn spawn_init(
    exe: &Path,
    bundle: &Path,
    new_pid_ns: bool,
    runtime_ns: &[(String, RawFd)],
    pod_shm: Option<PodShm>,
    stdio: [OwnedFd; 3],
) -> Result<(SyncLines, Option<i32>), Status> {
    let [stdin, stdout, stderr] = stdio;
    if !single_threaded() {
        let ns_args: Vec<std::ffi::OsString> = runtime_ns
            .iter()
            .map(|(n, fd)| format!("{n}={fd}"))
            .chain(pod_shm.iter().map(PodShm::to_arg))
            .map(Into::into)
            .collect();
        let mut args: Vec<&std::ffi::OsStr> = vec!["init".as_ref(), bundle.as_os_str()];
        args.extend(ns_args.iter().map(|a| a.as_os_str()));
        let fds: Vec<RawFd> = runtime_ns
            .iter()
            .map(|(_, fd)| *fd)
            .chain(pod_shm.iter().map(|s| s.ns))
            .collect();
        return spawn_with(exe, &args, stdin, stdout, stderr, &fds).map(|lines| (lines, None));
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Status::internal(format!("socketpair: {e}")))?;
    let own_pid_ns = if new_pid_ns {
        let own = std::fs::File::open("/proc/self/ns/pid")
            .map_err(|e| Status::internal(format!("/proc/self/ns/pid: {e}")))?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| {
            Status::internal(format!("creating the container's PID namespace: {e}"))
        })?;
        Some(own)
    } else {
        None
    };
    // SAFETY: the process is single-threaded (checked just above, and nothing in the current-
    // thread runtime starts a thread between the check and here), so the child may run any code.
    let forked = unsafe { nix::unistd::fork() };
    if let (Some(own), Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_)) = (&own_pid_ns, &forked)
    {
        // Back to our own PID namespace for the children after this one (a supervisor allowed
        // to create the namespace is allowed to return). Should it fail, this start fails.
        if let Err(e) = nix::sched::setns(own, nix::sched::CloneFlags::CLONE_NEWPID) {
            if let Ok(nix::unistd::ForkResult::Parent { child }) = forked {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            return Err(Status::internal(format!(
                "returning to the supervisor's PID namespace: {e}"
            )));
        }
    }
    let child = match forked {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: plain descriptor and signal syscalls on descriptors this process owns.
            unsafe {
                libc::dup2(stdin.as_raw_fd(), 0);
                libc::dup2(stdout.as_raw_fd(), 1);
                libc::dup2(stderr.as_raw_fd(), 2);
                libc::dup2(theirs.as_raw_fd(), 3);
                // The supervisor's signal handling is not ours: default dispositions, no mask.
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            }
            drop(own_pid_ns);
            crate::init::main(bundle, new_pid_ns, runtime_ns.to_vec(), pod_shm)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Err(e) => return Err(Status::internal(format!("fork: {e}"))),
    };
    drop((theirs, stdin, stdout, stderr));
    ours.set_nonblocking(true)
        .map_err(|e| Status::internal(format!("sync socket: {e}")))?;
    let ours =
        UnixStream::from_std(ours).map_err(|e| Status::internal(format!("sync socket: {e}")))?;
    Ok((BufReader::new(ours).lines(), new_pid_ns.then_some(child)))
}
