//! RunPodSandbox.

use skiff_proto::cri::{ContainerEventType, RunPodSandboxRequest, RunPodSandboxResponse};

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn run_pod_sandbox(
    node: &Node,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse> {
    let config = req
        .config
        .ok_or_else(|| Error::InvalidArgument("config: is required".into()))?;
    let id = node.run_pod(config, &req.runtime_handler).await?;
    for kind in [
        ContainerEventType::ContainerCreatedEvent,
        ContainerEventType::ContainerStartedEvent,
    ] {
        super::container_events::publish(node, &id, &id, kind);
    }
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
