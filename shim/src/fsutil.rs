//! File helpers skiffd and the shim share: crash-safe record writes, and path resolution that
//! never leaves a root directory (`openat2` with `RESOLVE_IN_ROOT`).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Prefix of every temporary file or directory on the way to a committed one. Such leftovers of
/// a crash are never read back, and are removed at start-up by [`remove_temporaries`].
pub const TMP_PREFIX: &str = ".tmp-";

/// Writes `data` to `path` atomically and durably: a temporary file in the same directory,
/// fsync, rename over the target, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_replace(path, data, true)
}

/// Writes `data` to `path` atomically (never seen half-written, whatever process dies when)
/// but without fsync: for files under the run root, which a reboot clears anyway.
pub fn write_atomic_volatile(path: &Path, data: &[u8]) -> io::Result<()> {
    write_replace(path, data, false)
}

fn write_replace(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record path has no name"))?;
    // One getrandom(2) call: no generator to seed, whose start-up would probe the CPU's features
    // with CPUID (a trap to the hypervisor in a VM) in every new shim.
    let suffix = getrandom::u64().map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{suffix}", name.to_string_lossy()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serialises `value` as JSON and writes it with [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data)
}

/// Serialises `value` as JSON and writes it with [`write_atomic_volatile`].
pub fn write_json_volatile<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomic_volatile(path, &data)
}

/// Reads a JSON record written by [`write_json`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<T> {
    let data = fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// fsyncs a directory, making renames and unlinks in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file or a whole directory tree and makes the removal durable. Absent is fine.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    res?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Deletes the leftovers (names starting with [`TMP_PREFIX`]) a crash left in `dir`. Returns how
/// many were removed.
pub fn remove_temporaries(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            remove_durably(&entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Normalises a path as if `/` were the root: `./a`, `/a` and `../../a` are all `a`.
/// Returns None for the root itself.
pub fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `rel` is resolved as if
/// `root` were `/`, so neither `..` nor a symlink (absolute or relative) can leave it.
pub fn openat2_in_root(root: &OwnedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let path = if rel.as_os_str().is_empty() {
        CString::new(".")
    } else {
        CString::new(rel.as_os_str().as_bytes())
    }
    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers, for which all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `how` is a fully initialised open_how passed with its exact size, `path` is a valid
    // NUL-terminated string, and the root descriptor is open for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens (creating as needed, mode 0755) the directory `rel` inside `root`, resolving every
/// component inside it. A symlink on the way is followed inside `root` (as if `root` were `/`),
/// and its missing target directories are created there too, as runc does for mount points
/// (`/var/run -> /run` with no `/run` yet). Returns an `O_PATH` descriptor.
pub fn mkdir_all_in_root(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    mkdir_all_depth(root, rel, 0)
}

fn mkdir_all_depth(root: &OwnedFd, rel: &Path, depth: u32) -> io::Result<OwnedFd> {
    const MAX_LINKS: u32 = 40;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    match openat2_in_root(root, rel, flags) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut cur = PathBuf::new();
    let mut fd = openat2_in_root(root, Path::new(""), flags)?;
    for comp in rel.components() {
        let name = CString::new(comp.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: fd is an open directory descriptor and name a valid C string.
        let rc = unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        let parent = cur.clone();
        cur.push(comp);
        fd = match openat2_in_root(root, &cur, flags) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && depth < MAX_LINKS => {
                // A dangling symlink inside the root: create what it points to, then go on.
                let target = readlink_at(&fd, &name)?;
                let resolved = if target.is_absolute() {
                    clean(&target).unwrap_or_default()
                } else {
                    clean(&parent.join(&target)).unwrap_or_default()
                };
                mkdir_all_depth(root, &resolved, depth + 1)?;
                openat2_in_root(root, &cur, flags)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(fd)
}

fn readlink_at(dir: &OwnedFd, name: &CString) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: dir is an open directory, name a valid C string, buf has buf.len() bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Opens a directory as an owned descriptor (`O_DIRECTORY`, close-on-exec).
pub fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)?;
    Ok(f.into())
}

/// `/proc/self/fd/N`: a path naming exactly the object `fd` holds, for calls (mount, setxattr)
/// that take paths.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A path field of /proc/*/mountinfo with the kernel's octal escapes (`\040` for a space, …)
/// undone.
pub fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A unix socket address for `path`, whatever the length of its directory's path: `path` itself
/// when it fits the 108 bytes of `sockaddr_un`, else `/proc/self/fd/N/NAME` through an `O_PATH`
/// descriptor of the directory, which must stay open (the first element) until the bind or
/// connect is done.
pub fn socket_address(path: &Path) -> io::Result<(Option<OwnedFd>, PathBuf)> {
    const SUN_PATH: usize = 108;
    if path.as_os_str().len() < SUN_PATH {
        return Ok((None, path.to_path_buf()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a socket path", path.display()),
        ));
    };
    let fd: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?
        .into();
    let short = Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
    Ok((Some(fd), short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        let back: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(back, vec![4]);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rec.json")]);
    }

    #[test]
    fn temporaries_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TMP_PREFIX}x")), b"half").unwrap();
        fs::create_dir(dir.path().join(format!("{TMP_PREFIX}layer"))).unwrap();
        fs::write(dir.path().join("keep"), b"ok").unwrap();
        assert_eq!(remove_temporaries(dir.path()).unwrap(), 2);
        assert!(dir.path().join("keep").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn names_are_cleaned_as_if_rooted() {
        assert_eq!(clean(Path::new("../../etc/x")).unwrap(), Path::new("etc/x"));
        assert_eq!(clean(Path::new("/a/./b/../c")).unwrap(), Path::new("a/c"));
        assert!(clean(Path::new("./")).is_none());
    }

    #[test]
    fn mkdir_all_creates_dangling_symlink_targets_inside() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let victim = outer.path().join("victim");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&victim).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("rel")).unwrap();
        let fd = open_dir(&root).unwrap();
        mkdir_all_in_root(&fd, Path::new("abs/mnt")).unwrap();
        mkdir_all_in_root(&fd, Path::new("rel/secrets/x")).unwrap();
        assert!(root
            .join(victim.strip_prefix("/").unwrap())
            .join("mnt")
            .is_dir());
        assert!(root.join("run/secrets/x").is_dir());
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
        // A loop ends with an error, not a hang.
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(mkdir_all_in_root(&fd, Path::new("loop/x")).is_err());
    }

    #[test]
    fn mkdir_all_stays_inside_through_symlinks() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let fd = open_dir(&root).unwrap();
        mkdir_all_in_root(&fd, Path::new("up/made/here")).unwrap();
        assert!(root.join("made/here").is_dir());
        assert!(!Path::new("/made").exists());
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo(r"/x\134y"), "/x\\y");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn sockets_bind_and_connect_under_long_directories() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d".repeat(120));
        fs::create_dir(&dir).unwrap();
        let sock = dir.join("shim.sock");
        assert!(std::os::unix::net::UnixListener::bind(&sock).is_err());
        let (_fd, short) = socket_address(&sock).unwrap();
        let l = std::os::unix::net::UnixListener::bind(&short).unwrap();
        assert!(sock.exists());
        let (_fd2, short2) = socket_address(&sock).unwrap();
        std::os::unix::net::UnixStream::connect(&short2).unwrap();
        drop(l);
        let (fd, same) = socket_address(Path::new("/run/x.sock")).unwrap();
        assert!(fd.is_none());
        assert_eq!(same, Path::new("/run/x.sock"));
    }
}
