//! skiff-shim: the per-pod supervisor, one process per pod, and the container init path.
//!
//! The binary (`main.rs`) has three modes: `pod` creates the pod's namespaces, pins them under the
//! pod's run directory (this replaces the pause container), then supervises the pod's containers
//! and serves the shim API on the pod's socket; `init` and `exec` are single-threaded helpers
//! that set up and exec a container process: container init is forked from the (single-threaded)
//! supervisor, or exec'd when it has threads; exec helpers are exec'd. The binary they run as is
//! the read-only bind mount skiffd launches the shim from (`selfexe`), never a writable file.
//!
//! This library holds what skiffd shares with the shim: the pod configuration and container state
//! records ([`api`]) and the crash-safe, symlink-safe file helpers ([`fsutil`]). The shim decides
//! nothing: skiffd writes the OCI bundle, the shim makes it so.

pub mod api;
pub mod cgroups;
pub mod criu;
pub mod devfilter;
pub mod fsutil;
pub mod idmap;
pub mod podshm;
