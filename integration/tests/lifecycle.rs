//! Pod life cycle as the node sees it: stop and remove leave nothing behind (mounts, processes,
//! directories, cgroups), skiffd restarts (kill -9) lose nothing, 50 pods in a loop leak nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::*;

async fn setup() -> (Registry, Skiffd, String, tempfile::TempDir) {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    (reg, d, img.reference, tempfile::tempdir().unwrap())
}

/// Everything of skiff's that is visible on the host: mounts under its roots, shim processes
/// started from its run root, pod and container directories, cgroups. skiffd's own two mounts,
/// there while it runs whatever the pods (the read-only shim binary and the pinned one-mount
/// namespace), are not counted.
fn footprint(d: &Skiffd) -> Vec<String> {
    let mut out = vec![];
    let roots = [
        d.root.display().to_string(),
        d.run_root.display().to_string(),
    ];
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        let mp = l.split(' ').nth(4).unwrap_or("");
        let daemons = mp.ends_with("/bin/skiff-shim") || mp.ends_with("/mnt-empty");
        if roots.iter().any(|r| mp.starts_with(r.as_str())) && !daemons {
            out.push(format!("mount {mp}"));
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&roots[1]) && cmd.contains("skiff-shim") {
            out.push(format!("process {cmd}"));
        }
    }
    for sub in ["pods", "containers"] {
        for base in [&d.root, &d.run_root] {
            for e in std::fs::read_dir(base.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(format!("dir {}", e.path().display()));
            }
        }
    }
    for p in d.cgroup_dirs() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_remove_leave_nothing_behind() {
    let (_reg, d, image, logs) = setup().await;
    let mut rt = d.runtime().await;
    let pcfg = pod_config("leak", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let a = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("a", &image, &["sleep", "3600"]),
    )
    .await;
    let _b = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("b", &image, &["sh", "-c", "sleep 3600 & sleep 3600"]),
    )
    .await;
    assert!(!footprint(&d).is_empty());
    // The container's processes are in its own cgroup, below the pod's, in every hierarchy.
    let pid = container_pid(&mut rt, &a).await;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for ctl in ["memory", "pids", "cpuset"] {
        let line = cgroups
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|x| x == ctl))
            })
            .unwrap_or_else(|| panic!("no {ctl} line in {cgroups}"));
        assert!(
            line.contains(&d.cgroup_root) && line.ends_with(&format!("/{a}")),
            "{ctl}: {line}"
        );
    }
    let cg = Path::new("/sys/fs/cgroup/memory").join(d.cgroup_root.trim_start_matches('/'));
    assert!(
        cg.read_dir().unwrap().any(|e| e.unwrap().path().is_dir()),
        "the pod has a cgroup"
    );
    // v1: the cpusets skiff makes pass their CPUs and memory nodes on to new children, so a
    // container's cpuset is made without a cpuset.cpus write (each rebuilds the kernel's
    // scheduling domains).
    if let Some(line) = cgroups
        .lines()
        .find(|l| l.split(':').nth(1) == Some("cpuset"))
    {
        let dir = Path::new("/sys/fs/cgroup/cpuset")
            .join(line.splitn(3, ':').nth(2).unwrap().trim_start_matches('/'));
        let parent = dir.parent().unwrap();
        let read = |p: &Path, f: &str| {
            std::fs::read_to_string(p.join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(read(parent, "cgroup.clone_children"), "1");
        assert!(!read(&dir, "cpuset.cpus").is_empty());
        assert_eq!(read(&dir, "cpuset.cpus"), read(parent, "cpuset.cpus"));
        assert_eq!(read(&dir, "cpuset.mems"), read(parent, "cpuset.mems"));
    }

    // Stop: every container exits, the shim goes, the pod is NotReady; idempotent.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let s = status(&mut rt, &a).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);
    let ps = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ps.status.unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    assert!(
        !footprint(&d).iter().any(|f| f.starts_with("process")),
        "{:?}",
        footprint(&d)
    );
    let err = create(
        &mut rt,
        &pod,
        &pcfg,
        container_config("late", &image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "no container in a stopped pod"
    );

    // Remove: nothing at all is left.
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(footprint(&d), Vec::<String>::new());
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let left = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_running_pod_and_container_directly() {
    let (_reg, d, image, logs) = setup().await;
    let mut rt = d.runtime().await;
    let pcfg = pod_config("direct", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let a = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("a", &image, &["sleep", "3600"]),
    )
    .await;
    let pid = container_pid(&mut rt, &a).await;
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    rt.remove_container(RemoveContainerRequest {
        container_id: a.clone(),
    })
    .await
    .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap()
                .contains(") Z ")
    );
    let err = status_err(&mut rt, &a).await;
    assert_eq!(err, tonic::Code::NotFound);
    run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("b", &image, &["sleep", "3600"]),
    )
    .await;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    assert_eq!(footprint(&d), Vec::<String>::new());
}

async fn status_err(rt: &mut Rt, id: &str) -> tonic::Code {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap_err()
    .code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_kill9_of_skiffd_and_exits_while_down_are_reported() {
    let (_reg, mut d, image, logs) = setup().await;
    let mut rt = d.runtime().await;
    let pcfg = pod_config("survivor", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let long = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config(
            "long",
            &image,
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        ),
    )
    .await;
    let short = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("short", &image, &["sh", "-c", "sleep 1; exit 7"]),
    )
    .await;
    let created = create(
        &mut rt,
        &pod,
        &pcfg,
        container_config("later", &image, &["sh", "-c", "exit 0"]),
    )
    .await
    .unwrap();
    let long_pid = container_pid(&mut rt, &long).await;
    d.kill9();
    // While skiffd is down: the short container exits with 7 and logs keep flowing.
    let log = logs.path().join("long/0.log");
    let before = log_records(&log).len();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        log_records(&log).len() > before,
        "logs flow while skiffd is down"
    );
    assert!(
        Path::new(&format!("/proc/{long_pid}")).exists(),
        "the container runs on"
    );
    d.restart();
    let mut rt = d.runtime().await;
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    let s = status(&mut rt, &long).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    let s = status(&mut rt, &short).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        s.exit_code, 7,
        "the exit that happened while skiffd was down"
    );
    assert_eq!(
        status(&mut rt, &created).await.state,
        ContainerState::ContainerCreated as i32
    );
    // The recovered pod is fully usable.
    start(&mut rt, &created).await.unwrap();
    assert_eq!(
        wait_exited(&mut rt, &created, Duration::from_secs(10))
            .await
            .exit_code,
        0
    );
    assert_eq!(sh(&mut rt, &long, "echo hi").await, "hi\n");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    assert_eq!(footprint(&d), Vec::<String>::new());
}

