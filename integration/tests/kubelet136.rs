//! What kubelet 1.33–1.36 sends (cri-api v0.36), observed through the CRI socket and in the
//! kernel: stop signals (KEP-4960), the streaming list calls, pinned images and the pull
//! progress timeout, the writable layers' usage, pod-level resources and resize read-back,
//! runtime handlers.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

/// A container whose shell exits 3 on SIGUSR1 and 4 on SIGUSR2 (as its PID namespace's init it
/// would ignore a SIGTERM it has no handler for).
const TRAPS: &str =
    "trap 'exit 3' USR1; trap 'exit 4' USR2; echo ready > /tmp/ready; while true; do sleep 0.1; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signal_from_the_request_overrides_the_image() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("StopSignal", serde_json::json!("SIGUSR2"))
        .push(&reg.host, "test/stopsig", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("stopsig", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;

    // (request's stop signal, what ContainerStatus reports, the exit code it causes)
    let cases = [
        (Signal::RuntimeDefault, Signal::Sigusr2, 4),
        (Signal::Sigusr1, Signal::Sigusr1, 3),
    ];
    for (i, (asked, reported, code)) in cases.into_iter().enumerate() {
        let mut c = container_config(&format!("c{i}"), &img.reference, &["sh", "-c", TRAPS]);
        c.stop_signal = asked as i32;
        let id = run(&mut rt, &pod, &pcfg, c).await;
        assert_eq!(status(&mut rt, &id).await.stop_signal, reported as i32);
        wait_ready_file(&mut rt, &id).await;
        rt.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 20,
        })
        .await
        .unwrap();
        let st = wait_exited(&mut rt, &id, Duration::from_secs(5)).await;
        assert_eq!(st.exit_code, code, "{asked:?}: {st:?}");
    }

    // A value the enum does not have is refused by field.
    let mut c = container_config("bad", &img.reference, &["true"]);
    c.stop_signal = 999;
    let err = create(&mut rt, &pod, &pcfg, c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("config.stop_signal"), "{err:?}");

    teardown_pods(&mut rt, vec![pod]).await;
}

/// Every message of a server-streamed answer, in order (the call and each message must succeed).
async fn pages<M>(
    answer: Result<tonic::Response<tonic::codec::Streaming<M>>, tonic::Status>,
) -> Vec<M> {
    answer
        .expect("the call")
        .into_inner()
        .map(|m| m.expect("a message"))
        .collect()
        .await
}

