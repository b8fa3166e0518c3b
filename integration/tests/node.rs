//! Tests that run inside the node VM (`integration/vm/node-tests`): Debian 13 with systemd as
//! PID 1 and cgroup v2, skiffd installed as `skiff.service` + `skiff.socket` from
//! `runtime/dist`, the registry on 127.0.0.1:5000 (in skiffd's `insecure_registries`). On the
//! dev machines they are ignored; `node-tests` runs them with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::registry::Options;
use skiff_integration::{skiffd, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::image_service_client::ImageServiceClient;
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use skiff_proto::cri::*;

const SOCKET: &str = "/run/skiff/skiff.sock";

fn systemctl(args: &[&str]) -> String {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn unit_prop(unit: &str, prop: &str) -> String {
    systemctl(&["show", "-p", prop, "--value", unit])
        .trim()
        .to_string()
}

async fn node() -> (
    RuntimeServiceClient<tonic::transport::Channel>,
    ImageServiceClient<tonic::transport::Channel>,
) {
    let ch = skiffd::connect(Path::new(SOCKET)).await;
    (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    )
}

/// busybox on the registry skiffd trusts, pulled.
async fn image(img: &mut ImageServiceClient<tonic::transport::Channel>) -> (Registry, String) {
    let reg = Registry::start_opts(Options {
        port: Some(5000),
        ..Default::default()
    });
    let pushed = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "node/busybox", "v1")
        .await;
    pull(img, &pushed.reference).await;
    (reg, pushed.reference.clone())
}

/// The cgroup driver RuntimeConfig reports.
async fn cgroup_driver(rt: &mut Rt) -> i32 {
    rt.runtime_config(RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner()
        .linux
        .expect("linux")
        .cgroup_driver
}

fn cgroup_of(pid: i32) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = cg
        .trim()
        .strip_prefix("0::")
        .expect("cgroup v2")
        .to_string();
    Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn pods_are_units_that_outlive_skiffd() {
    let (mut rt, mut img) = node().await;
    assert_eq!(
        cgroup_driver(&mut rt).await,
        CgroupDriver::Systemd as i32,
        "the default driver where systemd runs"
    );
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let mut pcfg = pod_config("unit", logs.path().to_str().unwrap());
    let uid = "0f1e2d3c_4b5a";
    pcfg.linux
        .get_or_insert_with(Default::default)
        .cgroup_parent = format!("kubepods-besteffort-pod{uid}.slice");
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("sleeper", &image, &["sleep", "100000"]),
    )
    .await;
    let unit = format!("skiff-pod-{}.service", &pod[..16]);

    // The pod is a unit in kubelet's slice, its containers in its delegated cgroup.
    let units = systemctl(&["list-units", "--no-legend", "skiff-pod-*"]);
    assert!(units.contains(&unit), "{units}");
    assert_eq!(unit_prop(&unit, "ActiveState"), "active");
    assert_eq!(unit_prop(&unit, "Delegate"), "yes");
    let cg = unit_prop(&unit, "ControlGroup");
    assert_eq!(
        cg,
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/{unit}"
        )
    );
    let shim = shim_pid(&mut rt, &pod).await;
    assert_eq!(unit_prop(&unit, "MainPID"), shim.to_string());
    let pid = container_pid(&mut rt, &c).await;
    let ccg = cgroup_of(pid);
    assert_eq!(
        ccg,
        Path::new("/sys/fs/cgroup")
            .join(cg.trim_start_matches('/'))
            .join(&c)
    );
    let shown = systemctl(&["status", "--no-pager", &unit]);
    assert!(shown.contains("sleep 100000"), "{shown}");

    // Restarting skiffd leaves the pod alone; the new skiffd finds it.
    let main_before = unit_prop("skiff.service", "MainPID");
    systemctl(&["restart", "skiff.service"]);
    wait_for("a new skiffd", Duration::from_secs(60), || {
        unit_prop("skiff.service", "MainPID") != main_before
            && unit_prop("skiff.service", "ActiveState") == "active"
    });
    let (mut rt, _) = node().await;
    assert_eq!(
        container_pid(&mut rt, &c).await,
        pid,
        "same container process"
    );
    assert_eq!(shim_pid(&mut rt, &pod).await, shim, "same shim");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        status(&mut rt, &c).await.state,
        ContainerState::ContainerRunning as i32
    );
    // Stopping it kills no pod either.
    systemctl(&["stop", "skiff.service"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container survives skiffd's stop"
    );
    assert_eq!(unit_prop(&unit, "ActiveState"), "active");
    // The socket brings skiffd back on the next call.
    let (mut rt, _) = node().await;
    assert_eq!(container_pid(&mut rt, &c).await, pid);

    // Removing the pod removes its unit and cgroup.
    teardown_pods(&mut rt, vec![pod.clone()]).await;
    wait_for("the unit gone", Duration::from_secs(30), || {
        unit_prop(&unit, "LoadState") == "not-found"
    });
    assert!(!Path::new("/sys/fs/cgroup")
        .join(cg.trim_start_matches('/'))
        .exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // A cgroupfs path under the systemd driver is refused by field.
    let mut bad = pod_config("badparent", logs.path().to_str().unwrap());
    bad.linux.get_or_insert_with(Default::default).cgroup_parent = "/kubepods/pod1".into();
    let err = run_pod_err(&mut rt, bad).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cgroup_parent"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn cgroup_v2_limits_hold() {
    let (mut rt, mut img) = node().await;
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("limits", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let with = |name: &str, cmd: &[&str], r: LinuxContainerResources| {
        let mut c = container_config(name, &image, cmd);
        c.linux.get_or_insert_with(Default::default).resources = Some(r);
        c
    };

    // memory.max: a process over it is OOM-killed and reported so.
    let hog = run(
        &mut rt,
        &pod,
        &pcfg,
        with(
            "hog",
            &[
                "sh",
                "-c",
                "sleep 1; a=aaaaaaaaaaaaaaaa; while true; do a=$a$a; done",
            ],
            LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            },
        ),
    )
    .await;
    let hog_cg = cgroup_of(container_pid(&mut rt, &hog).await);
    assert_eq!(read(&hog_cg.join("memory.max")), (32u64 << 20).to_string());
    let st = wait_exited(&mut rt, &hog, Duration::from_secs(120)).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");

    // cpu.max throttles; pids.max (through `unified`) stops forks; updates land live.
    let busy = run(
        &mut rt,
        &pod,
        &pcfg,
        with(
            "busy",
            &["sh", "-c", "while true; do :; done"],
            LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 10_000,
                cpu_shares: 2048,
                cpuset_cpus: "0".into(),
                unified: [("pids.max".to_string(), "5".to_string())].into(),
                // kubelet sends a limit for every page size the node has.
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                }],
                ..Default::default()
            },
        ),
    )
    .await;
    let cg = cgroup_of(container_pid(&mut rt, &busy).await);
    assert_eq!(read(&cg.join("hugetlb.2MB.max")), (4u64 << 20).to_string());
    assert_eq!(read(&cg.join("cpu.max")), "10000 100000");
    assert_eq!(read(&cg.join("pids.max")), "5");
    // Shares to weight as runc (1.3 and later) and crun convert them, so that 1024 shares (one
    // CPU) is the default weight 100: 10^((log2(s)^2 + 125 log2(s)) / 612 - 7/34), rounded up.
    assert_eq!(read(&cg.join("cpu.weight")), "174");
    assert_eq!(read(&cg.join("cpuset.cpus")), "0");
    wait_for("throttling", Duration::from_secs(60), || {
        read(&cg.join("cpu.stat"))
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    });
    // Forks past pids.max are refused: the kernel counts them in pids.events.
    let _ = exec(
        &mut rt,
        &busy,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
        ],
        60,
    )
    .await;
    let refused = read(&cg.join("pids.events"))
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        refused > 0,
        "pids.events: {}",
        read(&cg.join("pids.events"))
    );
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: busy.clone(),
        linux: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        windows: None,
        annotations: Default::default(),
    })
    .await
    .expect("UpdateContainerResources");
    assert_eq!(read(&cg.join("cpu.max")), "20000 100000");
    assert_eq!(read(&cg.join("memory.max")), (64u64 << 20).to_string());
    // The CRI's swap limit counts memory too; v2's memory.swap.max is the swap alone.
    assert_eq!(read(&cg.join("memory.swap.max")), (32u64 << 20).to_string());

    // The v2 device filter: default devices open; a node of another device can be made
    // (CAP_MKNOD) but not opened.
    let dev = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("dev", &image, &["sleep", "100000"]),
    )
    .await;
    let r = exec(
        &mut rt,
        &dev,
        &[
            "sh",
            "-c",
            "echo x > /dev/null && busybox mknod /tmp/fuse c 10 229 && exec 3</tmp/fuse",
        ],
        30,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // Stats move.
    let cpu = |rt: &mut Rt, id: String| {
        let mut rt = rt.clone();
        async move {
            rt.container_stats(ContainerStatsRequest { container_id: id })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap()
                .cpu
                .unwrap()
                .usage_core_nano_seconds
                .unwrap()
                .value
        }
    };
    let a = cpu(&mut rt, busy.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = cpu(&mut rt, busy.clone()).await;
    assert!(b > a, "cpu usage {a} then {b}");
    teardown_pods(&mut rt, vec![pod]).await;
}

/// kubelet (and critest) may give the systemd driver a path, `/test.slice`: its last element is
/// the slice, as containerd takes it. A container without limits there has stats for every
/// list call, whatever keys its cgroup's cpu.stat shows.
/// Pod-level resources on cgroup v2 with the systemd driver: RunPodSandbox's resources plus
/// overhead land on the pod unit's cgroup, UpdatePodSandboxResources changes them live, and
/// ContainerStatus reports what the container's cgroup holds (cpu.weight read back as shares).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn pod_level_resources_and_resize_read_back() {
    let (mut rt, mut img) = node().await;
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_level_config("podlevel", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut c = container_config("c", &image, &["sleep", "100000"]);
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        cpu_shares: 512,
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    });
    let id = run(&mut rt, &pod, &pcfg, c).await;
    let cg = cgroup_of(container_pid(&mut rt, &id).await);
    let pod_cg = cg.parent().unwrap().to_path_buf();
    assert!(
        pod_cg.to_string_lossy().ends_with(".service"),
        "the pod's cgroup is its unit's: {}",
        pod_cg.display()
    );
    assert_eq!(read(&pod_cg.join("memory.max")), (320u64 << 20).to_string());
    assert_eq!(read(&pod_cg.join("cpu.max")), "60000 100000");
    grow_pod_resources(&mut rt, &pod).await;
    assert_eq!(read(&pod_cg.join("memory.max")), (576u64 << 20).to_string());
    assert_eq!(read(&pod_cg.join("cpu.max")), "160000 100000");

    let linux_of = |st: &ContainerStatus| st.resources.as_ref().unwrap().linux.clone().unwrap();
    let l = linux_of(&status(&mut rt, &id).await);
    assert_eq!((l.cpu_shares, l.memory_limit_in_bytes), (512, 128 << 20));
    std::fs::write(cg.join("memory.max"), (300u64 << 20).to_string()).unwrap();
    std::fs::write(cg.join("cpu.max"), "25000 100000").unwrap();
    let l = linux_of(&status(&mut rt, &id).await);
    assert_eq!(l.memory_limit_in_bytes, 300 << 20);
    assert_eq!((l.cpu_quota, l.cpu_period), (25_000, 100_000));
    teardown_pods(&mut rt, vec![pod]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn slice_paths_and_stats_of_unlimited_containers() {
    let (mut rt, mut img) = node().await;
    assert_eq!(cgroup_driver(&mut rt).await, CgroupDriver::Systemd as i32);
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let mut pcfg = pod_config("slicepath", logs.path().to_str().unwrap());
    // (A dash in a slice name nests it: skifftest.slice sits at the top.)
    pcfg.linux
        .get_or_insert_with(Default::default)
        .cgroup_parent = "/skifftest.slice".into();
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("free", &image, &["sleep", "100000"]),
    )
    .await;
    let cg = cgroup_of(container_pid(&mut rt, &c).await);
    assert!(
        cg.starts_with("/sys/fs/cgroup/skifftest.slice/"),
        "{}",
        cg.display()
    );
    let stats = rt
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    let mine = stats
        .iter()
        .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == c))
        .expect("the container's stats");
    assert!(mine.cpu.as_ref().unwrap().usage_core_nano_seconds.is_some());
    assert!(mine.memory.as_ref().unwrap().working_set_bytes.is_some());
    rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
        .await
        .expect("ListPodSandboxStats");
    teardown_pods(&mut rt, vec![pod]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn the_cgroupfs_driver_works_too() {
    // A second skiffd of the test's own, with the cgroupfs driver: pods are still units, their
    // containers' cgroups are cgroupfs paths.
    let reg = Registry::start();
    let pushed = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "node/busybox", "v1")
        .await;
    let d = Skiffd::start_with(&[&reg.host], Some("cgroup_driver = \"cgroupfs\"\n"), &[]);
    pull(&mut d.images().await, &pushed.reference).await;
    let mut rt = d.runtime().await;
    assert_eq!(cgroup_driver(&mut rt).await, CgroupDriver::Cgroupfs as i32);
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("fs", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut c = container_config("limited", &pushed.reference, &["sleep", "100000"]);
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 48 << 20,
        ..Default::default()
    });
    let c = run(&mut rt, &pod, &pcfg, c).await;
    let cg = cgroup_of(container_pid(&mut rt, &c).await);
    assert!(
        cg.starts_with(Path::new("/sys/fs/cgroup").join(d.cgroup_root.trim_start_matches('/'))),
        "{}",
        cg.display()
    );
    assert_eq!(read(&cg.join("memory.max")), (48u64 << 20).to_string());
    // A slice name under the cgroupfs driver is refused by field.
    let mut bad = pod_config("slice", logs.path().to_str().unwrap());
    bad.linux.get_or_insert_with(Default::default).cgroup_parent = "kubepods.slice".into();
    let err = run_pod_err(&mut rt, bad).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cgroupfs"), "{}", err.message());
    teardown_pods(&mut rt, vec![pod]).await;
    assert!(!cg.exists(), "container cgroup removed");
}

