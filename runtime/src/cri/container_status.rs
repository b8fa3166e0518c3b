//! ContainerStatus (the status itself is `views::status_of`, shared with the List and event
//! calls), and its verbose info.

use std::collections::HashMap;

use skiff_proto::cri::{ContainerStatusRequest, ContainerStatusResponse};

use super::views::status_of;
use crate::error::Result;
use crate::node::Node;

pub async fn container_status(
    node: &Node,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse> {
    let r = node.containers.find(&req.container_id)?;
    let s = node.container_state(&r);
    let status = status_of(&r, &s)?;
    let mut info = HashMap::new();
    if req.verbose {
        let spec: serde_json::Value = std::fs::read(r.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let v = serde_json::json!({
            "sandboxID": r.pod_id,
            "pid": s.pid,
            "bundle": r.bundle,
            "cgroup": r.cgroup,
            "runtimeSpec": spec,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(status),
        info,
    })
}
