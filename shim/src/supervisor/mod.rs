//! The pod supervisor: a single-threaded tokio loop that serves the shim API on the pod's
//! socket, reaps every child (it is the pod's PID 1, or a child subreaper), and records each
//! container's exit crash-safely in its state file. Its parts: `pod` (the `pod` mode that
//! creates the pod's namespaces and becomes this loop), `container` (starting containers and
//! following them), `helper` (running the single-threaded helpers), `logs`, `attach`, `idle`
//! (giving its binary's read-only pages back when idle).

pub mod attach;
pub mod container;
pub mod helper;
pub mod idle;
pub mod logs;
pub mod pod;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use skiff_proto::shim::shim_server::{Shim, ShimServer};
use skiff_proto::shim::*;
use skiff_shim::api::PodConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, Notify};
use tonic::{Request, Response, Status};

use container::Container;

/// Everything the supervisor tracks.
pub struct State {
    pub cfg: PodConfig,
    /// This binary on its read-only mount: what `init` and `exec` helpers run from.
    pub exe: PathBuf,
    pub containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Processes waited for by PID (container main processes, exec'd commands).
    pub waiters: Mutex<HashMap<i32, oneshot::Sender<WaitStatus>>>,
    /// Exits reaped before anyone registered to wait for them, with when they were reaped.
    pub early_exits: Mutex<HashMap<i32, (WaitStatus, Instant)>>,
    pub shutdown: Notify,
    /// A request came (see `idle`).
    pub activity: Notify,
    /// The runtime's namespaces the pod left (see `hooks`), by name.
    pub runtime_ns: Vec<(String, std::os::fd::OwnedFd)>,
    /// The mount namespace holding the pod's /dev/shm, when the pod has its own IPC
    /// namespace (see `skiff_shim::podshm`).
    pub shm: Option<std::os::fd::OwnedFd>,
}

impl State {
    /// The runtime's namespaces as (name, descriptor number), for hooks.
    pub fn runtime_ns_fds(&self) -> Vec<(String, std::os::fd::RawFd)> {
        use std::os::fd::AsRawFd;
        self.runtime_ns
            .iter()
            .map(|(n, fd)| (n.clone(), fd.as_raw_fd()))
            .collect()
    }

    /// The pod's /dev/shm as container helpers receive it.
    pub fn pod_shm(&self) -> Option<skiff_shim::podshm::PodShm> {
        use std::os::fd::AsRawFd;
        self.shm.as_ref().map(|ns| skiff_shim::podshm::PodShm {
            ns: ns.as_raw_fd(),
            dir: self.cfg.dir.join(skiff_shim::api::SHM_DIR),
        })
    }

    /// Waits for `pid` to exit, whether the reaper has already seen it or not.
    pub fn wait_for(&self, pid: i32) -> oneshot::Receiver<WaitStatus> {
        let (tx, rx) = oneshot::channel();
        let early = self
            .early_exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        match early {
            Some((st, _)) => {
                let _ = tx.send(st);
            }
            None => {
                self.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pid, tx);
            }
        }
        rx
    }

    fn reaped(&self, pid: i32, st: WaitStatus) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        match waiter {
            Some(tx) => {
                let _ = tx.send(st);
            }
            None => {
                let mut early = self.early_exits.lock().unwrap_or_else(|p| p.into_inner());
                // Helper processes (the parents of init and exec) are reaped here too and never
                // waited for: forget exits nobody claimed within a minute.
                let now = Instant::now();
                early.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
                early.insert(pid, (st, now));
            }
        }
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>, Status> {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("container {id} is not running in this pod")))
    }
}

pub fn run(
    cfg: PodConfig,
    listener: std::os::unix::net::UnixListener,
    exe: PathBuf,
    pod_init: Option<crate::supervisor::pod::PodInit>,
    runtime_ns: Vec<(String, std::os::fd::OwnedFd)>,
    shm: Option<std::os::fd::OwnedFd>,
) -> ! {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-shim: runtime: {e}");
            std::process::exit(1);
        }
    };
    let state = Arc::new(State {
        cfg,
        exe,
        containers: Mutex::new(HashMap::new()),
        waiters: Mutex::new(HashMap::new()),
        early_exits: Mutex::new(HashMap::new()),
        shutdown: Notify::new(),
        activity: Notify::new(),
        runtime_ns,
        shm,
    });
    let code = rt.block_on(serve(state, listener));
    if let Some(init) = pod_init {
        init.stop();
    }
    std::process::exit(code)
}

