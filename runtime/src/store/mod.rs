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

/// A request's protobuf message kept in a record: decoded once (when the record is made or
/// read), written in the JSON record as base64 of the protobuf encoding. Cloning a record
/// shares the message.
#[derive(Debug, Clone, Default)]
pub struct Pb<T>(std::sync::Arc<T>);

impl<T> Pb<T> {
    pub fn new(msg: T) -> Pb<T> {
        Pb(std::sync::Arc::new(msg))
    }
}

impl<T> std::ops::Deref for Pb<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: prost::Message> serde::Serialize for Pb<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0.encode_to_vec()))
    }
}

impl<'de, T: prost::Message + Default> serde::Deserialize<'de> for Pb<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Pb<T>, D::Error> {
        use base64::Engine;
        use serde::de::Error as _;
        let text = String::deserialize(d)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| D::Error::custom(format!("not base64: {e}")))?;
        T::decode(raw.as_slice())
            .map(Pb::new)
            .map_err(|e| D::Error::custom(format!("not a protobuf message: {e}")))
    }
}