/// Loads (or replaces) AppArmor profile `text` into the kernel.
fn load_profile(text: &str) {
    use std::io::Write;
    let mut parser = Command::new("apparmor_parser")
        .arg("-r")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("apparmor_parser");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(parser.wait().unwrap().success());
}

/// The AppArmor label the kernel shows for `pid`.
fn label(pid: i32) -> String {
    read(Path::new(&format!("/proc/{pid}/attr/current")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn apparmor_profiles_are_applied() {
    assert_eq!(
        read(Path::new("/sys/module/apparmor/parameters/enabled")),
        "Y",
        "the node VM runs AppArmor"
    );
    // A profile of the test's own: everything but writing under /tmp.
    load_profile(
        "profile skiff-test-no-tmp flags=(attach_disconnected,mediate_deleted) {\n\
         file,\n  capability,\n  network,\n  signal,\n  umount,\n  deny /tmp/** w,\n}\n",
    );

    let (mut rt, mut img) = node().await;
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("aa", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let with = |name: &str, p: Option<SecurityProfile>, privileged: bool| {
        let mut c = container_config(name, &image, &["sleep", "100000"]);
        let sc = c
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default);
        sc.apparmor = p;
        sc.privileged = privileged;
        c
    };
    let prof = |t: security_profile::ProfileType, r: &str| {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        })
    };
    use security_profile::ProfileType;

    // Nothing named: skiff's default, loaded on first use.
    let d = run(&mut rt, &pod, &pcfg, with("default", None, false)).await;
    assert_eq!(
        label(container_pid(&mut rt, &d).await),
        "skiff-default (enforce)"
    );
    // The default keeps /proc's knobs out of reach.
    let r = exec(
        &mut rt,
        &d,
        &["sh", "-c", "echo 1 > /proc/sysrq-trigger"],
        30,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0);
    // A loaded profile by name (also with the old `localhost/` prefix kept in it, as critest
    // sends it): the container and what is exec'd in it run under it.
    let mut l = String::new();
    for (name, r) in [
        ("local", "skiff-test-no-tmp"),
        ("local-prefixed", "localhost/skiff-test-no-tmp"),
    ] {
        l = run(
            &mut rt,
            &pod,
            &pcfg,
            with(name, prof(ProfileType::Localhost, r), false),
        )
        .await;
        assert_eq!(
            label(container_pid(&mut rt, &l).await),
            "skiff-test-no-tmp (enforce)",
            "{r}"
        );
    }
    let r = exec(&mut rt, &l, &["sh", "-c", "echo x > /tmp/x"], 30)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = exec(&mut rt, &l, &["cat", "/proc/self/attr/current"], 30)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "skiff-test-no-tmp (enforce)"
    );
    // Unconfined, and privileged without a profile, run unconfined.
    let u = run(
        &mut rt,
        &pod,
        &pcfg,
        with("unconf", prof(ProfileType::Unconfined, ""), false),
    )
    .await;
    assert_eq!(label(container_pid(&mut rt, &u).await), "unconfined");
    let p = run(&mut rt, &pod, &pcfg, with("priv", None, true)).await;
    assert_eq!(label(container_pid(&mut rt, &p).await), "unconfined");
    // A profile that is not loaded is refused by name, leaving nothing.
    let before = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .len();
    let err = create(
        &mut rt,
        &pod,
        &pcfg,
        with(
            "missing",
            prof(ProfileType::Localhost, "no-such-profile"),
            false,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("no-such-profile"),
        "{}",
        err.message()
    );
    let after = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .len();
    assert_eq!(before, after);
    teardown_pods(&mut rt, vec![pod]).await;
}

/// A node whose kernel runs AppArmor but that lacks `apparmor_parser` (a minimal install): as
/// with runc and containerd, AppArmor counts as unavailable (Status says why), containers that
/// name nothing run unconfined instead of failing, and a loaded profile named by a container
/// still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn apparmor_without_its_parser_is_unavailable() {
    assert!(
        !Path::new("/usr/bin/apparmor_parser").exists(),
        "the test hides apparmor_parser by leaving /usr/sbin off PATH"
    );
    load_profile(
        "profile skiff-test-loaded flags=(attach_disconnected,mediate_deleted) {\n\
         file,\n  capability,\n  network,\n  signal,\n  umount,\n}\n",
    );

    let reg = Registry::start();
    let pushed = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "node/busybox", "v1")
        .await;
    let mut d = Skiffd::start_with(&[&reg.host], None, &[]);
    d.restart_with_env(&[("PATH", "/usr/bin:/bin")]);
    pull(&mut d.images().await, &pushed.reference).await;
    let mut rt = d.runtime().await;
    let aa = status_info(&mut rt, "apparmor").await;
    assert_eq!(aa["enabled"], false, "{aa}");
    assert!(
        aa["reason"].as_str().unwrap().contains("apparmor_parser"),
        "{aa}"
    );
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("noparser", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let plain = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("plain", &pushed.reference, &["sleep", "100000"]),
    )
    .await;
    assert_eq!(label(container_pid(&mut rt, &plain).await), "unconfined");
    let mut named = container_config("named", &pushed.reference, &["sleep", "100000"]);
    named
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .apparmor = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Localhost as i32,
        localhost_ref: "skiff-test-loaded".into(),
    });
    let named = run(&mut rt, &pod, &pcfg, named).await;
    assert_eq!(
        label(container_pid(&mut rt, &named).await),
        "skiff-test-loaded (enforce)"
    );
    teardown_pods(&mut rt, vec![pod]).await;
}

