//! A `docker-registry` on 127.0.0.1 and a free port, storing into a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub struct Registry {
    pub host: String,
    pub dir: tempfile::TempDir,
    child: Child,
    pub log: PathBuf,
}

/// How a test registry authenticates clients.
pub enum Auth<'a> {
    None,
    /// HTTP basic auth with one user (htpasswd).
    Basic(&'a str, &'a str),
    /// Bearer tokens from a token server.
    Token(&'a crate::token::TokenServer),
}

/// How to start a test registry.
pub struct Options<'a> {
    pub auth: Auth<'a>,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1.
    pub tls: bool,
    /// Serve the storage of another registry (push there, pull here).
    pub share: Option<&'a Registry>,
    /// A fixed port (a skiffd configured ahead, as in the node VM) instead of a free one.
    pub port: Option<u16>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            auth: Auth::None,
            tls: false,
            share: None,
            port: None,
        }
    }
}

impl Registry {
    /// Starts an open registry.
    pub fn start() -> Registry {
        Registry::start_opts(Options::default())
    }

    /// Starts a registry behind HTTP basic auth with one user.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::start_opts(Options {
            auth: Auth::Basic(user, password),
            ..Default::default()
        })
    }

    pub fn start_opts(opts: Options<'_>) -> Registry {
        let bin = "/usr/bin/docker-registry";
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: install Debian's docker-registry (the README's test command does)"
        );
        let dir = tempfile::tempdir().expect("registry dir");
        let port = opts.port.unwrap_or_else(free_port);
        let host = format!("127.0.0.1:{port}");
        let mut auth_yaml = String::new();
        match opts.auth {
            Auth::None => {}
            Auth::Basic(u, p) => {
                let hash = bcrypt::hash(p, 4).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{u}:{hash}\n")).expect("htpasswd");
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            Auth::Token(t) => {
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    t.realm,
                    crate::token::SERVICE,
                    crate::token::ISSUER,
                    t.cert_pem.display()
                );
            }
        }
        let mut tls_yaml = String::new();
        if opts.tls {
            let key = rcgen::KeyPair::generate().expect("tls key");
            let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
                .expect("tls params")
                .self_signed(&key)
                .expect("tls cert");
            let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            fs::write(&c, cert.pem()).expect("write cert");
            fs::write(&k, key.serialize_pem()).expect("write key");
            tls_yaml = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.display(),
                k.display()
            );
        }
        let data = match opts.share {
            Some(other) => other.dir.path().join("data"),
            None => dir.path().join("data"),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{tls_yaml}{auth_yaml}",
            data.display()
        );
        let cfg = dir.path().join("config.yml");
        fs::write(&cfg, config).expect("registry config");
        let log = dir.path().join("registry.log");
        let logf = fs::File::create(&log).expect("registry log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log fd"))
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        let r = Registry {
            host,
            dir,
            child,
            log,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.host).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 20 s; log:\n{}",
            self.host,
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The file the registry stores blob `digest` in (for corrupting it on purpose).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// How many successful GETs of blob `digest` the registry has logged.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("/blobs/{digest}");
        log.lines()
            .filter(|l| {
                l.contains(&needle)
                    && l.contains("\"GET ")
                    && (l.contains("\" 200 ") || l.contains("\" 307 "))
            })
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
