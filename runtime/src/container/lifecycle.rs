//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ExecSync and
//! ReopenContainerLog: what skiffd decides and records; the pod's shim runs the processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_proto::cri::{ContainerConfig, PodSandboxConfig, Signal};
use skiff_proto::shim::shim_client::ShimClient;
use skiff_proto::shim::{
    ExecSyncRequest, ExecSyncResponse, KillContainerRequest, ReopenLogRequest,
    RestoreContainerRequest, StartContainerRequest,
};
use skiff_shim::api::{ContainerState, Rootfs, ROOTFS_FILE, SECCOMP_FILE};
use skiff_shim::{cgroups, fsutil};
use tonic::transport::Channel;

use super::spec::{self, ImageConfig, PodContext, SpecInput};
use super::{cdi, image_volume, signal, user, ContainerRecord};
use crate::error::{Error, IoContext, Result};
use crate::node::Node;
use crate::pod::lifecycle::{is_our_shim, pod_namespaces};
use crate::pod::{shim_client, PodRecord, PodState};
use crate::store;

/// Checks `log_path` stays inside `log_directory` and returns the absolute path, creating its
/// parent directories inside the log directory (never through a symlink out of it).
fn log_file(log_directory: &str, log_path: &str) -> Result<String> {
    if log_path.is_empty() {
        return Ok(String::new());
    }
    if log_directory.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "log_path: {log_path:?} given but the pod has no log_directory"
        )));
    }
    let rel = Path::new(log_path);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::InvalidArgument(format!(
            "log_path: {log_path:?} must be a relative path without . or .. components"
        )));
    }
    let dir = Path::new(log_directory);
    if !dir.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "sandbox log_directory: {log_directory:?} is not absolute"
        )));
    }
    std::fs::create_dir_all(dir).ctx(|| format!("creating log directory {log_directory}"))?;
    let root = fsutil::open_dir(dir).ctx(|| format!("opening log directory {log_directory}"))?;
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        let fd = fsutil::mkdir_all_in_root(&root, parent)
            .ctx(|| format!("creating the directory of log_path {log_path:?}"))?;
        // The directory resolved inside the log directory must be the one the path names.
        let real = std::fs::read_link(fsutil::fd_path(&fd)).unwrap_or_default();
        if real != dir.join(parent) {
            return Err(Error::InvalidArgument(format!(
                "log_path: {log_path:?} leaves the log directory through a symlink"
            )));
        }
    }
    Ok(dir.join(rel).display().to_string())
}

