//! Pods with their own user namespace (`hostUsers: false`): root inside is an unprivileged id
//! on the host, image layers are idmapped rather than copied or chowned, volumes are idmapped,
//! and bad mappings are refused. Observed from the kernel (/proc, stat) and over the socket.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::security_profile::ProfileType;
use skiff_proto::cri::*;

const LEN: u32 = 65536;

struct Env {
    _reg: Registry,
    d: Skiffd,
    rt: Rt,
    image: String,
    logs: tempfile::TempDir,
}

/// busybox, a few more applets, and files owned by root and by 1000 in the image.
async fn env() -> Env {
    env_with(None).await
}

async fn env_with(config: Option<&str>) -> Env {
    require_root();
    let reg = Registry::start();
    let mut extra = Layer::new()
        .dir("bin", 0o755)
        .dir("data", 0o755)
        .file_owned("data/by-root", b"root's\n", 0o644, 0, 0, 1_600_000_000)
        .file_owned("data/by-1000", b"app's\n", 0o600, 1000, 1000, 1_600_000_000);
    for applet in ["stat", "touch", "chmod", "grep", "hostname", "kill"] {
        extra = extra.symlink(&format!("bin/{applet}"), "busybox");
    }
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(extra, Compression::Gzip)
        .push(&reg.host, "test/userns", "v1")
        .await;
    let d = Skiffd::start_with(&[&reg.host], config, &[]);
    pull(&mut d.images().await, &img.reference).await;
    let rt = d.runtime().await;
    Env {
        _reg: reg,
        d,
        rt,
        image: img.reference,
        logs: tempfile::tempdir().unwrap(),
    }
}

fn mapping(host: u32) -> Vec<IdMapping> {
    vec![IdMapping {
        host_id: host,
        container_id: 0,
        length: LEN,
    }]
}

fn userns_pod(e: &Env, name: &str, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> PodSandboxConfig {
    let mut c = pod_config(name, e.logs.path().to_str().unwrap());
    let sc = c
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    sc.namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }),
        ..Default::default()
    });
    c
}

/// The namespace options of a [`userns_pod`].
fn namespace_options(c: &mut PodSandboxConfig) -> &mut NamespaceOption {
    c.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("a userns_pod has namespace options")
}

async fn sleeper(
    e: &mut Env,
    pod: &str,
    pcfg: &PodSandboxConfig,
    name: &str,
    mounts: Vec<Mount>,
) -> String {
    let mut c = container_config(name, &e.image, &["sleep", "3600"]);
    c.mounts = mounts;
    run(&mut e.rt, pod, pcfg, c).await
}

fn volume(host: &Path, container: &str) -> Mount {
    Mount {
        container_path: container.into(),
        host_path: host.display().to_string(),
        ..Default::default()
    }
}

/// Runs `sh -c script` in the container: (exit code, stdout + stderr).
async fn try_sh(e: &mut Env, id: &str, script: &str) -> (i32, String) {
    let r = exec(&mut e.rt, id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out.trim().to_string())
}

