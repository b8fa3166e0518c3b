//! skiff-runtime: the daemon `skiffd`.
//!
//! Owns the CRI v1 gRPC server (`cri`), images (`image`: registry client, layer unpack, store),
//! durable records (`store`) and configuration. It does not run container processes: that is the
//! per-pod `skiff-shim`'s job. See `shared/design.md` for the whole picture.

pub mod config;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod image;
pub mod store;