/// The session of process `pid` (`/proc/<pid>/stat`), None once it is gone.
fn session_of(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.split(' ').nth(3).map(str::to_string)
}

/// `read()` until `done` holds of it, for up to 2 s; its last value.
async fn settled<T>(read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let mut v = read();
    for _ in 0..100 {
        if done(&v) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        v = read();
    }
    v
}

/// A pod's shim is supervised by the shim's first process, as kubelet makes pods by default (no
/// PID namespace of their own) and with a PID namespace (the first process born its PID 1):
/// skiffd's child, in a session of its own, reaped by skiffd when the pod goes (no zombie left),
/// and living on through `kill -9` of skiffd; when it fails to set the pod up, its error comes
/// back and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_shim_is_skiffds_child_reaped_and_survives_kill9() {
    let (_reg, mut d, image, logs) = setup().await;
    let logs = logs.path().to_str().unwrap().to_string();
    let mut rt = d.runtime().await;
    let skiffd = d.pid().to_string();
    let kubelet_default = |name: &str| {
        with_namespaces(
            pod_config(name, &logs),
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        )
    };
    let with_pid_ns = |name: &str| pod_config(name, &logs);

    // A pod its shim fails to set up: the error comes back, and no process is left.
    let mut bad = kubelet_default("badsysctl");
    bad.linux.as_mut().unwrap().sysctls =
        [("net.ipv4.no_such_sysctl".to_string(), "1".to_string())].into();
    let err = run_pod_err(&mut rt, bad).await;
    assert!(
        err.message().contains("net.ipv4.no_such_sysctl"),
        "{}",
        err.message()
    );
    assert_eq!(footprint(&d), Vec::<String>::new());
    let zombies = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                try_proc_status(*p, "PPid").as_deref() == Some(skiffd.as_str())
                    && try_proc_status(*p, "State").is_some_and(|s| s.starts_with('Z'))
            })
            .collect::<Vec<_>>()
    };
    let left = settled(zombies, |z| z.is_empty()).await;
    assert_eq!(left, Vec::<i32>::new(), "zombie children of skiffd");

    // Removed while skiffd runs: skiffd reaps its shim.
    for (cfg, pid_ns) in [
        (kubelet_default("reaped"), false),
        (with_pid_ns("reaped-pidns"), true),
    ] {
        let pod = run_pod(&mut rt, &cfg).await;
        let shim = shim_pid(&mut rt, &pod).await;
        assert_eq!(proc_status(shim, "PPid"), skiffd);
        assert_eq!(session_of(shim).unwrap(), shim.to_string());
        // PID 1 of the pod's PID namespace when it has one.
        let ns = proc_status(shim, "NSpid");
        assert_eq!(
            ns.split_whitespace().count(),
            if pid_ns { 2 } else { 1 },
            "{ns}"
        );
        assert!(!pid_ns || ns.ends_with("\t1"), "{ns}");
        run(
            &mut rt,
            &pod,
            &cfg,
            container_config("c", &image, &["sleep", "3600"]),
        )
        .await;
        stop_and_remove_pod(&mut rt, &pod).await;
        let left = settled(|| try_proc_status(shim, "State"), Option::is_none).await;
        assert_eq!(left, None, "the shim's process is gone, not left a zombie");
    }

    // kill -9 of skiffd: the pods live on and are served again after the restart.
    let mut survivors = vec![];
    for cfg in [kubelet_default("survivor"), with_pid_ns("survivor-pidns")] {
        let pod = run_pod(&mut rt, &cfg).await;
        let shim = shim_pid(&mut rt, &pod).await;
        assert_eq!(proc_status(shim, "PPid"), skiffd);
        let c = run(
            &mut rt,
            &pod,
            &cfg,
            container_config("c", &image, &["sleep", "3600"]),
        )
        .await;
        survivors.push((pod, shim, c));
    }
    d.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, shim, _) in &survivors {
        let state = try_proc_status(*shim, "State").unwrap_or_default();
        assert!(state.starts_with('S'), "the shim runs on: {state}");
    }
    d.restart();
    let mut rt = d.runtime().await;
    let pods = list_pods(&mut rt).await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods
        .iter()
        .all(|p| p.state == PodSandboxState::SandboxReady as i32));
    for (pod, shim, c) in survivors {
        assert_eq!(
            status(&mut rt, &c).await.state,
            ContainerState::ContainerRunning as i32
        );
        assert_eq!(sh(&mut rt, &c, "echo hi").await, "hi\n");
        stop_and_remove_pod(&mut rt, &pod).await;
        let gone = try_proc_status(shim, "State").is_none_or(|s| s.starts_with('Z'));
        assert!(gone, "the shim stopped with its pod");
    }
    assert_eq!(footprint(&d), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pods_in_a_loop_leave_nothing_behind() {
    let (_reg, d, image, logs) = setup().await;
    let mut rt = d.runtime().await;
    let fds_before = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    for i in 0..50 {
        let pcfg = pod_config(&format!("loop{i}"), logs.path().to_str().unwrap());
        let pod = run_pod(&mut rt, &pcfg).await;
        let c = run(
            &mut rt,
            &pod,
            &pcfg,
            container_config("c", &image, &["sleep", "60"]),
        )
        .await;
        assert_eq!(
            status(&mut rt, &c).await.state,
            ContainerState::ContainerRunning as i32
        );
        stop_and_remove_pod(&mut rt, &pod).await;
    }
    assert_eq!(footprint(&d), Vec::<String>::new());
    let fds_after = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    assert!(
        fds_after <= fds_before + 4,
        "skiffd fds {fds_before} -> {fds_after}"
    );
}

/// Page cache charged to the memory cgroups below the daemon's cgroup root (v1; dying
/// cgroups, removed but still holding pages, count too). None on cgroup v2.
fn charged_page_cache(d: &Skiffd) -> Option<u64> {
    let stat = Path::new("/sys/fs/cgroup/memory")
        .join(d.cgroup_root.trim_start_matches('/'))
        .join("memory.stat");
    let st = std::fs::read_to_string(stat).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("total_cache "))
        .and_then(|v| v.trim().parse().ok())
}