impl Node {
    fn ready_pod(&self, id: &str) -> Result<PodRecord> {
        let pod = self.pods.find(id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        Ok(pod)
    }

    /// The container's oom_score_adj: the request's, raised to skiffd's own when
    /// `restrict_oom_score_adj` is set.
    fn oom_score_adj(
        &self,
        r: Option<&skiff_proto::cri::LinuxContainerResources>,
    ) -> Result<Option<i32>> {
        let Some(r) = r else { return Ok(None) };
        let v = r.oom_score_adj;
        if !(-1000..=1000).contains(&v) {
            return Err(Error::InvalidArgument(format!(
                "resources.oom_score_adj: {v} is outside -1000..1000"
            )));
        }
        if !self.cfg.restrict_oom_score_adj {
            return Ok(Some(v as i32));
        }
        let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ctx(|| "reading skiffd's oom_score_adj")?
            .trim()
            .parse()
            .unwrap_or(0);
        Ok(Some(v.max(own) as i32))
    }

    /// `userns_rootfs = "chown"`: the container's own copy of its image's layers, owned by the
    /// pod's ids, instead of idmapped mounts of the shared ones. Slow, and logged as such.
    fn chowned_layers(
        &self,
        mut rootfs: Rootfs,
        data_dir: &Path,
        maps: &skiff_shim::idmap::Maps,
        id: &str,
    ) -> Result<Rootfs> {
        let t = Instant::now();
        let dir = data_dir.join("lower");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut entries = 0;
        let mut lower = vec![];
        for (i, name) in rootfs.lower.iter().enumerate() {
            let dest = dir.join(i.to_string());
            entries +=
                crate::userns::shift::copy_shifted(&rootfs.layers_dir.join(name), &dest, maps)
                    .map_err(|e| Error::Internal(format!("userns_rootfs = \"chown\": {e}")))?;
            lower.push(i.to_string());
        }
        tracing::warn!(container = %id, layers = lower.len(), entries,
            millis = t.elapsed().as_millis() as u64,
            "userns_rootfs = \"chown\": copied and chowned the image layers for this container (slow; idmapped mounts copy nothing)");
        rootfs.layers_dir = dir;
        rootfs.lower = lower;
        rootfs.idmap = false;
        Ok(rootfs)
    }

    /// The container's seccomp filter, resolved against the capabilities its spec grants.
    fn seccomp_filter(
        &self,
        handler: &crate::config::Handler,
        pod: &PodSandboxConfig,
        cfg: &ContainerConfig,
        oci: &oci_spec::runtime::Spec,
    ) -> Result<Option<crate::seccomp::Filter>> {
        let sel = crate::seccomp::select(&self.cfg, handler, pod, cfg)?;
        let caps: std::collections::HashSet<String> = oci
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .into_iter()
            .flatten()
            .map(|c| {
                let n = c.to_string();
                if n.starts_with("CAP_") {
                    n
                } else {
                    format!("CAP_{n}")
                }
            })
            .collect();
        self.seccomp.filter(&sel, &caps)
    }

    /// CreateContainer: writes the bundle and the record; nothing runs yet. With `restore`,
    /// the container's writable layer starts as the checkpoint's rootfs diff, and its CRIU
    /// images are kept beside it for StartContainer.
    pub async fn create_container(
        &self,
        pod_id: &str,
        cfg: ContainerConfig,
        restore: Option<&crate::checkpoint::restore::Archive>,
    ) -> Result<String> {
        let pod = self.ready_pod(pod_id)?;
        let pod_cfg = pod.config();
        // The pod's runtime handler's settings (seccomp default, user-namespace rootfs).
        let handler = self.cfg.handler(&pod.runtime_handler)?;
        let meta = cfg
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("config.metadata: is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "config.metadata.name: is empty".into(),
            ));
        }
        check_text(&cfg)?;
        let cdi_devices = cdi::requested(&cfg)?;
        let image_name = cfg
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::InvalidArgument("config.image.image: is empty".into()))?;
        let image = self.images.store.resolve(&image_name).ok_or_else(|| {
            Error::NotFound(format!("image {image_name} not found: pull it first"))
        })?;
        let config_json: serde_json::Value = self
            .images
            .store
            .read_blob(&image.id)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::Internal(format!("image {} has no readable config", image.id)))?;
        let img_cfg = ImageConfig::from_json(&config_json);
        // The request's stop signal (KEP-4960) overrides the image's.
        let stop_signal = match Signal::try_from(cfg.stop_signal) {
            Ok(Signal::RuntimeDefault) => config_json["config"]["StopSignal"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            Ok(s) => match signal::from_cri(s) {
                Some(n) => n.to_string(),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "config.stop_signal: {} has no signal number on Linux",
                        s.as_str_name()
                    )))
                }
            },
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "config.stop_signal: {} is not a CRI signal",
                    cfg.stop_signal
                )))
            }
        };
        let log_path = log_file(&pod_cfg.log_directory, &cfg.log_path)?;
        let ns = pod_namespaces(pod_cfg)?;
        if let (Some((field, _)), Some(_)) = (cdi_devices.first(), &ns.userns) {
            return Err(Error::InvalidArgument(format!(
                "{field}: devices cannot be given to a container in a pod user namespace by \
                 this skiff"
            )));
        }

        // The user: the request's, else the image's, resolved in the image's /etc files.
        let layers: Vec<PathBuf> = image
            .chain_ids
            .iter()
            .rev()
            .map(|c| self.images.store.layer_path(c))
            .collect();
        let sc = cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let user_spec = if let Some(u) = &sc.run_as_user {
            if u.value < 0 || u.value > u32::MAX as i64 {
                return Err(Error::InvalidArgument(format!(
                    "linux.security_context.run_as_user: {} is out of range",
                    u.value
                )));
            }
            u.value.to_string()
        } else if !sc.run_as_username.is_empty() {
            sc.run_as_username.clone()
        } else {
            image.user.clone()
        };
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            // As api.proto says: run_as_group only goes with run_as_user or run_as_username.
            return Err(Error::InvalidArgument(
                "linux.security_context.run_as_group: is set without run_as_user or \
                 run_as_username"
                    .into(),
            ));
        }
        let group = match &sc.run_as_group {
            Some(g) if g.value < 0 || g.value > u32::MAX as i64 => {
                return Err(Error::InvalidArgument(format!(
                    "linux.security_context.run_as_group: {} is out of range",
                    g.value
                )))
            }
            Some(g) => Some(g.value as u32),
            None => None,
        };
        let mut extra = vec![];
        for g in &sc.supplemental_groups {
            if *g < 0 || *g > u32::MAX as i64 {
                return Err(Error::InvalidArgument(format!(
                    "linux.security_context.supplemental_groups: {g} is out of range"
                )));
            }
            extra.push(*g as u32);
        }
        let merge =
            sc.supplemental_groups_policy() != skiff_proto::cri::SupplementalGroupsPolicy::Strict;
        let resolved = user::resolve(&layers, &user_spec, group, &extra, merge)
            .map_err(|e| e.context("linux.security_context / image user"))?;
        let resources = cfg.linux.as_ref().and_then(|l| l.resources.clone());
        if let Some(r) = &resources {
            super::resources::to_oci(r)?;
        }

        let id = hex::encode(rand::random::<[u8; 32]>());
        // The name is this creation's until its record is saved or it fails; other creations
        // go on meanwhile.
        let _name = self
            .containers
            .reserve(&pod.id, &meta.name, meta.attempt, &id)?;
        let bundle = self.cfg.run_root.join("containers").join(&id);
        let data_dir = self.containers.data_dir(&id);
        let cgroup = format!("{}/{}", pod.cgroup.trim_end_matches('/'), &id);
        let volumes = image_volume::plan(&self.images.store, &cfg, &bundle, ns.userns.is_some())?;
        let (user_mounts, mount_records) =
            spec::user_mounts(&cfg, ns.userns.is_some(), &volumes.volumes)?;
        let hostname = std::fs::read_to_string(pod.run_dir.join(crate::pod::files::HOSTNAME))
            .unwrap_or_default()
            .trim()
            .to_string();
        let pctx = PodContext {
            run_dir: &pod.run_dir,
            network: ns.network,
            ipc: ns.ipc,
            pid: ns.pid,
            hostname: &hostname,
            userns: ns.userns.as_ref(),
        };
        let mut oci = spec::build(SpecInput {
            cfg: &cfg,
            image: &img_cfg,
            pod: &pctx,
            user: &resolved,
            rootfs: bundle.join("rootfs"),
            cgroup: cgroup.clone(),
            user_mounts,
            oom_score_adj: self.oom_score_adj(resources.as_ref())?,
        })?;
        cdi::inject(&self.cfg.cdi_spec_dirs, &cdi_devices, &mut oci)?;
        let filter = self.seccomp_filter(handler, pod_cfg, &cfg, &oci)?;
        if let (Some(f), Some(linux)) = (&filter, oci.linux_mut()) {
            linux.set_seccomp(Some(f.spec.clone()));
        }
        if let Some(a) = restore {
            // CRIU gives the restored processes the credentials, capabilities and seccomp
            // state they were dumped with: never more than this request grants.
            let granted = serde_json::to_value(&oci)
                .map_err(|e| Error::Internal(format!("encoding config.json: {e}")))?;
            a.check_privileges(&granted)?;
        }
        let image_ref = image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone());
        let rec = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            config: crate::store::Pb::new(cfg.clone()),
            image_id: image.id.clone(),
            image_name,
            image_ref,
            chain_ids: image.chain_ids.clone(),
            created_at: skiff_shim::api::now_ns(),
            bundle: bundle.clone(),
            data_dir: data_dir.clone(),
            log_path,
            cgroup,
            stop_signal,
            uid: resolved.uid,
            gid: resolved.gid,
            groups: resolved.groups.clone(),
            mounts: mount_records,
            started: false,
            starting: false,
            restore: restore.is_some(),
        };
        let made = (|| -> Result<()> {
            for d in [
                data_dir.join("upper"),
                data_dir.join("work"),
                bundle.join("rootfs"),
            ] {
                std::fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
            }
            volumes.make_stages()?;
            if let Some(a) = restore {
                a.apply_rootfs_diff(&data_dir.join("upper"))?;
                let images = rec.checkpoint_images();
                std::fs::rename(a.dir.join("checkpoint"), &images)
                    .ctx(|| format!("moving the checkpoint's images to {}", images.display()))?;
            }
            if let Some(m) = &ns.userns {
                // The container's writable layer belongs to its root, as the host numbers it.
                let (uid, gid) = (m.host_uid(0), m.host_gid(0));
                for d in [data_dir.join("upper"), data_dir.join("work")] {
                    std::os::unix::fs::chown(&d, uid, gid)
                        .ctx(|| format!("giving {} to the pod's root", d.display()))?;
                }
            }
            let mut rootfs = Rootfs {
                layers_dir: self.images.store.dir().join("layers"),
                lower: image
                    .chain_ids
                    .iter()
                    .rev()
                    .map(|c| crate::image::reference::digest_hex(c).to_string())
                    .collect(),
                upper: data_dir.join("upper"),
                work: data_dir.join("work"),
                idmap: ns.userns.is_some(),
                image_volumes: volumes.shim_volumes(),
            };
            if let (Some(maps), crate::config::UsernsRootfs::Chown) =
                (&ns.userns, handler.userns_rootfs)
            {
                rootfs = self.chowned_layers(rootfs, &data_dir, maps, &id)?;
            }
            store::write_json_volatile(&bundle.join(ROOTFS_FILE), &rootfs)
                .ctx(|| format!("writing {}/{ROOTFS_FILE}", bundle.display()))?;
            let json = serde_json::to_vec(&oci)
                .map_err(|e| Error::Internal(format!("encoding config.json: {e}")))?;
            store::write_atomic_volatile(&bundle.join("config.json"), &json)
                .ctx(|| format!("writing {}/config.json", bundle.display()))?;
            if let Some(f) = &filter {
                store::write_atomic_volatile(&bundle.join(SECCOMP_FILE), &f.bpf)
                    .ctx(|| format!("writing {}/{SECCOMP_FILE}", bundle.display()))?;
            }
            if let Some(label) = oci.linux().as_ref().and_then(|l| l.mount_label().clone()) {
                for (i, m) in cfg.mounts.iter().enumerate() {
                    if m.selinux_relabel && volumes.volumes.contains_key(&i) {
                        return Err(Error::InvalidArgument(format!(
                            "mounts[{i}].selinux_relabel: an image volume cannot be relabelled \
                             by this skiff"
                        )));
                    }
                    if m.selinux_relabel {
                        super::selinux::relabel(
                            Path::new(&m.host_path),
                            &label,
                            &format!("mounts[{i}]"),
                        )?;
                    }
                }
            }
            if let Some(r) = &resources {
                super::resources::apply(&rec.cgroup, r)?;
            }
            self.images.store.hold(&rec.chain_ids);
            if let Err(e) = self.containers.save(&rec) {
                self.images.store.release(&rec.chain_ids);
                return Err(e);
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = cgroups::remove(&rec.cgroup);
            let _ = store::remove_durably(&bundle);
            let _ = store::remove_durably(&data_dir);
            return Err(e);
        }
        volumes.keep();
        tracing::info!(container = %id, pod = %pod.id, name = %meta.name, "container created");
        Ok(id)
    }

    /// UpdateContainerResources: writes the new limits into the container's cgroup (live) and
    /// records them.
    pub async fn update_resources(
        &self,
        id: &str,
        r: skiff_proto::cri::LinuxContainerResources,
    ) -> Result<()> {
        let mut rec = self.containers.find(id)?;
        let st = self.container_state(&rec);
        if st.exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                rec.id
            )));
        }
        super::resources::apply(&rec.cgroup, &r)?;
        let mut cfg = rec.config().clone();
        cfg.linux.get_or_insert_with(Default::default).resources = Some(r);
        rec.config = crate::store::Pb::new(cfg);
        self.containers.save(&rec)?;
        tracing::info!(container = %rec.id, "container resources updated");
        Ok(())
    }

    /// StartContainer: asks the pod's shim to run it.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let found = self.containers.find(id)?;
        let st = self.container_state(&found);
        if st.pid != 0 || st.exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} was already started (a container starts once)",
                found.id
            )));
        }
        let pod = self.ready_pod(&found.pod_id)?;
        let cfg = found.config();
        let mut shim = self.shim(&pod).await?;
        // A restore needs CRIU on this node.
        if found.restore {
            self.criu.as_ref().map_err(|why| {
                Error::FailedPrecondition(format!("restoring container {}: {why}", found.id))
            })?;
        }
        // Claims the start (a concurrent second StartContainer fails here), then records it on
        // disk while the shim starts the container.
        let rec = self.containers.mark_started(&found.id)?;
        let containers = &self.containers;
        let start = StartContainerRequest {
            id: rec.id.clone(),
            bundle: rec.bundle.display().to_string(),
            log_path: rec.log_path.clone(),
            tty: cfg.tty,
            stdin: cfg.stdin,
            stdin_once: cfg.stdin_once,
        };
        // A restore (CRIU, seconds) does not take a turn among the starts.
        let started = async {
            if rec.restore {
                shim.restore_container(RestoreContainerRequest {
                    start: Some(start),
                    images: rec.checkpoint_images().display().to_string(),
                    criu: self.cfg.criu_binary.display().to_string(),
                })
                .await
            } else {
                self.start_turns.take(shim.start_container(start)).await
            }
        };
        let (r, saved) = tokio::join!(started, async {
            tokio::task::block_in_place(|| containers.save(&rec))
        });
        containers.start_answered(&rec.id);
        saved?;
        let pid = r
            .map_err(|s| {
                if s.code() == tonic::Code::Unimplemented {
                    Error::FailedPrecondition(format!(
                        "pod sandbox {}: its shim predates restores (the pod was started by an \
                         older skiff): restore into a new pod",
                        pod.id
                    ))
                } else {
                    shim_client::shim_error(&pod.id, s)
                }
            })?
            .into_inner()
            .pid;
        if rec.restore {
            // Restored: the images (its memory among them) are not needed again.
            let _ = std::fs::remove_dir_all(rec.checkpoint_images());
            tracing::info!(container = %rec.id, pid, "container restored from its checkpoint");
            return Ok(());
        }
        tracing::info!(container = %rec.id, pid, "container started");
        Ok(())
    }

    /// StopContainer: the stop signal, then SIGKILL to every process after `timeout` seconds.
    /// Stopping a container that does not run, or that does not exist (any more), succeeds:
    /// the call is idempotent and kubelet retries it after its own restarts.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let rec = match self.containers.find(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let st = self.container_state(&rec);
        if st.pid == 0 || st.exited {
            return Ok(());
        }
        let pod = self.pods.find(&rec.pod_id)?;
        if !(pod.shim_pid > 0 && is_our_shim(pod.shim_pid, &pod.id)) {
            // The pod's shim is gone (crashed, killed): nobody else will kill what is left.
            kill_cgroup(&rec.cgroup);
            return if wait_exit(self, &rec, Duration::from_secs(10)).await {
                Ok(())
            } else {
                Err(Error::Internal(format!(
                    "container {}: processes left after its shim died do not exit",
                    rec.id
                )))
            };
        }
        let mut shim = self.shim(&pod).await?;
        if timeout > 0 {
            let sig = rec.stop_signal_number();
            match shim
                .kill_container(KillContainerRequest {
                    id: rec.id.clone(),
                    signal: sig,
                    all: false,
                })
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
                Err(s) => return Err(shim_client::shim_error(&pod.id, s)),
            }
            if wait_exit(self, &rec, Duration::from_secs(timeout as u64)).await {
                return Ok(());
            }
        }
        match shim
            .kill_container(KillContainerRequest {
                id: rec.id.clone(),
                signal: libc::SIGKILL,
                all: true,
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
            Err(s) => return Err(shim_client::shim_error(&pod.id, s)),
        }
        if !wait_exit(self, &rec, Duration::from_secs(10)).await {
            return Err(Error::Internal(format!(
                "container {} did not exit 10 s after SIGKILL",
                rec.id
            )));
        }
        Ok(())
    }

    /// RemoveContainer: stops it if it runs, then removes its cgroup, bundle, data and record.
    /// Removing an unknown container succeeds.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let rec = match self.containers.find(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let st = self.container_state(&rec);
        if st.pid > 0 && !st.exited {
            self.stop_container(&rec.id, 0).await?;
        }
        let cg = rec.cgroup.clone();
        // Processes its shim can no longer kill (the pod's shim died with the container's
        // processes left in the host's PID namespace) still go.
        kill_cgroup(&cg);
        let mut removed = Ok(());
        for _ in 0..50 {
            removed = cgroups::remove(&cg);
            if removed.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        removed.ctx(|| format!("removing cgroup {cg}"))?;
        store::remove_durably(&rec.bundle).ctx(|| format!("removing {}", rec.bundle.display()))?;
        self.containers.delete(&rec.id)?;
        self.cpu_samples.forget(&rec.id);
        self.images.store.release(&rec.chain_ids);
        for m in rec.mounts.iter().filter(|m| !m.image.is_empty()) {
            self.images.store.release_volume(&m.image);
        }
        tracing::info!(container = %rec.id, "container removed");
        Ok(())
    }

    /// A running container, its pod and a client for the pod's shim; FailedPrecondition if the
    /// container does not run.
    pub async fn running(
        &self,
        id: &str,
    ) -> Result<(ContainerRecord, PodRecord, ShimClient<Channel>)> {
        let rec = self.containers.find(id)?;
        let st = self.container_state(&rec);
        if st.pid == 0 || st.exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let pod = self.pods.find(&rec.pod_id)?;
        let shim = self.shim(&pod).await?;
        Ok((rec, pod, shim))
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<ExecSyncResponse> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd: is empty".into()));
        }
        if timeout < 0 {
            return Err(Error::InvalidArgument(format!(
                "timeout: {timeout} is negative"
            )));
        }
        let (rec, pod, mut shim) = self.running(id).await?;
        let r = shim
            .exec_sync(ExecSyncRequest {
                id: rec.id.clone(),
                cmd: cmd.clone(),
                timeout_ms: timeout.saturating_mul(1000),
            })
            .await
            .map_err(|s| shim_client::shim_error(&pod.id, s))?
            .into_inner();
        if r.timed_out {
            return Err(Error::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {timeout} s",
                rec.id
            )));
        }
        Ok(r)
    }

    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let (rec, pod, mut shim) = self.running(id).await?;
        shim.reopen_log(ReopenLogRequest { id: rec.id.clone() })
            .await
            .map_err(|s| shim_client::shim_error(&pod.id, s))?;
        Ok(())
    }
}