/// The `Stream*` list calls answer what the `List*` calls do, in messages of at most 50 items
/// (at least one each; none for an empty list), each item once, filters applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_page_what_the_list_calls_answer() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/stream", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut images = d.images().await;
    pull(&mut images, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();

    // Nothing yet: an empty stream.
    let empty = pages(
        rt.stream_containers(StreamContainersRequest { filter: None })
            .await,
    )
    .await;
    assert!(empty.is_empty(), "{empty:?}");

    let mut pods = vec![];
    let mut cfgs = vec![];
    for i in 0..120 {
        let mut cfg = with_namespaces(
            pod_config(&format!("p{i}"), logs.path().to_str().unwrap()),
            NamespaceMode::Node,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
        );
        cfg.labels.insert("half".into(), (i % 2).to_string());
        pods.push(run_pod(&mut rt, &cfg).await);
        cfgs.push(cfg);
    }
    let mut containers = vec![];
    for i in 0..3 {
        containers.push(
            run(
                &mut rt,
                &pods[i],
                &cfgs[i],
                container_config(&format!("c{i}"), &img.reference, &["sleep", "1000"]),
            )
            .await,
        );
    }

    let all = pages(
        rt.stream_pod_sandboxes(StreamPodSandboxesRequest { filter: None })
            .await,
    )
    .await;
    let sizes: Vec<usize> = all.iter().map(|p| p.pod_sandboxes.len()).collect();
    assert_eq!(sizes, vec![50, 50, 20]);
    let streamed: HashSet<String> = all
        .iter()
        .flat_map(|p| p.pod_sandboxes.iter().map(|s| s.id.clone()))
        .collect();
    let listed: HashSet<String> = list_pods(&mut rt).await.into_iter().map(|p| p.id).collect();
    assert_eq!(streamed.len(), 120);
    assert_eq!(streamed, listed);

    let half: usize = pages(
        rt.stream_pod_sandboxes(StreamPodSandboxesRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [("half".to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
        })
        .await,
    )
    .await
    .iter()
    .map(|p| p.pod_sandboxes.len())
    .sum();
    assert_eq!(half, 60);

    let got: HashSet<String> = pages(
        rt.stream_containers(StreamContainersRequest { filter: None })
            .await,
    )
    .await
    .into_iter()
    .flat_map(|p| p.containers)
    .map(|c| c.id)
    .collect();
    assert_eq!(got, containers.iter().cloned().collect::<HashSet<_>>());

    let stats: Vec<ContainerStats> = pages(
        rt.stream_container_stats(StreamContainerStatsRequest { filter: None })
            .await,
    )
    .await
    .into_iter()
    .flat_map(|p| p.container_stats)
    .collect();
    assert_eq!(stats.len(), 3);
    assert!(stats.iter().all(|s| s.memory.is_some()));

    let pod_stats: usize = pages(
        rt.stream_pod_sandbox_stats(StreamPodSandboxStatsRequest { filter: None })
            .await,
    )
    .await
    .iter()
    .map(|p| p.pod_sandbox_stats.len())
    .sum();
    assert_eq!(pod_stats, 120);

    let imgs: Vec<Image> = pages(
        images
            .stream_images(StreamImagesRequest { filter: None })
            .await,
    )
    .await
    .into_iter()
    .flat_map(|p| p.images)
    .collect();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].id, img.built.config_digest);

    // Metrics: the same pods as ListPodSandboxMetrics, paged.
    let streamed = pages(
        rt.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
            .await,
    )
    .await;
    assert!(streamed
        .iter()
        .all(|p| !p.pod_sandbox_metrics.is_empty() && p.pod_sandbox_metrics.len() <= 50));
    let mut got: Vec<String> = streamed
        .into_iter()
        .flat_map(|p| p.pod_sandbox_metrics)
        .map(|m| m.pod_sandbox_id)
        .collect();
    let mut listed: Vec<String> = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics
        .into_iter()
        .map(|m| m.pod_sandbox_id)
        .collect();
    got.sort();
    listed.sort();
    assert_eq!(got, listed);
    assert!(got.len() > 50, "{}", got.len());
    teardown_pods(&mut rt, pods).await;
}

/// `pinned_images` marks images kubelet must not collect (`Image.pinned` in ImageStatus and
/// ListImages); `image_pull_progress_timeout` cancels a pull whose download stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_images_and_the_pull_progress_timeout() {
    use skiff_integration::rawregistry::{sha256, Answer, RawRegistry};
    require_root();
    let reg = Registry::start();
    let mut refs = vec![];
    for repo in ["test/pinned", "test/free", "test/has-keyword-in"] {
        let img = ImageBuilder::new()
            .layer(
                Layer::new().file("f", repo.as_bytes(), 0o644),
                Compression::Gzip,
            )
            .push(&reg.host, repo, "v1")
            .await;
        refs.push(img.reference);
    }
    let raw = RawRegistry::start().await;
    let d = Skiffd::start_with(
        &[&reg.host, &raw.host],
        Some(&format!(
            "pinned_images = [\"{}\", \"*keyword*\"]\nimage_pull_progress_timeout = \"2s\"\n",
            refs[0]
        )),
        &[],
    );
    let mut images = d.images().await;
    for r in &refs {
        pull(&mut images, r).await;
    }
    let mut pinned = vec![];
    for r in &refs {
        let st = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: r.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        pinned.push(st.pinned);
    }
    assert_eq!(pinned, vec![true, false, true]);
    let listed = images
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.iter().filter(|i| i.pinned).count(), 2);

    // A layer whose download stops after 100 bytes: the pull fails after the timeout, naming it.
    let good = ImageBuilder::new()
        .layer(
            Layer::new().file("big", &vec![7u8; 200_000], 0o644),
            Compression::None,
        )
        .build();
    let (layer_digest, layer_bytes, layer_type) = good.layers[0].clone();
    assert_eq!(sha256(&layer_bytes), layer_digest);
    raw.manifest(
        "stall",
        "v1",
        Answer::ok(&good.manifest_type, good.manifest.clone()),
    );
    raw.blob(
        "stall",
        &good.config_digest,
        Answer::ok("application/octet-stream", good.config.clone()),
    );
    raw.blob(
        "stall",
        &layer_digest,
        Answer {
            stall_after: Some(100),
            ..Answer::ok(&layer_type, layer_bytes)
        },
    );
    let started = std::time::Instant::now();
    let err = common::pull(&mut images, &format!("{}/stall:v1", raw.host), None)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("image_pull_progress_timeout"),
        "{}",
        err.message()
    );
}

