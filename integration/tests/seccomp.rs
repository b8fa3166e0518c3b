//! Seccomp end to end: RuntimeDefault, Unconfined and Localhost profiles as kubelet sends them,
//! the deprecated fields and legacy annotations, precedence, bad profiles, and the filter cache.
//! What a container may do is observed from inside it (a static probe making one syscall) and
//! from the kernel (`Seccomp:` in /proc/<pid>/status).

use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_integration::cri::*;
use skiff_integration::image::Compression;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::security_profile::ProfileType;
use skiff_proto::cri::*;

struct Env {
    _reg: Registry,
    d: Skiffd,
    rt: Rt,
    image: String,
    /// Plays kubelet's seccomp root (`seccomp_root` in skiffd's config).
    profiles: tempfile::TempDir,
    _logs: tempfile::TempDir,
    pcfg: PodSandboxConfig,
    pod: String,
}

fn repo_profile(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(name)
}

/// A skiffd whose seccomp root holds `prevent-chmod.json` (copied from profiles/), and a pod
/// made from `pcfg` (after `edit`).
async fn env(name: &str, edit: impl FnOnce(&mut PodSandboxConfig, &Path)) -> Env {
    env_with(name, "", edit).await
}

/// Like [`env`], with more skiffd config keys.
async fn env_with(
    name: &str,
    extra_config: &str,
    edit: impl FnOnce(&mut PodSandboxConfig, &Path),
) -> Env {
    require_root();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .layer(Layer::sysprobe(), Compression::Gzip)
        .push(&reg.host, "test/probe", "v1")
        .await;
    let profiles = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_profile("prevent-chmod.json"),
        profiles.path().join("prevent-chmod.json"),
    )
    .expect("profiles/prevent-chmod.json");
    let config = format!(
        "seccomp_root = \"{}\"\n{extra_config}",
        profiles.path().display()
    );
    let d = Skiffd::start_with(&[&reg.host], Some(&config), &[]);
    pull(&mut d.images().await, &img.reference).await;
    let mut rt = d.runtime().await;
    let logs = tempfile::tempdir().unwrap();
    let mut pcfg = pod_config(name, logs.path().to_str().unwrap());
    edit(&mut pcfg, profiles.path());
    let pod = run_pod(&mut rt, &pcfg).await;
    Env {
        _reg: reg,
        d,
        rt,
        image: img.reference,
        profiles,
        _logs: logs,
        pcfg,
        pod,
    }
}

fn profile(t: ProfileType, path: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t as i32,
        localhost_ref: path.into(),
    })
}

