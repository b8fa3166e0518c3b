//! The container's root filesystem, built inside its own mount namespace: the overlay of image
//! layers, the spec's mounts (each target resolved inside the rootfs, never through a symlink out
//! of it, and mounted through `/proc/self/fd/N`), the standard device nodes, `pivot_root`, masked
//! and read-only paths.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use oci_spec::runtime::{Mount, Spec};
use skiff_shim::api::Rootfs;
use skiff_shim::fsutil::{self, fd_path, mkdir_all_in_root, openat2_in_root};
use skiff_shim::idmap;

type R<T> = Result<T, String>;

/// Device nodes every container gets in its /dev: (name, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

fn root_path(spec: &Spec, bundle: &Path) -> R<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or("config.json has no root")?;
    Ok(if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    })
}

/// Host mount events reach the container (rslave) unless a volume asks for more (rshared: peer
/// groups copied from the host are kept so that volume stays in the host's group); and the
/// bundle gets a private mount of its own, since pivot_root refuses a shared parent. With
/// rshared, the mount holding the bundle is made private first (as runc does), so the bundle's
/// bind mount and the rootfs overlay on it never propagate to the host, where they would keep
/// the bundle busy after the container is gone.
fn isolate(mounts: &[Mount], bundle: &Path) -> R<()> {
    let rshared = mounts
        .iter()
        .any(|m| m.options().iter().flatten().any(|o| o == "rshared"));
    let prop = if rshared {
        MsFlags::MS_SHARED
    } else {
        MsFlags::MS_SLAVE
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | prop,
        None::<&str>,
    )
    .map_err(|e| format!("setting mount propagation of /: {e}"))?;
    if rshared {
        let parent = mount_point_of(bundle)?;
        mount(
            None::<&str>,
            &parent,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making {} private: {e}", parent.display()))?;
    }
    bind_self(bundle, MsFlags::MS_PRIVATE)
}

/// The mount point of the mount that holds `path` (the longest mount point in this mount
/// namespace that is `path` or one of its ancestors).
fn mount_point_of(path: &Path) -> R<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(fsutil::unescape_mountinfo(m)))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())
        .ok_or_else(|| format!("no mount holds {}", path.display()))
}

/// Builds the root filesystem in this process's (new) mount namespace and pivots into it.
/// `shm`: the spec's mount (by index) the pod's /dev/shm is attached at, as a detached copy
/// ([`skiff_shim::podshm`]). `before_pivot` runs once the mounts and devices are in place
/// (createContainer hooks).
pub fn setup(
    spec: &Spec,
    layers: &Rootfs,
    bundle: &Path,
    shm: Option<(usize, OwnedFd)>,
    before_pivot: impl FnOnce() -> R<()>,
) -> R<()> {
    let root = root_path(spec, bundle)?;
    let mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    isolate(&mounts, bundle)?;
    mount_overlay(layers, &root, None)?;
    stage_image_volumes(layers)?;
    let rootfd = fsutil::open_dir(&root).map_err(|e| format!("opening rootfs: {e}"))?;
    for (i, m) in mounts.iter().enumerate() {
        let r = match &shm {
            Some((at, tree)) if *at == i => attach_one(&rootfd, m, tree),
            _ => mount_one(&rootfd, m),
        };
        r.map_err(|e| format!("mount {}: {e}", m.destination().display()))?;
    }
    populate_dev(&rootfd)?;
    if let Some(linux) = spec.linux() {
        create_devices(&rootfd, linux.devices().as_deref().unwrap_or(&[]))?;
    }
    before_pivot()?;
    pivot(rootfd)?;
    finish(spec)
}

