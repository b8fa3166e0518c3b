//! Hostile images, pulled through the CRI socket next to a running pod: whatever a layer's
//! entries name (`..`, absolute paths, whiteouts of nothing, `.` or `..`, symlinks then files
//! through them, hardlinks out of the layer, device nodes, a file over a directory and back,
//! sparse files of absurd sizes) and whatever a registry serves (manifests and indexes that are
//! not JSON, nest, lie about digests; blobs that do not match them), nothing outside the layer being unpacked is written or removed, the node's other images and
//! the running container are untouched, and skiffd answers every pull with a status and keeps
//! serving.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::rawregistry::{sha256, Answer, RawRegistry};
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;
use tar::EntryType;

/// A skiffd with a busybox image and a pod whose container keeps running: what a hostile
/// image must not hurt.
struct Victim {
    reg: Registry,
    base: skiff_integration::image::PushedImage,
    d: Skiffd,
    _logs: tempfile::TempDir,
    pcfg: PodSandboxConfig,
    pod: String,
    victim: String,
}

impl Victim {
    async fn start() -> Victim {
        Victim::start_trusting(&[]).await
    }

    /// As [`Victim::start`], with more plain-HTTP registries trusted.
    async fn start_trusting(more: &[&str]) -> Victim {
        require_root();
        let reg = Registry::start();
        let base = ImageBuilder::new()
            .layer(Layer::busybox(), Compression::Gzip)
            .push(&reg.host, "test/base", "v1")
            .await;
        let insecure: Vec<&str> = std::iter::once(reg.host.as_str())
            .chain(more.iter().copied())
            .collect();
        let d = Skiffd::start(&insecure);
        pull(&mut d.images().await, &base.reference).await;
        let mut rt = d.runtime().await;
        let logs = tempfile::tempdir().unwrap();
        let pcfg = pod_config("victim", logs.path().to_str().unwrap());
        let pod = run_pod(&mut rt, &pcfg).await;
        let victim = run(
            &mut rt,
            &pod,
            &pcfg,
            container_config("victim", &base.reference, &["sleep", "100000"]),
        )
        .await;
        Victim {
            reg,
            base,
            d,
            _logs: logs,
            pcfg,
            pod,
            victim,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_touch_nothing_outside_and_leave_other_images_whole() {
    let v = Victim::start().await;
    let (reg, base, d) = (&v.reg, &v.base, &v.d);
    let (mut images, mut rt) = (d.images().await, d.runtime().await);
    let (pod, pcfg, victim) = (v.pod.clone(), v.pcfg.clone(), v.victim.clone());

    // What the entries aim at: a directory outside skiffd's root, with a file that must stay.
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary");
    std::fs::write(&canary, "keep").unwrap();
    let out = outside.path().display().to_string();
    let canary_s = canary.display().to_string();
    let up = format!("../../../../../../../../../..{out}/dotdot");
    let cases: Vec<(&str, Layer)> = vec![
        (
            "dot-dot name",
            Layer::new().raw(EntryType::Regular, up.as_bytes(), b"", b"x"),
        ),
        (
            "absolute name",
            Layer::new().raw(
                EntryType::Regular,
                format!("{out}/absolute").as_bytes(),
                b"",
                b"x",
            ),
        ),
        (
            ".wh...",
            Layer::new()
                .file("etc/keep", b"k", 0o644)
                .raw(EntryType::Regular, b".wh...", b"", b""),
        ),
        (
            ".wh..",
            Layer::new().raw(EntryType::Regular, b"etc/.wh..", b"", b""),
        ),
        (
            ".wh./",
            Layer::new().raw(EntryType::Directory, b".wh./", b"", b""),
        ),
        (
            "whiteout of the root",
            Layer::new().raw(EntryType::Regular, b"./.wh.", b"", b""),
        ),
        (
            "symlink then a file through it",
            Layer::new()
                .symlink("lnk", &out)
                .raw(EntryType::Regular, b"lnk/planted", b"", b"x"),
        ),
        (
            "symlink then a directory and a file through it",
            Layer::new()
                .symlink("lnk2", &format!("../../../../../../../..{out}"))
                .raw(EntryType::Directory, b"lnk2/newdir/", b"", b"")
                .raw(EntryType::Regular, b"lnk2/newdir/f", b"", b"x"),
        ),
        (
            "hardlink to a file outside",
            Layer::new().raw(EntryType::Link, b"hl", canary_s.as_bytes(), b""),
        ),
        (
            "hardlink up and out",
            Layer::new().raw(
                EntryType::Link,
                b"hl2",
                format!("../../../../../../../..{canary_s}").as_bytes(),
                b"",
            ),
        ),
        (
            "device node",
            Layer::new().char_device("dev/mem", 1, 1, 0o600),
        ),
        (
            "a file over a directory and back",
            Layer::new()
                .dir("d", 0o755)
                .file("d/x", b"x", 0o644)
                .raw(EntryType::Regular, b"d", b"", b"now a file")
                .dir("d", 0o755)
                .file("d/y", b"y", 0o644),
        ),
    ];
    // A one-layer image: its chain id is its diff id.
    let base_layer = d.layer_dir(&base.built.diff_ids[0]);
    for (i, (name, layer)) in cases.into_iter().enumerate() {
        let img = ImageBuilder::new()
            .layer(Layer::busybox(), Compression::Gzip)
            .layer(layer, Compression::Gzip)
            .push(&reg.host, &format!("hostile/case{i}"), "v1")
            .await;
        let r = common::pull(&mut images, &img.reference, None).await;
        if let Err(s) = &r {
            // Refused: as bad data, named, never an internal failure.
            assert_ne!(s.code(), tonic::Code::Internal, "{name}: {s:?}");
            assert_ne!(s.code(), tonic::Code::Cancelled, "{name}: {s:?}");
        }
        // Nothing outside was written or removed.
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "keep", "{name}");
        assert_eq!(std::fs::metadata(&canary).unwrap().nlink(), 1, "{name}");
        let listed: Vec<String> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, vec!["canary".to_string()], "{name}");
        // The other image and the running container are whole.
        assert!(base_layer.join("bin/busybox").is_file(), "{name}");
        images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: base.reference.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap_or_else(|| panic!("{name}: the base image is gone"));
        assert_eq!(
            sh(&mut rt, &victim, "ls /bin/busybox").await.trim(),
            "/bin/busybox",
            "{name}"
        );
        // An image that was taken runs, and shows its layers as they are inside it.
        if r.is_ok() {
            let c = run(
                &mut rt,
                &pod,
                &pcfg,
                container_config(&format!("case{i}"), &img.reference, &["sleep", "100000"]),
            )
            .await;
            assert_eq!(sh(&mut rt, &c, "echo alive").await, "alive\n", "{name}");
            if name == "a file over a directory and back" {
                assert_eq!(
                    sh(&mut rt, &c, "ls /d").await.trim(),
                    "y",
                    "the last entries win"
                );
            }
        }
    }
    assert!(!Path::new(&format!("{out}/dotdot")).exists());
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    teardown_pods(&mut rt, vec![pod]).await;
}

/// Sparse files: one of 4 GiB with 1 KiB of data unpacks as a sparse file (its holes take no
/// disk) with its data where the entry put it; one declaring an exabyte is refused at once as
/// ResourceExhausted naming the entry, before any of it is read; the node's other image and
/// the running container are untouched either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_files_stay_sparse_and_impossible_sizes_are_refused() {
    let v = Victim::start().await;
    let (reg, d) = (&v.reg, &v.d);
    let (mut images, mut rt) = (d.images().await, d.runtime().await);
    let head = [b'h'; 512];
    let tail = [b't'; 512];
    let big: u64 = 4 << 30;
    let sparse = ImageBuilder::new()
        .layer(
            Layer::new().sparse("holes", big, &[(0, &head), (big - 512, &tail)]),
            Compression::Gzip,
        )
        .push(&reg.host, "hostile/sparse", "v1")
        .await;
    let started = std::time::Instant::now();
    pull(&mut images, &sparse.reference).await;
    let took = started.elapsed();
    let file = d.layer_dir(&sparse.built.diff_ids[0]).join("holes");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), big);
    assert!(
        meta.blocks() * 512 <= 1 << 20,
        "the holes were written: {} blocks",
        meta.blocks()
    );
    let f = std::fs::File::open(&file).unwrap();
    let mut last = [0u8; 512];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, big - 512).unwrap();
    assert_eq!(last, tail);
    eprintln!("a 4 GiB sparse file unpacked in {took:?}");

    let huge: u64 = 1 << 60;
    let exabyte = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(
            Layer::new().sparse("exabyte", huge, &[(0, &head), (huge - 512, &tail)]),
            Compression::Gzip,
        )
        .push(&reg.host, "hostile/exabyte", "v1")
        .await;
    let started = std::time::Instant::now();
    let err = common::pull(&mut images, &exabyte.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("exabyte"), "{}", err.message());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(d
        .layer_dir(&v.base.built.diff_ids[0])
        .join("bin/busybox")
        .is_file());
    assert_eq!(sh(&mut rt, &v.victim, "echo alive").await, "alive\n");
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    teardown_pods(&mut rt, vec![v.pod.clone()]).await;
}

