//! Starting and stopping skiffd: the socket, the services, signals.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use skiff_proto::cri::image_service_server::ImageServiceServer;
use skiff_proto::cri::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

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
    let cri = Cri::new(node);
    let listener = bind(&cfg.listen)?;
    tracing::info!(socket = %cfg.listen.display(), root = %cfg.root.display(), "skiffd serving CRI v1");

    let mut term = signal(SignalKind::terminate()).ctx(|| "installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).ctx(|| "installing SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let result = tonic::transport::Server::builder()
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
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = fs::remove_file(&cfg.listen);
    result.map_err(|e| Error::Internal(format!("CRI server: {e}")))
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
