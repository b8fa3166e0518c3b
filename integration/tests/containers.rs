//! Container behaviour end to end: logs, exec, stop, mounts and their propagation, bad input.

mod common;

use std::time::{Duration, Instant};

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
    pcfg: PodSandboxConfig,
    pod: String,
}

async fn env(name: &str) -> Env {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config("StopSignal", "SIGUSR1".into())
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config(name, logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    Env {
        _reg: reg,
        d,
        rt,
        image: img.reference,
        logs,
        pcfg,
        pod,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_split_into_partials_and_reopened() {
    let mut e = env("logs").await;
    // A 40000-byte line (F after two 16 KiB P pieces), a normal line, and a final unterminated
    // chunk (P).
    let script = "head -c 40000 /dev/zero | tr '\\0' a; echo; echo short; printf tail";
    let id = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("big", &e.image, &["sh", "-c", script]),
    )
    .await;
    assert_eq!(
        wait_exited(&mut e.rt, &id, Duration::from_secs(10))
            .await
            .exit_code,
        0
    );
    let path = e.logs.path().join("big/0.log");
    let recs = log_records(&path);
    let tags: Vec<(&str, &str, usize)> = recs
        .iter()
        .map(|(s, t, c)| (s.as_str(), t.as_str(), c.len()))
        .collect();
    assert_eq!(
        tags,
        vec![
            ("stdout", "P", 16384),
            ("stdout", "P", 16384),
            ("stdout", "F", 40000 - 2 * 16384),
            ("stdout", "F", 5),
            ("stdout", "P", 4),
        ]
    );
    // Every line starts with an RFC 3339 timestamp with nanoseconds, in UTC.
    let text = std::fs::read_to_string(&path).unwrap();
    for l in text.lines() {
        let ts = l.split(' ').next().unwrap();
        assert_eq!(ts.len(), 30, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }

    // Rotation: kubelet renames the file away and asks for a reopen; new lines go to a new file.
    let id = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config(
            "rot",
            &e.image,
            &[
                "sh",
                "-c",
                "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
            ],
        ),
    )
    .await;
    let path = e.logs.path().join("rot/0.log");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = e.logs.path().join("rot/0.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    e.rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = log_records(&rotated).len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        log_records(&rotated).len(),
        before,
        "the old file no longer grows"
    );
    let after = log_records(&path);
    assert!(!after.is_empty(), "new lines go to the reopened file");
    assert!(after[0].2.starts_with("line"));
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let err =
        e.rt.reopen_container_log(ReopenContainerLogRequest { container_id: id })
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_container_logs_as_stdout() {
    let mut e = env("tty").await;
    let mut c = container_config(
        "t",
        &e.image,
        &["sh", "-c", "test -t 1 && echo is-a-tty; echo oops >&2"],
    );
    c.tty = true;
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    assert_eq!(
        wait_exited(&mut e.rt, &id, Duration::from_secs(10))
            .await
            .exit_code,
        0
    );
    let recs = log_records(&e.logs.path().join("t/0.log"));
    let lines: Vec<(&str, &str)> = recs
        .iter()
        .map(|(s, _, c)| (s.as_str(), c.trim_end_matches('\r')))
        .collect();
    assert_eq!(lines, vec![("stdout", "is-a-tty"), ("stdout", "oops")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_output_exit_code_and_timeout() {
    let mut e = env("exec").await;
    let id = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("c", &e.image, &["sleep", "3600"]),
    )
    .await;
    let r = exec(
        &mut e.rt,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        5,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!(r.exit_code, 7);
    // The command runs where the container runs: its mount namespace and root.
    let r = exec(&mut e.rt, &id, &["cat", "/etc/hostname"], 5)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "exec");
    // A background child keeping stdout open past the command's exit: what the command wrote
    // is still the answer.
    let r = exec(
        &mut e.rt,
        &id,
        &["sh", "-c", "echo before; sleep 30 & echo after"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "before\nafter\n");
    assert_eq!(r.exit_code, 0);
    // A timeout kills the command and says so.
    let t = Instant::now();
    let err = exec(
        &mut e.rt,
        &id,
        &["sh", "-c", "echo started > /tmp/marker; sleep 77"],
        1,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let left = exec(
        &mut e.rt,
        &id,
        &[
            "sh",
            "-c",
            "cat /tmp/marker; ps 2>/dev/null; cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
        ],
        5,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&left.stdout);
    assert!(out.contains("started"), "{out}");
    assert!(
        !out.contains("sleep 77"),
        "the timed-out command was killed: {out}"
    );
    // An unknown command is an error naming it; the container keeps running.
    let err = exec(&mut e.rt, &id, &["no-such-command"], 5)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("no-such-command"),
        "{}",
        err.message()
    );
    assert_eq!(
        status(&mut e.rt, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let err = exec(&mut e.rt, "nope", &["true"], 5).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_the_stop_signal_then_kills_after_the_timeout() {
    let mut e = env("stop").await;
    // Ignores the image's stop signal (SIGUSR1) and SIGTERM.
    let c = container_config(
        "stubborn",
        &e.image,
        &[
            "sh",
            "-c",
            "trap '' USR1 TERM; echo ready > /tmp/ready; while true; do sleep 0.1; done",
        ],
    );
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    wait_ready_file(&mut e.rt, &id).await;
    let t = Instant::now();
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "waited the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    let s = status(&mut e.rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137, "SIGKILL");
    // Idempotent.
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .unwrap();

    // A process that honours the stop signal exits at once, by that signal.
    let c = container_config(
        "polite",
        &e.image,
        &[
            "sh",
            "-c",
            "trap 'exit 42' USR1; echo ready > /tmp/ready; while true; do sleep 0.1; done",
        ],
    );
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    wait_ready_file(&mut e.rt, &id).await;
    let t = Instant::now();
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 30,
    })
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(status(&mut e.rt, &id).await.exit_code, 42);
    // A container starts once.
    let err = start(&mut e.rt, &id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

fn mount_propagation_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    // A shared mount point on the host, as /var/lib/kubelet is on real nodes.
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    use nix::mount::{mount, MsFlags};
    mount(
        Some(&shared),
        &shared,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        &shared,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    (dir, shared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mounts_readonly_and_propagation() {
    let mut e = env("mounts").await;
    let (_fx, shared) = mount_propagation_fixture();
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("host.txt"), "from host").unwrap();
    let mut c = container_config("m", &e.image, &["sleep", "1000"]);
    let m = |cp: &str, hp: &str, ro: bool, p: MountPropagation| skiff_proto::cri::Mount {
        container_path: cp.into(),
        host_path: hp.into(),
        readonly: ro,
        propagation: p as i32,
        ..Default::default()
    };
    let s = shared.to_str().unwrap();
    c.mounts = vec![
        m(
            "/data",
            vol.path().to_str().unwrap(),
            false,
            MountPropagation::PropagationPrivate,
        ),
        m(
            "/ro",
            vol.path().to_str().unwrap(),
            true,
            MountPropagation::PropagationPrivate,
        ),
        m("/private", s, false, MountPropagation::PropagationPrivate),
        m(
            "/slave",
            s,
            false,
            MountPropagation::PropagationHostToContainer,
        ),
        m(
            "/bidir",
            s,
            false,
            MountPropagation::PropagationBidirectional,
        ),
        m(
            "/new/dir/deep",
            vol.path().to_str().unwrap(),
            false,
            MountPropagation::PropagationPrivate,
        ),
    ];
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    assert_eq!(sh(&mut e.rt, &id, "cat /data/host.txt").await, "from host");
    sh(&mut e.rt, &id, "echo from container > /data/c.txt").await;
    assert_eq!(
        std::fs::read_to_string(vol.path().join("c.txt")).unwrap(),
        "from container\n"
    );
    let r = exec(&mut e.rt, &id, &["sh", "-c", "echo x > /ro/nope"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{:?}",
        r
    );
    assert_eq!(
        sh(&mut e.rt, &id, "cat /new/dir/deep/host.txt").await,
        "from host"
    );

    // A mount made on the host under the shared dir reaches rslave and rshared, not private.
    let sub = shared.join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(sub.join("marker"), "host-mount").unwrap();
    let seen = |p: &str| format!("cat {p}/sub/marker 2>/dev/null || echo none");
    assert_eq!(
        sh(&mut e.rt, &id, &seen("/slave")).await.trim(),
        "host-mount"
    );
    assert_eq!(
        sh(&mut e.rt, &id, &seen("/bidir")).await.trim(),
        "host-mount"
    );
    assert_eq!(sh(&mut e.rt, &id, &seen("/private")).await.trim(), "none");
    // A mount made in the container under rshared reaches the host; under rslave it does not.
    // Mounting needs CAP_SYS_ADMIN, which containers do not have: do it from a helper sharing
    // the container's mount namespace.
    let pid = container_pid(&mut e.rt, &id).await;
    let st = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "/bin/busybox", "sh", "-c"])
        .arg("busybox mkdir -p /bidir/fromc /slave/fromc2 && busybox mount -t tmpfs none /bidir/fromc && busybox mount -t tmpfs none /slave/fromc2 && echo c > /bidir/fromc/m")
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(shared.join("fromc/m")).unwrap(),
        "c\n"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&format!("{}/fromc2 ", s)),
        "rslave mounts stay in the container"
    );
    let _ = nix::mount::umount2(&shared.join("fromc"), nix::mount::MntFlags::MNT_DETACH);
    let _ = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH);
    e.rt.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    let _ = nix::mount::umount2(&shared, nix::mount::MntFlags::MNT_DETACH);
}

/// A working directory through /proc's magic links (a descriptor the container's init may
/// hold, CVE-2024-21626) is never entered: the start fails naming it, and a symlink in the
/// image is followed inside the root only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_directories_stay_inside_the_root() {
    let mut e = env("cwd").await;
    for wd in ["/proc/self/fd/3", "/proc/self/cwd/x", "/proc/1/root"] {
        let mut c = container_config(&format!("c{}", wd.len()), &e.image, &["pwd"]);
        c.working_dir = wd.into();
        let id = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c)
            .await
            .expect("CreateContainer");
        let err = start(&mut e.rt, &id).await.unwrap_err();
        assert!(err.message().contains("cwd"), "{wd}: {}", err.message());
    }
    // A path with `..` in it resolves inside the root (created there as needed).
    let mut c = container_config("viasym", &e.image, &["sh", "-c", "pwd; ls -d /real/dir"]);
    c.working_dir = "/tmp/../real/dir".into();
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let st = wait_exited(&mut e.rt, &id, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 0);
}

/// kubelet does not bound terminationGracePeriodSeconds: a StopContainer timeout far past what a
/// clock can hold waits for the stop signal to work, and answers once it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_stop_timeout_waits_and_answers() {
    let mut e = env("hugestop").await;
    let id = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config(
            "c",
            &e.image,
            &[
                "sh",
                "-c",
                "trap 'exit 0' USR1; echo ready > /tmp/ready; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    wait_ready_file(&mut e.rt, &id).await;
    let t = Instant::now();
    e.rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: i64::MAX,
    })
    .await
    .expect("StopContainer with timeout i64::MAX");
    assert!(t.elapsed() < Duration::from_secs(10));
    let st = wait_exited(&mut e.rt, &id, Duration::from_secs(5)).await;
    assert_eq!(
        st.exit_code, 0,
        "the stop signal (the image's SIGUSR1) ended it"
    );
}

/// On a node whose run root lies on a shared mount (systemd makes / shared), a container with
/// an rshared volume mounts nothing of its own on the host, and its pod is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rshared_volume_leaves_no_mount_on_the_host_and_its_pod_is_removed() {
    require_root();
    let (_run_fx, run_shared) = mount_propagation_fixture();
    let (_vol_fx, vol) = mount_propagation_fixture();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/busybox", "v1")
        .await;
    let run_root = run_shared.join("run");
    let d = Skiffd::start_with(
        &[&reg.host],
        None,
        &["--run-root", run_root.to_str().unwrap()],
    );
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("rshared", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut c = container_config("c", &img.reference, &["sleep", "1000"]);
    c.mounts = vec![skiff_proto::cri::Mount {
        container_path: "/bidir".into(),
        host_path: vol.display().to_string(),
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let id = run(&mut rt, &pod, &pcfg, c).await;
    assert_eq!(
        sh(&mut rt, &id, "echo ok > /bidir/f; cat /bidir/f").await,
        "ok\n"
    );
    let bundle = run_root.join("containers").join(&id);
    let host_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                l.contains(&format!("{} ", bundle.display()))
                    || l.contains(&format!("{}/", bundle.display()))
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        host_mounts(),
        Vec::<String>::new(),
        "the container's mounts stay in it"
    );
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("RemovePodSandbox");
    assert!(!bundle.exists(), "{} is removed", bundle.display());
    drop(rt);
    drop(d);
    for m in [&vol, &run_shared] {
        let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_by_field_and_leave_nothing() {
    let mut e = env("bad").await;
    let records_before = std::fs::read_dir(e.d.root.join("containers"))
        .unwrap()
        .count();
    let cases: Vec<(ContainerConfig, tonic::Code, &str)> = vec![
        (
            {
                // A group without a user (api.proto: only with run_as_user or
                // run_as_username).
                let mut c = container_config("group", &e.image, &["true"]);
                c.linux = Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        run_as_group: Some(Int64Value { value: 1234 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                c
            },
            tonic::Code::InvalidArgument,
            "run_as_group",
        ),
        (
            container_config("nul", &e.image, &["echo", "a\0b"]),
            tonic::Code::InvalidArgument,
            "config.command[1]: holds a NUL byte",
        ),
        (
            {
                let mut c = container_config("nulenv", &e.image, &["true"]);
                c.envs.push(KeyValue {
                    key: "K".into(),
                    value: "v\0".into(),
                });
                c
            },
            tonic::Code::InvalidArgument,
            "config.envs[0].value",
        ),
        (
            {
                let mut c = container_config("a", &e.image, &["true"]);
                c.log_path = "../escape.log".into();
                c
            },
            tonic::Code::InvalidArgument,
            "log_path",
        ),
        (
            {
                let mut c = container_config("b", &e.image, &["true"]);
                c.log_path = "/abs.log".into();
                c
            },
            tonic::Code::InvalidArgument,
            "log_path",
        ),
        (
            {
                let mut c = container_config("c", &e.image, &["true"]);
                c.mounts = vec![skiff_proto::cri::Mount {
                    container_path: "rel".into(),
                    host_path: "/tmp".into(),
                    ..Default::default()
                }];
                c
            },
            tonic::Code::InvalidArgument,
            "mounts[0].container_path",
        ),
        (
            {
                let mut c = container_config("d", &e.image, &["true"]);
                c.mounts = vec![skiff_proto::cri::Mount {
                    container_path: "/x".into(),
                    host_path: "relative".into(),
                    ..Default::default()
                }];
                c
            },
            tonic::Code::InvalidArgument,
            "mounts[0].host_path",
        ),
        (
            container_config("e", "127.0.0.1:1/not/pulled:v1", &["true"]),
            tonic::Code::NotFound,
            "not/pulled",
        ),
        (
            {
                let mut c = container_config("f", &e.image, &[]);
                c.image = None;
                c
            },
            tonic::Code::InvalidArgument,
            "config.image",
        ),
        (
            {
                let mut c = container_config("g", &e.image, &["true"]);
                c.metadata = None;
                c
            },
            tonic::Code::InvalidArgument,
            "metadata",
        ),
        (
            {
                let mut c = container_config("h", &e.image, &["true"]);
                c.linux = Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        run_as_username: "ghost".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                c
            },
            tonic::Code::InvalidArgument,
            "ghost",
        ),
        (
            {
                let mut c = container_config("i", &e.image, &["true"]);
                c.linux = Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        capabilities: Some(Capability {
                            add_capabilities: vec!["CAP_FLY".into()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                c
            },
            tonic::Code::InvalidArgument,
            "CAP_FLY",
        ),
    ];
    for (cfg, code, needle) in cases {
        let err = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), cfg)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{needle}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{needle}: {}",
            err.message()
        );
    }
    let err = create(
        &mut e.rt,
        "no-such-pod",
        &e.pcfg.clone(),
        container_config("z", &e.image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        std::fs::read_dir(e.d.root.join("containers"))
            .unwrap()
            .count(),
        records_before
    );
    assert_eq!(
        std::fs::read_dir(e.d.run_root.join("containers"))
            .unwrap()
            .count(),
        0
    );
    let list =
        e.rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(list.is_empty());
    // A command that does not exist fails at start, with the reason in the status.
    let id = create(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("nocmd", &e.image, &["/no/such/binary"]),
    )
    .await
    .unwrap();
    let err = start(&mut e.rt, &id).await.unwrap_err();
    assert!(
        err.message().contains("/no/such/binary"),
        "{}",
        err.message()
    );
    let s = status(&mut e.rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.reason, "StartError");
    assert_eq!(s.exit_code, 128);
    // The same name in the same pod is refused while the first exists.
    let err = create(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("nocmd", &e.image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_status_fields() {
    let mut e = env("lists").await;
    let a = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("a", &e.image, &["sleep", "100"]),
    )
    .await;
    let b = create(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("b", &e.image, &["true"]),
    )
    .await
    .unwrap();
    let all =
        e.rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(all.len(), 2);
    let f = |filter: ContainerFilter| ListContainersRequest {
        filter: Some(filter),
    };
    let mut rt = e.rt.clone();
    let ids = |r: ListContainersRequest| {
        let mut rt = rt.clone();
        async move {
            let mut v: Vec<String> = rt
                .list_containers(r)
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        ids(f(ContainerFilter {
            id: a[..12].to_string(),
            ..Default::default()
        }))
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        ids(f(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerCreated as i32
            }),
            ..Default::default()
        }))
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        ids(f(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32
            }),
            ..Default::default()
        }))
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        ids(f(ContainerFilter {
            label_selector: [("c".to_string(), "b".to_string())].into(),
            ..Default::default()
        }))
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        ids(f(ContainerFilter {
            pod_sandbox_id: "nope".into(),
            ..Default::default()
        }))
        .await
        .len(),
        0
    );
    assert_eq!(
        ids(f(ContainerFilter {
            pod_sandbox_id: e.pod.clone(),
            ..Default::default()
        }))
        .await
        .len(),
        2
    );
    let s = status(&mut rt, &a).await;
    assert_eq!(s.image.unwrap().image, e.image);
    assert!(s.image_ref.contains("@sha256:"), "{}", s.image_ref);
    assert!(s.image_id.starts_with("sha256:"));
    assert_eq!(
        s.log_path,
        e.logs.path().join("a/0.log").display().to_string()
    );
    assert_eq!(s.labels["c"], "a");
    let pods =
        e.rt.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [("app".to_string(), "lists".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    let pods =
        e.rt.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue {
                    state: PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty());
    let st =
        e.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: e.pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.status.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let shim_pid = info["pid"].as_i64().unwrap();
    assert!(std::fs::read_to_string(format!("/proc/{shim_pid}/cmdline"))
        .unwrap()
        .contains("skiff-shim"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts_cover_submounts() {
    let mut e = env("rro").await;
    let vol = tempfile::tempdir().unwrap();
    let sub = vol.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _u = Unmount(sub.clone());
    let host = vol.path().to_str().unwrap().to_string();
    let mk = |cp: &str, rro: bool| skiff_proto::cri::Mount {
        container_path: cp.into(),
        host_path: host.clone(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    let mut c = container_config("m", &e.image, &["sleep", "1000"]);
    c.mounts = vec![mk("/ro", false), mk("/rro", true)];
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let write = |p: &'static str| {
        let mut rt = e.rt.clone();
        let id = id.clone();
        async move {
            let r = exec(&mut rt, &id, &["sh", "-c", &format!("echo x > {p}")], 5)
                .await
                .unwrap();
            (r.exit_code, String::from_utf8_lossy(&r.stderr).into_owned())
        }
    };
    // Plain read-only covers the top mount only; recursive read-only covers the submount too.
    let (code, err) = write("/ro/top").await;
    assert!(code != 0 && err.contains("Read-only"), "{err}");
    assert_eq!(write("/ro/sub/x").await.0, 0);
    assert!(sub.join("x").exists());
    let (code, err) = write("/rro/sub/y").await;
    assert!(code != 0 && err.contains("Read-only"), "{err}");
    assert!(!sub.join("y").exists());

    let mut bad = container_config("bad", &e.image, &["true"]);
    bad.mounts = vec![skiff_proto::cri::Mount {
        readonly: false,
        ..mk("/x", true)
    }];
    let err = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("mounts[0].recursive_read_only"),
        "{}",
        err.message()
    );
    let st =
        e.rt.status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let f = st.runtime_handlers[0].features.unwrap();
    assert!(f.recursive_read_only_mounts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported_as_oomkilled() {
    let mut e = env("oom").await;
    // Keeps 200 MiB in memory under a 16 MiB limit (no swap).
    let mut c = container_config(
        "hog",
        &e.image,
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | busybox tail -c 200000000 > /dev/null",
        ],
    );
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            memory_swap_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let s = wait_exited(&mut e.rt, &id, Duration::from_secs(30)).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_points_are_made_inside_the_rootfs_never_through_symlinks_out() {
    require_root();
    // An image whose /escape is a symlink to a directory on the host.
    let victim = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(
            Layer::busybox().symlink("escape", victim.path().to_str().unwrap()),
            Compression::Gzip,
        )
        .push(&reg.host, "test/evil", "v1")
        .await;
    let vol = tempfile::tempdir().unwrap();
    let d = Skiffd::start(&[&reg.host]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("evil", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut c = container_config("c", &img.reference, &["sleep", "100"]);
    c.mounts = vec![skiff_proto::cri::Mount {
        container_path: "/escape/mnt".into(),
        host_path: vol.path().to_str().unwrap().into(),
        ..Default::default()
    }];
    let id = run(&mut rt, &pod, &pcfg, c).await;
    // The mount point was created inside the rootfs, where the symlink resolves as if the
    // rootfs were /; the host directory it names is untouched.
    assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
    std::fs::write(vol.path().join("v"), "vol").unwrap();
    assert_eq!(sh(&mut rt, &id, "cat /escape/mnt/v").await, "vol");
}

fn cg_file(ctl: &str, cgroup: &str, file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new("/sys/fs/cgroup")
            .join(ctl)
            .join(cgroup.trim_start_matches('/'))
            .join(file),
    )
    .unwrap_or_else(|e| panic!("{ctl}/{cgroup}/{file}: {e}"))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_land_in_the_cgroup_and_update_live() {
    let mut e = env("res").await;
    let mut c = container_config("limited", &e.image, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            // What kubelet sends for every page size the node has (this host mounts no hugetlb
            // hierarchy: accepted; the node VM checks the limit on cgroup v2).
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let cg = container_info(&mut e.rt, &id).await["cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    // The kernel's view, from the container's cgroup files.
    assert_eq!(
        cg_file("memory", &cg, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cg_file("cpu", &cg, "cpu.shares"), "512");
    assert_eq!(cg_file("cpu", &cg, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cg_file("cpu", &cg, "cpu.cfs_period_us"), "100000");
    assert_eq!(cg_file("cpuset", &cg, "cpuset.cpus"), "0");
    // The container's process is in that cgroup.
    let pid = container_pid(&mut e.rt, &id).await;
    assert!(cg_file("memory", &cg, "cgroup.procs")
        .lines()
        .any(|l| l == pid.to_string()));

    e.rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            cpu_shares: 256,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    assert_eq!(
        cg_file("memory", &cg, "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(cg_file("cpu", &cg, "cpu.shares"), "256");
    let s = status(&mut e.rt, &id).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    let r = s.resources.unwrap().linux.unwrap();
    assert_eq!(r.memory_limit_in_bytes, 128 << 20);
    // The status shows what the cgroup holds, read from each controller's own files: a
    // change made behind skiff's back shows, the recorded request does not.
    let cpu_dir = std::path::Path::new("/sys/fs/cgroup/cpu").join(cg.trim_start_matches('/'));
    std::fs::write(cpu_dir.join("cpu.shares"), "300").unwrap();
    std::fs::write(cpu_dir.join("cpu.cfs_quota_us"), "25000").unwrap();
    let r = status(&mut e.rt, &id)
        .await
        .resources
        .unwrap()
        .linux
        .unwrap();
    assert_eq!(
        (
            r.cpu_shares,
            r.cpu_quota,
            r.cpu_period,
            r.memory_limit_in_bytes
        ),
        (300, 25000, 100000, 128 << 20)
    );

    // Absurd values are refused by field, at create and at update; nothing is created.
    let before =
        e.rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .len();
    let mut bad = container_config("bad", &e.image, &["true"]);
    bad.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("memory_limit_in_bytes"),
        "{}",
        err.message()
    );
    let after =
        e.rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .len();
    assert_eq!(before, after);
    let err =
        e.rt.update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_shares: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cpu_shares"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_move_with_cpu_memory_and_writes() {
    let mut e = env("stats").await;
    let burner = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("burn", &e.image, &["sh", "-c", "while :; do :; done"]),
    )
    .await;
    // Holds ~60 MB in memory.
    let holder = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config(
            "hold",
            &e.image,
            &[
                "sh",
                "-c",
                "head -c 60000000 /dev/zero | busybox tail -c 60000000 | sleep 1000",
            ],
        ),
    )
    .await;
    let stats = |rt: &mut Rt, id: String| {
        let mut rt = rt.clone();
        async move {
            rt.container_stats(ContainerStatsRequest { container_id: id })
                .await
                .expect("ContainerStats")
                .into_inner()
                .stats
                .expect("stats")
        }
    };
    let a = stats(&mut e.rt, burner.clone()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let b = stats(&mut e.rt, burner.clone()).await;
    let (ca, cb) = (a.cpu.unwrap(), b.cpu.unwrap());
    let (ua, ub) = (
        ca.usage_core_nano_seconds.unwrap().value,
        cb.usage_core_nano_seconds.unwrap().value,
    );
    assert!(ub > ua + 300_000_000, "a busy loop burns CPU: {ua} -> {ub}");
    let cores = cb.usage_nano_cores.unwrap().value;
    assert!(cores > 300_000_000, "nano cores {cores}");
    assert_eq!(b.attributes.unwrap().id, burner);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = stats(&mut e.rt, holder.clone()).await;
    let m = h.memory.unwrap();
    let ws = m.working_set_bytes.unwrap().value;
    assert!(ws > 50_000_000, "working set {ws}");
    assert!(m.usage_bytes.unwrap().value >= ws);
    assert!(m.page_faults.unwrap().value > 0);

    let before = h.writable_layer.unwrap().used_bytes.unwrap().value;
    sh(
        &mut e.rt,
        &holder,
        "head -c 3000000 /dev/urandom > /tmp/blob",
    )
    .await;
    let after = stats(&mut e.rt, holder.clone())
        .await
        .writable_layer
        .unwrap()
        .used_bytes
        .unwrap()
        .value;
    assert!(
        after >= before + 2_900_000,
        "writable layer {before} -> {after}"
    );

    let listed =
        e.rt.list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: e.pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 2);
    let err =
        e.rt.container_stats(ContainerStatsRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_stats_sum_the_pod_and_count_its_network_and_processes() {
    let mut e = env("podstats").await;
    let a = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("a", &e.image, &["sh", "-c", "while :; do :; done"]),
    )
    .await;
    run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("b", &e.image, &["sleep", "1000"]),
    )
    .await;
    // A veth pair inside the pod's own network namespace (made by this test, through the pod's
    // pinned namespace) and packets sent out of one end: they never leave the pod.
    let netns = e.d.run_root.join("pods").join(&e.pod).join("ns/net");
    skiff_integration::veth_in(&netns, "10.251.0.1/24");
    sh(
        &mut e.rt,
        &a.clone(),
        "busybox ping -c 3 -W 1 -i 0.2 10.251.0.2 >/dev/null 2>&1; true",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let st =
        e.rt.pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: e.pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(st.attributes.unwrap().id, e.pod);
    let l = st.linux.unwrap();
    assert!(l.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 300_000_000);
    assert!(l.memory.unwrap().usage_bytes.unwrap().value > 0);
    assert!(l.process.unwrap().process_count.unwrap().value >= 2);
    assert_eq!(l.containers.len(), 2);
    let net = l.network.unwrap();
    let eth0 = net.default_interface.expect("eth0 in the pod's namespace");
    assert!(eth0.tx_bytes.unwrap().value > 0, "{eth0:?}");
    assert!(net.interfaces.iter().all(|i| i.name != "lo"));

    let all =
        e.rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(all.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_default_devices_can_be_opened() {
    let mut e = env("devices").await;
    let id = run(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        container_config("d", &e.image, &["sleep", "1000"]),
    )
    .await;
    // The standard nodes work.
    assert_eq!(
        sh(
            &mut e.rt,
            &id,
            "echo x > /dev/null && head -c 4 /dev/zero | wc -c"
        )
        .await
        .trim(),
        "4"
    );
    // CAP_MKNOD lets a container create a node of any device, but the device cgroup refuses
    // to open one that is not allowed: /dev/fuse (c 10:229), which root opens on the host.
    let r = exec(
        &mut e.rt,
        &id,
        &[
            "sh",
            "-c",
            "busybox mknod /tmp/fuse c 10 229 && exec 3</tmp/fuse",
        ],
        5,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let cg = container_info(&mut e.rt, &id).await["cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    let list = cg_file("devices", &cg, "devices.list");
    assert!(
        list.contains("c 1:3 rwm") && !list.contains("a *:* rwm"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_as_the_kernel_sees_it() {
    let mut e = env("security").await;
    // skiffd's own soft limit lowered: a container inheriting it would show 1024.
    let node_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let lowered = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: node_hard,
    };
    // SAFETY: prlimit on skiffd's pid with a valid rlimit and no old-value pointer.
    let rc = unsafe {
        libc::prlimit(
            e.d.pid() as i32,
            libc::RLIMIT_NOFILE,
            &lowered,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0);
    // A pod started now: its shim inherits the lowered limit.
    let pcfg = pod_config("security-low", e.logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    // Default: root with the default capability set, in every set but the ambient one.
    let a = run(
        &mut e.rt,
        &pod,
        &pcfg,
        container_config("default", &e.image, &["sleep", "1000"]),
    )
    .await;
    let pid = container_pid(&mut e.rt, &a).await;
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
    // SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
    let default_caps: u64 = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]
        .iter()
        .map(|b| 1u64 << b)
        .sum();
    let hex = |v: u64| format!("{v:016x}");
    assert_eq!(proc_status(pid, "CapEff"), hex(default_caps));
    assert_eq!(proc_status(pid, "CapBnd"), hex(default_caps));
    assert_eq!(proc_status(pid, "CapAmb"), hex(0));
    assert_eq!(proc_status(pid, "CapInh"), hex(0));
    assert_eq!(proc_status(pid, "NoNewPrivs"), "0");
    // The default open-file limit: 1048576, or the node's hard limit when lower.
    let want = node_hard.min(1_048_576).to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f[3], f[4]), (want.as_str(), want.as_str()), "{line}");
    // Masked and read-only paths by default.
    assert_eq!(sh(&mut e.rt, &a, "wc -c < /proc/keys").await.trim(), "0");
    assert_eq!(
        sh(&mut e.rt, &a, "wc -c < /proc/timer_list").await.trim(),
        "0"
    );
    assert!(std::fs::metadata("/proc/timer_list").unwrap().len() == 0); // procfs reports 0
    assert!(!std::fs::read_to_string("/proc/timer_list")
        .unwrap()
        .is_empty());
    let r = exec(
        &mut e.rt,
        &a,
        &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"],
        5,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{r:?}"
    );

    // Dropped to one capability, a non-root user, no_new_privs and a read-only rootfs.
    let mut c = container_config("tight", &e.image, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            run_as_user: Some(Int64Value { value: 1000 }),
            no_new_privs: true,
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let b = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let pid = container_pid(&mut e.rt, &b).await;
    assert_eq!(proc_status(pid, "CapBnd"), hex(1 << 10));
    assert_eq!(
        proc_status(pid, "CapEff"),
        hex(0),
        "a non-root user keeps no effective caps: {}",
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(
        proc_status(pid, "Uid").split_whitespace().next(),
        Some("1000")
    );
    let r = exec(&mut e.rt, &b, &["sh", "-c", "echo x > /etc/new"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{r:?}"
    );
    // The pod's /etc/hosts volume and /dev/shm stay writable by design only where mounted rw;
    // the rootfs itself refuses writes even for root in the image's dirs.
    let r = exec(&mut e.rt, &b, &["sh", "-c", "echo x > /bin/new"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0);

    // An ambient capability reaches a non-root user's effective set.
    let mut c = container_config("ambient", &e.image, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            run_as_user: Some(Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let amb = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let pid = container_pid(&mut e.rt, &amb).await;
    assert_eq!(proc_status(pid, "CapAmb"), hex(1 << 10));
    assert_eq!(proc_status(pid, "CapEff"), hex(1 << 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_score_adj_and_supplemental_groups_policy() {
    let mut e = env("oomadj").await;
    let with = |name: &str, adj: i64| {
        let mut c = container_config(name, &e.image, &["sleep", "1000"]);
        c.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                oom_score_adj: adj,
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), with("up", 500)).await;
    let pid = container_pid(&mut e.rt, &id).await;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim(),
        "500"
    );
    // Lowering it needs CAP_SYS_RESOURCE, which root lacks on this machine: a clear error...
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lowers_need_cap = !nix::unistd::Uid::effective().is_root()
        || std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap() & (1 << 24) == 0)
            .unwrap_or(true);
    let id = create(
        &mut e.rt,
        &e.pod.clone(),
        &e.pcfg.clone(),
        with("down", own - 100),
    )
    .await
    .unwrap();
    let started = start(&mut e.rt, &id).await;
    if lowers_need_cap {
        let err = started.unwrap_err();
        assert!(err.message().contains("oom_score_adj"), "{}", err.message());
    }
    // ...and restrict_oom_score_adj raises it to skiffd's own instead.
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&reg.host, "test/b", "v1")
        .await;
    let d = Skiffd::start_with(&[&reg.host], Some("restrict_oom_score_adj = true\n"), &[]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("clamp", logs.path().to_str().unwrap());
    let pod = run_pod(&mut rt, &pcfg).await;
    let mut c = container_config("down", &img.reference, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            oom_score_adj: own - 100,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, &pcfg, c).await;
    let pid = container_pid(&mut rt, &id).await;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim(),
        own.to_string()
    );

    // SupplementalGroupsPolicy Strict: the image's /etc/group memberships do not count.
    let mut c = container_config("strict", &img.reference, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            supplemental_groups: vec![3000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, &pod, &pcfg, c).await;
    let pid = container_pid(&mut rt, &id).await;
    assert_eq!(proc_status(pid, "Groups"), "3000");
    let st = status(&mut rt, &id).await.user.unwrap().linux.unwrap();
    assert_eq!((st.gid, st.supplemental_groups), (1000, vec![1000, 3000]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_from_the_request_and_privileged_containers() {
    let mut e = env("privileged").await;
    // A device the request names (/dev/fuse, not a default one), read-only: it opens for
    // reading, not for writing.
    let mut c = container_config("dev", &e.image, &["sleep", "1000"]);
    c.devices = vec![Device {
        container_path: "/dev/myfuse".into(),
        host_path: "/dev/fuse".into(),
        permissions: "r".into(),
    }];
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    assert_eq!(
        sh(&mut e.rt, &id, "exec 3</dev/myfuse && echo opened")
            .await
            .trim(),
        "opened"
    );
    let r = exec(&mut e.rt, &id, &["sh", "-c", "exec 3>/dev/myfuse"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "write refused by the device cgroup");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{r:?}"
    );
    // A host path that is no device is refused by name.
    let mut bad = container_config("baddev", &e.image, &["true"]);
    bad.devices = vec![Device {
        container_path: "/dev/x".into(),
        host_path: "/etc/hostname".into(),
        permissions: "rw".into(),
    }];
    let err = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("devices[0].host_path"),
        "{}",
        err.message()
    );

    // Privileged: every capability the node has, the host's devices, nothing masked.
    let mut c = container_config("priv", &e.image, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let pid = container_pid(&mut e.rt, &id).await;
    let own_bnd = proc_status(std::process::id() as i32, "CapBnd");
    assert_eq!(proc_status(pid, "CapEff"), own_bnd);
    assert_eq!(
        sh(&mut e.rt, &id, "exec 3<>/dev/fuse && echo opened")
            .await
            .trim(),
        "opened",
        "host devices are there and usable"
    );
    assert_ne!(
        sh(&mut e.rt, &id, "wc -c < /proc/timer_list").await.trim(),
        "0"
    );
    let r = exec(
        &mut e.rt,
        &id,
        &["sh", "-c", "grep -w /sys /proc/self/mountinfo"],
        5,
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&r.stdout).contains(" rw,"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apparmor_profile_without_apparmor_is_refused() {
    let mut e = env("apparmor").await;
    if std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists() {
        eprintln!("this node has AppArmor: the refusal below is for nodes without it");
    }
    let mut c = container_config("aa", &e.image, &["true"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: security_profile::ProfileType::Localhost as i32,
                localhost_ref: "k8s-nginx".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("apparmor") && err.message().contains("k8s-nginx"),
        "{}",
        err.message()
    );
    // RuntimeDefault needs nothing where AppArmor is off.
    let mut c = container_config("rd", &e.image, &["true"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    assert_eq!(
        wait_exited(&mut e.rt, &id, Duration::from_secs(10))
            .await
            .exit_code,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selinux_options_without_selinux_are_accepted() {
    // As containerd and CRI-O: on a node without SELinux the options have no effect (the node
    // VM tests them with SELinux running).
    assert!(
        !std::path::Path::new("/sys/fs/selinux/enforce").exists(),
        "this test is for nodes without SELinux"
    );
    let mut e = env("selinux").await;
    let mut c = container_config("se", &e.image, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            selinux_options: Some(SeLinuxOption {
                user: "system_u".into(),
                role: "system_r".into(),
                r#type: "container_t".into(),
                level: "s0:c1,c2".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let pid = container_pid(&mut e.rt, &id).await;
    // It runs, with the node's (non-SELinux) view of its context unchanged from skiffd's.
    let own = std::fs::read_to_string("/proc/self/attr/current").unwrap_or_default();
    let its = std::fs::read_to_string(format!("/proc/{pid}/attr/current")).unwrap_or_default();
    assert_eq!(its, own);
    assert_eq!(
        status(&mut e.rt, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
}