/// `ImageFsInfo.container_filesystems` counts what containers write to their writable layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_filesystems_count_the_writable_layers() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/writer", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut images = d.images().await;
    pull(&mut images, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("writer", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("w", &img.reference, &["sleep", "1000"]),
    )
    .await;
    let used = |fs: &ImageFsInfoResponse| {
        assert_eq!(fs.container_filesystems.len(), 1);
        let u = &fs.container_filesystems[0];
        assert!(u.timestamp > 0);
        assert!(!u.fs_id.as_ref().unwrap().mountpoint.is_empty());
        u.used_bytes.as_ref().unwrap().value
    };
    let before = used(
        &images
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    sh(
        &mut rt,
        &c,
        "dd if=/dev/urandom of=/data bs=1024 count=3072 2>/dev/null; sync",
    )
    .await;
    let after = used(
        &images
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        after >= before + (3 << 20),
        "before {before}, after {after}"
    );
    teardown_pods(&mut rt, vec![pod]).await;
}

/// The cgroup file `v1_name` (v1, in the hierarchy of `controller`) or `v2_name` (v2) of the
/// cgroup that process `pid` is in, or of its parent (`up`).
fn cgroup_file(
    pid: i32,
    controller: &str,
    v1_name: &str,
    v2_name: &str,
    up: bool,
) -> std::path::PathBuf {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = text
        .lines()
        .find(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl) = (f.next(), f.next().unwrap_or(""));
            if v2 {
                ctl.is_empty()
            } else {
                ctl.split(',').any(|c| c == controller)
            }
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {text}"));
    let path = line.splitn(3, ':').nth(2).unwrap();
    let mut dir = if v2 {
        std::path::PathBuf::from(format!("/sys/fs/cgroup{path}"))
    } else {
        let mount = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.split(',').any(|c| c == controller))
                    && !p.is_symlink()
            })
            .unwrap();
        mount.join(path.trim_start_matches('/'))
    };
    if up {
        dir = dir.parent().unwrap().to_path_buf();
    }
    dir.join(if v2 { v2_name } else { v1_name })
}

fn read_i64(p: &std::path::Path) -> i64 {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    t.split_whitespace().next().unwrap().parse().unwrap()
}

