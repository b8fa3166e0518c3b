//! Exec and Attach sessions (the Kubernetes remote command protocols), whatever carries them:
//! the client's input (stdin, its end, terminal sizes) goes to the pod's shim over its Exec or
//! Attach stream, the shim's output comes back, and the session ends with a status on the error
//! stream — from `v4.channel.k8s.io` on a JSON `metav1.Status` whose `NonZeroExitCode` reason
//! and `ExitCode` cause carry the exit code, before it a plain message on failure only.
//!
//! This module also speaks the SPDY side (`spdy_session`): the client opens one stream per
//! standard stream (`streamtype` header: error, stdin, stdout, stderr, resize), the server
//! starts once all it expects are there.

use std::io;
use std::time::Duration;

use super::server::Conn;
use skiff_proto::shim::shim_client::ShimClient;
use skiff_proto::shim::{stdio_in, stdio_out, StdioIn, StdioStart, TerminalSize};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::conn::{ack, frame_writer, header, FrameReader};
use super::spdy::{Frame, FLAG_FIN};

/// How long a client has to open the streams it asked for (kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client has to close the connection after the session ended.
const LINGER: Duration = Duration::from_secs(5);

/// The remote command protocols, newest first.
pub const PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// What an Exec or Attach URL was issued for.
#[derive(Debug, Clone)]
pub struct Command {
    pub pod: String,
    pub container: String,
    /// Empty for Attach.
    pub cmd: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub shim: ShimClient<Channel>,
}

impl Command {
    fn attach(&self) -> bool {
        self.cmd.is_empty()
    }
}

/// What the client sends.
#[derive(Debug)]
pub enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u32, u32),
}

/// What goes back to the client before the status.
#[derive(Debug)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    ExitCode(i32),
    Failed(String),
}

/// Protocol version from its name: 1 (`channel.k8s.io` or none) to 5.
pub fn version(protocol: &str) -> u8 {
    match protocol.split('.').next() {
        Some("v5") => 5,
        Some("v4") => 4,
        Some("v3") => 3,
        Some("v2") => 2,
        _ => 1,
    }
}

impl Outcome {
    /// What the error stream carries: the JSON status from v4 on; before it, the message of a
    /// failure only (`None` on success).
    pub fn encode(&self, version: u8, cmd: &[String]) -> Option<Vec<u8>> {
        let message = match self {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(format!(
                "command terminated with non-zero exit code: error executing command {}, exit code {code}",
                go_list(cmd)
            )),
            Outcome::Failed(m) => Some(format!("Internal error occurred: {m}")),
        };
        if version < 4 {
            return message.map(String::into_bytes);
        }
        let status = match self {
            Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(m) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "details": {"causes": [{"message": m}]},
                "code": 500,
            }),
        };
        Some(status.to_string().into_bytes())
    }
}

/// A string list as Go's `%v` prints it.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Runs the command through its pod's shim: `input` until it closes (the client is gone, which
/// kills an exec'd command), output to `output`. Returns how it ended.
pub async fn run(
    c: Command,
    mut input: mpsc::UnboundedReceiver<Input>,
    output: mpsc::UnboundedSender<Output>,
) -> Outcome {
    let (tx, rx) = mpsc::channel::<StdioIn>(16);
    let start = StdioStart {
        id: c.container.clone(),
        cmd: c.cmd.clone(),
        tty: c.tty,
        stdin: c.stdin,
        stdout: c.stdout,
        stderr: c.stderr,
    };
    let _ = tx
        .send(StdioIn {
            msg: Some(stdio_in::Msg::Start(start)),
        })
        .await;
    tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            let msg = match i {
                Input::Stdin(d) => stdio_in::Msg::Stdin(d),
                Input::CloseStdin => stdio_in::Msg::CloseStdin(true),
                Input::Resize(width, height) => {
                    stdio_in::Msg::Resize(TerminalSize { width, height })
                }
            };
            if tx.send(StdioIn { msg: Some(msg) }).await.is_err() {
                return;
            }
        }
        // Dropping `tx` ends the request stream: the shim sees the client gone.
    });
    let req = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut shim = c.shim.clone();
    let resp = if c.attach() {
        shim.attach(req).await
    } else {
        shim.exec(req).await
    };
    let mut stream = match resp {
        Ok(r) => r.into_inner(),
        Err(s) => return Outcome::Failed(format!("pod sandbox {}: {}", c.pod, s.message())),
    };
    loop {
        match stream.message().await {
            Ok(Some(m)) => match m.msg {
                Some(stdio_out::Msg::Stdout(d)) => {
                    let _ = output.send(Output::Stdout(d));
                }
                Some(stdio_out::Msg::Stderr(d)) => {
                    let _ = output.send(Output::Stderr(d));
                }
                Some(stdio_out::Msg::ExitCode(0)) => return Outcome::Success,
                Some(stdio_out::Msg::ExitCode(code)) => return Outcome::ExitCode(code),
                None => {}
            },
            // Attach ends with the container's output.
            Ok(None) if c.attach() => return Outcome::Success,
            Ok(None) => {
                return Outcome::Failed(format!(
                    "pod sandbox {}: the shim ended the exec without an exit code",
                    c.pod
                ))
            }
            Err(s) => return Outcome::Failed(format!("pod sandbox {}: {}", c.pod, s.message())),
        }
    }
}

/// Terminal sizes from the resize stream: JSON objects `{"Width":80,"Height":24}` one after
/// another, split anywhere.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u32,
    #[serde(rename = "Height")]
    height: u32,
}

impl ResizeDecoder {
    /// Takes more bytes; returns the sizes now complete. Garbage is dropped.
    pub fn push(&mut self, data: &[u8]) -> Vec<(u32, u32)> {
        self.buf.extend_from_slice(data);
        let mut out = vec![];
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    out.push((s.width, s.height));
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    used = self.buf.len();
                    break;
                }
                None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        out
    }
}

