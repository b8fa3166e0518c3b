//! CRI connections from gRPC clients that send a unix socket's path as HTTP/2 `:authority`
//! (gRPC C-core: Python `grpcio`, C++, Ruby; grpc-java). h2, under tonic, resets every stream
//! whose `:authority` is not a valid URI authority, while containerd and CRI-O accept any. So each
//! accepted connection is read through [`Conn`], which passes the client's bytes through frame by
//! frame and re-encodes every header block (HEADERS and its CONTINUATIONs) with an invalid
//! `:authority` replaced by `localhost`. Header blocks are re-encoded always, not only when one is
//! changed: HPACK's dynamic table is per connection, so h2 must see one consistent encoder
//! (ours), whose peer decoder here tracks the client's. A connection whose first header block
//! has a valid `:authority` (kubelet, crictl and every grpc-go client send `localhost`) is passed
//! through untouched from there on: a gRPC channel sends one authority on all its calls, so
//! nothing is decoded for it again. What skiffd writes is passed through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::Connected;

/// What an HTTP/2 connection starts with (RFC 9113 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload h2 accepts unless told more (SETTINGS_MAX_FRAME_SIZE's default):
/// re-encoded blocks are cut to it.
const MAX_PAYLOAD: usize = 16_384;
/// The largest header block taken (h2's own limit on a header list is larger; no CRI client
/// sends anything near this).
const MAX_BLOCK: usize = 1 << 20;
/// HPACK dynamic table size h2 advertises (SETTINGS_HEADER_TABLE_SIZE's default).
const TABLE_SIZE: usize = 4096;
/// What an invalid `:authority` becomes (what grpc-go and kubelet send on unix sockets).
const LOCALHOST: &[u8] = b"localhost";

/// A header block being received: the stream, HEADERS' END_STREAM and priority, the fragments.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client → server byte stream, rewritten as described in the module comment.
struct Rewriter {
    decoder: fluke_hpack::Decoder<'static>,
    encoder: fluke_hpack::Encoder<'static>,
    preface_done: bool,
    block: Option<Block>,
    /// Whether the first header block was seen, and then whether it needed no change, which
    /// makes the rest of the connection pass through as it comes.
    first_seen: bool,
    passthrough: bool,
}

impl Rewriter {
    fn new() -> Rewriter {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Rewriter {
            decoder,
            encoder: fluke_hpack::Encoder::new(),
            preface_done: false,
            block: None,
            first_seen: false,
            passthrough: false,
        }
    }

    /// Moves every complete unit (the preface, a frame) from the front of `input` to `out`,
    /// rewritten; what is left is an incomplete frame.
    fn process(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        if !self.preface_done {
            if input.len() < PREFACE.len() {
                return Ok(());
            }
            // Not HTTP/2 with prior knowledge: passed on for h2 to refuse.
            out.extend_from_slice(&input[..PREFACE.len()]);
            at = PREFACE.len();
            self.preface_done = true;
        }
        while input.len() - at >= FRAME_HEADER {
            if self.passthrough {
                out.extend_from_slice(&input[at..]);
                at = input.len();
                break;
            }
            let h = &input[at..at + FRAME_HEADER];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            if input.len() - at - FRAME_HEADER < len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = &input[at + FRAME_HEADER..at + FRAME_HEADER + len];
            match kind {
                HEADERS => self.headers(flags, stream, payload, out)?,
                CONTINUATION => self.continuation(flags, stream, payload, out)?,
                _ if self.block.is_some() => {
                    return Err(bad("a frame other than CONTINUATION inside a header block"))
                }
                _ => out.extend_from_slice(&input[at..at + FRAME_HEADER + len]),
            }
            at += FRAME_HEADER + len;
        }
        input.drain(..at);
        Ok(())
    }

    fn headers(&mut self, flags: u8, stream: u32, p: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.block.is_some() {
            return Err(bad("HEADERS inside a header block"));
        }
        let mut p = p;
        let mut pad = 0;
        if flags & PADDED != 0 {
            let (&n, rest) = p
                .split_first()
                .ok_or_else(|| bad("PADDED without a length"))?;
            pad = usize::from(n);
            p = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            let (pr, rest) = p
                .split_first_chunk::<5>()
                .ok_or_else(|| bad("PRIORITY without its fields"))?;
            priority = Some(*pr);
            p = rest;
        }
        if pad > p.len() {
            return Err(bad("padding longer than the frame"));
        }
        self.block = Some(Block {
            stream,
            end_stream: flags & END_STREAM != 0,
            priority,
            fragment: p[..p.len() - pad].to_vec(),
        });
        if flags & END_HEADERS != 0 {
            self.finish(out)?;
        }
        Ok(())
    }

