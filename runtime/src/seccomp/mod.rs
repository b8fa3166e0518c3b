//! Seccomp: which profile a container gets (`select`), the profile resolved for it into its
//! OCI spec (`profile`), and the filter compiled once per distinct resolved profile (`compile`,
//! cached here by content hash). The shim loads the compiled program as the last step before
//! exec.
//!
//! Selection, most specific first: the container's `seccomp` SecurityProfile, its deprecated
//! `seccomp_profile_path`, the legacy annotation `container.seccomp.security.alpha.kubernetes.io/
//! <name>`, then the same three at pod level (`seccomp.security.alpha.kubernetes.io/pod`), then
//! the `unset_seccomp_profile` config key (default `Unconfined`: api.proto's "Default: "", which
//! is identical with unconfined"). A privileged container runs unconfined whatever profile is
//! named, as api.proto says of `privileged` ("Seccomp restrictions are not applied").

pub mod compile;
pub mod profile;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};
use skiff_proto::cri::security_profile::ProfileType;
use skiff_proto::cri::{ContainerConfig, PodSandboxConfig, SecurityProfile};

use crate::config::{Config, Handler, UnsetSeccomp};
use crate::error::{Error, Result};

/// The profile skiff applies for RuntimeDefault (source: `profiles/runtime-default.json`).
pub const RUNTIME_DEFAULT: &[u8] = include_bytes!("../../../profiles/runtime-default.json");

pub const POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
pub const CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Which profile a container runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Unconfined,
    RuntimeDefault,
    Localhost(PathBuf),
}

/// A choice and the request field it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub choice: Choice,
    pub field: String,
}

fn from_profile(p: &SecurityProfile, field: &str) -> Result<Choice> {
    Ok(match p.profile_type() {
        ProfileType::RuntimeDefault => Choice::RuntimeDefault,
        ProfileType::Unconfined => Choice::Unconfined,
        ProfileType::Localhost => {
            let path = Path::new(&p.localhost_ref);
            if !path.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "{field}.localhost_ref: {:?} is not an absolute path",
                    p.localhost_ref
                )));
            }
            Choice::Localhost(path.to_path_buf())
        }
    })
}

/// The deprecated string form (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<path>`); `None` when empty. Relative localhost paths are under `root`.
fn from_string(s: &str, field: &str, root: &Path) -> Result<Option<Choice>> {
    Ok(Some(match s.trim() {
        "" => return Ok(None),
        "runtime/default" | "docker/default" => Choice::RuntimeDefault,
        "unconfined" => Choice::Unconfined,
        other => match other.strip_prefix("localhost/") {
            Some(p) if !p.is_empty() => {
                let p = Path::new(p);
                if p.components().any(|c| c == std::path::Component::ParentDir) {
                    return Err(Error::InvalidArgument(format!(
                        "{field}: {s:?} must not contain .."
                    )));
                }
                Choice::Localhost(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    root.join(p)
                })
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{field}: {s:?} is not runtime/default, docker/default, unconfined or \
                     localhost/<path>"
                )))
            }
        },
    }))
}

/// Picks the container's profile (see the module comment for the order).
// The deprecated string fields are read on purpose: older kubelets and crictl still send them.
#[allow(deprecated)]
pub fn select(
    cfg: &Config,
    handler: &Handler,
    pod: &PodSandboxConfig,
    c: &ContainerConfig,
) -> Result<Selected> {
    let root = &cfg.seccomp_root;
    let csc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let psc = pod.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    let pick = |choice, field: &str| Selected {
        choice,
        field: field.to_string(),
    };
    if csc.is_some_and(|s| s.privileged) {
        return Ok(pick(
            Choice::Unconfined,
            "linux.security_context.privileged",
        ));
    }
    if let Some(p) = csc.and_then(|s| s.seccomp.as_ref()) {
        let f = "linux.security_context.seccomp";
        return Ok(pick(from_profile(p, f)?, f));
    }
    if let Some(s) = csc.map(|s| s.seccomp_profile_path.as_str()) {
        let f = "linux.security_context.seccomp_profile_path";
        if let Some(c) = from_string(s, f, root)? {
            return Ok(pick(c, f));
        }
    }
    let key = format!("{CONTAINER_ANNOTATION_PREFIX}{name}");
    for (annotations, whose) in [(&c.annotations, "container"), (&pod.annotations, "pod")] {
        if let Some(v) = annotations.get(&key) {
            let f = format!("{whose} annotation {key}");
            if let Some(c) = from_string(v, &f, root)? {
                return Ok(pick(c, &f));
            }
        }
    }
    if let Some(p) = psc.and_then(|s| s.seccomp.as_ref()) {
        let f = "sandbox_config.linux.security_context.seccomp";
        return Ok(pick(from_profile(p, f)?, f));
    }
    if let Some(s) = psc.map(|s| s.seccomp_profile_path.as_str()) {
        let f = "sandbox_config.linux.security_context.seccomp_profile_path";
        if let Some(c) = from_string(s, f, root)? {
            return Ok(pick(c, f));
        }
    }
    if let Some(v) = pod.annotations.get(POD_ANNOTATION) {
        let f = format!("pod annotation {POD_ANNOTATION}");
        if let Some(c) = from_string(v, &f, root)? {
            return Ok(pick(c, &f));
        }
    }
    let choice = match handler.unset_seccomp_profile {
        UnsetSeccomp::Unconfined => Choice::Unconfined,
        UnsetSeccomp::RuntimeDefault => Choice::RuntimeDefault,
    };
    Ok(pick(choice, "unset_seccomp_profile"))
}