/// Stream ids of the session's standard streams.
#[derive(Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

/// Serves an Exec or Attach over SPDY/3.1 with the negotiated `protocol`.
pub async fn spdy_session(
    conn: Conn,
    early: Vec<u8>,
    protocol: &str,
    c: Command,
) -> io::Result<()> {
    let version = version(protocol);
    let (rd, wr) = tokio::io::split(conn);
    let (out, writer) = frame_writer(wr);
    let mut frames = FrameReader::new(rd, early);
    let expected = 1
        + c.stdin as usize
        + c.stdout as usize
        + c.stderr as usize
        + (c.tty && version >= 3) as usize;
    // Wait for the streams the client must open.
    let mut s = Streams::default();
    let mut opened = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut held: Vec<Frame> = vec![];
    while opened < expected {
        let f = match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for client to create streams",
                ))
            }
        };
        match f {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let slot = match header(&headers, "streamtype") {
                    "error" => &mut s.error,
                    "stdin" => &mut s.stdin,
                    "stdout" => &mut s.stdout,
                    "stderr" => &mut s.stderr,
                    "resize" => &mut s.resize,
                    other => {
                        tracing::debug!(stream = other, "unexpected stream type");
                        let _ = out.send(Frame::RstStream {
                            stream_id,
                            status: super::spdy::rst::PROTOCOL_ERROR,
                        });
                        continue;
                    }
                };
                *slot = Some(stream_id);
                let _ = out.send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: vec![],
                });
                opened += 1;
            }
            Frame::Ping { id } => {
                let _ = out.send(Frame::Ping { id });
            }
            // Input may race the last stream's creation: keep it for after.
            f @ Frame::Data { .. } => held.push(f),
            Frame::GoAway { .. } => return Ok(()),
            _ => {}
        }
    }
    let error_stream = s.error;
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let cmd = c.cmd.clone();
    let run_task = tokio::spawn(run(c, in_rx, out_tx));
    // Output to the client as it comes; then the status, and every stream ended.
    let (stdout, stderr) = (s.stdout, s.stderr);
    let out2 = out.clone();
    let mut finisher = tokio::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            let (id, data) = match o {
                Output::Stdout(d) => (stdout, d),
                Output::Stderr(d) => (stderr, d),
            };
            if let Some(stream_id) = id {
                let _ = out2.send(Frame::Data {
                    stream_id,
                    flags: 0,
                    data,
                });
            }
        }
        let outcome = run_task
            .await
            .unwrap_or_else(|e| Outcome::Failed(format!("exec task: {e}")));
        if let Some(id) = error_stream {
            let data = outcome.encode(version, &cmd).unwrap_or_default();
            let _ = out2.send(Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data,
            });
        }
        for stream_id in [stdout, stderr].into_iter().flatten() {
            let _ = out2.send(Frame::Data {
                stream_id,
                flags: FLAG_FIN,
                data: vec![],
            });
        }
    });
    let mut resize = ResizeDecoder::default();
    let mut handle = |f: Frame| -> bool {
        match f {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let n = data.len();
                if Some(stream_id) == s.stdin {
                    if !data.is_empty() {
                        let _ = in_tx.send(Input::Stdin(data));
                    }
                    if flags & FLAG_FIN != 0 {
                        let _ = in_tx.send(Input::CloseStdin);
                    }
                } else if Some(stream_id) == s.resize {
                    for (w, h) in resize.push(&data) {
                        let _ = in_tx.send(Input::Resize(w, h));
                    }
                }
                ack(&out, stream_id, n);
            }
            Frame::Ping { id } => {
                let _ = out.send(Frame::Ping { id });
            }
            Frame::GoAway { .. } => return false,
            _ => {}
        }
        true
    };
    let mut alive = held.into_iter().all(&mut handle);
    let mut finished = false;
    let mut linger = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    while alive {
        tokio::select! {
            f = frames.next() => match f {
                Ok(Some(f)) => alive = handle(f),
                _ => alive = false,
            },
            _ = &mut finisher, if !finished => {
                finished = true;
                // Everything is queued: give the client a moment to read it and close.
                linger = tokio::time::Instant::now() + LINGER;
            }
            _ = tokio::time::sleep_until(linger), if finished => alive = false,
        }
    }
    // The client is gone (or done): its input channel closing ends an exec'd command.
    drop(in_tx);
    if !finished {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut finisher).await;
    }
    drop(out);
    let _ = writer.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_events_split_anywhere() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(b"{\"Width\":80,").is_empty());
        assert_eq!(d.push(b"\"Height\":24}{\"Width\":1"), vec![(80, 24)]);
        assert_eq!(d.push(b"00,\"Height\":40}\n"), vec![(100, 40)]);
        assert!(d.push(b"garbage").is_empty());
        assert_eq!(d.push(b"{\"Width\":5,\"Height\":6}"), vec![(5, 6)]);
    }

    #[test]
    fn status_carries_the_exit_code() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::ExitCode(3).encode(4, &cmd).unwrap()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value =
            serde_json::from_slice(&Outcome::Success.encode(5, &cmd).unwrap()).unwrap();
        assert_eq!(ok["status"], "Success");
        assert_eq!(Outcome::Success.encode(3, &cmd), None);
        let text = String::from_utf8(Outcome::ExitCode(3).encode(2, &cmd).unwrap()).unwrap();
        assert!(text.contains("[sh -c exit 3], exit code 3"), "{text}");
        assert_eq!(version("channel.k8s.io"), 1);
        assert_eq!(version("v4.channel.k8s.io"), 4);
        assert_eq!(version("v4.base64.channel.k8s.io"), 4);
    }
}