/// A long-running container with security context `sc`.
fn sleeper(e: &Env, name: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    let mut c = container_config(name, &e.image, &["sleep", "3600"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

async fn start_sleeper(e: &mut Env, name: &str, sc: LinuxContainerSecurityContext) -> String {
    let c = sleeper(e, name, sc);
    run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await
}

/// Runs `cmd` in the container: (exit code, stdout + stderr).
async fn probe(e: &mut Env, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = exec(&mut e.rt, id, cmd, 10).await.expect("ExecSync");
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out.trim().to_string())
}

fn seccomp_mode(pid: i32) -> String {
    proc_status(pid, "Seccomp")
}

/// The demo users know: chmod works under RuntimeDefault, and is refused by
/// `localhost/prevent-chmod.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prevent_chmod_profile_refuses_chmod() {
    let mut e = env("chmod", |_, _| {}).await;
    let script = "touch /tmp/f && chmod 600 /tmp/f && echo changed";
    for (name, seccomp, ok) in [
        ("default", profile(ProfileType::RuntimeDefault, ""), true),
        (
            "audited",
            profile(
                ProfileType::Localhost,
                &repo_profile("audit.json").display().to_string(),
            ),
            true,
        ),
        (
            "nochmod",
            profile(
                ProfileType::Localhost,
                &e.profiles
                    .path()
                    .join("prevent-chmod.json")
                    .display()
                    .to_string(),
            ),
            false,
        ),
    ] {
        let mut c = container_config(name, &e.image, &["sh", "-c", script]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                seccomp,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
        let st = wait_exited(&mut e.rt, &id, Duration::from_secs(10)).await;
        let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
        if ok {
            assert_eq!(st.exit_code, 0, "{name}: {log}");
            assert!(log.contains("changed"), "{name}: {log}");
        } else {
            assert_ne!(st.exit_code, 0, "{name}: {log}");
            assert!(log.contains("Operation not permitted"), "{name}: {log}");
        }
    }
}

/// RuntimeDefault refuses keyctl, unshare and mount while plain work runs; the kernel shows the
/// filter on the main process and on exec'd processes. Unconfined allows what capabilities
/// allow, and RuntimeDefault lets CAP_SYS_ADMIN through for the calls that need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_default_denies_what_unconfined_allows() {
    let mut e = env("default", |_, _| {}).await;
    let confined = start_sleeper(
        &mut e,
        "confined",
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::RuntimeDefault, ""),
            ..Default::default()
        },
    )
    .await;
    let pid = container_pid(&mut e.rt, &confined).await;
    assert_eq!(
        seccomp_mode(pid),
        "2",
        "Seccomp: 2 (filter) on the main process"
    );
    assert_eq!(proc_status(pid, "Seccomp_filters"), "1");
    let (code, status) = probe(&mut e, &confined, &["cat", "/proc/self/status"]).await;
    assert_eq!(code, 0);
    assert!(status.contains("Seccomp:\t2"), "{status}");
    let (code, out) = probe(
        &mut e,
        &confined,
        &["sh", "-c", "echo work > /tmp/w && cat /tmp/w"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "work"));
    for op in [&["keyctl"][..], &["unshare-user"], &["mount-tmpfs", "/tmp"]] {
        let mut cmd = vec!["sysprobe"];
        cmd.extend_from_slice(op);
        let (code, out) = probe(&mut e, &confined, &cmd).await;
        assert_eq!(code, 1, "{op:?} must be refused: {out}");
        assert!(out.contains("Operation not permitted"), "{op:?}: {out}");
    }

    // A syscall newer than every one the profile names (here: one no kernel has yet) gets
    // ENOSYS, as the C library's fallbacks expect, not EPERM.
    let (code, out) = probe(&mut e, &confined, &["sysprobe", "nr", "1000"]).await;
    assert_eq!((code, out.as_str()), (1, "nr: Function not implemented"));

    let free = start_sleeper(
        &mut e,
        "free",
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::Unconfined, ""),
            ..Default::default()
        },
    )
    .await;
    let pid = container_pid(&mut e.rt, &free).await;
    assert_eq!(seccomp_mode(pid), "0");
    for op in ["keyctl", "unshare-user"] {
        let (code, out) = probe(&mut e, &free, &["sysprobe", op]).await;
        assert_eq!((code, out.clone()), (0, format!("{op}: ok")), "{op}");
    }
    // Without CAP_SYS_ADMIN, mount is the capability's to refuse.
    let (code, _) = probe(&mut e, &free, &["sysprobe", "mount-tmpfs", "/tmp"]).await;
    assert_eq!(code, 1);

    let admin_caps = Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    for (name, seccomp) in [
        ("admin-free", profile(ProfileType::Unconfined, "")),
        ("admin-default", profile(ProfileType::RuntimeDefault, "")),
    ] {
        let id = start_sleeper(
            &mut e,
            name,
            LinuxContainerSecurityContext {
                seccomp,
                capabilities: admin_caps.clone(),
                ..Default::default()
            },
        )
        .await;
        let (code, out) = probe(&mut e, &id, &["sysprobe", "mount-tmpfs", "/tmp"]).await;
        assert_eq!((code, out.as_str()), (0, "mount-tmpfs: ok"), "{name}");
    }
}

/// A non-root container without no_new_privs: the filter is loaded while CAP_SYS_ADMIN is
/// still held, and the exec drops it again: the process ends with no capability at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_container_gets_the_filter_and_no_leftover_capability() {
    let mut e = env("nonroot", |_, _| {}).await;
    for (name, nnp) in [("plain", false), ("nnp", true)] {
        let id = start_sleeper(
            &mut e,
            name,
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::RuntimeDefault, ""),
                run_as_user: Some(Int64Value { value: 1000 }),
                no_new_privs: nnp,
                ..Default::default()
            },
        )
        .await;
        let pid = container_pid(&mut e.rt, &id).await;
        assert_eq!(seccomp_mode(pid), "2", "{name}");
        assert_eq!(proc_status(pid, "CapEff"), "0000000000000000", "{name}");
        assert_eq!(proc_status(pid, "CapPrm"), "0000000000000000", "{name}");
        assert_eq!(proc_status(pid, "NoNewPrivs"), if nnp { "1" } else { "0" });
        let (code, status) = probe(&mut e, &id, &["cat", "/proc/self/status"]).await;
        assert_eq!(code, 0);
        assert!(status.contains("Seccomp:\t2"), "{status}");
        assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    }
}

