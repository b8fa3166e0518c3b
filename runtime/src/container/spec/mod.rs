//! The OCI runtime spec (`config.json`) of a container, from its image config and the CRI
//! ContainerConfig: what skiffd decides, written for the shim to make so.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use skiff_proto::cri::{ContainerConfig, NamespaceMode};
use skiff_shim::api::{NsMode, PidMode, SHM_DIR};

use super::user::ResolvedUser;
use crate::error::{Error, Result};
use crate::pod::files;

mod devices;
mod mounts;
mod process;

pub use devices::devices;
pub use mounts::user_mounts;
use mounts::{mount, oci_idmaps};
use process::{added_capabilities, all_capabilities};
pub use process::{
    ambient_capabilities, capabilities, command, default_rlimits, env, DEFAULT_CAPS,
};

pub const DEFAULT_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the pod contributes to a container's spec.
pub struct PodContext<'a> {
    pub run_dir: &'a Path,
    pub network: NsMode,
    pub ipc: NsMode,
    pub pid: PidMode,
    pub hostname: &'a str,
    /// The pod's own user namespace, when it has one.
    pub userns: Option<&'a skiff_shim::idmap::Maps>,
}

/// The image config fields a container inherits.
#[derive(Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
}

impl ImageConfig {
    pub fn from_json(v: &serde_json::Value) -> ImageConfig {
        let c = &v["config"];
        let strings = |k: &str| -> Vec<String> {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        ImageConfig {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: c["WorkingDir"].as_str().unwrap_or("").to_string(),
        }
    }
}

/// Everything needed for one container's spec.
pub struct SpecInput<'a> {
    pub cfg: &'a ContainerConfig,
    pub image: &'a ImageConfig,
    pub pod: &'a PodContext<'a>,
    pub user: &'a ResolvedUser,
    pub rootfs: PathBuf,
    pub cgroup: String,
    pub user_mounts: Vec<Mount>,
    pub oom_score_adj: Option<i32>,
}

