//! RemoveContainer.

use skiff_proto::cri::{RemoveContainerRequest, RemoveContainerResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn remove_container(
    node: &Node,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse> {
    node.remove_container(&req.container_id).await?;
    Ok(RemoveContainerResponse {})
}
