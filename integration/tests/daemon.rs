//! skiffd as a process: Version/Status/RuntimeConfig, its socket, config, restarts, signals,
//! concurrent pulls, mirrors.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

use common::*;
use skiff_integration::cri::status_info;
use skiff_integration::image::{noise, Compression};
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::{ListImagesRequest, RuntimeConfigRequest, StatusRequest, VersionRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_status_and_runtime_config() {
    require_root();
    let d = Skiffd::start(&[]);
    let mut r = d.runtime().await;
    let v = r
        .version(VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "skiff");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.version, "0.1.0");

    let s = r
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let runtime = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(runtime.status);
    // The harness gives skiffd a loopback-only CNI network (tests/network.rs covers a missing
    // one).
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(net.status, "{net:?}");
    assert!(s.info.is_empty(), "info only when verbose");
    let cfg = status_info(&mut r, "config").await;
    assert_eq!(cfg["root"], d.root.display().to_string());

    let rc = r
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        skiff_proto::cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_stale_socket_second_daemon_and_sigterm() {
    require_root();
    let mut d = Skiffd::start(&[]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A second daemon on the same socket refuses, naming it, and leaves the first serving.
    let out = Command::new(Skiffd::binary())
        .args(["--listen", d.socket.to_str().unwrap()])
        .args(["--root", d.dir.path().join("root2").to_str().unwrap()])
        .args(["--run-root", d.dir.path().join("run2").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(d.socket.to_str().unwrap()), "{err}");
    d.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();

    // SIGTERM: clean exit, socket removed.
    let st = d.terminate();
    assert!(st.success(), "{st}");
    assert!(!d.socket.exists());

    // A stale socket file (a crash) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&d.socket).unwrap();
    drop(stale);
    assert!(d.socket.exists());
    d.restart();
    d.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_errors_are_named() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "rooot = \"/x\"\n").unwrap();
    let out = Command::new(Skiffd::binary())
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.toml") && err.contains("rooot"), "{err}");

    let out = Command::new(Skiffd::binary())
        .args(["--config", dir.path().join("absent.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));
}

#[test]
fn a_shim_from_another_build_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    for (shim, said) in skiff_integration::other_build_shims(dir.path()) {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("shim_binary = {shim:?}\n")).unwrap();
        let run_root = dir.path().join("run");
        let mut skiffd = Command::new(Skiffd::binary())
            .args(["--config", cfg.to_str().unwrap()])
            .args(["--listen", dir.path().join("s.sock").to_str().unwrap()])
            .args(["--root", dir.path().join("root").to_str().unwrap()])
            .args(["--run-root", run_root.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while skiffd.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = skiffd.kill();
                let _ = skiffd.wait();
                panic!("skiffd runs with a shim that {said}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = skiffd.wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(shim.to_str().unwrap()) && err.contains(said),
            "{err}"
        );
        // Refused before any pod could start with it: the binary pods run from is not there.
        assert!(!run_root.join("bin/skiff-shim").exists());
    }
    // The shim of this build tells its protocol (that skiffd takes it, every other test shows).
    let out = Command::new(skiff_integration::bin_dir().join("skiff-shim"))
        .arg("version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let n = text.trim().rsplit_once(" protocol ").map(|(_, n)| n);
    assert!(n.is_some_and(|n| n.parse::<u32>().is_ok()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_kill9_and_leftovers_are_cleaned() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/persist", "v1")
        .await;
    let mut d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference, None)
        .await
        .unwrap();
    d.kill9();
    // What a crash mid-pull leaves: a half-unpacked layer, a half-written record and blob, and
    // a layer no record references.
    let images = d.root.join("images");
    std::fs::create_dir_all(images.join("layers/.tmp-abc-1/bin")).unwrap();
    std::fs::write(images.join("records/.tmp-x.json-2"), b"{half").unwrap();
    std::fs::write(images.join("blobs/sha256/.tmp-y-3"), b"half").unwrap();
    let orphan = images.join("layers").join("f".repeat(64));
    std::fs::create_dir_all(orphan.join("etc")).unwrap();
    d.restart();
    let mut c = d.images().await;
    let (i, _) = status(&mut c, &img.reference)
        .await
        .expect("image after restart");
    assert_eq!(i.id, img.id());
    assert!(
        temporaries(&images).is_empty(),
        "{:?}",
        temporaries(&images)
    );
    assert!(!orphan.exists(), "unreferenced layer collected at start");
    let ov = Overlay::of_image(&d, &mut c, &img.reference).await;
    assert!(ov.join("bin/busybox").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_layer_once() {
    require_root();
    let reg = Registry::start();
    let noise = noise(4 << 20, 11);
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(Layer::new().file("noise", &noise, 0o644), Compression::Gzip)
        .push(&reg.host, "test/concurrent", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let (mut a, mut b) = (d.images().await, d.images().await);
    let (ra, rb) = tokio::join!(
        pull(&mut a, &img.reference, None),
        pull(&mut b, &img.reference, None)
    );
    assert_eq!(ra.unwrap(), img.id());
    assert_eq!(rb.unwrap(), img.id());
    // Registry access log: each layer blob was served once.
    for (digest, _, _) in &img.built.layers {
        assert_eq!(reg.blob_gets(digest), 1, "blob {digest} downloads");
    }
    let n = d
        .images()
        .await
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
        .len();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_first_and_fall_back_to_the_registry() {
    require_root();
    let origin = Registry::start();
    let mirror = Registry::start();
    let only_on_mirror = ImageBuilder::new()
        .layer(
            Layer::busybox().file("where", b"mirror", 0o644),
            Compression::Gzip,
        )
        .push(&mirror.host, "team/app", "v1")
        .await;
    let only_on_origin = ImageBuilder::new()
        .layer(
            Layer::busybox().file("where", b"origin", 0o644),
            Compression::Gzip,
        )
        .push(&origin.host, "team/other", "v1")
        .await;
    let cfg = format!(
        "[registry_mirrors]\n\"{}\" = [\"{}\"]\n",
        origin.host, mirror.host
    );
    let d = Skiffd::start_with(&[&origin.host, &mirror.host], Some(&cfg), &[]);
    let mut c = d.images().await;
    // Named by the origin, served by the mirror.
    let name = format!("{}/team/app:v1", origin.host);
    assert_eq!(
        pull(&mut c, &name, None).await.unwrap(),
        only_on_mirror.id()
    );
    let (i, _) = status(&mut c, &name).await.unwrap();
    assert_eq!(i.repo_tags, vec![name.clone()]);
    // Not on the mirror: the origin answers.
    assert_eq!(
        pull(&mut c, &only_on_origin.reference, None).await.unwrap(),
        only_on_origin.id()
    );
}

/// A gRPC C-core client (Python `grpcio` from PyPI, which sends the socket's path,
/// percent-encoded, as `:authority`) is served on the CRI socket, call after call on one
/// connection (HPACK's dynamic table in use), as containerd and CRI-O serve it. The test
/// command installs grpcio into the virtualenv at SKIFF_TEST_PYTHON's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_clients_are_served() {
    require_root();
    let python = std::env::var("SKIFF_TEST_PYTHON")
        .unwrap_or_else(|_| "/var/cache/skiff-test-venv/bin/python".into());
    let d = Skiffd::start(&[]);
    let script = r#"
import sys, grpc
print(grpc.__version__)
ch = grpc.insecure_channel("unix://" + sys.argv[1])
version = ch.unary_unary("/runtime.v1.RuntimeService/Version")
status = ch.unary_unary("/runtime.v1.RuntimeService/Status")
for _ in range(3):
    v = version(b"\x0a\x02v1", timeout=10)
    s = status(b"\x08\x01", timeout=10)
    # VersionResponse.runtime_name (field 2) and a RuntimeReady condition.
    print("version ok" if b"\x12\x05skiff" in v else v)
    print("status ok" if b"RuntimeReady" in s else s)
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&d.socket)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (integration/run-tests installs it)"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("version ok").count(), 3, "{text}");
    assert_eq!(text.matches("status ok").count(), 3, "{text}");
}
