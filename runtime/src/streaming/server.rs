//! The streaming HTTP server kubelet and crictl connect to with the URL a streaming call
//! returned: single-use tokens that expire, the HTTP/1.1 upgrade — to SPDY/3.1 with the
//! Kubernetes subprotocol negotiated in `X-Stream-Protocol-Version`, or to WebSocket with it in
//! `Sec-WebSocket-Protocol` — then the session (`portforward`, `remotecommand`, `websocket`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{remotecommand, websocket};
use crate::error::{IoContext, Result};

/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// What a token was issued for.
#[derive(Debug, Clone)]
pub enum Pending {
    /// Dial ports on localhost in this network namespace (`None`: the node's). `ports` are
    /// the request's, which WebSocket clients forward (SPDY clients name theirs per stream).
    PortForward {
        pod: String,
        netns: Option<PathBuf>,
        ports: Vec<u16>,
    },
    /// Exec (a command) or Attach (no command).
    Command(super::remotecommand::Command),
}

/// An accepted connection, plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Conn = Box<dyn Io>;

pub struct Streaming {
    addr: SocketAddr,
    /// `https` with TLS, else `http`.
    scheme: &'static str,
    /// How long a URL stays usable (kubelet's own streaming server: a minute).
    ttl: Duration,
    tokens: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Streaming {
    /// Binds the server and starts serving.
    pub async fn start(
        ip: std::net::IpAddr,
        port: u16,
        ttl: Duration,
        tls: Option<&(PathBuf, PathBuf)>,
    ) -> Result<Arc<Streaming>> {
        let acceptor = tls.map(|(c, k)| tls_acceptor(c, k)).transpose()?;
        let listener = TcpListener::bind((ip, port))
            .await
            .ctx(|| format!("binding the streaming server to {ip}:{port}"))?;
        let addr = listener
            .local_addr()
            .ctx(|| "reading the streaming server's address")?;
        let s = Arc::new(Streaming {
            addr,
            scheme: if acceptor.is_some() { "https" } else { "http" },
            ttl,
            tokens: Mutex::new(HashMap::new()),
        });
        let server = s.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((conn, peer)) => {
                        let server = server.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let conn: Conn = match acceptor {
                                None => Box::new(conn),
                                Some(a) => {
                                    let hs = tokio::time::timeout(
                                        Duration::from_secs(10),
                                        a.accept(conn),
                                    );
                                    match hs.await {
                                        Ok(Ok(tls)) => Box::new(tls),
                                        Ok(Err(e)) => {
                                            tracing::debug!(%peer, error = %e, "TLS handshake");
                                            return;
                                        }
                                        Err(_) => return,
                                    }
                                }
                            };
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

    /// A single-use URL for `p`, valid for the configured time.
    pub fn url(&self, kind: &str, p: Pending) -> String {
        let token = hex::encode(rand::random::<[u8; 24]>());
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        t.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        t.insert(token.clone(), (now, p));
        format!("{}://{}/{kind}/{token}", self.scheme, self.addr)
    }

    fn take(&self, token: &str) -> Option<Pending> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (at, p) = t.remove(token)?;
        (at.elapsed() < self.ttl).then_some(p)
    }

    async fn serve(&self, mut conn: Conn) -> std::io::Result<()> {
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
        let ws_protocols = header("Sec-WebSocket-Protocol");
        let ws_key = header("Sec-WebSocket-Key");
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // A query string (a WebSocket client's ports, say) is not part of the token.
        let token = token.split('?').next().unwrap_or("");
        let Some(pending) = self.take(token) else {
            return respond(&mut conn, 404, "unknown or expired streaming URL").await;
        };
        let early = buf[head_len..].to_vec();
        let websocket = upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
        if websocket {
            let Some(key) = ws_key.first().filter(|k| !k.is_empty()).cloned() else {
                return respond(
                    &mut conn,
                    400,
                    "WebSocket upgrade without Sec-WebSocket-Key",
                )
                .await;
            };
            let supported: &[&str] = match (&pending, kind) {
                (Pending::PortForward { .. }, "portforward") => &websocket::PORT_FORWARD_PROTOCOLS,
                (Pending::Command(c), "exec") if !c.cmd.is_empty() => {
                    &websocket::REMOTE_COMMAND_PROTOCOLS
                }
                (Pending::Command(c), "attach") if c.cmd.is_empty() => {
                    &websocket::REMOTE_COMMAND_PROTOCOLS
                }
                _ => return respond(&mut conn, 404, "unknown streaming URL").await,
            };
            let Some(protocol) = websocket::choose(&ws_protocols, supported) else {
                return respond(
                    &mut conn,
                    403,
                    &format!(
                        "no supported protocol among {ws_protocols:?} (want one of {supported:?})"
                    ),
                )
                .await;
            };
            conn.write_all(websocket::accept_response(&key, protocol).as_bytes())
                .await?;
            match pending {
                Pending::PortForward { pod, netns, ports } => {
                    tracing::debug!(pod = %pod, "port forwarding over WebSocket");
                    websocket::port_forward(conn, early, protocol, netns, ports).await;
                }
                Pending::Command(c) => {
                    tracing::debug!(container = %c.container, "exec/attach over WebSocket");
                    websocket::remote_command(conn, early, protocol, c).await;
                }
            }
            return Ok(());
        }
        if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
            return respond(
                &mut conn,
                400,
                "this streaming server speaks SPDY/3.1 (Upgrade: SPDY/3.1) and WebSocket (Upgrade: websocket)",
            )
            .await;
        }
        let (supported, pending): (&[&str], Pending) = match (kind, pending) {
            ("portforward", p @ Pending::PortForward { .. }) => (&[PORT_FORWARD_PROTOCOL], p),
            ("exec", Pending::Command(c)) if !c.cmd.is_empty() => {
                (&remotecommand::PROTOCOLS, Pending::Command(c))
            }
            ("attach", Pending::Command(c)) if c.cmd.is_empty() => {
                (&remotecommand::PROTOCOLS, Pending::Command(c))
            }
            _ => return respond(&mut conn, 404, "unknown streaming URL").await,
        };
        // The client's first protocol we speak; none asked for: the oldest.
        let protocol = if protocols.is_empty() {
            supported[supported.len() - 1]
        } else {
            match protocols
                .iter()
                .find_map(|p| supported.iter().find(|s| *s == p))
            {
                Some(p) => p,
                None => {
                    return respond(
                        &mut conn,
                        403,
                        &format!(
                            "no supported protocol among {protocols:?} (want one of {supported:?})"
                        ),
                    )
                    .await
                }
            }
        };
        conn.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                 X-Stream-Protocol-Version: {protocol}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        match pending {
            Pending::PortForward { pod, netns, .. } => {
                tracing::debug!(pod = %pod, "port forwarding");
                super::portforward::session(conn, early, netns).await
            }
            Pending::Command(c) => {
                tracing::debug!(container = %c.container, protocol, "exec/attach");
                remotecommand::spdy_session(conn, early, protocol, c).await
            }
        }
    }
}

/// The TLS acceptor for a PEM certificate chain and key.
fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &PathBuf, e: &dyn std::fmt::Display| {
        crate::error::Error::InvalidArgument(format!("{what} {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| bad("streaming_tls_cert", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("streaming_tls_cert", cert, &"no certificate in it"));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad("streaming_tls_key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| bad("streaming_tls_cert/streaming_tls_key", cert, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

async fn respond(conn: &mut Conn, code: u16, msg: &str) -> std::io::Result<()> {
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
