//! skiffd's configuration: command-line flags over a TOML file over built-in defaults.
//!
//! Every flag is also a key of the config file (`/etc/skiff/config.toml` unless `--config` says
//! otherwise). A missing default config file is fine; a missing file named explicitly, an unknown
//! key or a value of the wrong type is an error that names the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/skiff/config.toml";
pub const DEFAULT_LISTEN: &str = "/run/skiff/skiff.sock";
pub const DEFAULT_ROOT: &str = "/var/lib/skiff";
pub const DEFAULT_RUN_ROOT: &str = "/run/skiff";
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;
/// The largest `max_concurrent_starts` (a semaphore of that many turns).
pub const MAX_CONCURRENT_STARTS: usize = 4096;

/// `max_concurrent_starts` unless configured: one more than the CPUs skiffd may use, so that
/// a CPU has work while a start waits off it (the kernel's grace period when its init detaches
/// the old root). Measured on 2 CPUs (`integration/benches/DENSITY.md`): 2 turns made 250 pods
/// slower to start, 3 narrowed the p99 about as much at the throughput of no limit.
pub fn default_max_concurrent_starts() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cpus.saturating_add(1).min(MAX_CONCURRENT_STARTS)
}
pub const DEFAULT_CGROUP_ROOT: &str = "/skiff";
pub const DEFAULT_SECCOMP_ROOT: &str = "/var/lib/kubelet/seccomp";
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The usual place, then where Debian's containernetworking-plugins installs them.
pub const DEFAULT_CNI_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

/// How the root filesystem of a container in a pod user namespace gets the pod's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernsRootfs {
    /// Image layers mounted idmapped: nothing copied or chowned.
    #[default]
    Idmap,
    /// Each container gets a copy of its image's layers chowned into the pod's range: slow,
    /// for nodes whose filesystems cannot be idmapped.
    Chown,
}

/// How pod and container cgroups are named and placed (kubelet's `cgroupDriver` must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// `cgroup_parent` is a slice (`kubepods-burstable-pod<uid>.slice`); each pod is a unit in
    /// it whose delegated cgroup holds the containers' cgroups. Needs systemd.
    Systemd,
    /// `cgroup_parent` is a cgroupfs path (`/kubepods/burstable/pod<uid>`).
    Cgroupfs,
}

/// Whether systemd runs this machine (as `sd_booted()` tells).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// What a container gets when neither it, its pod nor an annotation names a seccomp profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum UnsetSeccomp {
    RuntimeDefault,
    /// api.proto: an empty profile "is identical with unconfined".
    #[default]
    Unconfined,
}

/// Command-line flags of `skiffd`. Each one, when given, wins over the same key in the file.
#[derive(Debug, Parser, Default)]
#[command(name = "skiffd", version, about = "skiff: a Kubernetes CRI runtime")]
pub struct Flags {
    /// Unix socket that serves CRI v1 (key `listen`).
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Persistent state: images, pod and container records (key `root`).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state, gone after a reboot: sockets, mounts, namespaces (key `run_root`).
    #[arg(long = "run-root", value_name = "DIR")]
    pub run_root: Option<PathBuf>,
    /// TOML config file; absent is fine when not given explicitly.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Registry reached over plain HTTP or unverified TLS, HOST[:PORT]; repeatable
    /// (key `insecure_registries`, added to the file's list).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// trace, debug, info, warn or error, or a tracing filter (key `log_level`).
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// systemd or cgroupfs; default systemd where systemd runs the machine (key
    /// `cgroup_driver`).
    #[arg(long = "cgroup-driver", value_name = "DRIVER")]
    pub cgroup_driver: Option<CgroupDriver>,
}

