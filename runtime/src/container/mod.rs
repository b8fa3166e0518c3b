//! Containers: records under `<root>/containers/<id>/container.json` (with the container's
//! overlay upper and work directories beside), bundles under `<run-root>/containers/<id>/`
//! (`config.json`, `rootfs.json`, and the `state.json` the shim keeps), the OCI spec built from
//! the image and the request (`spec`), and the life cycle (`lifecycle`).

pub mod apparmor;
pub mod cdi;
pub mod exits;
pub mod image_volume;
pub mod lifecycle;
pub mod resources;
pub mod selinux;
pub mod signal;
pub mod spec;
pub mod start_turns;
pub mod stats;
pub mod user;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use skiff_proto::cri::ContainerConfig;
use skiff_shim::api::ContainerState;

use crate::error::{Error, IoContext, Result};
use crate::image::Images;
use crate::store::{self, Pb};

/// A bind mount as the container got it, for ContainerStatus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
    /// The id of the image an image volume mounts (empty for a host path).
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub image_sub_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    /// The request's ContainerConfig (base64 of its protobuf encoding on disk).
    #[serde(rename = "config_pb")]
    pub config: Pb<ContainerConfig>,
    pub image_id: String,
    /// The image as the request named it.
    pub image_name: String,
    /// A digest reference of the image (or its id).
    pub image_ref: String,
    pub chain_ids: Vec<String>,
    pub created_at: i64,
    pub bundle: PathBuf,
    /// Holds the overlay's upper and work directories.
    pub data_dir: PathBuf,
    pub log_path: String,
    pub cgroup: String,
    /// The signal StopContainer sends first: the request's number, or the image's
    /// `StopSignal` as written; empty for SIGTERM.
    pub stop_signal: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub mounts: Vec<MountRecord>,
    /// Set once StartContainer succeeded: a container whose run state vanished with a reboot is
    /// then known to have run.
    pub started: bool,
    /// In memory only: StartContainer claimed the start and its shim has not answered yet, so a
    /// missing run state means "not recorded yet", not "lost".
    #[serde(skip)]
    pub starting: bool,
    /// Created from a checkpoint archive: StartContainer restores it with CRIU from
    /// [`ContainerRecord::checkpoint_images`].
    #[serde(default)]
    pub restore: bool,
}

/// A container's state as the CRI names it, from what its shim recorded.
pub fn cri_state(s: &skiff_shim::api::ContainerState) -> skiff_proto::cri::ContainerState {
    use skiff_proto::cri::ContainerState as S;
    if s.exited {
        S::ContainerExited
    } else if s.pid > 0 {
        S::ContainerRunning
    } else {
        S::ContainerCreated
    }
}

impl ContainerRecord {
    /// The number of the signal StopContainer sends first (SIGTERM unless the request or the
    /// image named one skiff knows).
    pub fn stop_signal_number(&self) -> i32 {
        signal::number(&self.stop_signal).unwrap_or(libc::SIGTERM)
    }

    /// The container's writable layer: its overlay's upper directory.
    pub fn writable_layer(&self) -> PathBuf {
        self.data_dir.join("upper")
    }

    /// Where a container created from a checkpoint keeps CRIU's images until it is restored.
    pub fn checkpoint_images(&self) -> PathBuf {
        self.data_dir.join("checkpoint")
    }

    pub fn config(&self) -> &ContainerConfig {
        &self.config
    }

    /// The container's state as its shim recorded it, with what a lost record means.
    /// `shim_alive` says whether the pod's shim still runs: while it does, a main process that
    /// is gone is one whose exit the shim is about to record.
    /// `shim_alive` is asked only when the main process is gone.
    pub fn state(&self, shim_alive: impl FnOnce() -> bool) -> ContainerState {
        match ContainerState::read(&self.bundle) {
            Ok(Some(mut s)) => {
                if !s.exited && s.pid > 0 && !process_alive(s.pid, s.started_at) && !shim_alive() {
                    s.exited = true;
                    s.exit_code = 255;
                    s.reason = "Unknown".into();
                    s.message = "the container's processes are gone and no exit was recorded (its pod's shim died)".into();
                }
                s
            }
            Ok(None) if self.started && !self.starting => ContainerState {
                exited: true,
                exit_code: 255,
                reason: "Unknown".into(),
                message: "the container's run state is missing: its start failed before the \
                          shim recorded it, or the node rebooted"
                    .into(),
                ..Default::default()
            },
            Ok(None) => ContainerState::default(),
            Err(e) => ContainerState {
                exited: true,
                exit_code: 255,
                reason: "Unknown".into(),
                message: format!("reading the container state: {e}"),
                ..Default::default()
            },
        }
    }
}

/// Whether `pid` still runs (a zombie or a reused PID younger than the container does not).
fn process_alive(pid: i32, started_at_ns: i64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
        return false;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return false;
    }
    // Field 22 (starttime, in clock ticks since boot) is index 19 after the comm.
    let (Some(start_ticks), Ok(uptime)) = (
        fields.get(19).and_then(|s| s.parse::<f64>().ok()),
        fs::read_to_string("/proc/uptime"),
    ) else {
        return true;
    };
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let up: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let now = skiff_shim::api::now_ns() as f64 / 1e9;
    let proc_start = now - up + start_ticks / hz;
    // Started more than 5 s after the container did: a reused PID.
    proc_start <= started_at_ns as f64 / 1e9 + 5.0
}

