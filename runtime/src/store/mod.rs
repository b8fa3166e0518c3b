//! Durable records under `--root`: every record is written crash-safely (a temporary file in the
//! same directory, fsync, rename over the target, fsync of the directory), so a reader never sees a
//! half-written record, whatever moment `skiffd` is killed at. The helpers are shared with the
//! shim, which writes container state the same way. Files under `--run-root` (pod files, bundles,
//! container state) are replaced atomically too but not fsynced: a reboot clears them anyway.

pub use skiff_shim::fsutil::{
    read_json, remove_durably, remove_temporaries, sync_dir, write_atomic, write_atomic_volatile,
    write_json, write_json_volatile, TMP_PREFIX,
};

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The record `id` names in `map`: the full id, or a unique prefix of it (as crictl
/// abbreviates). `what` names the kind ("pod sandbox", "container") and `field` the request
/// field, for errors.
pub fn find_by_id<'a, T>(
    map: &'a BTreeMap<String, T>,
    id: &str,
    what: &str,
    field: &str,
) -> Result<&'a T> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{field}: is empty")));
    }
    if let Some(r) = map.get(id) {
        return Ok(r);
    }
    let mut hits = map
        .range(id.to_string()..)
        .take_while(|(k, _)| k.starts_with(id));
    match (hits.next(), hits.next()) {
        (Some((_, r)), None) => Ok(r),
        (None, _) => Err(Error::NotFound(format!("{what} {id} not found"))),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "{what} id prefix {id} is ambiguous"
        ))),
    }
}

/// Bytes (allocated blocks) and inodes used below `dir`, each inode counted once. Entries that
/// vanish during the walk are skipped.
pub fn disk_usage(dir: &std::path::Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = match std::fs::symlink_metadata(&d) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("measuring {}", d.display()), e)),
        };
        if seen.insert((m.dev(), m.ino())) {
            bytes += m.blocks() * 512;
            inodes += 1;
        }
        if m.is_dir() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("measuring {}", d.display()), e)),
            };
            for e in rd.flatten() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}
