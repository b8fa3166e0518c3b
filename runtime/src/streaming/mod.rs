//! Streaming for Exec, Attach and PortForward: kubelet and crictl connect to a URL skiffd
//! returns (`server`: single-use tokens, the HTTP upgrade) and speak SPDY/3.1 (`spdy`, `conn`)
//! or WebSocket (`websocket`). Exec and Attach sessions (`remotecommand`) reach the container
//! through its pod's shim; PortForward (`portforward`) dials inside the pod's network
//! namespace from skiffd.

pub mod conn;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod websocket;

pub use server::{Pending, Streaming};
