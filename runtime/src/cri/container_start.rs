//! StartContainer.

use skiff_proto::cri::{StartContainerRequest, StartContainerResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn start_container(
    node: &Node,
    req: StartContainerRequest,
) -> Result<StartContainerResponse> {
    node.start_container(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
