//! Durable records under `--root`: every record is written crash-safely (a temporary file in the
//! same directory, fsync, rename over the target, fsync of the directory), so a reader never sees a
//! half-written record, whatever moment `skiffd` is killed at. The helpers are shared with the
//! shim, which writes container state the same way. Files under `--run-root` (pod files, bundles,
//! container state) are replaced atomically too but not fsynced: a reboot clears them anyway.

pub use skiff_shim::fsutil::{
    read_json, remove_durably, remove_temporaries, sync_dir, write_atomic, write_atomic_volatile,
    write_json, write_json_volatile, TMP_PREFIX,
};