/// The container's profile wins over the pod's; an unset container takes the pod's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_profile_beats_pod_profile() {
    let mut e = env("precedence", |p, root| {
        let sc = p
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default);
        sc.seccomp = profile(
            ProfileType::Localhost,
            &root.join("prevent-chmod.json").display().to_string(),
        );
    })
    .await;
    let inherits = start_sleeper(&mut e, "inherits", Default::default()).await;
    let own = start_sleeper(
        &mut e,
        "own",
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::RuntimeDefault, ""),
            ..Default::default()
        },
    )
    .await;
    let (code, out) = probe(&mut e, &inherits, &["sysprobe", "chmod", "/tmp"]).await;
    assert_eq!((code, out.as_str()), (1, "chmod: Operation not permitted"));
    let (code, out) = probe(&mut e, &own, &["sysprobe", "chmod", "/tmp"]).await;
    assert_eq!((code, out.as_str()), (0, "chmod: ok"));
}

/// The deprecated string fields and the alpha annotations, resolved against seccomp_root;
/// privileged containers run unconfined whatever profile is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_annotations_fields_and_privileged() {
    #[allow(deprecated)]
    let mut e = env("legacy", |p, _| {
        p.annotations.insert(
            "seccomp.security.alpha.kubernetes.io/pod".into(),
            "localhost/prevent-chmod.json".into(),
        );
        p.annotations.insert(
            "container.seccomp.security.alpha.kubernetes.io/free".into(),
            "unconfined".into(),
        );
    })
    .await;
    let pod_wide = start_sleeper(&mut e, "podwide", Default::default()).await;
    let (code, out) = probe(&mut e, &pod_wide, &["sysprobe", "chmod", "/tmp"]).await;
    assert_eq!((code, out.as_str()), (1, "chmod: Operation not permitted"));
    let free = start_sleeper(&mut e, "free", Default::default()).await;
    assert_eq!(seccomp_mode(container_pid(&mut e.rt, &free).await), "0");
    #[allow(deprecated)]
    let field = start_sleeper(
        &mut e,
        "field",
        LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        },
    )
    .await;
    let pid = container_pid(&mut e.rt, &field).await;
    assert_eq!(seccomp_mode(pid), "2");
    let (code, _) = probe(&mut e, &field, &["sysprobe", "chmod", "/tmp"]).await;
    assert_eq!(code, 0, "runtime/default allows chmod");

    // A pod without annotations: privileged means unconfined, even with a profile named.
    let logs = tempfile::tempdir().unwrap();
    let pcfg = pod_config("legacy2", logs.path().to_str().unwrap());
    let pod = run_pod(&mut e.rt, &pcfg).await;
    for (name, seccomp, mode) in [
        ("priv", None, "0"),
        (
            "priv-default",
            profile(ProfileType::RuntimeDefault, ""),
            "0",
        ),
        (
            "priv-localhost",
            profile(
                ProfileType::Localhost,
                &e.profiles
                    .path()
                    .join("prevent-chmod.json")
                    .display()
                    .to_string(),
            ),
            "0",
        ),
        ("unpriv", None, "0"),
        (
            "unpriv-default",
            profile(ProfileType::RuntimeDefault, ""),
            "2",
        ),
    ] {
        let mut c = sleeper(
            &e,
            name,
            LinuxContainerSecurityContext {
                privileged: name.starts_with("priv"),
                seccomp,
                ..Default::default()
            },
        );
        c.log_path = String::new();
        let id = run(&mut e.rt, &pod, &pcfg, c).await;
        assert_eq!(
            seccomp_mode(container_pid(&mut e.rt, &id).await),
            mode,
            "{name}"
        );
    }
}

