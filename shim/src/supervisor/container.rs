//! Starting a container and following it: the supervisor runs `skiff-shim init BUNDLE` (single
//! threaded, from the read-only binary) with the container's stdio and a sync socket on fd 3,
//! learns the container's host PID from it, and sees EOF once the container process has exec'd
//! (or an error line if it could not). It then pumps output to the CRI log and records the exit.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::Deserialize;
use skiff_proto::shim::{stdio_out, StartContainerRequest, StdioOut};
use skiff_shim::api::{now_ns, ContainerState};
use skiff_shim::{cgroups, fsutil};
use tokio::sync::watch;
use tonic::Status;

use crate::init::hooks::Stage;
use crate::supervisor::logs::{self, LogFile};
use crate::supervisor::State;

/// A started container, as the supervisor tracks it.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// The main process in the supervisor's PID namespace.
    pub pid: i32,
    /// The main process in the host's PID namespace (what /proc paths need).
    pub host_pid: i32,
    /// cgroupfs path from the spec, if any.
    pub cgroup: Option<String>,
    log: Option<Arc<LogFile>>,
    exited: watch::Receiver<bool>,
    state: Mutex<ContainerState>,
    /// Where attached clients' input goes (the stdin pipe, or the pty master); `None` without
    /// stdin, or once closed.
    pub stdin: tokio::sync::Mutex<Option<FdWriter>>,
    /// Close stdin when the first attach session that wrote to it ends.
    pub stdin_once: bool,
    /// The pty master of a tty container, for terminal resizes.
    pub pty: Option<OwnedFd>,
    /// Attached clients, fed with the output as it is logged.
    pub taps: Taps,
}

/// Clients attached to a container's output.
#[derive(Default)]
pub struct Taps {
    next: std::sync::atomic::AtomicU64,
    list: Mutex<Vec<Tap>>,
}

struct Tap {
    id: u64,
    stdout: bool,
    stderr: bool,
    tx: tokio::sync::mpsc::Sender<Result<StdioOut, Status>>,
}

impl Taps {
    /// Adds a client that receives stdout and/or stderr; returns its id for [`Taps::remove`].
    pub fn add(
        &self,
        stdout: bool,
        stderr: bool,
        tx: tokio::sync::mpsc::Sender<Result<StdioOut, Status>>,
    ) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Tap {
                id,
                stdout,
                stderr,
                tx,
            });
        id
    }

    pub fn remove(&self, id: u64) {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|t| t.id != id);
    }

    /// Ends every attached client's output (the container exited).
    fn close_all(&self) {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Passes a chunk of `stream` output to the clients that want it. A client too slow to
    /// keep up loses output rather than holding the container's output (and log) back.
    pub fn send(&self, stream: &str, data: &[u8]) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            return;
        }
        let is_err = stream == "stderr";
        list.retain(|t| {
            if (is_err && !t.stderr) || (!is_err && !t.stdout) {
                return true;
            }
            let msg = if is_err {
                stdio_out::Msg::Stderr(data.to_vec())
            } else {
                stdio_out::Msg::Stdout(data.to_vec())
            };
            !matches!(
                t.tx.try_send(Ok(StdioOut { msg: Some(msg) })),
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_))
            )
        });
    }
}

