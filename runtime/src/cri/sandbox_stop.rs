//! StopPodSandbox.

use skiff_proto::cri::{
    ContainerEventType, PodSandboxState, StopPodSandboxRequest, StopPodSandboxResponse,
};

use crate::error::Result;
use crate::node::Node;

pub async fn stop_pod_sandbox(
    node: &Node,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse> {
    let was_ready = node
        .pods
        .get(&req.pod_sandbox_id)
        .is_some_and(|p| p.cri_state() == PodSandboxState::SandboxReady);
    node.stop_pod(&req.pod_sandbox_id).await?;
    if was_ready {
        let id = &req.pod_sandbox_id;
        super::container_events::publish(node, id, id, ContainerEventType::ContainerStoppedEvent);
    }
    Ok(StopPodSandboxResponse {})
}
