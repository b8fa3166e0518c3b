//! Resolving a container's user against its image: `/etc/passwd` and `/etc/group` are read from
//! the image's unpacked layers (top layer first, honouring whiteouts), as the rootfs will show
//! them, without mounting anything.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The uid, gid and supplementary groups a container runs with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Reads `path` (absolute inside the image) from layers given top first.
pub fn image_file(layers: &[PathBuf], path: &str) -> Option<String> {
    let rel = path.trim_start_matches('/');
    for layer in layers {
        let p = layer.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_char_device() && m.len() == 0 => return None, // whiteout
            Ok(m) if m.is_file() => return std::fs::read_to_string(&p).ok(),
            Ok(_) => return None,
            Err(_) => {
                if opaque_above(layer, rel) {
                    return None;
                }
            }
        }
    }
    None
}

/// Whether a directory on the way to `rel` in `layer` is opaque (hides the layers below).
fn opaque_above(layer: &Path, rel: &str) -> bool {
    let mut cur = layer.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur.push(part);
        if xattr_is_y(&cur, "trusted.overlay.opaque") {
            return true;
        }
    }
    false
}

fn xattr_is_y(p: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(cp), Ok(cn)) = (
        std::ffi::CString::new(p.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    let mut buf = [0u8; 2];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members)
fn groups(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves `user` (`uid`, `name`, `uid:gid`, `name:group`, or empty for root) with an
/// optional explicit group, plus extra groups, against the image's files.
pub fn resolve(
    layers: &[PathBuf],
    user: &str,
    group_override: Option<u32>,
    extra_groups: &[u32],
    image_groups: bool,
) -> Result<ResolvedUser> {
    let pw = image_file(layers, "/etc/passwd")
        .map(|t| passwd(&t))
        .unwrap_or_default();
    let gr = image_file(layers, "/etc/group")
        .map(|t| groups(&t))
        .unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid, name) = if u.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(n) = u.parse::<u32>() {
        match pw.iter().find(|e| e.uid == n) {
            Some(e) => (n, e.gid, Some(e.name.clone())),
            None => (n, 0, None),
        }
    } else {
        let e = pw.iter().find(|e| e.name == u).ok_or_else(|| {
            Error::InvalidArgument(format!("user {u:?} is not in the image's /etc/passwd"))
        })?;
        (e.uid, e.gid, Some(e.name.clone()))
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("group {g:?} is not in the image's /etc/group"))
                })?,
        };
    }
    if let Some(o) = group_override {
        gid = o;
    }
    let mut out_groups: Vec<u32> = vec![];
    // SupplementalGroupsPolicy Merge: the user's groups in the image's /etc/group count too;
    // Strict: only the ones the request names.
    if let Some(n) = name.as_ref().filter(|_| image_groups) {
        for (_, id, members) in &gr {
            if members.iter().any(|m| m == n) && *id != gid && !out_groups.contains(id) {
                out_groups.push(*id);
            }
        }
    }
    for g in extra_groups {
        if !out_groups.contains(g) {
            out_groups.push(*g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups: out_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_groups_and_whiteouts() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bottom.path().join("etc")).unwrap();
        std::fs::write(
            bottom.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            bottom.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\n",
        )
        .unwrap();
        let layers = vec![top.path().to_path_buf(), bottom.path().to_path_buf()];
        assert_eq!(
            resolve(&layers, "app", None, &[3000], true).unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                groups: vec![2000, 3000]
            }
        );
        assert_eq!(resolve(&layers, "", None, &[], true).unwrap().uid, 0);
        assert_eq!(
            resolve(&layers, "app", None, &[3000], false)
                .unwrap()
                .groups,
            vec![3000],
            "Strict leaves the image's group memberships out"
        );
        assert_eq!(
            resolve(&layers, "1000:extra", None, &[], true).unwrap().gid,
            2000
        );
        assert_eq!(
            resolve(&layers, "4242", Some(7), &[], true).unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 7,
                groups: vec![]
            }
        );
        assert!(resolve(&layers, "nobody-here", None, &[], true).is_err());
        // A whiteout in the top layer hides the file.
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        nix::sys::stat::mknod(
            &top.path().join("etc/passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        assert!(image_file(&layers, "/etc/passwd").is_none());
    }
}