impl Container {
    pub fn kill(&self, sig: i32, all: bool) -> Result<(), Status> {
        if *self.exited.borrow() {
            return Ok(());
        }
        let signal = Signal::try_from(sig)
            .map_err(|_| Status::invalid_argument(format!("signal {sig} is not a signal")))?;
        let mut targets = vec![self.pid];
        if all {
            if let Some(cg) = &self.cgroup {
                targets.extend(cgroups::pids(cg));
            }
        }
        for pid in targets {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(Status::internal(format!(
                        "signalling pid {pid} of container {}: {e}",
                        self.id
                    )))
                }
            }
        }
        Ok(())
    }

    pub fn reopen_log(&self) -> Result<(), Status> {
        match &self.log {
            Some(l) => l
                .reopen()
                .map_err(|e| Status::internal(format!("reopening the log of {}: {e}", self.id))),
            None => Err(Status::failed_precondition(format!(
                "container {} has no log file",
                self.id
            ))),
        }
    }

    pub fn is_running(&self) -> bool {
        !*self.exited.borrow()
    }

    /// Waits until the exit is recorded, at most `limit`.
    pub async fn wait_exit(&self, limit: Duration) {
        let mut rx = self.exited.clone();
        let _ = tokio::time::timeout(limit, rx.wait_for(|e| *e)).await;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum SyncMsg {
    /// The container process in the supervisor's PID namespace (for waitpid and kill).
    Pid(i32),
    /// The same process as the host's PID namespace numbers it (for /proc and skiffd).
    HostPid(i32),
    Error(String),
}

/// What the supervisor reads of config.json; everything else is skipped without allocating.
#[derive(serde::Deserialize)]
struct BundleSpec {
    process: Option<serde::de::IgnoredAny>,
    linux: Option<BundleLinux>,
    hooks: Option<oci_spec::runtime::Hooks>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleLinux {
    cgroups_path: Option<String>,
    namespaces: Option<Vec<BundleNamespace>>,
}

#[derive(serde::Deserialize)]
struct BundleNamespace {
    #[serde(rename = "type")]
    typ: String,
    path: Option<serde::de::IgnoredAny>,
}

impl BundleLinux {
    /// Whether init may be started as PID 1 of a new PID namespace the supervisor creates (see
    /// `helper::spawn_init`): the spec asks for a PID namespace of the container's own, and
    /// joins no user namespace (a PID namespace belongs to the user namespace it is created
    /// in, and the container's root mounts its /proc as the pod's user namespace's root).
    fn init_may_be_born_in_pid_ns(&self) -> bool {
        let ns = self.namespaces.as_deref().unwrap_or(&[]);
        ns.iter().any(|n| n.typ == "pid" && n.path.is_none()) && !ns.iter().any(|n| n.typ == "user")
    }
}

/// A CRIU checkpoint to restore a container from, instead of running its spec's process.
pub struct Checkpoint {
    /// CRIU's image directory.
    pub images: PathBuf,
    /// The criu binary.
    pub criu: PathBuf,
}

/// Starts (or, with `restore`, restores) the container of `req` and returns its PID in the
/// host's namespace.
pub async fn start(
    state: &Arc<State>,
    req: StartContainerRequest,
    restore: Option<Checkpoint>,
) -> Result<i32, Status> {
    if let Ok(c) = state.container(&req.id) {
        if c.is_running() {
            return Err(Status::failed_precondition(format!(
                "container {} is already running",
                req.id
            )));
        }
    }
    let bundle = PathBuf::from(&req.bundle);
    // Only two fields matter here; the full typed spec is read by the init helper. Keeping the
    // supervisor off that code, and off allocating the rest of the file (a seccomp profile is
    // most of it), keeps its resident size small.
    let raw = std::fs::read(bundle.join("config.json")).map_err(|e| {
        Status::invalid_argument(format!("bundle {}: config.json: {e}", bundle.display()))
    })?;
    let spec: BundleSpec = serde_json::from_slice(&raw).map_err(|e| {
        Status::invalid_argument(format!("bundle {}: config.json: {e}", bundle.display()))
    })?;
    drop(raw);
    if spec.process.is_none() {
        return Err(Status::invalid_argument("config.json has no process"));
    }
    let hook_stages = |stage| {
        spec.hooks
            .as_ref()
            .is_some_and(|h| !crate::init::hooks::of(h, stage).is_empty())
    };
    let (poststart, poststop) = (hook_stages(Stage::Poststart), hook_stages(Stage::Poststop));
    // The runtime's hooks run from a process init forks first, in the runtime's PID namespace.
    let born_in_pid_ns = spec
        .linux
        .as_ref()
        .is_some_and(BundleLinux::init_may_be_born_in_pid_ns)
        && !hook_stages(Stage::Prestart)
        && !hook_stages(Stage::CreateRuntime);
    let cgroup = spec.linux.and_then(|l| l.cgroups_path);
    let log = if req.log_path.is_empty() {
        None
    } else {
        Some(
            LogFile::open(PathBuf::from(&req.log_path).as_path()).map_err(|e| {
                Status::failed_precondition(format!("opening log {}: {e}", req.log_path))
            })?,
        )
    };

    // stdio: a pty for tty containers (stdin, stdout and stderr), pipes otherwise; stdin ends
    // at once unless the container asked for it. The shim keeps the writing side of stdin for
    // attach, and the pty master for resizes.
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| Status::internal(format!("dup: {e}")))
    };
    let mut stdin_writer = None;
    let mut pty_master = None;
    let (child_in, child_out, child_err, out_src, err_src): (
        OwnedFd,
        OwnedFd,
        OwnedFd,
        OwnedFd,
        Option<OwnedFd>,
    ) = if req.tty {
        let pty =
            nix::pty::openpty(None, None).map_err(|e| Status::internal(format!("openpty: {e}")))?;
        set_cloexec(&pty.master);
        if req.stdin {
            stdin_writer = Some(dup(&pty.master)?);
        }
        pty_master = Some(dup(&pty.master)?);
        (
            dup(&pty.slave)?,
            dup(&pty.slave)?,
            pty.slave,
            pty.master,
            None,
        )
    } else {
        let child_in: OwnedFd = if req.stdin {
            let (r, w) = pipe()?;
            stdin_writer = Some(w);
            r
        } else {
            // A pipe already at its end reads like /dev/null, and is the container's own to
            // checkpoint (the node's /dev/null is on a mount the container cannot see).
            let (r, _w) = pipe()?;
            r
        };
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        (child_in, ow, ew, or, Some(er))
    };
    let pod_shm = state.pod_shm();
    let (mut lines, forked_pid) = match &restore {
        Some(r) => {
            let shm_arg = pod_shm
                .as_ref()
                .map(|s| std::ffi::OsString::from(s.to_arg()));
            let mut args = vec![
                "restore".as_ref(),
                bundle.as_os_str(),
                r.images.as_os_str(),
                r.criu.as_os_str(),
            ];
            args.extend(shm_arg.as_deref());
            let fds: Vec<std::os::fd::RawFd> = pod_shm.iter().map(|s| s.ns).collect();
            crate::supervisor::helper::spawn_with(
                &state.exe, &args, child_in, child_out, child_err, &fds,
            )
            .map(|lines| (lines, None))?
        }
        None => crate::supervisor::helper::spawn_init(
            &state.exe,
            &bundle,
            born_in_pid_ns,
            &state.runtime_ns_fds(),
            pod_shm,
            [child_in, child_out, child_err],
        )?,
    };
    // Init born in the container's PID namespace does not know its PID here; its parent does.
    let mut pid = forked_pid.unwrap_or(0);
    let mut host_pid = 0;
    let mut failure = None;
    loop {
        // A restore takes as long as CRIU needs to load the checkpoint's memory.
        let limit = Duration::from_secs(if restore.is_some() { 600 } else { 60 });
        let line = match tokio::time::timeout(limit, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                failure = Some(format!("reading from init: {e}"));
                break;
            }
            Err(_) => {
                failure = Some(format!("container init did not finish within {limit:?}"));
                break;
            }
        };
        match serde_json::from_str::<SyncMsg>(&line) {
            Ok(SyncMsg::Pid(p)) => pid = p,
            Ok(SyncMsg::HostPid(p)) => host_pid = p,
            Ok(SyncMsg::Error(e)) => {
                failure = Some(e);
                break;
            }
            Err(_) => {
                failure = Some(format!("container init said {line:?}"));
                break;
            }
        }
    }
    if failure.is_none() && (pid == 0 || host_pid == 0) {
        failure = Some("container init exited before starting the container".into());
    }
    let exit_rx = (pid > 0).then(|| state.wait_for(pid));
    if let Some(msg) = failure {
        if pid > 0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let st = ContainerState {
            pid: host_pid,
            started_at: 0,
            finished_at: now_ns(),
            exited: true,
            exit_code: 128,
            reason: "StartError".into(),
            message: msg.clone(),
        };
        let _ = st.write(&bundle);
        return Err(Status::failed_precondition(format!(
            "starting container {}: {msg}",
            req.id
        )));
    }
    let initial = ContainerState {
        pid: host_pid,
        started_at: now_ns(),
        ..Default::default()
    };
    initial
        .write(&bundle)
        .map_err(|e| Status::internal(format!("recording start of {}: {e}", req.id)))?;

    let stdin = match stdin_writer {
        Some(w) => Some(FdWriter::new(w).map_err(|e| Status::internal(format!("stdin: {e}")))?),
        None => None,
    };
    let (exited_tx, exited_rx) = watch::channel(false);
    let c = Arc::new(Container {
        id: req.id.clone(),
        bundle: bundle.clone(),
        pid,
        host_pid,
        cgroup: cgroup.clone(),
        log,
        exited: exited_rx,
        state: Mutex::new(initial),
        stdin: tokio::sync::Mutex::new(stdin),
        stdin_once: req.stdin_once,
        pty: pty_master,
        taps: Taps::default(),
    });

    // Output pumps: to the CRI log (or nowhere), and to attached clients.
    let mut pumps = vec![tokio::spawn(pump(reader(out_src)?, "stdout", c.clone()))];
    if let Some(e) = err_src {
        pumps.push(tokio::spawn(pump(reader(e)?, "stderr", c.clone())));
    }
    state
        .containers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(req.id.clone(), c.clone());

    let Some(exit_rx) = exit_rx else {
        return Err(Status::internal("no pid"));
    };
    let reported = c.host_pid;
    let runtime_ns = state.runtime_ns_fds();
    let exits_dir = state.cfg.exits_dir.clone();
    if poststart {
        run_hooks_logged(&bundle, &runtime_ns, Stage::Poststart, reported).await;
    }
    tokio::spawn(async move {
        let status = exit_rx.await.ok();
        // Output still buffered in the pipes belongs before the exit; a background process that
        // keeps the pipe open must not hold the exit back for long.
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        let code = match status {
            Some(WaitStatus::Exited(_, code)) => code,
            Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
            _ => 255,
        };
        let oom = c.cgroup.as_deref().map(cgroups::oom_kills).unwrap_or(0) > 0;
        let mut st = c.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        st.exited = true;
        st.exit_code = code;
        st.finished_at = now_ns();
        st.reason = if oom {
            "OOMKilled".into()
        } else if code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        };
        if let Err(e) = st.write(&c.bundle) {
            eprintln!("skiff-shim: recording exit of {}: {e}", c.id);
        }
        *c.state.lock().unwrap_or_else(|p| p.into_inner()) = st;
        c.taps.close_all();
        if let Some(dir) = &exits_dir {
            // The exit is recorded: tell skiffd (which may be down; it reads the directory
            // when it is back).
            if let Err(e) = fsutil::write_atomic_volatile(&dir.join(&c.id), b"") {
                eprintln!(
                    "skiff-shim: noting exit of {} in {}: {e}",
                    c.id,
                    dir.display()
                );
            }
        }
        if poststop {
            run_hooks_logged(&c.bundle, &runtime_ns, Stage::Poststop, reported).await;
        }
        let _ = exited_tx.send(true);
    });
    Ok(reported)
}

