//! A port-forward session (`portforward.k8s.io` over SPDY/3.1), as kubelet and kubectl speak
//! it: the client opens streams in pairs — `streamtype: error` and `streamtype: data`, both
//! with the `port` and the same `requestid` — and for each pair skiffd dials that port on
//! localhost inside the pod's network namespace and copies bytes both ways on the data stream.
//! A failed dial is reported as text on the error stream. Ending the client's side of the
//! data stream ends the writing half of the connection; the pod's side closing ends the data
//! stream. A vanished client ends every connection of the session.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::server::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::conn::{ack, frame_writer, header, FrameReader};
use super::spdy::{Frame, FLAG_FIN};

/// Bytes read from the pod's socket per DATA frame.
const CHUNK: usize = 32 * 1024;

/// One forwarded connection: its two streams and, once dialled, the way to the socket.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: String,
    /// `Some(bytes)` to write, `None` when the client ended its side.
    to_socket: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    started: bool,
}

/// Serves one upgraded connection until the client leaves. `early` holds bytes that arrived
/// with the request head.
pub async fn session(conn: Conn, early: Vec<u8>, netns: Option<PathBuf>) -> io::Result<()> {
    let (rd, wr) = tokio::io::split(conn);
    let (out, writer) = frame_writer(wr);
    let mut frames = FrameReader::new(rd, early);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut stream_of: HashMap<u32, String> = HashMap::new();
    let result = loop {
        let frame = match frames.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let kind = header(&headers, "streamtype").to_string();
                let port = header(&headers, "port").to_string();
                // Clients that send no requestid pair streams by port.
                let key = match header(&headers, "requestid") {
                    "" => format!("port:{port}"),
                    id => id.to_string(),
                };
                let _ = out.send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: vec![],
                });
                let pair = pairs.entry(key.clone()).or_default();
                pair.port = port;
                match kind.as_str() {
                    "error" => pair.error = Some(stream_id),
                    "data" => pair.data = Some(stream_id),
                    _ => {
                        let _ = out.send(Frame::RstStream {
                            stream_id,
                            status: super::spdy::rst::PROTOCOL_ERROR,
                        });
                        continue;
                    }
                }
                stream_of.insert(stream_id, key.clone());
                if let (Some(err), Some(data), false) = (pair.error, pair.data, pair.started) {
                    pair.started = true;
                    let (tx, rx) = mpsc::unbounded_channel();
                    pair.to_socket = Some(tx);
                    tokio::spawn(forward(
                        netns.clone(),
                        pair.port.clone(),
                        err,
                        data,
                        rx,
                        out.clone(),
                    ));
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let n = data.len();
                if let Some(pair) = stream_of.get(&stream_id).and_then(|k| pairs.get_mut(k)) {
                    if pair.data == Some(stream_id) {
                        if let Some(tx) = &pair.to_socket {
                            if !data.is_empty() {
                                let _ = tx.send(Some(data));
                            }
                            if flags & FLAG_FIN != 0 {
                                let _ = tx.send(None);
                            }
                        }
                    }
                }
                ack(&out, stream_id, n);
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(pair) = stream_of.get(&stream_id).and_then(|k| pairs.get_mut(k)) {
                    pair.to_socket = None;
                }
            }
            Frame::Ping { id } => {
                let _ = out.send(Frame::Ping { id });
            }
            Frame::GoAway { .. } => break Ok(()),
            _ => {}
        }
    };
    // Closing the ways to the sockets ends every forwarded connection of the session.
    pairs.clear();
    drop(out);
    let _ = writer.await;
    result
}

/// Dials the pair's port and copies bytes until either side ends.
async fn forward(
    netns: Option<PathBuf>,
    port: String,
    error_stream: u32,
    data_stream: u32,
    from_client: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    out: mpsc::UnboundedSender<Frame>,
) {
    let fin = |stream_id: u32, data: Vec<u8>| Frame::Data {
        stream_id,
        flags: FLAG_FIN,
        data,
    };
    let to_client = {
        let out = out.clone();
        move |data: Vec<u8>| {
            out.send(Frame::Data {
                stream_id: data_stream,
                flags: 0,
                data,
            })
            .is_ok()
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {port:?}"));
    let r = match port {
        Ok(p) => copy(netns, p, from_client, to_client).await,
        Err(e) => Err(e),
    };
    let msg = r.err().unwrap_or_default();
    let _ = out.send(fin(error_stream, msg.into_bytes()));
    let _ = out.send(fin(data_stream, vec![]));
}

/// Dials `port` in the pod and copies bytes both ways: `from_client` yields what the client
/// sends (`None`: it ended its side; closed: it is gone), `to_client` takes what the pod sends
/// (false: the client is gone). Ends when the pod's side closes or the client is gone; a
/// failed dial is the error message kubelet would write on the error stream.
pub async fn copy(
    netns: Option<PathBuf>,
    port: u16,
    mut from_client: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    mut to_client: impl FnMut(Vec<u8>) -> bool,
) -> Result<(), String> {
    let sock = dial(netns, port)
        .await
        .map_err(|e| format!("error forwarding port {port} to pod: {e}"))?;
    let (mut sr, mut sw) = sock.into_split();
    // Ends when the client is gone (session over or stream reset); after the client merely
    // ended its side, waits for the pod's.
    let to_pod = async move {
        loop {
            match from_client.recv().await {
                Some(Some(bytes)) => {
                    if sw.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(None) => {
                    let _ = sw.shutdown().await;
                    std::future::pending::<()>().await;
                }
                None => return,
            }
        }
    };
    let from_pod = async move {
        let mut b = vec![0u8; CHUNK];
        loop {
            match sr.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !to_client(b[..n].to_vec()) {
                        break;
                    }
                }
            }
        }
    };
    // The pod's side closing, or the client vanishing, ends the exchange.
    tokio::select! {
        _ = from_pod => {}
        _ = to_pod => {}
    }
    Ok(())
}

/// Connects to `port` on localhost (IPv4, then IPv6) in the network namespace pinned at
/// `netns`, from a thread of its own that joins it (and then ends: no other task ever runs in
/// that namespace).
async fn dial(netns: Option<PathBuf>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| -> io::Result<std::net::TcpStream> {
            if let Some(p) = &netns {
                let f = std::fs::File::open(p)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
            }
            let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v4, Duration::from_secs(5))
                .or_else(|_| std::net::TcpStream::connect_timeout(&v6, Duration::from_secs(5)))
        })();
        let _ = tx.send(r);
    });
    let s = rx
        .await
        .map_err(|_| io::Error::other("the dialling thread vanished"))??;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}
