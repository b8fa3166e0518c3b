//! The daemon's state: configuration, images, pods, containers and the shim launcher. The CRI
//! services share one [`Node`]; the pod and container life cycles are `impl Node` blocks in
//! `pod::lifecycle` and `container::lifecycle`, since each needs the other (removing a pod removes
//! its containers; creating a container needs its pod and image).

use std::path::PathBuf;
use std::sync::Arc;

use skiff_proto::shim::shim_client::ShimClient;
use tonic::transport::Channel;

use crate::config::Config;
use skiff_shim::api::ContainerState;

use crate::container::{ContainerRecord, Containers};
use crate::error::{IoContext, Result};
use crate::image::Images;
use crate::pod::launch::{self, Detached, Launcher};
use crate::pod::lifecycle::is_our_shim;
use crate::pod::{shim_client, PodRecord, Pods};

/// Exit notices a slow waiter may fall behind by before it is told it lagged (and reads the
/// state again).
const EXITS_BACKLOG: usize = 256;

pub struct Node {
    /// Open connections to pod shims, the most recently used.
    shims: shim_client::Connections,
    pub cfg: Arc<Config>,
    pub images: Arc<Images>,
    pub pods: Pods,
    pub containers: Containers,
    /// Compiled seccomp filters, by profile content.
    pub seccomp: crate::seccomp::Seccomp,
    /// Whether pods may have user namespaces here (the start-up probe), or why not.
    pub userns: std::result::Result<(), String>,
    /// The pinned one-mount namespace pods' shims make their /dev/shm in.
    pub empty_mntns: Option<PathBuf>,
    /// CRIU's version, or why checkpoints cannot be made here (checked at start).
    pub criu: std::result::Result<String, String>,
    /// Pod networking (CNI).
    pub network: crate::network::Network,
    /// The streaming server the URLs of PortForward lead to.
    pub streaming: Arc<crate::streaming::Streaming>,
    /// Last CPU readings, for ContainerStats' nano-cores.
    pub cpu_samples: crate::container::stats::CpuSamples,
    pub launcher: Box<dyn Launcher>,
    /// Container events for GetContainerEvents subscribers.
    pub events: crate::events::Hub,
    /// The read-only mount of the shim binary pods run from.
    pub shim: PathBuf,
    /// The id of each container whose exit a shim noted, as skiffd handles the notice: what
    /// a stop waits for.
    pub exits: tokio::sync::broadcast::Sender<String>,
    /// Container starts take turns (`max_concurrent_starts`).
    pub start_turns: crate::container::start_turns::StartTurns,
}

impl Node {
    /// A client for the pod's shim, reusing its connection.
    pub async fn shim(&self, pod: &PodRecord) -> Result<ShimClient<Channel>> {
        if let Some(c) = self.shims.get(&pod.id) {
            return Ok(c);
        }
        let c = shim_client::connect(&pod.id, &pod.socket()).await?;
        self.shims.keep(&pod.id, c.clone());
        Ok(c)
    }

    /// Forgets the connection to a pod's shim (it is stopping).
    pub fn forget_shim(&self, pod_id: &str) {
        self.shims.forget(pod_id);
    }

    /// A container's state, knowing whether its pod's shim still runs.
    pub fn container_state(&self, rec: &ContainerRecord) -> ContainerState {
        rec.state(|| self.shim_alive(&rec.pod_id))
    }

    /// Whether pod `pod_id`'s shim runs.
    pub fn shim_alive(&self, pod_id: &str) -> bool {
        self.pods
            .get(pod_id)
            .is_some_and(|p| p.shim_pid > 0 && is_our_shim(p.shim_pid, &p.id))
    }

    /// Opens every store, recovers pods and containers left by an earlier skiffd, and collects
    /// image data nothing references.
    pub async fn open(cfg: Arc<Config>) -> Result<Arc<Node>> {
        for dir in [cfg.run_root.join("pods"), cfg.run_root.join("containers")] {
            std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        let images = Arc::new(Images::open(cfg.clone())?);
        let pods = Pods::open(&cfg.root)?;
        let containers = Containers::open(&cfg.root, &images)?;
        images.store.collect_orphans()?;
        let source = launch::locate_shim(cfg.shim_binary.as_deref())?;
        let shim = launch::mount_shim_readonly(&cfg.run_root, &source)?;
        let userns = crate::userns::probe(&cfg.root, &cfg.run_root);
        if let Err(e) = &userns {
            tracing::warn!(reason = %e, "user namespaces (hostUsers: false) are not available on this node");
        }
        let streaming = crate::streaming::Streaming::start(
            cfg.streaming_address,
            cfg.streaming_port,
            cfg.streaming_url_ttl,
            cfg.streaming_tls.as_ref(),
        )
        .await?;
        let empty_mntns = match crate::userns::empty_mount_ns(&cfg.run_root) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(reason = %e, "no empty mount namespace: pods start slower");
                None
            }
        };
        let network = crate::network::Network::new(
            cfg.cni_conf_dir.clone(),
            cfg.cni_bin_dirs.clone(),
            cfg.cni_conf_name.clone(),
            &cfg.root,
        )?;
        // Pods are units where systemd runs the machine, detached processes elsewhere.
        let launcher: Box<dyn Launcher> = if crate::config::systemd_booted() {
            Box::new(crate::pod::systemd::Systemd::connect(shim.clone())?)
        } else {
            Box::new(Detached {
                binary: shim.clone(),
            })
        };
        tracing::info!(
            units = crate::config::systemd_booted(),
            cgroup_driver = ?cfg.cgroup_driver,
            "pod shims are started as {}",
            if crate::config::systemd_booted() { "systemd units" } else { "detached processes" }
        );
        let criu = crate::checkpoint::probe(&cfg.criu_binary);
        // Work directories of checkpoints a crash interrupted.
        crate::checkpoint::remove_unfinished(&cfg.root);
        match &criu {
            Ok(v) => tracing::info!(version = %v, "criu found: checkpoints can be made"),
            Err(why) => tracing::info!(reason = %why, "no usable criu: checkpoints cannot be made"),
        }
        match crate::container::apparmor::availability() {
            Ok(()) => tracing::info!("AppArmor available: containers get profiles"),
            Err(why) => {
                tracing::info!(reason = %why, "AppArmor unavailable: containers run without a profile unless they name a loaded one")
            }
        }
        let start_turns = crate::container::start_turns::StartTurns::new(cfg.max_concurrent_starts);
        let node = Arc::new(Node {
            shims: Default::default(),
            criu,
            network,
            cfg,
            images,
            pods,
            containers,
            seccomp: Default::default(),
            userns,
            empty_mntns,
            streaming,
            cpu_samples: Default::default(),
            launcher,
            shim,
            events: Default::default(),
            exits: tokio::sync::broadcast::channel(EXITS_BACKLOG).0,
            start_turns,
        });
        node.recover_pods().await;
        node.containers.remove_orphan_bundles(&node.cfg.run_root);
        Ok(node)
    }
}
