//! Time-bounded fuzzing on the stable toolchain, run with the unit tests: image references,
//! manifests and indexes, layer tars and checkpoint archives, random and mutated from valid
//! seeds. Each must give a value or an error, never a panic; an unpacked layer never writes
//! outside its directory. `SKIFF_PARSER_FUZZ_MS` sets each target's time (default 4000); the
//! cargo-fuzz targets in `runtime/fuzz` run the same code for longer.

use std::time::{Duration, Instant};

use crate::checkpoint::restore::Archive;
use crate::image::pull::check_manifest;
use crate::image::reference::ImageRef;
use crate::image::unpack::{unpack_layer, UnpackLimits};

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("SKIFF_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>)
            | 1;
        eprintln!("fuzz seed {seed} (SKIFF_FUZZ_SEED to repeat)");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// `seed` with a few bytes flipped, inserted, deleted or duplicated.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut d = seed.to_vec();
        for _ in 0..1 + self.below(6) {
            let at = self.below(d.len() + 1);
            match self.below(4) {
                0 if !d.is_empty() => {
                    let i = at.min(d.len() - 1);
                    d[i] = self.next() as u8;
                }
                1 => d.insert(at, self.next() as u8),
                2 if !d.is_empty() => {
                    d.remove(at.min(d.len() - 1));
                }
                _ => {
                    // A run of bytes repeated in place (`at` is at most the length).
                    let n = self.below(16).min(d.len() - at);
                    let chunk = d[at..at + n].to_vec();
                    d.splice(at..at, chunk);
                }
            }
        }
        d
    }
}

fn budget() -> Duration {
    Duration::from_millis(
        std::env::var("SKIFF_PARSER_FUZZ_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4000),
    )
}

fn run(mut one: impl FnMut(&mut Rng)) -> u64 {
    let mut rng = Rng::new();
    let end = Instant::now() + budget();
    let mut n = 0;
    while Instant::now() < end {
        one(&mut rng);
        n += 1;
    }
    n
}

#[test]
fn image_references() {
    let seeds = [
        "busybox",
        "registry.k8s.io/pause:3.10",
        "127.0.0.1:5000/a/b/c@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf",
        "docker.io/library/x:y@sha256:00",
        "UPPER/case:tag",
    ];
    let alphabet = b"abzAZ09./:@-_+%~\x00 \xc3\xa9";
    let n = run(|rng| {
        let s = if rng.below(2) == 0 {
            let seed = seeds[rng.below(seeds.len())].as_bytes();
            rng.mutate(seed)
        } else {
            (0..rng.below(90))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        };
        let s = String::from_utf8_lossy(&s);
        if let Ok(r) = ImageRef::parse(&s) {
            let _ = (r.name(), r.tag_or_digest(), r.tagged_name(), r.registry());
            let _ = r.digested_name("sha256:00");
        }
    });
    eprintln!("image references: {n} inputs");
}

#[test]
fn manifests_and_indexes() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":7}},
        "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":32}}]}}"#
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":9,
          "platform":{{"os":"linux","architecture":"amd64"}}}},
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":9,
          "platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
    );
    let image = ImageRef::parse("reg.example/fuzz:v1").expect("reference");
    let values = [
        "-1",
        "0",
        "18446744073709551616",
        "1e309",
        "null",
        "[]",
        "{}",
        "\"\"",
        "\"x\"",
        "[{},{},{}]",
        "true",
    ];
    let n = run(|rng| {
        let seed = if rng.below(2) == 0 { &manifest } else { &index };
        let bytes = if rng.below(2) == 0 {
            rng.mutate(seed.as_bytes())
        } else {
            // A value of the JSON swapped for an absurd one.
            let v = values[rng.below(values.len())];
            let cut = ["2", "7", "32", "9", "\"linux\"", "\"amd64\"", "\"v8\""];
            seed.replacen(cut[rng.below(cut.len())], v, 1).into_bytes()
        };
        let _ = check_manifest(&image, &bytes);
    });
    eprintln!("manifests and indexes: {n} inputs");
}

fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).expect("link");
        }
        h.set_path(name).expect("name");
        h.set_cksum();
        b.append(&h, *data).expect("entry");
    }
    b.into_inner().expect("tar")
}

