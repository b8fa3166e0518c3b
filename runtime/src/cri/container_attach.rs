//! Attach: a URL on the streaming server that connects to the stdio of the container's main
//! process (see `streaming::remotecommand`).

use skiff_proto::cri::{AttachRequest, AttachResponse};

use crate::cri::container_exec::check_streams;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::streaming::remotecommand::Command;
use crate::streaming::Pending;

pub async fn attach(node: &Node, req: AttachRequest) -> Result<AttachResponse> {
    if req.container_id.is_empty() {
        return Err(Error::InvalidArgument("container_id: is empty".into()));
    }
    check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
    let (rec, pod, shim) = node.running(&req.container_id).await?;
    let cfg = rec.config();
    // api.proto: tty must match the container's; stdin needs a container created with it.
    if req.tty != cfg.tty {
        return Err(Error::InvalidArgument(format!(
            "tty: {} does not match container {}, created with tty {}",
            req.tty, rec.id, cfg.tty
        )));
    }
    if req.stdin && !cfg.stdin {
        return Err(Error::InvalidArgument(format!(
            "stdin: container {} was created without stdin",
            rec.id
        )));
    }
    let url = node.streaming.url(
        "attach",
        Pending::Command(Command {
            pod: pod.id,
            container: rec.id,
            cmd: vec![],
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            tty: req.tty,
            shim,
        }),
    );
    Ok(AttachResponse { url })
}
