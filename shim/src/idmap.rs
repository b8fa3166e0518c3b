//! User namespaces and idmapped mounts, shared by the shim (pods with `hostUsers: false`) and
//! skiffd (its start-up probe, and mounts with their own id mappings).
//!
//! A user namespace with given mappings is made by a short-lived child: it unshares the user
//! namespace (and, if asked, further namespaces that then belong to it), and its parent, still
//! root on the host, writes the maps. The child runs only raw syscalls, so this is safe to call
//! from a multi-threaded process. Idmapped mounts are detached copies of a tree
//! (`open_tree(OPEN_TREE_CLONE)`) given a user namespace with `mount_setattr(MOUNT_ATTR_IDMAP)`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One range of a uid or gid map: `len` ids from `container` inside map to ids from `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// A user namespace's uid and gid maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maps {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl Maps {
    /// The maps an OCI spec or mount gives as its uid and gid mappings.
    pub fn from_oci(
        uids: &[oci_spec::runtime::LinuxIdMapping],
        gids: &[oci_spec::runtime::LinuxIdMapping],
    ) -> Maps {
        let ranges = |v: &[oci_spec::runtime::LinuxIdMapping]| {
            v.iter()
                .map(|m| IdRange {
                    container: m.container_id(),
                    host: m.host_id(),
                    len: m.size(),
                })
                .collect()
        };
        Maps {
            uids: ranges(uids),
            gids: ranges(gids),
        }
    }

    /// The host id that `id` inside maps to, if any.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        map_one(&self.uids, id)
    }

    pub fn host_gid(&self, id: u32) -> Option<u32> {
        map_one(&self.gids, id)
    }
}

fn map_one(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        (id >= r.container && (id - r.container) < r.len).then(|| r.host + (id - r.container))
    })
}

/// The text of a `uid_map`/`gid_map` file.
fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
        .collect()
}

/// The kernel's limit on lines in one map (since Linux 4.15).
pub const MAX_RANGES: usize = 340;

/// Checks one map: some range, no empty range, no range past 2^32, no two ranges overlapping
/// inside or on the host. `what` names the field in errors.
pub fn validate(ranges: &[IdRange], what: &str) -> Result<(), String> {
    if ranges.is_empty() {
        return Err(format!("{what}: no mapping given"));
    }
    if ranges.len() > MAX_RANGES {
        return Err(format!(
            "{what}: {} ranges, the kernel takes at most {MAX_RANGES}",
            ranges.len()
        ));
    }
    for (i, r) in ranges.iter().enumerate() {
        if r.len == 0 {
            return Err(format!("{what}[{i}]: length is 0"));
        }
        for (side, start) in [("container_id", r.container), ("host_id", r.host)] {
            if u64::from(start) + u64::from(r.len) > 1 << 32 {
                return Err(format!(
                    "{what}[{i}]: {side} {start} + length {} is past 4294967296",
                    r.len
                ));
            }
        }
        for (j, o) in ranges.iter().enumerate().skip(i + 1) {
            let overlap = |a: u32, b: u32| {
                u64::from(a) < u64::from(b) + u64::from(o.len)
                    && u64::from(b) < u64::from(a) + u64::from(r.len)
            };
            if overlap(r.container, o.container) {
                return Err(format!(
                    "{what}[{i}] and {what}[{j}]: container id ranges overlap"
                ));
            }
            if overlap(r.host, o.host) {
                return Err(format!(
                    "{what}[{i}] and {what}[{j}]: host id ranges overlap"
                ));
            }
        }
    }
    Ok(())
}

