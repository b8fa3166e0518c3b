//! How a pod's shim is started: one seam, so the pod life cycle does not care whether the shim
//! runs as a detached process (here) or, where systemd runs the node, as a transient unit
//! (`systemd`).
//!
//! The shim binary is executed from a read-only bind mount of it under `<run-root>/bin`, so that
//! no container can write to it through `/proc/<pid>/exe` (CVE-2019-5736).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
}

/// Runs the shim as a process of its own session, detached from skiffd.
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
        let out = Command::new(&self.binary)
            .arg("pod")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf))
            .output()
            .ctx(|| format!("starting {}", self.binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or("");
        match serde_json::from_str::<Ready>(line) {
            Ok(Ready::Pid(pid)) => Ok(pid),
            Ok(Ready::Error(e)) => Err(Error::FailedPrecondition(format!(
                "pod sandbox {pod_id}: {e}"
            ))),
            Err(_) => Err(Error::Internal(format!(
                "pod sandbox {pod_id}: the shim exited ({}) without reporting: {}; see {}",
                out.status,
                line.trim(),
                log.display()
            ))),
        }
    }
}

/// Finds the shim binary: the configured path, else `skiff-shim` beside skiffd.
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
    Ok(p)
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
