//! ReopenContainerLog.

use skiff_proto::cri::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn reopen_container_log(
    node: &Node,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse> {
    node.reopen_log(&req.container_id).await?;
    Ok(ReopenContainerLogResponse {})
}