/// Manifests, indexes and blobs no real registry would store, served by a registry that says
/// whatever the test wants: every pull gets a status with a message (never Internal, Unknown or
/// Cancelled), leaves no layer behind, and the node's other image and the running container
/// are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_and_indexes_get_statuses() {
    use serde_json::json;
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    let raw = RawRegistry::start().await;
    let v = Victim::start_trusting(&[&raw.host]).await;
    let d = &v.d;
    let (mut images, mut rt) = (d.images().await, d.runtime().await);

    // A well-formed one-layer image, whose parts the cases break one at a time.
    let good = ImageBuilder::new()
        .layer(Layer::new().file("f", b"x", 0o644), Compression::Gzip)
        .build();
    let (layer_digest, layer_bytes, _) = good.layers[0].clone();
    let manifest = |config: &str, config_size: usize, layers: serde_json::Value| {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
            "layers": layers,
        })
        .to_string()
        .into_bytes()
    };
    let layer =
        |size: usize| json!([{"mediaType": OCI_LAYER, "digest": layer_digest, "size": size}]);
    let index = |entries: serde_json::Value| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
            .to_string()
            .into_bytes()
    };
    let arch = good.arch.clone();
    let nested = index(json!([]));
    let nested_digest = sha256(&nested);
    let bad_config = b"this is not JSON".to_vec();
    let bad_config_digest = sha256(&bad_config);
    let not_gzip = b"\x1f\x8b but then nothing a gzip reader takes".to_vec();
    let not_gzip_digest = sha256(&not_gzip);
    let big_annotation = "a".repeat(8 << 20);

    struct Case {
        name: &'static str,
        manifest: Answer,
        /// Extra paths (under /v2/<repo>/) and their answers.
        extra: Vec<(String, Answer)>,
    }
    let ok = |t: &str, b: Vec<u8>| Answer::ok(t, b);
    let cases = vec![
        Case {
            name: "manifest not JSON",
            manifest: ok(OCI_MANIFEST, b"{{{ not json".to_vec()),
            extra: vec![],
        },
        Case {
            name: "manifest of the wrong shape",
            manifest: ok(OCI_MANIFEST, br#"{"schemaVersion":2,"layers":"x","config":7}"#.to_vec()),
            extra: vec![],
        },
        Case {
            name: "schema 1 manifest",
            manifest: ok(
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                br#"{"schemaVersion":1,"name":"x","tag":"v1","fsLayers":[]}"#.to_vec(),
            ),
            extra: vec![],
        },
        Case {
            name: "manifest digest header lies",
            manifest: Answer {
                digest: Some(format!("sha256:{}", "0".repeat(64))),
                ..ok(OCI_MANIFEST, good.manifest.clone())
            },
            extra: vec![],
        },
        Case {
            name: "manifest not found",
            manifest: Answer {
                status: 404,
                ..ok("application/json", br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.to_vec())
            },
            extra: vec![],
        },
        Case {
            name: "registry error",
            manifest: Answer {
                status: 500,
                ..ok("text/plain", b"boom".to_vec())
            },
            extra: vec![],
        },
        Case {
            name: "index nesting an index",
            manifest: ok(
                OCI_INDEX,
                index(json!([{"mediaType": OCI_INDEX, "digest": nested_digest, "size": nested.len(),
                              "platform": {"os": "linux", "architecture": arch}}])),
            ),
            extra: vec![(format!("manifests/{nested_digest}"), ok(OCI_INDEX, nested.clone()))],
        },
        Case {
            name: "index without this node's platform",
            manifest: ok(
                OCI_INDEX,
                index(json!([{"mediaType": OCI_MANIFEST, "digest": good.manifest_digest,
                              "size": good.manifest.len(),
                              "platform": {"os": "linux", "architecture": "s390x"}}])),
            ),
            extra: vec![],
        },
        Case {
            name: "index entry with a path for a digest",
            manifest: ok(
                OCI_INDEX,
                index(json!([{"mediaType": OCI_MANIFEST, "digest": "sha256:../../../etc/passwd",
                              "size": 10, "platform": {"os": "linux", "architecture": arch}}])),
            ),
            extra: vec![],
        },
        Case {
            name: "config blob not matching its digest",
            manifest: ok(OCI_MANIFEST, manifest(&good.config_digest, good.config.len(), layer(layer_bytes.len()))),
            extra: vec![(
                format!("blobs/{}", good.config_digest),
                ok(OCI_CONFIG, br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec()),
            )],
        },
        Case {
            name: "config not JSON",
            manifest: ok(OCI_MANIFEST, manifest(&bad_config_digest, bad_config.len(), layer(layer_bytes.len()))),
            extra: vec![(format!("blobs/{bad_config_digest}"), ok(OCI_CONFIG, bad_config.clone()))],
        },
        Case {
            name: "layer blob not matching its digest",
            manifest: ok(OCI_MANIFEST, manifest(&good.config_digest, good.config.len(), layer(layer_bytes.len()))),
            extra: vec![
                (format!("blobs/{}", good.config_digest), ok(OCI_CONFIG, good.config.clone())),
                (format!("blobs/{layer_digest}"), ok(OCI_LAYER, {
                    let mut b = layer_bytes.clone();
                    let last = b.len() - 1;
                    b[last] ^= 0xff;
                    b
                })),
            ],
        },
        Case {
            name: "layer shorter than its size",
            manifest: ok(OCI_MANIFEST, manifest(&good.config_digest, good.config.len(), layer(layer_bytes.len() + 4096))),
            extra: vec![
                (format!("blobs/{}", good.config_digest), ok(OCI_CONFIG, good.config.clone())),
                (format!("blobs/{layer_digest}"), ok(OCI_LAYER, layer_bytes.clone())),
            ],
        },
        Case {
            name: "layer not gzip though it says so",
            manifest: ok(
                OCI_MANIFEST,
                manifest(&good.config_digest, good.config.len(),
                         json!([{"mediaType": OCI_LAYER, "digest": not_gzip_digest, "size": not_gzip.len()}])),
            ),
            extra: vec![
                (format!("blobs/{}", good.config_digest), ok(OCI_CONFIG, good.config.clone())),
                (format!("blobs/{not_gzip_digest}"), ok(OCI_LAYER, not_gzip.clone())),
            ],
        },
        Case {
            name: "manifest of 8 MiB",
            manifest: ok(OCI_MANIFEST, json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": good.config_digest, "size": good.config.len()},
                "layers": layer(layer_bytes.len()),
                "annotations": {"pad": big_annotation},
            }).to_string().into_bytes()),
            extra: vec![],
        },
    ];
    let layers_dir = d.layer_dir("sha256:x").parent().unwrap().to_path_buf();
    let count = |p: &Path| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    let layers_before = count(&layers_dir);
    for (i, c) in cases.into_iter().enumerate() {
        let repo = format!("broken/case{i}");
        raw.manifest(&repo, "v1", c.manifest);
        for (path, a) in c.extra {
            raw.set(&format!("/v2/{repo}/{path}"), a);
        }
        let name = c.name;
        let reference = format!("{}/{repo}:v1", raw.host);
        let started = std::time::Instant::now();
        let err = common::pull(&mut images, &reference, None)
            .await
            .expect_err(name);
        assert!(
            !err.message().is_empty(),
            "{name}: a status with no message"
        );
        assert!(
            !matches!(
                err.code(),
                tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{name}: {err:?}"
        );
        eprintln!(
            "{name} ({:?}): {:?} {}",
            started.elapsed(),
            err.code(),
            err.message()
        );
        assert_eq!(
            count(&layers_dir),
            layers_before,
            "{name}: a layer was left"
        );
        assert!(d
            .layer_dir(&v.base.built.diff_ids[0])
            .join("bin/busybox")
            .is_file());
        assert_eq!(
            sh(&mut rt, &v.victim, "echo alive").await,
            "alive\n",
            "{name}"
        );
    }
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    teardown_pods(&mut rt, vec![v.pod.clone()]).await;
}

