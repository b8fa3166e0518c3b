//! skiff-runtime: the daemon `skiffd`.
//!
//! Owns the CRI v1 gRPC server (`cri`, one module per RPC), images (`image`: registry client, layer
//! unpack, store), pods (`pod`: records, pod files, launching the shim), containers (`container`:
//! records, OCI spec, user resolution), seccomp profiles (`seccomp`: selection, resolution,
//! compiled-filter cache), user namespaces (`userns`: the node probe), container events
//! (`events`), its own metrics (`metrics`), durable records (`store`) and configuration. It does not
//! run container processes: that is the per-pod `skiff-shim`'s job. See `ARCHITECTURE.md`.

pub mod check;
pub mod checkpoint;
pub mod config;
pub mod container;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod events;
pub mod image;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pod;
pub mod seccomp;
pub mod store;
pub mod streaming;
pub mod userns;

#[cfg(test)]
mod fuzz_tests;