/// A pod with its own user namespace on the node's kernel (6.12, where overlayfs takes no
/// detached mount as a layer): its container starts on idmapped layers, root inside is the
/// mapped id outside, and what it writes belongs to that id on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn user_namespace_pods_run_on_the_nodes_kernel() {
    let (mut rt, mut img) = node().await;
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let mut pcfg = pod_config("userns", logs.path().to_str().unwrap());
    let map = |host_id| {
        vec![IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }]
    };
    pcfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: map(1 << 20),
            gids: map(1 << 20),
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("inside", &image, &["sleep", "100000"]),
    )
    .await;
    let pid = container_pid(&mut rt, &c).await;
    let uid_map = read(Path::new(&format!("/proc/{pid}/uid_map")));
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields, ["0", "1048576", "65536"], "{uid_map}");
    let r = exec(
        &mut rt,
        &c,
        &[
            "sh",
            "-c",
            "id -u; echo x > /tmp/f; stat -c %u /bin/busybox",
        ],
        30,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "0\n0\n", "{r:?}");
    use std::os::unix::fs::MetadataExt;
    let written = std::fs::metadata(format!("/proc/{pid}/root/tmp/f")).unwrap();
    assert_eq!(written.uid(), 1 << 20);
    teardown_pods(&mut rt, vec![pod]).await;
}

