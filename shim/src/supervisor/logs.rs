//! Container output in the CRI log format kubelet reads:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`. A line longer than 16 KiB is
//! written as `P` pieces; a final chunk without a newline (at EOF) is written as `P` too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest piece of a line written as one log record.
pub const MAX_LINE: usize = 16 * 1024;

/// One container's log file, shared by its stdout and stderr pumps; reopenable for rotation.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<Arc<LogFile>> {
        let f = open_append(path)?;
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(Some(f)),
        }))
    }

    /// Reopens the file by its path (kubelet renamed the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let f = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
        Ok(())
    }

    fn write_record(&self, stream: &str, partial: bool, content: &[u8]) {
        let mut rec = Vec::with_capacity(content.len() + 48);
        rec.extend_from_slice(timestamp(skiff_shim::api::now_ns()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_bytes());
        rec.extend_from_slice(if partial { b" P " } else { b" F " });
        rec.extend_from_slice(content);
        rec.push(b'\n');
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = g.as_mut() {
            if let Err(e) = f.write_all(&rec) {
                eprintln!("skiff-shim: writing log {}: {e}", self.path.display());
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Copies `src` into `log` (if any) as records of `stream` until EOF, handing every chunk read
/// to `tap` too.
pub async fn pump<R: AsyncRead + Unpin>(
    mut src: R,
    stream: &'static str,
    log: Option<&LogFile>,
    mut tap: impl FnMut(&[u8]),
) {
    // Read in pages; a long line accumulates in `pending` until its newline or 16 KiB.
    let mut buf = vec![0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tap(&buf[..n]);
        let Some(log) = log else { continue };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + nl];
            write_line(log, stream, line);
            start += nl + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            log.write_record(stream, true, &pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
    }
    if let (Some(log), false) = (log, pending.is_empty()) {
        log.write_record(stream, true, &pending);
    }
}

fn write_line(log: &LogFile, stream: &str, line: &[u8]) {
    let mut rest = line;
    while rest.len() > MAX_LINE {
        log.write_record(stream, true, &rest[..MAX_LINE]);
        rest = &rest[MAX_LINE..];
    }
    log.write_record(stream, false, rest);
}

pub use skiff_shim::api::rfc3339_nano as timestamp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            timestamp(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(
            timestamp(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[tokio::test]
    async fn lines_partials_and_final_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let log = LogFile::open(&p).unwrap();
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE + 10]);
        input.extend_from_slice(b"\ntail");
        let mut tapped = 0;
        pump(&input[..], "stdout", Some(&log), |d| tapped += d.len()).await;
        assert_eq!(tapped, input.len());
        let text = std::fs::read_to_string(&p).unwrap();
        let recs: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let _ts = it.next().unwrap();
                (
                    it.next().unwrap(),
                    it.next().unwrap(),
                    it.next().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(recs[0], ("stdout", "F", "one"));
        assert_eq!(recs[1], ("stdout", "F", "two"));
        assert_eq!(recs[2].1, "P");
        assert_eq!(recs[2].2.len(), MAX_LINE);
        assert_eq!(recs[3], ("stdout", "F", "xxxxxxxxxx"));
        assert_eq!(recs[4], ("stdout", "P", "tail"));
        assert_eq!(recs.len(), 5);
    }
}
