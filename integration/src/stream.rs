//! A streaming client that speaks to skiffd's streaming server the way kubelet and crictl do
//! (client-go's remotecommand and portforward): SPDY/3.1 with `X-Stream-Protocol-Version`, a
//! stream per standard stream, or WebSocket with the channel protocols.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use skiff_runtime::streaming::spdy::{Frame, HeaderDecoder, HeaderEncoder, FLAG_FIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use std::sync::Arc;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

/// A TLS client config that trusts exactly `cert_der`.
pub fn trusting(cert_der: &[u8]) -> Arc<ClientConfig> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert_der.to_vec()))
        .expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Which transport and subprotocol.
#[derive(Debug, Clone, Copy)]
pub enum Proto {
    Spdy(&'static str),
    Ws(&'static str),
}

/// The streams asked for in the Exec or Attach request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A connection, plain or TLS.
pub trait Io:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}
pub type Conn = Box<dyn Io>;

/// Connects to a streaming URL and sends the upgrade request with `headers`; returns the
/// connection and the response head, or the whole refusal (head and body).
pub async fn upgrade(url: &str, headers: &str) -> Result<(Conn, String), String> {
    upgrade_tls(url, headers, None).await
}

/// Like [`upgrade`]; an `https` URL is reached with `tls`.
pub async fn upgrade_tls(
    url: &str,
    headers: &str,
    tls: Option<Arc<ClientConfig>>,
) -> Result<(Conn, String), String> {
    let (https, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://").expect("http(s) URL")),
    };
    let (host, path) = rest.split_once('/').expect("path");
    let tcp = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut c: Conn = if https {
        let cfg = tls.expect("an https URL needs a TLS client config");
        let name = ServerName::try_from(host.split(':').next().unwrap_or(host).to_string())
            .map_err(|e| e.to_string())?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    c.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    if text.starts_with("HTTP/1.1 101") {
        Ok((c, text))
    } else {
        let mut body = String::new();
        let _ = c.read_to_string(&mut body).await;
        Err(format!("{text}{body}"))
    }
}

/// SPDY upgrade headers offering `protocol`.
pub fn spdy_headers(protocol: &str) -> String {
    format!("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n")
}

/// WebSocket upgrade headers offering `protocol` ("" offers none).
pub fn ws_headers(protocol: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let proto = if protocol.is_empty() {
        String::new()
    } else {
        format!("Sec-WebSocket-Protocol: {protocol}\r\n")
    };
    format!(
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\n{proto}"
    )
}

/// What comes back from a session.
#[derive(Debug)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The error stream's content, once it ended.
    Status(Vec<u8>),
    /// The server ended the session.
    End,
}

/// The client's channels, numbered as on a WebSocket.
#[derive(Clone, Copy, PartialEq)]
enum Channel {
    Stdin = 0,
    Resize = 4,
}

enum Tx {
    Spdy {
        conn: tokio::io::WriteHalf<Conn>,
        enc: HeaderEncoder,
        stdin: u32,
        resize: u32,
    },
    Ws {
        sink: futures_util::stream::SplitSink<WebSocketStream<Conn>, Message>,
        base64: bool,
    },
}

/// An Exec or Attach session.
pub struct RemoteCommand {
    tx: Tx,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Reads the connection; ended with the session, so dropping it closes the connection.
    reader: tokio::task::JoinHandle<()>,
    pub protocol: String,
}

impl Drop for RemoteCommand {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The whole of a finished session.
#[derive(Debug, Default)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Vec<u8>,
}

impl Finished {
    /// The exit code a v4+ status carries (0 for Success), as client-go reads it.
    pub fn exit_code(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_slice(&self.status).ok()?;
        match v["status"].as_str()? {
            "Success" => Some(0),
            _ if v["reason"] == "NonZeroExitCode" => v["details"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["reason"] == "ExitCode")?["message"]
                .as_str()?
                .parse()
                .ok(),
            _ => None,
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn ws_encode(base64: bool, ch: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::new();
        s.push((b'0' + ch) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        Message::binary([&[ch][..], data].concat())
    }
}

impl RemoteCommand {
    pub async fn connect(url: &str, proto: Proto, s: Streams) -> Result<RemoteCommand, String> {
        Self::connect_tls(url, proto, s, None).await
    }

    /// Like [`RemoteCommand::connect`]; an `https` URL is reached with `tls`.
    pub async fn connect_tls(
        url: &str,
        proto: Proto,
        s: Streams,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<RemoteCommand, String> {
        match proto {
            Proto::Spdy(p) => Self::spdy(url, p, s, tls).await,
            Proto::Ws(p) => Self::ws(url, p, tls).await,
        }
    }

    async fn spdy(
        url: &str,
        protocol: &str,
        s: Streams,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<RemoteCommand, String> {
        let (c, head) = upgrade_tls(url, &spdy_headers(protocol), tls).await?;
        let chosen = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
            .unwrap_or("")
            .to_string();
        let (mut rd, mut wr) = tokio::io::split(c);
        let mut enc = HeaderEncoder::new();
        // client-go's order: error first, then stdin, stdout, stderr, resize.
        let mut kinds = vec!["error"];
        if s.stdin {
            kinds.push("stdin");
        }
        if s.stdout {
            kinds.push("stdout");
        }
        if s.stderr {
            kinds.push("stderr");
        }
        if s.tty && !matches!(protocol, "channel.k8s.io" | "v2.channel.k8s.io") {
            kinds.push("resize");
        }
        let mut ids = std::collections::HashMap::new();
        for (i, kind) in kinds.iter().enumerate() {
            let id = 1 + 2 * i as u32;
            ids.insert(*kind, id);
            let f = Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".to_string(), kind.to_string())],
            };
            wr.write_all(&f.encode(&mut enc).map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (ev_tx, rx) = mpsc::unbounded_channel();
        let (err_id, out_id, errout_id) = (
            ids["error"],
            ids.get("stdout").copied(),
            ids.get("stderr").copied(),
        );
        let reader = tokio::spawn(async move {
            let mut dec = HeaderDecoder::new();
            let mut buf = vec![];
            let mut status = vec![];
            // The session is over once the error stream and the output streams have ended.
            let mut open: Vec<u32> = [Some(err_id), out_id, errout_id]
                .into_iter()
                .flatten()
                .collect();
            loop {
                while let Ok(Some((f, n))) = Frame::parse(&buf, &mut dec) {
                    buf.drain(..n);
                    if let Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } = f
                    {
                        if flags & FLAG_FIN != 0 {
                            open.retain(|id| *id != stream_id);
                        }
                        if stream_id == err_id {
                            status.extend(data);
                            if flags & FLAG_FIN != 0 {
                                let _ = ev_tx.send(Event::Status(std::mem::take(&mut status)));
                            }
                        } else if Some(stream_id) == out_id && !data.is_empty() {
                            let _ = ev_tx.send(Event::Stdout(data));
                        } else if Some(stream_id) == errout_id && !data.is_empty() {
                            let _ = ev_tx.send(Event::Stderr(data));
                        }
                        if open.is_empty() {
                            let _ = ev_tx.send(Event::End);
                            return;
                        }
                    }
                }
                let mut chunk = [0u8; 16384];
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = ev_tx.send(Event::End);
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        Ok(RemoteCommand {
            tx: Tx::Spdy {
                conn: wr,
                enc,
                stdin: ids.get("stdin").copied().unwrap_or(0),
                resize: ids.get("resize").copied().unwrap_or(0),
            },
            rx,
            reader,
            protocol: chosen,
        })
    }

    async fn ws(
        url: &str,
        protocol: &str,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<RemoteCommand, String> {
        let (c, head) = upgrade_tls(url, &ws_headers(protocol), tls).await?;
        let chosen = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Protocol: "))
            .unwrap_or("")
            .to_string();
        let base64 = chosen.contains("base64");
        let ws = WebSocketStream::from_raw_socket(c, Role::Client, None).await;
        let (sink, mut stream) = ws.split();
        let (ev_tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let raw = match m {
                    Message::Binary(b) => b.to_vec(),
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Some((&ch, rest)) = raw.split_first() else {
                    continue;
                };
                let (ch, data) = if base64 {
                    (
                        ch - b'0',
                        base64::engine::general_purpose::STANDARD
                            .decode(rest)
                            .expect("base64 from the server"),
                    )
                } else {
                    (ch, rest.to_vec())
                };
                let ev = match ch {
                    1 if !data.is_empty() => Event::Stdout(data),
                    2 if !data.is_empty() => Event::Stderr(data),
                    3 if !data.is_empty() => Event::Status(data),
                    _ => continue,
                };
                let _ = ev_tx.send(ev);
            }
            let _ = ev_tx.send(Event::End);
        });
        Ok(RemoteCommand {
            tx: Tx::Ws { sink, base64 },
            rx,
            reader,
            protocol: chosen,
        })
    }

    pub async fn stdin(&mut self, data: &[u8]) {
        self.send(Channel::Stdin, false, data).await
    }

    /// Ends stdin: FIN on its SPDY stream, or v5's CLOSE signal.
    pub async fn close_stdin(&mut self) {
        self.send(Channel::Stdin, true, &[]).await
    }

    pub async fn resize(&mut self, width: u16, height: u16) {
        let json = format!("{{\"Width\":{width},\"Height\":{height}}}");
        self.send(Channel::Resize, false, json.as_bytes()).await
    }

    /// `data` on stdin or resize; `end`: the end of that stream instead.
    async fn send(&mut self, ch: Channel, end: bool, data: &[u8]) {
        match &mut self.tx {
            Tx::Spdy {
                conn,
                enc,
                stdin,
                resize,
            } => {
                let f = Frame::Data {
                    stream_id: if ch == Channel::Stdin {
                        *stdin
                    } else {
                        *resize
                    },
                    flags: if end { FLAG_FIN } else { 0 },
                    data: data.to_vec(),
                };
                conn.write_all(&f.encode(enc).unwrap()).await.unwrap();
            }
            Tx::Ws { sink, base64 } => {
                let m = match (end, ch) {
                    (true, _) => Message::binary(vec![255, ch as u8]),
                    (false, _) => ws_encode(*base64, ch as u8, data),
                };
                sink.send(m).await.unwrap()
            }
        }
    }

    /// The next event, at most `limit` away.
    pub async fn next(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Reads until stdout holds `needle` (or `limit` passes); returns what stdout held.
    pub async fn read_until(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = vec![];
        while !String::from_utf8_lossy(&out).contains(needle) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Event::Stdout(d)) => out.extend(d),
                Some(Event::Stderr(_)) | Some(Event::Status(_)) => {}
                Some(Event::End) | None => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads everything until the server ends the session, at most `limit`.
    pub async fn finish(&mut self, limit: Duration) -> Finished {
        let deadline = tokio::time::Instant::now() + limit;
        let mut f = Finished::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Event::Stdout(d)) => f.stdout.extend(d),
                Some(Event::Stderr(d)) => f.stderr.extend(d),
                Some(Event::Status(d)) => f.status.extend(d),
                Some(Event::End) => return f,
                None => panic!("the session did not end within {limit:?}: {f:?}"),
            }
        }
    }
}
