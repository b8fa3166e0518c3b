//! StartContainer.

use skiff_proto::cri::{ContainerEventType, StartContainerRequest, StartContainerResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn start_container(
    node: &Node,
    req: StartContainerRequest,
) -> Result<StartContainerResponse> {
    node.start_container(&req.container_id).await?;
    if let Ok(r) = node.containers.find(&req.container_id) {
        super::container_events::publish(
            node,
            &r.pod_id,
            &r.id,
            ContainerEventType::ContainerStartedEvent,
        );
    }
    Ok(StartContainerResponse {})
}
