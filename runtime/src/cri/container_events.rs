//! GetContainerEvents (kubelet's evented PLEG): each subscriber gets CREATED, STARTED, STOPPED
//! and DELETED events of containers, and of pod sandboxes (with the pod's id as the container
//! id, as containerd sends them), each carrying the pod's status and its containers' statuses
//! as they are just after the change (built off the CRI call's path). CRI calls note what
//! they did; exits come from the shims' exit notices (`container::exits`), including those
//! noted while skiffd was down.

use std::sync::Arc;

use futures_util::StreamExt;
use skiff_proto::cri::{ContainerEventResponse, ContainerEventType, GetEventsRequest};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::views::{containers_statuses, pod_status_of};
use super::BoxStream;
use crate::container::exits;
use crate::error::Result;
use crate::node::Node;

pub async fn get_container_events(
    node: &Node,
    _req: GetEventsRequest,
) -> Result<BoxStream<ContainerEventResponse>> {
    let (backlog, rx) = node.events.subscribe();
    let live = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(ev) => Some((Ok(ev), rx)),
            Err(RecvError::Lagged(n)) => Some((
                Err(Status::resource_exhausted(format!(
                    "GetContainerEvents: this subscriber fell {n} events behind (more than {} \
                     unread): subscribe again and relist",
                    crate::events::CAPACITY
                ))),
                rx,
            )),
            Err(RecvError::Closed) => None,
        }
    });
    let first = futures_util::stream::iter(backlog.into_iter().map(Ok));
    // A lag error ends the stream: the subscriber is dropped, never waited for.
    let mut failed = false;
    let stream = first.chain(live).take_while(move |item| {
        let go = !failed;
        failed |= item.is_err();
        std::future::ready(go)
    });
    Ok(Box::pin(stream))
}

/// Notes an event of container `id` of pod `pod_id` (or of the pod itself when `id` is the
/// pod's id); the builder started by [`start`] publishes it with the statuses as they are then.
pub fn publish(node: &Node, pod_id: &str, id: &str, kind: ContainerEventType) {
    node.events.note(pod_id, id, kind as i32);
}

/// The events of `changes` (in order), each with its pod's status and its containers' statuses
/// as they are now: read once for a run of changes of the same pod (RunPodSandbox's CREATED and
/// STARTED, a container's quick succession).
fn build(node: &Node, changes: Vec<crate::events::Change>) -> Vec<ContainerEventResponse> {
    let mut out = vec![];
    let mut read: Option<(String, Option<skiff_proto::cri::PodSandboxStatus>, Vec<_>)> = None;
    for change in changes {
        if read
            .as_ref()
            .is_none_or(|(pod, _, _)| *pod != change.pod_id)
        {
            let pod = node.pods.get(&change.pod_id);
            read = Some((
                change.pod_id.clone(),
                pod.and_then(|p| pod_status_of(node, &p).ok()),
                containers_statuses(node, &change.pod_id),
            ));
        }
        let Some((_, pod_status, statuses)) = &read else {
            continue;
        };
        out.push(ContainerEventResponse {
            container_id: change.id,
            container_event_type: change.kind,
            created_at: change.at,
            pod_sandbox_status: pod_status.clone(),
            containers_statuses: statuses.clone(),
        });
    }
    out
}

/// The event builder: a thread of its own at a lower CPU priority (nice 10), so that on a busy
/// node building events yields to the CRI calls starting pods. Everything noted meanwhile goes
/// in the same build.
fn builder(node: &Node, mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::events::Change>) {
    // SAFETY: setpriority with PRIO_PROCESS and who 0 sets the calling thread's nice value on
    // Linux; it takes no pointers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    while let Some(first) = changes.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = changes.try_recv() {
            batch.push(more);
        }
        let began = std::time::Instant::now();
        let events = build(node, batch);
        crate::metrics::get().events_built(events.len(), began);
        for ev in events {
            node.events.publish(ev);
        }
    }
}

/// Starts the event builder, and publishes a STOPPED event for each exit the shims note,
/// from now on and those noted while skiffd was down.
pub fn start(node: Arc<Node>) -> Result<()> {
    if let Some(changes) = node.events.changes() {
        let node = node.clone();
        std::thread::Builder::new()
            .name("event-builder".into())
            .spawn(move || builder(&node, changes))
            .map_err(|e| {
                crate::error::Error::Internal(format!("starting the event builder: {e}"))
            })?;
    }
    let (while_down, mut notices) = exits::watch(&node.cfg.run_root)?;
    let stopped = ContainerEventType::ContainerStoppedEvent as i32;
    for id in while_down {
        if let Ok(rec) = node.containers.find(&id) {
            node.events.note_kept(&rec.pod_id, &id, stopped);
        }
        exits::done(&node.cfg.run_root, &id);
    }
    tokio::spawn(async move {
        while let Some(id) = notices.recv().await {
            if let Ok(rec) = node.containers.find(&id) {
                node.events.note(&rec.pod_id, &id, stopped);
            }
            exits::done(&node.cfg.run_root, &id);
            // Stops waiting for this exit go on (none waiting is no error).
            let _ = node.exits.send(id);
        }
    });
    Ok(())
}