/// The root a CRIU restore needs (`criu restore --root`), in this process's (new) mount
/// namespace: the overlay of `layers` mounted at the spec's root, a mount point whose parent is
/// not overmounted, with the targets of the spec's bind mounts made, which CRIU does not
/// make. The restored container's mount namespace is built from it by CRIU; nothing stays
/// mounted on the host.
pub fn restore_root(spec: &Spec, layers: &Rootfs, bundle: &Path) -> R<PathBuf> {
    let root = root_path(spec, bundle)?;
    let mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    isolate(&mounts, bundle)?;
    mount_overlay(layers, &root, None)?;
    stage_image_volumes(layers)?;
    std::env::set_current_dir(bundle).map_err(|e| format!("entering {}: {e}", bundle.display()))?;
    let rootfd = fsutil::open_dir(&root).map_err(|e| format!("opening rootfs: {e}"))?;
    for m in mounts.iter().filter(|m| is_bind(m)) {
        let dest =
            fsutil::clean(m.destination()).ok_or("a bind mount's destination is the root")?;
        let source = m.source().clone().unwrap_or_default();
        let meta = std::fs::metadata(&source)
            .map_err(|e| format!("mount {}: source {}: {e}", dest.display(), source.display()))?;
        make_target(&rootfd, &dest, meta.is_dir())
            .map_err(|e| format!("mount {}: {e}", dest.display()))?;
    }
    Ok(root)
}

/// What a container in its pod's user namespace needs made by root on the host, as detached
/// mounts: the rootfs overlay (of idmapped layers), every bind mount's source (idmapped where
/// the spec asks) and the standard device nodes, which root in the user namespace could
/// neither make nor reach.
pub struct Prepared {
    overlay: OwnedFd,
    binds: std::collections::HashMap<usize, OwnedFd>,
    devices: Vec<(&'static str, OwnedFd)>,
}

/// The first half of [`setup_in_userns`], run as root on the host before joining the pod's
/// user namespace: makes the detached mounts and leaves the working directory at the rootfs
/// mount point, where the container's mount namespace, made next, will have its copy of it.
/// `shm`: the pod's /dev/shm, already a detached copy, for the spec's mount (by index) that
/// binds it.
pub fn prepare_userns(
    spec: &Spec,
    layers: &Rootfs,
    bundle: &Path,
    userns: &File,
    shm: Option<(usize, OwnedFd)>,
) -> R<Prepared> {
    let root = root_path(spec, bundle)?;
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    if layers.lower.is_empty() {
        return Err("image has no layers".into());
    }
    if !layers.image_volumes.is_empty() {
        return Err(
            "image volumes cannot be given to a container in a user namespace by this \
                    skiff"
                .into(),
        );
    }
    // Idmapped copies of the layers (the overlay holds them once made), unless skiffd gave
    // the container layers already owned by the pod's ids (its chown fallback). Overlayfs takes
    // a detached (open_tree) mount as a layer only from Linux 6.15 on, so each copy is attached
    // first, under the bundle, in a mount namespace of this process's own (a slave of the
    // host's: nothing mounted here reaches the host). The container's mount namespace, made
    // later, is a copy of this one; pivot_root leaves these mounts behind.
    let mut lower = vec![];
    if layers.idmap {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("a mount namespace for the idmapped layers: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| format!("setting mount propagation of /: {e}"))?;
        let base = bundle.join("idmapped-layers");
        for (i, l) in layers.lower.iter().enumerate() {
            let p = layers.layers_dir.join(l);
            let what = |e: std::io::Error| format!("idmapping layer {}: {e}", p.display());
            let t = idmap::clone_tree(&p, false, Some(userns)).map_err(what)?;
            let at = base.join(i.to_string());
            std::fs::create_dir_all(&at).map_err(what)?;
            let target = fsutil::open_dir(&at).map_err(what)?;
            idmap::attach(&t, &target).map_err(what)?;
            lower.push(at);
        }
    } else {
        lower.extend(layers.lower.iter().map(|l| layers.layers_dir.join(l)));
    }
    let overlay = idmap::overlay_tree(&lower, Some((&layers.upper, &layers.work)))
        .map_err(|e| format!("mounting the overlay rootfs: {e}"))?;
    let mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    let mut binds: std::collections::HashMap<usize, OwnedFd> = shm.into_iter().collect();
    for (i, m) in mounts.iter().enumerate() {
        let o = parse_opts(m);
        if !o.bind || binds.contains_key(&i) {
            continue;
        }
        let source = m.source().clone().unwrap_or_default();
        let what = || format!("mount {} ({})", m.destination().display(), source.display());
        // A mount's own mappings get a user namespace of their own; otherwise the pod's.
        let own = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) if o.idmap => Some(
                idmap::UsernsChild::spawn(&idmap::Maps::from_oci(u, g), 0)
                    .and_then(|c| c.ns("user"))
                    .map_err(|e| format!("{}: a user namespace for its mappings: {e}", what()))?,
            ),
            _ => None,
        };
        let ns = match (&own, o.idmap) {
            (Some(f), _) => Some(f),
            (None, true) => Some(userns),
            (None, false) => None,
        };
        let tree = idmap::clone_tree(&source, o.flags.contains(MsFlags::MS_REC), ns).map_err(
            |e| match (ns, e.raw_os_error()) {
                (Some(_), Some(libc::EINVAL | libc::EPERM | libc::EOPNOTSUPP)) => format!(
                    "{}: the host filesystem cannot be idmapped ({e}); the container's root \
                     would not own its files",
                    what()
                ),
                _ => format!("{}: {e}", what()),
            },
        )?;
        binds.insert(i, tree);
    }
    if let Some(linux) = spec.linux() {
        if let Some(d) = linux.devices().iter().flatten().next() {
            return Err(format!(
                "device {}: devices cannot be given to a container in a user namespace by this \
                 skiff",
                d.path().display()
            ));
        }
    }
    let mut devices = vec![];
    for (name, _, _) in DEFAULT_DEVICES {
        let host = Path::new("/dev").join(name);
        devices.push((
            *name,
            idmap::clone_tree(&host, false, None)
                .map_err(|e| format!("device {}: {e}", host.display()))?,
        ));
    }
    std::env::set_current_dir(&root).map_err(|e| format!("entering {}: {e}", root.display()))?;
    Ok(Prepared {
        overlay,
        binds,
        devices,
    })
}

