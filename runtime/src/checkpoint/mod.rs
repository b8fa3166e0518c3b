//! Checkpoints with CRIU: `CheckpointContainer` dumps a running container (it runs on) and
//! writes the archive kubelet's checkpoint API hands out, in the layout CRI-O, containerd and
//! `checkpointctl` use: `checkpoint/` (CRIU's images), `config.dump`, `spec.dump`,
//! `rootfs-diff.tar` (what the container changed in its rootfs), `deleted.files`,
//! `bind.mounts`, `dump.log`, `stats-dump` and the container's log (`container.log`).
//!
//! The container's pod namespaces are the pod's, not the container's: the network namespace is
//! declared external, as are bind mounts from outside the container (its volumes, /etc/hosts,
//! /dev/shm), so that the dump does not carry the node with it.
//!
//! Restoring: a CreateContainer whose image is such an archive (`restore`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

pub mod restore;

/// The oldest CRIU that works on the kernels skiff supports (Debian 12's 3.17 fails its own
/// `criu check` on 6.x kernels).
pub const MIN_VERSION: (u32, u32) = (4, 0);

/// How long a dump may take unless the request says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The CRIU skiffd found at start: its version, or why it cannot be used.
pub fn probe(binary: &Path) -> std::result::Result<String, String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("criu ({}): {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            format!(
                "criu ({}): no version in {:?}",
                binary.display(),
                text.trim()
            )
        })?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "criu {version} ({}) is older than {}.{}, the oldest that works on this kernel",
            binary.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(version)
}

/// Where a checkpoint is put together before its archive is written.
pub fn work_dir(root: &Path, container_id: &str) -> PathBuf {
    root.join("checkpoints").join(format!("tmp-{container_id}"))
}

/// Removes the work directories of checkpoints a crash interrupted.
pub fn remove_unfinished(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root.join("checkpoints")) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with("tmp-") {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "removing an unfinished checkpoint");
            }
        }
    }
}

/// What one dump needs.
pub struct Dump<'a> {
    pub criu: &'a Path,
    /// Host PID of the container's main process.
    pub pid: i32,
    /// Where CRIU writes its images.
    pub images: &'a Path,
    pub tty: bool,
    pub timeout: Option<Duration>,
    /// Destinations of the container's bind mounts: declared external under their destination
    /// (as runc does), so a restore maps each to wherever its source is then.
    pub binds: Vec<String>,
}

/// The destinations of the bind mounts of an OCI spec (`config.json`).
pub fn bind_destinations(spec: &serde_json::Value) -> Vec<String> {
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["type"] == "bind"
                || m["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| m["destination"].as_str().map(str::to_string))
        .collect()
}

/// Runs `criu dump`, leaving the container running. A failure carries the error lines of
/// CRIU's log.
pub async fn dump(d: &Dump<'_>) -> Result<()> {
    std::fs::create_dir_all(d.images)
        .map_err(|e| Error::io(format!("creating {}", d.images.display()), e))?;
    let netns = std::fs::read_link(format!("/proc/{}/ns/net", d.pid)).map_err(|e| {
        Error::io(
            format!("container process {}: its network namespace", d.pid),
            e,
        )
    })?;
    let ino = netns
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .to_string();
    let mut cmd = tokio::process::Command::new(d.criu);
    cmd.arg("dump")
        .arg("-t")
        .arg(d.pid.to_string())
        .arg("-D")
        .arg(d.images)
        .args(["-o", "dump.log", "-v4"])
        .args(["--leave-running", "--tcp-established", "--file-locks"])
        .arg("--manage-cgroups=ignore")
        // Bind mounts from outside the container, and their propagation from the pod's: the
        // spec's by destination; anything else found (none expected) by its source path.
        .args(["--external", "mnt[]", "--enable-external-masters"])
        // The pod's network namespace stays the pod's.
        .arg("--external")
        .arg(format!("net[{ino}]:extNetNs"))
        .kill_on_drop(true);
    for dest in &d.binds {
        cmd.arg("--external").arg(format!("mnt[{dest}]:{dest}"));
    }
    if d.tty {
        cmd.arg("--shell-job");
    }
    let limit = d.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| Error::DeadlineExceeded(format!("checkpoint: criu dump ran over {limit:?}")))?
        .map_err(|e| Error::Internal(format!("running {}: {e}", d.criu.display())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "checkpoint: criu dump failed ({}): {}",
        out.status,
        skiff_shim::criu::log_errors(&d.images.join("dump.log"))
    )))
}

