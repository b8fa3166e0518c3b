//! ListPodSandboxMetrics (and StreamPodSandboxMetrics, paged): the metrics of every ready pod
//! and its running containers (see `pod::metrics`).

use skiff_proto::cri::{ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse};

use crate::error::Result;
use crate::node::Node;
use crate::pod::PodState;

pub fn list_pod_sandbox_metrics(
    node: &Node,
    _req: ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse> {
    let mut pod_metrics = vec![];
    for pod in node.pods.list() {
        if pod.state != PodState::Ready {
            continue;
        }
        // A pod removed meanwhile, or whose record does not read, is left out.
        if let Ok(m) = node.pod_metrics(&pod) {
            pod_metrics.push(m);
        }
    }
    Ok(ListPodSandboxMetricsResponse { pod_metrics })
}
