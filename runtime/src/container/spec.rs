//! The OCI runtime spec (`config.json`) of a container, from its image config and the CRI
//! ContainerConfig: what skiffd decides, written for the shim to make so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use skiff_proto::cri::{ContainerConfig, MountPropagation, NamespaceMode};
use skiff_shim::api::{NsMode, PidMode, SHM_DIR};

use super::image_volume;
use super::user::ResolvedUser;
use super::MountRecord;
use crate::error::{Error, Result};
use crate::pod::files;

/// The capabilities a container gets unless it asks otherwise (the set containerd and CRI-O use).
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

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

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// Docker's rule: the request's command replaces the entrypoint (and drops the image's cmd);
/// the request's args replace the image's cmd.
pub fn command(cfg: &ContainerConfig, img: &ImageConfig) -> Result<Vec<String>> {
    let mut out = if cfg.command.is_empty() {
        let mut v = img.entrypoint.clone();
        v.extend(if cfg.args.is_empty() {
            img.cmd.clone()
        } else {
            cfg.args.clone()
        });
        v
    } else {
        let mut v = cfg.command.clone();
        v.extend(cfg.args.clone());
        v
    };
    if out.is_empty() || out[0].is_empty() {
        return Err(Error::InvalidArgument(
            "config.command: no command given and the image has no entrypoint or cmd".into(),
        ));
    }
    out.shrink_to_fit();
    Ok(out)
}

/// Image env, then the request's envs (a key given again replaces the earlier value).
pub fn env(cfg: &ContainerConfig, img: &ImageConfig) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match out
            .iter()
            .position(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(i) => out[i] = kv,
            None => out.push(kv),
        }
    };
    for e in &img.env {
        set(e.clone());
    }
    for kv in &cfg.envs {
        // UTF-8 already checked by CreateContainer.
        set(format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)));
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

fn cap(name: &str, field: &str) -> Result<Capability> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    Capability::from_str(n)
        .map_err(|_| Error::InvalidArgument(format!("{field}: {name:?} is not a capability")))
}

/// The default set with the request's additions and drops (`ALL` in either).
pub fn capabilities(cfg: &ContainerConfig) -> Result<HashSet<Capability>> {
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let wanted = sc.and_then(|s| s.capabilities.as_ref());
    let mut set: HashSet<Capability> = DEFAULT_CAPS
        .iter()
        .map(|c| cap(c, "default"))
        .collect::<Result<_>>()?;
    if let Some(w) = wanted {
        let all_caps = || -> HashSet<Capability> { all_capabilities() };
        if w.add_capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL"))
        {
            set = all_caps();
        } else {
            for c in &w.add_capabilities {
                set.insert(cap(
                    c,
                    "linux.security_context.capabilities.add_capabilities",
                )?);
            }
        }
        if w.drop_capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL"))
        {
            set.clear();
            // "drop ALL, add X" keeps X.
            if !w
                .add_capabilities
                .iter()
                .any(|c| c.eq_ignore_ascii_case("ALL"))
            {
                for c in &w.add_capabilities {
                    set.insert(cap(
                        c,
                        "linux.security_context.capabilities.add_capabilities",
                    )?);
                }
            }
        } else {
            for c in &w.drop_capabilities {
                set.remove(&cap(
                    c,
                    "linux.security_context.capabilities.drop_capabilities",
                )?);
            }
        }
    }
    Ok(set)
}

/// The file-descriptor limit every container gets: 1048576 open files, or the node's own hard
/// limit when that is lower (raising a hard limit needs CAP_SYS_RESOURCE).
pub fn default_rlimits() -> Result<Vec<oci_spec::runtime::PosixRlimit>> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return Err(Error::io(
            "reading skiffd's RLIMIT_NOFILE",
            std::io::Error::last_os_error(),
        ));
    }
    let n = cur.rlim_max.min(1_048_576);
    let nofile = oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .hard(n)
        .soft(n)
        .build()
        .map_err(|e| Error::Internal(format!("rlimit: {e}")))?;
    Ok(vec![nofile])
}

/// Device nodes the container gets beyond the defaults, with the device cgroup rules that let
/// it use them: the request's `devices` (host device files), or every host device for a
/// privileged container (whose rule allows all).
pub fn devices(
    cfg: &ContainerConfig,
    privileged: bool,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut nodes = vec![];
    let mut rules = vec![];
    for (i, d) in cfg.devices.iter().enumerate() {
        let field = format!("devices[{i}]");
        if !d.container_path.starts_with('/') || d.container_path.split('/').any(|c| c == "..") {
            return Err(Error::InvalidArgument(format!(
                "{field}.container_path: {:?} is not an absolute path without ..",
                d.container_path
            )));
        }
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::InvalidArgument(format!(
                "{field}.permissions: {perms:?} is not made of r, w and m"
            )));
        }
        let (typ, major, minor, mode) = host_device(Path::new(&d.host_path))
            .map_err(|m| Error::InvalidArgument(format!("{field}.host_path: {m}")))?;
        nodes.push(device(&d.container_path, typ, major, minor, mode)?);
        rules.push(rule(Some(typ), Some(major), Some(minor), perms)?);
    }
    if privileged {
        for (path, typ, major, minor, mode) in host_devices() {
            nodes.push(device(&path, typ, major, minor, mode)?);
        }
        rules = vec![rule(None, None, None, "rwm")?];
    }
    Ok((nodes, rules))
}

