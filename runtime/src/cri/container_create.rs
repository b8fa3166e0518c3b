//! CreateContainer: from an image, or from a checkpoint archive (`checkpoint::restore`).

use skiff_proto::cri::{ContainerEventType, CreateContainerRequest, CreateContainerResponse};

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn create_container(
    node: &Node,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse> {
    let config = req
        .config
        .ok_or_else(|| Error::InvalidArgument("config: is required".into()))?;
    let id = if crate::checkpoint::restore::is_archive(&config) {
        node.create_restored(&req.pod_sandbox_id, config, None)
            .await?
    } else if let Some(image) = node.checkpoint_image(&config) {
        node.create_restored(&req.pod_sandbox_id, config, Some(image))
            .await?
    } else {
        node.create_container(&req.pod_sandbox_id, config, None)
            .await?
    };
    super::container_events::publish(
        node,
        &req.pod_sandbox_id,
        &id,
        ContainerEventType::ContainerCreatedEvent,
    );
    Ok(CreateContainerResponse { container_id: id })
}
