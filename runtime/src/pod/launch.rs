//! How a pod's shim is started: one seam, so the pod life cycle does not care whether the shim
//! runs as a detached process (here) or, where systemd runs the node, as a transient unit
//! (`systemd`).
//!
//! The shim binary is executed from a read-only bind mount of it under `<run-root>/bin`, so that
//! no container can write to it through `/proc/<pid>/exe` (CVE-2019-5736).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use skiff_shim::api::Ready;

use crate::error::{Error, IoContext, Result};

/// What a launcher needs to start a pod's shim.
pub struct LaunchSpec<'a> {
    pub pod_id: &'a str,
    /// The pod's `pod.json`.
    pub config: &'a Path,
    /// Where a detached shim's stderr goes (a unit's goes to the journal).
    pub log: &'a Path,
    /// The slice a unit goes into.
    pub slice: &'a str,
    /// Where the shim writes its supervisor's PID (the unit's PIDFile).
    pub pid_file: &'a Path,
    /// Start the shim as PID 1 of a new PID namespace, the pod's (only a launcher that
    /// [`Launcher::makes_pid_ns`] is asked to).
    pub new_pid_ns: bool,
}

/// Starts pod shims.
pub trait Launcher: Send + Sync {
    /// Starts the shim for the pod; returns the shim supervisor's host PID once the pod's
    /// namespaces exist.
    fn launch(&self, spec: &LaunchSpec) -> Result<i32>;
    /// After the shim stopped (or to make sure everything of the pod is gone): what the
    /// launcher keeps of the pod goes.
    fn release(&self, _pod_id: &str) {}
    /// The pod's systemd unit, when pods are units.
    fn unit(&self, _pod_id: &str) -> Option<String> {
        None
    }
    /// Whether the shim's first process may stay on as the pod's supervisor (the pod config's
    /// `stay`): the launcher then waits for its report only, and reaps it when it exits.
    fn lets_shim_stay(&self) -> bool {
        false
    }
    /// Whether the launcher can start the shim as PID 1 of the pod's new PID namespace
    /// ([`LaunchSpec::new_pid_ns`]), sparing the shim a fork of its supervisor.
    fn makes_pid_ns(&self) -> bool {
        false
    }
}

/// Runs the shim as a process of its own session, detached from skiffd's: a child of skiffd
/// that the runtime reaps when it exits, and that lives on (then a child of the node's init)
/// when skiffd stops. Must run inside the Tokio runtime.
pub struct Detached {
    pub binary: PathBuf,
}

impl Launcher for Detached {
    fn launch(&self, spec: &LaunchSpec) -> Result<i32> {
        let (pod_id, config, log) = (spec.pod_id, spec.config, spec.log);
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .ctx(|| format!("opening {}", log.display()))?;
        // Dropped unwaited, the child is reaped by the runtime once it exits: at once when
        // the first process forks the supervisor (a pod with its own user and PID namespaces),
        // else when the supervisor ends.
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("pod")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf));
        let mut child = if spec.new_pid_ns {
            spawn_in_new_pid_ns(&mut cmd)
                .ctx(|| format!("starting {} in a new PID namespace", self.binary.display()))?
        } else {
            cmd.spawn()
                .ctx(|| format!("starting {}", self.binary.display()))?
        };
        // The report is one line; the shim closes its stdout after it (or exits).
        let mut text = String::new();
        if let Some(out) = child.stdout.take() {
            let out = out
                .into_owned_fd()
                .ctx(|| format!("reading the report of {}", self.binary.display()))?;
            let _ = fs::File::from(out).read_to_string(&mut text);
        }
        let line = text.lines().next().unwrap_or("");
        match serde_json::from_str::<Ready>(line) {
            Ok(Ready::Pid(pid)) => Ok(pid),
            Ok(Ready::Error(e)) => Err(Error::FailedPrecondition(format!(
                "pod sandbox {pod_id}: {e}"
            ))),
            Err(_) => {
                let status = tokio::runtime::Handle::current().block_on(async {
                    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                        Ok(Ok(st)) => st.to_string(),
                        Ok(Err(e)) => format!("waiting for it: {e}"),
                        Err(_) => {
                            let _ = child.start_kill();
                            "killed: still running".to_string()
                        }
                    }
                });
                Err(Error::Internal(format!(
                    "pod sandbox {pod_id}: the shim ({status}) closed its output without \
                     reporting: {}; see {}",
                    line.trim(),
                    log.display()
                )))
            }
        }
    }

    fn lets_shim_stay(&self) -> bool {
        true
    }

    fn makes_pid_ns(&self) -> bool {
        true
    }
}

/// Spawns `cmd` as PID 1 of a new PID namespace: from a thread of its own whose children go
/// into a new one (`unshare` changes only the calling thread's namespace for children), which
/// ends with the spawn, so no thread of skiffd stays pointed at the pod's namespace.
fn spawn_in_new_pid_ns(
    cmd: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The child registers with the runtime's process driver.
            let _entered = runtime.enter();
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)?;
            cmd.spawn()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// Finds the shim binary: the configured path, else `skiff-shim` beside skiffd; one that does
/// not speak this skiffd's protocol is refused ([`check_shim_protocol`]).
pub fn locate_shim(configured: Option<&Path>) -> Result<PathBuf> {
    let p = match configured {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .ctx(|| "locating skiffd")?
            .with_file_name("skiff-shim"),
    };
    if !p.is_file() {
        return Err(Error::FailedPrecondition(format!(
            "shim binary {} not found (config key shim_binary)",
            p.display()
        )));
    }
    check_shim_protocol(&p)?;
    Ok(p)
}

/// Runs `binary version` and checks that the shim speaks this skiffd's
/// [`PROTOCOL`](skiff_shim::api::PROTOCOL): an older or newer shim would misread the pod
/// configuration skiffd writes (an older one ignores fields it does not know).
fn check_shim_protocol(binary: &Path) -> Result<()> {
    let want = skiff_shim::api::PROTOCOL;
    let fix = "install skiff-shim from the same build as skiffd (config key shim_binary)";
    let out = std::process::Command::new(binary)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "shim binary {}: running `{} version`: {e}; {fix}",
                binary.display(),
                binary.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let spoken = text
        .trim()
        .rsplit_once(" protocol ")
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .filter(|_| out.status.success());
    match spoken {
        Some(n) if n == want => Ok(()),
        Some(n) => Err(Error::FailedPrecondition(format!(
            "shim binary {} speaks protocol {n}, this skiffd protocol {want}: {fix}",
            binary.display()
        ))),
        None => Err(Error::FailedPrecondition(format!(
            "shim binary {} does not report its protocol (`version` gave {}: {:?}): it is not \
             from this skiff build; {fix}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(if text.trim().is_empty() {
                &out.stderr
            } else {
                &out.stdout
            })
            .trim()
            .chars()
            .take(200)
            .collect::<String>()
        ))),
    }
}

/// Bind-mounts `source` read-only at `<run_root>/bin/skiff-shim`, replacing an older mount
/// (shims already running keep the one they started from).
pub fn mount_shim_readonly(run_root: &Path, source: &Path) -> Result<PathBuf> {
    let dir = run_root.join("bin");
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let target = dir.join("skiff-shim");
    // Detach every earlier mount stacked here.
    while umount2(&target, MntFlags::MNT_DETACH).is_ok() {}
    if !target.exists() {
        fs::File::create(&target).ctx(|| format!("creating {}", target.display()))?;
    }
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("binding {} at {}", source.display(), target.display()))?;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .ctx(|| format!("making {} read-only", target.display()))?;
    Ok(target)
}
