//! The end-to-end test harness: a real registry on loopback (Debian's `docker-registry`), images
//! built here from Debian's `busybox-static` and pushed to it, and `skiffd` started as its own
//! process and driven only through its CRI socket, the way kubelet drives it.
//!
//! Everything runs as root on 127.0.0.1; nothing reaches another address.

pub mod containerd;
pub mod cri;
pub mod image;
pub mod rawregistry;
pub mod registry;
pub mod skiffd;
pub mod stream;
pub mod token;

pub use image::{ImageBuilder, Layer, PushedImage};
pub use registry::Registry;
pub use skiffd::Skiffd;

use std::path::PathBuf;

/// The directory cargo builds binaries into (`target/debug` or `target/release`), found from
/// the running test executable (`target/<profile>/deps/<test>`), or `SKIFF_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SKIFF_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Makes a character device node (mode 0666) at `path`; panics on failure.
pub fn mknod_char(path: &std::path::Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    // SAFETY: mknod with a valid C string; the result is checked.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Gives the network namespace pinned at `netns` an `eth0` with `addr` (CIDR), the end of a
/// veth pair whose other end (`peer0`) stays in it too: packets sent out never leave.
pub fn veth_in(netns: &std::path::Path, addr: &str) {
    let st = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["sh", "-c"])
        .arg(format!(
            "ip link add eth0 type veth peer name peer0 && ip addr add {addr} dev eth0 \
             && ip link set eth0 up && ip link set peer0 up && sleep 0.3"
        ))
        .status()
        .expect("nsenter");
    assert!(st.success(), "veth in {}", netns.display());
}

/// Fails the test early with a clear message when not run as root.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "skiff's integration tests run as root (they mount overlays and run a registry)"
    );
}

/// The config line that makes skiffd run pods with the shim as it is deployed (built with the
/// size-optimised `shim` profile), for benchmarks.
pub fn deployed_shim_config() -> String {
    let shim = bin_dir().join("../x86_64-unknown-linux-musl/shim/skiff-shim");
    assert!(
        shim.exists(),
        "{} missing: cargo build --profile shim -p skiff-shim --target x86_64-unknown-linux-musl",
        shim.display()
    );
    format!("shim_binary = \"{}\"\n", shim.display())
}

/// Shims from another build, as executable scripts in `dir`: one that reports protocol 999, and
/// one that answers `version` as a shim from before it was a command did. Each with the words
/// skiffd's refusal must contain.
pub fn other_build_shims(dir: &std::path::Path) -> Vec<(PathBuf, &'static str)> {
    use std::os::unix::fs::PermissionsExt;
    [
        (
            "newer-shim",
            "echo 'skiff-shim 0.0.1 protocol 999'",
            "speaks protocol 999",
        ),
        (
            "older-shim",
            "echo 'usage: skiff-shim pod POD.json' >&2; exit 2",
            "does not report its protocol",
        ),
    ]
    .into_iter()
    .map(|(name, script, said)| {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("writing a shim script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making a shim script executable");
        (path, said)
    })
    .collect()
}

/// The `p` quantile (0.0–1.0) of `v`, nearest rank: benchmarks' p50 and p95.
pub fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A duration in milliseconds.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs a benchmark's async body as root on a two-worker tokio runtime (the machine's cores).
pub fn bench_main<F: std::future::Future>(body: F) -> F::Output {
    require_root();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(body)
}

/// A tmpfs the benchmark mounts on a directory of its own, unmounted when dropped: where a
/// node keeps its run-time state (`/run` is a tmpfs on every distribution kubelet runs on, but
/// not on this build machine).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().expect("a directory for the tmpfs");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g,mode=0711", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "mounting a tmpfs at {}", dir.path().display());
        Tmpfs { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The machine's own speed at one moment, to read a benchmark's figures against: a fixed
/// integer loop (ms) and fork + exec + wait of `/bin/true` (p50 of 100, ms). On a shared host
/// both move from minute to minute, and every runtime's figures move with them.
pub struct Yardstick {
    pub cpu_ms: f64,
    pub spawn_ms: f64,
}

impl Yardstick {
    pub fn measure() -> Yardstick {
        let t = std::time::Instant::now();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..50_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
        let cpu_ms = ms(t.elapsed());
        let spawn = (0..100)
            .map(|_| {
                let t = std::time::Instant::now();
                std::process::Command::new("/bin/true")
                    .status()
                    .expect("running /bin/true");
                ms(t.elapsed())
            })
            .collect();
        Yardstick {
            cpu_ms,
            spawn_ms: pct(spawn, 0.5),
        }
    }
}

impl std::fmt::Display for Yardstick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "integer loop {:.0} ms, fork + exec of /bin/true {:.2} ms",
            self.cpu_ms, self.spawn_ms
        )
    }
}

/// CPU time the whole machine has spent busy so far (every state of `/proc/stat`'s `cpu` line
/// but idle, iowait and steal: time the hypervisor gave to other guests is no work of ours), in
/// ms.
pub fn node_busy_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is in user's.
    let busy: f64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| ![3, 4, 7].contains(i))
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy * 1000.0 / hz
}
