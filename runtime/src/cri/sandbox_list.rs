//! ListPodSandbox.

use skiff_proto::cri::{ListPodSandboxRequest, ListPodSandboxResponse};

use super::views::to_cri_pod;
use crate::error::Result;
use crate::node::Node;

pub fn list_pod_sandbox(node: &Node, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse> {
    let f = req.filter.unwrap_or_default();
    let mut items = vec![];
    for r in node.pods.list() {
        if !f.id.is_empty() && !r.id.starts_with(&f.id) {
            continue;
        }
        if let Some(s) = &f.state {
            if s.state != r.cri_state() as i32 {
                continue;
            }
        }
        let p = to_cri_pod(&r)?;
        if !f
            .label_selector
            .iter()
            .all(|(k, v)| p.labels.get(k) == Some(v))
        {
            continue;
        }
        items.push(p);
    }
    Ok(ListPodSandboxResponse { items })
}
