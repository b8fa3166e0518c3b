//! Exec: a URL on the streaming server that runs a command in the container with its stdio
//! streamed (see `streaming::remotecommand`).

use skiff_proto::cri::{ExecRequest, ExecResponse};

use crate::error::{Error, Result};
use crate::node::Node;
use crate::streaming::remotecommand::Command;
use crate::streaming::Pending;

/// The stream choices kubelet's streaming server refuses, for Exec and Attach alike.
pub fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<()> {
    if tty && stderr {
        return Err(Error::InvalidArgument(
            "tty and stderr cannot both be true: a terminal has one output stream".into(),
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout and stderr must be set".into(),
        ));
    }
    Ok(())
}

pub async fn exec(node: &Node, req: ExecRequest) -> Result<ExecResponse> {
    if req.container_id.is_empty() {
        return Err(Error::InvalidArgument("container_id: is empty".into()));
    }
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument("cmd: is empty".into()));
    }
    check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
    let (rec, pod, shim) = node.running(&req.container_id).await?;
    let url = node.streaming.url(
        "exec",
        Pending::Command(Command {
            pod: pod.id,
            container: rec.id,
            cmd: req.cmd,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            tty: req.tty,
            shim,
        }),
    );
    Ok(ExecResponse { url })
}
