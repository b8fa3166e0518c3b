//! RemovePodSandbox.

use skiff_proto::cri::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn remove_pod_sandbox(
    node: &Node,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse> {
    node.remove_pod(&req.pod_sandbox_id).await?;
    Ok(RemovePodSandboxResponse {})
}