/// Runs the hooks of a stage whose failures do not change the container's life (poststart,
/// poststop) on a thread of their own in the runtime's namespaces: a failure is logged and the
/// rest of the stage's hooks are skipped.
async fn run_hooks_logged(
    bundle: &Path,
    runtime_ns: &[(String, std::os::fd::RawFd)],
    stage: Stage,
    pid: i32,
) {
    let (bundle, ns) = (bundle.to_path_buf(), runtime_ns.to_vec());
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread that ends with the hooks: setns moves only it into the runtime's namespaces.
    let spawned = std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || {
            let ran = crate::init::hooks::join_runtime_ns(&ns).and_then(|()| {
                let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
                    .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
                crate::init::hooks::run(&spec, &bundle, stage, pid)
            });
            let _ = tx.send(ran);
        });
    let ran = match spawned {
        Ok(_) => rx
            .await
            .unwrap_or_else(|_| Err("the hooks' thread died".into())),
        Err(e) => Err(format!("starting the hooks' thread: {e}")),
    };
    if let Err(e) = ran {
        eprintln!("skiff-shim: warning: {stage:?} hooks: {e}");
    }
}

pub fn set_cloexec(fd: &OwnedFd) {
    // SAFETY: F_SETFD on a descriptor we own, with an integer flag.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

fn reader(fd: OwnedFd) -> Result<FdReader, Status> {
    FdReader::new(fd).map_err(|e| Status::internal(format!("output descriptor: {e}")))
}

/// Copies one output stream of the container to its log (if it has one) and to attached
/// clients, until EOF.
async fn pump(src: FdReader, stream: &'static str, c: Arc<Container>) {
    let log = c.log.clone();
    logs::pump(src, stream, log.as_deref(), |data| {
        c.taps.send(stream, data)
    })
    .await
}

pub fn pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Status::internal(format!("pipe: {e}")))
}

