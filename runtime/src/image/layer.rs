//! Fetching one layer: the registry's byte stream is decompressed (gzip, zstd or none, told by its
//! magic bytes) and unpacked while it arrives, and nothing is committed until the compressed
//! digest and size match the manifest and the uncompressed digest matches the config's diff id.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::unpack::{unpack_layer, UnpackLimits, UnpackStats};
use crate::error::{Error, Result};

/// What the manifest and config promise about a layer.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    /// And what this node lets a layer unpack to.
    pub limits: UnpackLimits,
}

/// Streams `stream` through decompression into `dest`, verifying it against `spec`, then hands
/// the outcome to `finish` (commit or clean up) on the same blocking thread. That thread runs to
/// its end even when this future is dropped (a cancelled pull): the stream then ends early, the
/// layer fails verification, and `finish` still cleans up. Setting `cancel` stops the download.
pub async fn unpack_stream<F>(
    mut stream: BoxStream<'static, io::Result<Bytes>>,
    spec: LayerSpec,
    dest: &Path,
    cancel: &AtomicBool,
    finish: F,
) -> Result<UnpackStats>
where
    F: FnOnce(Result<UnpackStats>) -> Result<UnpackStats> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let dest = dest.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || {
        let mut chan = ChannelReader::new(rx, spec.size);
        finish(unpack_verified(&mut chan, &spec, &dest))
    });
    while let Some(item) = stream.next().await {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        if let Err(e) = &item {
            // The client's own digest check fires at the end of the stream; our check below
            // says more (truncated, or which digest), so that is an end, not a network failure.
            let verification = e
                .get_ref()
                .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
            if !verification {
                let _ = tx.send(item).await;
            }
            break;
        }
        if tx.send(item).await.is_err() {
            break; // the unpacker stopped, and says why
        }
    }
    drop(tx);
    worker
        .await
        .map_err(|e| Error::Internal(format!("layer unpack task: {e}")))?
}

/// Reads what the download task sends, hashing and counting it, and refusing more bytes than the
/// manifest announced.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
    sha: Sha256,
    count: u64,
    limit: u64,
    /// The download's own error (network, or the client's verification), if it failed.
    failure: Arc<Mutex<Option<String>>>,
    eof: bool,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>, limit: u64) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
            sha: Sha256::new(),
            count: 0,
            limit,
            failure: Arc::new(Mutex::new(None)),
            eof: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    self.eof = true;
                    let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                    *f = Some(describe_download_error(&e));
                    return Err(io::Error::other(format!("download failed: {e}")));
                }
                None => {
                    self.eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        let chunk = self.cur.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        self.sha.update(&chunk);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("registry sent more than the {} bytes announced", self.limit),
            ));
        }
        Ok(n)
    }
}

/// Hashes everything read through it: the uncompressed stream, whose digest is the diff id.
struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

enum Compression {
    Gzip,
    Zstd,
    None,
}

fn sniff(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A download error with its causes ("error decoding response body: operation timed out"),
/// naming the config key when the registry sent nothing for `image_pull_progress_timeout`.
fn describe_download_error(e: &io::Error) -> String {
    let mut text = e.to_string();
    let mut timed_out = e.kind() == io::ErrorKind::TimedOut;
    let mut cause: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().and_then(|i| i.source());
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        timed_out |= c
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
            || c.downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_timeout());
        cause = c.source();
    }
    if timed_out {
        text.push_str(" (nothing received for image_pull_progress_timeout)");
    }
    text
}

