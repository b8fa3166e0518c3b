//! The pod's /dev/shm, kept off the node's mount table.
//!
//! The pod's supervisor makes the tmpfs in a small mount namespace of the pod's own (a copy of
//! skiffd's one-mount `mnt-empty`, or of the node's when skiffd has none), mounted over that
//! namespace's root, and holds the namespace by a descriptor for as long as the pod lives.
//! Every container start copies the node's mount table into the container's new mount
//! namespace and later unmounts the copy; a mount per pod on the node would make each start
//! dearer with every pod on it. A container's init (or a restore helper) clones the tmpfs from
//! there ([`PodShm::clone_tree`]) and attaches the clone where the spec binds the pod's shm
//! directory, which stays an empty directory on the node.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The pod's /dev/shm as a container's helper receives it: the descriptor of the namespace that
/// holds it, and the directory the spec names as the source of its bind mount.
#[derive(Clone, Debug, PartialEq)]
pub struct PodShm {
    pub ns: RawFd,
    pub dir: PathBuf,
}

/// The command-line form's prefix: `pod-shm=FD:DIR`.
const ARG: &str = "pod-shm=";

impl PodShm {
    /// `pod-shm=FD:DIR`, for a helper the supervisor execs (the descriptor inherited).
    pub fn to_arg(&self) -> String {
        format!("{ARG}{}:{}", self.ns, self.dir.display())
    }

    /// The command-line form back; `None` for anything else.
    pub fn parse(arg: &str) -> Option<PodShm> {
        let (fd, dir) = arg.strip_prefix(ARG)?.split_once(':')?;
        Some(PodShm {
            ns: fd.parse().ok()?,
            dir: PathBuf::from(dir),
        })
    }

    /// Whether the spec's mount `source` is the pod's shm directory.
    pub fn is_source(&self, source: &Path) -> bool {
        source == self.dir
    }

    /// A detached copy of the pod's tmpfs, to attach with [`crate::idmap::attach`]. Enters the
    /// pod's shm namespace (whose root, as the kernel resolves it on entry, is the tmpfs), clones
    /// that mount and comes back ([`returning`]). The process must be single-threaded.
    pub fn clone_tree(&self) -> io::Result<OwnedFd> {
        returning(|| {
            // SAFETY: the descriptor is the helper's own inherited copy, open for its whole life.
            let theirs = unsafe { BorrowedFd::borrow_raw(self.ns) };
            nix::sched::setns(theirs, nix::sched::CloneFlags::CLONE_NEWNS)?;
            const OPEN_TREE_CLONE: libc::c_uint = 1;
            // SAFETY: open_tree with a valid C string; the result is checked below.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    c"/".as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: open_tree returned a new descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        })?
    }
}

/// Runs `f`, then puts this process back in the mount namespace and working directory it had
/// before, whichever `f` entered. The process must be single-threaded (setns of a mount
/// namespace).
pub fn returning<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let ours = std::fs::File::open("/proc/self/ns/mnt")?;
    let cwd = std::fs::File::open(".")?;
    let r = f();
    nix::sched::setns(&ours, nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::unistd::fchdir(cwd.as_raw_fd())?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_round_trips_and_nothing_else_parses() {
        let s = PodShm {
            ns: 7,
            dir: PathBuf::from("/run/skiff/pods/ab:c/shm"),
        };
        assert_eq!(PodShm::parse(&s.to_arg()), Some(s));
        assert_eq!(PodShm::parse("net=7"), None);
        assert_eq!(PodShm::parse("pod-shm=x:/a"), None);
        assert_eq!(PodShm::parse("pod-shm=7"), None);
    }
}
