//! PodSandboxStats and ListPodSandboxStats.

use skiff_proto::cri::{
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse,
};

use crate::error::Result;
use crate::node::Node;
use crate::pod::PodState;

pub fn pod_sandbox_stats(
    node: &Node,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse> {
    let pod = node.pods.find(&req.pod_sandbox_id)?;
    Ok(PodSandboxStatsResponse {
        stats: Some(node.pod_stats(&pod)?),
    })
}

/// Stats of every ready pod, filtered as the request asks.
pub fn list_pod_sandbox_stats(
    node: &Node,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let mut stats = vec![];
    for pod in node.pods.list() {
        if pod.state != PodState::Ready || (!f.id.is_empty() && !pod.id.starts_with(&f.id)) {
            continue;
        }
        let cfg = pod.config();
        if !f
            .label_selector
            .iter()
            .all(|(k, v)| cfg.labels.get(k) == Some(v))
        {
            continue;
        }
        stats.push(node.pod_stats(&pod)?);
    }
    Ok(ListPodSandboxStatsResponse { stats })
}
