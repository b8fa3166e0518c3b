//! RunPodSandbox, StopPodSandbox and RemovePodSandbox as one life cycle: a pod is recorded as
//! `Creating` before anything is made, so a crash at any step is undone at the next start, and
//! every failure tears down what was made and leaves nothing behind.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use skiff_proto::cri::{NamespaceMode, PodSandboxConfig};
use skiff_proto::shim::ShutdownRequest;
use skiff_shim::api::{NsMode, PidMode, PodConfig, NS_DIR, POD_CONFIG, SHM_DIR};
use skiff_shim::{cgroups, idmap};

use super::launch::LaunchSpec;
use super::{files, shim_client, systemd, PodRecord, PodState};
use crate::config::CgroupDriver;
use crate::error::{Error, IoContext, Result};
use crate::node::Node;
use crate::store;

/// The namespace modes a pod asked for, checked.
pub struct PodNamespaces {
    pub network: NsMode,
    pub ipc: NsMode,
    pub pid: PidMode,
    /// The pod's own user namespace, when it has one.
    pub userns: Option<idmap::Maps>,
}

pub fn pod_namespaces(config: &PodSandboxConfig) -> Result<PodNamespaces> {
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let two = |field: &str, m: NamespaceMode| match m {
        NamespaceMode::Pod => Ok(NsMode::Pod),
        NamespaceMode::Node => Ok(NsMode::Node),
        other => Err(Error::InvalidArgument(format!(
            "linux.security_context.namespace_options.{field}: {} is not valid for a pod",
            other.as_str_name()
        ))),
    };
    let pid = match ns.pid() {
        NamespaceMode::Pod => PidMode::Pod,
        NamespaceMode::Container => PidMode::Container,
        NamespaceMode::Node => PidMode::Node,
        NamespaceMode::Target => {
            return Err(Error::InvalidArgument(
                "linux.security_context.namespace_options.pid: TARGET is not valid for a pod"
                    .into(),
            ))
        }
    };
    let userns = match &ns.userns_options {
        None => None,
        Some(u) => match u.mode() {
            NamespaceMode::Node => None,
            NamespaceMode::Pod => Some(userns_maps(u)?),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "linux.security_context.namespace_options.userns_options.mode: {} is not \
                     valid (POD or NODE)",
                    other.as_str_name()
                )))
            }
        },
    };
    if userns.is_some() {
        for (field, host) in [
            ("network", ns.network() == NamespaceMode::Node),
            ("ipc", ns.ipc() == NamespaceMode::Node),
            ("pid", ns.pid() == NamespaceMode::Node),
        ] {
            if host {
                return Err(Error::InvalidArgument(format!(
                    "linux.security_context.namespace_options.{field}: NODE cannot go with a \
                     pod user namespace (userns_options mode POD)"
                )));
            }
        }
    }
    Ok(PodNamespaces {
        network: two("network", ns.network())?,
        ipc: two("ipc", ns.ipc())?,
        pid,
        userns,
    })
}

/// kubelet's id mappings as ranges.
pub fn id_ranges(v: &[skiff_proto::cri::IdMapping]) -> Vec<idmap::IdRange> {
    v.iter()
        .map(|m| idmap::IdRange {
            container: m.container_id,
            host: m.host_id,
            len: m.length,
        })
        .collect()
}

