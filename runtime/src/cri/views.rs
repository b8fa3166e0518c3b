//! The CRI views of pod and container records that the Status, List, Stream and event calls
//! share: `Container`, `ContainerStatus`, `PodSandbox`, `PodSandboxStatus`.

use skiff_proto::cri::{
    Container, ContainerResources, ContainerStatus, ContainerUser, ImageSpec, LinuxContainerUser,
    LinuxPodSandboxStatus, Mount, Namespace, NamespaceOption, PodSandbox, PodSandboxStatus,
};
use skiff_shim::api::ContainerState as ShimState;

use crate::container::{cri_state, resources, signal, ContainerRecord};
use crate::error::Result;
use crate::node::Node;
use crate::pod::PodRecord;

fn image_spec(r: &ContainerRecord) -> ImageSpec {
    ImageSpec {
        image: r.image_name.clone(),
        ..Default::default()
    }
}

pub fn to_cri_container(r: &ContainerRecord, s: &ShimState) -> Result<Container> {
    let c = r.config();
    Ok(Container {
        id: r.id.clone(),
        pod_sandbox_id: r.pod_id.clone(),
        metadata: c.metadata.clone(),
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        state: cri_state(s) as i32,
        created_at: r.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        image_id: r.image_id.clone(),
    })
}

/// The CRI status of the container `r` in the state `s`, its resources read back from its
/// cgroup (ContainerStatus).
pub fn status_of(r: &ContainerRecord, s: &ShimState) -> Result<ContainerStatus> {
    status(r, s, true)
}

/// The CRI status of the container `r` in the state `s`, with the resources its record holds
/// (the last ones applied), as the summaries in PodSandboxStatus and events carry them: no
/// cgroup file is read.
pub fn recorded_status_of(r: &ContainerRecord, s: &ShimState) -> Result<ContainerStatus> {
    status(r, s, false)
}

fn status(r: &ContainerRecord, s: &ShimState, from_cgroup: bool) -> Result<ContainerStatus> {
    let c = r.config();
    Ok(ContainerStatus {
        id: r.id.clone(),
        metadata: c.metadata.clone(),
        state: cri_state(s) as i32,
        created_at: r.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: s.reason.clone(),
        message: s.message.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        mounts: r
            .mounts
            .iter()
            .map(|m| Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                // An image volume names its image by id, as kubelet's image GC expects.
                image: (!m.image.is_empty()).then(|| ImageSpec {
                    image: m.image.clone(),
                    ..Default::default()
                }),
                image_sub_path: m.image_sub_path.clone(),
                ..Default::default()
            })
            .collect(),
        log_path: r.log_path.clone(),
        // What the cgroup holds (an in-place resize shows here once it took), else what was
        // asked.
        resources: {
            let asked = c.linux.as_ref().and_then(|l| l.resources.as_ref());
            from_cgroup
                .then(|| resources::read_back(&r.cgroup, asked))
                .flatten()
                .or_else(|| asked.cloned())
                .map(|r| ContainerResources {
                    linux: Some(r),
                    windows: None,
                })
        },
        image_id: r.image_id.clone(),
        stop_signal: signal::to_cri(r.stop_signal_number()) as i32,
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: r.uid as i64,
                gid: r.gid as i64,
                supplemental_groups: process_groups(r.gid, &r.groups),
            }),
        }),
    })
}

/// The groups the container's process has, as `id -G` lists them: its primary group first, then
/// its supplementary groups.
fn process_groups(gid: u32, groups: &[u32]) -> Vec<i64> {
    let mut all = vec![gid as i64];
    for g in groups {
        if !all.contains(&(*g as i64)) {
            all.push(*g as i64);
        }
    }
    all
}

pub fn to_cri_pod(r: &PodRecord) -> Result<PodSandbox> {
    let c = r.config();
    Ok(PodSandbox {
        id: r.id.clone(),
        metadata: c.metadata.clone(),
        state: r.cri_state() as i32,
        created_at: r.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    })
}

/// The statuses of the containers of pod `pod_id`, with their recorded resources (the pod's
/// shim looked for at most once).
pub fn containers_statuses(node: &Node, pod_id: &str) -> Vec<ContainerStatus> {
    let shim_alive = std::cell::OnceCell::new();
    node.containers
        .of_pod(pod_id)
        .iter()
        .filter_map(|c| {
            let state = c.state(|| *shim_alive.get_or_init(|| node.shim_alive(pod_id)));
            recorded_status_of(c, &state).ok()
        })
        .collect()
}

/// The CRI status of pod `r`.
pub fn pod_status_of(node: &Node, r: &PodRecord) -> Result<PodSandboxStatus> {
    let c = r.config();
    let ns: NamespaceOption = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    Ok(PodSandboxStatus {
        id: r.id.clone(),
        metadata: c.metadata.clone(),
        state: r.cri_state() as i32,
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
