//! The container's seccomp filter: the BPF program skiffd compiled (`seccomp.bpf` beside
//! config.json), read while the bundle is still reachable and loaded as the last step before
//! exec.

use std::path::Path;

use oci_spec::runtime::{LinuxSeccompFilterFlag as F, Spec};
use skiff_shim::api::SECCOMP_FILE;

type R<T> = Result<T, String>;

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const FLAG_TSYNC: libc::c_ulong = 1;
const FLAG_LOG: libc::c_ulong = 2;
const FLAG_SPEC_ALLOW: libc::c_ulong = 4;
const FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 32;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

pub struct Filter {
    prog: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

/// The filter the spec asks for, or `None` when it has no `linux.seccomp` section.
pub fn read(spec: &Spec, bundle: &Path) -> R<Option<Filter>> {
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
    let prog = raw
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SeccompFilterFlagTsync => FLAG_TSYNC,
            F::SeccompFilterFlagLog => FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    Ok(Some(Filter { prog, flags }))
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
        Ok(())
    }
}