/// The config file's keys. Unknown keys are refused so a typo is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub run_root: Option<PathBuf>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Registry host → mirror hosts tried in order before it, e.g.
    /// `"docker.io" = ["mirror.internal:5000"]`.
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// How many layers of one image download at once.
    pub max_concurrent_downloads: Option<usize>,
    /// How many container starts run at once (the others wait their turn, in order); 0: no
    /// limit. Default: one more than the CPUs skiffd may use.
    pub max_concurrent_starts: Option<usize>,
    /// Most bytes of file data one layer may unpack to; 0 (the default): no limit.
    pub max_layer_bytes: Option<u64>,
    /// Most entries one layer may hold; 0 (the default): no limit.
    pub max_layer_entries: Option<u64>,
    /// The skiff-shim binary (default: `skiff-shim` beside skiffd).
    pub shim_binary: Option<PathBuf>,
    /// cgroup under which pods get theirs when kubelet names no cgroup_parent.
    pub cgroup_root: Option<String>,
    /// Raise a requested oom_score_adj to skiffd's own when it is lower (for nodes where skiffd
    /// lacks CAP_SYS_RESOURCE, as containerd's restrict_oom_score_adj).
    pub restrict_oom_score_adj: Option<bool>,
    /// Whether a container may be restored from a checkpoint *image* (one any pod author can
    /// name); off by default. Archives on the node's disk are always restorable.
    pub restore_from_images: Option<bool>,
    /// Where `localhost/<path>` seccomp profiles (deprecated fields, legacy annotations) that
    /// are not absolute are found.
    pub seccomp_root: Option<PathBuf>,
    /// What an unset seccomp profile means: "Unconfined" (default, as api.proto says) or
    /// "RuntimeDefault".
    pub unset_seccomp_profile: Option<UnsetSeccomp>,
    /// "idmap" (default) or "chown": see [`UsernsRootfs`].
    pub userns_rootfs: Option<UsernsRootfs>,
    /// The address the streaming server (Exec, Attach, PortForward) listens on (default
    /// 127.0.0.1).
    pub streaming_address: Option<std::net::IpAddr>,
    /// Its port; 0 (the default) takes any free one.
    pub streaming_port: Option<u16>,
    /// Seconds a streaming URL stays usable (default 60, as kubelet's).
    pub streaming_url_ttl: Option<u64>,
    /// PEM certificate chain and private key: the streaming server speaks HTTPS (both or
    /// neither).
    pub streaming_tls_cert: Option<PathBuf>,
    pub streaming_tls_key: Option<PathBuf>,
    /// CNI network configurations (default /etc/cni/net.d).
    pub cni_conf_dir: Option<PathBuf>,
    /// Where CNI plugin binaries are looked for, in order (default /opt/cni/bin, /usr/lib/cni).
    pub cni_bin_dirs: Option<Vec<PathBuf>>,
    /// The network to use by name; the first configuration file by name when unset.
    pub cni_conf_name: Option<String>,
    pub cgroup_driver: Option<CgroupDriver>,
    /// The CRIU binary checkpoints are made with (default `criu` in PATH).
    pub criu_binary: Option<PathBuf>,
    /// Images kubelet must not garbage-collect (`Image.pinned`): references, globs ending in
    /// `*`, or `*keyword*`, as CRI-O takes them.
    #[serde(default)]
    pub pinned_images: Vec<String>,
    /// A pull that receives nothing for this long is cancelled (containerd's key and default,
    /// "5m"; Go duration syntax; "0" never cancels).
    pub image_pull_progress_timeout: Option<String>,
    /// Runtime handlers (RuntimeClass `handler` names) besides the default "": `[runtimes.NAME]`
    /// tables, each key overriding the daemon's own for pods of that handler.
    #[serde(default)]
    pub runtimes: BTreeMap<String, HandlerFile>,
    /// Where CDI specs are read, in rising priority (default /etc/cdi, /var/run/cdi).
    pub cdi_spec_dirs: Option<Vec<PathBuf>>,
    /// `IP:PORT` skiffd serves its own metrics on (`GET /metrics`); none by default.
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// One `[runtimes.NAME]` table; an empty one is the daemon's defaults under another name.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerFile {
    /// As the top-level key, for this handler's containers.
    pub unset_seccomp_profile: Option<UnsetSeccomp>,
    /// As the top-level key, for this handler's pods.
    pub userns_rootfs: Option<UsernsRootfs>,
    /// Which of the annotations skiff acts on this handler's pods may use (exact keys, or
    /// prefixes ending in `*`); unset: all of them, as the default handler.
    pub allowed_annotations: Option<Vec<String>>,
}

/// A runtime handler in force: its name and settings, the daemon's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    pub name: String,
    pub unset_seccomp_profile: UnsetSeccomp,
    pub userns_rootfs: UsernsRootfs,
    pub allowed_annotations: Option<Vec<String>>,
}