/// The pod user namespace's maps from kubelet's ranges, validated.
fn userns_maps(u: &skiff_proto::cri::UserNamespace) -> Result<idmap::Maps> {
    let field = "linux.security_context.namespace_options.userns_options";
    let maps = idmap::Maps {
        uids: id_ranges(&u.uids),
        gids: id_ranges(&u.gids),
    };
    idmap::validate(&maps.uids, &format!("{field}.uids")).map_err(Error::InvalidArgument)?;
    idmap::validate(&maps.gids, &format!("{field}.gids")).map_err(Error::InvalidArgument)?;
    for (what, host) in [("uids", maps.host_uid(0)), ("gids", maps.host_gid(0))] {
        match host {
            None => {
                return Err(Error::InvalidArgument(format!(
                    "{field}.{what}: container id 0 (the pod's root) is not mapped"
                )))
            }
            Some(0) => {
                return Err(Error::InvalidArgument(format!(
                    "{field}.{what}: the pod's root maps to the host's root; a user namespace \
                     would not protect the node"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(maps)
}

/// Accepts only sysctls namespaced by a namespace the pod owns.
pub fn check_sysctl(key: &str, value: &str, ns: &PodNamespaces) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "linux.sysctls[{key:?}]: {why}"
        )))
    };
    if key.is_empty() || key.contains('/') || key.contains("..") || value.contains('\n') {
        return bad("is not a sysctl name");
    }
    let ipc = matches!(
        key,
        "kernel.shmmax"
            | "kernel.shmall"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
            | "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
    ) || key.starts_with("fs.mqueue.");
    if ipc {
        if ns.ipc != NsMode::Pod {
            return bad("is an IPC sysctl and the pod uses the host's IPC namespace");
        }
    } else if key.starts_with("net.") {
        if ns.network != NsMode::Pod {
            return bad("is a network sysctl and the pod uses the host's network");
        }
    } else {
        return bad("is not a namespaced sysctl: it would change the whole node");
    }
    if !Path::new("/proc/sys").join(key.replace('.', "/")).exists() {
        return bad("does not exist on this kernel");
    }
    Ok(())
}

/// The pod's strings that reach the kernel, the shim or CNI plugins hold no NUL byte.
fn check_text(c: &PodSandboxConfig) -> Result<()> {
    let mut fields: Vec<(String, &str)> = vec![
        ("config.hostname".into(), c.hostname.as_str()),
        ("config.log_directory".into(), c.log_directory.as_str()),
    ];
    if let Some(m) = &c.metadata {
        fields.push(("config.metadata.name".into(), &m.name));
        fields.push(("config.metadata.namespace".into(), &m.namespace));
        fields.push(("config.metadata.uid".into(), &m.uid));
    }
    if let Some(d) = &c.dns_config {
        let all = d.servers.iter().chain(&d.searches).chain(&d.options);
        fields.extend(all.map(|v| ("config.dns_config".to_string(), v.as_str())));
    }
    for (i, p) in c.port_mappings.iter().enumerate() {
        fields.push((format!("config.port_mappings[{i}].host_ip"), &p.host_ip));
    }
    if let Some(l) = &c.linux {
        fields.push(("config.linux.cgroup_parent".into(), &l.cgroup_parent));
        for (k, v) in &l.sysctls {
            fields.push((format!("config.linux.sysctls[{k:?}]"), k));
            fields.push((format!("config.linux.sysctls[{k:?}]"), v));
        }
    }
    crate::error::no_nul(fields)
}

/// The annotations skiff acts on (each changes what a pod or container gets).
fn acted_on(key: &str) -> bool {
    key == crate::seccomp::POD_ANNOTATION
        || key.starts_with(crate::seccomp::CONTAINER_ANNOTATION_PREFIX)
        || key == crate::network::INGRESS_BANDWIDTH
        || key == crate::network::EGRESS_BANDWIDTH
}

/// A pod's annotations that skiff acts on must be ones its runtime handler allows
/// (`allowed_annotations`); refused by name otherwise, never silently dropped.
fn check_annotations(
    handler: &crate::config::Handler,
    annotations: &std::collections::HashMap<String, String>,
) -> Result<()> {
    for key in annotations.keys() {
        if acted_on(key) && !handler.allows_annotation(key) {
            return Err(Error::InvalidArgument(format!(
                "config.annotations[{key:?}]: not allowed for runtime handler {:?} (its \
                 allowed_annotations)",
                handler.name
            )));
        }
    }
    Ok(())
}

/// Where a pod's cgroups go.
#[derive(Debug)]
pub struct Placement {
    /// Under which the containers get theirs.
    pub cgroup: String,
    /// Whether skiff creates (and so removes) `cgroup`.
    pub owns_cgroup: bool,
    /// The slice of the pod's unit.
    pub slice: String,
    /// The cgroup the shim moves into (systemd driver: a leaf of its unit's).
    pub shim_leaf: Option<String>,
}

/// Slice of pod units that kubelet did not place (cgroupfs driver, or no cgroup_parent).
pub const DEFAULT_SLICE: &str = "skiff-pods.slice";

/// The placement of pod `id` under `driver`, checking kubelet's `cgroup_parent` fits it: a
/// slice name for systemd, a path for cgroupfs.
pub fn pod_cgroup(
    driver: CgroupDriver,
    cgroup_root: &str,
    parent: &str,
    id: &str,
    unit: Option<&str>,
) -> Result<Placement> {
    match driver {
        CgroupDriver::Cgroupfs => {
            if systemd::is_slice_name(parent) {
                return Err(Error::InvalidArgument(format!(
                    "linux.cgroup_parent: {parent:?} is a systemd slice but skiff uses the \
                     cgroupfs driver (set kubelet's cgroupDriver to cgroupfs, or skiff's \
                     cgroup_driver to systemd)"
                )));
            }
            let (cgroup, owns_cgroup) = if parent.is_empty() {
                (
                    format!("{}/pod-{}", cgroup_root.trim_end_matches('/'), &id[..16]),
                    true,
                )
            } else {
                cgroups::clean_path(parent)
                    .map_err(|e| Error::InvalidArgument(format!("linux.cgroup_parent: {e}")))?;
                (parent.to_string(), false)
            };
            Ok(Placement {
                cgroup,
                owns_cgroup,
                slice: DEFAULT_SLICE.into(),
                shim_leaf: None,
            })
        }
        CgroupDriver::Systemd => {
            // As containerd does, a path's last element names the slice ("/test.slice",
            // "/kubepods.slice/kubepods-besteffort.slice").
            let base = parent
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            let slice = if base.is_empty() {
                DEFAULT_SLICE.to_string()
            } else {
                systemd::slice_path(base)
                    .map_err(|e| Error::InvalidArgument(format!("linux.cgroup_parent: {e}")))?;
                base.to_string()
            };
            let unit = unit.ok_or_else(|| {
                Error::FailedPrecondition(
                    "the systemd cgroup driver needs pods started as systemd units".into(),
                )
            })?;
            let slice_dir = systemd::slice_path(&slice).map_err(Error::Internal)?;
            let cgroup = format!("{slice_dir}/{unit}");
            Ok(Placement {
                shim_leaf: Some(format!("{cgroup}/supervisor")),
                cgroup,
                // systemd removes the unit's cgroup with the unit.
                owns_cgroup: false,
                slice,
            })
        }
    }
}

impl Node {
    /// RunPodSandbox: returns the new pod's id.
    pub async fn run_pod(&self, config: PodSandboxConfig, handler: &str) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("config.metadata: is required".into()))?;
        for (f, v) in [
            ("name", &meta.name),
            ("namespace", &meta.namespace),
            ("uid", &meta.uid),
        ] {
            if v.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "config.metadata.{f}: is empty"
                )));
            }
        }
        let handler = self.cfg.handler(handler)?;
        check_text(&config)?;
        check_annotations(handler, &config.annotations)?;
        let ns = pod_namespaces(&config)?;
        if ns.userns.is_some() && handler.userns_rootfs == crate::config::UsernsRootfs::Idmap {
            if let Err(why) = &self.userns {
                return Err(Error::FailedPrecondition(format!(
                    "linux.security_context.namespace_options.userns_options: user namespaces \
                     are not available on this node: {why}"
                )));
            }
        }
        let linux = config.linux.clone().unwrap_or_default();
        for (k, v) in &linux.sysctls {
            check_sysctl(k, v, &ns)?;
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        // Where the pod's containers get their cgroups, the slice its unit (if any) goes into,
        // and the cgroup its shim moves into.
        let unit = self.launcher.unit(&id);
        let placement = pod_cgroup(
            self.cfg.cgroup_driver,
            &self.cfg.cgroup_root,
            &linux.cgroup_parent,
            &id,
            unit.as_deref(),
        )?;
        // A host-network pod, and (as containerd and CRI-O do) a pod that names no hostname, get
        // the node's.
        let hostname = if ns.network == NsMode::Node || config.hostname.is_empty() {
            nix::unistd::gethostname()
                .ctx(|| "reading the node's hostname")?
                .to_string_lossy()
                .into_owned()
        } else {
            config.hostname.clone()
        };
        if hostname.len() > 64 {
            return Err(Error::InvalidArgument(format!(
                "config.hostname: {hostname:?} is longer than 64 bytes"
            )));
        }

        let creating = self.pods.create_lock.lock().await;
        if let Some(other) = self.pods.find_id(|p| {
            p.config().metadata.as_ref().is_some_and(|m| {
                m.name == meta.name
                    && m.namespace == meta.namespace
                    && m.uid == meta.uid
                    && m.attempt == meta.attempt
            })
        }) {
            return Err(Error::AlreadyExists(format!(
                "pod sandbox name {}_{}_{}_{} is reserved for pod sandbox {other}",
                meta.name, meta.namespace, meta.uid, meta.attempt
            )));
        }
        let mut rec = PodRecord {
            id: id.clone(),
            config: crate::store::Pb::new(config.clone()),
            runtime_handler: handler.name.clone(),
            created_at: skiff_shim::api::now_ns(),
            state: PodState::Creating,
            shim_pid: 0,
            run_dir: self.cfg.run_root.join("pods").join(&id),
            cgroup: placement.cgroup.clone(),
            owns_cgroup: placement.owns_cgroup,
        };
        // Not fsynced: after a power loss the run root and every pod process are gone anyway,
        // and a Creating record, there or not, is undone at the next start.
        self.pods.save_volatile(&rec)?;
        // The visible Creating record holds the name now: other pods' creations (CNI ADDs,
        // records, all but the shim's launch) go on beside this one's.
        drop(creating);
        let pod_cfg = PodConfig {
            id: id.clone(),
            dir: rec.run_dir.clone(),
            network: ns.network,
            ipc: ns.ipc,
            uts: ns.network,
            pid: ns.pid,
            hostname: hostname.clone(),
            sysctls: linux.sysctls.clone().into_iter().collect(),
            userns: ns.userns.clone(),
            empty_mntns: self.empty_mntns.clone(),
            cgroup_leaf: placement.shim_leaf.clone(),
            pid_file: unit.as_ref().map(|_| rec.run_dir.join("shim.pid")),
            exits_dir: Some(crate::container::exits::dir(&self.cfg.run_root)),
            stay: self.launcher.lets_shim_stay(),
            // A PID namespace belongs to the user namespace it is made in: a pod's user
            // namespace comes first, from inside the shim.
            born_in_pid_ns: self.launcher.makes_pid_ns()
                && ns.pid == PidMode::Pod
                && ns.userns.is_none(),
        };
        let made = match self
            .make_pod(&rec, &pod_cfg, &config, &placement.slice)
            .await
        {
            Ok(pid) => {
                rec.shim_pid = pid;
                crate::metrics::get().shim_started();
                match self.apply_pod_resources(
                    &rec,
                    linux.resources.as_ref(),
                    linux.overhead.as_ref(),
                ) {
                    Ok(()) => self
                        .attach_network(&rec, &pod_cfg, &config)
                        .await
                        .map(|_| pid),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match made {
            Ok(pid) => {
                rec.shim_pid = pid;
                rec.state = PodState::Ready;
                if let Err(e) = self.pods.save(&rec) {
                    self.teardown(&rec).await;
                    let _ = self.pods.delete(&id);
                    return Err(e);
                }
                tracing::info!(pod = %id, name = %meta.name, namespace = %meta.namespace, shim_pid = pid, "pod sandbox running");
                Ok(id)
            }
            Err(e) => {
                self.teardown(&rec).await;
                if let Err(e2) = self.pods.delete(&id) {
                    tracing::error!(pod = %id, error = %e2, "removing the record of a failed pod");
                }
                Err(e)
            }
        }
    }

    /// CNI ADD for a pod with its own network namespace (now pinned).
    async fn attach_network(
        &self,
        rec: &PodRecord,
        pod: &PodConfig,
        config: &PodSandboxConfig,
    ) -> Result<()> {
        if pod.network != NsMode::Pod {
            return Ok(());
        }
        let netns = pod.ns_path("net");
        let net = crate::network::PodNet {
            id: &rec.id,
            config,
            netns: &netns,
        };
        let st = self.network.add(&net).await?;
        tracing::info!(pod = %rec.id, ip = %st.ip, "pod network attached");
        Ok(())
    }

    async fn make_pod(
        &self,
        rec: &PodRecord,
        pod: &PodConfig,
        config: &PodSandboxConfig,
        slice: &str,
    ) -> Result<i32> {
        let dir = &rec.run_dir;
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        std::fs::create_dir_all(dir.join(NS_DIR))
            .ctx(|| format!("creating {}/ns", dir.display()))?;
        files::write(
            dir,
            &pod.hostname,
            config.dns_config.as_ref(),
            pod.network == NsMode::Node,
        )?;
        if pod.ipc == NsMode::Pod {
            // The source the containers' /dev/shm bind names. The pod's shim makes the tmpfs
            // in a mount namespace of its own and gives each container a copy: nothing is
            // mounted here (see skiff_shim::podshm).
            let shm = dir.join(SHM_DIR);
            std::fs::create_dir_all(&shm).ctx(|| format!("creating {}", shm.display()))?;
        }
        // The pod's cgroup (when skiff owns it) is made by its first container's init, which
        // creates the whole path; teardown removes it.
        let cfg_path = dir.join(POD_CONFIG);
        store::write_json_volatile(&cfg_path, pod)
            .ctx(|| format!("writing {}", cfg_path.display()))?;
        let log = dir.join("shim.log");
        let pid_file = dir.join("shim.pid");
        let spec = LaunchSpec {
            pod_id: &rec.id,
            config: &cfg_path,
            log: &log,
            slice,
            pid_file: &pid_file,
            new_pid_ns: pod.born_in_pid_ns,
        };
        let launcher = &self.launcher;
        // One launch at a time: each holds a thread until its shim reports, and in the density
        // bench launches side by side only added threads (skiffd +1.5 MiB), not speed.
        let _launching = self.pods.launch_lock.lock().await;
        tokio::task::block_in_place(|| launcher.launch(&spec))
    }

    /// StopPodSandbox: stops every container (forcibly), then the shim; idempotent: stopping a
    /// pod that does not exist (any more) succeeds, as kubelet expects after its own restarts.
    pub async fn stop_pod(&self, id: &str) -> Result<()> {
        let mut rec = match self.pods.find(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for c in self.containers.of_pod(&rec.id) {
            self.stop_container(&c.id, 0).await?;
        }
        // The network goes first, while its namespace still holds the pod's interface. A failed
        // DEL fails the stop (kubelet retries it); its record stays for the next try.
        self.network.del(&rec.id).await?;
        if rec.shim_pid > 0 {
            self.stop_shim(&rec).await;
        }
        if rec.state != PodState::NotReady || rec.shim_pid != 0 {
            rec.state = PodState::NotReady;
            rec.shim_pid = 0;
            self.pods.save(&rec)?;
            tracing::info!(pod = %rec.id, "pod sandbox stopped");
        }
        Ok(())
    }

    /// RemovePodSandbox: stops the pod if needed, removes its containers and everything of it.
    /// Removing an unknown pod succeeds (it may be gone already).
    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        let rec = match self.pods.find(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_pod(&rec.id).await?;
        for c in self.containers.of_pod(&rec.id) {
            self.remove_container(&c.id).await?;
        }
        self.teardown(&rec).await;
        self.pods.delete(&rec.id)?;
        self.cpu_samples.forget(&format!("pod:{}", rec.id));
        tracing::info!(pod = %rec.id, "pod sandbox removed");
        Ok(())
    }

    /// Asks the shim to kill what is left and exit; kills it if it has not exited 2 s later.
    async fn stop_shim(&self, rec: &PodRecord) {
        self.forget_shim(&rec.id);
        // Opened first: the descriptor names this shim even once its PID is free again.
        let shim = (rec.shim_pid > 0)
            .then(|| shim_pidfd(rec.shim_pid, &rec.id))
            .flatten();
        let asked = async {
            let mut c = shim_client::connect(&rec.id, &rec.socket()).await?;
            c.shutdown(ShutdownRequest {})
                .await
                .map_err(|s| shim_client::shim_error(&rec.id, s))
        };
        if let Err(e) = tokio::time::timeout(Duration::from_secs(15), asked)
            .await
            .unwrap_or_else(|_| Err(Error::Internal("shim shutdown timed out".into())))
        {
            tracing::warn!(pod = %rec.id, error = %e, "shim did not shut down; killing it");
        }
        let Some(shim) = shim else { return };
        if exits_within(&shim, Duration::from_secs(2)).await {
            return;
        }
        signal_pidfd(&shim, libc::SIGKILL);
        if !exits_within(&shim, Duration::from_secs(5)).await {
            tracing::error!(pod = %rec.id, pid = rec.shim_pid, "shim does not exit after SIGKILL");
        }
    }

    /// Undoes everything `run_pod` made, whatever state it reached. Best effort, logged.
    pub async fn teardown(&self, rec: &PodRecord) {
        if rec.shim_pid > 0 && is_our_shim(rec.shim_pid, &rec.id) {
            self.stop_shim(rec).await;
        }
        let launcher = &self.launcher;
        tokio::task::block_in_place(|| launcher.release(&rec.id));
        if let Err(e) = self.network.del(&rec.id).await {
            tracing::error!(pod = %rec.id, error = %e, "CNI DEL while tearing the pod down");
        }
        let dir = rec.run_dir.clone();
        for name in ["net", "ipc", "uts", "pid", "user"] {
            let p = dir.join(NS_DIR).join(name);
            unmount_all(&p);
        }
        unmount_all(&dir.join(SHM_DIR));
        if let Err(e) = store::remove_durably(&dir) {
            tracing::error!(pod = %rec.id, dir = %dir.display(), error = %e, "removing pod run directory");
        }
        if rec.owns_cgroup {
            let cg = rec.cgroup.clone();
            let mut last = Ok(());
            for _ in 0..50 {
                last = cgroups::remove(&cg);
                if last.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Err(e) = last {
                tracing::error!(pod = %rec.id, cgroup = %cg, error = %e, "removing pod cgroup");
            }
        }
    }

    /// After a restart: pods caught mid-creation are undone; ready pods whose shim is gone are
    /// NotReady.
    pub async fn recover_pods(&self) {
        for rec in self.pods.list() {
            match rec.state {
                PodState::Creating => {
                    tracing::info!(pod = %rec.id, "undoing a pod creation a crash interrupted");
                    // Its shim may run with no PID recorded (a detached one; a unit goes with
                    // the launcher's release in teardown).
                    for pid in shim_processes(&rec.id) {
                        tracing::info!(pod = %rec.id, pid, "killing a shim left behind");
                        kill_shim(pid, &rec.id);
                    }
                    self.teardown(&rec).await;
                    let _ = self.pods.delete(&rec.id);
                }
                PodState::Ready => {
                    let alive = rec.shim_pid > 0
                        && is_our_shim(rec.shim_pid, &rec.id)
                        && shim_client::connect(&rec.id, &rec.socket()).await.is_ok();
                    if !alive {
                        tracing::warn!(pod = %rec.id, "pod's shim is gone: marking it not ready");
                        let mut r = rec.clone();
                        r.state = PodState::NotReady;
                        r.shim_pid = 0;
                        let _ = self.pods.save(&r);
                    }
                }
                PodState::NotReady => {}
            }
        }
    }
}

/// Whether `pid` is a running shim of pod `pod_id` (`skiff-shim pod <run-root>/pods/<id>/…`),
/// and not a PID the kernel reused for another process, another pod's shim included.
pub fn is_our_shim(pid: i32, pod_id: &str) -> bool {
    shim_cmdline_of(pid).is_some_and(|config| is_config_of(&config, pod_id))
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// Sends SIGKILL to `pid` if it is pod `pod_id`'s shim, through a pidfd opened before the check:
/// a PID that dies and is reused between the check and the signal cannot be hit (the pidfd
/// names the process that was checked, or one that is itself this pod's shim). Whether the
/// signal was sent.
fn kill_shim(pid: i32, pod_id: &str) -> bool {
    shim_pidfd(pid, pod_id).is_some_and(|fd| signal_pidfd(&fd, libc::SIGKILL))
}

/// A pidfd of `pid` if it is pod `pod_id`'s running shim, checked after the pidfd was opened
/// (so the descriptor names the process that was checked).
fn shim_pidfd(pid: i32, pod_id: &str) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: pidfd_open returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    is_our_shim(pid, pod_id).then_some(fd)
}

/// Sends `signal` to the process of pidfd `fd`; whether it was sent.
fn signal_pidfd(fd: &OwnedFd, signal: i32) -> bool {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Whether the process of pidfd `fd` exits (turns zombie or is gone) within `limit`: the pidfd
/// turns readable then, so this waits without polling.
async fn exits_within(fd: &OwnedFd, limit: Duration) -> bool {
    let Ok(dup) = fd.try_clone() else {
        return false;
    };
    // SAFETY: the AsyncFd owns `dup`, which stays open until the AsyncFd (deregistering it
    // first) is dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
    };
    let Ok(readable) = registered else {
        return false;
    };
    tokio::time::timeout(limit, readable.readable())
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The pod config path a `skiff-shim pod CONFIG` process runs with.
fn shim_cmdline_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    match args.as_slice() {
        [exe, mode, config, ..] if exe.ends_with(b"skiff-shim") && *mode == b"pod" => {
            Some(String::from_utf8_lossy(config).into_owned())
        }
        _ => None,
    }
}

/// Whether `config` is `…/pods/<pod_id>/pod.json` (no allocation: this runs for every
/// container listed).
fn is_config_of(config: &str, pod_id: &str) -> bool {
    config
        .strip_suffix(POD_CONFIG)
        .and_then(|c| c.strip_suffix('/'))
        .and_then(|c| c.strip_suffix(pod_id))
        .is_some_and(|c| c.ends_with("/pods/"))
}

/// Every live process of pod `pod_id`'s shim (the launching parent and the supervisor share
/// its command line), found through /proc: what a crash during RunPodSandbox may leave with no
/// PID recorded.
fn shim_processes(pod_id: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| is_our_shim(*pid, pod_id))
        .collect()
}

/// Detaches every mount stacked at `p` (absent or unmounted is fine).
pub fn unmount_all(p: &Path) {
    for _ in 0..8 {
        // Not through a symbolic link (the shim links some namespaces into the pod directory).
        if umount2(p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose command line is pod `id`'s shim's (`skiff-shim pod
    /// <root>/pods/<id>/pod.json`): `sh` running `script` from the file `pod` in `dir`.
    fn fake_shim(dir: &Path, id: &str, script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::fs::write(dir.join("pod"), format!("{script}\n")).unwrap();
        std::process::Command::new("/bin/sh")
            .arg0("/usr/bin/skiff-shim")
            .current_dir(dir)
            .args(["pod", &format!("/run/x/pods/{id}/{POD_CONFIG}")])
            .spawn()
            .unwrap()
    }

    #[test]
    fn only_the_named_pods_shim_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let id = "a".repeat(64);
        let mut child = fake_shim(dir.path(), &id, "sleep 100");
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(50));
        let other = "b".repeat(64);
        assert!(is_our_shim(pid, &id));
        assert!(!is_our_shim(pid, &other));
        assert!(!kill_shim(pid, &other), "another pod's shim was signalled");
        assert!(child.try_wait().unwrap().is_none());
        assert!(!kill_shim(std::process::id() as i32, &id));
        assert!(kill_shim(pid, &id));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn a_shims_exit_is_seen_through_its_pidfd() {
        use std::os::unix::process::ExitStatusExt;
        let id = "c".repeat(64);
        // A process that passes for the pod's shim, blocked, with no child, until its FIFO is
        // opened for writing.
        let spawn = || {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
            let child = fake_shim(
                dir.path(),
                &id,
                &format!("read x < {}\nexit 0", fifo.display()),
            );
            let pid = child.id() as i32;
            let fd = (0..200)
                .find_map(|_| {
                    std::thread::sleep(Duration::from_millis(5));
                    shim_pidfd(pid, &id)
                })
                .expect("the process passes for the pod's shim");
            (child, fd, fifo, dir)
        };
        // One that stays is not seen to exit; killed through its pidfd, it is.
        let (mut stays, fd, _, _dir) = spawn();
        assert!(!exits_within(&fd, Duration::from_millis(200)).await);
        assert!(signal_pidfd(&fd, libc::SIGKILL));
        assert!(exits_within(&fd, Duration::from_secs(5)).await);
        // Exited, not yet reaped: a zombie.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", stays.id())).unwrap();
        assert!(stat.contains(") Z "), "{stat}");
        assert_eq!(stays.wait().unwrap().signal(), Some(libc::SIGKILL));
        // One that exits by itself (as after Shutdown) is seen to.
        let (mut leaves, fd, fifo, _dir) = spawn();
        drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
        assert!(exits_within(&fd, Duration::from_secs(5)).await);
        assert_eq!(leaves.wait().unwrap().code(), Some(0));
        // A process that is not this pod's shim gets no pidfd.
        assert!(shim_pidfd(std::process::id() as i32, &id).is_none());
    }

    #[test]
    fn systemd_cgroup_parent_paths_name_their_last_slice() {
        let id = "0123456789abcdef0123";
        for (parent, slice) in [
            ("", DEFAULT_SLICE),
            ("test.slice", "test.slice"),
            ("/test.slice", "test.slice"),
            (
                "/kubepods.slice/kubepods-besteffort.slice/",
                "kubepods-besteffort.slice",
            ),
        ] {
            let p = pod_cgroup(
                CgroupDriver::Systemd,
                "",
                parent,
                id,
                Some("skiff-pod-x.scope"),
            )
            .unwrap();
            assert_eq!(p.slice, slice, "{parent}");
            assert!(
                p.cgroup.ends_with(&format!("{slice}/skiff-pod-x.scope")),
                "{p:?}"
            );
        }
        let err = pod_cgroup(CgroupDriver::Systemd, "", "/a/b", id, Some("u")).unwrap_err();
        assert!(err.to_string().contains("linux.cgroup_parent"), "{err}");
    }

    #[test]
    fn a_shims_config_path_names_its_pod() {
        let cfg = format!("/run/skiff/pods/abc/{POD_CONFIG}");
        assert!(is_config_of(&cfg, "abc"));
        assert!(!is_config_of(&cfg, "bc"));
        assert!(!is_config_of(
            &format!("/run/skiff/pods/xabc/{POD_CONFIG}"),
            "abc"
        ));
        assert!(!is_config_of("/run/skiff/pods/abc/other.json", "abc"));
    }
}
