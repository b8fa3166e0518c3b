//! The slow fallback for nodes whose filesystems cannot be idmapped (`userns_rootfs = "chown"`):
//! a container in a pod user namespace gets a copy of its image's layers with every owner moved
//! into the pod's range. Only ever chosen by that config key, and logged as slow.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use skiff_shim::idmap::Maps;

/// Copies layer directory `src` to `dest` (which must not exist) keeping modes, times, links,
/// device nodes and xattrs (overlay whiteouts and opaque markers included), then gives every
/// entry the host ids `maps` maps its owner to. Returns the number of entries.
pub fn copy_shifted(src: &Path, dest: &Path, maps: &Maps) -> Result<u64, String> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--no-target-directory")
        .arg(src)
        .arg(dest)
        .output()
        .map_err(|e| format!("running cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "copying {} to {}: {}",
            src.display(),
            dest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    shift_tree(dest, maps)
}

fn shift_tree(p: &Path, maps: &Maps) -> Result<u64, String> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let uid = maps.host_uid(meta.uid()).unwrap_or(meta.uid());
    let gid = maps.host_gid(meta.gid()).unwrap_or(meta.gid());
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", p.display()))?;
    // chown clears the set-id bits of a regular file: put them back.
    if meta.is_file() && meta.mode() & 0o6000 != 0 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    let mut n = 1;
    if meta.is_dir() {
        for e in std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", p.display()))?;
            n += shift_tree(&e.path(), maps)?;
        }
    }
    Ok(n)
}