/// Pod-level resources: RunPodSandbox puts the containers' sum plus the overhead on the pod's
/// cgroup, UpdatePodSandboxResources changes it live; ContainerStatus reports what the
/// container's cgroup really holds (an in-place resize, or a change made behind skiff's back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_resources_and_resize_read_back() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/podres", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_level_config("podres", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut c = container_config("c", &img.reference, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, &pcfg, c).await;
    let pid = container_pid(&mut rt, &id).await;
    let pod_mem = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max", true);
    let pod_cpu = cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max", true);
    assert_eq!(read_i64(&pod_mem), 320 << 20);
    assert_eq!(read_i64(&pod_cpu), 60_000);

    grow_pod_resources(&mut rt, &pod).await;
    assert_eq!(read_i64(&pod_mem), 576 << 20);
    assert_eq!(read_i64(&pod_cpu), 160_000);
    for (req, code) in [
        (
            UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: "nope".into(),
                resources: Some(Default::default()),
                overhead: None,
            },
            tonic::Code::NotFound,
        ),
        (
            UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.clone(),
                resources: None,
                overhead: None,
            },
            tonic::Code::InvalidArgument,
        ),
    ] {
        let err = rt.update_pod_sandbox_resources(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }

    // Resize, then a change behind skiff's back: the status says what the cgroup holds.
    let mem_of = |st: &ContainerStatus| {
        st.resources
            .as_ref()
            .and_then(|r| r.linux.as_ref())
            .map(|l| l.memory_limit_in_bytes)
    };
    assert_eq!(mem_of(&status(&mut rt, &id).await), Some(128 << 20));
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 200 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(mem_of(&status(&mut rt, &id).await), Some(200 << 20));
    let c_mem = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max", false);
    std::fs::write(&c_mem, (300u64 << 20).to_string()).unwrap();
    assert_eq!(mem_of(&status(&mut rt, &id).await), Some(300 << 20));
    teardown_pods(&mut rt, vec![pod]).await;
}

/// Runtime handlers (RuntimeClass): `[runtimes.NAME]` tables, each listed by Status with its
/// features; a container of the `strict` handler gets its RuntimeDefault seccomp filter when it
/// names none (seen in /proc/PID/status), one of the default handler is unconfined; a handler's
/// `allowed_annotations` refuse the others by name; an unknown handler is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_handlers_have_their_own_defaults() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/handlers", "v1")
        .await;
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(
            "[runtimes.plain]\n\n[runtimes.strict]\nunset_seccomp_profile = \"RuntimeDefault\"\n\
             allowed_annotations = [\"kubernetes.io/ingress-bandwidth\"]\n",
        ),
        &[],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let st = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, vec!["", "plain", "strict"]);
    assert!(st.runtime_handlers.iter().all(|h| h
        .features
        .as_ref()
        .unwrap()
        .recursive_read_only_mounts));

    let logs = tempfile::tempdir().unwrap();
    let mut seccomp_of = vec![];
    let mut pods = vec![];
    for handler in ["", "strict"] {
        let pcfg = pod_config(&format!("h{handler}"), logs.path().to_str().unwrap());
        let pod = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pcfg.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let info = pod_info(&mut rt, &pod).await;
        assert_eq!(
            rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .runtime_handler,
            handler,
            "{info}"
        );
        let c = run(
            &mut rt,
            &pod,
            &pcfg,
            container_config("c", &img.reference, &["sleep", "1000"]),
        )
        .await;
        let pid = container_pid(&mut rt, &c).await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .unwrap()
            .to_string();
        seccomp_of.push(line.split_whitespace().nth(1).unwrap().to_string());
        pods.push(pod);
    }
    assert_eq!(seccomp_of, vec!["0", "2"]);

    // The strict handler allows only the ingress-bandwidth annotation among those skiff acts on.
    let mut pcfg = pod_config("annotated", logs.path().to_str().unwrap());
    pcfg.annotations.insert(
        "seccomp.security.alpha.kubernetes.io/pod".into(),
        "runtime/default".into(),
    );
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pcfg.clone()),
            runtime_handler: "strict".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("seccomp.security.alpha.kubernetes.io/pod")
            && err.message().contains("strict"),
        "{err:?}"
    );
    // The empty table is the daemon's defaults: everything allowed.
    pods.push(
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pcfg.clone()),
            runtime_handler: "plain".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id,
    );
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("unknown", logs.path().to_str().unwrap())),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("\"kata\""), "{err:?}");
    assert!(list_pods(&mut rt).await.len() == 3);
    teardown_pods(&mut rt, pods).await;
}

