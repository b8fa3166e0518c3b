//! ContainerStats and ListContainerStats.

use skiff_proto::cri::{
    ContainerStatsRequest, ContainerStatsResponse, ListContainerStatsRequest,
    ListContainerStatsResponse,
};

use crate::container::stats;
use crate::error::Result;
use crate::node::Node;

pub fn container_stats(node: &Node, req: ContainerStatsRequest) -> Result<ContainerStatsResponse> {
    let rec = node.containers.find(&req.container_id)?;
    Ok(ContainerStatsResponse {
        stats: Some(stats::collect(&rec, &node.cpu_samples)?),
    })
}

/// Stats of every container that runs, filtered as the request asks.
pub fn list_container_stats(
    node: &Node,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let mut out = vec![];
    for rec in node.containers.list() {
        if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
            continue;
        }
        if !f.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&f.pod_sandbox_id) {
            continue;
        }
        let st = node.container_state(&rec);
        if st.pid == 0 || st.exited {
            continue;
        }
        let cfg = rec.config();
        if !f
            .label_selector
            .iter()
            .all(|(k, v)| cfg.labels.get(k) == Some(v))
        {
            continue;
        }
        out.push(stats::collect(&rec, &node.cpu_samples)?);
    }
    Ok(ListContainerStatsResponse { stats: out })
}
