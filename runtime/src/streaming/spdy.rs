//! SPDY/3.1 framing, as far as Kubernetes' streaming protocols use it (kubelet and crictl speak
//! it over an upgraded HTTP connection for exec, attach and port-forward): every frame type,
//! encoded and parsed, and the zlib header-block compression with the SPDY/3 dictionary.
//!
//! The parser takes bytes as they arrive and never trusts a length: a frame larger than the
//! limit, a control frame of another version, or a header block that does not add up is an
//! error, never a panic or an allocation of what the peer claims.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The only SPDY version spoken.
pub const VERSION: u16 = 3;
/// Frame flag: the sender's last frame on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the recipient does not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest frame payload accepted (the frame length field allows 16 MiB).
pub const MAX_FRAME: usize = 1 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// Header names and values; a value may hold several, separated by NUL.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value).
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this implementation does not know: the spec says to ignore it.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A frame whose length is above [`MAX_FRAME`].
    TooLarge(usize),
    /// A control frame of another SPDY version.
    Version(u16),
    /// A frame that does not parse; says what is wrong.
    Malformed(String),
    /// A header block that does not decompress or does not add up.
    Headers(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge(n) => {
                write!(f, "SPDY frame of {n} bytes is over the {MAX_FRAME} limit")
            }
            Error::Version(v) => write!(f, "SPDY version {v} is not supported (only 3)"),
            Error::Malformed(m) => write!(f, "malformed SPDY frame: {m}"),
            Error::Headers(m) => write!(f, "bad SPDY header block: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): these
/// words, each with a 32-bit length before it, then this text.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TEXT: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, ",
    "Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The dictionary's bytes.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = vec![];
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TEXT.as_bytes());
        d
    })
}