async fn serve(state: Arc<State>, listener: std::os::unix::net::UnixListener) -> i32 {
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("skiff-shim: socket: {e}");
        return 1;
    }
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skiff-shim: socket: {e}");
            return 1;
        }
    };
    let reaper_state = state.clone();
    tokio::spawn(async move { reap(reaper_state).await });
    let idle_state = state.clone();
    tokio::spawn(async move { idle::trim_when_idle(&idle_state.activity).await });
    // Set up and serving: idle until a request comes.
    state.activity.notify_one();
    let shutdown_state = state.clone();
    let active_state = state.clone();
    let svc = ShimServer::with_interceptor(
        Api {
            state: state.clone(),
        },
        move |req: Request<()>| {
            active_state.activity.notify_one();
            Ok(req)
        },
    );
    // Small windows and frames: skiffd's requests are small, and every byte of buffer is paid
    // once per pod.
    let result = tonic::transport::Server::builder()
        .initial_connection_window_size(64 * 1024)
        .initial_stream_window_size(64 * 1024)
        .max_frame_size(16 * 1024)
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async move { shutdown_state.shutdown.notified().await },
        )
        .await;
    let _ = std::fs::remove_file(state.cfg.socket());
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff-shim: serving: {e}");
            1
        }
    }
}

async fn reap(state: Arc<State>) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skiff-shim: SIGCHLD handler: {e}");
            return;
        }
    };
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if let Some(pid) = st.pid() {
                        state.reaped(pid.as_raw(), st);
                    }
                }
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

struct Api {
    state: Arc<State>,
}

/// The replies of Exec and Attach, as the generated service wants them.
type OutStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<StdioOut, Status>> + Send + 'static>>;

/// The `start` message that opens an Exec or Attach stream.
async fn first_start(input: &mut tonic::Streaming<StdioIn>) -> Result<StdioStart, Status> {
    match input.message().await? {
        Some(StdioIn {
            msg: Some(stdio_in::Msg::Start(s)),
        }) => Ok(s),
        _ => Err(Status::invalid_argument(
            "the stream must open with a start message",
        )),
    }
}

#[tonic::async_trait]
impl Shim for Api {
    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let req = req.into_inner();
        let pid = container::start(&self.state, req, None).await?;
        Ok(Response::new(StartContainerResponse { pid }))
    }

    async fn restore_container(
        &self,
        req: Request<RestoreContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let req = req.into_inner();
        let start = req
            .start
            .ok_or_else(|| Status::invalid_argument("start: is required"))?;
        let from = container::Checkpoint {
            images: req.images.into(),
            criu: req.criu.into(),
        };
        let pid = container::start(&self.state, start, Some(from)).await?;
        Ok(Response::new(StartContainerResponse { pid }))
    }

    async fn kill_container(
        &self,
        req: Request<KillContainerRequest>,
    ) -> Result<Response<KillContainerResponse>, Status> {
        let req = req.into_inner();
        let c = self.state.container(&req.id)?;
        c.kill(req.signal, req.all)?;
        Ok(Response::new(KillContainerResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let req = req.into_inner();
        let c = self.state.container(&req.id)?;
        let r = crate::helpers::exec::exec_sync(&self.state, &c, req.cmd, req.timeout_ms).await?;
        Ok(Response::new(r))
    }

    async fn exec(
        &self,
        req: Request<tonic::Streaming<StdioIn>>,
    ) -> Result<Response<OutStream>, Status> {
        let mut input = req.into_inner();
        let start = first_start(&mut input).await?;
        let c = self.state.container(&start.id)?;
        let out = crate::helpers::exec::exec_stream(&self.state, &c, start, input).await?;
        Ok(Response::new(Box::pin(out)))
    }

    async fn attach(
        &self,
        req: Request<tonic::Streaming<StdioIn>>,
    ) -> Result<Response<OutStream>, Status> {
        let mut input = req.into_inner();
        let start = first_start(&mut input).await?;
        let c = self.state.container(&start.id)?;
        let out = crate::supervisor::attach::attach(c, start, input).await?;
        Ok(Response::new(Box::pin(out)))
    }

    async fn reopen_log(
        &self,
        req: Request<ReopenLogRequest>,
    ) -> Result<Response<ReopenLogResponse>, Status> {
        let req = req.into_inner();
        let c = self.state.container(&req.id)?;
        c.reopen_log()?;
        Ok(Response::new(ReopenLogResponse {}))
    }

    async fn shutdown(
        &self,
        _req: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let all: Vec<Arc<Container>> = self
            .state
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for c in &all {
            let _ = c.kill(libc::SIGKILL, true);
        }
        for c in &all {
            c.wait_exit(std::time::Duration::from_secs(10)).await;
        }
        self.state.shutdown.notify_one();
        Ok(Response::new(ShutdownResponse {}))
    }
}