/// The second half, inside the pod's user namespace and the container's new mount namespace
/// (whose working directory is the rootfs): the other mounts, the prepared ones attached,
/// /dev, pivot_root.
pub fn setup_in_userns(
    spec: &Spec,
    prepared: Prepared,
    before_pivot: impl FnOnce() -> R<()>,
) -> R<()> {
    // Copied from the host's mount namespace into one owned by a less privileged user
    // namespace, every shared mount became a slave: nothing we mount reaches the host, and
    // pivot_root finds no shared parent. The overlay, attached by us, is ours (not locked).
    let target = fsutil::open_dir(Path::new("."))
        .map_err(|e| format!("opening the rootfs mount point: {e}"))?;
    idmap::attach(&prepared.overlay, &target)
        .map_err(|e| format!("attaching the overlay rootfs: {e}"))?;
    drop(target);
    let rootfd = prepared.overlay;
    let mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let r = match prepared.binds.get(&i) {
            Some(tree) => attach_one(&rootfd, m, tree),
            None => mount_one(&rootfd, m),
        };
        r.map_err(|e| format!("mount {}: {e}", m.destination().display()))?;
    }
    for (name, tree) in &prepared.devices {
        let target = make_target(&rootfd, &Path::new("dev").join(name), false)?;
        idmap::attach(tree, &target).map_err(|e| format!("/dev/{name}: {e}"))?;
    }
    dev_links(&rootfd)?;
    before_pivot()?;
    pivot(rootfd)?;
    finish(spec)
}

/// Masked and read-only paths and a read-only rootfs, once inside.
fn finish(spec: &Spec) -> R<()> {
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            mask(Path::new(p))?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly(Path::new(p))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("making the rootfs read-only: {e}"))?;
    }
    Ok(())
}

/// Mounts each image volume's image at its `root` in the bundle (this process's mount namespace
/// does not propagate to the host's), and binds its sub path, resolved inside the image, at
/// `at`. The spec's bind mounts then take them from there.
fn stage_image_volumes(layers: &Rootfs) -> R<()> {
    for v in &layers.image_volumes {
        let what = |e: &dyn std::fmt::Display| format!("image volume {}: {e}", v.root.display());
        let lower: Vec<PathBuf> = v.lower.iter().map(|l| layers.layers_dir.join(l)).collect();
        let tree = idmap::image_tree(&lower).map_err(|e| what(&e))?;
        let target = fsutil::open_dir(&v.root).map_err(|e| what(&e))?;
        idmap::attach(&tree, &target).map_err(|e| what(&e))?;
        if v.at == v.root {
            continue;
        }
        let image = fsutil::open_dir(&v.root).map_err(|e| what(&e))?;
        let sub = openat2_in_root(
            &image,
            Path::new(&v.sub_path),
            libc::O_PATH | libc::O_CLOEXEC,
        )
        .map_err(|e| what(&format!("sub path {:?}: {e}", v.sub_path)))?;
        mount(
            Some(&fd_path(&sub)),
            &v.at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| what(&format!("binding sub path {:?}: {e}", v.sub_path)))?;
    }
    Ok(())
}

