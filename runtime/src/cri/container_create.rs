//! CreateContainer.

use skiff_proto::cri::{CreateContainerRequest, CreateContainerResponse};

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn create_container(
    node: &Node,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse> {
    let config = req
        .config
        .ok_or_else(|| Error::InvalidArgument("config: is required".into()))?;
    let id = node
        .create_container(&req.pod_sandbox_id, config, req.sandbox_config)
        .await?;
    Ok(CreateContainerResponse { container_id: id })
}
