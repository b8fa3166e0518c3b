//! What skiffd and the shim exchange through files: the pod's configuration (written by skiffd,
//! read by the shim at start), the container rootfs description beside each OCI bundle, and the
//! container state the shim records (read by skiffd).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The version of what skiffd and the shim exchange (these files, the shim's gRPC API and its
/// command line), raised with each change an older shim would misread or ignore, such as a new
/// [`PodConfig`] field it must honour. `skiff-shim version` prints it; skiffd refuses to start
/// with a shim that prints another (or none).
pub const PROTOCOL: u32 = 1;

/// The pod's configuration file in its run directory.
pub const POD_CONFIG: &str = "pod.json";
/// The shim API socket in the pod's run directory.
pub const SHIM_SOCKET: &str = "shim.sock";
/// Directory of pinned namespaces in the pod's run directory.
pub const NS_DIR: &str = "ns";
/// The pod's shared /dev/shm mount point in its run directory.
pub const SHM_DIR: &str = "shm";
/// Container state, beside `config.json` in the bundle.
pub const STATE_FILE: &str = "state.json";
/// Container rootfs layers, beside `config.json` in the bundle.
pub const ROOTFS_FILE: &str = "rootfs.json";
/// The compiled seccomp filter (`struct sock_filter` records), beside `config.json` when the
/// spec has a `linux.seccomp` section.
pub const SECCOMP_FILE: &str = "seccomp.bpf";

/// The instructions of a [`SECCOMP_FILE`]: 8-byte `struct sock_filter` records in host byte
/// order (a trailing partial record is ignored; callers check the length).
pub fn bpf_program(raw: &[u8]) -> Vec<libc::sock_filter> {
    raw.chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsMode {
    /// A namespace of the pod's own, pinned under the pod's run directory.
    Pod,
    /// The host's.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidMode {
    /// One PID namespace for the pod; the shim is its PID 1.
    Pod,
    /// A PID namespace per container.
    Container,
    /// The host's.
    Node,
}

/// Everything the shim needs to create a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodConfig {
    pub id: String,
    /// The pod's run directory: pinned namespaces, socket, shm, hosts/resolv.conf/hostname.
    pub dir: PathBuf,
    pub network: NsMode,
    pub ipc: NsMode,
    pub uts: NsMode,
    pub pid: PidMode,
    pub hostname: String,
    /// Namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*).
    pub sysctls: BTreeMap<String, String>,
    /// The pod's own user namespace (`hostUsers: false`): created first, owning the others.
    #[serde(default)]
    pub userns: Option<crate::idmap::Maps>,
    /// A pinned mount namespace with a single mount (skiffd's `mnt-empty`), which the mount
    /// namespace holding the pod's /dev/shm is copied from (see `podshm`); without it, the
    /// node's is copied.
    #[serde(default)]
    pub empty_mntns: Option<PathBuf>,
    /// A cgroup (cgroupfs path) the shim moves itself into first: under systemd with the systemd
    /// cgroup driver, a leaf of its unit's delegated cgroup, whose other children are the
    /// containers' (cgroup v2 puts processes in leaves only).
    #[serde(default)]
    pub cgroup_leaf: Option<String>,
    /// Where the shim writes its supervisor's PID before reporting ready (systemd's PIDFile).
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// Where the shim leaves an empty file named after each container whose exit it has just
    /// recorded: skiffd watches the directory (container events) and removes what it has read.
    #[serde(default)]
    pub exits_dir: Option<PathBuf>,
    /// Whether the first process may become the supervisor itself, instead of forking it and
    /// exiting: set by a launcher that waits only for the report (skiffd's own, which then
    /// reaps the process), not for the first process to exit (systemd's `Type=forking`). A pod
    /// with a PID namespace of its own forks whatever this says, its supervisor being the
    /// namespace's first process, unless the first process was born there (`born_in_pid_ns`).
    #[serde(default)]
    pub stay: bool,
    /// Whether the launcher started the first process as PID 1 of the pod's new PID namespace
    /// (skiffd's own launcher, for a pod with a PID namespace and no user namespace): the
    /// process then creates no PID namespace and, with `stay`, is the supervisor.
    #[serde(default)]
    pub born_in_pid_ns: bool,
}

impl PodConfig {
    /// Where namespace `name` (`user`, `net`, `ipc`, `uts`, `pid`) of the pod is pinned.
    pub fn ns_path(&self, name: &str) -> PathBuf {
        self.dir.join(NS_DIR).join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(SHIM_SOCKET)
    }
}

/// The first line the shim prints on stdout once the pod exists: its supervisor's PID, or why
/// the pod could not be created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    Pid(i32),
    Error(String),
}

/// The container's root filesystem: an overlay of image layers and its own upper directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rootfs {
    /// The directory holding the layer directories.
    pub layers_dir: PathBuf,
    /// Layer directory names inside `layers_dir`, top first.
    pub lower: Vec<String>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Mount the layers idmapped with the container's user namespace (the spec's `user`
    /// namespace path).
    #[serde(default)]
    pub idmap: bool,
    /// Images mounted as volumes (KEP-4639), staged in the bundle before the spec's mounts,
    /// whose bind mounts name them as sources.
    #[serde(default)]
    pub image_volumes: Vec<ImageVolume>,
}

/// One image volume: the image's layers mounted read-only (nosuid, nodev, noexec) at `root`,
/// and, when `sub_path` is set, that path resolved inside the image (symlinks cannot leave it)
/// bound at `at`. The container's bind mount takes `at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageVolume {
    /// Layer directory names inside [`Rootfs::layers_dir`], top first.
    pub lower: Vec<String>,
    pub sub_path: String,
    pub root: PathBuf,
    pub at: PathBuf,
}

/// A container's life as the shim saw it. Written crash-safely by the shim; read by skiffd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Host PID of the main process; 0 before start.
    pub pid: i32,
    /// Unix nanoseconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub exited: bool,
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`.
    pub reason: String,
    pub message: String,
}

impl ContainerState {
    pub fn read(bundle: &Path) -> io::Result<Option<ContainerState>> {
        match fsutil::read_json(&bundle.join(STATE_FILE)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Atomically, without fsync: the bundle lives under the run root, which a reboot clears.
    pub fn write(&self, bundle: &Path) -> io::Result<()> {
        fsutil::write_json_volatile(&bundle.join(STATE_FILE), self)
    }
}

/// Unix time now, in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with nine fractional digits in UTC, as containerd writes it:
/// `2026-11-22T11:14:41.123456789Z`.
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        tod / 3600,
        (tod / 60) % 60,
        tod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