/// A child process holding a new user namespace with the given maps (and the namespaces in
/// `also`, created inside it). Killed and reaped on drop.
pub struct UsernsChild {
    pid: libc::pid_t,
    /// Closing it lets the child exit.
    _hold: Option<OwnedFd>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn read_byte(fd: &OwnedFd) -> io::Result<u8> {
    let mut b = 0u8;
    loop {
        // SAFETY: reads one byte into a live local.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            return Ok(b);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the namespace child exited",
            ));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn write_byte(fd: &OwnedFd, b: u8) -> io::Result<()> {
    // SAFETY: writes one byte from a live local.
    if unsafe { libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1) } != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl UsernsChild {
    /// Forks the child, writes `maps` into its new user namespace, and has it create `also`
    /// (CLONE_NEW* flags) inside.
    pub fn spawn(maps: &Maps, also: libc::c_int) -> io::Result<UsernsChild> {
        let (to_child_r, to_child_w) = pipe()?;
        let (to_parent_r, to_parent_w) = pipe()?;
        // SAFETY: the child runs only async-signal-safe syscalls (unshare, read, write, _exit)
        // on descriptors it already holds, so forking a multi-threaded process is fine.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: raw syscalls only, see above; the child never returns.
            unsafe {
                let step = |ok: bool| {
                    let b: u8 = if ok { 1 } else { 0 };
                    libc::write(to_parent_w.as_raw_fd(), (&b as *const u8).cast(), 1);
                };
                let wait = || {
                    let mut b = 0u8;
                    libc::read(to_child_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) == 1
                };
                step(libc::unshare(libc::CLONE_NEWUSER) == 0);
                if !wait() {
                    libc::_exit(1);
                }
                step(also == 0 || libc::unshare(also) == 0);
                wait();
                libc::_exit(0);
            }
        }
        drop(to_child_r);
        drop(to_parent_w);
        let mut child = UsernsChild { pid, _hold: None };
        if read_byte(&to_parent_r)? != 1 {
            return Err(io::Error::other(
                "the child could not create a user namespace",
            ));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), map_text(&maps.uids))
            .map_err(|e| io::Error::new(e.kind(), format!("writing uid_map: {e}")))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map_text(&maps.gids))
            .map_err(|e| io::Error::new(e.kind(), format!("writing gid_map: {e}")))?;
        write_byte(&to_child_w, 1)?;
        if read_byte(&to_parent_r)? != 1 {
            return Err(io::Error::other(
                "the child could not create namespaces in its user namespace",
            ));
        }
        // The child now waits for this to close before it exits.
        child._hold = Some(to_child_w);
        Ok(child)
    }

    /// Opens one of the child's namespaces (`user`, `net`, `ipc`, `uts`, `pid_for_children`).
    pub fn ns(&self, name: &str) -> io::Result<File> {
        File::open(format!("/proc/{}/ns/{name}", self.pid))
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for UsernsChild {
    fn drop(&mut self) {
        kill_and_reap(self.pid);
    }
}

/// A child process alone in a mount namespace whose only mount is an empty read-only tmpfs
/// (mounted at `dir` and pivoted into), for its namespace to be pinned. Killed and reaped on
/// drop. Like [`UsernsChild`], the child runs only raw syscalls.
pub struct EmptyMountNs {
    pid: libc::pid_t,
    _hold: OwnedFd,
}

impl EmptyMountNs {
    pub fn spawn(dir: &Path) -> io::Result<EmptyMountNs> {
        let cdir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let (to_child_r, to_child_w) = pipe()?;
        let (to_parent_r, to_parent_w) = pipe()?;
        // SAFETY: the child makes only raw syscalls (async-signal-safe) on memory prepared
        // before the fork, and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                    && libc::mount(
                        c"empty".as_ptr(),
                        cdir.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=4k,mode=0555".as_ptr().cast(),
                    ) == 0
                    && libc::chdir(cdir.as_ptr()) == 0
                    && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
                    && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0;
                let b: u8 = if ok { 1 } else { 0 };
                libc::write(to_parent_w.as_raw_fd(), (&b as *const u8).cast(), 1);
                let mut w = 0u8;
                libc::read(to_child_r.as_raw_fd(), (&mut w as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        drop(to_child_r);
        drop(to_parent_w);
        let child = EmptyMountNs {
            pid,
            _hold: to_child_w,
        };
        if read_byte(&to_parent_r)? != 1 {
            return Err(io::Error::other(
                "the child could not make an empty mount namespace",
            ));
        }
        Ok(child)
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for EmptyMountNs {
    fn drop(&mut self) {
        kill_and_reap(self.pid);
    }
}

/// Ends one of our namespace-holding children.
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR_RDONLY` of mount_setattr(2).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Sets mount attributes `set` (and the user namespace `userns` for MOUNT_ATTR_IDMAP) on the
/// mount `fd` is open on, and on every mount below it with `recursive` (Linux 5.12).
pub fn set_mount_attr(
    fd: &OwnedFd,
    set: u64,
    userns: Option<&File>,
    recursive: bool,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map(|f| f.as_raw_fd() as u64).unwrap_or(0),
    };
    let mut at = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        at |= AT_RECURSIVE;
    }
    // SAFETY: `attr` is a valid mount_attr passed with its size; "" with AT_EMPTY_PATH names
    // the open descriptor itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A detached copy of the tree at `path` (recursive with `recursive`), idmapped with the user
/// namespace `userns` when given.
pub fn clone_tree(path: &Path, recursive: bool, userns: Option<&File>) -> io::Result<OwnedFd> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree with a valid C string; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, cpath.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor nobody else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if let Some(ns) = userns {
        set_mount_attr(&tree, MOUNT_ATTR_IDMAP, Some(ns), recursive)?;
    }
    Ok(tree)
}

/// A detached tmpfs mount (fsopen/fsmount) with `options` (`key=value` pairs) and mount
/// attributes `attrs` (MOUNT_ATTR_*). Made inside a user namespace, it belongs to it.
pub fn tmpfs_tree(
    options: &[(&std::ffi::CStr, &std::ffi::CStr)],
    attrs: u64,
) -> io::Result<OwnedFd> {
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    // SAFETY: fsopen with a valid C string; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 1 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsopen returned a new descriptor nobody else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    fs_create(&fs, options, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE)?;
    // SAFETY: fsmount on our created fs context; the result is checked.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1 as libc::c_uint, attrs) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsmount returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(m as i32) })
}

/// Sets string options on an fs context and creates its superblock.
fn fs_create(
    fs: &OwnedFd,
    options: &[(&std::ffi::CStr, &std::ffi::CStr)],
    set_string: libc::c_uint,
    create: libc::c_uint,
) -> io::Result<()> {
    for (k, v) in options {
        // SAFETY: fsconfig with valid C strings on our fs context; the result is checked.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                set_string,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: fsconfig command without key or value; the result is checked.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            create,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `MOUNT_ATTR_*` of an image volume: read-only, no set-uid, no devices, no execution.
pub const MOUNT_ATTR_IMAGE_VOLUME: u64 = MOUNT_ATTR_RDONLY | 0x2 | 0x4 | 0x8;

/// A detached, read-only (nosuid, nodev, noexec) mount of an image's layers (top first): the
/// single layer's directory bound, or a read-only overlay of them (which needs two or more).
pub fn image_tree(lower: &[PathBuf]) -> io::Result<OwnedFd> {
    let tree = match lower {
        [] => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "image has no layers",
            ))
        }
        [one] => clone_tree(one, false, None)?,
        _ => overlay_tree(lower, None)?,
    };
    set_mount_attr(&tree, MOUNT_ATTR_IMAGE_VOLUME, None, false)?;
    Ok(tree)
}

/// A detached overlay mount (fsopen/fsmount) of `lower` (top first) with `(upper, work)`, or
/// read-only without them. Each lower layer goes in with its own `lowerdir+` (fsconfig strings
/// are short), falling back to one `lowerdir` list on kernels before 6.8.
pub fn overlay_tree(lower: &[PathBuf], upper_work: Option<(&Path, &Path)>) -> io::Result<OwnedFd> {
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    // SAFETY: fsopen with a valid C string; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsopen returned a new descriptor nobody else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &std::ffi::CStr, value: &std::ffi::CStr| -> io::Result<()> {
        // SAFETY: fsconfig with valid C strings on our fs context; the result is checked.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let mut appended = true;
    for l in lower {
        if let Err(e) = set(c"lowerdir+", &cstr(l)?) {
            if e.raw_os_error() == Some(libc::EINVAL) && l == &lower[0] {
                appended = false;
                break;
            }
            return Err(io::Error::new(
                e.kind(),
                format!("lower layer {}: {e}", l.display()),
            ));
        }
    }
    if !appended {
        let list: Vec<String> = lower.iter().map(|l| l.display().to_string()).collect();
        set(c"lowerdir", &cstr(Path::new(&list.join(":")))?)?;
    }
    match upper_work {
        Some((upper, work)) => {
            let (upper, work) = (cstr(upper)?, cstr(work)?);
            fs_create(
                &fs,
                &[(c"upperdir", &upper), (c"workdir", &work)],
                FSCONFIG_SET_STRING,
                FSCONFIG_CMD_CREATE,
            )?
        }
        None => fs_create(&fs, &[], FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE)?,
    }
    // SAFETY: fsmount on our created fs context; the result is checked.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsmount returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(m as i32) })
}

/// Attaches a detached tree onto the file or directory `target` is open on (move_mount).
pub fn attach(tree: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: move_mount with two valid descriptors and empty paths; the result is checked.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(container: u32, host: u32, len: u32) -> IdRange {
        IdRange {
            container,
            host,
            len,
        }
    }

    #[test]
    fn validation_names_the_bad_range() {
        assert!(validate(&[r(0, 100000, 65536)], "uids").is_ok());
        assert!(validate(&[], "uids").unwrap_err().contains("no mapping"));
        assert!(validate(&[r(0, 1, 0)], "uids")
            .unwrap_err()
            .contains("uids[0]: length is 0"));
        assert!(validate(&[r(0, u32::MAX, 2)], "gids")
            .unwrap_err()
            .contains("gids[0]: host_id"));
        assert!(validate(&[r(0, 100000, 10), r(5, 200000, 10)], "uids")
            .unwrap_err()
            .contains("container id ranges overlap"));
        assert!(validate(&[r(0, 100000, 10), r(10, 100005, 10)], "uids")
            .unwrap_err()
            .contains("host id ranges overlap"));
    }

    #[test]
    fn maps_translate_ids() {
        let m = Maps {
            uids: vec![r(0, 100000, 1000), r(1000, 300000, 10)],
            gids: vec![r(0, 100000, 65536)],
        };
        assert_eq!(m.host_uid(0), Some(100000));
        assert_eq!(m.host_uid(1001), Some(300001));
        assert_eq!(m.host_uid(2000), None);
        assert_eq!(m.host_gid(65535), Some(165535));
    }
}
