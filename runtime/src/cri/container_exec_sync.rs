//! ExecSync.

use skiff_proto::cri::{ExecSyncRequest, ExecSyncResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn exec_sync(node: &Node, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    let r = node
        .exec_sync(&req.container_id, req.cmd, req.timeout)
        .await?;
    Ok(ExecSyncResponse {
        stdout: r.stdout,
        stderr: r.stderr,
        exit_code: r.exit_code,
    })
}
