//! ImageService end to end: images built from busybox-static, pushed to a loopback
//! docker-registry, pulled by skiffd over its CRI socket, checked on disk through an overlay
//! mount of the unpacked layers.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::*;
use skiff_integration::image::{push_index, Compression};
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::{ImageFilter, ListImagesRequest, RemoveImageRequest};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_inspect_remove_busybox() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .docker()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "library/busybox", "1.35")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;

    let id = pull(&mut c, &img.reference, None).await.expect("pull");
    assert_eq!(
        id,
        img.id(),
        "PullImage returns the image id (config digest)"
    );

    let list = c
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 1);
    let i = &list[0];
    assert_eq!(i.id, img.id());
    assert_eq!(i.repo_tags, vec![img.reference.clone()]);
    assert_eq!(
        i.repo_digests,
        vec![format!("{}/library/busybox@{}", reg.host, img.top_digest)]
    );
    let layer_bytes: u64 = img.built.layers.iter().map(|l| l.1.len() as u64).sum();
    assert_eq!(i.size, layer_bytes + img.built.config.len() as u64);

    // The unpacked tree is the busybox layer: same bytes, mode, symlinks.
    let ov = Overlay::of_image(&d, &mut c, &img.reference).await;
    let bb = std::fs::read(ov.join("bin/busybox")).unwrap();
    assert_eq!(bb, std::fs::read("/bin/busybox").unwrap());
    assert_eq!(
        std::fs::metadata(ov.join("bin/busybox")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(ov.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert_eq!(
        std::fs::metadata(ov.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    drop(ov);

    // Status by id, by bare hex id, by tag, by digest reference; filter by each.
    let by_digest = format!("{}/library/busybox@{}", reg.host, img.top_digest);
    for name in [
        img.id().to_string(),
        img.id().trim_start_matches("sha256:").to_string(),
        img.reference.clone(),
        by_digest.clone(),
    ] {
        let (i, _) = status(&mut c, &name)
            .await
            .unwrap_or_else(|| panic!("status of {name}"));
        assert_eq!(i.id, img.id(), "{name}");
        let f = c
            .list_images(ListImagesRequest {
                filter: Some(ImageFilter { image: spec(&name) }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(f.len(), 1, "filter {name}");
    }
    assert!(
        status(&mut c, &format!("{}/library/busybox:nope", reg.host))
            .await
            .is_none()
    );

    // ImageFsInfo counts what is really on disk.
    let fs = c
        .image_fs_info(skiff_proto::cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let u = &fs.image_filesystems[0];
    let used = u.used_bytes.as_ref().unwrap().value;
    let inodes = u.inodes_used.as_ref().unwrap().value;
    assert!(used >= bb.len() as u64, "used {used} < busybox size");
    assert!(inodes >= 15, "inodes {inodes}");
    assert!(u.timestamp > 0);

    // Remove by tag removes the image and its layers; a second remove is fine.
    c.remove_image(RemoveImageRequest {
        image: spec(&img.reference),
    })
    .await
    .expect("remove");
    c.remove_image(RemoveImageRequest {
        image: spec(&img.reference),
    })
    .await
    .expect("remove is idempotent");
    assert!(status(&mut c, img.id()).await.is_none());
    let layers = std::fs::read_dir(d.root.join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 0, "layers left after remove");
    let after = c
        .image_fs_info(skiff_proto::cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used_after = after.image_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(
        used_after + bb.len() as u64 <= used,
        "{used_after} vs {used}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_layer_whiteouts_links_owners_modes_times_devices_xattrs() {
    require_root();
    let reg = Registry::start();
    let base = Layer::busybox()
        .dir("etc/app", 0o755)
        .file("etc/app/old.conf", b"old", 0o644)
        .file("etc/app/keep.conf", b"keep", 0o644)
        .dir("opaque", 0o755)
        .file("opaque/from-lower", b"lower", 0o644)
        .file("doomed", b"bye", 0o644);
    let top = Layer::new()
        .file("etc/app/.wh.old.conf", b"", 0o644)
        .file("doomed-too", b"x", 0o600)
        .file(".wh.doomed", b"", 0o644)
        .dir("opaque", 0o750)
        .file("opaque/.wh..wh..opq", b"", 0o644)
        .file("opaque/from-upper", b"upper", 0o640)
        .file_owned("data/owned", b"owned", 0o4750, 1000, 2000, 1_234_567_890)
        .hardlink("data/hard", "data/owned")
        .symlink("data/link", "../etc/app/keep.conf")
        .char_device("dev/null", 1, 3, 0o666)
        .file_with_xattr("data/xattr", b"x", "user.skiff", b"yes");
    let img = ImageBuilder::new()
        .layer(base, Compression::Gzip)
        .layer(top, Compression::Zstd)
        .layer(
            Layer::new().file("plain", b"uncompressed layer", 0o644),
            Compression::None,
        )
        .push(&reg.host, "test/multi", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;
    pull(&mut c, &img.reference, None).await.expect("pull");
    let ov = Overlay::of_image(&d, &mut c, &img.reference).await;

    assert!(!ov.join("etc/app/old.conf").exists(), "whiteout applied");
    assert_eq!(
        std::fs::read(ov.join("etc/app/keep.conf")).unwrap(),
        b"keep"
    );
    assert!(!ov.join("doomed").exists());
    assert!(
        !ov.join("opaque/from-lower").exists(),
        "opaque dir hides the lower"
    );
    assert_eq!(
        std::fs::read(ov.join("opaque/from-upper")).unwrap(),
        b"upper"
    );
    assert_eq!(
        std::fs::metadata(ov.join("opaque")).unwrap().mode() & 0o7777,
        0o750
    );

    let owned = std::fs::metadata(ov.join("data/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 2000));
    assert_eq!(owned.mode() & 0o7777, 0o4750, "setuid kept after chown");
    assert_eq!(owned.mtime(), 1_234_567_890);
    let hard = std::fs::metadata(ov.join("data/hard")).unwrap();
    assert_eq!(hard.ino(), owned.ino(), "hardlink shares the inode");
    assert_eq!(owned.nlink(), 2);
    assert_eq!(
        std::fs::read_link(ov.join("data/link")).unwrap().to_str(),
        Some("../etc/app/keep.conf")
    );
    assert_eq!(std::fs::read(ov.join("data/link")).unwrap(), b"keep");
    let dev = std::fs::symlink_metadata(ov.join("dev/null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), nix::sys::stat::makedev(1, 3));
    let x = xattr(&ov.join("data/xattr"), "user.skiff");
    assert_eq!(x.as_deref(), Some(&b"yes"[..]));
    assert_eq!(
        std::fs::read(ov.join("plain")).unwrap(),
        b"uncompressed layer"
    );
    assert!(ov.join("bin/busybox").exists());
}

fn xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_the_host_platform() {
    require_root();
    let reg = Registry::start();
    let amd = ImageBuilder::new()
        .arch("amd64")
        .layer(
            Layer::busybox().file("arch", b"amd64", 0o644),
            Compression::Gzip,
        )
        .build();
    let arm = ImageBuilder::new()
        .arch("arm64")
        .layer(
            Layer::new().file("arch", b"arm64", 0o644),
            Compression::Gzip,
        )
        .build();
    let index_digest = push_index(
        &reg.host,
        "test/multiarch",
        "latest",
        &[arm.clone(), amd.clone()],
    )
    .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;
    let reference = format!("{}/test/multiarch", reg.host);
    let id = pull(&mut c, &reference, None).await.expect("pull index");
    let host = if cfg!(target_arch = "x86_64") {
        &amd
    } else {
        &arm
    };
    assert_eq!(
        id, host.config_digest,
        "the host platform's image was chosen"
    );
    let (i, info) = status(&mut c, &reference).await.unwrap();
    assert_eq!(i.repo_tags, vec![format!("{reference}:latest")]);
    assert_eq!(i.repo_digests, vec![format!("{reference}@{index_digest}")]);
    assert_eq!(info["manifestDigest"], host.manifest_digest.as_str());
    let ov = Overlay::of_image(&d, &mut c, &reference).await;
    assert_eq!(
        std::fs::read(ov.join("arch")).unwrap(),
        host.arch.as_bytes()
    );
    drop(ov);

    // By digest: the index digest resolves the same; a platform manifest digest pulls directly.
    let by_index = format!("{reference}@{index_digest}");
    assert_eq!(
        pull(&mut c, &by_index, None).await.unwrap(),
        host.config_digest
    );
    let other = if cfg!(target_arch = "x86_64") {
        &arm
    } else {
        &amd
    };
    let by_manifest = format!("{reference}@{}", other.manifest_digest);
    assert_eq!(
        pull(&mut c, &by_manifest, None).await.unwrap(),
        other.config_digest
    );
    let (i, _) = status(&mut c, &by_manifest).await.unwrap();
    assert!(i.repo_tags.is_empty(), "a digest pull records no tag");
    assert_eq!(i.repo_digests, vec![by_manifest.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_config_user_env_entrypoint_and_more_are_reported() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("User", "1000:1000".into())
        .config("Env", serde_json::json!(["PATH=/bin", "GREETING=hello"]))
        .config("Entrypoint", serde_json::json!(["/bin/sh", "-c"]))
        .config("Cmd", serde_json::json!(["echo $GREETING"]))
        .config("WorkingDir", "/tmp".into())
        .config("ExposedPorts", serde_json::json!({"8080/tcp": {}}))
        .config("Volumes", serde_json::json!({"/data": {}}))
        .config("StopSignal", "SIGUSR1".into())
        .push(&reg.host, "test/configured", "v1")
        .await;
    let named = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("User", "app".into())
        .push(&reg.host, "test/named-user", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;
    pull(&mut c, &img.reference, None).await.unwrap();
    pull(&mut c, &named.reference, None).await.unwrap();
    let (i, info) = status(&mut c, &img.reference).await.unwrap();
    assert_eq!(i.uid.map(|u| u.value), Some(1000));
    assert_eq!(i.username, "");
    let cfg = &info["imageSpec"]["config"];
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["Env"][1], "GREETING=hello");
    assert_eq!(cfg["Entrypoint"][0], "/bin/sh");
    assert_eq!(cfg["Cmd"][0], "echo $GREETING");
    assert_eq!(cfg["WorkingDir"], "/tmp");
    assert!(cfg["ExposedPorts"].get("8080/tcp").is_some());
    assert!(cfg["Volumes"].get("/data").is_some());
    assert_eq!(cfg["StopSignal"], "SIGUSR1");
    let (i, _) = status(&mut c, &named.reference).await.unwrap();
    assert!(i.uid.is_none());
    assert_eq!(i.username, "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials() {
    require_root();
    use base64::Engine;
    let reg = Registry::start_with_basic_auth("alice", "s3cret");
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push_auth(&reg.host, "private/app", "v1", Some(("alice", "s3cret")))
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;

    let e = pull(&mut c, &img.reference, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains(&img.reference), "{}", e.message());
    let wrong = skiff_proto::cri::AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = pull(&mut c, &img.reference, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let right = skiff_proto::cri::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        server_address: reg.host.clone(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &img.reference, Some(right)).await.unwrap(),
        img.id()
    );
    c.remove_image(RemoveImageRequest {
        image: spec(img.id()),
    })
    .await
    .unwrap();

    // The same credentials as docker's `auth` field; and they are not remembered afterwards.
    let encoded = skiff_proto::cri::AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cret"),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &img.reference, Some(encoded)).await.unwrap(),
        img.id()
    );
    let e = pull(&mut c, &img.reference, None).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unauthenticated,
        "credentials must not leak into later pulls"
    );
}