/// The unpacked directory of the image's top layer.
async fn top_layer(e: &Env) -> PathBuf {
    let mut img = e.d.images().await;
    let r = img
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: e.image.clone(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    let top = info["chainIDs"].as_array().unwrap().last().unwrap();
    e.d.layer_dir(top.as_str().unwrap())
}

fn first_field(s: &str) -> String {
    s.split_whitespace().next().unwrap_or("").to_string()
}

/// A container's root is root inside with the default capabilities, and the mapped id on the
/// host; image files keep their owners inside, are the mapped ids on the host, and the layer
/// on disk is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_is_the_mapped_id_outside_and_layers_are_idmapped() {
    let mut e = env().await;
    let base = 200_000;
    let status =
        e.rt.status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let features = status.runtime_handlers[0].features.unwrap();
    assert!(features.user_namespaces, "Status reports user namespaces");

    // The unpacked layer file before any pod: owner and inode.
    let layer_file = top_layer(&e).await.join("data/by-1000");
    let before = std::fs::metadata(&layer_file).unwrap();
    assert_eq!(before.uid(), 1000);

    let pcfg = userns_pod(&e, "userns", mapping(base), mapping(base));
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let mut c = container_config("app", &e.image, &["sleep", "3600"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        security_context: Some(LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    let id = run(&mut e.rt, &pod, &pcfg, c).await;
    let pid = container_pid(&mut e.rt, &id).await;
    // Seccomp (RuntimeDefault) and the memory limit hold inside the user namespace too.
    assert_eq!(proc_status(pid, "Seccomp"), "2");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mem = cg
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("memory cgroup");
    let limit =
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes"))
            .unwrap();
    assert_eq!(limit.trim(), (32u64 << 20).to_string());
    // Delegated to the pod's root: the directory and cgroup.procs, not the limits.
    let dir = PathBuf::from(format!("/sys/fs/cgroup/memory{mem}"));
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), base);
    assert_eq!(
        std::fs::metadata(dir.join("cgroup.procs")).unwrap().uid(),
        base
    );
    assert_eq!(
        std::fs::metadata(dir.join("memory.limit_in_bytes"))
            .unwrap()
            .uid(),
        0
    );
    let userns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_ne!(userns, std::fs::read_link("/proc/self/ns/user").unwrap());
    let host_uids = proc_status(pid, "Uid");
    assert_eq!(host_uids, format!("{base}\t{base}\t{base}\t{base}"));
    assert_eq!(first_field(&proc_status(pid, "Gid")), base.to_string());
    let (code, out) = try_sh(&mut e, &id, "id").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");
    let (_, caps) = try_sh(&mut e, &id, "grep CapEff /proc/self/status").await;
    assert_eq!(
        caps, "CapEff:\t00000000a80425fb",
        "the default capabilities, inside"
    );

    // Image files: owners as in the image inside, mapped on the host, never chowned.
    let (code, out) = try_sh(&mut e, &id, "stat -c '%u:%g' /data/by-root /data/by-1000").await;
    assert_eq!((code, out.as_str()), (0, "0:0\n1000:1000"));
    let via_proc = PathBuf::from(format!("/proc/{pid}/root/data/by-1000"));
    let seen = std::fs::metadata(&via_proc).unwrap();
    assert_eq!((seen.uid(), seen.gid()), (base + 1000, base + 1000));
    let after = std::fs::metadata(&layer_file).unwrap();
    assert_eq!(
        (after.uid(), after.ino()),
        (1000, before.ino()),
        "layer file untouched"
    );
    // The container's own files (its upper dir) belong to its root on the host.
    let (code, _) = try_sh(&mut e, &id, "touch /created && chmod 600 /data/by-1000").await;
    assert_eq!(code, 0);
    let created = std::fs::metadata(format!("/proc/{pid}/root/created")).unwrap();
    assert_eq!(created.uid(), base);
    // A host file of the real root (the pod's /etc/hostname) is not the pod root's to change.
    let (code, out) = try_sh(
        &mut e,
        &id,
        "stat -c %u /etc/hostname; echo x > /etc/hostname",
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.starts_with("65534"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");

    // The pod's /dev/shm was made inside its user namespace: its root's.
    let (code, out) = try_sh(
        &mut e,
        &id,
        "echo x > /dev/shm/f && stat -c %u /dev/shm /dev/shm/f",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "0\n0"));
    let shm_file = format!("/proc/{pid}/root/dev/shm/f");
    assert_eq!(std::fs::metadata(&shm_file).unwrap().uid(), base);

    // Removing the pod leaves no process in its user namespace, no pinned namespace, no dir.
    e.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    e.rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let mut left = vec![];
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if std::fs::read_link(p.path().join("ns/user")).ok().as_ref() == Some(&userns) {
            left.push(p.file_name());
        }
    }
    let info: Vec<String> = left
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{}/status", p.to_string_lossy()))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    ["Name", "State", "PPid", "NSpid"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(
        left.is_empty(),
        "processes left in the pod's user namespace: {info:?}"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&pod), "{mountinfo}");
    assert!(!e.d.run_root.join("pods").join(&pod).exists());
}

