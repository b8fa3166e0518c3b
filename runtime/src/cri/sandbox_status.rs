//! PodSandboxStatus (the status itself is `views::pod_status_of`, shared with the List and
//! event calls), its containers' statuses for evented PLEG, and its verbose info.

use std::collections::HashMap;

use skiff_proto::cri::{PodSandboxStatusRequest, PodSandboxStatusResponse};

use super::views::{containers_statuses, pod_status_of};
use crate::error::Result;
use crate::node::Node;

pub async fn pod_sandbox_status(
    node: &Node,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse> {
    let r = node.pods.find(&req.pod_sandbox_id)?;
    let c = r.config();
    let status = pod_status_of(node, &r)?;
    let mut info = HashMap::new();
    if req.verbose {
        // CNI CHECK of the pod's network, for operators inspecting a pod.
        let network_check = match node.network.check(&r.id).await {
            None => serde_json::Value::Null,
            Some(Ok(())) => "ok".into(),
            Some(Err(e)) => e.to_string().into(),
        };
        let v = serde_json::json!({
            "networkCheck": network_check,
            "pid": r.shim_pid,
            "runDir": r.run_dir,
            "cgroup": r.cgroup,
            "config": serde_json::json!({
                "hostname": c.hostname,
                "logDirectory": c.log_directory,
            }),
        });
        info.insert("info".to_string(), v.to_string());
    }
    // The statuses of the pod's containers and when they were read, as kubelet's evented PLEG
    // takes them instead of asking for each container.
    let timestamp = skiff_shim::api::now_ns();
    Ok(PodSandboxStatusResponse {
        status: Some(status),
        info,
        containers_statuses: containers_statuses(node, &r.id),
        timestamp,
    })
}
