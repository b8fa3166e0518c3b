//! Pods and containers end to end, observed from the kernel: /proc, mountinfo, cgroup files,
//! the CRI log file.

mod common;

use std::time::Duration;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

struct Env {
    _reg: Registry,
    d: Skiffd,
    rt: Rt,
    image: String,
    logs: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(None).await
}

/// A skiffd with `config` (e.g. another shim binary) and the test image pulled.
async fn env_with(config: Option<&str>) -> Env {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("Env", serde_json::json!(["PATH=/bin", "FROM_IMAGE=yes"]))
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let d = Skiffd::start_with(&[&reg.host], config, &[]);
    let mut images = d.images().await;
    pull(&mut images, &img.reference).await;
    let rt = d.runtime().await;
    Env {
        _reg: reg,
        d,
        rt,
        image: img.reference,
        logs: tempfile::tempdir().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_and_exits_with_its_code_and_output() {
    let mut e = env().await;
    let pcfg = pod_config("smoke", e.logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let mut c = container_config(
        "echo",
        &e.image,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    c.envs.push(KeyValue {
        key: "X".into(),
        value: "1".into(),
    });
    let id = run(&mut e.rt, &pod, &pcfg, c).await;
    let s = wait_exited(&mut e.rt, &id, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    let recs = log_records(&e.logs.path().join("echo/0.log"));
    assert!(recs.contains(&stdout_line("out")), "{recs:?}");
    assert!(
        recs.contains(&("stderr".into(), "F".into(), "err".into())),
        "{recs:?}"
    );
    drop(e.d);
}

/// Creates and starts a `sleep 1000` container named `c` in `pod`.
async fn sleeper(e: &mut Env, pod: &str, pcfg: &PodSandboxConfig) -> String {
    let cfg = container_config("c", &e.image, &["sleep", "1000"]);
    run(&mut e.rt, pod, pcfg, cfg).await
}

/// A whole line `text` on stdout, as `log_records` lists a CRI log's records.
fn stdout_line(text: &str) -> (String, String, String) {
    ("stdout".into(), "F".into(), text.into())
}

fn ns_of(pid: i32, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_env_user_and_working_dir_from_image_and_request() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox().dir("home", 0o755), Compression::Gzip)
        .config("User", "app".into())
        .config("WorkingDir", "/home/app".into())
        .config(
            "Env",
            serde_json::json!(["PATH=/bin", "A=image", "B=image"]),
        )
        .config("Entrypoint", serde_json::json!(["sh", "-c"]))
        .config("Cmd", serde_json::json!(["echo default"]))
        .push(&reg.host, "test/user", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("user", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;

    // The image's entrypoint with the request's args; image env overridden by the request.
    let mut c = container_config("who", &img.reference, &[]);
    c.args = vec!["echo \"$A $B\"; id -u; id -g; id -G; pwd; sleep 30".into()];
    c.envs = vec![KeyValue {
        key: "A".into(),
        value: "request".into(),
    }];
    let id = run(&mut rt, &pod, &pcfg, c).await;
    let pid = container_pid(&mut rt, &id).await;
    // The kernel's view of the process, from the host.
    assert_eq!(
        proc_status(pid, "Uid").split_whitespace().next(),
        Some("1000")
    );
    assert_eq!(
        proc_status(pid, "Gid").split_whitespace().next(),
        Some("1000")
    );
    assert_eq!(proc_status(pid, "Groups"), "2000");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out: Vec<String> = log_records(&logs.path().join("who/0.log"))
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(
        out,
        vec!["request image", "1000", "1000", "1000 2000", "/home/app"]
    );
    let s = status(&mut rt, &id).await;
    let u = s.user.unwrap().linux.unwrap();
    assert_eq!(
        (u.uid, u.gid, u.supplemental_groups),
        (1000, 1000, vec![1000, 2000]),
        "as `id -G` lists them: the primary group first"
    );

    // run_as_user/run_as_group and working_dir from the request win.
    let mut c = container_config("root", &img.reference, &["sh", "-c", "id -u; id -g; pwd"]);
    c.working_dir = "/tmp/made".into();
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 0 }),
            run_as_group: Some(Int64Value { value: 42 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, &pcfg, c).await;
    assert_eq!(
        wait_exited(&mut rt, &id, Duration::from_secs(10))
            .await
            .exit_code,
        0
    );
    let out: Vec<String> = log_records(&logs.path().join("root/0.log"))
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(out, vec!["0", "42", "/tmp/made"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_namespace_modes() {
    let mut e = env().await;
    let logs = e.logs.path().to_str().unwrap().to_string();
    // POD: one PID namespace, the shim is its PID 1, containers see each other.
    let pcfg = with_namespaces(
        pod_config("pidpod", &logs),
        NamespaceMode::Pod,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let a = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("a", &e.image, &["sleep", "1001"]),
    )
    .await;
    let b = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("b", &e.image, &["sleep", "1002"]),
    )
    .await;
    let seen = sh(&mut e.rt, &b, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(seen.contains("sleep 1001"), "{seen}");
    let pid1 = sh(&mut e.rt, &a, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert!(
        pid1.contains("skiff-shim"),
        "PID 1 of the pod is its shim: {pid1}"
    );
    let (pa, pb) = (
        container_pid(&mut e.rt, &a).await,
        container_pid(&mut e.rt, &b).await,
    );
    assert_eq!(ns_of(pa, "pid"), ns_of(pb, "pid"));
    assert_ne!(ns_of(pa, "pid"), ns_of(std::process::id() as i32, "pid"));
    // The first container's process is the first the shim started in the pod: PID 2 there
    // (init forks no further process when it is in the pod's PID namespace already).
    let nspid = proc_status(pa, "NSpid");
    assert_eq!(nspid.split_whitespace().last(), Some("2"), "{nspid}");
    for ns in ["net", "ipc", "uts"] {
        assert_eq!(ns_of(pa, ns), ns_of(pb, ns), "{ns} shared in the pod");
        assert_ne!(
            ns_of(pa, ns),
            ns_of(std::process::id() as i32, ns),
            "{ns} is the pod's own"
        );
    }
    assert_ne!(
        ns_of(pa, "mnt"),
        ns_of(pb, "mnt"),
        "each container has its own mounts"
    );
    // In the node's mount table the pod holds its network namespace's pin only (its /dev/shm
    // lives in a mount namespace of its shim's): every container's new mount namespace copies
    // that table, so mounts per pod there would make each start slower the more pods run.
    let mut mine: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.contains(&format!("/pods/{pod}/")))
        .map(|mp| {
            mp.rsplit(&format!("/pods/{pod}/"))
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    mine.sort();
    assert_eq!(mine, ["ns/net"], "the pod's mounts on the node");

    // CONTAINER: each container its own PID namespace; it is PID 1 there.
    let pcfg = with_namespaces(
        pod_config("pidctr", &logs),
        NamespaceMode::Pod,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let a = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("a", &e.image, &["sleep", "1003"]),
    )
    .await;
    let b = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("b", &e.image, &["sleep", "1004"]),
    )
    .await;
    let seen = sh(&mut e.rt, &b, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(!seen.contains("sleep 1003"), "{seen}");
    assert!(seen.contains("sleep 1004"), "{seen}");
    let pid1 = sh(&mut e.rt, &a, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert!(pid1.contains("sleep 1003"), "{pid1}");
    let (pa, pb) = (
        container_pid(&mut e.rt, &a).await,
        container_pid(&mut e.rt, &b).await,
    );
    assert_ne!(ns_of(pa, "pid"), ns_of(pb, "pid"));
    // The PID the runtime reports is the container's process, PID 1 there, a child of the
    // pod's shim; its exit reaches ContainerStatus.
    for (p, cmd) in [(pa, "sleep 1003"), (pb, "sleep 1004")] {
        let cmdline = |p: i32| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        };
        assert!(cmdline(p).contains(cmd), "{p}: {}", cmdline(p));
        assert!(
            proc_status(p, "NSpid").ends_with("\t1"),
            "{}",
            proc_status(p, "NSpid")
        );
        let parent: i32 = proc_status(p, "PPid").trim().parse().unwrap();
        assert!(
            cmdline(parent).contains("skiff-shim pod "),
            "{parent}: {}",
            cmdline(parent)
        );
    }
    e.rt.stop_container(StopContainerRequest {
        container_id: a.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let st = status(&mut e.rt, &a).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "{st:?}");

    // NODE: host PID, network, IPC namespaces.
    let pcfg = with_namespaces(
        pod_config("node", &logs),
        NamespaceMode::Node,
        NamespaceMode::Node,
        NamespaceMode::Node,
    );
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let a = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("a", &e.image, &["sleep", "1005"]),
    )
    .await;
    let pa = container_pid(&mut e.rt, &a).await;
    let me = std::process::id() as i32;
    for ns in ["pid", "net", "ipc", "uts"] {
        assert_eq!(ns_of(pa, ns), ns_of(me, ns), "{ns} is the host's");
    }
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(
        sh(&mut e.rt, &a, "hostname").await.trim(),
        host.to_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_resolv_conf_hosts_loopback_sysctls_and_shm() {
    let mut e = env().await;
    let mut pcfg = pod_config("files", e.logs.path().to_str().unwrap());
    pcfg.hostname = "web-0".into();
    pcfg.linux.as_mut().unwrap().sysctls = [
        (
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        ),
        ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
    ]
    .into();
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let a = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("a", &e.image, &["sleep", "100"]),
    )
    .await;
    let b = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("b", &e.image, &["sleep", "100"]),
    )
    .await;
    assert_eq!(sh(&mut e.rt, &a, "hostname").await.trim(), "web-0");
    assert_eq!(sh(&mut e.rt, &a, "cat /etc/hostname").await.trim(), "web-0");
    assert_eq!(
        sh(&mut e.rt, &a, "cat /etc/resolv.conf").await,
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(sh(&mut e.rt, &a, "cat /etc/hosts")
        .await
        .contains("localhost"));
    assert_eq!(
        sh(&mut e.rt, &a, "cat /sys/class/net/lo/operstate")
            .await
            .trim(),
        "unknown"
    );
    let flags = sh(&mut e.rt, &a, "cat /sys/class/net/lo/flags").await;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up");
    assert_eq!(
        sh(
            &mut e.rt,
            &a,
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )
        .await
        .trim(),
        "0"
    );
    assert_eq!(
        sh(&mut e.rt, &a, "cat /proc/sys/kernel/shm_rmid_forced")
            .await
            .trim(),
        "1"
    );
    // The host's values are untouched.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .unwrap()
            .trim(),
        "0"
    );
    // /dev/shm is a tmpfs (nosuid, nodev, noexec, 64 MiB) shared by the pod's containers, and
    // not on the node: the pod's shm directory there stays an empty mount point of nothing.
    let shm = sh(&mut e.rt, &a, "cat /proc/self/mountinfo").await;
    let line = shm
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/dev/shm"))
        .unwrap_or_else(|| panic!("no /dev/shm in {shm}"));
    assert!(line.contains(" - tmpfs "), "{line}");
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(
            line.split(' ').nth(5).unwrap().contains(flag),
            "{flag}: {line}"
        );
    }
    assert!(line.contains("size=65536k"), "{line}");
    sh(&mut e.rt, &a, "echo shared > /dev/shm/x").await;
    assert_eq!(sh(&mut e.rt, &b, "cat /dev/shm/x").await.trim(), "shared");
    let on_node = e.d.run_root.join("pods").join(&pod).join("shm");
    assert_eq!(std::fs::read_dir(&on_node).unwrap().count(), 0);

    // A sysctl that is not namespaced is refused, naming it; nothing is left.
    let mut bad = pod_config("badsysctl", e.logs.path().to_str().unwrap());
    bad.linux.as_mut().unwrap().sysctls = [("kernel.panic".to_string(), "1".to_string())].into();
    let err =
        e.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("kernel.panic"), "{}", err.message());
    let pods =
        e.rt.list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
    assert_eq!(pods.len(), 1);
    // A cgroup_parent that climbs out of the hierarchy is refused by field.
    let mut bad = pod_config("badcg", e.logs.path().to_str().unwrap());
    bad.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../../etc".into();
    let err =
        e.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cgroup_parent"), "{}", err.message());
    // The same name/namespace/uid/attempt is refused while the first pod exists.
    let err =
        e.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pcfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&pod), "{}", err.message());
}

/// A pod that names no hostname gets the node's, as with containerd and CRI-O, whatever the
/// length of its name (critest names pods `create-PodSandbox-for-container-<uuid>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_hostname_gets_the_nodes() {
    let mut e = env().await;
    let name = format!(
        "create-PodSandbox-for-container-{}",
        "0123456789abcdef".repeat(3)
    );
    assert!(name.len() > 64);
    let mut pcfg = pod_config(&name, e.logs.path().to_str().unwrap());
    pcfg.hostname = String::new();
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let a = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("a", &e.image, &["sleep", "1000"]),
    )
    .await;
    let host = nix::unistd::gethostname().unwrap();
    let host = host.to_str().unwrap();
    let pa = container_pid(&mut e.rt, &a).await;
    assert_ne!(ns_of(pa, "uts"), ns_of(std::process::id() as i32, "uts"));
    assert_eq!(sh(&mut e.rt, &a, "hostname").await.trim(), host);
    assert_eq!(sh(&mut e.rt, &a, "cat /etc/hostname").await.trim(), host);
}

/// StopPodSandbox and StopContainer are idempotent: an id that does not exist (any more) is
/// stopped already. An empty id is still refused by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_unknown_pods_and_containers_succeeds() {
    let mut e = env().await;
    let gone = "f".repeat(64);
    e.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: gone.clone(),
    })
    .await
    .expect("StopPodSandbox of an unknown id");
    e.rt.stop_container(StopContainerRequest {
        container_id: gone,
        timeout: 10,
    })
    .await
    .expect("StopContainer of an unknown id");
    let err =
        e.rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // A removed pod and container stop again.
    let pcfg = pod_config("gone", e.logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let c = sleeper(&mut e, &pod, &pcfg).await;
    teardown_pods(&mut e.rt, vec![pod.clone()]).await;
    e.rt.stop_container(StopContainerRequest {
        container_id: c,
        timeout: 0,
    })
    .await
    .expect("StopContainer of a removed container");
    e.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("StopPodSandbox of a removed pod");
}

/// An idle shim gives its code pages back: half a second after its last request its resident
/// file pages drop, and it goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shim_gives_its_code_pages_back() {
    let mut e = env().await;
    let pcfg = pod_config("idle", e.logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let c = sleeper(&mut e, &pod, &pcfg).await;
    let shim = shim_pid(&mut e.rt, &pod).await;
    let rss_file = || {
        proc_status(shim, "RssFile")
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    // A request runs the exec path; right after it the code it ran is resident.
    assert_eq!(sh(&mut e.rt, &c, "echo hi").await, "hi\n");
    let busy = rss_file();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = rss_file();
    assert!(
        idle * 2 < busy,
        "shim RssFile {busy} kB busy, {idle} kB idle"
    );
    assert_eq!(sh(&mut e.rt, &c, "echo again").await, "again\n");
    teardown_pods(&mut e.rt, vec![pod]).await;
}

/// Whether the ELF image `exe` asks for a program interpreter (a PT_INTERP program header).
fn has_interpreter(exe: &[u8]) -> bool {
    assert_eq!(&exe[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([exe[o], exe[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(exe[32..40].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(54), u16_at(56));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(exe[at..at + 4].try_into().unwrap()) == 3
    })
}

/// The shim as deployed (`cargo build --profile shim -p skiff-shim --target
/// x86_64-unknown-linux-musl`, which the test command builds): the pod's shim process runs
/// that binary, statically linked (no interpreter, no shared object mapped) and without glibc,
/// whose start-up probing of the CPU's caches costs about 1 ms of CPU per exec in a VM; pods
/// work through it: output, exit codes, exec, the idle shim's RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_shim_is_static_musl_and_runs_pods() {
    let shim_cfg = skiff_integration::deployed_shim_config();
    let mut e = env_with(Some(&shim_cfg)).await;
    let pcfg = pod_config("deployed", e.logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    let shim = shim_pid(&mut e.rt, &pod).await;
    let exe = std::fs::read(format!("/proc/{shim}/exe")).unwrap();
    assert!(
        !has_interpreter(&exe),
        "the running shim has an interpreter"
    );
    assert!(
        !exe.windows(13).any(|w| w == b"GNU C Library"),
        "the running shim is linked with glibc"
    );
    let maps = std::fs::read_to_string(format!("/proc/{shim}/maps")).unwrap();
    assert!(!maps.contains(".so"), "{maps}");
    let id = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("exits", &e.image, &["sh", "-c", "echo out; exit 3"]),
    )
    .await;
    assert_eq!(
        wait_exited(&mut e.rt, &id, Duration::from_secs(10))
            .await
            .exit_code,
        3
    );
    let recs = log_records(&e.logs.path().join("exits/0.log"));
    assert!(recs.contains(&stdout_line("out")), "{recs:?}");
    let c = sleeper(&mut e, &pod, &pcfg).await;
    assert_eq!(sh(&mut e.rt, &c, "echo hi").await, "hi\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_kib: u64 = proc_status(shim, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(rss_kib < 2048, "idle deployed shim VmRSS {rss_kib} kB");
    teardown_pods(&mut e.rt, vec![pod]).await;
}

/// A run root far longer than a unix socket address can hold (108 bytes with the pod's
/// directory and socket name): pods still start, their shims answer, and they go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_under_a_long_run_root() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let top = tempfile::tempdir().unwrap();
    let run_root = top.path().join("skiff-conformance.AbC123").join("run");
    assert!(run_root.as_os_str().len() > 33);
    let d = Skiffd::start_with(
        &[&reg.host],
        None,
        &["--run-root", run_root.to_str().unwrap()],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("longroot", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let sock = run_root.join("pods").join(&pod).join("shim.sock");
    assert!(sock.as_os_str().len() >= 108, "{}", sock.display());
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("c", &img.reference, &["sleep", "1000"]),
    )
    .await;
    assert_eq!(sh(&mut rt, &c, "echo hi").await, "hi\n");
    teardown_pods(&mut rt, vec![pod.clone()]).await;
    assert!(!run_root.join("pods").join(&pod).exists());
}

/// A NUL byte in any of the pod's strings that reach the kernel or CNI plugins is refused by
/// field, and leaves no pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_are_refused_by_field() {
    let mut e = env().await;
    let logs = e.logs.path().to_str().unwrap().to_string();
    type Edit = Box<dyn Fn(&mut PodSandboxConfig)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c.metadata.as_mut().unwrap().name = "a\0b".into()),
            "config.metadata.name",
        ),
        (
            Box::new(|c| c.metadata.as_mut().unwrap().namespace = "ns\0".into()),
            "config.metadata.namespace",
        ),
        (Box::new(|c| c.hostname = "h\0".into()), "config.hostname"),
        (
            Box::new(|c| c.dns_config.as_mut().unwrap().searches.push("x\0y".into())),
            "config.dns_config",
        ),
    ];
    for (edit, field) in cases {
        let mut c = pod_config("nul", &logs);
        edit(&mut c);
        let err = run_pod_err(&mut e.rt, c).await;
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let left =
        e.rt.list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
    assert!(left.is_empty(), "{left:?}");
}