    fn continuation(
        &mut self,
        flags: u8,
        stream: u32,
        p: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let b = self
            .block
            .as_mut()
            .ok_or_else(|| bad("CONTINUATION outside a header block"))?;
        if b.stream != stream {
            return Err(bad("CONTINUATION of another stream"));
        }
        if b.fragment.len() + p.len() > MAX_BLOCK {
            return Err(bad("header block larger than 1 MiB"));
        }
        b.fragment.extend_from_slice(p);
        if flags & END_HEADERS != 0 {
            self.finish(out)?;
        }
        Ok(())
    }

    /// Decodes the finished block, fixes `:authority`, and writes it out re-encoded; the
    /// connection's first block, when it needs no fix, as it came (and the connection passes
    /// through from then on).
    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let Some(b) = self.block.take() else {
            return Ok(());
        };
        let mut headers = self
            .decoder
            .decode(&b.fragment)
            .map_err(|e| bad(&format!("HPACK: {e:?}")))?;
        let mut fixed = false;
        for (name, value) in &mut headers {
            if name == b":authority" && Authority::try_from(value.as_slice()).is_err() {
                *value = LOCALHOST.to_vec();
                fixed = true;
            }
        }
        if !self.first_seen {
            self.first_seen = true;
            if !fixed {
                self.passthrough = true;
                write_block(out, &b, &b.fragment);
                return Ok(());
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(out, &b, &block);
        Ok(())
    }
}

/// Writes header block `block` (HPACK bytes) as `b`'s HEADERS frame and as many CONTINUATIONs
/// as it takes, without padding.
fn write_block(out: &mut Vec<u8>, b: &Block, block: &[u8]) {
    let mut first = Vec::with_capacity(5 + block.len().min(MAX_PAYLOAD));
    if let Some(p) = b.priority {
        first.extend_from_slice(&p);
    }
    let room = MAX_PAYLOAD - first.len();
    let (head, mut rest) = block.split_at(block.len().min(room));
    first.extend_from_slice(head);
    let mut flags = if b.end_stream { END_STREAM } else { 0 };
    if b.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame(out, HEADERS, flags, b.stream, &first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_PAYLOAD));
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame(out, CONTINUATION, flags, b.stream, chunk);
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    // Payloads here are at most MAX_PAYLOAD bytes, well inside the 24-bit length.
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from the client: {what}"),
    )
}

/// An accepted CRI connection, read through the rewriter.
pub struct Conn {
    io: UnixStream,
    rewriter: Rewriter,
    /// Received and not yet a complete frame.
    input: Vec<u8>,
    /// Rewritten and not yet read by h2.
    output: Vec<u8>,
    served: usize,
}

impl Conn {
    pub fn new(io: UnixStream) -> Conn {
        Conn {
            io,
            rewriter: Rewriter::new(),
            input: Vec::new(),
            output: Vec::new(),
            served: 0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.rewriter.passthrough && me.output.is_empty() {
                return Pin::new(&mut me.io).poll_read(cx, buf);
            }
            if me.served < me.output.len() {
                let n = buf.remaining().min(me.output.len() - me.served);
                buf.put_slice(&me.output[me.served..me.served + n]);
                me.served += n;
                if me.served == me.output.len() {
                    me.output.clear();
                    me.served = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16_384];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut me.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // End of the stream: whatever incomplete frame is left is dropped, as h2 would.
                return Poll::Ready(Ok(()));
            }
            me.input.extend_from_slice(rb.filled());
            me.rewriter.process(&mut me.input, &mut me.output)?;
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_block(enc: &mut fluke_hpack::Encoder<'static>, h: &[(&[u8], &[u8])]) -> Vec<u8> {
        enc.encode(h.iter().copied())
    }

    /// A header block as decoded: (END_STREAM flag, stream, headers).
    type Decoded = (u8, u32, Vec<(Vec<u8>, Vec<u8>)>);

    /// Decodes every header block of a rewritten byte stream (after the preface).
    fn blocks(mut bytes: &[u8]) -> Vec<Decoded> {
        bytes = &bytes[PREFACE.len()..];
        let mut dec = fluke_hpack::Decoder::new();
        let mut out = vec![];
        let mut pending: Option<(u8, u32, Vec<u8>)> = None;
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let (kind, flags) = (bytes[3], bytes[4]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            let mut p = &bytes[9..9 + len];
            bytes = &bytes[9 + len..];
            match kind {
                HEADERS => {
                    if flags & PRIORITY != 0 {
                        p = &p[5..];
                    }
                    pending = Some((flags, stream, p.to_vec()));
                }
                CONTINUATION => pending.as_mut().unwrap().2.extend_from_slice(p),
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                let (f, s, b) = pending.take().unwrap();
                out.push((f & END_STREAM, s, dec.decode(&b).unwrap()));
            }
        }
        out
    }

    /// A gRPC request's header list.
    fn request(
        path: &'static [u8],
        authority: &'static [u8],
    ) -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ]
    }

