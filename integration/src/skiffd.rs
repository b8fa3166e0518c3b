//! `skiffd` as a separate process with its own roots and socket, and CRI clients for it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use skiff_proto::cri::image_service_client::ImageServiceClient;
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::bin_dir;

pub struct Skiffd {
    pub dir: tempfile::TempDir,
    /// The cgroup under which this skiffd puts its pods (unique per test).
    pub cgroup_root: String,
    pub root: PathBuf,
    pub run_root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// A network namespace (`ip netns` name) skiffd runs in, and so its pods' networks.
    netns: Option<String>,
    /// Environment variables set for skiffd beyond the test's own.
    env: Vec<(String, String)>,
}

impl Skiffd {
    /// Starts skiffd with fresh roots, trusting `insecure` registries over plain HTTP.
    pub fn start(insecure: &[&str]) -> Skiffd {
        Skiffd::start_with(insecure, None, &[])
    }

    /// Like [`Skiffd::start`], with a config file's text and extra flags.
    pub fn start_with(insecure: &[&str], config: Option<&str>, extra: &[&str]) -> Skiffd {
        Skiffd::start_in(None, insecure, config, extra)
    }

    /// A skiffd for benchmarks: the shim as deployed, warnings only, and all its state
    /// (`--root` in `dir/root`, `--run-root` in `dir/run`) under `dir`, e.g. a tmpfs.
    pub fn for_bench(registry: &str, dir: &std::path::Path) -> Skiffd {
        let (root, run) = (dir.join("root"), dir.join("run"));
        // SKIFF_BENCH_CONFIG: more config file lines (e.g. `max_concurrent_starts = 0`), to
        // compare settings.
        let extra = std::env::var("SKIFF_BENCH_CONFIG").unwrap_or_default();
        Skiffd::start_with(
            &[registry],
            Some(&format!("{}{extra}\n", crate::deployed_shim_config())),
            &[
                "--log-level",
                "warn",
                "--run-root",
                run.to_str().expect("a UTF-8 path"),
                "--root",
                root.to_str().expect("a UTF-8 path"),
            ],
        )
    }

    /// Like [`Skiffd::start_with`], run inside the network namespace `netns` (an `ip netns`
    /// name) through `nsenter --net`, which leaves the mounts (and cgroups) as they are.
    pub fn start_in(
        netns: Option<&str>,
        insecure: &[&str],
        config: Option<&str>,
        extra: &[&str],
    ) -> Skiffd {
        let dir = tempfile::tempdir().expect("skiffd dir");
        let root = dir.path().join("root");
        let run_root = dir.path().join("run");
        let socket = run_root.join("skiff.sock");
        let log = dir.path().join("skiffd.log");
        let run_root = flag_value(extra, "--run-root")
            .map(PathBuf::from)
            .unwrap_or(run_root);
        // Flags in `extra` replace the harness's own choice for the same flag.
        let root = flag_value(extra, "--root")
            .map(PathBuf::from)
            .unwrap_or(root);
        let defaults = [
            ("--root", root.display().to_string()),
            ("--run-root", run_root.display().to_string()),
            ("--listen", socket.display().to_string()),
            ("--log-level", "debug".to_string()),
        ];
        let mut args: Vec<String> = vec![];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.push(flag.to_string());
                args.push(value);
            }
        }
        let cfg_path = dir.path().join("config.toml");
        let cgroup_root = format!("/skiff-test-{:016x}", rand_u64());
        // Pods need a CNI network: unless the test brings its own, a loopback-only one (the
        // `loopback` plugin of Debian's containernetworking-plugins).
        let config = config.unwrap_or("");
        let mut keys = format!("cgroup_root = \"{cgroup_root}\"\n");
        if !config.contains("cni_conf_dir") {
            let cni = dir.path().join("cni");
            fs::create_dir_all(&cni).expect("cni conf dir");
            fs::write(
                cni.join("99-loopback.conf"),
                r#"{"cniVersion": "1.0.0", "name": "skiff-test-lo", "type": "loopback"}"#,
            )
            .expect("cni conf");
            keys.push_str(&format!("cni_conf_dir = \"{}\"\n", cni.display()));
        }
        // Keys first: a config's own [tables] must come after them.
        let text = format!("{keys}{config}");
        fs::write(&cfg_path, text).expect("config file");
        args.push("--config".into());
        args.push(cfg_path.display().to_string());
        for h in insecure {
            args.push("--insecure-registry".into());
            args.push(h.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Skiffd {
            dir,
            cgroup_root,
            root,
            run_root,
            socket,
            log,
            args,
            child: None,
            netns: netns.map(String::from),
            env: vec![],
        };
        s.spawn();
        s
    }

    pub fn binary() -> PathBuf {
        let p = bin_dir().join("skiffd");
        assert!(
            p.exists(),
            "{} missing: build the workspace first (cargo build --workspace)",
            p.display()
        );
        p
    }

    fn spawn(&mut self) {
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("skiffd log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(Skiffd::binary());
                c
            }
            None => Command::new(Skiffd::binary()),
        };
        let child = cmd
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log fd"))
            .stderr(logf)
            .spawn()
            .expect("start skiffd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "skiffd exited with {st} before serving; log:\n{}",
                        self.log_text()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "skiffd did not serve {} within 20 s; log:\n{}",
            self.socket.display(),
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9`: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("skiffd running");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        c.wait().expect("wait skiffd")
    }

    /// Starts skiffd again on the same roots and socket.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Restarts skiffd (SIGKILL) with `env` added to its environment from now on.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.restart();
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// The unpacked directory of a layer, by chain id.
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.root
            .join("images/layers")
            .join(chain_id.trim_start_matches("sha256:"))
    }
}

impl Drop for Skiffd {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- skiffd log ----\n{}", self.log_text());
        }
        self.cleanup();
    }
}

impl Skiffd {
    /// The cgroup directories of this skiffd's pods, in every hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        for h in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = h.path().join(self.cgroup_root.trim_start_matches('/'));
            if p.is_dir() {
                out.push(p);
            }
        }
        if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
            let p = Path::new("/sys/fs/cgroup").join(self.cgroup_root.trim_start_matches('/'));
            if p.is_dir() && !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Pods outlive skiffd by design; a test's must not outlive the test. Kills every process in
    /// this skiffd's cgroups and every shim started from its run root, removes the cgroups and
    /// unmounts what is mounted under its roots.
    fn cleanup(&self) {
        let run_root = self.run_root.display().to_string();
        for _ in 0..3 {
            for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
                let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains(&run_root) {
                    if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            for d in self.cgroup_dirs() {
                for p in walk_dirs(&d) {
                    for pid in fs::read_to_string(p.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                    {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for d in self.cgroup_dirs() {
            let mut dirs = walk_dirs(&d);
            dirs.reverse();
            for p in dirs {
                let _ = fs::remove_dir(&p);
            }
        }
        let roots = [self.root.display().to_string(), run_root];
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|mp| roots.iter().any(|r| mp.starts_with(r.as_str())))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `dir` and every directory below it, parents first.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b)
}

fn flag_value(args: &[&str], flag: &str) -> Option<String> {
    let i = args.iter().position(|a| *a == flag)?;
    args.get(i + 1).map(|s| s.to_string())
}

/// A gRPC channel over a Unix socket, as kubelet opens one.
pub async fn connect(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:0")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .expect("connect to skiffd socket")
}
