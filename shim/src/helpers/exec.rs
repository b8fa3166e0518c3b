//! ExecSync and Exec: a command run inside a running container the way its own process runs
//! (the container's namespaces, cgroup, user, capabilities, seccomp filter, environment), with
//! its output collected (ExecSync) or streamed both ways with a pty or pipes (Exec).
//!
//! The supervisor runs `skiff-shim exec BUNDLE PID -- ARGS…` (single-threaded, from the read-only
//! binary). The helper joins the namespaces of the container's main process PID and its cgroup,
//! reports on fd 3 the PID of the process that runs the command (its own; or a child's, forked
//! to be inside a PID namespace the helper joined, the helper then exiting), and that process
//! execs the command with the container's process settings.

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
use skiff_proto::shim::{stdio_in, stdio_out, ExecSyncResponse, StdioIn, StdioOut, StdioStart};
use skiff_shim::cgroups;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::init::{become_reported_process, report_error, sync_socket};
use crate::supervisor::container::{pipe, Container, FdReader, FdWriter};
use crate::supervisor::State;

/// Most output kept per stream; the rest is read and dropped.
const MAX_OUTPUT: usize = 16 << 20;

pub async fn exec_sync(
    state: &Arc<State>,
    c: &Container,
    cmd: Vec<String>,
    timeout_ms: i64,
) -> Result<ExecSyncResponse, Status> {
    let null = File::open("/dev/null").map_err(|e| Status::internal(format!("/dev/null: {e}")))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (out, err) = (Output::default(), Output::default());
    let out_task = tokio::spawn(collect(out_r, out.clone()));
    let err_task = tokio::spawn(collect(err_r, err.clone()));
    let pid = start_helper(state, c, &cmd, false, null.into(), out_w, err_w).await?;
    let exit = state.wait_for(pid);
    let (status, timed_out) = if timeout_ms > 0 {
        match tokio::time::timeout(Duration::from_millis(timeout_ms as u64), exit).await {
            Ok(st) => (st.ok(), false),
            Err(_) => {
                kill_command(pid);
                (None, true)
            }
        }
    } else {
        (exit.await.ok(), false)
    };
    let stdout = wait_output(out_task, &out).await;
    let stderr = wait_output(err_task, &err).await;
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code: exit_code(status),
        timed_out,
    })
}

/// Starts `cmd` in container `c` through the exec helper with the given stdio; returns its
/// PID in the supervisor's namespace once it has exec'd.
async fn start_helper(
    state: &Arc<State>,
    c: &Container,
    cmd: &[String],
    tty: bool,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<i32, Status> {
    if cmd.is_empty() {
        return Err(Status::invalid_argument("cmd: is empty"));
    }
    if !c.is_running() {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            c.id
        )));
    }
    let pid_arg = c.host_pid.to_string();
    let mode = if tty { "exec-tty" } else { "exec" };
    let mut args: Vec<&std::ffi::OsStr> = vec![
        mode.as_ref(),
        c.bundle.as_os_str(),
        pid_arg.as_ref(),
        "--".as_ref(),
    ];
    args.extend(cmd.iter().map(|a| std::ffi::OsStr::new(a.as_str())));
    let mut lines = crate::supervisor::helper::spawn(&state.exe, &args, stdin, stdout, stderr)?;
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
    Ok(pid)
}

/// Kills an exec'd command and everything it started (its session's process group).
fn kill_command(pid: i32) {
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

fn exit_code(status: Option<WaitStatus>) -> i32 {
    match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => -1,
    }
}

type OutTx = mpsc::Sender<Result<StdioOut, Status>>;