/// SIGKILL to every process in cgroup `cg` (host PIDs: skiffd reads it from the host).
fn kill_cgroup(cg: &str) {
    for pid in cgroups::pids(cg) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Polls the container's state file until it records an exit, at most `limit`.
/// The container's strings that reach the kernel or the shim hold no NUL byte.
fn check_text(c: &ContainerConfig) -> Result<()> {
    let mut fields: Vec<(String, &str)> = vec![
        ("config.working_dir".into(), c.working_dir.as_str()),
        ("config.log_path".into(), c.log_path.as_str()),
    ];
    if let Some(m) = &c.metadata {
        fields.push(("config.metadata.name".into(), &m.name));
    }
    if let Some(i) = &c.image {
        fields.push(("config.image.image".into(), &i.image));
    }
    for (i, a) in c.command.iter().enumerate() {
        fields.push((format!("config.command[{i}]"), a));
    }
    for (i, a) in c.args.iter().enumerate() {
        fields.push((format!("config.args[{i}]"), a));
    }
    for (i, kv) in c.envs.iter().enumerate() {
        fields.push((format!("config.envs[{i}].key"), &kv.key));
        // Values are bytes in the API; the OCI spec's environment is text.
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            Error::InvalidArgument(format!(
                "config.envs[{i}].value: not UTF-8 (the environment of an OCI process is text)"
            ))
        })?;
        fields.push((format!("config.envs[{i}].value"), value));
    }
    for (i, m) in c.mounts.iter().enumerate() {
        fields.push((
            format!("config.mounts[{i}].container_path"),
            &m.container_path,
        ));
        fields.push((format!("config.mounts[{i}].host_path"), &m.host_path));
    }
    for (i, d) in c.devices.iter().enumerate() {
        fields.push((
            format!("config.devices[{i}].container_path"),
            &d.container_path,
        ));
        fields.push((format!("config.devices[{i}].host_path"), &d.host_path));
    }
    crate::error::no_nul(fields)
}

