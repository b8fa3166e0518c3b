//! `skiff-shim restore BUNDLE IMAGES CRIU`: the helper that restores a container from a CRIU
//! checkpoint instead of starting it (`init`). Single-threaded, with the container's new stdio
//! as its own and the sync socket on fd 3, like `init`, and reporting the same way: the
//! restored process's PID, or an error line carrying CRIU's own error lines.
//!
//! Order: join the container's cgroup (CRIU and so the restored processes land in it) → a
//! private mount namespace with the new rootfs mounted for `criu restore --root` → `criu
//! restore --restore-detached`: the process tree comes back in a new PID and mount namespace,
//! in the pod's network namespace (the checkpoint declared its own external), joining the pod's
//! IPC and UTS namespaces, with the container's bind mounts mapped to this spec's sources by
//! destination, and the stdio pipes recorded in `descriptors.json` replaced by the new ones.
//! CRIU exits once the tree runs, and the supervisor, a child subreaper, inherits its root.

use std::fs::File;
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use skiff_shim::api::{Rootfs, ROOTFS_FILE};
use skiff_shim::fsutil;
use skiff_shim::podshm::PodShm;

use crate::init::rootfs;
use crate::init::{enter_cgroup, pod_shm_tree, report_error, send, sync_socket};

/// The checkpoint's network namespace key: skiff's, then runc's (CRI-O's, containerd's).
const NETNS_KEYS: &[&str] = &["extNetNs", "extRootNetNS"];
/// Where CRIU finds the new stdio (0, 1, 2 at 10, 11, 12) and the pod's network namespace
/// (from 13, once per key).
const STDIO_FD: i32 = 10;
const NETNS_FD: i32 = 13;

