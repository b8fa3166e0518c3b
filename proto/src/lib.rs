//! skiff-proto: the generated gRPC code skiff speaks.
//!
//! Owns `proto/api.proto`, the CRI v1 API exactly as Kubernetes publishes it (package `runtime.v1`),
//! and the tonic/prost code generated from it. It holds no logic: the daemon implements the services
//! in `skiff-runtime`.

/// CRI v1 (`runtime.v1`): RuntimeService and ImageService, messages, client and server.
pub mod cri {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("runtime.v1");
}
