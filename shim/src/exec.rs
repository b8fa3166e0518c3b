//! ExecSync: a command run inside a running container the way its own process runs (the
//! container's namespaces, cgroup, user, capabilities, environment), with its output collected.
//!
//! The supervisor runs `skiff-shim exec BUNDLE PID -- ARGS…` (single-threaded, from the read-only
//! binary). The helper joins the namespaces of the container's main process PID and its cgroup,
//! forks (so the child is in the container's PID namespace), reports the child's PID on fd 3 and
//! exits; the child execs the command with the container's process settings.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use skiff_proto::shim::ExecSyncResponse;
use skiff_shim::cgroups;
use tokio::io::AsyncReadExt;
use tonic::Status;

use crate::container::Container;
use crate::init::{fork_reporting_pid, report_error, sync_socket};
use crate::supervisor::State;

/// Most output kept per stream; the rest is read and dropped.
const MAX_OUTPUT: usize = 16 << 20;

pub async fn exec_sync(
    state: &Arc<State>,
    c: &Container,
    cmd: Vec<String>,
    timeout_ms: i64,
) -> Result<ExecSyncResponse, Status> {
    if cmd.is_empty() {
        return Err(Status::invalid_argument("cmd: is empty"));
    }
    if !c.is_running() {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            c.id
        )));
    }
    let null = File::open("/dev/null").map_err(|e| Status::internal(format!("/dev/null: {e}")))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let pid_arg = c.host_pid.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "exec".as_ref(),
        c.bundle.as_os_str(),
        pid_arg.as_ref(),
        "--".as_ref(),
    ];
    args.extend(cmd.iter().map(|a| std::ffi::OsStr::new(a.as_str())));
    let mut lines = crate::helper::spawn(&state.exe, &args, null.into(), out_w, err_w)?;
    let out_task = tokio::spawn(collect(out_r));
    let err_task = tokio::spawn(collect(err_r));
    let mut pid = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v.get("host_pid").is_some() {
            continue;
        }
        if let Some(p) = v.get("pid").and_then(|p| p.as_i64()) {
            pid = p as i32;
        } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            if pid > 0 {
                let _ = state.wait_for(pid).await;
            }
            return Err(Status::failed_precondition(format!(
                "exec in container {}: {e}",
                c.id
            )));
        }
    }
    if pid == 0 {
        return Err(Status::internal(format!(
            "exec in container {}: the helper exited without starting the command",
            c.id
        )));
    }
    let exit = state.wait_for(pid);
    let (status, timed_out) = if timeout_ms > 0 {
        match tokio::time::timeout(Duration::from_millis(timeout_ms as u64), exit).await {
            Ok(st) => (st.ok(), false),
            Err(_) => {
                // The command and everything it started (its process group).
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                (None, true)
            }
        }
    } else {
        (exit.await.ok(), false)
    };
    let stdout = wait_output(out_task).await;
    let stderr = wait_output(err_task).await;
    let exit_code = match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => -1,
    };
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code,
        timed_out,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Status::internal(format!("pipe: {e}")))
}

async fn collect(fd: OwnedFd) -> Vec<u8> {
    let mut r = match crate::container::FdReader::new(fd) {
        Ok(r) => r,
        Err(_) => return vec![],
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.len() < MAX_OUTPUT {
                    let take = n.min(MAX_OUTPUT - out.len());
                    out.extend_from_slice(&buf[..take]);
                }
            }
        }
    }
    out
}

async fn wait_output(t: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    // A background process of the command may keep the pipe open: do not wait for it forever.
    match tokio::time::timeout(Duration::from_secs(2), t).await {
        Ok(Ok(v)) => v,
        _ => vec![],
    }
}

/// The helper side: `skiff-shim exec BUNDLE HOST_PID -- ARGS…` (the host's PID of the
/// container's main process: the helper reads its namespaces from the host's /proc).
pub fn helper_main(bundle: &Path, pid: i32, args: Vec<String>) -> ! {
    // As for container init: out of reach of the container until the exec.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let mut sync = sync_socket();
    let err = match helper(bundle, pid, args, &mut sync) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    report_error(&mut sync, &err);
    std::process::exit(1)
}

fn helper(
    bundle: &Path,
    pid: i32,
    args: Vec<String>,
    sync: &mut File,
) -> Result<Infallible, String> {
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
    let mut process = spec.process().clone().ok_or("config.json has no process")?;
    // Read before joining the container's mount namespace hides the bundle.
    let filter = crate::seccomp::read(&spec, bundle, "running")?;
    crate::process::set_oom_score_adj(&process)?;
    process.set_args(Some(args));
    process.set_terminal(Some(false));
    // Open every namespace before entering any: after the mount namespace, /proc is the
    // container's.
    let mut nss = vec![];
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let p = format!("/proc/{pid}/ns/{name}");
        let mine = format!("/proc/self/ns/{name}");
        // Joining a namespace we are already in is refused for some types; skip those.
        if std::fs::read_link(&p).ok() == std::fs::read_link(&mine).ok() {
            continue;
        }
        let f = File::open(&p).map_err(|e| format!("container process {pid}: {p}: {e}"))?;
        let desc = format!(
            "{name} namespace ({:?} from {:?})",
            std::fs::read_link(&p).ok(),
            std::fs::read_link(&mine).ok()
        );
        nss.push((f, flag, desc));
    }
    if let Some(cg) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        let cg = cg.display().to_string();
        cgroups::join_self_single_threaded(&cg).map_err(|e| format!("joining cgroup {cg}: {e}"))?;
    }
    for (f, flag, name) in &nss {
        setns(f.as_fd(), *flag).map_err(|e| format!("joining {name}: {e}"))?;
        if *flag == CloneFlags::CLONE_NEWUSER {
            crate::init::become_userns_root()?;
        }
    }
    fork_reporting_pid(sync)?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    // Its own process group, so that a timeout kills what it started too.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    crate::process::exec_process(&process, filter.as_ref())
}
