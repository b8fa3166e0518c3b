//! Streaming for Exec, Attach and PortForward (kubelet and crictl connect to a URL skiffd
//! returns). So far: the SPDY/3.1 framing those connections speak (`spdy`). The HTTP server,
//! the WebSocket protocols and the CRI calls are not built yet: `Exec`, `Attach` and
//! `PortForward` answer Unimplemented.

pub mod spdy;