/// Removing a container (from a ready pod, or with its pod) reclaims the page cache charged
/// to it, here what it wrote to a volume, which outlives it. Otherwise the removed memory
/// cgroups stay in the kernel, dying, for as long as their pages stay cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_reclaims_the_page_cache_containers_left() {
    let (_reg, d, image, logs) = setup().await;
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipped: no cgroup v1 memory hierarchy");
        return;
    }
    let mut rt = d.runtime().await;
    let vol = tempfile::tempdir().unwrap();
    let pcfg = pod_config("cache", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    // Each writes two copies of busybox (the host's, about 1 MiB) to the volume.
    let writer = |name: &str| {
        let mut c = container_config(
            name,
            &image,
            &[
                "sh",
                "-c",
                &format!("cat /bin/busybox /bin/busybox > /vol/{name}"),
            ],
        );
        c.mounts = vec![Mount {
            container_path: "/vol".into(),
            host_path: vol.path().display().to_string(),
            ..Default::default()
        }];
        c
    };
    let size = 2 * std::fs::metadata("/bin/busybox").unwrap().len();
    let first = run(&mut rt, &pod, &pcfg, writer("w1")).await;
    let s = wait_exited(&mut rt, &first, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    let before = charged_page_cache(&d).unwrap();
    assert!(before >= size, "{before} bytes cached, {size} written");
    rt.remove_container(RemoveContainerRequest {
        container_id: first,
    })
    .await
    .unwrap();
    let after = charged_page_cache(&d).unwrap();
    assert!(
        after + size <= before,
        "RemoveContainer in a ready pod: {before} -> {after} bytes cached"
    );

    let second = run(&mut rt, &pod, &pcfg, writer("w2")).await;
    let s = wait_exited(&mut rt, &second, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert!(charged_page_cache(&d).unwrap() >= size);
    stop_and_remove_pod(&mut rt, &pod).await;
    let left = charged_page_cache(&d).unwrap();
    assert!(
        left < size / 4,
        "{left} bytes still cached after RemovePodSandbox"
    );
    assert_eq!(footprint(&d), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_shim_died_is_not_ready_and_removes_cleanly() {
    let (_reg, mut d, image, logs) = setup().await;
    let mut rt = d.runtime().await;
    // Host PID namespace: the container's process outlives its shim.
    let pcfg = with_namespaces(
        pod_config("orphan", logs.path().to_str().unwrap()),
        NamespaceMode::Pod,
        NamespaceMode::Node,
        NamespaceMode::Pod,
    );
    let pod = run_pod(&mut rt, &pcfg).await;
    let c = run(
        &mut rt,
        &pod,
        &pcfg,
        container_config("c", &image, &["sleep", "3600"]),
    )
    .await;
    let pid = container_pid(&mut rt, &c).await;
    let shim = shim_pid(&mut rt, &pod).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the orphan runs on"
    );
    // A restarted skiffd sees the pod's shim gone.
    d.restart();
    let mut rt = d.runtime().await;
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.status.unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    // Removing it kills what is left and leaves nothing.
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    let gone = !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(gone, "the orphaned container process was killed");
    assert_eq!(footprint(&d), Vec::<String>::new());
}

/// Creations run side by side, and a name is still given once: of 8 RunPodSandbox calls for
/// one pod name at once, and of 8 CreateContainer calls for one container name at once,
/// exactly one succeeds and the others are told which pod or container holds the name;
/// containers of different names are all made. The footprint is empty after removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_never_give_a_name_twice() {
    let (_reg, d, image, logs) = setup().await;
    let rt = d.runtime().await;
    let pcfg = pod_config("twin-pod", logs.path().to_str().unwrap());
    // Each call on a connection of its own, so that skiffd serves them on any of its threads.
    let pods = futures_util::future::join_all((0..8).map(|_| {
        let (d, pcfg) = (&d, pcfg.clone());
        async move {
            let mut rt = d.runtime().await;
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pcfg),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
        }
    }))
    .await;
    let made: Vec<&String> = pods.iter().flatten().collect();
    assert_eq!(made.len(), 1, "{pods:?}");
    let pod = made[0].clone();
    for e in pods.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains(&pod), "{}", e.message());
    }

    let attempt = |name: &str| {
        let (d, pod, pcfg) = (&d, pod.clone(), pcfg.clone());
        let cfg = container_config(name, &image, &["sleep", "3600"]);
        async move { create(&mut d.runtime().await, &pod, &pcfg, cfg).await }
    };
    // Rounds, for the calls to meet inside skiffd: it has as many threads as the node cores.
    for round in 0..4 {
        let name = format!("twin{round}");
        let twins = futures_util::future::join_all((0..8).map(|_| attempt(&name))).await;
        let made: Vec<&String> = twins.iter().flatten().collect();
        assert_eq!(made.len(), 1, "{name}: {twins:?}");
        for e in twins.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
            assert!(e.message().contains(made[0].as_str()), "{}", e.message());
        }
    }
    let names = ["n0", "n1", "n2", "n3", "n4", "n5"];
    for r in futures_util::future::join_all(names.iter().map(|n| attempt(n))).await {
        r.expect("CreateContainer of a name of its own");
    }
    let mut rt = rt.clone();
    let mut listed: Vec<String> = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.metadata.unwrap().name)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["n0", "n1", "n2", "n3", "n4", "n5", "twin0", "twin1", "twin2", "twin3"]
    );
    stop_and_remove_pod(&mut rt, &pod).await;
    assert_eq!(footprint(&d), Vec::<String>::new());
}

