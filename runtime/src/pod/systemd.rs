//! Pods as systemd units, where systemd runs the machine: each pod's shim is started as a
//! transient service `skiff-pod-<id>.service` through systemd's D-Bus API, in the slice the pod
//! belongs to, with `Delegate=yes` so the shim and skiffd manage the cgroups below it. The unit
//! is `Type=forking` with a PID file: the shim's first process reports and exits, its supervisor
//! is the unit's main process. Its stderr goes to the journal (`journalctl -u`); its report comes
//! back on a pipe given to systemd as its stdout. Stopping skiffd touches no unit.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use skiff_shim::api::Ready;
use zbus::blocking::Connection;
use zbus::zvariant::{Fd, OwnedObjectPath, Value};

use super::launch::{LaunchSpec, Launcher};
use crate::error::{Error, Result};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// The unit of pod `pod_id`.
pub fn unit_name(pod_id: &str) -> String {
    format!("skiff-pod-{}.service", &pod_id[..pod_id.len().min(16)])
}

pub struct Systemd {
    pub binary: PathBuf,
    conn: Connection,
}

impl Systemd {
    pub fn connect(binary: PathBuf) -> Result<Systemd> {
        let conn = Connection::system().map_err(|e| {
            Error::FailedPrecondition(format!("connecting to systemd over the system bus: {e}"))
        })?;
        Ok(Systemd { binary, conn })
    }

    fn call<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::message::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(Some(DEST), PATH, Some(MANAGER), method, body)
    }
}

impl Launcher for Systemd {
    fn launch(&self, spec: &LaunchSpec) -> Result<i32> {
        let unit = unit_name(spec.pod_id);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let bin = self.binary.display().to_string();
        let exec: Vec<(String, Vec<String>, bool)> = vec![(
            bin.clone(),
            vec![bin, "pod".into(), spec.config.display().to_string()],
            false,
        )];
        let mut nofile = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the rlimit struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } != 0 {
            return Err(Error::io(
                "reading skiffd's RLIMIT_NOFILE",
                std::io::Error::last_os_error(),
            ));
        }
        let props: Vec<(&str, Value)> = vec![
            (
                "Description",
                Value::from(format!("skiff pod sandbox {}", spec.pod_id)),
            ),
            ("Type", Value::from("forking")),
            ("PIDFile", Value::from(spec.pid_file.display().to_string())),
            ("ExecStart", Value::from(exec)),
            ("Slice", Value::from(spec.slice.to_string())),
            ("Delegate", Value::from(true)),
            ("CollectMode", Value::from("inactive-or-failed")),
            ("TasksMax", Value::from(u64::MAX)),
            // skiffd's own open-file limits, as a shim started as its child would inherit them
            // (a container's default limit is skiffd's hard one, which a container in a user
            // namespace cannot raise above its shim's).
            ("LimitNOFILE", Value::from(nofile.rlim_max)),
            ("LimitNOFILESoft", Value::from(nofile.rlim_cur)),
            (
                "StandardOutputFileDescriptor",
                Value::from(Fd::from(w.as_fd())),
            ),
            ("StandardError", Value::from("journal")),
        ];
        let aux: Vec<(&str, Vec<(&str, Value)>)> = vec![];
        let reply = self
            .call("StartTransientUnit", &(unit.as_str(), "fail", props, aux))
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "pod sandbox {}: starting unit {unit}: {e}",
                    spec.pod_id
                ))
            })?;
        let _job: OwnedObjectPath = reply.body().deserialize().map_err(|e| {
            Error::Internal(format!(
                "pod sandbox {}: systemd's answer: {e}",
                spec.pod_id
            ))
        })?;
        drop(w);
        // systemd keeps its copy of the pipe for the unit's life: read the report's line only.
        let line = read_line(r, Duration::from_secs(60)).map_err(|e| {
            Error::Internal(format!(
                "pod sandbox {}: reading the shim's report from unit {unit}: {e} (journalctl -u {unit})",
                spec.pod_id
            ))
        })?;
        match serde_json::from_str::<Ready>(&line) {
            Ok(Ready::Pid(pid)) => Ok(pid),
            Ok(Ready::Error(e)) => Err(Error::FailedPrecondition(format!(
                "pod sandbox {}: {e}",
                spec.pod_id
            ))),
            Err(_) => Err(Error::Internal(format!(
                "pod sandbox {}: unit {unit} reported {:?}; see journalctl -u {unit}",
                spec.pod_id,
                line.trim()
            ))),
        }
    }

    fn release(&self, pod_id: &str) {
        let unit = unit_name(pod_id);
        // Gone already (the shim exited and the unit was collected) is the usual case.
        if let Err(e) = self.call("StopUnit", &(unit.as_str(), "replace")) {
            tracing::debug!(%unit, error = %e, "stopping unit");
        }
    }

    fn unit(&self, pod_id: &str) -> Option<String> {
        Some(unit_name(pod_id))
    }
}

/// Reads up to the first newline from `fd`, waiting at most `limit`.
fn read_line(fd: OwnedFd, limit: Duration) -> std::io::Result<String> {
    let mut f = std::fs::File::from(fd);
    let deadline = std::time::Instant::now() + limit;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(nix::poll::PollTimeout::MAX);
        if nix::poll::poll(&mut pfd, ms).map_err(std::io::Error::from)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no report within {limit:?}"),
            ));
        }
        if f.read(&mut b)? == 0 || b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
}

/// The cgroupfs path of a systemd slice: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`,
/// as systemd nests them. Refuses what is not a slice name.
pub fn slice_path(slice: &str) -> std::result::Result<String, String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!(
            "{slice:?} is not a systemd slice name (the systemd cgroup driver wants \
             name.slice, not a path)"
        ));
    };
    if stem.is_empty()
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '\\'))
    {
        return Err(format!("{slice:?} is not a valid systemd slice name"));
    }
    if stem == "-" {
        return Ok(String::new());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// Whether `p` looks like a slice name rather than a cgroupfs path.
pub fn is_slice_name(p: &str) -> bool {
    p.ends_with(".slice") && !p.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_by_dashes() {
        assert_eq!(
            slice_path("kubepods-burstable-pod12_34.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
        );
        assert_eq!(slice_path("skiff.slice").unwrap(), "/skiff.slice");
        for bad in [
            "/kubepods/burstable",
            "a--b.slice",
            "-a.slice",
            ".slice",
            "a/b.slice",
        ] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
        assert!(is_slice_name("kubepods.slice"));
        assert!(!is_slice_name("/kubepods/pod1"));
        assert_eq!(
            unit_name("0123456789abcdef0123"),
            "skiff-pod-0123456789abcdef.service"
        );
    }
}
