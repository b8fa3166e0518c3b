//! PortForward: a URL on the streaming server that forwards to ports of the pod.

use skiff_proto::cri::{PortForwardRequest, PortForwardResponse};
use skiff_shim::api::NsMode;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::pod::lifecycle::pod_namespaces;
use crate::pod::PodState;
use crate::streaming::Pending;

pub fn port_forward(node: &Node, req: PortForwardRequest) -> Result<PortForwardResponse> {
    let pod = node.pods.find(&req.pod_sandbox_id)?;
    if pod.state != PodState::Ready {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    for p in &req.port {
        if !(1..=65535).contains(p) {
            return Err(Error::InvalidArgument(format!(
                "port: {p} is not a TCP port"
            )));
        }
    }
    let ns = pod_namespaces(pod.config())?;
    // A host-network pod's ports are the node's.
    let netns =
        (ns.network == NsMode::Pod).then(|| pod.run_dir.join(skiff_shim::api::NS_DIR).join("net"));
    let url = node.streaming.url(
        "portforward",
        Pending::PortForward {
            pod: pod.id.clone(),
            netns,
            ports: req.port.iter().map(|p| *p as u16).collect(),
        },
    );
    Ok(PortForwardResponse { url })
}