impl Handler {
    /// Whether a pod of this handler may use annotation `key` (one skiff acts on).
    pub fn allows_annotation(&self, key: &str) -> bool {
        match &self.allowed_annotations {
            None => true,
            Some(list) => list.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == a,
            }),
        }
    }
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: PathBuf,
    pub root: PathBuf,
    pub run_root: PathBuf,
    pub log_level: String,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    pub max_concurrent_downloads: usize,
    /// Container starts run at once; 0: no limit (`container::start_turns`).
    pub max_concurrent_starts: usize,
    /// What one layer may unpack to (decompression bombs).
    pub layer_limits: crate::image::unpack::UnpackLimits,
    pub shim_binary: Option<PathBuf>,
    pub cgroup_root: String,
    pub restrict_oom_score_adj: bool,
    pub restore_from_images: bool,
    pub seccomp_root: PathBuf,
    pub streaming_address: std::net::IpAddr,
    pub streaming_port: u16,
    pub streaming_url_ttl: std::time::Duration,
    /// (certificate chain, private key) of the streaming server's TLS.
    pub streaming_tls: Option<(PathBuf, PathBuf)>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_conf_name: Option<String>,
    pub cgroup_driver: CgroupDriver,
    pub criu_binary: PathBuf,
    pub pinned_images: crate::image::pinned::PinnedImages,
    /// Every runtime handler, the default ("") first.
    pub handlers: Vec<Handler>,
    /// None: never cancelled for lack of progress.
    pub image_pull_progress_timeout: Option<std::time::Duration>,
    pub cdi_spec_dirs: Vec<PathBuf>,
    pub metrics_address: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Builds the configuration from parsed flags, reading the config file they point at.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let (path, explicit) = match &flags.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                FileConfig::default()
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::merge(flags, file)
    }

    /// Flags win over the file; the file wins over defaults.
    pub fn merge(flags: Flags, file: FileConfig) -> Result<Config, ConfigError> {
        let handlers = handlers(&file)?;
        let mut insecure = file.insecure_registries;
        insecure.extend(flags.insecure_registry);
        for host in &insecure {
            validate_host("insecure_registries", host)?;
        }
        for (registry, mirrors) in &file.registry_mirrors {
            validate_host("registry_mirrors", registry)?;
            for m in mirrors {
                validate_host(&format!("registry_mirrors.\"{registry}\""), m)?;
            }
        }
        let max = file
            .max_concurrent_downloads
            .unwrap_or(DEFAULT_MAX_CONCURRENT_DOWNLOADS);
        if max == 0 || max > 64 {
            return Err(ConfigError::Invalid(format!(
                "max_concurrent_downloads must be between 1 and 64, got {max}"
            )));
        }
        let starts = file
            .max_concurrent_starts
            .unwrap_or_else(default_max_concurrent_starts);
        if starts > MAX_CONCURRENT_STARTS {
            return Err(ConfigError::Invalid(format!(
                "max_concurrent_starts must be between 0 (no limit) and \
                 {MAX_CONCURRENT_STARTS}, got {starts}"
            )));
        }
        let cfg = Config {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            root: flags
                .root
                .or(file.root)
                .unwrap_or_else(|| DEFAULT_ROOT.into()),
            run_root: flags
                .run_root
                .or(file.run_root)
                .unwrap_or_else(|| DEFAULT_RUN_ROOT.into()),
            log_level: flags
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            insecure_registries: insecure,
            registry_mirrors: file.registry_mirrors,
            max_concurrent_downloads: max,
            max_concurrent_starts: starts,
            layer_limits: crate::image::unpack::UnpackLimits {
                bytes: file.max_layer_bytes.unwrap_or(0),
                entries: file.max_layer_entries.unwrap_or(0),
            },
            shim_binary: file.shim_binary,
            cgroup_root: file
                .cgroup_root
                .unwrap_or_else(|| DEFAULT_CGROUP_ROOT.into()),
            restrict_oom_score_adj: file.restrict_oom_score_adj.unwrap_or(false),
            restore_from_images: file.restore_from_images.unwrap_or(false),
            pinned_images: crate::image::pinned::PinnedImages::parse(&file.pinned_images)
                .map_err(ConfigError::Invalid)?,
            handlers,
            metrics_address: file.metrics_address,
            cdi_spec_dirs: file
                .cdi_spec_dirs
                .unwrap_or_else(|| vec!["/etc/cdi".into(), "/var/run/cdi".into()]),
            image_pull_progress_timeout: match file.image_pull_progress_timeout.as_deref() {
                None => Some(DEFAULT_PULL_PROGRESS_TIMEOUT),
                Some(t) => {
                    let d = parse_duration(t).map_err(|e| {
                        ConfigError::Invalid(format!("image_pull_progress_timeout: {e}"))
                    })?;
                    (!d.is_zero()).then_some(d)
                }
            },
            seccomp_root: file
                .seccomp_root
                .unwrap_or_else(|| DEFAULT_SECCOMP_ROOT.into()),
            streaming_address: file
                .streaming_address
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            streaming_port: file.streaming_port.unwrap_or(0),
            streaming_url_ttl: std::time::Duration::from_secs(match file.streaming_url_ttl {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "streaming_url_ttl: must be at least 1 second".into(),
                    ))
                }
                Some(n) => n,
                None => 60,
            }),
            cni_conf_dir: file
                .cni_conf_dir
                .unwrap_or_else(|| DEFAULT_CNI_CONF_DIR.into()),
            cni_bin_dirs: file
                .cni_bin_dirs
                .unwrap_or_else(|| DEFAULT_CNI_BIN_DIRS.iter().map(PathBuf::from).collect()),
            cni_conf_name: file.cni_conf_name,
            criu_binary: file.criu_binary.unwrap_or_else(|| "criu".into()),
            cgroup_driver: match flags.cgroup_driver.or(file.cgroup_driver) {
                Some(CgroupDriver::Systemd) if !systemd_booted() => {
                    return Err(ConfigError::Invalid(
                        "cgroup_driver: systemd needs systemd running the machine \
                         (/run/systemd/system is missing)"
                            .into(),
                    ))
                }
                Some(d) => d,
                None if systemd_booted() => CgroupDriver::Systemd,
                None => CgroupDriver::Cgroupfs,
            },
            streaming_tls: match (file.streaming_tls_cert, file.streaming_tls_key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "streaming_tls_cert and streaming_tls_key: set both or neither".into(),
                    ))
                }
            },
        };
        skiff_shim::cgroups::clean_path(&cfg.cgroup_root)
            .map_err(|e| ConfigError::Invalid(format!("cgroup_root: {e}")))?;
        for (key, p) in [
            ("listen", &cfg.listen),
            ("root", &cfg.root),
            ("run_root", &cfg.run_root),
            ("seccomp_root", &cfg.seccomp_root),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be an absolute path, got {}",
                    p.display()
                )));
            }
        }
        Ok(cfg)
    }

    /// Whether `host` (HOST[:PORT]) may be reached over plain HTTP or unverified TLS.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_registries.iter().any(|h| h == host)
    }
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().to_string(),
    })
}