/// A CRI mount of an image, as kubelet 1.35+ sends it for an `image` volume.
fn image_mount(path: &str, image: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: path.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        readonly: true,
        ..Default::default()
    }
}

/// The options of the mount at `point` in a mountinfo text (per-mount and superblock).
fn mount_options(mountinfo: &str, point: &str) -> String {
    let line = mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(point))
        .unwrap_or_else(|| panic!("no mount at {point} in\n{mountinfo}"));
    line.split(' ').nth(5).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_mount_images_read_only() {
    require_root();
    let reg = Registry::start();
    let app = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/app", "v1")
        .await;
    // Two layers (a read-only overlay; the second whites out a file of the first), and one
    // layer (a bind of the layer).
    let data = ImageBuilder::new()
        .layer(
            Layer::new()
                .dir("data", 0o755)
                .file("data/a.txt", b"one\n", 0o644)
                .file("data/gone.txt", b"whited out\n", 0o644)
                .file("data/tool", b"#!/bin/sh\necho ran\n", 0o755)
                .file("data/suid", b"#!/bin/sh\nid -u\n", 0o4755)
                .symlink("escape", "/")
                .symlink("data/up", "../../../../../.."),
            Compression::Gzip,
        )
        .layer(
            Layer::new()
                .file("data/b.txt", b"two\n", 0o644)
                .file("data/.wh.gone.txt", b"", 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "test/data", "v1")
        .await;
    let single = ImageBuilder::new()
        .layer(
            Layer::new().file("only.txt", b"single\n", 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "test/single", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    let mut img = d.images().await;
    pull(&mut img, &app.reference).await;
    let data_ref = pull(&mut img, &data.reference).await;
    let single_ref = pull(&mut img, &single.reference).await;
    let data_id = img
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: data.reference.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("data image")
        .id;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("imgvol", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;

    let mut c = container_config("c", &app.reference, &["sleep", "600"]);
    c.mounts = vec![
        image_mount("/vol", &data_ref, ""),
        image_mount("/sub", &data_ref, "data"),
        image_mount("/one", &single_ref, ""),
        image_mount("/file", &data_ref, "data/a.txt"),
        image_mount("/linked", &data_ref, "escape/data"),
    ];
    let id = run(&mut rt, &pod, &pcfg, c.clone()).await;
    assert_eq!(
        sh(
            &mut rt,
            &id,
            "cat /vol/data/a.txt /vol/data/b.txt /sub/a.txt /one/only.txt /file"
        )
        .await,
        "one\ntwo\none\nsingle\none\n"
    );
    // The upper layer's whiteout hides the lower layer's file; a sub path's symlink (`escape`
    // -> `/`) resolved inside the image, never on the host.
    assert_eq!(
        sh(&mut rt, &id, "ls /vol/data; ls /linked").await,
        "a.txt\nb.txt\nsuid\ntool\nup\na.txt\nb.txt\nsuid\ntool\nup\n"
    );
    // Read-only, noexec, nosuid, nodev, as the kernel has them.
    let mountinfo = sh(&mut rt, &id, "cat /proc/self/mountinfo").await;
    for point in ["/vol", "/sub", "/one", "/file", "/linked"] {
        let opts = mount_options(&mountinfo, point);
        for want in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(opts.split(',').any(|o| o == want), "{point}: {opts}");
        }
    }
    let w = exec(&mut rt, &id, &["sh", "-c", "echo x > /vol/new"], 10)
        .await
        .unwrap();
    assert_ne!(w.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("Read-only"),
        "{w:?}"
    );
    let x = exec(&mut rt, &id, &["sh", "-c", "/sub/tool"], 10)
        .await
        .unwrap();
    assert_ne!(x.exit_code, 0, "a tool on an image volume ran: {x:?}");
    assert!(
        String::from_utf8_lossy(&x.stderr).contains("denied"),
        "{x:?}"
    );
    // The stages live in the container's mount namespace only.
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains("image-volumes"), "{host}");

    // ContainerStatus names the image by id (kubelet's image GC reads it).
    let st = status(&mut rt, &id).await;
    let m = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/sub")
        .unwrap();
    assert_eq!(m.image.as_ref().unwrap().image, data_id);
    assert_eq!(m.image_sub_path, "data");
    assert!(m.readonly);

    // Bad requests: named, nothing left behind.
    let bad = [
        (
            image_mount("/v", &data_ref, "nope"),
            tonic::Code::NotFound,
            "image_sub_path",
        ),
        (
            image_mount("/v", &data_ref, "escape/etc"),
            tonic::Code::NotFound,
            "image_sub_path",
        ),
        (
            image_mount("/v", &data_ref, "../etc"),
            tonic::Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/v", "test/never:pulled", ""),
            tonic::Code::NotFound,
            "mounts[0].image",
        ),
        (
            Mount {
                host_path: "/etc".into(),
                ..image_mount("/v", &data_ref, "")
            },
            tonic::Code::InvalidArgument,
            "mounts[0].host_path",
        ),
    ];
    for (i, (mnt, code, field)) in bad.into_iter().enumerate() {
        let mut c = container_config(&format!("bad{i}"), &app.reference, &["true"]);
        c.mounts = vec![mnt];
        let err = create(&mut rt, &pod, &pcfg, c).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }

    // The image cannot go while a container mounts it; it can once the container is gone.
    let remove = |image: String| RemoveImageRequest {
        image: Some(ImageSpec {
            image,
            ..Default::default()
        }),
    };
    let err = img
        .remove_image(remove(data_ref.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("image volume"), "{err:?}");
    assert_eq!(sh(&mut rt, &id, "cat /sub/a.txt").await, "one\n");
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    img.remove_image(remove(data_ref.clone())).await.unwrap();
    img.remove_image(remove(single_ref.clone())).await.unwrap();
    // The failed creates held nothing: both images are gone.
    let left = img
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(left.len(), 1, "{left:?}");
    teardown_pods(&mut rt, vec![pod]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_devices_get_their_nodes_mounts_and_environment() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("Env", serde_json::json!(["PATH=/bin", "FOO=image"]))
        .push(&reg.host, "test/cdi", "v1")
        .await;
    // A device node of a number no driver has (240, local use): opening it fails with ENXIO
    // where the device cgroup lets it through, EPERM where it does not.
    let host = tempfile::tempdir().unwrap();
    let node = host.path().join("node");
    skiff_integration::mknod_char(&node, 240, 7);
    let share = host.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("file"), "shared\n").unwrap();
    let specs = host.path().join("cdi");
    std::fs::create_dir(&specs).unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "1.1.0",
        "kind": "skiff.test/dev",
        "containerEdits": {"env": ["SKIFF_CDI_SPEC=yes"]},
        "devices": [
            {"name": "one", "containerEdits": {
                "deviceNodes": [{"path": "/dev/skiff-test0", "hostPath": node, "permissions": "rw"}],
                "env": ["SKIFF_CDI=one", "FOO=cdi"],
                "mounts": [{"hostPath": share, "containerPath": "/cdi-share",
                            "options": ["ro", "nosuid", "nodev", "bind"]}]
            }},
            {"name": "netdev", "containerEdits": {
                "netDevices": [{"hostInterfaceName": "eth9", "name": "eth9"}]
            }}
        ]
    });
    std::fs::write(specs.join("skiff-test.json"), spec.to_string()).unwrap();
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!("cdi_spec_dirs = [\"{}\"]\n", specs.display())),
        &[],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("cdi", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;

    let probe = "stat -c '%F %t:%T' /dev/skiff-test0; cat /dev/skiff-test0 2>&1; \
                 echo $SKIFF_CDI $SKIFF_CDI_SPEC $FOO; env | grep -c ^FOO=; cat /cdi-share/file; \
                 touch /cdi-share/x 2>&1 | grep -c Read-only";
    let want = "character special file f0:7\ncat: can't open '/dev/skiff-test0': No such device \
                or address\none yes cdi\n1\nshared\n1\n";
    // Asked for in the field, and by a device plugin's annotation.
    let mut by_field = container_config("field", &img.reference, &["sleep", "600"]);
    by_field.cdi_devices = vec![CdiDevice {
        name: "skiff.test/dev=one".into(),
    }];
    let mut by_annotation = container_config("annotation", &img.reference, &["sleep", "600"]);
    by_annotation.annotations.insert(
        "cdi.k8s.io/skiff-test_one".into(),
        "skiff.test/dev=one".into(),
    );
    for c in [by_field, by_annotation] {
        let id = run(&mut rt, &pod, &pcfg, c).await;
        let got = exec(&mut rt, &id, &["sh", "-c", probe], 10).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout), want, "{got:?}");
    }
    // Without the device, the same node made in the container is refused by the device cgroup.
    let plain = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("plain", &img.reference, &["sleep", "600"]),
    )
    .await;
    assert_eq!(
        sh(
            &mut rt,
            &plain,
            "mknod /tmp/n c 240 7; cat /tmp/n 2>&1; true"
        )
        .await,
        "cat: can't open '/tmp/n': Operation not permitted\n"
    );

    // An unknown device and one whose edits skiff cannot carry out are refused by name.
    let cases = [
        (
            "skiff.test/dev=two",
            tonic::Code::NotFound,
            "\"skiff.test/dev=two\"",
        ),
        (
            "skiff.test/dev=netdev",
            tonic::Code::FailedPrecondition,
            "netDevices",
        ),
    ];
    for (i, (name, code, text)) in cases.into_iter().enumerate() {
        let mut c = container_config(&format!("bad{i}"), &img.reference, &["true"]);
        c.cdi_devices = vec![CdiDevice { name: name.into() }];
        let err = create(&mut rt, &pod, &pcfg, c).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains("config.cdi_devices[0]"), "{err:?}");
        assert!(err.message().contains(text), "{err:?}");
    }
    let mut c = container_config("bad-annotation", &img.reference, &["true"]);
    c.annotations
        .insert("cdi.k8s.io/x".into(), "skiff.test/dev=nope".into());
    let err = create(&mut rt, &pod, &pcfg, c).await.unwrap_err();
    assert!(err.message().contains("cdi.k8s.io/x"), "{err:?}");
    teardown_pods(&mut rt, vec![pod]).await;
}