fn device(
    path: &str,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    mode: u32,
) -> Result<LinuxDevice> {
    LinuxDeviceBuilder::default()
        .path(PathBuf::from(path))
        .typ(typ)
        .major(major)
        .minor(minor)
        .file_mode(mode)
        .uid(0u32)
        .gid(0u32)
        .build()
        .map_err(|e| Error::Internal(format!("device {path}: {e}")))
}

fn rule(
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access(access.to_string())
        .typ(typ.unwrap_or(LinuxDeviceType::A));
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build()
        .map_err(|e| Error::Internal(format!("device rule: {e}")))
}

/// (type, major, minor, permission bits) of a host device file.
fn host_device(p: &Path) -> std::result::Result<(LinuxDeviceType, i64, i64, u32), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let typ = if m.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if m.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(format!("{} is not a device", p.display()));
    };
    let rdev = m.rdev();
    Ok((
        typ,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
        m.mode() & 0o777,
    ))
}

/// Every device file under the host's /dev (not its pts, shm or mqueue).
fn host_devices() -> Vec<(String, LinuxDeviceType, i64, i64, u32)> {
    let mut out = vec![];
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if !matches!(p.to_str(), Some("/dev/pts" | "/dev/shm" | "/dev/mqueue")) {
                    stack.push(p);
                }
            } else if !ft.is_symlink() {
                if let Ok((typ, major, minor, mode)) = host_device(&p) {
                    out.push((p.display().to_string(), typ, major, minor, mode));
                }
            }
        }
    }
    out
}

/// `add_capabilities` (every capability for `ALL`), checked.
fn added_capabilities(cfg: &ContainerConfig) -> Result<HashSet<Capability>> {
    let wanted = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.capabilities.as_ref());
    let Some(w) = wanted else {
        return Ok(HashSet::new());
    };
    if w.add_capabilities
        .iter()
        .any(|c| c.eq_ignore_ascii_case("ALL"))
    {
        return Ok(all_capabilities());
    }
    w.add_capabilities
        .iter()
        .map(|c| cap(c, "linux.security_context.capabilities.add_capabilities"))
        .collect()
}

/// `add_ambient_capabilities`, checked.
pub fn ambient_capabilities(cfg: &ContainerConfig) -> Result<HashSet<Capability>> {
    let wanted = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.capabilities.as_ref());
    wanted
        .map(|w| {
            w.add_ambient_capabilities
                .iter()
                .map(|c| {
                    cap(
                        c,
                        "linux.security_context.capabilities.add_ambient_capabilities",
                    )
                })
                .collect()
        })
        .unwrap_or_else(|| Ok(HashSet::new()))
}

fn all_capabilities() -> HashSet<Capability> {
    // Every capability name the kernel's capability.h defines, that oci-spec knows.
    [
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "AUDIT_WRITE",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "IPC_LOCK",
        "IPC_OWNER",
        "KILL",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "MKNOD",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_RAW",
        "PERFMON",
        "SETGID",
        "SETFCAP",
        "SETPCAP",
        "SETUID",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_CHROOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "SYSLOG",
        "WAKE_ALARM",
    ]
    .iter()
    .filter_map(|c| Capability::from_str(c).ok())
    .collect()
}

fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ.to_string())
        .source(PathBuf::from(source))
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::Internal(format!("mount {dest}: {e}")))
}

/// The request's volumes, checked: absolute container paths, existing (or creatable) host paths.
/// Id ranges as the OCI spec writes them.
fn oci_idmaps(v: &[skiff_shim::idmap::IdRange]) -> Result<Vec<LinuxIdMapping>> {
    v.iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.container)
                .host_id(r.host)
                .size(r.len)
                .build()
                .map_err(|e| Error::Internal(format!("id mapping: {e}")))
        })
        .collect()
}