/// Streaming exec: runs `start.cmd` in container `c` with a pty (`start.tty`) or pipes for the
/// streams asked for, relays `input` to it and its output to the returned stream, which ends
/// with the exit code. If `input` ends before the command does (the client went away), the
/// command is killed.
pub async fn exec_stream(
    state: &Arc<State>,
    c: &Container,
    start: StdioStart,
    mut input: tonic::Streaming<StdioIn>,
) -> Result<ReceiverStream<Result<StdioOut, Status>>, Status> {
    let (tx, rx) = mpsc::channel::<Result<StdioOut, Status>>(64);
    let open_null = || -> Result<OwnedFd, Status> {
        Ok(File::open("/dev/null")
            .map_err(|e| Status::internal(format!("/dev/null: {e}")))?
            .into())
    };
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| Status::internal(format!("dup: {e}")))
    };
    // Our ends: where stdin goes, the output sources, and the pty for resizes.
    let mut writer = None;
    let mut sources: Vec<(OwnedFd, bool)> = vec![];
    let mut pty = None;
    let (child_in, child_out, child_err) = if start.tty {
        let p =
            nix::pty::openpty(None, None).map_err(|e| Status::internal(format!("openpty: {e}")))?;
        crate::supervisor::container::set_cloexec(&p.master);
        if start.stdin {
            writer = Some(dup(&p.master)?);
        }
        sources.push((dup(&p.master)?, false));
        pty = Some(p.master);
        (dup(&p.slave)?, dup(&p.slave)?, p.slave)
    } else {
        let child_in = if start.stdin {
            let (r, w) = pipe()?;
            writer = Some(w);
            r
        } else {
            open_null()?
        };
        let mut out = |wanted: bool, is_err: bool| -> Result<OwnedFd, Status> {
            if !wanted {
                return open_null();
            }
            let (r, w) = pipe()?;
            sources.push((r, is_err));
            Ok(w)
        };
        let o = out(start.stdout, false)?;
        let e = out(start.stderr, true)?;
        (child_in, o, e)
    };
    let mut readers = vec![];
    for (fd, is_err) in sources {
        let r = FdReader::new(fd).map_err(|e| Status::internal(format!("output: {e}")))?;
        readers.push(tokio::spawn(relay_output(r, is_err, tx.clone())));
    }
    let writer = match writer {
        Some(w) => Some(FdWriter::new(w).map_err(|e| Status::internal(format!("stdin: {e}")))?),
        None => None,
    };
    let pid = start_helper(
        state, c, &start.cmd, start.tty, child_in, child_out, child_err,
    )
    .await?;
    let exit = state.wait_for(pid);
    let tty = start.tty;
    let input_task = tokio::spawn(async move {
        let mut writer = writer;
        loop {
            match input.message().await {
                Ok(Some(StdioIn { msg: Some(m) })) => match m {
                    stdio_in::Msg::Stdin(data) => {
                        if let Some(w) = &writer {
                            if w.write_all(&data).await.is_err() {
                                writer = None;
                            }
                        }
                    }
                    stdio_in::Msg::CloseStdin(_) => {
                        // A pty has no end of input but the EOF character.
                        if let (true, Some(w)) = (tty, &writer) {
                            let _ = w.write_all(&[4]).await;
                        }
                        writer = None;
                    }
                    stdio_in::Msg::Resize(sz) => {
                        if let Some(p) = &pty {
                            crate::supervisor::container::resize(p, sz.width, sz.height);
                        }
                    }
                    stdio_in::Msg::Start(_) => {}
                },
                Ok(Some(_)) => {}
                // The client went away before the command ended.
                Ok(None) | Err(_) => {
                    kill_command(pid);
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        let status = exit.await.ok();
        input_task.abort();
        // Output still in the pipes belongs before the exit code; a background process that
        // keeps them open must not hold the exit back for long.
        for r in readers {
            if tokio::time::timeout(Duration::from_secs(2), r)
                .await
                .is_err()
            {
                break;
            }
        }
        let code = exit_code(status);
        let _ = tx
            .send(Ok(StdioOut {
                msg: Some(stdio_out::Msg::ExitCode(code)),
            }))
            .await;
    });
    Ok(ReceiverStream::new(rx))
}

/// Sends what `r` yields to `tx` as stdout or stderr until EOF.
async fn relay_output(mut r: FdReader, is_err: bool, tx: OutTx) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = buf[..n].to_vec();
                let msg = if is_err {
                    stdio_out::Msg::Stderr(data)
                } else {
                    stdio_out::Msg::Stdout(data)
                };
                if tx.send(Ok(StdioOut { msg: Some(msg) })).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// What a command wrote to one stream so far.
type Output = Arc<std::sync::Mutex<Vec<u8>>>;

async fn collect(fd: OwnedFd, out: Output) {
    let Ok(mut r) = FdReader::new(fd) else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                if out.len() < MAX_OUTPUT {
                    let take = n.min(MAX_OUTPUT - out.len());
                    out.extend_from_slice(&buf[..take]);
                }
            }
        }
    }
}

/// What the command wrote, once its stream ends, or 2 s after it exited: a background process
/// of the command may keep the pipe open, and then what was written until then is the output
/// (the reader stops, closing our end).
async fn wait_output(t: tokio::task::JoinHandle<()>, out: &Output) -> Vec<u8> {
    let abort = t.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), t)
        .await
        .is_err()
    {
        abort.abort();
    }
    std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The helper side: `skiff-shim exec|exec-tty BUNDLE HOST_PID -- ARGS…` (the host's PID of the
/// container's main process: the helper reads its namespaces from the host's /proc). With
/// `tty`, fds 0-2 are a pty slave that becomes the command's controlling terminal.
pub fn helper_main(bundle: &Path, pid: i32, tty: bool, args: Vec<String>) -> ! {
    // As for container init: out of reach of the container until the exec.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let mut sync = sync_socket();
    let err = match helper(bundle, pid, tty, args, &mut sync) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    report_error(&mut sync, &err);
    std::process::exit(1)
}

fn helper(
    bundle: &Path,
    pid: i32,
    tty: bool,
    args: Vec<String>,
    sync: &mut File,
) -> Result<Infallible, String> {
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
    let mut process = spec.process().clone().ok_or("config.json has no process")?;
    // Read before joining the container's mount namespace hides the bundle.
    let filter = crate::init::seccomp::read(&spec, bundle, "running")?;
    crate::init::process::set_oom_score_adj(&process)?;
    process.set_args(Some(args));
    process.set_terminal(Some(tty));
    if tty {
        // As containerd does for a terminal exec.
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("TERM="));
        env.push("TERM=xterm".into());
        process.set_env(Some(env));
    }
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
    // Namespaces we are in already were left out above: a PID namespace here is another.
    let entered_pid_ns = nss
        .iter()
        .any(|(_, flag, _)| *flag == CloneFlags::CLONE_NEWPID);
    become_reported_process(sync, entered_pid_ns)?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    // Its own session and process group, so that a timeout kills what it started too (with a
    // terminal, exec_process makes the session and takes the pty as its terminal).
    if !tty {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    }
    crate::init::process::exec_process(&process, filter.as_ref())
}