pub fn build(input: SpecInput<'_>) -> Result<Spec> {
    let SpecInput {
        cfg,
        image,
        pod,
        user,
        rootfs,
        cgroup,
        user_mounts,
        oom_score_adj,
    } = input;
    let sc = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let apparmor = super::apparmor::profile(&sc)?;
    let privileged = sc.privileged;
    // A privileged container without options of its own is not confined by SELinux either.
    let selinux = if privileged && sc.selinux_options.is_none() {
        None
    } else {
        super::selinux::labels(sc.selinux_options.as_ref())?
    };
    let caps = if privileged {
        all_capabilities()
    } else {
        capabilities(cfg)?
    };
    let ambient = ambient_capabilities(cfg)?;
    // Every set is given explicitly: oci-spec's defaults would add KILL, NET_BIND_SERVICE and
    // AUDIT_WRITE to the inheritable and ambient sets. Ambient capabilities must also be
    // inheritable (and permitted) for the kernel to keep them.
    let mut bounding = caps.clone();
    bounding.extend(ambient.iter().copied());
    // As api.proto says: added capabilities are inheritable too, the defaults are not.
    let mut inheritable: HashSet<Capability> = added_capabilities(cfg)?
        .into_iter()
        .filter(|c| caps.contains(c))
        .collect();
    inheritable.extend(ambient.iter().copied());
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(bounding.clone())
        .effective(bounding.clone())
        .permitted(bounding)
        .inheritable(inheritable)
        .ambient(ambient)
        .build()
        .map_err(|e| Error::Internal(format!("capabilities: {e}")))?;
    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "working_dir: {cwd:?} is not absolute"
        )));
    }
    let process = ProcessBuilder::default()
        .terminal(cfg.tty)
        .args(command(cfg, image)?)
        .env(env(cfg, image))
        .cwd(PathBuf::from(cwd))
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.groups.clone())
                .build()
                .map_err(|e| Error::Internal(format!("user: {e}")))?,
        )
        .capabilities(capabilities)
        .no_new_privileges(sc.no_new_privs)
        .rlimits(default_rlimits()?)
        .build()
        .map_err(|e| Error::Internal(format!("process: {e}")))?;
    let mut process = process;
    process.set_oom_score_adj(oom_score_adj);
    process.set_apparmor_profile(apparmor);
    process.set_selinux_label(selinux.as_ref().map(|l| l.process.clone()));
    // The container's /dev (a tmpfs of its own) carries its file label.
    let dev_context = selinux.as_ref().map(|l| format!("context=\"{}\"", l.mount));
    let mut dev_opts = vec!["nosuid", "strictatime", "mode=755", "size=65536k"];
    dev_opts.extend(dev_context.as_deref());

    let run = pod.run_dir;
    let path = |name: &str| run.join(name).display().to_string();
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &dev_opts)?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            if privileged {
                &["nosuid", "noexec", "nodev"]
            } else {
                &["nosuid", "noexec", "nodev", "ro"]
            },
        )?,
    ];
    let shm = if pod.ipc == NsMode::Pod {
        path(SHM_DIR)
    } else {
        "/dev/shm".to_string()
    };
    mounts.push(mount(
        "/dev/shm",
        "bind",
        &shm,
        &["rbind", "nosuid", "nodev", "noexec"],
    )?);
    let volume_paths: HashSet<String> = user_mounts
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    for (dest, name) in [
        ("/etc/hosts", files::HOSTS),
        ("/etc/resolv.conf", files::RESOLV_CONF),
        ("/etc/hostname", files::HOSTNAME),
    ] {
        // kubelet mounts its own /etc/hosts for most pods: the request's volume wins.
        if !volume_paths.contains(dest) {
            // Not idmapped in a pod with a user namespace: the files stay the host root's,
            // readable but not writable from inside.
            mounts.push(mount(dest, "bind", &path(name), &["rbind", "rprivate"])?);
        }
    }
    mounts.extend(user_mounts);

    let ns = |t: LinuxNamespaceType, p: Option<PathBuf>| {
        let b = LinuxNamespaceBuilder::default().typ(t);
        match p {
            Some(p) => b.path(p).build(),
            None => b.build(),
        }
        .map_err(|e| Error::Internal(format!("namespace: {e}")))
    };
    let pinned = |name: &str| Some(run.join("ns").join(name));
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)?];
    if pod.userns.is_some() {
        namespaces.push(ns(LinuxNamespaceType::User, pinned("user"))?);
    }
    if pod.network == NsMode::Pod {
        namespaces.push(ns(LinuxNamespaceType::Network, pinned("net"))?);
        namespaces.push(ns(LinuxNamespaceType::Uts, pinned("uts"))?);
    }
    if pod.ipc == NsMode::Pod {
        namespaces.push(ns(LinuxNamespaceType::Ipc, pinned("ipc"))?);
    }
    let container_pid = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.pid());
    match (pod.pid, container_pid) {
        (_, Some(NamespaceMode::Target)) => {
            return Err(Error::InvalidArgument(
                "linux.security_context.namespace_options.pid: TARGET is not supported by this \
                 skiff yet"
                    .into(),
            ))
        }
        (PidMode::Pod, _) => namespaces.push(ns(LinuxNamespaceType::Pid, pinned("pid"))?),
        (PidMode::Container, _) => namespaces.push(ns(LinuxNamespaceType::Pid, None)?),
        (PidMode::Node, _) => {}
    }
    // A privileged container sees everything unless paths are given explicitly. kubelet sends
    // its default lists for procMount Default and empty ones for Unmasked, which it allows only
    // in pods with a user namespace: there, two empty lists are an unmasked /proc; elsewhere
    // (crictl, tests) empty lists get the defaults.
    let unmasked =
        pod.userns.is_some() && sc.masked_paths.is_empty() && sc.readonly_paths.is_empty();
    let masked: Vec<String> = if !sc.masked_paths.is_empty() {
        sc.masked_paths.clone()
    } else if privileged || unmasked {
        vec![]
    } else {
        DEFAULT_MASKED.iter().map(|s| s.to_string()).collect()
    };
    let readonly: Vec<String> = if !sc.readonly_paths.is_empty() {
        sc.readonly_paths.clone()
    } else if privileged || unmasked {
        vec![]
    } else {
        DEFAULT_READONLY.iter().map(|s| s.to_string()).collect()
    };
    let (devices, device_rules) = devices(cfg, privileged)?;
    let (uid_mappings, gid_mappings) = match pod.userns {
        Some(m) => (oci_idmaps(&m.uids)?, oci_idmaps(&m.gids)?),
        None => (vec![], vec![]),
    };
    let linux = LinuxBuilder::default()
        .uid_mappings(uid_mappings)
        .gid_mappings(gid_mappings)
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroup))
        .masked_paths(masked)
        .readonly_paths(readonly)
        .devices(devices)
        .resources(
            oci_spec::runtime::LinuxResourcesBuilder::default()
                .devices(device_rules)
                .build()
                .map_err(|e| Error::Internal(format!("device rules: {e}")))?,
        )
        .build()
        .map_err(|e| Error::Internal(format!("linux: {e}")))?;
    let mut linux = linux;
    linux.set_mount_label(selinux.map(|l| l.mount));
    let annotations: HashMap<String, String> = cfg.annotations.clone().into_iter().collect();
    SpecBuilder::default()
        .version("1.2.0")
        .process(process)
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(sc.readonly_rootfs)
                .build()
                .map_err(|e| Error::Internal(format!("root: {e}")))?,
        )
        .hostname(pod.hostname.to_string())
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(|e| Error::Internal(format!("spec: {e}")))
}
