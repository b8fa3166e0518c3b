//! RemovePodSandbox.

use skiff_proto::cri::{ContainerEventType, RemovePodSandboxRequest, RemovePodSandboxResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn remove_pod_sandbox(
    node: &Node,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse> {
    let id = &req.pod_sandbox_id;
    let existed = node.pods.get(id).is_some();
    let containers = node.containers.of_pod(id);
    node.remove_pod(id).await?;
    if existed {
        for c in containers {
            super::container_events::publish(
                node,
                id,
                &c.id,
                ContainerEventType::ContainerDeletedEvent,
            );
        }
        super::container_events::publish(node, id, id, ContainerEventType::ContainerDeletedEvent);
    }
    Ok(RemovePodSandboxResponse {})
}
