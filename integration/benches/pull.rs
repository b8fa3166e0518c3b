//! Pull benchmark: a ~50 MiB (compressed) five-layer image pulled from a loopback registry by
//! skiffd (download, verify, decompress, unpack, commit), next to `tar -xzf` of the same layer
//! blobs on the same machine in the same run. Prints a table; not a test.
//!
//!     cargo build --release --workspace && cargo bench -p skiff-integration --bench pull

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_integration::image::Compression;
use skiff_integration::{ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::{ImageSpec, PullImageRequest};

const LAYERS: usize = 5;
const FILES_PER_LAYER: usize = 100;
const FILE_SIZE: usize = 170 * 1024;
const RUNS: usize = 5;

/// Deterministic data that gzip compresses to about half: random bytes and repeated text.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    let text = b"skiff benchmark line: the quick brown fox jumps over the lazy dog 0123456789\n";
    while out.len() < len {
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes()[..4]);
        }
        out.extend_from_slice(&text[..(x as usize % text.len())]);
        out.extend_from_slice(text);
        out.extend_from_slice(text);
    }
    out.truncate(len);
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    skiff_integration::bench_main(run());
}

async fn run() {
    let reg = Registry::start();
    let mut builder = ImageBuilder::new();
    let mut uncompressed = 0usize;
    for l in 0..LAYERS {
        let mut layer = Layer::new().dir(&format!("layer{l}"), 0o755);
        for f in 0..FILES_PER_LAYER {
            let d = data((l * 1000 + f) as u64, FILE_SIZE);
            uncompressed += d.len();
            layer = layer.file(&format!("layer{l}/file{f}"), &d, 0o644);
        }
        builder = builder.layer(layer, Compression::Gzip);
    }
    let img = builder.push(&reg.host, "bench/big", "v1").await;
    let compressed: usize = img.built.layers.iter().map(|l| l.1.len()).sum();
    let blobs = tempfile::tempdir().expect("blob dir");
    for (i, (_, b, _)) in img.built.layers.iter().enumerate() {
        std::fs::write(blobs.path().join(format!("{i}.tar.gz")), b).expect("write blob");
    }

    // skiffd: a fresh root every run, so every layer is downloaded and unpacked.
    let mut skiff = vec![];
    for _ in 0..RUNS {
        let d = Skiffd::start_with(&[&reg.host], None, &["--log-level", "warn"]);
        let mut c = d.images().await;
        let t = Instant::now();
        c.pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: img.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull");
        skiff.push(t.elapsed());
    }

    // tar -xzf of the same blobs, one after another, into a fresh directory each run.
    let mut tar = vec![];
    for _ in 0..RUNS {
        let out = tempfile::tempdir().expect("tar dir");
        let t = Instant::now();
        for i in 0..LAYERS {
            extract(&blobs.path().join(format!("{i}.tar.gz")), out.path());
        }
        tar.push(t.elapsed());
    }

    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let (s, t) = (median(skiff), median(tar));
    println!();
    println!(
        "image: {LAYERS} gzip layers, {:.1} MiB compressed, {:.1} MiB unpacked, {} files; median of {RUNS} runs",
        mib(compressed),
        mib(uncompressed),
        LAYERS * FILES_PER_LAYER
    );
    println!("| what | time | unpacked MiB/s |");
    println!("|---|---|---|");
    println!(
        "| skiffd PullImage (download + verify + unpack + syncfs) | {:.0} ms | {:.0} |",
        s.as_secs_f64() * 1000.0,
        mib(uncompressed) / s.as_secs_f64()
    );
    println!(
        "| tar -xzf of the same layers (no download, no fsync) | {:.0} ms | {:.0} |",
        t.as_secs_f64() * 1000.0,
        mib(uncompressed) / t.as_secs_f64()
    );
}

fn extract(blob: &Path, dir: &Path) {
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(blob)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("run tar");
    assert!(st.success(), "tar -xzf failed");
}