/// A container's filter: the resolved profile for its config.json and the compiled program.
pub struct Filter {
    pub spec: LinuxSeccomp,
    pub bpf: Arc<Vec<u8>>,
}

/// Compiled programs by the hash of the resolved profile: a hundred containers with one
/// profile and one capability set compile it once.
#[derive(Default)]
pub struct Seccomp {
    cache: Mutex<HashMap<[u8; 32], Arc<Vec<u8>>>>,
    /// Syscall names already reported as unknown: each is logged once.
    warned: Mutex<HashSet<String>>,
}

/// More distinct resolved profiles than this and the cache starts over.
const CACHE_MAX: usize = 512;

impl Seccomp {
    /// The filter for a container whose bounding capabilities are `caps`, or `None` for
    /// Unconfined.
    pub fn filter(&self, sel: &Selected, caps: &HashSet<String>) -> Result<Option<Filter>> {
        let (text, source) = match &sel.choice {
            Choice::Unconfined => return Ok(None),
            Choice::RuntimeDefault => (RUNTIME_DEFAULT.to_vec(), "RuntimeDefault".to_string()),
            Choice::Localhost(p) => (read_profile(p, &sel.field)?, p.display().to_string()),
        };
        let ctx = profile::Context {
            caps,
            arch: profile::native_arch_names(),
            kernel: profile::kernel_version(),
        };
        let spec = profile::resolve(&text, &ctx).map_err(|e| {
            Error::InvalidArgument(format!("{}: seccomp profile {source}: {e}", sel.field))
        })?;
        let canonical = serde_json::to_vec(&spec)
            .map_err(|e| Error::Internal(format!("encoding the seccomp profile: {e}")))?;
        let key: [u8; 32] = Sha256::digest(&canonical).into();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(bpf) = cached {
            tracing::debug!(profile = %source, hash = %hex::encode(&key[..6]), "seccomp filter from cache");
            return Ok(Some(Filter { spec, bpf }));
        }
        let t = Instant::now();
        let prog = compile::compile(&spec).map_err(|e| {
            Error::InvalidArgument(format!("{}: seccomp profile {source}: {e}", sel.field))
        })?;
        let fresh: Vec<String> = {
            let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            prog.skipped
                .iter()
                .filter(|n| w.insert(n.to_string()))
                .cloned()
                .collect()
        };
        if !fresh.is_empty() {
            tracing::warn!(profile = %source, skipped = ?fresh,
                "seccomp profile names syscalls this libseccomp or kernel does not know; their rules are skipped");
        }
        tracing::info!(profile = %source, hash = %hex::encode(&key[..6]),
            instructions = prog.bpf.len() / 8, micros = t.elapsed().as_micros() as u64,
            "seccomp filter compiled");
        let bpf = Arc::new(prog.bpf);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, bpf.clone());
        Ok(Some(Filter { spec, bpf }))
    }
}