/// `pod_shm`: the pod's /dev/shm, when the pod has its own IPC namespace.
pub fn main(bundle: &Path, images: &Path, criu: &Path, pod_shm: Option<PodShm>) -> ! {
    let mut sync = sync_socket();
    if let Some(s) = &pod_shm {
        // SAFETY: F_SETFD on an inherited descriptor: CRIU and the restored tree need none.
        unsafe {
            libc::fcntl(s.ns, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    match run(bundle, images, criu, pod_shm.as_ref(), &mut sync) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            report_error(&mut sync, &e);
            std::process::exit(1)
        }
    }
}

/// Puts `fd` at `at` without close-on-exec, for CRIU to inherit.
fn place(fd: i32, at: i32) -> Result<(), String> {
    if fd == at {
        // Already there (opened as the lowest free number): only the flag to clear.
        // SAFETY: F_SETFD on a descriptor this process owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(format!("fcntl {fd}: {}", std::io::Error::last_os_error()));
        }
        return Ok(());
    }
    // SAFETY: dup2 on descriptors this process owns; `at` is a number nothing else uses.
    if unsafe { libc::dup2(fd, at) } < 0 {
        return Err(format!("dup2 to {at}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn run(
    bundle: &Path,
    images: &Path,
    criu: &Path,
    pod_shm: Option<&PodShm>,
    sync: &mut File,
) -> Result<(), String> {
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
    let layers: Rootfs = fsutil::read_json(&bundle.join(ROOTFS_FILE))
        .map_err(|e| format!("reading {}/{ROOTFS_FILE}: {e}", bundle.display()))?;
    if layers.idmap {
        return Err("restoring into a pod with a user namespace is not supported".into());
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or("config.json has no linux section")?;
    let descriptors: Vec<String> = fsutil::read_json(&images.join("descriptors.json"))
        .map_err(|e| format!("the checkpoint's descriptors.json: {e}"))?;
    enter_cgroup(linux)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("creating a mount namespace for the restore: {e}"))?;
    let root = rootfs::restore_root(&spec, &layers, bundle)?;
    // The pod's /dev/shm where the spec binds it from, in this mount namespace, for CRIU.
    if let (Some(shm), Some((_, tree))) = (pod_shm, pod_shm_tree(&spec, pod_shm)?) {
        let at = fsutil::open_dir(&shm.dir)
            .map_err(|e| format!("opening {}: {e}", shm.dir.display()))?;
        skiff_shim::idmap::attach(&tree, &at)
            .map_err(|e| format!("mounting the pod's /dev/shm at {}: {e}", shm.dir.display()))?;
    }

    let work = bundle.join("restore");
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let pidfile = work.join("pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut cmd = Command::new(criu);
    cmd.arg("restore")
        .arg("-D")
        .arg(images)
        .arg("-W")
        .arg(&work)
        .args(["-o", "restore.log", "-v4"])
        .arg("--root")
        .arg(&root)
        .arg("--restore-detached")
        .arg("--pidfile")
        .arg(&pidfile)
        .args([
            "--tcp-established",
            "--file-locks",
            "--manage-cgroups=ignore",
        ]);
    // The container's stdio: this process's 0, 1 and 2 in place of what the checkpoint
    // recorded (pipes to the old shim).
    for (i, d) in descriptors.iter().enumerate().take(3) {
        if d.starts_with("pipe:") {
            place(i as i32, STDIO_FD + i as i32)?;
            cmd.arg("--inherit-fd")
                .arg(format!("fd[{}]:{d}", STDIO_FD + i as i32));
        }
    }
    let mut pod_names = None;
    for ns in linux.namespaces().iter().flatten() {
        let path = ns.path().as_ref().map(|p| p.display().to_string());
        match (ns.typ(), path) {
            (LinuxNamespaceType::Network, Some(p)) => {
                // One descriptor per key: CRIU takes each in and closes it.
                for (i, key) in NETNS_KEYS.iter().enumerate() {
                    let f = File::open(&p).map_err(|e| format!("network namespace {p}: {e}"))?;
                    let at = NETNS_FD + i as i32;
                    place(f.into_raw_fd(), at)?;
                    cmd.arg("--inherit-fd").arg(format!("fd[{at}]:{key}"));
                }
            }
            (LinuxNamespaceType::Ipc, Some(p)) => {
                cmd.arg("--join-ns").arg(format!("ipc:{p}"));
            }
            (LinuxNamespaceType::Uts, Some(p)) => {
                let f = File::open(&p).map_err(|e| format!("UTS namespace {p}: {e}"))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWUTS)
                    .map_err(|e| format!("joining the UTS namespace {p}: {e}"))?;
                pod_names = Some(UtsNames::read()?);
                cmd.arg("--join-ns").arg(format!("uts:{p}"));
            }
            (LinuxNamespaceType::Pid, Some(_)) => {
                return Err(
                    "a restore needs the container's own PID namespace, not its pod's".into(),
                );
            }
            _ => {}
        }
    }
    // Bind mounts by destination (the key the checkpoint gave them) from this spec's sources.
    for m in spec.mounts().iter().flatten() {
        if let (true, Some(src)) = (rootfs::is_bind(m), m.source()) {
            cmd.arg("--external").arg(format!(
                "mnt[{}]:{}",
                m.destination().display(),
                src.display()
            ));
        }
    }
    if let Some(p) = spec
        .process()
        .as_ref()
        .and_then(|p| p.apparmor_profile().clone())
        .filter(|p| !p.is_empty() && p != "unconfined")
    {
        cmd.arg("--lsm-profile").arg(format!("apparmor:{p}"));
    }
    // CRIU's own output goes to a file beside its log, not to the container's log.
    let out = File::create(work.join("criu.out"))
        .map_err(|e| format!("creating {}/criu.out: {e}", work.display()))?;
    let err = out.try_clone().map_err(|e| format!("criu.out: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let status = cmd.status();
    if let Some(names) = &pod_names {
        names.write()?;
    }
    let status = status.map_err(|e| format!("running {}: {e}", criu.display()))?;
    if !status.success() {
        let mut why = skiff_shim::criu::log_errors(&work.join("restore.log"));
        if why.starts_with("no log at") {
            why = std::fs::read_to_string(work.join("criu.out")).unwrap_or(why);
        }
        return Err(format!("criu restore failed ({status}): {}", why.trim()));
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .map_err(|e| format!("reading criu's pidfile {}: {e}", pidfile.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("criu's pidfile {} holds no pid", pidfile.display()))?;
    // The supervisor runs in the host's PID namespace (a restore refuses the pod's), so the
    // PID is the same for both.
    send(sync, serde_json::json!({ "pid": pid }))
        .and_then(|_| send(sync, serde_json::json!({ "host_pid": pid })))
        .map_err(|e| format!("reporting the pid: {e}"))?;
    Ok(())
}

/// A UTS namespace's host and domain names. CRIU joining the pod's UTS namespace still sets
/// the checkpointed container's names in it: they are the pod's and are put back at once.
struct UtsNames {
    host: String,
    domain: String,
}

impl UtsNames {
    const HOST: &str = "/proc/sys/kernel/hostname";
    const DOMAIN: &str = "/proc/sys/kernel/domainname";

    /// The names of this process's UTS namespace.
    fn read() -> Result<UtsNames, String> {
        let get = |p: &str| {
            std::fs::read_to_string(p)
                .map(|v| v.trim_end_matches('\n').to_string())
                .map_err(|e| format!("reading {p}: {e}"))
        };
        Ok(UtsNames {
            host: get(Self::HOST)?,
            domain: get(Self::DOMAIN)?,
        })
    }

    fn write(&self) -> Result<(), String> {
        for (p, v) in [(Self::HOST, &self.host), (Self::DOMAIN, &self.domain)] {
            std::fs::write(p, v).map_err(|e| format!("putting back the pod's {p}: {e}"))?;
        }
        Ok(())
    }
}
