//! RemoveContainer.

use skiff_proto::cri::{ContainerEventType, RemoveContainerRequest, RemoveContainerResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn remove_container(
    node: &Node,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse> {
    let existed = node.containers.find(&req.container_id).ok();
    node.remove_container(&req.container_id).await?;
    if let Some(r) = existed {
        super::container_events::publish(
            node,
            &r.pod_id,
            &r.id,
            ContainerEventType::ContainerDeletedEvent,
        );
    }
    Ok(RemoveContainerResponse {})
}