/// One direction of a connection's header compression: a single zlib stream for all header
/// blocks sent, flushed (SYNC) after each.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> HeaderEncoder {
        let mut z = Compress::new(Compression::default(), true);
        // On a fresh stream this cannot fail; were it to, the peer would refuse our first
        // header block for its wrong dictionary id, which is where the error shows.
        let _ = z.set_dictionary(dictionary());
        HeaderEncoder { z }
    }

    pub fn encode(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, Error> {
        let mut raw = vec![];
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Headers(format!("deflating: {e}")))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // Done when all input is in and the flush left spare room in the output.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

/// The other direction: inflates header blocks with the dictionary.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The most header bytes one block may inflate to.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(Error::Headers(format!(
                    "inflates to more than {MAX_HEADER_BLOCK} bytes"
                )));
            }
            out.reserve(1024);
            let before = self.z.total_in();
            let r = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| Error::Headers(format!("dictionary: {e}")))?;
                }
                Err(e) => return Err(Error::Headers(format!("zlib: {e}"))),
            }
        }
        Ok(out)
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let raw = self.inflate(block)?;
        let mut r = Reader { b: &raw, at: 0 };
        let n = r
            .u32()
            .ok_or_else(|| Error::Headers("no header count".into()))? as usize;
        // Each pair takes at least 8 bytes: a count past that is a lie.
        if n > raw.len() / 8 {
            return Err(Error::Headers(format!(
                "{n} headers in {} bytes",
                raw.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let k = r
                .string()
                .ok_or_else(|| Error::Headers(format!("header {i}: truncated name")))?;
            let v = r
                .string()
                .ok_or_else(|| Error::Headers(format!("header {i}: truncated value")))?;
            if k.is_empty() {
                return Err(Error::Headers(format!("header {i}: empty name")));
            }
            out.push((k, v));
        }
        Ok(out)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        self.take(n)
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

impl Frame {
    /// The frame's bytes; header blocks go through `enc`.
    pub fn encode(&self, enc: &mut HeaderEncoder) -> Result<Vec<u8>, Error> {
        let id = |s: u32| (s & 0x7fff_ffff).to_be_bytes();
        Ok(match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&id(*associated_to));
                p.push((priority & 0x7) << 5);
                p.push(0); // slot
                p.extend_from_slice(&enc.encode(headers)?);
                control(SYN_STREAM, *flags, &p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(self, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&enc.encode(headers)?);
                control(kind, *flags, &p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, &p)
            }
            Frame::Settings { flags, entries } => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, i, v) in entries {
                    p.push(*f);
                    p.extend_from_slice(&i.to_be_bytes()[1..]);
                    p.extend_from_slice(&v.to_be_bytes());
                }
                control(SETTINGS, *flags, &p)
            }
            Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream,
                status,
            } => {
                let mut p = id(*last_good_stream).to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, &p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(WINDOW_UPDATE, 0, &p)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut f = Vec::with_capacity(8 + data.len());
                f.extend_from_slice(&id(*stream_id));
                f.push(*flags);
                f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                f.extend_from_slice(data);
                f
            }
            Frame::Unknown { kind } => control(*kind, 0, &[]),
        })
    }

    /// Parses one frame from the front of `buf`: `Ok(None)` while it is incomplete, else the
    /// frame and how many bytes it took. Header blocks go through `dec`.
    pub fn parse(buf: &[u8], dec: &mut HeaderDecoder) -> Result<Option<(Frame, usize)>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_FRAME {
            return Err(Error::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = buf[4];
        let payload = &buf[8..8 + len];
        let word = |i: usize| -> Result<u32, Error> {
            payload
                .get(i..i + 4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or_else(|| Error::Malformed(format!("{len}-byte payload is too short")))
        };
        let frame = if buf[0] & 0x80 == 0 {
            Frame::Data {
                stream_id: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) & 0x7fff_ffff,
                flags,
                data: payload.to_vec(),
            }
        } else {
            let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
            if version != VERSION {
                return Err(Error::Version(version));
            }
            let kind = u16::from_be_bytes([buf[2], buf[3]]);
            let exact = |n: usize| {
                if len == n {
                    Ok(())
                } else {
                    Err(Error::Malformed(format!(
                        "control frame {kind} has {len} bytes, not {n}"
                    )))
                }
            };
            match kind {
                SYN_STREAM => {
                    let stream_id = word(0)? & 0x7fff_ffff;
                    let associated_to = word(4)? & 0x7fff_ffff;
                    let priority = payload
                        .get(8)
                        .map(|p| p >> 5)
                        .ok_or_else(|| Error::Malformed("SYN_STREAM without priority".into()))?;
                    let block = payload
                        .get(10..)
                        .ok_or_else(|| Error::Malformed("SYN_STREAM without slot".into()))?;
                    if stream_id == 0 {
                        return Err(Error::Malformed("SYN_STREAM for stream 0".into()));
                    }
                    Frame::SynStream {
                        stream_id,
                        associated_to,
                        priority,
                        flags,
                        headers: dec.decode(block)?,
                    }
                }
                SYN_REPLY | HEADERS => {
                    let stream_id = word(0)? & 0x7fff_ffff;
                    let headers = dec.decode(&payload[4..])?;
                    if kind == SYN_REPLY {
                        Frame::SynReply {
                            stream_id,
                            flags,
                            headers,
                        }
                    } else {
                        Frame::Headers {
                            stream_id,
                            flags,
                            headers,
                        }
                    }
                }
                RST_STREAM => {
                    exact(8)?;
                    Frame::RstStream {
                        stream_id: word(0)? & 0x7fff_ffff,
                        status: word(4)?,
                    }
                }
                SETTINGS => {
                    let n = word(0)? as usize;
                    if len != 4 + n.saturating_mul(8) {
                        return Err(Error::Malformed(format!(
                            "SETTINGS with {n} entries has {len} bytes"
                        )));
                    }
                    let entries = (0..n)
                        .map(|i| {
                            let at = 4 + i * 8;
                            let idw = word(at)?;
                            Ok(((idw >> 24) as u8, idw & 0x00ff_ffff, word(at + 4)?))
                        })
                        .collect::<Result<_, Error>>()?;
                    Frame::Settings { flags, entries }
                }
                PING => {
                    exact(4)?;
                    Frame::Ping { id: word(0)? }
                }
                GOAWAY => {
                    exact(8)?;
                    Frame::GoAway {
                        last_good_stream: word(0)? & 0x7fff_ffff,
                        status: word(4)?,
                    }
                }
                WINDOW_UPDATE => {
                    exact(8)?;
                    let delta = word(4)? & 0x7fff_ffff;
                    if delta == 0 {
                        return Err(Error::Malformed("WINDOW_UPDATE of 0".into()));
                    }
                    Frame::WindowUpdate {
                        stream_id: word(0)? & 0x7fff_ffff,
                        delta,
                    }
                }
                other => Frame::Unknown { kind: other },
            }
        };
        Ok(Some((frame, 8 + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib puts this Adler-32 (DICTID) in every header stream that uses the dictionary:
        // the value SPDY/3 peers expect.
        let mut s1: u32 = 1;
        let mut s2: u32 = 0;
        for b in d {
            s1 = (s1 + *b as u32) % 65521;
            s2 = (s2 + s1) % 65521;
        }
        assert_eq!((s2 << 16) | s1, 0xe3c6_a7c2);
    }

    /// Two header blocks deflated by C zlib (CPython's `zlib.compressobj(zdict=…)` with
    /// Z_SYNC_FLUSH) with the SPDY/3 dictionary: what a Go or C peer sends. The first carries
    /// the dictionary's id (e3c6a7c2) in its zlib header.
    #[test]
    fn blocks_from_another_zlib_decode() {
        let b1 = [
            0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xe5, 0x0e, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
            0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x86, 0x14, 0xcb, 0x45, 0xe0,
            0x1c, 0x60, 0x61, 0x60, 0x61, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let b2 = [
            0xc2, 0xaa, 0x14, 0x54, 0xea, 0x24, 0xa2, 0xab, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut dec = HeaderDecoder::new();
        assert_eq!(
            dec.decode(&b1).unwrap(),
            h(&[("streamtype", "error"), ("port", "8080")])
        );
        assert_eq!(
            dec.decode(&b2).unwrap(),
            h(&[("streamtype", "data"), ("port", "8080")])
        );
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_frame_round_trips_and_headers_share_one_stream() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "error"), ("x", "a\0b")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: h(&[("streamtype", "stdout")]),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "stdin")]),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1 << 20,
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: vec![],
            },
        ];
        let mut wire = vec![];
        for f in &frames {
            wire.extend(f.encode(&mut enc).unwrap());
        }
        // Parsed back byte by byte as they might arrive, then all at once.
        let mut got = vec![];
        let mut buf: Vec<u8> = vec![];
        for b in &wire {
            buf.push(*b);
            while let Some((f, n)) = Frame::parse(&buf, &mut dec).unwrap() {
                got.push(f);
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut dec = HeaderDecoder::new();
        let mut too_big = vec![0x80, 3, 0, 1, 0];
        too_big.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes()[1..]);
        assert_eq!(
            Frame::parse(&too_big, &mut dec),
            Err(Error::TooLarge(MAX_FRAME + 1))
        );
        let v2 = control(PING, 0, &[0, 0, 0, 1]);
        let mut v2 = v2.clone();
        v2[1] = 2;
        assert_eq!(Frame::parse(&v2, &mut dec), Err(Error::Version(2)));
        let short_ping = control(PING, 0, &[0, 0, 1]);
        assert!(matches!(
            Frame::parse(&short_ping, &mut dec),
            Err(Error::Malformed(_))
        ));
        let garbage_headers = control(SYN_REPLY, 0, &[0, 0, 0, 1, 9, 9, 9, 9]);
        assert!(matches!(
            Frame::parse(&garbage_headers, &mut HeaderDecoder::new()),
            Err(Error::Headers(_))
        ));
        let unknown = control(42, 0, &[1, 2]);
        assert_eq!(
            Frame::parse(&unknown, &mut dec).unwrap(),
            Some((Frame::Unknown { kind: 42 }, 10))
        );
    }

    /// Arbitrary bytes never panic the parser (a deterministic stand-in for the fuzz target
    /// in `runtime/fuzz`).
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut enc = HeaderEncoder::new();
        let valid = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: h(&[("streamtype", "stdout")]),
        }
        .encode(&mut enc)
        .unwrap();
        for _ in 0..20_000 {
            let mut buf = if next() % 2 == 0 {
                valid.clone()
            } else {
                let n = (next() % 64) as usize;
                (0..n).map(|_| next() as u8).collect()
            };
            // Flip a few bytes.
            for _ in 0..(next() % 4) {
                if !buf.is_empty() {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            let _ = Frame::parse(&buf, &mut HeaderDecoder::new());
        }
    }
}
