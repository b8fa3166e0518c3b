//! StopContainer.

use skiff_proto::cri::{StopContainerRequest, StopContainerResponse};

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn stop_container(
    node: &Node,
    req: StopContainerRequest,
) -> Result<StopContainerResponse> {
    if req.timeout < 0 {
        return Err(Error::InvalidArgument(format!(
            "timeout: {} is negative",
            req.timeout
        )));
    }
    node.stop_container(&req.container_id, req.timeout).await?;
    Ok(StopContainerResponse {})
}
