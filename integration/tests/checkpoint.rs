//! CheckpointContainer and restores on this host, whose kernel Debian 12's CRIU (3.17) cannot
//! serve: an unusable or missing CRIU is refused clearly, bad requests by field, bad archives
//! and missing bind mounts before anything is created, and a failed restore with CRIU's own
//! error lines. Dumps and restores themselves are tested in the node VM
//! (integration/tests/node.rs), with CRIU 4.1.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
    // A PID namespace per container, as kubelet's pods have.
    let pcfg = with_namespaces(
        pod_config("ckpt", logs.path().to_str().unwrap()),
        NamespaceMode::Pod,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
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
    let criu = status_info(&mut rt, "criu").await;
    assert!(criu["error"].as_str().unwrap().contains("3.17.1"), "{criu}");
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
    // A container sharing its pod's PID namespace (whose init is the shim) is refused up front,
    // naming the mode, whatever CRIU there is.
    let shared = with_namespaces(
        pod_config("ckpt-shared", logs.path().to_str().unwrap()),
        NamespaceMode::Pod,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    let shared_pod = run_pod(&mut rt, &shared).await;
    let sc = run(
        &mut rt,
        &shared_pod,
        &shared,
        container_config("s", &img.reference, &["sleep", "1000"]),
    )
    .await;
    let err = rt
        .checkpoint_container(ckpt(&sc, &location))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("PID namespace"), "{}", err.message());
    assert!(err.message().contains("POD"), "{}", err.message());
    assert!(!std::path::Path::new(&location).exists());
    teardown_pods(&mut rt, vec![pod, shared_pod]).await;

    // No CRIU at all: named.
    let d2 = Skiffd::start_with(&[], Some("criu_binary = \"/nonexistent/criu\"\n"), &[]);
    let mut rt2 = d2.runtime().await;
    let criu = status_info(&mut rt2, "criu").await;
    assert!(
        criu["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/criu"),
        "{criu}"
    );
}