fn validate_host(key: &str, host: &str) -> Result<(), ConfigError> {
    let ok = !host.is_empty()
        && !host.contains('/')
        && !host.contains("://")
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key}: {host:?} is not HOST[:PORT]"
        )))
    }
}

/// The default handler ("", the daemon's keys) and each `[runtimes.NAME]`, named as
/// RuntimeClass handlers are (a DNS label).
fn handlers(file: &FileConfig) -> Result<Vec<Handler>, ConfigError> {
    let default = Handler {
        name: String::new(),
        unset_seccomp_profile: file.unset_seccomp_profile.unwrap_or_default(),
        userns_rootfs: file.userns_rootfs.unwrap_or_default(),
        allowed_annotations: None,
    };
    let mut out = vec![default.clone()];
    for (name, h) in &file.runtimes {
        let label = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !label {
            return Err(ConfigError::Invalid(format!(
                "runtimes.{name:?}: a handler name is a DNS label (lower-case letters, digits \
                 and '-', at most 63)"
            )));
        }
        for a in h.allowed_annotations.iter().flatten() {
            let body = a.strip_suffix('*').unwrap_or(a);
            if body.is_empty() || body.contains('*') {
                return Err(ConfigError::Invalid(format!(
                    "runtimes.{name}.allowed_annotations: {a:?} is neither a key nor a prefix \
                     ending in '*'"
                )));
            }
        }
        out.push(Handler {
            name: name.clone(),
            unset_seccomp_profile: h
                .unset_seccomp_profile
                .unwrap_or(default.unset_seccomp_profile),
            userns_rootfs: h.userns_rootfs.unwrap_or(default.userns_rootfs),
            allowed_annotations: h.allowed_annotations.clone(),
        });
    }
    Ok(out)
}

impl Config {
    /// The runtime handler `name` ("" is the default); an unknown one is refused naming the
    /// ones this node has.
    pub fn handler(&self, name: &str) -> crate::error::Result<&Handler> {
        self.handlers
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .handlers
                    .iter()
                    .map(|h| format!("{:?}", h.name))
                    .collect();
                crate::error::Error::InvalidArgument(format!(
                    "runtime_handler {name:?} is unknown: this node has {}",
                    known.join(", ")
                ))
            })
    }
}

