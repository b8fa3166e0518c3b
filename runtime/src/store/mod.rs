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
