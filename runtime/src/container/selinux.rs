//! SELinux labels, where the node runs SELinux: a container's process label is the policy's
//! container default (`lxc_contexts`, as containerd and CRI-O read it) with the request's
//! `selinux_options` (user, role, type, level) over it, and a level of its own (a random MCS
//! category pair) when the request names none and the policy has MCS; the files it mounts
//! (its /dev) get the matching file label. The label is checked against the loaded policy at
//! CreateContainer (an invalid one is refused naming the field) and set by the shim on exec.
//! On nodes without SELinux the options are accepted and have no effect, as with the other
//! runtimes.

use std::io::Write;
use std::path::Path;

use skiff_proto::cri::SeLinuxOption;

use crate::error::{Error, Result};

const SELINUXFS: &str = "/sys/fs/selinux";
/// What containers get when the policy names nothing (the common policies' container types).
const DEFAULT_PROCESS: &str = "system_u:system_r:container_t:s0";
const DEFAULT_FILE: &str = "system_u:object_r:container_file_t:s0";
const FIELD: &str = "linux.security_context.selinux_options";

/// A container's labels: its processes', and its mounts'.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub process: String,
    pub mount: String,
}

/// Whether SELinux is enabled on this node (its file system is mounted).
pub fn enabled() -> bool {
    Path::new(SELINUXFS).join("enforce").exists()
}

/// The container defaults of the node's policy: `process` and `file` from
/// `/etc/selinux/<SELINUXTYPE>/contexts/lxc_contexts`.
fn policy_defaults(etc: &Path) -> (String, String) {
    let kind = std::fs::read_to_string(etc.join("config"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.trim().strip_prefix("SELINUXTYPE="))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "default".into());
    let text =
        std::fs::read_to_string(etc.join(kind).join("contexts/lxc_contexts")).unwrap_or_default();
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    (
        get("process").unwrap_or_else(|| DEFAULT_PROCESS.into()),
        get("file").unwrap_or_else(|| DEFAULT_FILE.into()),
    )
}

/// `user:role:type:level` split in four (the level keeps its own colons).
fn parts(label: &str) -> Option<[String; 4]> {
    let mut it = label.splitn(4, ':');
    Some([
        it.next()?.to_string(),
        it.next()?.to_string(),
        it.next()?.to_string(),
        it.next()?.to_string(),
    ])
}

/// The labels for a container with `opts` over the policy's defaults; `mcs` gives a level when
/// none is asked for (None: keep the default's).
pub fn compose(
    defaults: (String, String),
    opts: &SeLinuxOption,
    mcs: Option<String>,
) -> Result<Labels> {
    for (name, v) in [
        ("user", &opts.user),
        ("role", &opts.role),
        ("type", &opts.r#type),
    ] {
        if v.contains(':') || v.chars().any(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "{FIELD}.{name}: {v:?} is not an SELinux {name}"
            )));
        }
    }
    if opts.level.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "{FIELD}.level: {:?} is not an SELinux level",
            opts.level
        )));
    }
    let bad_default = |l: &str| {
        Error::FailedPrecondition(format!("the policy's container label {l:?} is malformed"))
    };
    let mut p = parts(&defaults.0).ok_or_else(|| bad_default(&defaults.0))?;
    let mut f = parts(&defaults.1).ok_or_else(|| bad_default(&defaults.1))?;
    for (i, v) in [&opts.user, &opts.role, &opts.r#type]
        .into_iter()
        .enumerate()
    {
        if !v.is_empty() {
            p[i] = v.clone();
        }
    }
    let level = if !opts.level.is_empty() {
        Some(opts.level.clone())
    } else {
        mcs
    };
    if let Some(l) = level {
        p[3] = l.clone();
        f[3] = l;
    }
    Ok(Labels {
        process: p.join(":"),
        mount: f.join(":"),
    })
}

/// A random MCS level `s0:cA,cB` (A < B), as the other runtimes give each container.
fn random_mcs() -> String {
    loop {
        let [a, b]: [u16; 2] = rand::random();
        let (a, b) = (a % 1024, b % 1024);
        if a != b {
            return format!("s0:c{},c{}", a.min(b), a.max(b));
        }
    }
}

/// Asks the kernel whether `label` is a valid context of the loaded policy.
fn check(label: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(Path::new(SELINUXFS).join("context"))?;
    f.write_all(label.as_bytes())
}