fn unpack_verified(chan: &mut ChannelReader, spec: &LayerSpec, dest: &Path) -> Result<UnpackStats> {
    let unpacked = decompress_and_unpack(chan, dest, spec.limits);
    // Whatever happened, read the rest so the digest covers every byte the registry sent.
    let drained = io::copy(chan, &mut io::sink());
    let digest = format!("sha256:{}", hex::encode(chan.sha.clone().finalize()));
    let network = chan
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let blob = format!("blob {}", spec.digest);
    if chan.count > spec.size {
        return Err(Error::Corrupt(format!(
            "{blob}: registry sent more than the {} bytes the manifest announces",
            spec.size
        )));
    }
    if chan.count == spec.size && digest != spec.digest {
        return Err(Error::Corrupt(format!(
            "{blob}: digest mismatch: content is {digest}"
        )));
    }
    if chan.count < spec.size {
        return Err(match network {
            Some(n) => Error::Unavailable(format!(
                "{blob}: download failed after {} of {} bytes: {n}",
                chan.count, spec.size
            )),
            None => Error::Corrupt(format!(
                "{blob}: truncated: registry sent {} of the {} bytes the manifest announces",
                chan.count, spec.size
            )),
        });
    }
    if let Err(e) = drained {
        return Err(Error::Unavailable(format!("{blob}: {e}")));
    }
    let (stats, diff) = unpacked.map_err(|e| e.context(&blob))?;
    if diff != spec.diff_id {
        return Err(Error::Corrupt(format!(
            "{blob}: uncompressed content is {diff}, the image config says {}",
            spec.diff_id
        )));
    }
    Ok(stats)
}

fn decompress_and_unpack(
    chan: &mut ChannelReader,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<(UnpackStats, String)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, chan);
    let magic = buffered
        .fill_buf()
        .map_err(|e| Error::Corrupt(format!("reading layer: {e}")))?
        .to_vec();
    let decoder: Box<dyn Read + '_> = match sniff(&magic) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::Corrupt(format!("zstd stream: {e}")))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut diff = HashingReader {
        inner: decoder,
        sha: Sha256::new(),
    };
    let began = std::time::Instant::now();
    let stats = {
        let mut archive = tar::Archive::new(&mut diff);
        unpack_layer(&mut archive, dest, limits)?
    };
    crate::metrics::get().unpacked(began);
    // The end-of-archive blocks and any padding after them are part of the diff id.
    io::copy(&mut diff, &mut io::sink())
        .map_err(|e| Error::Corrupt(format!("layer stream after the archive's end: {e}")))?;
    Ok((
        stats,
        format!("sha256:{}", hex::encode(diff.sha.finalize())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    fn sha(d: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(d)))
    }

    async fn run(blob: Vec<u8>, spec: LayerSpec) -> (tempfile::TempDir, Result<UnpackStats>) {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<io::Result<Bytes>> = blob
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let s = futures_util::stream::iter(chunks).boxed();
        let r = unpack_stream(s, spec, dir.path(), &AtomicBool::new(false), |r| r).await;
        (dir, r)
    }

    #[tokio::test]
    async fn gzip_zstd_and_plain_layers_verify() {
        let tar = tar_with("hello", &vec![7u8; 5000]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&tar[..], 3).unwrap();
        for blob in [gz, zs, tar.clone()] {
            let spec = LayerSpec {
                digest: sha(&blob),
                size: blob.len() as u64,
                diff_id: sha(&tar),
                limits: Default::default(),
            };
            let (dir, r) = run(blob, spec).await;
            r.unwrap();
            assert_eq!(std::fs::read(dir.path().join("hello")).unwrap().len(), 5000);
        }
    }

    #[tokio::test]
    async fn corrupt_truncated_and_wrong_diff_are_refused() {
        let tar = tar_with("f", b"data");
        let good = LayerSpec {
            digest: sha(&tar),
            size: tar.len() as u64,
            diff_id: sha(&tar),
            limits: Default::default(),
        };
        let mut bad = tar.clone();
        bad[600] ^= 1;
        let (_, r) = run(bad, good.clone()).await;
        assert!(
            matches!(r, Err(Error::Corrupt(ref m)) if m.contains("digest mismatch")),
            "{r:?}"
        );
        let (_, r) = run(tar[..700].to_vec(), good.clone()).await;
        assert!(
            matches!(r, Err(Error::Corrupt(ref m)) if m.contains("truncated")),
            "{r:?}"
        );
        let mut longer = tar.clone();
        longer.extend_from_slice(&[0; 512]);
        let (_, r) = run(longer, good.clone()).await;
        assert!(
            matches!(r, Err(Error::Corrupt(ref m)) if m.contains("more than")),
            "{r:?}"
        );
        let wrong_diff = LayerSpec {
            diff_id: sha(b"other"),
            ..good
        };
        let (_, r) = run(tar, wrong_diff).await;
        assert!(
            matches!(r, Err(Error::Corrupt(ref m)) if m.contains("config says")),
            "{r:?}"
        );
    }
}