pub struct Containers {
    dir: PathBuf,
    map: Mutex<BTreeMap<String, ContainerRecord>>,
    /// Names of containers being created, (pod id, name, attempt) → container id: reserved
    /// from the name check until the record is in `map` or the creation failed, so that
    /// creations run side by side and a name is still never given twice.
    reserved: Mutex<BTreeMap<(String, String, u32), String>>,
}

/// A container name held for one creation ([`Containers::reserve`]); dropping it frees the
/// name, which by then the saved record holds, or nothing does.
pub struct NameReservation<'a> {
    containers: &'a Containers,
    key: (String, String, u32),
}

impl Drop for NameReservation<'_> {
    fn drop(&mut self) {
        (self.containers.reserved.lock())
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Containers {
    /// Loads the records and takes hold of their layers in the image store.
    pub fn open(root: &Path, images: &Images) -> Result<Containers> {
        let dir = root.join("containers");
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut map = BTreeMap::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| "reading container records")?;
            let p = e.path().join("container.json");
            match store::read_json::<ContainerRecord>(&p) {
                Ok(r) => {
                    images.store.hold(&r.chain_ids);
                    for m in r.mounts.iter().filter(|m| !m.image.is_empty()) {
                        images.store.hold_volume(&m.image);
                    }
                    map.insert(r.id.clone(), r);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    // Creation was interrupted before its record was written.
                    let _ = store::remove_durably(&e.path());
                }
                Err(err) => {
                    tracing::error!(record = %p.display(), error = %err, "skipping unreadable container record")
                }
            }
        }
        Ok(Containers {
            dir,
            map: Mutex::new(map),
            reserved: Mutex::new(BTreeMap::new()),
        })
    }

    /// Removes the bundles under `<run-root>/containers` that no record names (a crash during
    /// CreateContainer, before its record was written), and the cgroups their config.json
    /// named (its resources are applied before the record is).
    pub fn remove_orphan_bundles(&self, run_root: &Path) {
        let dir = run_root.join("containers");
        let Ok(rd) = fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if self.lock().contains_key(&id) {
                continue;
            }
            let cgroup = fs::read(e.path().join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string));
            if let Some(cg) = cgroup {
                // Nothing ran in it: the container was never started.
                let _ = skiff_shim::cgroups::remove(&cg);
            }
            tracing::info!(container = %id, "removing the bundle of a creation a crash interrupted");
            if let Err(err) = store::remove_durably(&e.path()) {
                tracing::error!(bundle = %e.path().display(), error = %err, "removing an orphan bundle");
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ContainerRecord>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where containers' data directories (writable layers among them) live.
    pub fn data_root(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn save(&self, r: &ContainerRecord) -> Result<()> {
        let d = self.dir.join(&r.id);
        fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        store::write_json(&d.join("container.json"), r)
            .ctx(|| format!("writing container record {}", r.id))?;
        self.lock().insert(r.id.clone(), r.clone());
        Ok(())
    }

    /// Marks the container started in memory, failing if it already was: the one place a start
    /// is claimed. The caller persists the record with [`Containers::save`].
    pub fn mark_started(&self, id: &str) -> Result<ContainerRecord> {
        let mut m = self.lock();
        let r = m
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        if r.started {
            return Err(Error::FailedPrecondition(format!(
                "container {id} was already started (a container starts once)"
            )));
        }
        r.started = true;
        r.starting = true;
        Ok(r.clone())
    }

    /// Ends the start [`Containers::mark_started`] claimed (its shim answered, either way).
    pub fn start_answered(&self, id: &str) {
        if let Some(r) = self.lock().get_mut(id) {
            r.starting = false;
        }
    }

    /// Removes the record (first, so a crash leaves no record pointing at half-removed data)
    /// and then the data directory.
    pub fn delete(&self, id: &str) -> Result<()> {
        let d = self.dir.join(id);
        store::remove_durably(&d.join("container.json"))
            .ctx(|| format!("removing container record {id}"))?;
        self.lock().remove(id);
        store::remove_durably(&d).ctx(|| format!("removing {}", d.display()))
    }

    /// The container `id` names: the full id or a unique prefix of it.
    pub fn find(&self, id: &str) -> Result<ContainerRecord> {
        store::find_by_id(&self.lock(), id, "container", "container_id").cloned()
    }

    pub fn list(&self) -> Vec<ContainerRecord> {
        self.lock().values().cloned().collect()
    }

    /// Reserves container name `name`, attempt `attempt`, in pod `pod_id` for the container
    /// `id` being created: AlreadyExists when a record or another creation holds it.
    pub fn reserve(
        &self,
        pod_id: &str,
        name: &str,
        attempt: u32,
        id: &str,
    ) -> Result<NameReservation<'_>> {
        let key = (pod_id.to_string(), name.to_string(), attempt);
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let holder = reserved.get(&key).cloned().or_else(|| {
            self.lock()
                .values()
                .find(|r| {
                    r.pod_id == pod_id
                        && r.config()
                            .metadata
                            .as_ref()
                            .is_some_and(|m| m.name == name && m.attempt == attempt)
                })
                .map(|r| r.id.clone())
        });
        if let Some(other) = holder {
            return Err(Error::AlreadyExists(format!(
                "container name {name} (attempt {attempt}) is reserved for container {other} \
                 in pod {pod_id}"
            )));
        }
        reserved.insert(key.clone(), id.to_string());
        Ok(NameReservation {
            containers: self,
            key,
        })
    }

    pub fn of_pod(&self, pod_id: &str) -> Vec<ContainerRecord> {
        self.lock()
            .values()
            .filter(|r| r.pod_id == pod_id)
            .cloned()
            .collect()
    }
}