/// A layer that unpacks to more than the operator allows (`max_layer_bytes`,
/// `max_layer_entries`) is refused as ResourceExhausted naming the key, and leaves no layer;
/// one within the limits is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpack_limits_stop_decompression_bombs() {
    require_root();
    let reg = Registry::start();
    // 4 MiB of zeros: a few KiB gzipped.
    let bomb = ImageBuilder::new()
        .layer(
            Layer::new().file("zeros", &vec![0u8; 4 << 20], 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "hostile/bomb", "v1")
        .await;
    let mut many = Layer::new();
    for i in 0..300 {
        many = many.file(&format!("f{i}"), b"", 0o644);
    }
    let many = ImageBuilder::new()
        .layer(many, Compression::Gzip)
        .push(&reg.host, "hostile/many", "v1")
        .await;
    let small = ImageBuilder::new()
        .layer(
            Layer::new().file("small", &[1u8; 1000], 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "hostile/small", "v1")
        .await;
    assert!(bomb.built.layers[0].1.len() < 64 << 10);
    let d = Skiffd::start_with(
        &[&reg.host],
        Some("max_layer_bytes = 1048576\nmax_layer_entries = 100\n"),
        &[],
    );
    let mut images = d.images().await;
    for (img, key) in [(&bomb, "max_layer_bytes"), (&many, "max_layer_entries")] {
        let err = common::pull(&mut images, &img.reference, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains(key), "{}", err.message());
        assert!(!d.layer_dir(&img.built.diff_ids[0]).exists());
    }
    pull(&mut images, &small.reference).await;
    assert!(d
        .layer_dir(&small.built.diff_ids[0])
        .join("small")
        .is_file());
}

/// Image configs with absurd values, pulled and run next to a running pod: each container
/// starts or is refused with a status that says why; the daemon does not panic and the other
/// container runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_image_configs_get_statuses() {
    use serde_json::json;
    let v = Victim::start().await;
    let (reg, d) = (&v.reg, &v.d);
    let (mut images, mut rt) = (d.images().await, d.runtime().await);
    let (pod, pcfg, victim) = (v.pod.clone(), v.pcfg.clone(), v.victim.clone());
    let long = "x".repeat(1 << 20);
    let cases: Vec<(&str, &str, serde_json::Value)> = vec![
        ("user past u32", "User", json!("4294967296:4294967296")),
        ("user name unknown", "User", json!("nobody-at-all")),
        ("user negative", "User", json!("-1")),
        (
            "workdir through /proc",
            "WorkingDir",
            json!("/proc/self/fd/3"),
        ),
        ("workdir relative", "WorkingDir", json!("../../..")),
        ("env with NUL", "Env", json!(["A=b\u{0}c"])),
        ("env not strings", "Env", json!([1, {}, null])),
        ("huge env", "Env", json!([format!("BIG={long}")])),
        ("stop signal unknown", "StopSignal", json!("SIGNOPE")),
        ("stop signal number", "StopSignal", json!("99999")),
        ("entrypoint empty", "Entrypoint", json!([])),
        ("entrypoint NUL", "Entrypoint", json!(["sh\u{0}"])),
        ("cmd object", "Cmd", json!({"a": 1})),
        ("volumes odd", "Volumes", json!({"../../etc": {}, "/": {}})),
        ("labels huge", "Labels", json!({"k": long})),
    ];
    for (i, (name, key, value)) in cases.into_iter().enumerate() {
        let img = ImageBuilder::new()
            .layer(Layer::busybox(), Compression::Gzip)
            .config(key, value)
            .push(&reg.host, &format!("absurd/case{i}"), "v1")
            .await;
        let pulled = common::pull(&mut images, &img.reference, None).await;
        match pulled {
            Err(s) => assert!(
                !matches!(s.code(), tonic::Code::Cancelled | tonic::Code::Unknown),
                "{name}: {s:?}"
            ),
            Ok(_) => {
                // The image's command is used unless the request names one.
                let mut c = container_config(&format!("case{i}"), &img.reference, &[]);
                c.command.clear();
                c.args.clear();
                let created = create(&mut rt, &pod, &pcfg, c).await;
                let started = match created {
                    Ok(id) => start(&mut rt, &id).await.map(|_| id),
                    Err(s) => Err(s),
                };
                if let Err(s) = started {
                    assert!(!s.message().is_empty(), "{name}: a status with no message");
                    assert!(
                        !matches!(s.code(), tonic::Code::Cancelled | tonic::Code::Unknown),
                        "{name}: {s:?}"
                    );
                }
            }
        }
        assert_eq!(
            sh(&mut rt, &victim, "echo alive").await,
            "alive\n",
            "{name}"
        );
    }
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    teardown_pods(&mut rt, vec![pod]).await;
}