/// Every bad profile gets InvalidArgument naming the file and the field, and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_profiles_are_refused_by_file_and_field() {
    let mut e = env("bad", |_, _| {}).await;
    let dir = e.profiles.path().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    std::fs::create_dir(dir.join("adir.json")).unwrap();
    let cases = [
        (
            dir.join("missing.json").display().to_string(),
            "No such file",
        ),
        (
            dir.join("adir.json").display().to_string(),
            "not a regular file",
        ),
        (write("notjson.json", "{ defaultAction: "), "not valid JSON"),
        (
            write(
                "action.json",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_EXPLODE"}]}"#,
            ),
            "syscalls[0].action: unknown action \"SCMP_ACT_EXPLODE\"",
        ),
        (
            write(
                "op.json",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":0,"op":"SCMP_CMP_SORT_OF"}]}]}"#,
            ),
            "syscalls[0].args[0].op: unknown operator \"SCMP_CMP_SORT_OF\"",
        ),
        (
            write(
                "errno.json",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
            ),
            "syscalls[0].errnoRet",
        ),
    ];
    let records_before = std::fs::read_dir(e.d.root.join("containers"))
        .map(|r| r.count())
        .unwrap_or(0);
    for (path, want) in cases {
        let c = sleeper(
            &e,
            "bad",
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, &path),
                ..Default::default()
            },
        );
        let err = create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{path}: {err:?}");
        let msg = err.message();
        assert!(msg.contains(&path), "{msg}");
        assert!(msg.contains("linux.security_context.seccomp"), "{msg}");
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert_eq!(
        std::fs::read_dir(e.d.root.join("containers"))
            .map(|r| r.count())
            .unwrap_or(0),
        records_before
    );
    assert_eq!(
        std::fs::read_dir(e.d.run_root.join("containers"))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );
    let list =
        e.rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(list.is_empty(), "{list:?}");
}

/// Ten containers with one profile compile it once (skiffd logs each compile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_profile_compiles_once() {
    let mut e = env("cache", |_, _| {}).await;
    let path = e.profiles.path().join("prevent-chmod.json");
    let mut ids = vec![];
    for i in 0..10 {
        let c = sleeper(
            &e,
            &format!("c{i}"),
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, &path.display().to_string()),
                ..Default::default()
            },
        );
        ids.push(
            create(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c)
                .await
                .expect("CreateContainer"),
        );
    }
    start(&mut e.rt, &ids[9]).await.expect("StartContainer");
    let pid = container_pid(&mut e.rt, &ids[9]).await;
    assert_eq!(seccomp_mode(pid), "2");
    let log = e.d.log_text();
    let compiled = log
        .lines()
        .filter(|l| l.contains("seccomp filter compiled") && l.contains("prevent-chmod.json"))
        .count();
    assert_eq!(compiled, 1, "{log}");
}

/// `struct seccomp_notif` and `struct seccomp_notif_resp` (linux/seccomp.h).
#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// A seccomp agent on `path`: for every process that connects, takes the listener descriptor and
/// the OCI state sent with it, and answers each notification with EXDEV, reporting (state, the
/// notified syscall number, the notified pid) on the channel.
fn agent(path: &Path) -> std::sync::mpsc::Receiver<(serde_json::Value, i32, u32)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let listener = std::os::unix::net::UnixListener::bind(path).expect("agent socket");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
                let (n, fd) = {
                    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                    let msg = recvmsg::<()>(
                        conn.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::empty(),
                    )
                    .expect("recvmsg");
                    let fd = msg
                        .cmsgs()
                        .expect("cmsgs")
                        .find_map(|c| match c {
                            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                            _ => None,
                        })
                        .expect("a descriptor with the state");
                    (msg.bytes, fd)
                };
                let state: serde_json::Value =
                    serde_json::from_slice(&buf[..n]).expect("state JSON");
                loop {
                    let mut notif = Notif::default();
                    // SAFETY: ioctls on the listener descriptor we were sent, with structs of
                    // the kernel's layout that live across the calls.
                    if unsafe {
                        libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &mut notif as *mut Notif)
                    } != 0
                    {
                        break; // every process under the filter is gone
                    }
                    let mut resp = NotifResp {
                        id: notif.id,
                        val: 0,
                        error: -libc::EXDEV,
                        flags: 0,
                    };
                    // SAFETY: as above.
                    unsafe {
                        libc::ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &mut resp as *mut NotifResp)
                    };
                    let _ = tx.send((state.clone(), notif.nr, notif.pid));
                }
                // SAFETY: the descriptor came to us in the message and is ours to close.
                unsafe { libc::close(fd) };
            });
        }
    });
    rx
}