/// Mounts the overlay of `layers` at `root`: the layer directories, or the idmapped `trees` of
/// them (same order) when given.
fn mount_overlay(layers: &Rootfs, root: &Path, trees: Option<&[OwnedFd]>) -> R<()> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    if layers.lower.is_empty() {
        return Err("image has no layers".into());
    }
    let lower = match trees {
        Some(t) => t
            .iter()
            .map(|fd| fd_path(fd).display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
        None => {
            // Relative lower directories keep long layer lists inside the one-page option
            // limit.
            std::env::set_current_dir(&layers.layers_dir)
                .map_err(|e| format!("entering {}: {e}", layers.layers_dir.display()))?;
            layers.lower.join(":")
        }
    };
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        layers.upper.display(),
        layers.work.display()
    );
    mount(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mounting the overlay rootfs: {e}"))
}

/// Mount options split the way mount(2) takes them.
struct Opts {
    flags: MsFlags,
    propagation: Option<MsFlags>,
    data: Vec<String>,
    bind: bool,
    /// Read-only all the way down, submounts included (`rro`).
    recursive_readonly: bool,
    /// Idmapped (`idmap`, `ridmap`): by the mount's own mappings, else the container's user
    /// namespace.
    idmap: bool,
}

/// Whether the spec's mount `m` is a bind mount (by type, or a `bind`/`rbind` option).
pub fn is_bind(m: &Mount) -> bool {
    parse_opts(m).bind
}

fn parse_opts(m: &Mount) -> Opts {
    let mut o = Opts {
        flags: MsFlags::empty(),
        propagation: None,
        data: vec![],
        bind: m.typ().as_deref() == Some("bind"),
        recursive_readonly: false,
        idmap: false,
    };
    for opt in m.options().iter().flatten() {
        match opt.as_str() {
            "ro" => o.flags |= MsFlags::MS_RDONLY,
            "rro" => {
                o.flags |= MsFlags::MS_RDONLY;
                o.recursive_readonly = true;
            }
            "rw" => {}
            "nosuid" => o.flags |= MsFlags::MS_NOSUID,
            "nodev" => o.flags |= MsFlags::MS_NODEV,
            "noexec" => o.flags |= MsFlags::MS_NOEXEC,
            "relatime" => o.flags |= MsFlags::MS_RELATIME,
            "strictatime" => o.flags |= MsFlags::MS_STRICTATIME,
            "noatime" => o.flags |= MsFlags::MS_NOATIME,
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.flags |= MsFlags::MS_REC;
            }
            "idmap" | "ridmap" => o.idmap = true,
            "private" => o.propagation = Some(MsFlags::MS_PRIVATE),
            "rprivate" => o.propagation = Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "slave" => o.propagation = Some(MsFlags::MS_SLAVE),
            "rslave" => o.propagation = Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "shared" => o.propagation = Some(MsFlags::MS_SHARED),
            "rshared" => o.propagation = Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            other => o.data.push(other.to_string()),
        }
    }
    o
}

