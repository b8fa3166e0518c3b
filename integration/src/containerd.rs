//! containerd 1.6 with runc (Debian's packages), run with its own roots and socket, for
//! side-by-side benchmarks. Host-network pods only: no CNI is configured.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_proto::cri::image_service_client::ImageServiceClient;
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// Its `state` directory (runtime state, `/run/containerd` on a node).
    state: PathBuf,
    child: Child,
}

impl Containerd {
    /// Starts containerd trusting `registry` over plain HTTP, with `pause` as its sandbox image,
    /// in a temporary directory (its root, state, socket and config) under `parent`.
    pub fn start_in(registry: &str, pause: &str, parent: &Path) -> Containerd {
        assert!(
            Path::new("/usr/bin/containerd").exists(),
            "containerd missing: apt-get install containerd runc"
        );
        let dir = tempfile::tempdir_in(parent).expect("containerd dir");
        let socket = dir.path().join("containerd.sock");
        let state = dir.path().join("state");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{cni}"
"#,
            root = dir.path().join("root").display(),
            state = state.display(),
            sock = socket.display(),
            cni = dir.path().join("cni").display(),
        );
        let cfg = dir.path().join("config.toml");
        fs::write(&cfg, config).expect("containerd config");
        let log = fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd {
            dir,
            socket,
            state,
            child,
        }
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(crate::skiffd::connect(&self.socket).await)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(crate::skiffd::connect(&self.socket).await)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its shims outlive it by design; these are the benchmark's.
        let state = self.state.display().to_string();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("containerd-shim-runc-v2")
                && cmd.contains(&self.dir.path().display().to_string())
                || cmd.contains(&state)
            {
                if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let root = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|mp| mp.starts_with(&root) || mp.starts_with(&state))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Resident memory of a process, in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// containerd-shim-runc-v2 serving sandbox `id`, found by its command line (0 if none).
pub fn shim_of(id: &str) -> i32 {
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("containerd-shim-runc-v2") && cmd.contains(id) {
            return e.file_name().to_string_lossy().parse().unwrap_or(0);
        }
    }
    0
}

/// The PID a verbose PodSandboxStatus reports in its `info` (skiff: the shim; containerd: the
/// pause process).
pub fn pid_from_info(st: &skiff_proto::cri::PodSandboxStatusResponse) -> i32 {
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("info").map(String::as_str).unwrap_or("{}"))
            .unwrap_or_default();
    info["pid"].as_i64().unwrap_or(0) as i32
}

/// Drops the page cache (after a sync), releasing memory cgroups earlier runs left dying, so
/// each runtime is measured on the same node state.
pub fn clean_node() {
    // SAFETY: sync has no arguments and no failure mode.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches (run as root)");
    std::thread::sleep(Duration::from_millis(500));
}

/// The images the side-by-side benchmarks push to `registry`: busybox for the containers, and
/// a pause look-alike (busybox sleeping) for containerd's sandboxes.
pub async fn bench_images(
    registry: &str,
) -> (crate::image::PushedImage, crate::image::PushedImage) {
    use crate::image::{Compression, ImageBuilder, Layer};
    let busybox = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(registry, "bench/busybox", "v1")
        .await;
    let pause = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .config(
            "Entrypoint",
            serde_json::json!(["/bin/sleep", "2147483647"]),
        )
        .push(registry, "bench/pause", "v1")
        .await;
    (busybox, pause)
}