/// The request's volumes as OCI bind mounts. In a pod with its own user namespace (`userns`)
/// each is idmapped (option `ridmap`): with the mount's own `uidMappings`/`gidMappings` when
/// kubelet sends them, else with the pod's mapping. Image volumes (`images`, by index) are
/// bound read-only, nosuid, nodev and noexec from their stages in the bundle.
pub fn user_mounts(
    cfg: &ContainerConfig,
    userns: bool,
    images: &BTreeMap<usize, image_volume::Volume>,
) -> Result<(Vec<Mount>, Vec<MountRecord>)> {
    let mut mounts = vec![];
    let mut records = vec![];
    for (i, m) in cfg.mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "{field}.container_path: {:?} is not absolute",
                m.container_path
            )));
        }
        if m.container_path.split('/').any(|c| c == "..") {
            return Err(Error::InvalidArgument(format!(
                "{field}.container_path: {:?} contains ..",
                m.container_path
            )));
        }
        if let Some(v) = images.get(&i) {
            if m.propagation() != MountPropagation::PropagationPrivate {
                return Err(Error::InvalidArgument(format!(
                    "{field}.propagation: an image volume is mounted private"
                )));
            }
            let source = v.source.display().to_string();
            let opts = ["bind", "ro", "nosuid", "nodev", "noexec", "rprivate"];
            mounts.push(mount(&m.container_path, "bind", &source, &opts)?);
            records.push(MountRecord {
                container_path: m.container_path.clone(),
                host_path: String::new(),
                readonly: true,
                propagation: m.propagation,
                image: v.image_id.clone(),
                image_sub_path: m.image_sub_path.clone(),
            });
            continue;
        }
        if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
            return Err(Error::Internal(format!(
                "{field}.image: image volume was not prepared"
            )));
        }
        if !m.host_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "{field}.host_path: {:?} is not absolute",
                m.host_path
            )));
        }
        // As the CRI asks: recursive read-only needs readonly and private propagation.
        if m.recursive_read_only && !m.readonly {
            return Err(Error::InvalidArgument(format!(
                "{field}.recursive_read_only: requires readonly"
            )));
        }
        if m.recursive_read_only && m.propagation() != MountPropagation::PropagationPrivate {
            return Err(Error::InvalidArgument(format!(
                "{field}.recursive_read_only: requires private propagation"
            )));
        }
        let has_maps = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
        if has_maps && !userns {
            return Err(Error::InvalidArgument(format!(
                "{field}.uidMappings: idmapped volumes need a pod user namespace \
                 (userns_options mode POD)"
            )));
        }
        let maps = if has_maps {
            let (u, g) = (
                crate::pod::lifecycle::id_ranges(&m.uid_mappings),
                crate::pod::lifecycle::id_ranges(&m.gid_mappings),
            );
            skiff_shim::idmap::validate(&u, &format!("{field}.uidMappings"))
                .map_err(Error::InvalidArgument)?;
            skiff_shim::idmap::validate(&g, &format!("{field}.gidMappings"))
                .map_err(Error::InvalidArgument)?;
            Some((u, g))
        } else {
            None
        };
        let host = Path::new(&m.host_path);
        if std::fs::symlink_metadata(host).is_err() {
            // As containerd does: a missing host path becomes a directory.
            std::fs::create_dir_all(host).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{field}.host_path: {} does not exist and cannot be created: {e}",
                    m.host_path
                ))
            })?;
        }
        let prop = match m.propagation() {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
        };
        let mut opts = vec!["rbind", prop];
        if m.recursive_read_only {
            opts.push("rro");
        } else if m.readonly {
            opts.push("ro");
        }
        if userns {
            opts.push("ridmap");
        }
        let mut mnt = mount(&m.container_path, "bind", &m.host_path, &opts)?;
        if let Some((u, g)) = maps {
            mnt.set_uid_mappings(Some(oci_idmaps(&u)?));
            mnt.set_gid_mappings(Some(oci_idmaps(&g)?));
        }
        mounts.push(mnt);
        records.push(MountRecord {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            propagation: m.propagation,
            image: String::new(),
            image_sub_path: String::new(),
        });
    }
    Ok((mounts, records))
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

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::cri::{
        Capability as CriCaps, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
    };

    fn cfg_with_caps(add: &[&str], drop: &[&str]) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(CriCaps {
                        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn command_follows_docker_rules() {
        let img = ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["default".into()],
            ..Default::default()
        };
        let mut c = ContainerConfig::default();
        assert_eq!(command(&c, &img).unwrap(), vec!["/ep", "default"]);
        c.args = vec!["a".into()];
        assert_eq!(command(&c, &img).unwrap(), vec!["/ep", "a"]);
        c.command = vec!["/bin/x".into()];
        assert_eq!(command(&c, &img).unwrap(), vec!["/bin/x", "a"]);
        assert!(command(&ContainerConfig::default(), &ImageConfig::default()).is_err());
    }

    #[test]
    fn env_overrides_by_key() {
        let img = ImageConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            ..Default::default()
        };
        let c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "A".into(),
                    value: "2".into(),
                },
                KeyValue {
                    key: "B".into(),
                    value: "x=y".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(env(&c, &img), vec!["PATH=/bin", "A=2", "B=x=y"]);
    }

    #[test]
    fn capabilities_add_drop_all() {
        let d = capabilities(&ContainerConfig::default()).unwrap();
        assert_eq!(d.len(), DEFAULT_CAPS.len());
        let s = capabilities(&cfg_with_caps(&["SYS_ADMIN"], &["NET_RAW"])).unwrap();
        assert!(s.contains(&Capability::SysAdmin) && !s.contains(&Capability::NetRaw));
        let s = capabilities(&cfg_with_caps(&["NET_BIND_SERVICE"], &["ALL"])).unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![Capability::NetBindService]
        );
        let e = capabilities(&cfg_with_caps(&["NOT_A_CAP"], &[])).unwrap_err();
        assert!(e.to_string().contains("NOT_A_CAP"));
    }
}