/// Volumes are idmapped: what the container writes is owned on the host by the container-side
/// ids; another pod with another range cannot touch the first pod's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_idmapped_and_pods_are_apart() {
    let mut e = env().await;
    let vol = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        vol.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let a_cfg = userns_pod(&e, "pod-a", mapping(300_000), mapping(300_000));
    let a = run_pod(&mut e.rt, &a_cfg).await;
    // A volume with mappings of its own, as kubelet may send them: here the pod's root is
    // 1000 on disk (and the directory, 1000's on the host, is its).
    let own_dir = vol.path().join("own");
    std::fs::create_dir(&own_dir).unwrap();
    std::os::unix::fs::chown(&own_dir, Some(1000), Some(1000)).unwrap();
    let own = Mount {
        uid_mappings: vec![IdMapping {
            host_id: 300_000,
            container_id: 1000,
            length: 1,
        }],
        gid_mappings: vec![IdMapping {
            host_id: 300_000,
            container_id: 1000,
            length: 1,
        }],
        ..volume(&own_dir, "/vol-own")
    };
    let a_id = sleeper(
        &mut e,
        &a,
        &a_cfg,
        "a",
        vec![volume(vol.path(), "/vol"), own],
    )
    .await;
    let (code, out) = try_sh(
        &mut e,
        &a_id,
        "touch /vol-own/by-own && stat -c %u /vol-own/by-own",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "0"), "root inside");
    assert_eq!(
        std::fs::metadata(own_dir.join("by-own")).unwrap().uid(),
        1000
    );
    let (code, out) = try_sh(
        &mut e,
        &a_id,
        "echo hi > /vol/by-root && touch /vol/by-app && chown 1000:1000 /vol/by-app && \
         stat -c %u /vol/by-root && echo secret > /tmp/secret && chmod 600 /tmp/secret",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "0"));
    let by_root = std::fs::metadata(vol.path().join("by-root")).unwrap();
    assert_eq!(
        (by_root.uid(), by_root.gid()),
        (0, 0),
        "container-side ids on the host"
    );
    assert_eq!(
        std::fs::metadata(vol.path().join("by-app")).unwrap().uid(),
        1000
    );

    // Pod B, another range, gets pod A's rootfs as a volume: A's files are not B's.
    let a_pid = container_pid(&mut e.rt, &a_id).await;
    let a_tmp = PathBuf::from(format!("/proc/{a_pid}/root/tmp"));
    assert_eq!(
        std::fs::metadata(a_tmp.join("secret")).unwrap().uid(),
        300_000
    );
    let b_cfg = userns_pod(&e, "pod-b", mapping(400_000), mapping(400_000));
    let b = run_pod(&mut e.rt, &b_cfg).await;
    let a_upper = e.d.root.join("containers").join(&a_id).join("upper");
    let b_id = sleeper(&mut e, &b, &b_cfg, "b", vec![volume(&a_upper, "/other")]).await;
    let (code, out) = try_sh(
        &mut e,
        &b_id,
        "stat -c %u /other/tmp/secret; cat /other/tmp/secret",
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.starts_with("65534"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    let (code, _) = try_sh(&mut e, &b_id, "echo x >> /other/tmp/secret").await;
    assert_ne!(code, 0);
    assert_eq!(
        std::fs::read_to_string(a_tmp.join("secret")).unwrap(),
        "secret\n"
    );

    // A host filesystem that cannot be idmapped (sysfs) is refused, naming the mount.
    let mut c = container_config("sysfs", &e.image, &["true"]);
    c.mounts = vec![volume(Path::new("/sys/kernel"), "/hostsys")];
    let id = create(&mut e.rt, &b, &b_cfg, c)
        .await
        .expect("CreateContainer");
    let err = start(&mut e.rt, &id).await.unwrap_err();
    assert!(err.message().contains("/sys/kernel"), "{}", err.message());
    assert!(
        err.message().contains("cannot be idmapped"),
        "{}",
        err.message()
    );
}

/// Mappings kubelet could never send are refused by field, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mappings_are_refused() {
    let mut e = env().await;
    let r = |c: u32, h: u32, l: u32| IdMapping {
        container_id: c,
        host_id: h,
        length: l,
    };
    let cases: Vec<(Vec<IdMapping>, Vec<IdMapping>, &str)> = vec![
        (vec![], mapping(500_000), "uids: no mapping"),
        (
            mapping(500_000),
            vec![r(0, 500_000, 0)],
            "gids[0]: length is 0",
        ),
        (
            vec![r(0, u32::MAX - 10, LEN)],
            mapping(500_000),
            "uids[0]: host_id",
        ),
        (
            vec![r(0, 500_000, 100), r(50, 600_000, 100)],
            mapping(500_000),
            "container id ranges overlap",
        ),
        (
            vec![r(0, 0, LEN)],
            mapping(500_000),
            "maps to the host's root",
        ),
        (vec![r(1, 500_000, 10)], mapping(500_000), "container id 0"),
    ];
    for (i, (uids, gids, want)) in cases.into_iter().enumerate() {
        let cfg = userns_pod(&e, &format!("bad{i}"), uids, gids);
        let err = run_pod_err(&mut e.rt, cfg).await;
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{want}: {err:?}");
        assert!(
            err.message().contains("userns_options"),
            "{}",
            err.message()
        );
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    // A user namespace cannot go with the host's network.
    let mut cfg = userns_pod(&e, "hostnet", mapping(500_000), mapping(500_000));
    namespace_options(&mut cfg).network = NamespaceMode::Node as i32;
    let err = run_pod_err(&mut e.rt, cfg).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("network"), "{}", err.message());
    let pods = list_pods(&mut e.rt).await;
    assert!(pods.is_empty(), "{pods:?}");
    let left: Vec<_> = std::fs::read_dir(e.d.run_root.join("pods"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `userns_rootfs = "chown"`: the container gets its own chowned copy of the layers (the image's
/// stay as they are), the same view inside, and skiffd says it took the slow path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chown_fallback_copies_layers_only_when_configured() {
    let mut e = env_with(Some("userns_rootfs = \"chown\"\n")).await;
    let base = 500_000;
    let pcfg = userns_pod(&e, "chowned", mapping(base), mapping(base));
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let id = sleeper(&mut e, &pod, &pcfg, "app", vec![]).await;
    let (code, out) = try_sh(
        &mut e,
        &id,
        "id -u; stat -c '%u:%g' /data/by-root /data/by-1000",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "0\n0:0\n1000:1000"));
    let pid = container_pid(&mut e.rt, &id).await;
    let seen = std::fs::metadata(format!("/proc/{pid}/root/data/by-1000")).unwrap();
    assert_eq!(seen.uid(), base + 1000);
    let copy = e.d.root.join("containers").join(&id).join("lower");
    let copied: Vec<_> = std::fs::read_dir(&copy).unwrap().flatten().collect();
    assert_eq!(copied.len(), 2, "one copy per layer");
    assert!(e
        .d
        .log_text()
        .contains("copied and chowned the image layers"));
    // The image's own layers were not touched.
    let layer = top_layer(&e).await;
    assert_eq!(
        std::fs::metadata(layer.join("data/by-1000")).unwrap().uid(),
        1000
    );
    // Removing the container removes its copy.
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    e.rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(!copy.exists());
}

/// procMount as kubelet asks for it in a pod with a user namespace: Default comes with kubelet's
/// lists of masked and read-only paths, Unmasked with empty ones, and /proc is then not masked
/// (mountinfo shows no mount over its files) nor read-only in parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_mount_default_and_unmasked() {
    let mut e = env().await;
    let pcfg = userns_pod(&e, "procmount", mapping(400_000), mapping(400_000));
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let with_paths = |name: &str, masked: &[&str], readonly: &[&str]| {
        let mut c = container_config(name, &e.image, &["sleep", "3600"]);
        let sc = c
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default);
        sc.masked_paths = masked.iter().map(|s| s.to_string()).collect();
        sc.readonly_paths = readonly.iter().map(|s| s.to_string()).collect();
        c
    };
    let default = run(
        &mut e.rt,
        &pod,
        &pcfg,
        with_paths(
            "default",
            &["/proc/timer_list", "/proc/keys"],
            &["/proc/sys"],
        ),
    )
    .await;
    let unmasked = run(&mut e.rt, &pod, &pcfg, with_paths("unmasked", &[], &[])).await;
    let mounts_under_proc = |pid: i32| -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with("/proc/"))
            .collect()
    };
    let d = mounts_under_proc(container_pid(&mut e.rt, &default).await);
    for m in ["/proc/timer_list", "/proc/keys", "/proc/sys"] {
        assert!(d.iter().any(|x| x == m), "{m} not in {d:?}");
    }
    let u = mounts_under_proc(container_pid(&mut e.rt, &unmasked).await);
    assert!(
        u.is_empty(),
        "an unmasked /proc has no mounts over it: {u:?}"
    );
    // /proc/sys is read-only under Default (its mount's options, as the kernel lists them).
    let info = std::fs::read_to_string(format!(
        "/proc/{}/mountinfo",
        container_pid(&mut e.rt, &default).await
    ))
    .unwrap();
    let sys = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/proc/sys"))
        .expect("/proc/sys mount");
    assert!(
        sys.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
    teardown_pods(&mut e.rt, vec![pod]).await;
}

/// kubelet's default for a pod with a user namespace: each container has a PID namespace of its
/// own, belonging to the pod's user namespace, so the container's root mounts its /proc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_pid_namespace_belongs_to_the_pods_user_namespace() {
    let mut e = env().await;
    let mut pcfg = userns_pod(&e, "pidctr", mapping(600_000), mapping(600_000));
    namespace_options(&mut pcfg).pid = NamespaceMode::Container as i32;
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let id = sleeper(&mut e, &pod, &pcfg, "c", vec![]).await;
    let pid = container_pid(&mut e.rt, &id).await;
    assert!(
        proc_status(pid, "NSpid").ends_with("\t1"),
        "{}",
        proc_status(pid, "NSpid")
    );
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "600000", &LEN.to_string()]
    );
    let (code, out) = try_sh(&mut e, &id, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sleep 3600"), "{out}");
    teardown_pods(&mut e.rt, vec![pod]).await;
}
