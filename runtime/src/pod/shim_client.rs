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

/// Connections to pod shims kept open between calls: at most [`KEPT`], the least recently used
/// closed first. Each holds about 40 KiB of HTTP/2 buffers in skiffd, so a node of 250 pods
/// would keep 10 MiB for connections mostly idle; a closed one is made again (a Unix socket
/// connect and an HTTP/2 handshake, well under a millisecond) when its pod is next called.
#[derive(Default)]
pub struct Connections {
    inner: std::sync::Mutex<Kept>,
}

/// The kept connections, each with the tick of its last use.
#[derive(Default)]
struct Kept {
    tick: u64,
    by_pod: std::collections::HashMap<String, (ShimClient<Channel>, u64)>,
}

/// Connections kept open: enough for the pods being started or stopped at once.
pub const KEPT: usize = 32;

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept connection to a pod's shim, if any.
    pub fn get(&self, pod_id: &str) -> Option<ShimClient<Channel>> {
        let mut k = self.lock();
        k.tick += 1;
        let tick = k.tick;
        k.by_pod.get_mut(pod_id).map(|(c, used)| {
            *used = tick;
            c.clone()
        })
    }

    /// Keeps a connection to a pod's shim, closing the least recently used beyond [`KEPT`].
    pub fn keep(&self, pod_id: &str, c: ShimClient<Channel>) {
        let mut k = self.lock();
        k.tick += 1;
        let tick = k.tick;
        k.by_pod.insert(pod_id.to_string(), (c, tick));
        while k.by_pod.len() > KEPT {
            let Some(oldest) = k
                .by_pod
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            k.by_pod.remove(&oldest);
        }
    }

    /// Closes the connection to a pod's shim (it is stopping).
    pub fn forget(&self, pod_id: &str) {
        self.lock().by_pod.remove(pod_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_least_recently_used_connection_is_closed() {
        let client = || ShimClient::new(Endpoint::from_static("http://[::]:0").connect_lazy());
        let conns = Connections::default();
        for i in 0..KEPT {
            conns.keep(&format!("pod{i}"), client());
        }
        assert!(conns.get("pod0").is_some());
        conns.keep("new", client());
        assert!(conns.get("pod0").is_some(), "used last: kept");
        assert!(conns.get("pod1").is_none(), "used least: closed");
        assert!(conns.get("new").is_some());
        assert_eq!(conns.lock().by_pod.len(), KEPT);
        conns.forget("new");
        assert!(conns.get("new").is_none());
    }
}
