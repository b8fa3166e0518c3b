//! Running the shim's single-threaded helpers (`init`, `exec`): the read-only shim binary with
//! the given stdio and a sync socket on fd 3, over which the helper reports PIDs and errors as
//! JSON lines and which closes once the helper's process has exec'd.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

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
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Status::internal(format!("socketpair: {e}")))?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg0("skiff-shim")
        .args(args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: the closure runs between fork and exec and calls only dup2, which is
    // async-signal-safe; `theirs_fd` stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
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
