//! CheckpointContainer on this host, whose kernel Debian 12's CRIU (3.17) cannot serve: an
//! unusable or missing CRIU is refused clearly, and bad requests by field. The dump itself is
//! tested in the node VM (integration/tests/node.rs), with CRIU 4.1.

use std::os::unix::fs::PermissionsExt;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_criu_is_refused_clearly() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/ckpt", "v1")
        .await;
    // A CRIU as old as Debian 12's.
    let bin = tempfile::tempdir().unwrap();
    let criu = bin.path().join("criu");
    std::fs::write(&criu, "#!/bin/sh\necho 'Version: 3.17.1'\n").unwrap();
    std::fs::set_permissions(&criu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!("criu_binary = \"{}\"\n", criu.display())),
        &[],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("ckpt", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("c", &img.reference, &["sleep", "1000"]),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let location = out.path().join("c.tar").display().to_string();
    let ckpt = |id: &str, location: &str| CheckpointContainerRequest {
        container_id: id.into(),
        location: location.into(),
        timeout: 0,
    };

    let err = rt
        .checkpoint_container(ckpt(&c, &location))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("3.17.1"), "{}", err.message());
    assert!(err.message().contains("4.0"), "{}", err.message());
    assert!(!std::path::Path::new(&location).exists());
    // Status' verbose info says so too.
    let st = rt
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(st.info["criu"].contains("3.17.1"), "{:?}", st.info);
    // The container runs on.
    assert_eq!(
        status(&mut rt, &c).await.state,
        ContainerState::ContainerRunning as i32
    );

    // Bad requests, by field.
    for (req, field, code) in [
        (
            ckpt("", &location),
            "container_id",
            tonic::Code::InvalidArgument,
        ),
        (
            ckpt(&c, "relative.tar"),
            "location",
            tonic::Code::InvalidArgument,
        ),
        (
            ckpt(&c, "/no/such/dir/c.tar"),
            "location",
            tonic::Code::InvalidArgument,
        ),
        (
            ckpt("nosuchcontainer", &location),
            "nosuchcontainer",
            tonic::Code::NotFound,
        ),
    ] {
        let err = rt.checkpoint_container(req).await.unwrap_err();
        assert!(err.message().contains(field), "{}", err.message());
        assert_eq!(err.code(), code, "{err:?}");
    }
    teardown_pods(&mut rt, vec![pod]).await;

    // No CRIU at all: named.
    let d2 = Skiffd::start_with(&[], Some("criu_binary = \"/nonexistent/criu\"\n"), &[]);
    let mut rt2 = d2.runtime().await;
    let st = rt2
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.info["criu"].contains("/nonexistent/criu"),
        "{:?}",
        st.info
    );
}
