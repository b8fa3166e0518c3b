//! CheckpointContainer: a CRIU dump of a running container, which runs on, written as a
//! checkpoint archive at the request's `location` (see `checkpoint`).

use std::path::Path;
use std::time::Duration;

use skiff_proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};

use crate::checkpoint;
use crate::error::{Error, IoContext, Result};
use crate::node::Node;

pub async fn checkpoint_container(
    node: &Node,
    req: CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse> {
    if req.container_id.is_empty() {
        return Err(Error::InvalidArgument("container_id: is empty".into()));
    }
    let location = Path::new(&req.location);
    if !location.is_absolute() || location.file_name().is_none() {
        return Err(Error::InvalidArgument(format!(
            "location: {:?} is not an absolute file path",
            req.location
        )));
    }
    if !location.parent().is_some_and(|p| p.is_dir()) {
        return Err(Error::InvalidArgument(format!(
            "location: the directory of {} does not exist",
            location.display()
        )));
    }
    if req.timeout < 0 {
        return Err(Error::InvalidArgument(format!(
            "timeout: {} is negative",
            req.timeout
        )));
    }
    let (rec, pod, _shim) = node.running(&req.container_id).await?;
    // CRIU dumps a PID namespace only with its init: a container sharing its pod's (the shim
    // is PID 1 there) cannot be dumped alone.
    if crate::pod::lifecycle::pod_namespaces(pod.config())?.pid == skiff_shim::api::PidMode::Pod {
        return Err(Error::FailedPrecondition(format!(
            "container {}: its pod {} shares one PID namespace among its containers \
             (namespace_options.pid POD); only containers with a PID namespace of their own \
             (CONTAINER, kubelet's default) can be checkpointed",
            rec.id, pod.id
        )));
    }
    let version = node
        .criu
        .as_ref()
        .map_err(|why| Error::FailedPrecondition(format!("checkpoint: {why}")))?;
    let cfg = rec.config();
    let pid = node.container_state(&rec).pid;

    let work = checkpoint::work_dir(&node.cfg.root, &rec.id);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).ctx(|| format!("creating {}", work.display()))?;
    let result = async {
        let images = work.join("checkpoint");
        // What the container's stdio was (pipes to its shim), as runc records it: a restore
        // hands in new ends in their place.
        let descriptors: Vec<String> = (0..3)
            .map(|fd| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .map(|l| l.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        let spec: serde_json::Value = std::fs::read(rec.bundle.join("config.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| {
                Error::Internal(format!(
                    "container {}: its config.json is unreadable",
                    rec.id
                ))
            })?;
        let started = std::time::Instant::now();
        checkpoint::dump(&checkpoint::Dump {
            criu: &node.cfg.criu_binary,
            pid,
            images: &images,
            tty: cfg.tty,
            timeout: (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64)),
            binds: checkpoint::bind_destinations(&spec),
        })
        .await?;
        let dumped_in = started.elapsed();
        std::fs::write(
            images.join("descriptors.json"),
            serde_json::json!(descriptors).to_string(),
        )
        .ctx(|| "writing descriptors.json of the checkpoint")?;
        // CRIU's log and statistics go at the top of the archive, as the others put them.
        for name in ["dump.log", "stats-dump"] {
            let _ = std::fs::rename(images.join(name), work.join(name));
        }
        let deleted =
            checkpoint::rootfs_diff(&rec.writable_layer(), &work.join("rootfs-diff.tar"))?;
        let write = |name: &str, v: &serde_json::Value| {
            std::fs::write(work.join(name), v.to_string())
                .ctx(|| format!("writing {name} of the checkpoint"))
        };
        write("deleted.files", &serde_json::json!(deleted))?;
        let mounts: Vec<serde_json::Value> = rec
            .mounts
            .iter()
            .map(|m| {
                serde_json::json!({
                    "destination": m.container_path,
                    "source": m.host_path,
                    "readonly": m.readonly,
                })
            })
            .collect();
        write("bind.mounts", &serde_json::json!(mounts))?;
        let meta = cfg.metadata.clone().unwrap_or_default();
        write(
            "config.dump",
            &serde_json::json!({
                "id": rec.id,
                "name": meta.name,
                "rootfsImage": rec.image_name,
                "rootfsImageRef": rec.image_ref,
                "rootfsImageName": rec.image_name,
                "runtime": "skiff",
                "createdTime": skiff_shim::api::rfc3339_nano(rec.created_at),
                "checkpointedTime": skiff_shim::api::rfc3339_nano(skiff_shim::api::now_ns()),
                "criuVersion": version,
            }),
        )?;
        std::fs::copy(rec.bundle.join("config.json"), work.join("spec.dump"))
            .ctx(|| "copying the container's spec")?;
        if !rec.log_path.is_empty() {
            // The log as it is now; a container without one has none in the archive.
            let _ = std::fs::copy(&rec.log_path, work.join("container.log"));
        }
        if !work.join("stats-dump").exists() {
            write(
                "stats-dump",
                &serde_json::json!({"dump": {"total_time_us": dumped_in.as_micros() as u64}}),
            )?;
        }
        checkpoint::write_archive(&work, location)
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result?;
    tracing::info!(container = %rec.id, location = %location.display(), "container checkpointed");
    Ok(CheckpointContainerResponse {})
}