/// containerd's `image_pull_progress_timeout` default.
const DEFAULT_PULL_PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A Go duration as containerd's config takes it: "5m", "1m30s", "250ms", "0".
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (like \"5m\", \"1m30s\", \"250ms\")");
    let t = s.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = t;
    let mut total = std::time::Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(std::time::Duration::try_from_secs_f64(n * secs).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_concurrent_starts_defaults_to_one_more_than_the_cpus_and_is_bounded() {
        let cfg = Config::merge(Flags::default(), FileConfig::default()).unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(cfg.max_concurrent_starts, cpus + 1);
        for (text, want) in [
            ("max_concurrent_starts = 0\n", 0),
            ("max_concurrent_starts = 3\n", 3),
        ] {
            let file: FileConfig = toml::from_str(text).unwrap();
            assert_eq!(
                Config::merge(Flags::default(), file)
                    .unwrap()
                    .max_concurrent_starts,
                want
            );
        }
        let file: FileConfig = toml::from_str("max_concurrent_starts = 5000\n").unwrap();
        let err = Config::merge(Flags::default(), file)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_concurrent_starts") && err.contains("5000"),
            "{err}"
        );
    }

    #[test]
    fn runtime_handlers_take_the_daemons_defaults_and_their_own_keys() {
        let file: FileConfig = toml::from_str(
            "unset_seccomp_profile = \"RuntimeDefault\"\n[runtimes.plain]\n\
             [runtimes.loose]\nunset_seccomp_profile = \"Unconfined\"\n\
             allowed_annotations = [\"kubernetes.io/*\"]\n",
        )
        .unwrap();
        let cfg = Config::merge(Flags::default(), file).unwrap();
        let names: Vec<&str> = cfg.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["", "loose", "plain"]);
        let plain = cfg.handler("plain").unwrap();
        assert_eq!(plain.unset_seccomp_profile, UnsetSeccomp::RuntimeDefault);
        assert!(plain.allows_annotation("anything"));
        let loose = cfg.handler("loose").unwrap();
        assert_eq!(loose.unset_seccomp_profile, UnsetSeccomp::Unconfined);
        assert!(loose.allows_annotation("kubernetes.io/ingress-bandwidth"));
        assert!(!loose.allows_annotation("seccomp.security.alpha.kubernetes.io/pod"));
        let err = cfg.handler("kata").unwrap_err().to_string();
        assert!(
            err.contains("\"kata\"") && err.contains("\"plain\""),
            "{err}"
        );
        for bad in [
            "[runtimes.UPPER]\n",
            "[runtimes.x]\nallowed_annotations = [\"a*b\"]\n",
            "[runtimes.x]\nbogus = 1\n",
        ] {
            let parsed: Result<FileConfig, _> = toml::from_str(bad);
            let failed = match parsed {
                Err(_) => true,
                Ok(f) => Config::merge(Flags::default(), f).is_err(),
            };
            assert!(failed, "{bad}");
        }
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "m", "5x", "1e400h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            r#"
            root = "/srv/skiff"
            listen = "/tmp/file.sock"
            insecure_registries = ["a:5000"]
            [registry_mirrors]
            "docker.io" = ["mirror:5000"]
            "#,
        )
        .unwrap();
        let flags = Flags {
            listen: Some("/tmp/flag.sock".into()),
            insecure_registry: vec!["b".into()],
            ..Default::default()
        };
        let cfg = Config::merge(flags, file).unwrap();
        assert_eq!(cfg.listen, PathBuf::from("/tmp/flag.sock"));
        assert_eq!(cfg.root, PathBuf::from("/srv/skiff"));
        assert_eq!(cfg.run_root, PathBuf::from(DEFAULT_RUN_ROOT));
        assert!(cfg.is_insecure("a:5000") && cfg.is_insecure("b"));
        assert_eq!(cfg.registry_mirrors["docker.io"], vec!["mirror:5000"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse_file(Path::new("/x.toml"), "rot = \"/a\"").unwrap_err();
        assert!(err.to_string().contains("/x.toml") && err.to_string().contains("rot"));
        let file = FileConfig {
            insecure_registries: vec!["http://bad/".into()],
            ..Default::default()
        };
        let err = Config::merge(Flags::default(), file).unwrap_err();
        assert!(err.to_string().contains("insecure_registries"), "{err}");
        let flags = Flags {
            root: Some("relative".into()),
            ..Default::default()
        };
        let err = Config::merge(flags, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error_default_missing_is_not() {
        let flags = Flags {
            config: Some("/nonexistent/skiff.toml".into()),
            ..Default::default()
        };
        let err = Config::load(flags).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/skiff.toml"));
    }
}