fn mount_one(rootfd: &OwnedFd, m: &Mount) -> R<()> {
    let dest = fsutil::clean(m.destination()).ok_or("destination is the root")?;
    let o = parse_opts(m);
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from("none"));
    let target = if o.bind {
        let meta =
            std::fs::metadata(&source).map_err(|e| format!("source {}: {e}", source.display()))?;
        make_target(rootfd, &dest, meta.is_dir())?
    } else {
        make_target(rootfd, &dest, true)?
    };
    let tpath = fd_path(&target);
    if o.bind {
        mount(
            Some(&source),
            &tpath,
            None::<&str>,
            MsFlags::MS_BIND | (o.flags & MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(|e| format!("binding {}: {e}", source.display()))?;
        bind_flags(rootfd, &dest, &o)?;
    } else {
        let typ = m.typ().clone().unwrap_or_else(|| "none".into());
        let data = o.data.join(",");
        mount(
            Some(&source),
            &tpath,
            Some(typ.as_str()),
            o.flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| format!("mounting {typ}: {e}"))?;
    }
    finish_mount(rootfd, &dest, &o)
}

/// A bind mount's flags (read-only, nosuid …), which bind itself ignores.
fn bind_flags(rootfd: &OwnedFd, dest: &Path, o: &Opts) -> R<()> {
    let extra = o.flags & !MsFlags::MS_REC;
    if !extra.is_empty() {
        // The new mount now sits at the destination: reopen to name it, not what it covers.
        remount_at(rootfd, dest, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra)
            .map_err(|e| format!("remounting with {extra:?}: {e}"))?;
    }
    Ok(())
}

/// Propagation and recursive read-only, once the mount is in place.
fn finish_mount(rootfd: &OwnedFd, dest: &Path, o: &Opts) -> R<()> {
    if let Some(p) = o.propagation {
        remount_at(rootfd, dest, p).map_err(|e| format!("setting propagation {p:?}: {e}"))?;
    }
    if o.recursive_readonly {
        set_recursive_readonly(&reopen_mount(rootfd, dest)?)?;
    }
    Ok(())
}

/// A bind mount whose source was prepared as the detached `tree`: attached at its target.
fn attach_one(rootfd: &OwnedFd, m: &Mount, tree: &OwnedFd) -> R<()> {
    let dest = fsutil::clean(m.destination()).ok_or("destination is the root")?;
    let o = parse_opts(m);
    let is_dir = nix::sys::stat::fstat(tree.as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(|e| format!("source: {e}"))?;
    let target = make_target(rootfd, &dest, is_dir)?;
    idmap::attach(tree, &target).map_err(|e| format!("attaching: {e}"))?;
    bind_flags(rootfd, &dest, &o)?;
    finish_mount(rootfd, &dest, &o)
}

/// Opens the mount that now sits at `dest` (inside the root), so that it is named rather than
/// what it covers.
fn reopen_mount(rootfd: &OwnedFd, dest: &Path) -> R<OwnedFd> {
    openat2_in_root(rootfd, dest, libc::O_PATH | libc::O_CLOEXEC)
        .map_err(|e| format!("reopening {}: {e}", dest.display()))
}

/// Changes the flags or propagation of the mount at `dest` (inside the root) through its
/// descriptor.
fn remount_at(rootfd: &OwnedFd, dest: &Path, flags: MsFlags) -> R<()> {
    let mounted = reopen_mount(rootfd, dest)?;
    mount(
        None::<&str>,
        &fd_path(&mounted),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|e| e.to_string())
}

/// Makes the mount `fd` names and every mount below it read-only.
fn set_recursive_readonly(fd: &OwnedFd) -> R<()> {
    idmap::set_mount_attr(fd, idmap::MOUNT_ATTR_RDONLY, None, true)
        .map_err(|e| format!("making the mount recursively read-only: {e}"))
}

/// Creates the mount point `dest` inside the rootfs (a directory, or an empty file for a file
/// bind mount) without leaving it, and returns it opened `O_PATH`.
fn make_target(rootfd: &OwnedFd, dest: &Path, dir: bool) -> R<OwnedFd> {
    let flags = libc::O_PATH | libc::O_CLOEXEC;
    if let Ok(fd) = openat2_in_root(rootfd, dest, flags) {
        return Ok(fd);
    }
    let parent = dest.parent().unwrap_or(Path::new(""));
    let pfd = mkdir_all_in_root(rootfd, parent).map_err(|e| format!("creating parent: {e}"))?;
    let name = dest.file_name().ok_or("destination has no name")?;
    let cname = CString::new(name.as_bytes()).map_err(|_| "NUL in destination")?;
    // mkdirat/openat relative to the resolved parent: `name` is one component, no symlink can
    // take it elsewhere (O_NOFOLLOW | O_EXCL for files).
    // SAFETY: pfd is an open directory, cname a valid C string.
    let rc = unsafe {
        if dir {
            libc::mkdirat(pfd.as_raw_fd(), cname.as_ptr(), 0o755)
        } else {
            let fd = libc::openat(
                pfd.as_raw_fd(),
                cname.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644,
            );
            if fd >= 0 {
                libc::close(fd);
                0
            } else {
                -1
            }
        }
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("creating mount point: {e}"));
        }
    }
    openat2_in_root(rootfd, dest, flags).map_err(|e| format!("opening mount point: {e}"))
}

