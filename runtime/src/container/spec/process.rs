//! The spec's `process`: the command line and environment (Docker's rules over the image's
//! config), the capability sets, and the default rlimits.

use std::collections::HashSet;
use std::str::FromStr;

use oci_spec::runtime::Capability;
use skiff_proto::cri::ContainerConfig;

use super::ImageConfig;
use crate::error::{Error, Result};

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

pub(super) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// `add_capabilities` (every capability for `ALL`), checked.
pub(super) fn added_capabilities(cfg: &ContainerConfig) -> Result<HashSet<Capability>> {
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

pub(super) fn all_capabilities() -> HashSet<Capability> {
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
