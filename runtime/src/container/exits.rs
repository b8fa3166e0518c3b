//! Container exits as the shims report them: each shim, once it has recorded an exit in the
//! container's `state.json`, leaves an empty file named after the container in
//! `<run-root>/exits`. skiffd watches the directory with inotify (no polling) and reads what
//! is there at start (exits while it was down). A notice is removed once handled, so one that a
//! crash interrupted is handled again.

use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::error::{IoContext, Result};
use crate::store::{self, TMP_PREFIX};

/// The directory shims leave exit notices in.
pub fn dir(run_root: &Path) -> PathBuf {
    run_root.join("exits")
}

/// The ids of containers whose exits were noted: those already there (noted while skiffd was
/// down), then each new one. The caller calls [`done`] once it has handled one.
pub fn watch(run_root: &Path) -> Result<(Vec<String>, mpsc::UnboundedReceiver<String>)> {
    let dir = dir(run_root);
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| crate::error::Error::Internal(format!("inotify: {e}")))?;
    inotify
        .add_watch(
            &dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .map_err(|e| crate::error::Error::Internal(format!("watching {}: {e}", dir.display())))?;
    let (tx, rx) = mpsc::unbounded_channel();
    // After the watch is in place: a notice written meanwhile is seen twice at worst.
    let _ = store::remove_temporaries(&dir);
    let mut found = vec![];
    for e in std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
        let name = e.ctx(|| format!("reading {}", dir.display()))?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(TMP_PREFIX) {
            found.push(name.into_owned());
        }
    }
    // SAFETY: the AsyncFd owns the inotify instance and with it the descriptor, which stays
    // open until the AsyncFd (deregistering it first) is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE) }
        .map_err(|e| crate::error::Error::Internal(format!("inotify: {e}")))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            match fd.get_ref().0.read_events() {
                Ok(events) => {
                    for ev in events {
                        let Some(name) = ev.name else { continue };
                        let name = name.to_string_lossy().into_owned();
                        if !name.starts_with(TMP_PREFIX) && tx.send(name).is_err() {
                            return;
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => {
                    tracing::error!(error = %e, "reading exit notices: container events stop");
                    return;
                }
            }
        }
    });
    Ok((found, rx))
}

/// An inotify instance as tokio registers descriptors.
struct Watch(Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Removes the exit notice of `id`: handled.
pub fn done(run_root: &Path, id: &str) {
    let _ = std::fs::remove_file(dir(run_root).join(id));
}
