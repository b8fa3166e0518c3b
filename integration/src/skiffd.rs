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
    pub root: PathBuf,
    pub run_root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Skiffd {
    /// Starts skiffd with fresh roots, trusting `insecure` registries over plain HTTP.
    pub fn start(insecure: &[&str]) -> Skiffd {
        Skiffd::start_with(insecure, None, &[])
    }

    /// Like [`Skiffd::start`], with a config file's text and extra flags.
    pub fn start_with(insecure: &[&str], config: Option<&str>, extra: &[&str]) -> Skiffd {
        let dir = tempfile::tempdir().expect("skiffd dir");
        let root = dir.path().join("root");
        let run_root = dir.path().join("run");
        let socket = run_root.join("skiff.sock");
        let log = dir.path().join("skiffd.log");
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
        fs::write(&cfg_path, config.unwrap_or("")).expect("config file");
        args.push("--config".into());
        args.push(cfg_path.display().to_string());
        for h in insecure {
            args.push("--insecure-registry".into());
            args.push(h.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Skiffd {
            dir,
            root,
            run_root,
            socket,
            log,
            args,
            child: None,
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
        let child = Command::new(Skiffd::binary())
            .args(&self.args)
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
    }
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
