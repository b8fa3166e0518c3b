//! The streaming HTTP server kubelet and crictl connect to with the URL a streaming call
//! returned: single-use tokens that expire, the HTTP/1.1 upgrade to SPDY/3.1 with the
//! Kubernetes subprotocol negotiated, then the session (`portforward`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{IoContext, Result};

/// How long a URL stays usable, as kubelet's own streaming server.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// What a token was issued for.
#[derive(Debug, Clone)]
pub enum Pending {
    /// Dial ports on localhost in this network namespace (`None`: the node's).
    PortForward { pod: String, netns: Option<PathBuf> },
}

pub struct Streaming {
    addr: SocketAddr,
    tokens: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Streaming {
    /// Binds the server and starts serving.
    pub async fn start(ip: std::net::IpAddr, port: u16) -> Result<Arc<Streaming>> {
        let listener = TcpListener::bind((ip, port))
            .await
            .ctx(|| format!("binding the streaming server to {ip}:{port}"))?;
        let addr = listener
            .local_addr()
            .ctx(|| "reading the streaming server's address")?;
        let s = Arc::new(Streaming {
            addr,
            tokens: Mutex::new(HashMap::new()),
        });
        let server = s.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((conn, peer)) => {
                        let server = server.clone();
                        tokio::spawn(async move {
                            if let Err(e) = server.serve(conn).await {
                                tracing::debug!(%peer, error = %e, "streaming connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(%addr, "streaming server listening");
        Ok(s)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A single-use URL for `p`, valid for a minute.
    pub fn url(&self, kind: &str, p: Pending) -> String {
        let token = hex::encode(rand::random::<[u8; 24]>());
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        t.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_TTL);
        t.insert(token.clone(), (now, p));
        format!("http://{}/{kind}/{token}", self.addr)
    }

    fn take(&self, token: &str) -> Option<Pending> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (at, p) = t.remove(token)?;
        (at.elapsed() < TOKEN_TTL).then_some(p)
    }

    async fn serve(&self, mut conn: TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let head_len = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::other("no request within 10 s"))??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return respond(&mut conn, 431, "request head too large").await;
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(
            req.parse(&buf[..head_len]),
            Ok(httparse::Status::Complete(_))
        ) {
            return respond(&mut conn, 400, "malformed request").await;
        }
        let path = req.path.unwrap_or("").to_string();
        let header = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .flat_map(|h| {
                    String::from_utf8_lossy(h.value)
                        .split(',')
                        .map(|v| v.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let upgrade = header("Upgrade");
        let protocols = header("X-Stream-Protocol-Version");
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Some(pending) = self.take(token) else {
            return respond(&mut conn, 404, "unknown or expired streaming URL").await;
        };
        if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
            return respond(
                &mut conn,
                400,
                "this streaming server speaks SPDY/3.1 (Upgrade: SPDY/3.1); WebSocket is not built yet",
            )
            .await;
        }
        match (kind, pending) {
            ("portforward", Pending::PortForward { pod, netns }) => {
                if !protocols.is_empty() && !protocols.iter().any(|p| p == PORT_FORWARD_PROTOCOL) {
                    return respond(
                        &mut conn,
                        403,
                        &format!("no supported protocol among {protocols:?} (want {PORT_FORWARD_PROTOCOL})"),
                    )
                    .await;
                }
                conn.write_all(
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                         X-Stream-Protocol-Version: {PORT_FORWARD_PROTOCOL}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
                let early = buf[head_len..].to_vec();
                tracing::debug!(pod = %pod, "port forwarding");
                super::portforward::session(conn, early, netns).await
            }
            _ => respond(&mut conn, 404, "unknown streaming URL").await,
        }
    }
}

async fn respond(conn: &mut TcpStream, code: u16, msg: &str) -> std::io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    conn.write_all(
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )
        .as_bytes(),
    )
    .await
}
