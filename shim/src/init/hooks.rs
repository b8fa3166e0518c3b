//! OCI hooks (config.json `hooks`; CDI specs add them), run as the runtime spec says:
//! `prestart` and `createRuntime` in the runtime's namespaces once the container's namespaces
//! exist (by a runner forked before the init process joins them), `createContainer` in the
//! container's mount namespace before `pivot_root`, `startContainer` in the container just before
//! its process execs, `poststart` and `poststop` by the supervisor (failures only logged).
//! Each hook gets the container's state as JSON on stdin, exactly its own `env`, and is killed
//! after its `timeout`; a failing hook fails the container's start with its output.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use oci_spec::runtime::{Hook, Hooks, Spec};

/// The namespaces a pod may replace that runtime hooks run in: the runtime's own, which the pod
/// shim opens before it leaves them (its mount namespace and cgroup stay the host's).
const RUNTIME_NS: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

/// The lowest descriptor number the runtime's namespaces are kept at: above the stdio and
/// sync socket (0–3) that helpers get by dup2.
const RUNTIME_NS_MIN_FD: RawFd = 64;

/// Opens this process's namespaces among `leaving` (before it unshares them), by name.
pub fn open_runtime_ns(leaving: CloneFlags) -> Result<Vec<(String, OwnedFd)>, String> {
    let mut out = vec![];
    for (name, flag) in RUNTIME_NS {
        if leaving.contains(flag) {
            let what =
                |e: &dyn std::fmt::Display| format!("opening the runtime's {name} namespace: {e}");
            let f = File::open(format!("/proc/self/ns/{name}")).map_err(|e| what(&e))?;
            let high = nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(RUNTIME_NS_MIN_FD),
            )
            .map_err(|e| what(&e))?;
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor nobody else owns.
            out.push((name.to_string(), unsafe { OwnedFd::from_raw_fd(high) }));
        }
    }
    Ok(out)
}

/// Joins the runtime's namespaces (descriptors by name, from [`open_runtime_ns`]): the whole
/// process when single-threaded, else only the calling thread.
pub fn join_runtime_ns(ns: &[(String, RawFd)]) -> Result<(), String> {
    for (name, fd) in ns {
        let flag = RUNTIME_NS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown namespace {name}"))?;
        // SAFETY: the descriptor stays open for the life of this process (the supervisor's
        // state, or the init helper's inherited copy), so borrowing it for this call is sound.
        let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
        nix::sched::setns(fd, flag)
            .map_err(|e| format!("joining the runtime's {name} namespace: {e}"))?;
    }
    Ok(())
}

/// The hooks of one stage, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
            Stage::StartContainer => "startContainer",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }

    /// The container's status while this stage's hooks run.
    fn status(self) -> &'static str {
        match self {
            Stage::Prestart | Stage::CreateRuntime | Stage::CreateContainer => "creating",
            Stage::StartContainer => "created",
            Stage::Poststart => "running",
            Stage::Poststop => "stopped",
        }
    }
}

#[allow(deprecated)] // prestart: deprecated by the runtime spec, still run as runc does.
pub fn of(hooks: &Hooks, stage: Stage) -> &[Hook] {
    let v = match stage {
        Stage::Prestart => hooks.prestart(),
        Stage::CreateRuntime => hooks.create_runtime(),
        Stage::CreateContainer => hooks.create_container(),
        Stage::StartContainer => hooks.start_container(),
        Stage::Poststart => hooks.poststart(),
        Stage::Poststop => hooks.poststop(),
    };
    v.as_deref().unwrap_or(&[])
}

/// Whether `spec` has hooks for any of `stages`.
pub fn any(spec: &Spec, stages: &[Stage]) -> bool {
    spec.hooks()
        .as_ref()
        .is_some_and(|h| stages.iter().any(|s| !of(h, *s).is_empty()))
}

/// The state a hook reads on stdin.
pub fn state(spec: &Spec, bundle: &Path, stage: Stage, pid: i32) -> String {
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": stage.status(),
        "pid": pid,
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    })
    .to_string()
}

/// Runs the hooks of `stage` in order; the first failure stops them and is returned with what
/// the hook wrote (its first 4 KiB).
pub fn run(spec: &Spec, bundle: &Path, stage: Stage, pid: i32) -> Result<(), String> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    let hooks = of(hooks, stage);
    if hooks.is_empty() {
        return Ok(());
    }
    let state = state(spec, bundle, stage, pid);
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, &state)
            .map_err(|e| format!("{} hook {i} ({}): {e}", stage.name(), h.path().display()))?;
    }
    Ok(())
}

fn run_one(h: &Hook, state: &str) -> Result<(), String> {
    // Output goes to an anonymous file, never a pipe that a chatty hook could fill while we
    // wait for it (this process may have no other thread to drain one).
    let out = memfd()?;
    let err = out.try_clone().map_err(|e| format!("dup: {e}"))?;
    let mut cmd = Command::new(h.path());
    let args = h.args().as_deref().unwrap_or(&[]);
    if let Some(argv0) = args.first() {
        cmd.arg0(argv0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::from(
            out.try_clone().map_err(|e| format!("dup: {e}"))?,
        ))
        .stderr(Stdio::from(err));
    for kv in h.env().as_deref().unwrap_or(&[]) {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(kv, ""),
        };
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state may close stdin first: not an error, and no
        // SIGPIPE for this process (whose disposition may be the default, which kills).
        // SAFETY: signal() with a valid signal number and handler constant; the previous
        // disposition is put back right after the write.
        let before = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let _ = stdin.write_all(state.as_bytes());
        // SAFETY: as above, restoring what signal() returned.
        unsafe { libc::signal(libc::SIGPIPE, before) };
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t.unsigned_abs()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {}s{}",
                h.timeout().unwrap_or(0),
                output(out)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status}{}", output(out)))
    }
}

fn memfd() -> Result<File, String> {
    // SAFETY: memfd_create with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"skiff-hook".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new descriptor nobody else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// ": <what the hook wrote>" (its first 4 KiB), or nothing.
fn output(mut f: File) -> String {
    let mut buf = vec![];
    let _ = f.rewind();
    let _ = Read::by_ref(&mut f).take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).trim().to_string();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}
