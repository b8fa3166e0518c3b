//! Streaming for Exec, Attach and PortForward: kubelet and crictl connect to a URL skiffd
//! returns (`server`: single-use tokens, the HTTP upgrade) and speak SPDY/3.1 (`spdy`). Built so
//! far: PortForward (`portforward`). `Exec` and `Attach`, and the WebSocket protocols, are not
//! built yet: those calls answer Unimplemented.

pub mod portforward;
pub mod server;
pub mod spdy;

pub use server::{Pending, Streaming};
