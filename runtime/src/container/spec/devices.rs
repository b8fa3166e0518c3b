//! The spec's `linux.devices` and `linux.resources.devices`: the request's device nodes (or every
//! host device for a privileged container) with the device cgroup rules that allow them.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};
use skiff_proto::cri::ContainerConfig;

use crate::error::{Error, Result};

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
