//! User namespaces on this node: the start-up probe that decides whether pods with
//! `hostUsers: false` can run here, and the chown fallback (`shift`). The pod's namespaces are made by its shim and the idmapped
//! mounts by container init (`skiff_shim::idmap`); skiffd validates the mappings
//! (`pod::lifecycle`) and writes them into the OCI spec (`container::spec`).

pub mod shift;

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use skiff_shim::idmap::{self, IdRange, Maps};

/// Whether idmapped mounts work where skiff needs them: the root dir (image layers, upper
/// dirs), the run root (pod files) and tmpfs. `Err` says what failed.
pub fn probe(root: &Path, run_root: &Path) -> Result<(), String> {
    // Ids far above any a node hands out: the namespace only exists for the probe.
    let range = IdRange {
        container: 0,
        host: 3_000_000_000,
        len: 65536,
    };
    let child = idmap::UsernsChild::spawn(
        &Maps {
            uids: vec![range],
            gids: vec![range],
        },
        0,
    )
    .map_err(|e| format!("creating a user namespace: {e}"))?;
    let ns = child
        .ns("user")
        .map_err(|e| format!("opening the user namespace: {e}"))?;
    for (what, dir) in [("root", root), ("run_root", run_root)] {
        idmap::clone_tree(dir, false, Some(&ns))
            .map_err(|e| format!("idmapped mount of {what} {}: {e}", dir.display()))?;
    }
    let tmp = run_root.join(".userns-probe");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let r = mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k"),
    )
    .map_err(|e| format!("mounting a tmpfs at {}: {e}", tmp.display()))
    .and_then(|_| {
        let r = idmap::clone_tree(&tmp, false, Some(&ns))
            .map(drop)
            .map_err(|e| format!("idmapped mount of a tmpfs: {e}"));
        let _ = umount2(&tmp, MntFlags::MNT_DETACH);
        r
    });
    let _ = std::fs::remove_dir(&tmp);
    r
}

/// A mount namespace holding nothing but an empty tmpfs, pinned at `<run_root>/mnt-empty`. A
/// pod's shim joins it (and then the pod's user namespace, if any) to make the pod's /dev/shm
/// in a mount namespace of its own: that namespace copies one mount instead of every mount of
/// the node.
pub fn empty_mount_ns(run_root: &Path) -> Result<std::path::PathBuf, String> {
    let pin = run_root.join("mnt-empty");
    let _ = umount2(&pin, MntFlags::MNT_DETACH);
    std::fs::File::create(&pin).map_err(|e| format!("creating {}: {e}", pin.display()))?;
    let dir = run_root.join(".mnt-empty-root");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let made = idmap::EmptyMountNs::spawn(&dir)
        .map_err(|e| format!("making an empty mount namespace: {e}"))
        .and_then(|child| {
            mount(
                Some(Path::new(&format!("/proc/{}/ns/mnt", child.pid()))),
                &pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                format!(
                    "pinning the empty mount namespace at {}: {e}",
                    pin.display()
                )
            })
        });
    let _ = std::fs::remove_dir(&dir);
    made.map(|_| pin)
}