/// SCMP_ACT_NOTIFY: the listener goes to the agent at listenerPath with the container's state,
/// and the agent's answer is what the syscall returns in the container. Also exercises flags,
/// argument operators and KILL_PROCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_goes_to_the_agent_and_rules_match_arguments() {
    let mut e = env("notify", |_, _| {}).await;
    let sock = e.profiles.path().join("agent.sock");
    let notes = agent(&sock);
    let profile_path = e.profiles.path().join("notify.json");
    std::fs::write(
        &profile_path,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock.display().to_string(),
            "listenerMetadata": "from-the-test",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls": [
                {"names": ["chmod"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["keyctl"], "action": "SCMP_ACT_KILL_PROCESS"},
                // unshare(CLONE_NEWUSER): masked-equal on the flags argument.
                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EBUSY,
                 "args": [{"index": 0, "value": libc::CLONE_NEWUSER, "valueTwo": libc::CLONE_NEWUSER,
                           "op": "SCMP_CMP_MASKED_EQ"}]},
                // mount with MS_RDONLY (1) only: not our probe's flags (0), so it passes to the
                // capability check.
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EBUSY,
                 "args": [{"index": 3, "value": 1, "op": "SCMP_CMP_EQ"}]},
            ]
        })
        .to_string(),
    )
    .unwrap();
    let sc = LinuxContainerSecurityContext {
        seccomp: profile(ProfileType::Localhost, &profile_path.display().to_string()),
        ..Default::default()
    };
    let mut c = container_config("notified", &e.image, &["sysprobe", "chmod", "/tmp"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(sc.clone()),
        ..Default::default()
    });
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let st = wait_exited(&mut e.rt, &id, Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
    assert!(log.contains("chmod: Invalid cross-device link"), "{log}");
    let (state, nr, pid) = notes
        .recv_timeout(Duration::from_secs(10))
        .expect("the agent was notified");
    assert_eq!(nr as i64, libc::SYS_chmod);
    assert!(pid > 0);
    assert_eq!(state["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(state["metadata"], "from-the-test");
    assert_eq!(state["state"]["id"], id.as_str());
    assert_eq!(state["state"]["status"], "creating");
    assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{state}");

    // The same profile: argument rules and KILL_PROCESS. Exec'd processes get the filter too,
    // and their listeners go to the agent as well.
    let mut c = sleeper(&e, "rules", sc);
    c.log_path = "rules/0.log".into();
    let id = run(&mut e.rt, &e.pod.clone(), &e.pcfg.clone(), c).await;
    let (code, out) = probe(&mut e, &id, &["sysprobe", "unshare-user"]).await;
    assert_eq!(
        (code, out.as_str()),
        (1, "unshare-user: Device or resource busy")
    );
    let (code, out) = probe(&mut e, &id, &["sysprobe", "mount-tmpfs", "/tmp"]).await;
    assert_eq!(
        (code, out.as_str()),
        (1, "mount-tmpfs: Operation not permitted")
    );
    let (code, _) = probe(&mut e, &id, &["sysprobe", "keyctl"]).await;
    assert_eq!(code, 128 + libc::SIGSYS, "killed by SIGSYS");
    let (code, out) = probe(&mut e, &id, &["sysprobe", "chmod", "/tmp"]).await;
    assert_eq!(
        (code, out.as_str()),
        (1, "chmod: Invalid cross-device link")
    );
    let (state, _, _) = notes
        .recv_timeout(Duration::from_secs(10))
        .expect("the agent was notified by the exec'd process");
    assert_eq!(state["state"]["status"], "running");
}

/// A container that names no profile, in a pod that names none, runs unconfined (api.proto:
/// "Default: "", which is identical with unconfined"); `unset_seccomp_profile =
/// "RuntimeDefault"` gives it the RuntimeDefault filter instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_profile_is_unconfined_unless_configured() {
    let mut e = env("unset", |_, _| {}).await;
    let plain = start_sleeper(&mut e, "plain", Default::default()).await;
    assert_eq!(seccomp_mode(container_pid(&mut e.rt, &plain).await), "0");
    let (code, out) = probe(&mut e, &plain, &["sysprobe", "keyctl"]).await;
    assert_eq!((code, out.as_str()), (0, "keyctl: ok"));
    drop(e);

    let mut e = env_with(
        "unset-default",
        "unset_seccomp_profile = \"RuntimeDefault\"\n",
        |_, _| {},
    )
    .await;
    let plain = start_sleeper(&mut e, "plain", Default::default()).await;
    assert_eq!(seccomp_mode(container_pid(&mut e.rt, &plain).await), "2");
    let (code, out) = probe(&mut e, &plain, &["sysprobe", "keyctl"]).await;
    assert_eq!((code, out.as_str()), (1, "keyctl: Operation not permitted"));
    let free = start_sleeper(
        &mut e,
        "free",
        LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::Unconfined, ""),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(seccomp_mode(container_pid(&mut e.rt, &free).await), "0");
}
