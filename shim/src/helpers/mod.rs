//! The single-threaded helpers besides `init`, each run from the read-only shim binary by the
//! supervisor with the sync socket on fd 3: `exec` (a command in a running container) and
//! `restore` (a container restored from a CRIU checkpoint instead of started).

pub mod exec;
pub mod restore;
