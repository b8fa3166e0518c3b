//! The container's seccomp filter: the BPF program skiffd compiled (`seccomp.bpf` beside
//! config.json), read while the bundle is still reachable and loaded as the last step before
//! exec.
//!
//! A profile with SCMP_ACT_NOTIFY rules names a seccomp agent's socket (`listenerPath`). The
//! socket is connected while the host's filesystem is still in view; once the filter is loaded,
//! its listener descriptor goes to the agent with the OCI `ContainerProcessState` as payload
//! (the same message runc and crun send), so the filter's NOTIFY rules must spare `sendmsg`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{LinuxSeccompAction as A, LinuxSeccompFilterFlag as F, Spec};
use skiff_shim::api::SECCOMP_FILE;

type R<T> = Result<T, String>;

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const FLAG_TSYNC: libc::c_ulong = 1;
const FLAG_LOG: libc::c_ulong = 2;
const FLAG_SPEC_ALLOW: libc::c_ulong = 4;
const FLAG_NEW_LISTENER: libc::c_ulong = 8;
const FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 32;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

pub struct Filter {
    prog: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    agent: Option<Agent>,
}

/// The seccomp agent the listener descriptor goes to.
struct Agent {
    sock: UnixStream,
    path: String,
    /// The OCI state without the pid, which is only known at load time.
    state: serde_json::Value,
    metadata: String,
    /// The host's /proc, for our own PID as the host numbers it.
    host_proc: OwnedFd,
}

/// The filter the spec asks for, or `None` when it has no `linux.seccomp` section. `status` is
/// the OCI state a seccomp agent is told ("creating" for init, "running" for exec). Call it
/// while the host's filesystem and /proc are still this process's.
pub fn read(spec: &Spec, bundle: &Path, status: &str) -> R<Option<Filter>> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let path = bundle.join(SECCOMP_FILE);
    let raw =
        std::fs::read(&path).map_err(|e| format!("seccomp filter {}: {e}", path.display()))?;
    if raw.is_empty() || raw.len() % 8 != 0 || raw.len() / 8 > MAX_INSNS {
        return Err(format!(
            "seccomp filter {}: {} bytes is not a BPF program of at most {MAX_INSNS} instructions",
            path.display(),
            raw.len()
        ));
    }
    let prog = skiff_shim::api::bpf_program(&raw);
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SeccompFilterFlagTsync => FLAG_TSYNC,
            F::SeccompFilterFlagLog => FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    let notifies = s.default_action() == A::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == A::ScmpActNotify);
    let agent = match (notifies, s.listener_path()) {
        (false, _) => None,
        (true, None) => return Err("SCMP_ACT_NOTIFY rules need a listenerPath".into()),
        (true, Some(p)) => {
            let sock = UnixStream::connect(p)
                .map_err(|e| format!("seccomp agent at {}: {e}", p.display()))?;
            let host_proc = nix::fcntl::open(
                "/proc",
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("opening /proc: {e}"))?;
            // SAFETY: open just returned this descriptor and nothing else owns it.
            let host_proc = unsafe { OwnedFd::from_raw_fd(host_proc) };
            let id = bundle
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some(Agent {
                sock,
                path: p.display().to_string(),
                state: serde_json::json!({
                    "ociVersion": spec.version(),
                    "id": id,
                    "status": status,
                    "bundle": bundle.display().to_string(),
                    "annotations": spec.annotations().clone().unwrap_or_default(),
                }),
                metadata: s.listener_metadata().clone().unwrap_or_default(),
                host_proc,
            })
        }
    };
    if agent.is_some() {
        flags |= FLAG_NEW_LISTENER;
    }
    Ok(Some(Filter { prog, flags, agent }))
}

impl Filter {
    /// Installs the filter on this thread (the process is single-threaded). Needs
    /// no_new_privs or CAP_SYS_ADMIN in the effective set.
    pub fn load(&self) -> R<()> {
        let fprog = libc::sock_fprog {
            len: self.prog.len() as u16,
            filter: self.prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) reads `fprog` and the instructions it points at, both alive for
        // the duration of the call; the kernel copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(format!(
                "loading the seccomp filter ({} instructions): {}",
                self.prog.len(),
                std::io::Error::last_os_error()
            ));
        }
        if let Some(agent) = &self.agent {
            // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the call returned a new descriptor
            // that nothing else owns.
            let listener = unsafe { OwnedFd::from_raw_fd(rc as i32) };
            agent.send(&listener)?;
        }
        Ok(())
    }
}

impl Agent {
    /// Sends the listener to the agent with the OCI `ContainerProcessState` as payload.
    fn send(&self, listener: &OwnedFd) -> R<()> {
        let pid: i32 = nix::fcntl::readlinkat(Some(self.host_proc.as_raw_fd()), "self")
            .ok()
            .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        let mut state = self.state.clone();
        state["pid"] = pid.into();
        let msg = serde_json::json!({
            "ociVersion": state["ociVersion"].clone(),
            "fds": ["seccompFd"],
            "pid": pid,
            "metadata": self.metadata,
            "state": state,
        })
        .to_string();
        let fds = [listener.as_raw_fd()];
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(msg.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| {
            format!(
                "sending the seccomp listener to the agent at {}: {e}",
                self.path
            )
        })?;
        Ok(())
    }
}