/// An executable script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A tar of `files` (name, content) at `path`.
fn tar_of(path: &Path, files: &[(&str, &str)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    b.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_are_checked_and_criu_failures_explained() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/restore", "v1")
        .await;
    let bin = tempfile::tempdir().unwrap();
    let old = script(bin.path(), "criu-old", "echo 'Version: 3.17.1'\n");
    // A CRIU that fails every restore the way a real one does, recording its command line.
    let failing = script(
        bin.path(),
        "criu",
        "case \"$1\" in\n\
         --version) echo 'Version: 4.1.1' ;;\n\
         dump) for a; do [ \"$prev\" = -D ] && d=$a; prev=$a; done\n\
           echo '(00.02) Error (criu/cr-dump.c:2111): Dumping FAILED.' > \"$d/dump.log\"\n\
           exit 1 ;;\n\
         restore) w=; for a; do [ \"$prev\" = -W ] && w=$a; prev=$a; done\n\
           echo \"$@\" > \"$w/args\"\n\
           echo '(00.01) Error (criu/mount.c:3070): mnt: No mapping for 4:(null) mountpoint' > \"$w/restore.log\"\n\
           exit 1 ;;\n\
         esac\n",
    );
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!("criu_binary = \"{}\"\n", old.display())),
        &[],
    );
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = with_namespaces(
        pod_config("restore", logs.path().to_str().unwrap()),
        NamespaceMode::Pod,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
    let pod = run_pod(&mut rt, &pcfg).await;
    let files = tempfile::tempdir().unwrap();
    let config_dump = format!(
        r#"{{"name":"counter","rootfsImageName":"{}","rootfsImageRef":""}}"#,
        img.reference
    );
    let spec_dump = r#"{"process":{"args":["sleep","1000"],"env":["PATH=/bin"],"cwd":"/"},
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/data","type":"bind","source":"/old","options":["rbind"]}]}"#;
    let good = files.path().join("good.tar");
    tar_of(
        &good,
        &[
            ("config.dump", &config_dump),
            ("spec.dump", spec_dump),
            ("checkpoint/inventory.img", "x"),
            (
                "checkpoint/descriptors.json",
                r#"["pipe:[1]","pipe:[2]","pipe:[3]"]"#,
            ),
            ("deleted.files", r#"["/bin/true"]"#),
        ],
    );
    // A checkpoint of a process that held CAP_SYS_ADMIN, which no default request grants.
    let greedy = files.path().join("greedy.tar");
    let greedy_spec = spec_dump.replace(
        r#""cwd":"/"}"#,
        r#""cwd":"/","capabilities":{"bounding":["CAP_SYS_ADMIN"],"effective":["CAP_SYS_ADMIN"]}}"#,
    );
    assert_ne!(greedy_spec, spec_dump);
    tar_of(
        &greedy,
        &[
            ("config.dump", &config_dump),
            ("spec.dump", &greedy_spec),
            ("checkpoint/inventory.img", "x"),
        ],
    );
    let foreign = files.path().join("foreign.tar");
    tar_of(&foreign, &[("hello.txt", "hi")]);
    let junk = files.path().join("junk.tar");
    std::fs::write(&junk, vec![0x5a; 3000]).unwrap();
    let volume = tempfile::tempdir().unwrap();
    let restore = |archive: &Path, with_volume: bool| ContainerConfig {
        image: Some(ImageSpec {
            image: archive.display().to_string(),
            ..Default::default()
        }),
        mounts: if with_volume {
            vec![Mount {
                container_path: "/data".into(),
                host_path: volume.path().display().to_string(),
                ..Default::default()
            }]
        } else {
            vec![]
        },
        ..Default::default()
    };

    for (cfg, code, words) in [
        (
            restore(Path::new("/nonexistent/c.tar"), true),
            tonic::Code::NotFound,
            vec!["/nonexistent/c.tar"],
        ),
        (
            restore(&junk, true),
            tonic::Code::InvalidArgument,
            vec!["junk.tar"],
        ),
        (
            restore(&foreign, true),
            tonic::Code::InvalidArgument,
            vec!["foreign.tar", "not a checkpoint archive"],
        ),
        (
            restore(&good, false),
            tonic::Code::InvalidArgument,
            vec!["config.mounts", "/data"],
        ),
        (
            restore(&good, true),
            tonic::Code::FailedPrecondition,
            vec!["3.17.1", "4.0"],
        ),
    ] {
        let err = create(&mut rt, &pod, &pcfg, cfg).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        for w in words {
            assert!(err.message().contains(w), "{w}: {}", err.message());
        }
    }
    // A pod sharing one PID namespace cannot take a restored container.
    let shared = pod_config("shared", logs.path().to_str().unwrap());
    let shared_pod = run_pod(&mut rt, &shared).await;
    let err = create(&mut rt, &shared_pod, &shared, restore(&good, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("PID namespace"), "{}", err.message());
    // Nothing was left behind: no container, no unpacked archive.
    let listed = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
    let leftovers: Vec<_> = std::fs::read_dir(d.root.join("checkpoints"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    teardown_pods(&mut rt, vec![pod, shared_pod]).await;
    drop(rt);
    drop(d);

    // With a CRIU that fails: created (the image pulled), then the start fails with CRIU's
    // error line, the pod's namespaces and the mapped volume on its command line.
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!(
            "criu_binary = \"{}\"\nrestore_from_images = true\n",
            failing.display()
        )),
        &[],
    );
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, &pcfg).await;
    // More privilege than the request grants: refused by name, nothing created.
    let err = create(&mut rt, &pod, &pcfg, restore(&greedy, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("CAP_SYS_ADMIN"), "{}", err.message());
    let c = create(&mut rt, &pod, &pcfg, restore(&good, true))
        .await
        .expect("CreateContainer of a checkpoint");
    let st = status(&mut rt, &c).await;
    assert_eq!(st.metadata.unwrap().name, "counter");
    assert_eq!(st.image.unwrap().image, img.reference);
    let err = start(&mut rt, &c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("criu restore failed")
            && err.message().contains("No mapping for 4:(null) mountpoint"),
        "{}",
        err.message()
    );
    let st = status(&mut rt, &c).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "StartError");
    // A dump that fails leaves the container running, the same process, and no archive.
    let running = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("sleeper", &img.reference, &["sleep", "1000"]),
    )
    .await;
    let pid = container_pid(&mut rt, &running).await;
    let location = files.path().join("failed.tar");
    let err = rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: running.clone(),
            location: location.display().to_string(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("criu dump failed") && err.message().contains("Dumping FAILED"),
        "{}",
        err.message()
    );
    assert!(!location.exists());
    assert_eq!(container_pid(&mut rt, &running).await, pid);
    assert_eq!(proc_status(pid, "State").chars().next(), Some('S'));
    let leftovers: Vec<_> = std::fs::read_dir(d.root.join("checkpoints"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The same checkpoint as an OCI image with the checkpoint annotation: restored the same
    // way (CRIU's failure tells it got that far).
    let ckpt_image = ImageBuilder::new()
        .raw_layer(std::fs::read(&good).unwrap(), Compression::Gzip)
        .annotation("org.criu.checkpoint.container.name", "counter")
        .push(&reg.host, "test/counter-checkpoint", "v1")
        .await;
    pull(&mut d.images().await, &ckpt_image.reference).await;
    let mut from_image = restore(&good, true);
    from_image.image = Some(ImageSpec {
        image: ckpt_image.reference.clone(),
        ..Default::default()
    });
    from_image.metadata = Some(ContainerMetadata {
        name: "from-image".into(),
        attempt: 0,
    });
    let c2 = create(&mut rt, &pod, &pcfg, from_image.clone())
        .await
        .expect("CreateContainer of a checkpoint image");
    let st = status(&mut rt, &c2).await;
    assert_eq!(
        st.image.unwrap().image,
        img.reference,
        "the checkpointed image"
    );
    let err = start(&mut rt, &c2).await.unwrap_err();
    assert!(
        err.message().contains("No mapping for 4:(null) mountpoint"),
        "{}",
        err.message()
    );
    // Without the operator's restore_from_images, a checkpoint image (which any pod author
    // can name) is refused by name, leaving nothing.
    {
        let d3 = Skiffd::start_with(&[&reg.host], None, &[]);
        pull(&mut d3.images().await, &ckpt_image.reference).await;
        let mut rt3 = d3.runtime().await;
        let pod3 = run_pod(&mut rt3, &pcfg).await;
        let err = create(&mut rt3, &pod3, &pcfg, from_image.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("restore_from_images"),
            "{}",
            err.message()
        );
        let listed = rt3
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(listed.is_empty(), "{listed:?}");
        teardown_pods(&mut rt3, vec![pod3]).await;
    }
    from_image.mounts.clear();
    let err = create(&mut rt, &pod, &pcfg, from_image).await.unwrap_err();
    assert!(err.message().contains("/data"), "{}", err.message());

    let args = std::fs::read_to_string(d.run_root.join("containers").join(&c).join("restore/args"))
        .unwrap();
    for want in [
        format!("mnt[/data]:{}", volume.path().display()),
        "fd[13]:extNetNs".to_string(),
        "--join-ns ipc:".to_string(),
        "--join-ns uts:".to_string(),
        "--restore-detached".to_string(),
    ] {
        assert!(args.contains(&want), "{want} not in {args}");
    }
    teardown_pods(&mut rt, vec![pod]).await;
}
