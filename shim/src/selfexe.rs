//! CVE-2019-5736: a helper of ours that runs inside a container's namespaces (container init,
//! exec) can be reached by the container through `/proc/<pid>/exe`. skiffd therefore launches the
//! shim from a read-only bind mount of its binary (`<run-root>/bin/skiff-shim`), and the shim
//! runs its helpers from that same file. A write through `/proc/<pid>/exe` then fails with EROFS.
//! Unlike a memfd copy per pod, this costs no memory per pod.

use std::io;
use std::path::PathBuf;

/// The binary helpers are executed from, after checking it sits on a read-only mount.
pub fn helper_binary() -> io::Result<PathBuf> {
    let exe = PathBuf::from("/proc/self/exe");
    let st = nix::sys::statvfs::statvfs(&exe).map_err(io::Error::from)?;
    if !st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        let real = std::fs::read_link(&exe).unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the shim binary {} is writable: refusing to run container helpers from it \
                 (skiffd launches the shim from a read-only bind mount)",
                real.display()
            ),
        ));
    }
    Ok(exe)
}
