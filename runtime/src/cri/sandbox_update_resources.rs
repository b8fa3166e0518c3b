//! UpdatePodSandboxResources: a pod's new pod-level limits (its containers' sum and its
//! overhead), written live into the pod's cgroup.

use skiff_proto::cri::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn update_pod_sandbox_resources(
    node: &Node,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Error::InvalidArgument("pod_sandbox_id: is empty".into()));
    }
    if req.resources.is_none() && req.overhead.is_none() {
        return Err(Error::InvalidArgument(
            "resources, overhead: neither is set (nothing to update)".into(),
        ));
    }
    node.update_pod_resources(&req.pod_sandbox_id, req.resources, req.overhead)
        .await?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