/// A pod whose per-container PID namespace is kubelet's default (what a restore needs).
fn ckpt_pod(name: &str, logs: &Path) -> PodSandboxConfig {
    with_namespaces(
        pod_config(name, logs.to_str().unwrap()),
        NamespaceMode::Pod,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    )
}

/// The counts a CRI log of the counter below holds.
fn counts(log: &Path) -> Vec<u64> {
    log_records(log)
        .iter()
        .filter_map(|(_, _, n)| n.trim().parse().ok())
        .collect()
}

/// A counter that keeps its count only in memory, checkpointed while it runs (after a file
/// was written into its rootfs and one of the image's deleted), with its data volume at
/// `/data`.
struct Counted {
    pod: String,
    container: String,
    logs: tempfile::TempDir,
    out: tempfile::TempDir,
    location: PathBuf,
    /// The count logged before the checkpoint began, and once it had ended.
    before: u64,
    after: u64,
    /// The counter's process before the checkpoint.
    pid: i32,
}

async fn counter_checkpoint(rt: &mut Rt, image: &str, volume: &Path) -> Counted {
    let logs = tempfile::tempdir().unwrap();
    let pcfg = ckpt_pod("ckpt", logs.path());
    let pod = run_pod(rt, &pcfg).await;
    let mut cfg = container_config(
        "counter",
        image,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done",
        ],
    );
    cfg.log_path = "counter.log".into();
    cfg.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    });
    let c = run(rt, &pod, &pcfg, cfg).await;
    sh(rt, &c, "echo kept > /tmp/written && rm /bin/true").await;
    let log = logs.path().join("counter.log");
    wait_for("the counter at 10", Duration::from_secs(20), || {
        counts(&log).last().is_some_and(|n| *n >= 10)
    });
    let out = tempfile::tempdir().unwrap();
    let location = out.path().join("checkpoint-counter.tar");
    let pid = container_pid(rt, &c).await;
    let before = counts(&log).last().copied().unwrap_or(0);
    rt.checkpoint_container(CheckpointContainerRequest {
        container_id: c.clone(),
        location: location.display().to_string(),
        timeout: 0,
    })
    .await
    .expect("CheckpointContainer");
    let after = counts(&log).last().copied().unwrap_or(0);
    Counted {
        pod,
        container: c,
        logs,
        out,
        location,
        before,
        after,
        pid,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn checkpoint_leaves_the_container_running() {
    let (mut rt, mut img) = node().await;
    let criu = status_info(&mut rt, "criu").await;
    assert!(criu["version"].is_string(), "{criu}");
    let (_reg, image) = image(&mut img).await;
    let volume = tempfile::tempdir().unwrap();
    let k = counter_checkpoint(&mut rt, &image, volume.path()).await;
    let (c, pod, location, pid) = (
        k.container.clone(),
        k.pod.clone(),
        k.location.clone(),
        k.pid,
    );

    // The container runs on, the same process, still counting.
    assert_eq!(container_pid(&mut rt, &c).await, pid);
    assert_eq!(
        status(&mut rt, &c).await.state,
        ContainerState::ContainerRunning as i32
    );
    let log = k.logs.path().join("counter.log");
    let count = || log_records(&log).len();
    let before = count();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(count() > before, "the counter goes on after the checkpoint");

    // The archive: 0600, the layout the other runtimes use.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&location).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut names = vec![];
    let mut diff = None;
    let mut deleted = String::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&location).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let name = name.trim_start_matches("./").to_string();
        use std::io::Read;
        if name == "rootfs-diff.tar" {
            let mut v = vec![];
            e.read_to_end(&mut v).unwrap();
            diff = Some(v);
        } else if name == "deleted.files" {
            e.read_to_string(&mut deleted).unwrap();
        }
        names.push(name);
    }
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/descriptors.json",
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
        "bind.mounts",
        "dump.log",
        "stats-dump",
        "container.log",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(deleted.contains("/bin/true"), "{deleted}");
    let diff_names: Vec<String> = tar::Archive::new(&diff.expect("rootfs-diff.tar")[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        diff_names.iter().any(|n| n == "tmp/written"),
        "{diff_names:?}"
    );
    teardown_pods(&mut rt, vec![pod]).await;
}