    /// Feeds `input` to a new rewriter a byte at a time, as a slow socket would; returns the
    /// rewriter and all it wrote, checking nothing was left pending.
    fn byte_by_byte(input: &[u8]) -> (Rewriter, Vec<u8>) {
        let mut rw = Rewriter::new();
        let (mut pending, mut out) = (vec![], vec![]);
        for byte in input {
            pending.push(*byte);
            rw.process(&mut pending, &mut out).unwrap();
        }
        assert!(pending.is_empty());
        (rw, out)
    }

    #[test]
    fn invalid_authorities_become_localhost_and_the_rest_stays() {
        let mut enc = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame passes as it is.
        frame(&mut input, 0x4, 0, 0, &[]);
        let req = |auth| request(b"/runtime.v1.RuntimeService/Version", auth);
        // grpcio's percent-encoded path, padded and with priority, split over a CONTINUATION.
        let b1 = encode_block(&mut enc, &req(b"%2Frun%2Fskiff%2Fskiff.sock"));
        let (a, b) = b1.split_at(10);
        let mut p = vec![3u8];
        p.extend_from_slice(&[0, 0, 0, 0, 16]);
        p.extend_from_slice(a);
        p.extend_from_slice(&[0, 0, 0]);
        frame(&mut input, HEADERS, PADDED | PRIORITY, 1, &p);
        frame(&mut input, CONTINUATION, END_HEADERS, 1, b);
        // grpc-java's raw path; then a valid one, which is kept; end of stream kept.
        let b2 = encode_block(&mut enc, &req(b"/run/skiff/skiff.sock"));
        frame(&mut input, HEADERS, END_HEADERS, 3, &b2);
        let b3 = encode_block(&mut enc, &req(b"localhost:1234"));
        frame(&mut input, HEADERS, END_HEADERS | END_STREAM, 5, &b3);

        let (_, out) = byte_by_byte(&input);
        let got = blocks(&out);
        let auth = |i: usize| {
            got[i]
                .2
                .iter()
                .find(|(n, _)| n == b":authority")
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(got.len(), 3);
        assert_eq!(auth(0), b"localhost");
        assert_eq!(auth(1), b"localhost");
        assert_eq!(auth(2), b"localhost:1234");
        assert_eq!((got[0].0, got[0].1), (0, 1));
        assert_eq!((got[2].0, got[2].1), (END_STREAM, 5));
        assert_eq!(got[1].2[2].1, b"/runtime.v1.RuntimeService/Version");
        // The SETTINGS frame is there, unchanged.
        assert_eq!(
            &out[PREFACE.len()..PREFACE.len() + 9],
            &[0, 0, 0, 4, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn a_connection_whose_first_authority_is_valid_passes_through_as_sent() {
        let mut enc = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        frame(&mut input, 0x4, 0, 0, &[]);
        let req = |path| request(path, b"localhost");
        let b1 = encode_block(&mut enc, &req(b"/runtime.v1.RuntimeService/Version"));
        frame(&mut input, HEADERS, END_HEADERS, 1, &b1);
        frame(&mut input, 0x0, END_STREAM, 1, b"\0\0\0\0\0");
        // The second block refers to the client's dynamic table: h2 must get it as sent.
        let b2 = encode_block(&mut enc, &req(b"/runtime.v1.RuntimeService/Status"));
        frame(&mut input, HEADERS, END_HEADERS | END_STREAM, 3, &b2);
        let (rw, out) = byte_by_byte(&input);
        assert!(rw.passthrough);
        assert_eq!(out, input);
        let got = blocks(&out);
        assert_eq!(got[1].2[2].1, b"/runtime.v1.RuntimeService/Status");
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        for input in [
            // CONTINUATION with no HEADERS before it.
            {
                let mut v = PREFACE.to_vec();
                frame(&mut v, CONTINUATION, END_HEADERS, 1, b"x");
                v
            },
            // Padding longer than the frame.
            {
                let mut v = PREFACE.to_vec();
                frame(&mut v, HEADERS, END_HEADERS | PADDED, 1, &[9, 1]);
                v
            },
            // Garbage HPACK.
            {
                let mut v = PREFACE.to_vec();
                frame(&mut v, HEADERS, END_HEADERS, 1, &[0xff; 7]);
                v
            },
        ] {
            let mut rw = Rewriter::new();
            let (mut pending, mut out) = (input, vec![]);
            assert!(rw.process(&mut pending, &mut out).is_err());
        }
        // Random header blocks, flags and frame kinds never panic.
        let mut seed = 0x9e37_79b9_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        };
        for _ in 0..5000 {
            let mut v = PREFACE.to_vec();
            for _ in 0..3 {
                let len = usize::from(next() % 48);
                let payload: Vec<u8> = (0..len).map(|_| next()).collect();
                let kind = if next() % 4 == 0 {
                    CONTINUATION
                } else {
                    HEADERS
                };
                frame(&mut v, kind, next(), 1, &payload);
            }
            let mut rw = Rewriter::new();
            let _ = rw.process(&mut v, &mut vec![]);
        }
    }
}