/// Sets a pty's window size.
pub fn resize(pty: &OwnedFd, width: u32, height: u32) {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize struct; the descriptor is open.
    unsafe {
        libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer flags.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes to a pipe or pty master through the runtime's epoll.
pub struct FdWriter {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl FdWriter {
    pub fn new(fd: OwnedFd) -> std::io::Result<FdWriter> {
        set_nonblocking(&fd)?;
        // SAFETY: `fd` is an owned, valid descriptor that the AsyncFd keeps and closes; nothing
        // replaces or closes it while registered.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE)?
        };
        Ok(FdWriter { fd })
    }

    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| {
                // SAFETY: writes from a valid slice whose length is passed; the descriptor is
                // open.
                let n = unsafe {
                    libc::write(
                        inner.get_ref().as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Reads a pipe or pty master through the runtime's epoll, without a thread per stream.
pub struct FdReader {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl FdReader {
    pub fn new(fd: OwnedFd) -> std::io::Result<FdReader> {
        set_nonblocking(&fd)?;
        // SAFETY: `fd` is an owned, valid descriptor that the AsyncFd keeps and closes; nothing
        // replaces or closes it while registered.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd)? };
        Ok(FdReader { fd })
    }
}

impl tokio::io::AsyncRead for FdReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                std::task::Poll::Ready(Ok(g)) => g,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|inner| {
                // SAFETY: reads into the initialised, unfilled part of the buffer, whose length
                // is passed; the descriptor is open.
                let n = unsafe {
                    libc::read(
                        inner.get_ref().as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    // A pty master reads EIO once the slave side is gone: that is its EOF.
                    if e.raw_os_error() == Some(libc::EIO) {
                        return Ok(0);
                    }
                    Err(e)
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}
