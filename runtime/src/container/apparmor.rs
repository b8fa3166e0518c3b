//! AppArmor for containers, as containerd applies it: where the node runs AppArmor, a container
//! gets the profile it names (`Localhost`, or the deprecated `localhost/<name>`: it must be
//! loaded), or `Unconfined`, or else — `RuntimeDefault`, or nothing named and not privileged —
//! skiff's own default profile `skiff-default`, which skiffd loads with `apparmor_parser` the
//! first time it is needed. The shim makes the profile the container process's on its exec.
//! AppArmor counts as available, as runc and containerd have it, only where the kernel enables
//! it *and* `apparmor_parser` is installed; where it is not, containers run without a profile
//! unless they name one (`Localhost`), which must be loaded all the same.

#[cfg(test)]
use std::path::Path;
use std::sync::OnceLock;

use skiff_proto::cri::security_profile::ProfileType;
use skiff_proto::cri::LinuxContainerSecurityContext;

use crate::error::{Error, Result};

/// The profile containers get by default.
pub const DEFAULT_PROFILE: &str = "skiff-default";

/// skiff's default profile: file, network and capability use as the container's other
/// confinement allows, with the kernel's knobs in /proc and /sys, mounting and tracing others
/// out of reach (the well-known container default).
const DEFAULT_PROFILE_TEXT: &str = r#"#include <tunables/global>

profile skiff-default flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (send,receive) peer=skiff-default,
  ptrace (trace,read,tracedby,readby) peer=skiff-default,

  deny @{PROC}/* w,
  deny @{PROC}/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}/** w,
  deny @{PROC}/sys/[^k]** w,
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,

  deny mount,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
}
"#;

/// Whether the kernel runs AppArmor.
pub fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|v| v.trim() == "Y")
        .unwrap_or(false)
}

/// Whether containers get AppArmor profiles on this node, or why not (probed once: the kernel's
/// switch and `apparmor_parser` on PATH).
pub fn availability() -> &'static std::result::Result<(), String> {
    static AVAILABLE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    AVAILABLE.get_or_init(|| availability_of(enabled(), std::env::var_os("PATH").as_deref()))
}

fn availability_of(
    kernel: bool,
    path: Option<&std::ffi::OsStr>,
) -> std::result::Result<(), String> {
    if !kernel {
        return Err("the kernel does not enable AppArmor".into());
    }
    let found = path
        .map(|p| std::env::split_paths(p).any(|d| d.join("apparmor_parser").is_file()))
        .unwrap_or(false);
    if !found {
        return Err(
            "the kernel enables AppArmor but apparmor_parser is not installed (the apparmor \
             package)"
                .into(),
        );
    }
    Ok(())
}

/// Whether a profile of that name is loaded.
fn loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .unwrap_or_default()
        .lines()
        .any(|l| l.rsplit_once(" (").map(|(n, _)| n) == Some(name))
}

/// Loads [`DEFAULT_PROFILE`] once (or finds it loaded).
fn ensure_default() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if loaded(DEFAULT_PROFILE) {
                return Ok(());
            }
            use std::io::Write;
            // The profile on stdin; -K: nothing cached on disk.
            let mut child = std::process::Command::new("apparmor_parser")
                .arg("-Kr")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| {
                    format!("running apparmor_parser: {e} (install the apparmor package)")
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(DEFAULT_PROFILE_TEXT.as_bytes())
                    .map_err(|e| format!("apparmor_parser: {e}"))?;
            }
            let out = child
                .wait_with_output()
                .map_err(|e| format!("apparmor_parser: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "apparmor_parser {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            tracing::info!(profile = DEFAULT_PROFILE, "AppArmor profile loaded");
            Ok(())
        })
        .clone()
}

/// The profile a container runs under, `None` for none (unconfined, or no AppArmor here).
#[allow(deprecated)] // apparmor_profile is deprecated in api.proto but still sent by older kubelets
pub fn profile(sc: &LinuxContainerSecurityContext) -> Result<Option<String>> {
    const FIELD: &str = "linux.security_context.apparmor";
    enum Want {
        Default,
        Unconfined,
        Named(String),
    }
    let want = match &sc.apparmor {
        Some(p) => match p.profile_type() {
            ProfileType::RuntimeDefault => Want::Default,
            ProfileType::Unconfined => Want::Unconfined,
            // kubelet sends the name; some clients (critest) keep the old `localhost/` prefix
            // in it, which containerd strips too.
            ProfileType::Localhost => Want::Named(
                p.localhost_ref
                    .strip_prefix("localhost/")
                    .unwrap_or(&p.localhost_ref)
                    .to_string(),
            ),
        },
        None => match sc.apparmor_profile.as_str() {
            "" if sc.privileged => Want::Unconfined,
            "" | "runtime/default" => Want::Default,
            "unconfined" => Want::Unconfined,
            other => match other.strip_prefix("localhost/") {
                Some(n) => Want::Named(n.to_string()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "{FIELD}_profile: {other:?} is not runtime/default, unconfined or \
                         localhost/<name>"
                    )))
                }
            },
        },
    };
    match want {
        Want::Unconfined => Ok(None),
        Want::Default if availability().is_err() => Ok(None),
        Want::Default => {
            ensure_default().map_err(|e| {
                Error::FailedPrecondition(format!(
                    "{FIELD}: the default profile {DEFAULT_PROFILE} could not be loaded: {e}"
                ))
            })?;
            Ok(Some(DEFAULT_PROFILE.to_string()))
        }
        Want::Named(name) => {
            if name.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{FIELD}.localhost_ref: is empty"
                )));
            }
            if !enabled() {
                return Err(Error::FailedPrecondition(format!(
                    "{FIELD}: profile {name:?} was asked for and AppArmor is not enabled on \
                     this node"
                )));
            }
            if !loaded(&name) {
                return Err(Error::FailedPrecondition(format!(
                    "{FIELD}: profile {name:?} is not loaded on this node (load it with \
                     apparmor_parser first)"
                )));
            }
            Ok(Some(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_only_with_the_kernel_and_the_parser() {
        let d = tempfile::tempdir().unwrap();
        let with = std::env::join_paths([Path::new("/nonexistent"), d.path()]).unwrap();
        assert!(availability_of(true, Some(&with))
            .unwrap_err()
            .contains("apparmor_parser"));
        std::fs::write(d.path().join("apparmor_parser"), "").unwrap();
        assert_eq!(availability_of(true, Some(&with)), Ok(()));
        assert!(availability_of(false, Some(&with))
            .unwrap_err()
            .contains("kernel"));
        assert!(availability_of(true, None).is_err());
    }
}
