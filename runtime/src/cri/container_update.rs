//! UpdateContainerResources.

use skiff_proto::cri::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn update_container_resources(
    node: &Node,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse> {
    let linux = req
        .linux
        .ok_or_else(|| Error::InvalidArgument("linux: resources are required".into()))?;
    node.update_resources(&req.container_id, linux).await?;
    Ok(UpdateContainerResourcesResponse {})
}
