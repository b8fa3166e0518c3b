//! ListContainers.

use skiff_proto::cri::{ListContainersRequest, ListContainersResponse};

use super::views::to_cri_container;
use crate::container::cri_state;
use crate::error::Result;
use crate::node::Node;

pub fn list_containers(node: &Node, req: ListContainersRequest) -> Result<ListContainersResponse> {
    let f = req.filter.unwrap_or_default();
    let mut containers = vec![];
    for r in node.containers.list() {
        if !f.id.is_empty() && !r.id.starts_with(&f.id) {
            continue;
        }
        if !f.pod_sandbox_id.is_empty() && !r.pod_id.starts_with(&f.pod_sandbox_id) {
            continue;
        }
        let s = node.container_state(&r);
        if let Some(want) = &f.state {
            if want.state != cri_state(&s) as i32 {
                continue;
            }
        }
        let c = to_cri_container(&r, &s)?;
        if !f
            .label_selector
            .iter()
            .all(|(k, v)| c.labels.get(k) == Some(v))
        {
            continue;
        }
        containers.push(c);
    }
    Ok(ListContainersResponse { containers })
}
