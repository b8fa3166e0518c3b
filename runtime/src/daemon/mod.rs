//! Starting and stopping skiffd: the socket, the services, signals.

mod authority;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use skiff_proto::cri::image_service_server::ImageServiceServer;
use skiff_proto::cri::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

use crate::config::Config;
use crate::cri::Cri;
use crate::error::{Error, IoContext, Result};
use crate::node::Node;

/// Largest CRI message accepted or sent (kubelet uses 16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// Runs skiffd until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<()> {
    let cfg = Arc::new(cfg);
    for dir in [&cfg.root, &cfg.run_root] {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .ctx(|| format!("setting mode of {}", dir.display()))?;
    }
    let node = Node::open(cfg.clone()).await?;
    crate::cri::container_events::start(node.clone())?;
    if let Some(addr) = cfg.metrics_address {
        crate::metrics::serve(addr, node.clone()).await?;
    }
    let cri = Cri::new(node);
    let (listener, activated) = match activated_listener()? {
        Some(l) => (l, true),
        None => (bind(&cfg.listen)?, false),
    };
    tracing::info!(socket = %cfg.listen.display(), activated, root = %cfg.root.display(), "skiffd serving CRI v1");
    notify("READY=1");

    let mut term = signal(SignalKind::terminate()).ctx(|| "installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).ctx(|| "installing SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let result = tonic::transport::Server::builder()
        .layer(crate::metrics::CriLayer)
        .add_service(
            RuntimeServiceServer::new(cri.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(cri)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map(|c| c.map(authority::Conn::new)),
            shutdown,
        )
        .await;
    notify("STOPPING=1");
    // A socket systemd passed in stays systemd's: it keeps listening for the next skiffd.
    if !activated {
        let _ = fs::remove_file(&cfg.listen);
    }
    result.map_err(|e| Error::Internal(format!("CRI server: {e}")))
}

/// The listening socket systemd passed (socket activation: `LISTEN_PID` is us and
/// `LISTEN_FDS` at least 1; the socket is fd 3), or `None` when started without one.
fn activated_listener() -> Result<Option<UnixListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !ours || n == 0 {
        return Ok(None);
    }
    // (The variables stay: a child's PID never matches LISTEN_PID, and changing the
    // environment of a threaded process is not safe.)
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: systemd passed fd 3 to this process for it to own (LISTEN_PID is ours); nothing
    // else in skiffd uses or closes it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(3) };
    let st =
        nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| Error::Internal(format!("fd 3: {e}")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Error::FailedPrecondition(
            "socket activation: fd 3 is not a socket".into(),
        ));
    }
    let l = std::os::unix::net::UnixListener::from(fd);
    l.set_nonblocking(true).ctx(|| "socket activation: fd 3")?;
    UnixListener::from_std(l)
        .ctx(|| "socket activation: fd 3")
        .map(Some)
}

/// Tells systemd `state` (`READY=1`…) when it started us as a `Type=notify` service.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify socket");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "sd_notify");
    }
}

/// Binds the CRI socket (mode 0660, parent created): a stale socket from a crash is replaced,
/// a live one (another skiffd) is refused.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(Error::FailedPrecondition(format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::FailedPrecondition(format!(
                    "{} is served by another process (is skiffd already running?)",
                    path.display()
                )));
            }
            fs::remove_file(path).ctx(|| format!("removing stale socket {}", path.display()))?;
            tracing::info!(socket = %path.display(), "replaced stale socket");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("inspecting {}", path.display()), e)),
    }
    let l = UnixListener::bind(path).ctx(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .ctx(|| format!("setting mode of {}", path.display()))?;
    Ok(l)
}