async fn wait_exit(node: &Node, rec: &ContainerRecord, limit: Duration) -> bool {
    // A limit past what an Instant can hold (kubelet does not bound the grace period) waits
    // without a deadline.
    let deadline = Instant::now().checked_add(limit);
    // Subscribed before the state is read: an exit noted from then on wakes the wait.
    let mut noted = node.exits.subscribe();
    loop {
        let st: ContainerState = node.container_state(rec);
        if st.exited {
            return true;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
        let nap = deadline.map_or(EXIT_RECHECK, |d| (d - now).min(EXIT_RECHECK));
        // Woken by this container's exit notice (or a lag in them); the state is read again
        // after `EXIT_RECHECK` all the same, should a notice never come.
        let _ = tokio::time::timeout(nap, async {
            loop {
                match noted.recv().await {
                    Ok(id) if id != rec.id => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                    _ => return,
                }
            }
        })
        .await;
    }
}

/// How long a stop waits on exit notices before it reads the container's state again anyway.
const EXIT_RECHECK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_inside_the_log_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        assert_eq!(log_file(dir, "c/0.log").unwrap(), format!("{dir}/c/0.log"));
        for bad in ["../x.log", "/abs.log", "a/../../x", "./x"] {
            assert!(log_file(dir, bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/tmp", d.path().join("out")).unwrap();
        assert!(log_file(dir, "out/x.log").is_err());
        assert_eq!(log_file(dir, "").unwrap(), "");
    }
}