/// The labels of a container asking for `opts` (None on nodes without SELinux).
pub fn labels(opts: Option<&SeLinuxOption>) -> Result<Option<Labels>> {
    if !enabled() {
        return Ok(None);
    }
    let opts = opts.cloned().unwrap_or_default();
    let mls = std::fs::read_to_string(Path::new(SELINUXFS).join("mls"))
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    let labels = compose(
        policy_defaults(Path::new("/etc/selinux")),
        &opts,
        (mls && opts.level.is_empty()).then(random_mcs),
    )?;
    for (what, l) in [("process", &labels.process), ("file", &labels.mount)] {
        if let Err(e) = check(l) {
            if opts == SeLinuxOption::default() {
                // A policy without container types: containers run with the runtime's label,
                // as they would without SELinux, rather than not at all.
                tracing::warn!(label = %l, error = %e,
                    "this node's SELinux policy has no valid container {what} label: containers are not labelled");
                return Ok(None);
            }
            return Err(Error::InvalidArgument(format!(
                "{FIELD}: the {what} label {l:?} is not valid in this node's SELinux policy: {e}"
            )));
        }
    }
    Ok(Some(labels))
}

/// Sets the SELinux label of `p` itself (a symlink's own, not its target's).
fn set_label(p: &Path, label: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path and attribute name, and the value's buffer with its length.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            c"security.selinux".as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Paths never relabelled for a volume (as the other runtimes refuse them): the node's own.
const NO_RELABEL: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
];

/// Gives the tree at `host` (a volume with `selinux_relabel`) the container's file `label`,
/// as `chcon -R` would. `field` names the mount in errors.
pub fn relabel(host: &Path, label: &str, field: &str) -> Result<()> {
    let clean = host.components().collect::<std::path::PathBuf>();
    if NO_RELABEL.iter().any(|p| Path::new(p) == clean) {
        return Err(Error::InvalidArgument(format!(
            "{field}.selinux_relabel: {} is the node's own and is not relabelled",
            host.display()
        )));
    }
    let mut stack = vec![host.to_path_buf()];
    while let Some(p) = stack.pop() {
        set_label(&p, label).map_err(|e| {
            Error::FailedPrecondition(format!(
                "{field}.selinux_relabel: labelling {}: {e}",
                p.display()
            ))
        })?;
        let meta = std::fs::symlink_metadata(&p)
            .map_err(|e| Error::io(format!("{field}: {}", p.display()), e))?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(&p)
                .map_err(|e| Error::io(format!("{field}: {}", p.display()), e))?;
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> (String, String) {
        (DEFAULT_PROCESS.into(), DEFAULT_FILE.into())
    }

    #[test]
    fn options_go_over_the_defaults() {
        let l = compose(defaults(), &SeLinuxOption::default(), None).unwrap();
        assert_eq!(l.process, DEFAULT_PROCESS);
        assert_eq!(l.mount, DEFAULT_FILE);
        let l = compose(
            defaults(),
            &SeLinuxOption {
                r#type: "spc_t".into(),
                level: "s0:c1,c2".into(),
                ..Default::default()
            },
            Some("s0:c7,c9".into()),
        )
        .unwrap();
        assert_eq!(l.process, "system_u:system_r:spc_t:s0:c1,c2");
        assert_eq!(l.mount, "system_u:object_r:container_file_t:s0:c1,c2");
        let l = compose(
            defaults(),
            &SeLinuxOption::default(),
            Some("s0:c7,c9".into()),
        )
        .unwrap();
        assert_eq!(l.process, "system_u:system_r:container_t:s0:c7,c9");
        let err = compose(
            defaults(),
            &SeLinuxOption {
                r#type: "a:b".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(m) if m.contains("selinux_options.type")));
        let m = random_mcs();
        let (a, b) = m.trim_start_matches("s0:c").split_once(",c").unwrap();
        assert!(a.parse::<u16>().unwrap() < b.parse::<u16>().unwrap(), "{m}");
    }

    #[test]
    fn policy_defaults_are_read_from_lxc_contexts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config"),
            "SELINUX=permissive\nSELINUXTYPE=mine\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("mine/contexts")).unwrap();
        std::fs::write(
            d.path().join("mine/contexts/lxc_contexts"),
            "process = \"system_u:system_r:svirt_lxc_net_t:s0\"\nfile = \"system_u:object_r:svirt_sandbox_file_t:s0\"\n",
        )
        .unwrap();
        assert_eq!(
            policy_defaults(d.path()),
            (
                "system_u:system_r:svirt_lxc_net_t:s0".to_string(),
                "system_u:object_r:svirt_sandbox_file_t:s0".to_string()
            )
        );
        assert_eq!(policy_defaults(&d.path().join("none")), defaults());
    }
}