fn populate_dev(rootfd: &OwnedFd) -> R<()> {
    let dev = mkdir_all_in_root(rootfd, Path::new("dev")).map_err(|e| format!("/dev: {e}"))?;
    let dev = fsutil::open_dir(&fd_path(&dev)).map_err(|e| format!("/dev: {e}"))?;
    for (name, major, minor) in DEFAULT_DEVICES {
        match mknodat(
            Some(dev.as_raw_fd()),
            *name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("creating /dev/{name}: {e}")),
        }
        // mknod applies the umask; the nodes are world read-writable as on every runtime.
        let _ = nix::sys::stat::fchmodat(
            Some(dev.as_raw_fd()),
            *name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    dev_links(rootfd)
}

/// The standard symlinks in /dev.
fn dev_links(rootfd: &OwnedFd) -> R<()> {
    let dev = mkdir_all_in_root(rootfd, Path::new("dev")).map_err(|e| format!("/dev: {e}"))?;
    let dev = fsutil::open_dir(&fd_path(&dev)).map_err(|e| format!("/dev: {e}"))?;
    for (name, target) in DEV_LINKS {
        match nix::unistd::symlinkat(*target, Some(dev.as_raw_fd()), *name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("creating /dev/{name}: {e}")),
        }
    }
    Ok(())
}

/// The spec's extra device nodes (the request's devices, or the host's for a privileged
/// container), each made inside the rootfs.
fn create_devices(rootfd: &OwnedFd, devices: &[oci_spec::runtime::LinuxDevice]) -> R<()> {
    use oci_spec::runtime::LinuxDeviceType as T;
    for d in devices {
        let rel = fsutil::clean(d.path()).ok_or("device at /")?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or("device without a name")?;
        let dir = mkdir_all_in_root(rootfd, parent)
            .map_err(|e| format!("device {}: {e}", d.path().display()))?;
        let dir = fsutil::open_dir(&fd_path(&dir))
            .map_err(|e| format!("device {}: {e}", d.path().display()))?;
        let kind = match d.typ() {
            T::B => SFlag::S_IFBLK,
            T::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        match mknodat(
            Some(dir.as_raw_fd()),
            name,
            kind,
            Mode::from_bits_truncate(d.file_mode().unwrap_or(0o660)),
            makedev(d.major() as u64, d.minor() as u64),
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(format!("creating device {}: {e}", d.path().display())),
        }
        let _ = nix::sys::stat::fchmodat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(d.file_mode().unwrap_or(0o660)),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
        nix::unistd::fchownat(
            Some(dir.as_raw_fd()),
            name,
            d.uid().map(nix::unistd::Uid::from_raw),
            d.gid().map(nix::unistd::Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("owning device {}: {e}", d.path().display()))?;
    }
    Ok(())
}

fn pivot(root: OwnedFd) -> R<()> {
    let old_root = fsutil::open_dir(Path::new("/")).map_err(|e| format!("opening /: {e}"))?;
    nix::unistd::fchdir(root.as_raw_fd()).map_err(|e| format!("entering rootfs: {e}"))?;
    drop(root);
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    // The old root is now stacked on the new one. Step onto it explicitly ("." would still be
    // the new root) and detach it without telling the host or touching the new tree's mounts.
    nix::unistd::fchdir(old_root.as_raw_fd()).map_err(|e| format!("entering old root: {e}"))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("old root propagation: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching old root: {e}"))?;
    drop(old_root);
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Hides `p`: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask(p: &Path) -> R<()> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let r = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.map_err(|e| format!("masking {}: {e}", p.display()))
}

fn readonly(p: &Path) -> R<()> {
    if std::fs::metadata(p).is_err() {
        return Ok(());
    }
    bind_self(
        p,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
    )
}

/// Bind-mounts `p` onto itself (recursively), then applies `then` to the new mount.
fn bind_self(p: &Path, then: MsFlags) -> R<()> {
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding {}: {e}", p.display()))?;
    mount(None::<&str>, p, None::<&str>, then, None::<&str>)
        .map_err(|e| format!("{} ({then:?}): {e}", p.display()))
}
