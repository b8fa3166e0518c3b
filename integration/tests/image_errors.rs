//! Bad input and hostile conditions: each gets a clear gRPC status naming the reference or
//! digest, and nothing half-written stays in the store.

mod common;

use common::*;
use skiff_integration::image::{noise, Compression};
use skiff_integration::{free_port, require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::ListImagesRequest;
use tonic::Code;

async fn image_count(d: &Skiffd) -> usize {
    d.images()
        .await
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
        .len()
}

/// Nothing of a failed pull remains: no record, no layer, no temporary.
fn assert_store_empty(d: &Skiffd) {
    let images = d.root.join("images");
    for sub in ["layers", "records"] {
        let n = std::fs::read_dir(images.join(sub)).unwrap().count();
        assert_eq!(n, 0, "{sub} not empty after a failed pull");
    }
    assert!(
        temporaries(&images).is_empty(),
        "{:?}",
        temporaries(&images)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_unreachable() {
    require_root();
    let reg = Registry::start();
    ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "exists/here", "v1")
        .await;
    let dead = format!("127.0.0.1:{}", free_port());
    let d = Skiffd::start(&[&reg.host, &dead]);
    let mut c = d.images().await;

    for bad in ["", "UPPER/case:v1", "a b", "x@sha256:1234", "busybox:"] {
        let e = pull(&mut c, bad, None).await.unwrap_err();
        eprintln!("{:?}: {}", e.code(), e.message());
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        if !bad.is_empty() {
            assert!(e.message().contains(bad), "{bad:?}: {}", e.message());
        }
    }
    let e = c
        .pull_image(skiff_proto::cri::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("image"), "{}", e.message());

    for missing in [
        format!("{}/exists/here:nope", reg.host),
        format!("{}/no/such-repo:v1", reg.host),
        format!("{}/exists/here@sha256:{}", reg.host, "0".repeat(64)),
    ] {
        let e = pull(&mut c, &missing, None).await.unwrap_err();
        eprintln!("{:?}: {}", e.code(), e.message());
        assert_eq!(e.code(), Code::NotFound, "{missing}: {e:?}");
        assert!(e.message().contains(&missing), "{}", e.message());
    }

    let unreachable = format!("{dead}/some/image:v1");
    let e = pull(&mut c, &unreachable, None).await.unwrap_err();
    eprintln!("{:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&unreachable), "{}", e.message());

    let e = c
        .pull_image(skiff_proto::cri::PullImageRequest {
            image: Some(skiff_proto::cri::ImageSpec {
                image: format!("{}/exists/here:v1", reg.host),
                runtime_handler: "kata".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("kata"), "{}", e.message());

    assert_eq!(image_count(&d).await, 0);
    assert_store_empty(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_blobs_keep_nothing() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(Layer::new().file("second", b"2", 0o644), Compression::Gzip)
        .push(&reg.host, "test/corrupt", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;

    // Flip one byte of the big layer as the registry stores it: same size, other digest.
    let (digest, _, _) = &img.built.layers[0];
    let file = reg.blob_file(digest);
    let mut data = std::fs::read(&file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let e = pull(&mut c, &img.reference, None).await.unwrap_err();
    eprintln!("{:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains(digest.as_str()), "{}", e.message());
    assert!(e.message().contains("digest mismatch"), "{}", e.message());
    assert_eq!(image_count(&d).await, 0);
    // The good second layer may have been unpacked concurrently; it belongs to no image, so a
    // restart collects it. The corrupt one never got a directory.
    assert!(!d.layer_dir(&img.built.diff_ids[0]).exists());

    // Truncated: the registry serves fewer bytes than the manifest announces.
    data[mid] ^= 0xff;
    data.truncate(data.len() / 3);
    std::fs::write(&file, &data).unwrap();
    let e = pull(&mut c, &img.reference, None).await.unwrap_err();
    eprintln!("{:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("truncated"), "{}", e.message());
    assert!(e.message().contains(digest.as_str()), "{}", e.message());
    assert_eq!(image_count(&d).await, 0);
    assert!(temporaries(&d.root.join("images")).is_empty());

    let mut d = d;
    d.restart();
    assert_store_empty(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_resource_exhausted_and_leaves_nothing() {
    require_root();
    let reg = Registry::start();
    // busybox is ~2 MiB; two incompressible 3 MiB layers cannot fit a 4 MiB store.
    let noise = noise(3 << 20, 13);
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(Layer::new().file("noise", &noise, 0o644), Compression::Gzip)
        .layer(
            Layer::new().file("noise2", &noise[1..], 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "test/big", "v1")
        .await;
    let small = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        small.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .expect("mount a small tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _u = Unmount(small.path().to_path_buf());
    let root = small.path().join("root");
    let d = Skiffd::start_with(&[&reg.host], None, &["--root", root.to_str().unwrap()]);
    let mut c = d.images().await;
    let e = pull(&mut c, &img.reference, None).await.unwrap_err();
    eprintln!("{:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains(&img.reference), "{}", e.message());
    assert_eq!(image_count(&d).await, 0);
    assert!(temporaries(&root.join("images")).is_empty());
    drop(c);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_leaves_no_temporary() {
    require_root();
    let reg = Registry::start();
    let noise = noise(8 << 20, 9);
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(Layer::new().file("noise", &noise, 0o644), Compression::Gzip)
        .layer(
            Layer::new().file("noise", &noise[7..], 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "test/cancel", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;
    // The client gives up after 30 ms (grpc-timeout), as kubelet does when its context ends.
    let mut req = tonic::Request::new(skiff_proto::cri::PullImageRequest {
        image: spec(&img.reference),
        ..Default::default()
    });
    req.set_timeout(std::time::Duration::from_millis(30));
    let e = c.pull_image(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{e:?}"
    );
    // The unpacking threads notice the cut stream and clean up after themselves.
    let images = d.root.join("images");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !temporaries(&images).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        temporaries(&images).is_empty(),
        "{:?}",
        temporaries(&images)
    );
    assert_eq!(image_count(&d).await, 0);
    // And the image pulls normally afterwards.
    assert_eq!(pull(&mut c, &img.reference, None).await.unwrap(), img.id());
}

/// A node without CA certificates: pulls are refused by name (the TLS setup the registry client
/// needs cannot be made), never a panic; and a registry token that cannot be an HTTP header is
/// refused naming its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ca_certificates_and_unsendable_tokens_are_named() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/noca", "v1")
        .await;
    let mut d = Skiffd::start(&[&reg.host]);
    let err = pull(
        &mut d.images().await,
        &img.reference,
        Some(skiff_proto::cri::AuthConfig {
            registry_token: "abc\r\nX-Injected: 1".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("auth.registry_token"),
        "{}",
        err.message()
    );
    // The TLS roots as on a node without the ca-certificates package.
    d.restart_with_env(&[
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
        ("SSL_CERT_DIR", "/nonexistent/certs"),
    ]);
    let err = pull(&mut d.images().await, &img.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("CA certificates"),
        "{}",
        err.message()
    );
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
    assert_store_empty(&d);
}
