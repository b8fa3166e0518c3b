//! The WebSocket side of streaming, as kubelet's streaming server speaks it: the subprotocol is
//! picked from the client's `Sec-WebSocket-Protocol` list, and every message starts with its
//! channel number — a byte (`*channel.k8s.io`), or an ASCII digit before base64 data
//! (`*base64.channel.k8s.io`).
//!
//! - Exec and Attach: channels 0 stdin, 1 stdout, 2 stderr, 3 error (the status), 4 resize;
//!   `v5.channel.k8s.io` adds the CLOSE signal `[255, channel]` for the end of stdin. An empty
//!   message on the lowest channel the server writes tells the client the session is open.
//! - PortForward: for the i-th port of the request, channel 2i carries data both ways and
//!   2i+1 errors; each starts with the port as two little-endian bytes.

use std::path::PathBuf;
use std::time::Duration;

use super::server::Conn;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::conn::Rewound;
use super::remotecommand::{self, Command, Input, Output};

/// Exec and Attach subprotocols, in kubelet's order of preference (the client's order wins).
pub const REMOTE_COMMAND_PROTOCOLS: [&str; 6] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
];
/// PortForward subprotocols.
pub const PORT_FORWARD_PROTOCOLS: [&str; 3] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How long a client has to answer our close.
const LINGER: Duration = Duration::from_secs(5);

/// The first of the client's protocols that the server supports (`""` when it offered none);
/// `None` when none fits.
pub fn choose<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    if offered.is_empty() {
        return supported.iter().find(|p| p.is_empty()).copied();
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| !s.is_empty() && *s == o).copied())
}

/// The 101 response that accepts a WebSocket upgrade with `key`.
pub fn accept_response(key: &str, protocol: &str) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let proto = if protocol.is_empty() {
        String::new()
    } else {
        format!("Sec-WebSocket-Protocol: {protocol}\r\n")
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{proto}\r\n"
    )
}

/// Messages in one subprotocol's framing.
#[derive(Clone, Copy)]
struct Codec {
    base64: bool,
}

impl Codec {
    fn new(protocol: &str) -> Codec {
        Codec {
            base64: protocol.contains("base64"),
        }
    }

    fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push((b'0' + channel) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    }

    /// A client message as (channel, data); `None` for control messages and garbage.
    fn decode(self, m: Message) -> Option<(u8, Vec<u8>)> {
        let raw: Vec<u8> = match m {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        if self.base64 && first != CLOSE {
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((first.wrapping_sub(b'0'), data))
        } else {
            Some((first, rest.to_vec()))
        }
    }
}

async fn open(conn: Conn, early: Vec<u8>) -> WebSocketStream<Rewound> {
    WebSocketStream::from_raw_socket(Rewound::new(conn, early), Role::Server, None).await
}

/// Sends a normal close and waits a little for the client's.
async fn close(ws: &mut WebSocketStream<Rewound>) {
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ =
        tokio::time::timeout(LINGER, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// Serves an Exec or Attach over an upgraded WebSocket connection.
pub async fn remote_command(conn: Conn, early: Vec<u8>, protocol: &str, c: Command) {
    let codec = Codec::new(protocol);
    let version = remotecommand::version(protocol);
    let mut ws = open(conn, early).await;
    let first = if c.stdout {
        STDOUT
    } else if c.stderr {
        STDERR
    } else {
        ERROR
    };
    if ws.send(codec.encode(first, &[])).await.is_err() {
        return;
    }
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let cmd = c.cmd.clone();
    let (stdin, stdout, stderr) = (c.stdin, c.stdout, c.stderr);
    let mut run_task = tokio::spawn(remotecommand::run(c, in_rx, out_tx));
    let mut in_tx = Some(in_tx);
    let mut resize = remotecommand::ResizeDecoder::default();
    let mut output_open = true;
    let outcome = loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else {
                    // The client is gone: its input channel closing ends an exec'd command.
                    in_tx = None;
                    break None;
                };
                let Some((ch, data)) = codec.decode(m) else { continue };
                let Some(tx) = &in_tx else { continue };
                match ch {
                    STDIN if stdin && !data.is_empty() => {
                        let _ = tx.send(Input::Stdin(data));
                    }
                    RESIZE => {
                        for (w, h) in resize.push(&data) {
                            let _ = tx.send(Input::Resize(w, h));
                        }
                    }
                    CLOSE if version >= 5 && data.first() == Some(&STDIN) => {
                        let _ = tx.send(Input::CloseStdin);
                    }
                    _ => {}
                }
            }
            o = out_rx.recv(), if output_open => match o {
                Some(Output::Stdout(d)) if stdout => {
                    if ws.send(codec.encode(STDOUT, &d)).await.is_err() {
                        in_tx = None;
                        break None;
                    }
                }
                Some(Output::Stderr(d)) if stderr => {
                    if ws.send(codec.encode(STDERR, &d)).await.is_err() {
                        in_tx = None;
                        break None;
                    }
                }
                Some(_) => {}
                None => output_open = false,
            },
            r = &mut run_task, if !output_open => {
                break Some(r.unwrap_or_else(|e| remotecommand::Outcome::Failed(format!("exec task: {e}"))));
            }
        }
    };
    drop(in_tx);
    match outcome {
        Some(o) => {
            if let Some(data) = o.encode(version, &cmd) {
                let _ = ws.send(codec.encode(ERROR, &data)).await;
            }
            close(&mut ws).await;
        }
        None => {
            // Let the shim see the end of input and the command end.
            let _ = tokio::time::timeout(Duration::from_secs(10), run_task).await;
        }
    }
}