/// `readlink /proc/PID/ns/NAME`.
fn ns(pid: i32, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .unwrap()
        .display()
        .to_string()
}

/// Waits for a restored counter's first counts and checks it went on from the checkpoint.
fn counts_on(log: &Path, k: &Counted) {
    wait_for(
        "the restored counter's output",
        Duration::from_secs(20),
        || counts(log).len() >= 3,
    );
    let got = counts(log);
    assert!(
        got[0] > k.before && got[0] <= k.after + 1,
        "the restored counter starts at {} (checkpointed between {} and {}): {got:?}",
        got[0],
        k.before,
        k.after
    );
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn checkpoints_restore_in_a_new_pod_and_on_another_node() {
    let (mut rt, mut img) = node().await;
    let (reg, image) = image(&mut img).await;
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("marker"), "old volume").unwrap();
    let k = counter_checkpoint(&mut rt, &image, volume.path()).await;
    // Only restored counters count from here.
    rt.stop_container(StopContainerRequest {
        container_id: k.container.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    let archive = k.location.display().to_string();

    // A new pod on this node. Every bind mount of the checkpoint must be given again.
    let logs = tempfile::tempdir().unwrap();
    let pcfg = ckpt_pod("restored", logs.path());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut req = ContainerConfig {
        image: Some(ImageSpec {
            image: archive.clone(),
            ..Default::default()
        }),
        log_path: "restored.log".into(),
        ..Default::default()
    };
    let err = create(&mut rt, &pod, &pcfg, req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.mounts") && err.message().contains("/data"),
        "{}",
        err.message()
    );
    let volume_b = tempfile::tempdir().unwrap();
    std::fs::write(volume_b.path().join("marker"), "new volume").unwrap();
    req.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: volume_b.path().display().to_string(),
        ..Default::default()
    });
    // Resources are the request's.
    req.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = run(&mut rt, &pod, &pcfg, req).await;
    let st = status(&mut rt, &c).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert_eq!(
        st.metadata.unwrap().name,
        "counter",
        "the checkpoint's name"
    );
    counts_on(&logs.path().join("restored.log"), &k);
    // Its rootfs: the file written is there, the file deleted is not; its volume is the new one.
    assert_eq!(sh(&mut rt, &c, "cat /tmp/written").await.trim(), "kept");
    let r = exec(&mut rt, &c, &["sh", "-c", "test -e /bin/true"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 1, "/bin/true stays deleted");
    assert_eq!(
        sh(&mut rt, &c, "cat /data/marker").await.trim(),
        "new volume"
    );
    // The kernel's view: in the new pod's network, IPC and UTS namespaces, PID 1 of its own PID
    // namespace, in the container's cgroup with the request's limit.
    let pid = container_pid(&mut rt, &c).await;
    let shim = shim_pid(&mut rt, &pod).await;
    for name in ["net", "ipc", "uts"] {
        assert_eq!(ns(pid, name), ns(shim, name), "{name} namespace");
    }
    assert_ne!(ns(pid, "pid"), ns(shim, "pid"));
    assert!(
        proc_status(pid, "NSpid").ends_with("\t1"),
        "{}",
        proc_status(pid, "NSpid")
    );
    let cg = cgroup_of(pid);
    assert!(cg.ends_with(&c), "{}", cg.display());
    assert_eq!(read(&cg.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(sh(&mut rt, &c, "hostname").await.trim(), "restored");
    // The restore mounted nothing on the node (its rootfs was mounted in a mount namespace of
    // its own), and removing the container leaves nothing of it.
    let on_node = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!on_node().contains(&c), "{}", on_node());
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .expect("RemoveContainer");
    for dir in ["/var/lib/skiff/containers", "/run/skiff/containers"] {
        assert!(!Path::new(dir).join(&c).exists(), "{dir}/{c} left behind");
    }
    assert!(!on_node().contains(&c));

    // The archive as an OCI image with the checkpoint annotation (as checkpointctl and buildah
    // make them), pulled and restored in another pod.
    let ckpt_image = ImageBuilder::new()
        .raw_layer(std::fs::read(&k.location).unwrap(), Compression::None)
        .annotation("org.criu.checkpoint.container.name", "counter")
        .push(&reg.host, "node/counter-checkpoint", "v1")
        .await;
    pull(&mut img, &ckpt_image.reference).await;
    let logs_i = tempfile::tempdir().unwrap();
    let pcfg_i = ckpt_pod("from-image", logs_i.path());
    let pod_i = run_pod(&mut rt, &pcfg_i).await;
    let ci = run(
        &mut rt,
        &pod_i,
        &pcfg_i,
        ContainerConfig {
            image: Some(ImageSpec {
                image: ckpt_image.reference.clone(),
                ..Default::default()
            }),
            log_path: "restored.log".into(),
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: volume_b.path().display().to_string(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    counts_on(&logs_i.path().join("restored.log"), &k);
    assert_eq!(sh(&mut rt, &ci, "cat /tmp/written").await.trim(), "kept");

    // Another node: a skiffd with a root of its own, which lacks the image (it is pulled by
    // digest), restoring with the CLI (the archive's volume from where it was), and
    // checkpointing the restored container in turn.
    let d = Skiffd::start_with(&[&reg.host], None, &[]);
    let mut rt2 = d.runtime().await;
    let logs2 = tempfile::tempdir().unwrap();
    let pcfg2 = ckpt_pod("elsewhere", logs2.path());
    let pod2 = run_pod(&mut rt2, &pcfg2).await;
    let skiff = |args: &[&str]| {
        let out = Command::new(skiff_integration::bin_dir().join("skiff"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .expect("skiff");
        assert!(
            out.status.success(),
            "skiff {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let c2 = skiff(&[
        "restore",
        &format!("--import={archive}"),
        "--pod",
        &pod2,
        "--log-path",
        "c.log",
    ]);
    assert_eq!(
        status(&mut rt2, &c2).await.state,
        ContainerState::ContainerRunning as i32
    );
    counts_on(&logs2.path().join("c.log"), &k);
    assert_eq!(
        sh(&mut rt2, &c2, "cat /data/marker").await.trim(),
        "old volume"
    );
    let again = k.out.path().join("again.tar");
    skiff(&["checkpoint", &c2, &format!("--export={}", again.display())]);
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(&again)
        .output()
        .expect("tar");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|n| n.ends_with("checkpoint/inventory.img")),
        "{listed}"
    );
    assert_eq!(
        status(&mut rt2, &c2).await.state,
        ContainerState::ContainerRunning as i32,
        "a checkpoint leaves a restored container running too"
    );
    teardown_pods(&mut rt2, vec![pod2]).await;
    teardown_pods(&mut rt, vec![pod, pod_i, k.pod.clone()]).await;
}

/// A file's SELinux label (its `security.selinux` attribute).
fn label_of(p: &Path) -> String {
    let path = std::ffi::CString::new(p.display().to_string()).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: getxattr with NUL-terminated path and name and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.selinux".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n > 0,
        "{}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    String::from_utf8_lossy(&buf[..n as usize])
        .trim_end_matches('\0')
        .to_string()
}

/// A process's SELinux context, as the kernel reports it.
fn context_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/attr/current"))
        .unwrap()
        .trim_end_matches(['\0', '\n'])
        .to_string()
}

/// The policy's container process and file labels (`lxc_contexts`), as `user:role:type`.
fn lxc_default(key: &str) -> String {
    let text =
        std::fs::read_to_string("/etc/selinux/default/contexts/lxc_contexts").unwrap_or_default();
    let label = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| {
            if key == "process" {
                "system_u:system_r:container_t:s0".into()
            } else {
                "system_u:object_r:container_file_t:s0".into()
            }
        });
    label.splitn(4, ':').take(3).collect::<Vec<_>>().join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM booted with SELinux: integration/vm/node-tests"]
async fn selinux_labels_apply_where_selinux_runs() {
    assert!(
        Path::new("/sys/fs/selinux/enforce").exists(),
        "this boot runs SELinux"
    );
    let (mut rt, mut img) = node().await;
    let (_reg, image) = image(&mut img).await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("selinux", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let sleeper = |name: &str, opts: Option<SeLinuxOption>| {
        let mut c = container_config(name, &image, &["sleep", "100000"]);
        c.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .selinux_options = opts;
        c
    };
    let process = lxc_default("process");
    let file = lxc_default("file");

    // Without options: the policy's container label, each container a level of its own.
    let a = run(&mut rt, &pod, &pcfg, sleeper("a", None)).await;
    let b = run(&mut rt, &pod, &pcfg, sleeper("b", None)).await;
    let (la, lb) = (
        context_of(container_pid(&mut rt, &a).await),
        context_of(container_pid(&mut rt, &b).await),
    );
    for l in [&la, &lb] {
        assert!(l.starts_with(&format!("{process}:s0:c")), "{l}");
    }
    assert_ne!(la, lb, "two containers, two MCS levels");

    // With options: their level (and type), for the container and what is exec'd in it, and
    // its /dev labelled to match.
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("data"), "x").unwrap();
    let mut with_volume = sleeper(
        "c",
        Some(SeLinuxOption {
            level: "s0:c1,c2".into(),
            ..Default::default()
        }),
    );
    with_volume.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: volume.path().display().to_string(),
        selinux_relabel: true,
        ..Default::default()
    });
    let c = run(&mut rt, &pod, &pcfg, with_volume).await;
    let pid = container_pid(&mut rt, &c).await;
    let want = format!("{process}:s0:c1,c2");
    assert_eq!(context_of(pid), want);
    assert_eq!(
        sh(&mut rt, &c, "cat /proc/self/attr/current")
            .await
            .trim_end_matches(['\0', '\n']),
        want
    );
    assert_eq!(
        label_of(Path::new(&format!("/proc/{pid}/root/dev"))),
        format!("{file}:s0:c1,c2")
    );
    // Its volume asked to be relabelled: the files in it carry its label too.
    assert_eq!(
        label_of(&volume.path().join("data")),
        format!("{file}:s0:c1,c2")
    );
    // The node's own directories are never relabelled.
    let mut etc = sleeper("etc", None);
    etc.mounts.push(Mount {
        container_path: "/host-etc".into(),
        host_path: "/etc".into(),
        selinux_relabel: true,
        ..Default::default()
    });
    let err = create(&mut rt, &pod, &pcfg, etc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("mounts[0].selinux_relabel"),
        "{}",
        err.message()
    );

    // A type the policy does not have is refused by name, nothing created.
    let err = create(
        &mut rt,
        &pod,
        &pcfg,
        sleeper(
            "bad",
            Some(SeLinuxOption {
                r#type: "no_such_skiff_t".into(),
                ..Default::default()
            }),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("selinux_options") && err.message().contains("no_such_skiff_t"),
        "{}",
        err.message()
    );
    teardown_pods(&mut rt, vec![pod]).await;
}

/// Events and CRI metrics on cgroup v2 under systemd: an exit reaches a subscriber from the
/// shim's unit, and the metrics come from v2's files (cpu.stat's throttling with a quota).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn events_and_metrics_on_cgroup_v2() {
    let (mut rt, mut img) = node().await;
    let (_reg, image) = image(&mut img).await;
    let mut events = rt
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("v2metrics", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    // Up to 24 MiB of shared memory, and a busy loop the 0.5-CPU quota throttles.
    let busy = "head -c 25165824 /dev/zero > /dev/shm/fill; while :; do :; done & sleep 100000";
    let mut cfg = container_config("worker", &image, &["sh", "-c", busy]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = run(&mut rt, &pod, &pcfg, cfg).await;
    let quick = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("quick", &image, &["sh", "-c", "exit 5"]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, events.message())
            .await
            .expect("a STOPPED event for the quick container")
            .unwrap()
            .unwrap();
        if ev.container_id == quick
            && ev.container_event_type == ContainerEventType::ContainerStoppedEvent as i32
        {
            let st = ev
                .containers_statuses
                .iter()
                .find(|s| s.id == quick)
                .unwrap();
            assert_eq!(st.exit_code, 5);
            break;
        }
    }
    // Polled until a second of CPU has been used (this VM's emulated CPU is slow).
    let deadline = Instant::now() + Duration::from_secs(90);
    let metrics = loop {
        let pods = rt
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
        let pm = pods.into_iter().find(|p| p.pod_sandbox_id == pod).unwrap();
        let cm = pm
            .container_metrics
            .into_iter()
            .find(|m| m.container_id == c)
            .unwrap();
        let cpu = cm
            .metrics
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .and_then(|m| m.value.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        if cpu >= 1 || Instant::now() > deadline {
            break cm.metrics;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let value = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .value
            .as_ref()
            .unwrap()
            .value
    };
    let all: Vec<(&str, u64)> = metrics
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.value.as_ref().map(|v| v.value).unwrap_or(0),
            )
        })
        .collect();
    let cg = cgroup_of(container_pid(&mut rt, &c).await);
    let stat = std::fs::read_to_string(cg.join("memory.stat")).unwrap_or_default();
    let current = std::fs::read_to_string(cg.join("memory.current")).unwrap_or_default();
    let why = format!("{all:?}\nmemory.current {current}\n{stat}");
    assert!(value("container_cpu_usage_seconds_total") >= 1, "{why}");
    assert!(value("container_cpu_cfs_periods_total") > 0, "{why}");
    assert!(
        value("container_cpu_cfs_throttled_periods_total") > 0,
        "{why}"
    );
    // What the kernel holds, as the metric reports it: memory.current less inactive_file.
    let inactive: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("inactive_file "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // (The fill may still be writing on this VM's slow CPU: a few MiB either way.)
    let current: u64 = current.trim().parse().unwrap_or(0);
    let ws = current.saturating_sub(inactive);
    let got = value("container_memory_working_set_bytes");
    assert!(
        got > 1 << 20 && got.abs_diff(ws) < 8 << 20,
        "{got} vs {ws}: {why}"
    );
    let usage = value("container_memory_usage_bytes");
    assert!(
        usage > 1 << 20 && usage.abs_diff(current) < 8 << 20,
        "{why}"
    );
    assert!(value("container_processes") >= 2, "{why}");
    teardown_pods(&mut rt, vec![pod]).await;
}

/// A CDI device from the node's own spec directory (/var/run/cdi) on cgroup v2, where device
/// access is a BPF program: the device's node is there and the program lets it through; an
/// image volume mounted read-only beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
async fn cdi_devices_and_image_volumes_on_cgroup_v2() {
    let (mut rt, mut img) = node().await;
    let (reg, image) = image(&mut img).await;
    let data = ImageBuilder::new()
        .layer(
            Layer::new().file("data/a.txt", b"one\n", 0o644),
            Compression::Gzip,
        )
        .layer(
            Layer::new().file("data/b.txt", b"two\n", 0o644),
            Compression::Gzip,
        )
        .push(&reg.host, "node/data", "v1")
        .await;
    let data_ref = pull(&mut img, &data.reference).await;
    let host = tempfile::tempdir().unwrap();
    let node = host.path().join("node");
    skiff_integration::mknod_char(&node, 240, 7);
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "skiff.node/dev",
        "devices": [{"name": "one", "containerEdits": {
            "deviceNodes": [{"path": "/dev/skiff-node0", "hostPath": node, "permissions": "rw"}],
            "env": ["SKIFF_CDI=one"]
        }}]
    });
    std::fs::create_dir_all("/var/run/cdi").unwrap();
    let spec_file = Path::new("/var/run/cdi/skiff-node-test.json");
    std::fs::write(spec_file, spec.to_string()).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("cdi-v2", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut cfg = container_config("dev", &image, &["sleep", "100000"]);
    cfg.cdi_devices = vec![CdiDevice {
        name: "skiff.node/dev=one".into(),
    }];
    cfg.mounts = vec![Mount {
        container_path: "/data".into(),
        image: Some(ImageSpec {
            image: data_ref.clone(),
            ..Default::default()
        }),
        image_sub_path: "data".into(),
        readonly: true,
        ..Default::default()
    }];
    let c = run(&mut rt, &pod, &pcfg, cfg).await;
    let out = sh(
        &mut rt,
        &c,
        "cat /dev/skiff-node0 2>&1; echo $SKIFF_CDI; cat /data/a.txt /data/b.txt; \
         touch /data/x 2>&1 | grep -c Read-only",
    )
    .await;
    assert_eq!(
        out,
        "cat: can't open '/dev/skiff-node0': No such device or address\none\none\ntwo\n1\n"
    );
    let plain = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("plain", &image, &["sleep", "100000"]),
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
    teardown_pods(&mut rt, vec![pod]).await;
    let _ = std::fs::remove_file(spec_file);
}

fn run_out(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
#[ignore = "runs inside the node VM: integration/vm/node-tests"]
fn installed_from_its_debian_package_and_checked() {
    // dpkg installed it (integration/vm/node/run: dpkg -i skiff_*.deb): the files, the
    // conffile, the units from /usr/lib enabled by the maintainer script.
    let (_, status) = run_out("dpkg-query", &["-W", "-f=${Status} ${Version}", "skiff"]);
    assert!(status.starts_with("install ok installed "), "{status}");
    let (_, files) = run_out("dpkg", &["-L", "skiff"]);
    for f in [
        "/usr/bin/skiffd",
        "/usr/bin/skiff-shim",
        "/usr/bin/skiff",
        "/usr/lib/systemd/system/skiff.service",
        "/usr/lib/systemd/system/skiff.socket",
        "/etc/skiff/config.toml",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in dpkg -L: {files}");
    }
    let conffiles = read(Path::new("/var/lib/dpkg/info/skiff.conffiles"));
    assert_eq!(conffiles.trim(), "/etc/skiff/config.toml");
    for unit in ["skiff.socket", "skiff.service"] {
        assert_eq!(systemctl(&["is-enabled", unit]).trim(), "enabled", "{unit}");
        assert_eq!(systemctl(&["is-active", unit]).trim(), "active", "{unit}");
    }
    assert_eq!(
        unit_prop("skiff.service", "FragmentPath"),
        "/usr/lib/systemd/system/skiff.service"
    );
    assert!(
        unit_prop("skiff.service", "ExecStart").contains("path=/usr/bin/skiffd"),
        "{}",
        unit_prop("skiff.service", "ExecStart")
    );
    // The running skiffd is the package's binary.
    let pid = unit_prop("skiff.service", "MainPID");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, Path::new("/usr/bin/skiffd"));

    // skiff check with the node's config: what this node is (cgroup v2, systemd, CRIU 4.1,
    // AppArmor, the loopback CNI network the payload configured), no error.
    let (ok, text) = run_out("/usr/bin/skiff", &["check", "--json"]);
    let all: Vec<serde_json::Value> =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let get = |name: &str| {
        all.iter()
            .find(|f| f["check"] == name)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .clone()
    };
    let cgroup = get("cgroup");
    assert_eq!(cgroup["level"], "ok", "{cgroup}");
    assert!(
        cgroup["detail"]
            .as_str()
            .unwrap()
            .starts_with("v2, controllers: "),
        "{cgroup}"
    );
    for c in ["cpu", "memory", "pids"] {
        assert!(
            cgroup["detail"]
                .as_str()
                .unwrap()
                .split(' ')
                .any(|w| w == c),
            "{cgroup}"
        );
    }
    let systemd = get("systemd");
    assert_eq!(systemd["level"], "ok", "{systemd}");
    assert!(systemd["detail"]
        .as_str()
        .unwrap()
        .contains("cgroup_driver = systemd"));
    let criu = get("criu");
    assert_eq!(criu["level"], "ok", "{criu}");
    assert!(
        criu["detail"].as_str().unwrap().starts_with("criu 4."),
        "{criu}"
    );
    let apparmor = get("apparmor");
    assert_eq!(apparmor["level"], "ok", "{apparmor}");
    assert!(
        apparmor["detail"].as_str().unwrap().starts_with("enabled"),
        "{apparmor}"
    );
    let cni = get("cni");
    assert_eq!(cni["level"], "ok", "{cni}");
    assert!(
        cni["detail"]
            .as_str()
            .unwrap()
            .contains("/etc/skiff/cni/99-lo.conf"),
        "{cni}"
    );
    for name in [
        "kernel",
        "overlayfs",
        "seccomp",
        "user namespaces",
        "shim",
        "permissions",
    ] {
        assert_eq!(get(name)["level"], "ok", "{name}: {text}");
    }
    assert!(get("shim")["detail"]
        .as_str()
        .unwrap()
        .contains("/usr/bin/skiff-shim"));
    assert!(
        !all.iter().any(|f| f["level"] == "error"),
        "errors on the node: {text}"
    );
    assert!(ok, "skiff check exits 0 without errors: {text}");
}
