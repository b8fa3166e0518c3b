//! What every streaming session does with its upgraded connection: a writer task that sends
//! frames in order from a queue (so any task may send), a reader that yields parsed SPDY frames,
//! and a connection type that replays bytes read with the request head before the socket's own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::server::Conn;
use super::spdy::{Frame, HeaderDecoder, HeaderEncoder};

/// Starts the task that encodes and writes the frames queued on the returned sender; once
/// every sender is gone it shuts the connection's writing half.
pub fn frame_writer(
    mut wr: WriteHalf<Conn>,
) -> (mpsc::UnboundedSender<Frame>, JoinHandle<io::Result<()>>) {
    let (out, mut queue) = mpsc::unbounded_channel::<Frame>();
    let task = tokio::spawn(async move {
        let mut enc = HeaderEncoder::new();
        while let Some(f) = queue.recv().await {
            let bytes = f.encode(&mut enc).map_err(io::Error::other)?;
            wr.write_all(&bytes).await?;
        }
        wr.shutdown().await
    });
    (out, task)
}

/// Gives back the window `n` bytes of DATA on `stream_id` took, for the stream and the
/// session, so the client may send as much again.
pub fn ack(out: &mpsc::UnboundedSender<Frame>, stream_id: u32, n: usize) {
    if n == 0 {
        return;
    }
    for id in [stream_id, 0] {
        let _ = out.send(Frame::WindowUpdate {
            stream_id: id,
            delta: n as u32,
        });
    }
}

/// Frames from the client, parsed as they arrive.
pub struct FrameReader {
    rd: ReadHalf<Conn>,
    buf: Vec<u8>,
    dec: HeaderDecoder,
}

impl FrameReader {
    /// `early`: bytes that arrived with the request head.
    pub fn new(rd: ReadHalf<Conn>, early: Vec<u8>) -> FrameReader {
        FrameReader {
            rd,
            buf: early,
            dec: HeaderDecoder::new(),
        }
    }

    /// The next frame; `None` once the client closed the connection.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match Frame::parse(&self.buf, &mut self.dec) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = vec![0u8; 16 * 1024];
            let n = self.rd.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A header value by name, ignoring case; "" when absent.
pub fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The connection with the bytes that arrived behind the request head read first.
pub struct Rewound {
    early: Vec<u8>,
    pos: usize,
    conn: Conn,
}

impl Rewound {
    pub fn new(conn: Conn, early: Vec<u8>) -> Rewound {
        Rewound {
            early,
            pos: 0,
            conn,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.early.len() {
            let n = (self.early.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.early[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}
