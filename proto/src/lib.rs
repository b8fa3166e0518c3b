//! skiff-proto: the generated gRPC code skiff speaks.
//!
//! Owns `proto/api.proto`, the CRI v1 API exactly as Kubernetes publishes it (package `runtime.v1`),
//! and skiff's own `proto/shim.proto`, and the tonic/prost code generated from them. It holds no logic: the daemon implements the services
//! in `skiff-runtime`.

/// CRI v1 (`runtime.v1`): RuntimeService and ImageService, messages, client and server.
pub mod cri {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

/// skiff's shim API (`skiff.shim.v1`): skiffd → the pod's skiff-shim.
pub mod shim {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("skiff.shim.v1");
}