/// A CDI device whose hooks record, for each stage, the state they read and the namespaces they
/// ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_hooks_run_at_their_stages() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/hooks", "v1")
        .await;
    let host = tempfile::tempdir().unwrap();
    let out = host.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let record = |stage: &str| {
        serde_json::json!({
            "hookName": stage, "path": "/bin/sh",
            "args": ["sh", "-c", format!(
                "cat > {0}/{stage}.json; readlink /proc/self/ns/mnt > {0}/{stage}.mnt; \
                 readlink /proc/self/ns/net > {0}/{stage}.net; \
                 readlink /proc/self/ns/pid > {0}/{stage}.pid; echo $HOOK_ENV > {0}/{stage}.env",
                out.display()
            )],
            "env": ["PATH=/usr/bin:/bin", format!("HOOK_ENV={stage}")]
        })
    };
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "skiff.test/hooks",
        "devices": [
            {"name": "all", "containerEdits": {"hooks": [
                record("prestart"), record("createRuntime"), record("createContainer"),
                record("poststart"), record("poststop"),
                // Resolved and run inside the container, after pivot_root.
                {"hookName": "startContainer", "path": "/bin/sh",
                 "args": ["sh", "-c", "cat > /tmp/startContainer.json"]}
            ]}},
            {"name": "failing", "containerEdits": {"hooks": [
                {"hookName": "createContainer", "path": "/bin/sh",
                 "args": ["sh", "-c", "echo no device for you >&2; exit 3"]}
            ]}},
            {"name": "slow", "containerEdits": {"hooks": [
                {"hookName": "createRuntime", "path": "/bin/sleep", "args": ["sleep", "60"],
                 "timeout": 1}
            ]}}
        ]
    });
    let specs = host.path().join("cdi");
    std::fs::create_dir(&specs).unwrap();
    std::fs::write(specs.join("hooks.json"), spec.to_string()).unwrap();
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!("cdi_spec_dirs = [\"{}\"]\n", specs.display())),
        &[],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    // Each container with a PID namespace of its own (kubelet's default): the runtime's hooks
    // still run in the runtime's.
    let pcfg = with_namespaces(
        pod_config("hooks", logs.path().to_str().unwrap()),
        NamespaceMode::Pod,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
    let pod = run_pod(&mut rt, &pcfg).await;
    let device = |name: &str| CdiDevice {
        name: format!("skiff.test/hooks={name}"),
    };

    let mut c = container_config("c", &img.reference, &["sleep", "600"]);
    c.cdi_devices = vec![device("all")];
    let id = run(&mut rt, &pod, &pcfg, c).await;
    let pid = container_pid(&mut rt, &id).await;
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let state = |stage: &str| -> serde_json::Value {
        serde_json::from_str(&read(&format!("{stage}.json")))
            .unwrap_or_else(|e| panic!("{stage}: {e}"))
    };
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let ctr_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let ctr_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let host_pid = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let ctr_pid = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let ns =
        |stage: &str, kind: &str| std::path::PathBuf::from(read(&format!("{stage}.{kind}")).trim());
    for (stage, status, mnt, net, pidns) in [
        ("prestart", "creating", &host_mnt, &host_net, &host_pid),
        ("createRuntime", "creating", &host_mnt, &host_net, &host_pid),
        ("createContainer", "creating", &ctr_mnt, &ctr_net, &ctr_pid),
        ("poststart", "running", &host_mnt, &host_net, &host_pid),
    ] {
        let st = state(stage);
        assert_eq!(st["status"], status, "{stage}: {st}");
        assert_eq!(st["id"], id.as_str(), "{stage}: {st}");
        assert_eq!(st["pid"], pid, "{stage}: {st}");
        assert_eq!(
            &ns(stage, "mnt"),
            mnt,
            "{stage} ran in the wrong mount namespace"
        );
        assert_eq!(
            &ns(stage, "net"),
            net,
            "{stage} ran in the wrong network namespace"
        );
        assert_eq!(
            &ns(stage, "pid"),
            pidns,
            "{stage} ran in the wrong PID namespace"
        );
        assert_eq!(read(&format!("{stage}.env")), format!("{stage}\n"));
    }
    let started: serde_json::Value =
        serde_json::from_str(&sh(&mut rt, &id, "cat /tmp/startContainer.json").await).unwrap();
    assert_eq!(started["status"], "created");
    assert_eq!(started["pid"], pid);
    assert!(!out.join("poststop.json").exists());
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let mut waited = 0;
    while !out.join("poststop.env").exists() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(state("poststop")["status"], "stopped");
    assert_eq!(ns("poststop", "mnt"), host_mnt);

    // A failing hook fails the start with its output; a hook past its timeout is killed.
    for (name, want) in [
        ("failing", "no device for you"),
        ("slow", "timed out after 1s"),
    ] {
        let mut c = container_config(name, &img.reference, &["sleep", "600"]);
        c.cdi_devices = vec![device(name)];
        let id = create(&mut rt, &pod, &pcfg, c).await.unwrap();
        let began = std::time::Instant::now();
        let err = match start(&mut rt, &id).await {
            Ok(()) => panic!("{name}: started: {:?}", status(&mut rt, &id).await),
            Err(e) => e,
        };
        assert!(err.message().contains(want), "{name}: {err:?}");
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{name}: {:?}",
            began.elapsed()
        );
        let st = status(&mut rt, &id).await;
        assert_eq!(
            st.state,
            ContainerState::ContainerExited as i32,
            "{name}: {st:?}"
        );
    }
    teardown_pods(&mut rt, vec![pod]).await;
}