/// Serves a PortForward over an upgraded WebSocket connection: one forwarded connection per
/// port of the request, all at once; the session ends when all of them have.
pub async fn port_forward(
    conn: Conn,
    early: Vec<u8>,
    protocol: &str,
    netns: Option<PathBuf>,
    ports: Vec<u16>,
) {
    let codec = Codec::new(protocol);
    let mut ws = open(conn, early).await;
    for (i, p) in ports.iter().enumerate() {
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if ws.send(codec.encode(ch, &p.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    // (channel, data) to send; a forward's end is `None` data on its data channel.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(u8, Option<Vec<u8>>)>();
    let mut to_pods = vec![];
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        to_pods.push(tx);
        let out = out_tx.clone();
        let data_ch = 2 * i as u8;
        let netns = netns.clone();
        tokio::spawn(async move {
            let data_out = out.clone();
            let r = super::portforward::copy(netns, port, rx, move |d| {
                data_out.send((data_ch, Some(d))).is_ok()
            })
            .await;
            if let Err(msg) = r {
                let _ = out.send((data_ch + 1, Some(msg.into_bytes())));
            }
            let _ = out.send((data_ch, None));
        });
    }
    drop(out_tx);
    let mut running = ports.len();
    while running > 0 {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                let Some((ch, data)) = codec.decode(m) else { continue };
                if ch % 2 == 0 {
                    if let Some(tx) = to_pods.get((ch / 2) as usize) {
                        if !data.is_empty() {
                            let _ = tx.send(Some(data));
                        }
                    }
                }
            }
            o = out_rx.recv() => match o {
                Some((ch, Some(d))) => {
                    if ws.send(codec.encode(ch, &d)).await.is_err() {
                        return;
                    }
                }
                Some((_, None)) => running -= 1,
                None => running = 0,
            }
        }
    }
    close(&mut ws).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_choice_follows_the_client() {
        let offered = vec!["v4.channel.k8s.io".to_string(), "channel.k8s.io".into()];
        assert_eq!(
            choose(&offered, &REMOTE_COMMAND_PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(choose(&[], &REMOTE_COMMAND_PROTOCOLS), Some(""));
        assert_eq!(choose(&["x".to_string()], &REMOTE_COMMAND_PROTOCOLS), None);
    }

    #[test]
    fn channels_in_binary_and_base64() {
        let b = Codec { base64: false };
        assert_eq!(b.encode(1, b"hi"), Message::binary(vec![1, b'h', b'i']));
        assert_eq!(
            b.decode(Message::binary(vec![0, b'x'])),
            Some((0, b"x".to_vec()))
        );
        let t = Codec { base64: true };
        assert_eq!(t.encode(1, b"foo\n"), Message::text("1Zm9vCg=="));
        assert_eq!(
            t.decode(Message::text("0Zm9vCg==")),
            Some((0, b"foo\n".to_vec()))
        );
        // The RFC 6455 example key.
        assert!(
            accept_response("dGhlIHNhbXBsZSBub25jZQ==", "v4.channel.k8s.io")
                .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }
}