/// Container starts take turns (`max_concurrent_starts`, here 1), and a start that is slow (a
/// runtime hook that sleeps 3.1 s) gives its turn up after 100 ms: a second container starts and
/// runs while the first is still starting, instead of waiting the 3 s behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_does_not_hold_back_the_next() {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/turns", "v1")
        .await;
    let specs = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "skiff.test/turns",
        "devices": [{"name": "slow", "containerEdits": {"hooks": [
            {"hookName": "createRuntime", "path": "/bin/sleep", "args": ["sleep", "3.1"],
             "timeout": 30}
        ]}}]
    });
    std::fs::write(specs.path().join("turns.json"), spec.to_string()).unwrap();
    let d = Skiffd::start_with(
        &[&reg.host],
        Some(&format!(
            "cdi_spec_dirs = [\"{}\"]\nmax_concurrent_starts = 1\n",
            specs.path().display()
        )),
        &[],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let cfg = status_info(&mut rt, "config").await;
    assert_eq!(cfg["maxConcurrentStarts"], 1, "{cfg}");

    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("turns", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut slow = container_config("slow", &img.reference, &["sleep", "600"]);
    slow.cdi_devices = vec![CdiDevice {
        name: "skiff.test/turns=slow".into(),
    }];
    let slow = create(&mut rt, &pod, &pcfg, slow).await.unwrap();
    let quick = container_config("quick", &img.reference, &["sleep", "600"]);
    let quick = create(&mut rt, &pod, &pcfg, quick).await.unwrap();

    let began = std::time::Instant::now();
    let slow_start = {
        let mut rt = rt.clone();
        let slow = slow.clone();
        tokio::spawn(async move { start(&mut rt, &slow).await })
    };
    // The slow start has its turn (its hook runs) before the quick one asks for one.
    let hook_runs = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x003.1\x00")
        })
    };
    while !hook_runs() {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the hook never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start(&mut rt, &quick).await.unwrap();
    assert!(
        !slow_start.is_finished(),
        "the slow start finished before the quick one: it was not slow"
    );
    assert_eq!(
        status(&mut rt, &quick).await.state,
        ContainerState::ContainerRunning as i32
    );
    slow_start.await.unwrap().unwrap();
    assert!(began.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        status(&mut rt, &slow).await.state,
        ContainerState::ContainerRunning as i32
    );
    teardown_pods(&mut rt, vec![pod]).await;
}
