//! StopPodSandbox.

use skiff_proto::cri::{StopPodSandboxRequest, StopPodSandboxResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn stop_pod_sandbox(
    node: &Node,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse> {
    node.stop_pod(&req.pod_sandbox_id).await?;
    Ok(StopPodSandboxResponse {})
}
