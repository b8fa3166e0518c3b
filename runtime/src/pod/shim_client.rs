//! A gRPC client for a pod's shim, over the pod's Unix socket.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use skiff_proto::shim::shim_client::ShimClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// A gRPC channel to whatever serves on the Unix socket `socket` (a shim, or skiffd for the
/// `skiff` CLI).
pub async fn unix_channel(socket: &Path) -> std::result::Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://[::]:0")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                // A run root of any length: the address goes through the directory's fd.
                let (_dir, addr) = skiff_shim::fsutil::socket_address(&p)?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(addr).await?))
            }
        }))
        .await
}

/// Connects to the shim listening on `socket`.
pub async fn connect(pod_id: &str, socket: &Path) -> Result<ShimClient<Channel>> {
    let ch = unix_channel(socket).await.map_err(|e| {
        Error::FailedPrecondition(format!(
            "pod sandbox {pod_id}: its shim does not answer at {}: {e}",
            socket.display()
        ))
    })?;
    Ok(ShimClient::new(ch))
}

/// A shim's error, kept with its code, naming the pod.
pub fn shim_error(pod_id: &str, s: tonic::Status) -> Error {
    let msg = format!("pod sandbox {pod_id}: {}", s.message());
    match s.code() {
        tonic::Code::NotFound => Error::NotFound(msg),
        tonic::Code::InvalidArgument => Error::InvalidArgument(msg),
        tonic::Code::FailedPrecondition => Error::FailedPrecondition(msg),
        tonic::Code::Unavailable => Error::FailedPrecondition(msg),
        _ => Error::Internal(msg),
    }
}