/// The container's changes to its rootfs, from its overlay upper directory: a tar of what it
/// added or changed, and the paths it deleted (overlay whiteouts: 0:0 character devices).
pub fn rootfs_diff(upper: &Path, tar_path: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::FileTypeExt;
    let f = std::fs::File::create(tar_path)
        .map_err(|e| Error::io(format!("creating {}", tar_path.display()), e))?;
    let mut b = tar::Builder::new(f);
    b.follow_symlinks(false);
    let mut deleted = vec![];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let ft = e
                .file_type()
                .map_err(|err| Error::io(format!("{}", e.path().display()), err))?;
            if ft.is_char_device() {
                use std::os::unix::fs::MetadataExt;
                if e.metadata().map(|m| m.rdev() == 0).unwrap_or(false) {
                    deleted.push(format!("/{}", r.display()));
                    continue;
                }
            }
            b.append_path_with_name(e.path(), &r)
                .map_err(|err| Error::io(format!("archiving {}", e.path().display()), err))?;
            if ft.is_dir() {
                stack.push(r);
            }
        }
    }
    b.finish()
        .map_err(|e| Error::io(format!("writing {}", tar_path.display()), e))?;
    deleted.sort();
    Ok(deleted)
}

/// Writes `dir`'s contents as an uncompressed tar at `location` (mode 0600), atomically.
pub fn write_archive(dir: &Path, location: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = location.parent().unwrap_or(Path::new("/"));
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        location
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(format!("location: creating {}", tmp.display()), e))?;
    let mut b = tar::Builder::new(f);
    b.follow_symlinks(false);
    let written = b
        .append_dir_all(".", dir)
        .and_then(|_| b.into_inner())
        .and_then(|f| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("location: writing {}", tmp.display()), e));
    }
    std::fs::rename(&tmp, location).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("location: {}", location.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_criu(dir: &Path, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("criu");
        std::fs::write(&p, format!("#!/bin/sh\necho 'Version: {version}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn criu_versions_are_checked() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(probe(&fake_criu(d.path(), "4.1.1")).unwrap(), "4.1.1");
        let old = probe(&fake_criu(d.path(), "3.17.1")).unwrap_err();
        assert!(old.contains("3.17.1") && old.contains("4.0"), "{old}");
        let none = probe(&d.path().join("nope")).unwrap_err();
        assert!(none.contains("nope"), "{none}");
    }

    #[test]
    fn rootfs_diff_lists_changes_and_deletions() {
        let d = tempfile::tempdir().unwrap();
        let upper = d.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/new"), b"hello").unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let tar_path = d.path().join("rootfs-diff.tar");
        let deleted = rootfs_diff(&upper, &tar_path).unwrap();
        assert_eq!(deleted, vec!["/etc/gone".to_string()]);
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&tar_path).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["etc", "etc/new"]);

        // The archive: mode 0600, every file under its own name.
        let content = d.path().join("content");
        std::fs::create_dir_all(content.join("checkpoint")).unwrap();
        std::fs::write(content.join("checkpoint/inventory.img"), b"x").unwrap();
        std::fs::write(content.join("config.dump"), b"{}").unwrap();
        let out = d.path().join("out.tar");
        write_archive(&content, &out).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<String> = tar::Archive::new(std::fs::File::open(&out).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("checkpoint/inventory.img")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.ends_with("config.dump")),
            "{names:?}"
        );
    }
}
