//! Pod sandboxes: their records under `<root>/pods/<id>/pod.json`, their run directories under
//! `<run-root>/pods/<id>/` (pinned namespaces, shim socket, /dev/shm, hosts, resolv.conf,
//! hostname), and their life cycle (`create`, `stop`, `remove`). The pod's processes belong to
//! its `skiff-shim`, started through the [`launch`] seam.

pub mod files;
pub mod launch;
pub mod lifecycle;
pub mod metrics;
pub mod resources;
pub mod shim_client;
pub mod stats;
pub mod systemd;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use skiff_proto::cri::PodSandboxConfig;

use crate::error::{IoContext, Result};
use crate::store::{self, Pb};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    /// Being created: a crash leaves it to be torn down at start.
    Creating,
    Ready,
    NotReady,
}

/// A pod as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    /// The request's PodSandboxConfig (base64 of its protobuf encoding on disk).
    #[serde(rename = "config_pb")]
    pub config: Pb<PodSandboxConfig>,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: PodState,
    /// Host PID of the pod's supervisor (0 when none runs).
    pub shim_pid: i32,
    pub run_dir: PathBuf,
    /// cgroupfs path under which the pod's containers get theirs.
    pub cgroup: String,
    /// Whether skiff created `cgroup` (and so removes it), rather than kubelet.
    pub owns_cgroup: bool,
}

impl PodRecord {
    /// The pod's state as the CRI names it (a pod still being created is not ready).
    pub fn cri_state(&self) -> skiff_proto::cri::PodSandboxState {
        use skiff_proto::cri::PodSandboxState as S;
        match self.state {
            PodState::Ready => S::SandboxReady,
            PodState::Creating | PodState::NotReady => S::SandboxNotready,
        }
    }

    pub fn config(&self) -> &PodSandboxConfig {
        &self.config
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join(skiff_shim::api::SHIM_SOCKET)
    }
}

/// The pods skiffd knows, in memory and on disk.
pub struct Pods {
    dir: PathBuf,
    map: Mutex<BTreeMap<String, PodRecord>>,
    /// Held while a new pod's name is checked and its Creating record made visible, so that
    /// a name is never given twice.
    pub create_lock: tokio::sync::Mutex<()>,
    /// Serialises UpdatePodSandboxResources calls (each reads, changes and saves a record).
    pub update_lock: tokio::sync::Mutex<()>,
    /// Serialises shim launches (`run_pod`).
    pub launch_lock: tokio::sync::Mutex<()>,
}

impl Pods {
    pub fn open(root: &Path) -> Result<Pods> {
        let dir = root.join("pods");
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut map = BTreeMap::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| "reading pod records")?;
            let p = e.path().join("pod.json");
            match store::read_json::<PodRecord>(&p) {
                Ok(r) => {
                    map.insert(r.id.clone(), r);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    // A directory whose record was never written or already removed.
                    let _ = store::remove_durably(&e.path());
                }
                Err(err) => {
                    tracing::error!(record = %p.display(), error = %err, "skipping unreadable pod record")
                }
            }
        }
        Ok(Pods {
            dir,
            map: Mutex::new(map),
            create_lock: tokio::sync::Mutex::new(()),
            update_lock: tokio::sync::Mutex::new(()),
            launch_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PodRecord>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the record durably, then makes it visible.
    pub fn save(&self, r: &PodRecord) -> Result<()> {
        self.write(r, true)
    }

    /// Writes the record atomically but without fsync (see `run_pod`), then makes it visible.
    pub fn save_volatile(&self, r: &PodRecord) -> Result<()> {
        self.write(r, false)
    }

    fn write(&self, r: &PodRecord, durable: bool) -> Result<()> {
        let d = self.dir.join(&r.id);
        fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        let p = d.join("pod.json");
        if durable {
            store::write_json(&p, r)
        } else {
            store::write_json_volatile(&p, r)
        }
        .ctx(|| format!("writing pod record {}", r.id))?;
        self.lock().insert(r.id.clone(), r.clone());
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        store::remove_durably(&self.dir.join(id)).ctx(|| format!("removing pod record {id}"))?;
        self.lock().remove(id);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<PodRecord> {
        self.lock().get(id).cloned()
    }

    /// The pod `id` names: the full id, or a unique prefix of it (as crictl abbreviates).
    pub fn find(&self, id: &str) -> Result<PodRecord> {
        store::find_by_id(&self.lock(), id, "pod sandbox", "pod_sandbox_id").cloned()
    }

    pub fn list(&self) -> Vec<PodRecord> {
        self.lock().values().cloned().collect()
    }

    /// The id of a pod whose record `matches`, looked through in place (no record copied).
    pub fn find_id(&self, matches: impl Fn(&PodRecord) -> bool) -> Option<String> {
        self.lock()
            .values()
            .find(|p| matches(p))
            .map(|p| p.id.clone())
    }
}

/// Shared pod state for the CRI layer.
pub type SharedPods = Arc<Pods>;