/// Reads a Localhost profile; every failure names the file.
fn read_profile(p: &Path, field: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(p).map_err(|e| {
        Error::InvalidArgument(format!("{field}: seccomp profile {}: {e}", p.display()))
    })?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{field}: seccomp profile {}: not a regular file",
            p.display()
        )));
    }
    std::fs::read(p).map_err(|e| {
        Error::InvalidArgument(format!("{field}: seccomp profile {}: {e}", p.display()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(deprecated)]
    use super::*;
    use skiff_proto::cri::{
        ContainerMetadata, LinuxContainerConfig, LinuxContainerSecurityContext,
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    };

    fn cfg() -> Config {
        crate::config::Config::merge(Default::default(), Default::default()).unwrap()
    }

    fn container(sc: LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod_with(p: Option<SecurityProfile>, annotations: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    seccomp: p,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn localhost(p: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: p.into(),
        }
    }

    #[test]
    fn container_beats_pod_beats_default() {
        let c = cfg();
        let pod = pod_with(Some(localhost("/p.json")), &[]);
        let sel = select(
            &c,
            &c.handlers[0],
            &pod,
            &container(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::Unconfined as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(sel.choice, Choice::Unconfined);
        let sel = select(&c, &c.handlers[0], &pod, &container(Default::default())).unwrap();
        assert_eq!(sel.choice, Choice::Localhost("/p.json".into()));
        // Nothing named: unconfined by default, the operator's choice otherwise.
        let sel = select(
            &c,
            &c.handlers[0],
            &pod_with(None, &[]),
            &container(Default::default()),
        )
        .unwrap();
        assert_eq!(sel.choice, Choice::Unconfined);
        let mut rd = c.handlers[0].clone();
        rd.unset_seccomp_profile = UnsetSeccomp::RuntimeDefault;
        let sel = select(
            &c,
            &rd,
            &pod_with(None, &[]),
            &container(Default::default()),
        )
        .unwrap();
        assert_eq!(sel.choice, Choice::RuntimeDefault);
        // Privileged: unconfined whatever the container or the pod names.
        let privileged = container(LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(localhost("/c.json")),
            ..Default::default()
        });
        let sel = select(&c, &rd, &pod, &privileged).unwrap();
        assert_eq!(sel.choice, Choice::Unconfined);
    }

    #[test]
    fn legacy_fields_and_annotations() {
        let c = cfg();
        let pod = pod_with(
            None,
            &[
                (POD_ANNOTATION, "unconfined"),
                (
                    "container.seccomp.security.alpha.kubernetes.io/app",
                    "localhost/profiles/x.json",
                ),
            ],
        );
        let sel = select(&c, &c.handlers[0], &pod, &container(Default::default())).unwrap();
        assert_eq!(
            sel.choice,
            Choice::Localhost("/var/lib/kubelet/seccomp/profiles/x.json".into())
        );
        let pod = pod_with(None, &[(POD_ANNOTATION, "docker/default")]);
        let sel = select(&c, &c.handlers[0], &pod, &container(Default::default())).unwrap();
        assert_eq!(sel.choice, Choice::RuntimeDefault);
        let sel = select(
            &c,
            &c.handlers[0],
            &pod,
            &container(LinuxContainerSecurityContext {
                seccomp_profile_path: "localhost//abs/y.json".into(),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(sel.choice, Choice::Localhost("/abs/y.json".into()));
        let err = select(
            &c,
            &c.handlers[0],
            &pod,
            &container(LinuxContainerSecurityContext {
                seccomp_profile_path: "bogus".into(),
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert!(err.to_string().contains("seccomp_profile_path"), "{err}");
        let err = select(
            &c,
            &c.handlers[0],
            &pod,
            &container(LinuxContainerSecurityContext {
                seccomp: Some(localhost("relative.json")),
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert!(err.to_string().contains("localhost_ref"), "{err}");
    }

    #[test]
    fn runtime_default_compiles_once_per_capability_set() {
        let s = Seccomp::default();
        let sel = Selected {
            choice: Choice::RuntimeDefault,
            field: "x".into(),
        };
        let none = HashSet::new();
        let admin: HashSet<String> = ["CAP_SYS_ADMIN".to_string()].into();
        let a = s.filter(&sel, &none).unwrap().unwrap();
        let b = s.filter(&sel, &none).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.bpf, &b.bpf));
        let c = s.filter(&sel, &admin).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a.bpf, &c.bpf));
        assert_eq!(s.cache.lock().unwrap().len(), 2);
        // The kernel takes at most 4096 instructions.
        assert!(a.bpf.len() / 8 <= 4096, "{} instructions", a.bpf.len() / 8);
        eprintln!("RuntimeDefault: {} instructions", a.bpf.len() / 8);
    }
}
