//! PodSandboxStatus, and the CRI views of a pod record that ListPodSandbox shares.

use std::collections::HashMap;

use skiff_proto::cri::{
    ContainerStatus, LinuxPodSandboxStatus, Namespace, NamespaceOption, PodSandbox,
    PodSandboxState, PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};

use crate::error::Result;
use crate::node::Node;
use crate::pod::{PodRecord, PodState};

pub fn cri_state(r: &PodRecord) -> PodSandboxState {
    match r.state {
        PodState::Ready => PodSandboxState::SandboxReady,
        PodState::Creating | PodState::NotReady => PodSandboxState::SandboxNotready,
    }
}

pub fn to_cri_pod(r: &PodRecord) -> Result<PodSandbox> {
    let c = r.config()?;
    Ok(PodSandbox {
        id: r.id.clone(),
        metadata: c.metadata.clone(),
        state: cri_state(r) as i32,
        created_at: r.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    })
}

pub async fn pod_sandbox_status(
    node: &Node,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse> {
    let r = node.pods.find(&req.pod_sandbox_id)?;
    let c = r.config()?;
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

/// The statuses of the containers of pod `pod_id` (those whose records read).
pub fn containers_statuses(node: &Node, pod_id: &str) -> Vec<ContainerStatus> {
    node.containers
        .of_pod(pod_id)
        .iter()
        .filter_map(|c| super::container_status::status_of(c, &node.container_state(c)).ok())
        .collect()
}

/// The CRI status of pod `r`.
pub fn pod_status_of(node: &Node, r: &PodRecord) -> Result<PodSandboxStatus> {
    let c = r.config()?;
    let ns: NamespaceOption = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    Ok(PodSandboxStatus {
        id: r.id.clone(),
        metadata: c.metadata.clone(),
        state: cri_state(r) as i32,
        created_at: r.created_at,
        // The IPs CNI gave the pod (none for a host-network pod).
        network: Some(node.network.status(&r.id).unwrap_or_default()),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace { options: Some(ns) }),
        }),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    })
}