#[test]
fn layer_tars_stay_inside() {
    use tar::EntryType as E;
    let seed = tar_of(&[
        ("bin/", E::Directory, "", b""),
        ("bin/sh", E::Regular, "", b"#!/bin/true\n"),
        ("bin/ls", E::Link, "bin/sh", b""),
        ("lib", E::Symlink, "/usr/lib", b""),
        ("etc/.wh.gone", E::Regular, "", b""),
        ("opq/.wh..wh..opq", E::Regular, "", b""),
        ("dev/null", E::Char, "", b""),
        ("etc/passwd", E::Regular, "", b"root:x:0:0::/:/bin/sh\n"),
    ]);
    let outer = tempfile::tempdir().expect("tempdir");
    std::fs::write(outer.path().join("canary"), "keep").expect("canary");
    let limits = UnpackLimits {
        bytes: 1 << 20,
        entries: 1000,
    };
    // Entries put together from hostile names, kinds and link targets, checksums right.
    let names: &[&[u8]] = &[
        b"a",
        b"a/b",
        b"..",
        b"../x",
        b"/abs",
        b"./.wh.",
        b".wh...",
        b"a/.wh..",
        b".wh./",
        b"a/.wh..wh..opq",
        b"l",
        b"l/x",
        b"l/../../y",
        b"dev/null",
        b"",
        b"a//b/./c",
    ];
    let links: &[&[u8]] = &[
        b"",
        b"/",
        b"..",
        b"../../..",
        b"a",
        b"l",
        b"/etc/passwd",
        b"a/b",
    ];
    let kinds = [
        E::Regular,
        E::Directory,
        E::Symlink,
        E::Link,
        E::Char,
        E::Fifo,
        E::GNUSparse,
    ];
    let built = |rng: &mut Rng| -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..1 + rng.below(8) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kinds[rng.below(kinds.len())]);
            h.set_mode(0o755);
            let data = vec![b'x'; rng.below(3) * 100];
            h.set_size(data.len() as u64);
            let old = h.as_old_mut();
            let (n, l) = (names[rng.below(names.len())], links[rng.below(links.len())]);
            old.name[..n.len()].copy_from_slice(n);
            old.linkname[..l.len()].copy_from_slice(l);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    };
    let mut i = 0u64;
    let n = run(|rng| {
        let data = if rng.below(2) == 0 {
            rng.mutate(&seed)
        } else {
            built(rng)
        };
        let dest = outer.path().join(format!("l{i}"));
        i += 1;
        std::fs::create_dir(&dest).expect("layer dir");
        let _ = unpack_layer(&mut tar::Archive::new(&data[..]), &dest, limits);
        let _ = std::fs::remove_dir_all(&dest);
        let names: Vec<String> = std::fs::read_dir(outer.path())
            .expect("outer")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["canary"], "written outside the layer");
        assert_eq!(
            std::fs::read_to_string(outer.path().join("canary")).expect("canary"),
            "keep"
        );
    });
    eprintln!("layer tars: {n} inputs");
}

#[test]
fn checkpoint_archives() {
    use tar::EntryType as E;
    let seed = tar_of(&[
        ("checkpoint/", E::Directory, "", b""),
        ("checkpoint/inventory.img", E::Regular, "", b"x"),
        (
            "config.dump",
            E::Regular,
            "",
            br#"{"name":"c","rootfsImageName":"reg/busybox:v1"}"#,
        ),
        (
            "spec.dump",
            E::Regular,
            "",
            br#"{"process":{"args":["sh"]}}"#,
        ),
        ("deleted.files", E::Regular, "", br#"["/bin/true"]"#),
    ]);
    let outer = tempfile::tempdir().expect("tempdir");
    let mut i = 0u64;
    let n = run(|rng| {
        let path = outer.path().join(format!("a{i}.tar"));
        let dir = outer.path().join(format!("u{i}"));
        i += 1;
        std::fs::write(&path, rng.mutate(&seed)).expect("archive");
        if let Ok(a) = Archive::unpack(path.to_str().expect("path"), &dir) {
            let upper = outer.path().join("upper");
            std::fs::create_dir_all(&upper).expect("upper");
            let _ = (a.bind_mounts(), a.image_candidates(), a.tty());
            let _ = a.apply_rootfs_diff(&upper);
            let _ = std::fs::remove_dir_all(&upper);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&path);
    });
    eprintln!("checkpoint archives: {n} inputs");
}
