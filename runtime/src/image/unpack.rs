//! Unpacking one image layer (a tar stream, already decompressed) into its own directory, in the
//! form overlayfs uses for a lower layer.
//!
//! Why by hand: the `tar` crate parses the stream (long names, PAX records, sparse files) and we
//! use it for that, but its extraction follows symlinks that earlier entries plant, applies a
//! hardlink entry's mode to the shared inode, and knows nothing of OCI whiteouts. Here every path
//! is resolved inside the layer directory with `openat2(RESOLVE_IN_ROOT)`, every file is created
//! relative to a directory descriptor with `O_NOFOLLOW`, and so no entry (`..`, an absolute name, a
//! path through a symlink, a hardlink to one) can write outside the layer.
//!
//! Whiteouts become overlayfs whiteouts: `.wh.NAME` a 0:0 character device `NAME`, and
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid};

use skiff_shim::fsutil::{clean, mkdir_all_in_root, open_dir, openat2_in_root};

use crate::error::{Error, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";
/// xattrs overlayfs reads as instructions (redirects, metacopy, opacity): never taken from a layer.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// What unpacking a layer wrote, for logs and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// What one layer may unpack to (the operator's `max_layer_bytes` and `max_layer_entries`;
/// 0: no limit, the default, as containerd has none).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackLimits {
    pub bytes: u64,
    pub entries: u64,
}

/// Unpacks every entry of `archive` into the directory `dest`, which must exist and be empty.
pub fn unpack_layer<R: Read>(
    archive: &mut tar::Archive<R>,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats> {
    let root = open_dir(dest).ctx(|| format!("opening layer directory {}", dest.display()))?;
    // The size of the filesystem holding the layer (0: unknown), read once per layer.
    let capacity = nix::sys::statvfs::fstatvfs(&root)
        .map(|fs| fs.blocks().saturating_mul(fs.fragment_size()))
        .unwrap_or(0);
    let mut w = LayerWriter {
        root,
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
        limits,
        capacity,
    };
    let entries = archive
        .entries()
        .map_err(|e| Error::Corrupt(format!("layer is not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::Corrupt(format!("layer tar stream is corrupt: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| Error::Corrupt(format!("layer entry with a bad name: {e}")))?
            .into_owned();
        if limits.entries > 0 && w.stats.entries >= limits.entries {
            return Err(Error::ResourceExhausted(format!(
                "the layer has more than {} entries (max_layer_entries)",
                limits.entries
            )));
        }
        w.apply(&mut entry)
            .map_err(|e| e.context(format!("layer entry {}", name.display())))?;
        w.stats.entries += 1;
    }
    w.finish()?;
    Ok(w.stats)
}

struct LayerWriter {
    root: OwnedFd,
    /// Directories' times are set last: entries created in them afterwards would change them.
    dir_times: Vec<(PathBuf, TimeSpec)>,
    stats: UnpackStats,
    limits: UnpackLimits,
    /// Bytes the layer's filesystem holds in all (0: unknown): no file may be larger.
    capacity: u64,
}

/// The metadata of one entry, with PAX records taking precedence over the ustar fields.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl LayerWriter {
    /// Writes a regular file's contents. The file first gets its full (apparent) size, so a
    /// size the filesystem cannot hold fails at once; then runs of zeros, a sparse entry's holes
    /// among them, are skipped rather than written, and stay holes. The apparent size is what
    /// counts against `max_layer_bytes`, checked before anything is read.
    fn write_contents<R: Read>(&mut self, entry: &mut tar::Entry<R>, file: &File) -> Result<()> {
        let size = entry.size();
        let total = self.stats.bytes.saturating_add(size);
        if self.limits.bytes > 0 && total > self.limits.bytes {
            return Err(Error::ResourceExhausted(format!(
                "the layer unpacks to more than {} bytes (max_layer_bytes)",
                self.limits.bytes
            )));
        }
        // A file larger than the whole filesystem holding the layer is refused without reading
        // it (a hostile sparse entry would otherwise cost a read of every hole).
        if self.capacity > 0 && size > self.capacity {
            return Err(Error::ResourceExhausted(format!(
                "a file of {size} bytes is larger than the filesystem holding the layer store \
                 ({} bytes)",
                self.capacity
            )));
        }
        file.set_len(size).map_err(|e| match e.raw_os_error() {
            Some(libc::EFBIG) | Some(libc::EINVAL) => Error::ResourceExhausted(format!(
                "a file of {size} bytes is larger than the layer store's filesystem allows"
            )),
            _ => Error::io("sizing file", e),
        })?;
        let mut buf = vec![0u8; 128 * 1024];
        let mut pos = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Corrupt(format!("layer tar stream is corrupt: {e}")));
                }
            };
            let chunk = &buf[..n];
            if !is_zero(chunk) {
                std::os::unix::fs::FileExt::write_all_at(file, chunk, pos)
                    .map_err(|e| Error::io("writing file", e))?;
            }
            pos += n as u64;
        }
        if pos != size {
            return Err(Error::Corrupt(format!(
                "layer tar stream ends inside a file ({pos} of {size} bytes)"
            )));
        }
        self.stats.bytes = total;
        Ok(())
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry
            .path()
            .map_err(|e| Error::Corrupt(format!("bad name: {e}")))?
            .into_owned();
        let Some(rel) = clean(&raw_path) else {
            // The layer's root directory itself: its metadata is the image's, not a layer's.
            return Ok(());
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let base = rel
            .file_name()
            .ok_or_else(|| Error::Corrupt("entry without a name".into()))?
            .to_owned();
        let base_str = base.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();

        if base_str == WHITEOUT_OPAQUE {
            let dir = self.dir_in_root(parent)?;
            return set_xattr_fd(dir.as_raw_fd(), "trusted.overlay.opaque", b"y")
                .ctx(|| "marking directory opaque");
        }
        if base_str.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(());
        }
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            // `.wh.`, `.wh..`, `.wh...`: a whiteout of nothing, of its own directory or of the
            // one above, which would reach out of the layer.
            if !is_name(OsStr::new(hidden)) {
                return Err(Error::Corrupt(format!(
                    "whiteout {base_str:?} does not name an entry"
                )));
            }
            let dir = self.dir_in_root(parent)?;
            remove_existing(&dir, OsStr::new(hidden))?;
            stat::mknodat(
                Some(dir.as_raw_fd()),
                hidden,
                SFlag::S_IFCHR,
                Mode::empty(),
                stat::makedev(0, 0),
            )
            .ctx(|| format!("creating whiteout for {hidden}"))?;
            return Ok(());
        }

        let meta = read_meta(entry)?;
        let dir = self.dir_in_root(parent)?;
        let base = base.as_os_str();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&dir, base)?;
                let fd = nix::fcntl::openat(
                    Some(dir.as_raw_fd()),
                    base,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .ctx(|| "creating file")?;
                // SAFETY: openat returned a fresh descriptor that nothing else owns.
                let file = unsafe { File::from_raw_fd(fd) };
                self.write_contents(entry, &file)?;
                apply_meta_fd(file.as_fd().as_raw_fd(), &meta)?;
                stat::futimens(file.as_raw_fd(), &meta.mtime, &meta.mtime)
                    .ctx(|| "setting times")?;
            }
            tar::EntryType::Directory => {
                let exists_as_dir = matches!(
                    stat::fstatat(Some(dir.as_raw_fd()), base, AtFlags::AT_SYMLINK_NOFOLLOW),
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR
                );
                if !exists_as_dir {
                    remove_existing(&dir, base)?;
                    stat::mkdirat(Some(dir.as_raw_fd()), base, Mode::from_bits_truncate(0o700))
                        .ctx(|| "creating directory")?;
                }
                let fd = open_dir_at(dir.as_raw_fd(), base).ctx(|| "opening directory")?;
                apply_meta_fd(fd.as_raw_fd(), &meta)?;
                self.dir_times.push((rel.clone(), meta.mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::Corrupt(format!("bad symlink target: {e}")))?
                    .ok_or_else(|| Error::Corrupt("symlink without a target".into()))?
                    .into_owned();
                remove_existing(&dir, base)?;
                unistd::symlinkat(target.as_os_str(), Some(dir.as_raw_fd()), base)
                    .ctx(|| "creating symlink")?;
                chown_at(&dir, base, &meta)?;
                set_times_at(&dir, base, &meta)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::Corrupt(format!("bad hardlink target: {e}")))?
                    .ok_or_else(|| Error::Corrupt("hardlink without a target".into()))?
                    .into_owned();
                let target_rel = clean(&target)
                    .ok_or_else(|| Error::Corrupt("hardlink to the layer root".into()))?;
                // Resolved inside the layer and not followed if it is itself a symlink: the link
                // can only ever name an inode of this layer.
                let src = openat2_in_root(
                    &self.root,
                    &target_rel,
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
                .map_err(|e| match e.raw_os_error() {
                    // Not in this layer, or only reachable out of it: the layer is bad.
                    Some(libc::ENOENT | libc::ELOOP | libc::EXDEV | libc::ENOTDIR) => {
                        Error::Corrupt(format!(
                            "hardlink target {} is not a file of this layer",
                            target.display()
                        ))
                    }
                    _ => Error::io(format!("hardlink target {}", target.display()), e),
                })?;
                if same_inode(&src, &dir, base) {
                    return Ok(());
                }
                remove_existing(&dir, base)?;
                let base_c = cstr(base)?;
                let empty = CString::default();
                // SAFETY: both descriptors are open and owned by us, the names are valid C
                // strings, and AT_EMPTY_PATH links the inode `src` refers to (we are root).
                let rc = unsafe {
                    libc::linkat(
                        src.as_raw_fd(),
                        empty.as_ptr(),
                        dir.as_raw_fd(),
                        base_c.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    )
                };
                if rc != 0 {
                    return Err(Error::io("creating hardlink", io::Error::last_os_error()));
                }
                // The header's mode and owner are deliberately not applied: they would change the
                // inode every other name of it shares.
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind_flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                remove_existing(&dir, base)?;
                stat::mknodat(
                    Some(dir.as_raw_fd()),
                    base,
                    kind_flag,
                    Mode::from_bits_truncate(meta.mode & 0o777),
                    stat::makedev(major.into(), minor.into()),
                )
                .ctx(|| "creating device node")?;
                chown_at(&dir, base, &meta)?;
                stat::fchmodat(
                    Some(dir.as_raw_fd()),
                    base,
                    Mode::from_bits_truncate(meta.mode),
                    FchmodatFlags::NoFollowSymlink,
                )
                .or_else(|e| {
                    // Kernels before fchmodat2 refuse NoFollowSymlink; the node is no symlink.
                    if e == nix::errno::Errno::EOPNOTSUPP || e == nix::errno::Errno::ENOTSUP {
                        stat::fchmodat(
                            Some(dir.as_raw_fd()),
                            base,
                            Mode::from_bits_truncate(meta.mode),
                            FchmodatFlags::FollowSymlink,
                        )
                    } else {
                        Err(e)
                    }
                })
                .ctx(|| "setting mode")?;
                set_times_at(&dir, base, &meta)?;
            }
            other => {
                tracing::warn!(entry = %rel.display(), kind = ?other, "skipping tar entry of unsupported type");
            }
        }
        Ok(())
    }

    /// Opens (creating as needed, mode 0755) the directory `rel` inside the layer, resolving every
    /// component inside it.
    fn dir_in_root(&self, rel: &Path) -> Result<OwnedFd> {
        mkdir_all_in_root(&self.root, rel).ctx(|| format!("directory {}", rel.display()))
    }

    fn finish(&mut self) -> Result<()> {
        for (rel, t) in self.dir_times.iter().rev() {
            let fd = openat2_in_root(
                &self.root,
                rel,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
            .ctx(|| format!("directory {}", rel.display()))?;
            stat::futimens(fd.as_raw_fd(), t, t)
                .ctx(|| format!("setting times of {}", rel.display()))?;
        }
        Ok(())
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode().unwrap_or(0o644) & 0o7777,
        uid: h.uid().unwrap_or(0) as u32,
        gid: h.gid().unwrap_or(0) as u32,
        mtime: TimeSpec::new(h.mtime().unwrap_or(0) as i64, 0),
        xattrs: Vec::new(),
    };
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                "uid" => meta.uid = text.parse().unwrap_or(meta.uid),
                "gid" => meta.gid = text.parse().unwrap_or(meta.gid),
                "mtime" => {
                    if let Some(t) = parse_pax_time(text) {
                        meta.mtime = t;
                    }
                }
                k => {
                    if let Some(name) = k.strip_prefix(XATTR_PAX_PREFIX) {
                        if name.starts_with(OVERLAY_XATTR_PREFIX) {
                            tracing::warn!(xattr = name, "ignoring overlayfs xattr in a layer");
                        } else {
                            meta.xattrs.push((name.to_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(meta)
}

fn parse_pax_time(s: &str) -> Option<TimeSpec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = format!("{digits:0<9}").parse().ok()?;
        if secs < 0 {
            nanos = -nanos;
        }
    }
    Some(TimeSpec::new(secs, nanos))
}

/// Owner, then mode (chown clears set-id bits), then xattrs, on an open descriptor.
/// Sets the owner of `name` in `dir` from the tar header, not following a symlink.
fn chown_at(dir: &OwnedFd, name: &OsStr, meta: &Meta) -> Result<()> {
    unistd::fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(|| "setting owner")
}

/// Sets the access and modification times of `name` in `dir`, not following a symlink.
fn set_times_at(dir: &OwnedFd, name: &OsStr, meta: &Meta) -> Result<()> {
    stat::utimensat(
        Some(dir.as_raw_fd()),
        name,
        &meta.mtime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .ctx(|| "setting times")
}

fn apply_meta_fd(fd: RawFd, meta: &Meta) -> Result<()> {
    unistd::fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .ctx(|| format!("setting owner {}:{}", meta.uid, meta.gid))?;
    stat::fchmod(fd, Mode::from_bits_truncate(meta.mode))
        .ctx(|| format!("setting mode {:o}", meta.mode))?;
    for (name, value) in &meta.xattrs {
        if let Err(e) = set_xattr_fd(fd, name, value) {
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                tracing::warn!(xattr = %name, "filesystem does not support this xattr; skipped");
            } else {
                return Err(Error::io(format!("setting xattr {name}"), e));
            }
        }
    }
    Ok(())
}

fn set_xattr_fd(fd: RawFd, name: &str, value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // An O_PATH descriptor cannot take fsetxattr: go through its /proc/self/fd magic link.
    let path = CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: name and path are valid NUL-terminated strings and value points to value.len()
    // readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `name` is one entry of a directory: not empty, `.`, `..`, nor with a `/` or NUL.
fn is_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

/// Removes `name` in `dir` unless it is absent; a directory goes with everything in it.
fn remove_existing(dir: &OwnedFd, name: &OsStr) -> Result<()> {
    if !is_name(name) {
        return Err(Error::Corrupt(format!("{name:?} is not an entry name")));
    }
    let st = match stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::io("inspecting existing entry", e.into())),
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // /proc/self/fd/N names the directory we hold, so this cannot be redirected by a symlink;
        // remove_dir_all itself never follows symlinks.
        let p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        std::fs::remove_dir_all(&p).ctx(|| "replacing existing directory")?;
    } else {
        unistd::unlinkat(
            Some(dir.as_raw_fd()),
            name,
            unistd::UnlinkatFlags::NoRemoveDir,
        )
        .ctx(|| "replacing existing entry")?;
    }
    Ok(())
}

fn same_inode(src: &OwnedFd, dir: &OwnedFd, name: &OsStr) -> bool {
    let (Ok(a), Ok(b)) = (
        stat::fstat(src.as_raw_fd()),
        stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW),
    ) else {
        return false;
    };
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn cstr(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::Corrupt("name contains a NUL byte".into()))
}

fn open_dir_at(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether every byte of `b` is zero (a word at a time).
fn is_zero(b: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: any bit pattern is a valid u64; align_to only reinterprets the aligned middle.
        unsafe { b.align_to::<u64>() }
    };
    head.iter().all(|&x| x == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_000_000);
        // set_path refuses `..`; write the raw name so hostile names can be tested.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o4777);
        h.set_path(name).unwrap();
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    fn unpack(data: Vec<u8>, dest: &Path) -> Result<UnpackStats> {
        unpack_layer(
            &mut tar::Archive::new(&data[..]),
            dest,
            UnpackLimits::default(),
        )
    }

    #[test]
    fn dot_dot_and_absolute_names_stay_inside() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let data = layer(|b| {
            file(b, "../escape", b"x", 0o644);
            file(b, "/abs", b"y", 0o644);
        });
        unpack(data, &dest).unwrap();
        assert!(!outer.path().join("escape").exists());
        assert_eq!(std::fs::read(dest.join("escape")).unwrap(), b"x");
        assert_eq!(std::fs::read(dest.join("abs")).unwrap(), b"y");
    }

    #[test]
    fn symlink_planted_by_an_earlier_entry_cannot_redirect_writes() {
        let outer = tempfile::tempdir().unwrap();
        let victim = outer.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        for (i, target) in [victim.to_str().unwrap(), "../victim"]
            .into_iter()
            .enumerate()
        {
            let dest = outer.path().join(format!("layer{i}"));
            std::fs::create_dir(&dest).unwrap();
            let data = layer(|b| {
                link(b, tar::EntryType::Symlink, "evil", target);
                file(b, "evil/pwned", b"x", 0o644);
            });
            // Resolved inside the layer, as if the layer were /: the write lands there.
            unpack(data, &dest).unwrap();
            assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
            let inside = if target.starts_with('/') {
                dest.join(target.trim_start_matches('/'))
            } else {
                dest.join("victim")
            };
            assert!(inside.join("pwned").is_file(), "{}", inside.display());
        }
        // A symlink to a directory inside the layer is followed, inside the layer.
        let dest = outer.path().join("layer-ok");
        std::fs::create_dir(&dest).unwrap();
        let data = layer(|b| {
            file(b, "real/keep", b"k", 0o644);
            link(b, tar::EntryType::Symlink, "alias", "/real");
            file(b, "alias/new", b"n", 0o644);
        });
        unpack(data, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("real/new")).unwrap(), b"n");
    }

    #[test]
    fn hardlink_through_symlink_stays_inside_and_keeps_mode() {
        let outer = tempfile::tempdir().unwrap();
        let secret = outer.path().join("secret");
        std::fs::write(&secret, b"s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dest = outer.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let data = layer(|b| {
            link(
                b,
                tar::EntryType::Symlink,
                "up",
                outer.path().to_str().unwrap(),
            );
            link(b, tar::EntryType::Link, "grab", "up/secret");
        });
        // The target does not exist inside the layer: the entry fails rather than linking out.
        assert!(unpack(data, &dest).is_err());
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
        assert_eq!(std::fs::metadata(&secret).unwrap().mode() & 0o7777, 0o600);

        let dest2 = outer.path().join("layer2");
        std::fs::create_dir(&dest2).unwrap();
        let data = layer(|b| {
            file(b, "bin/a", b"data", 0o755);
            link(b, tar::EntryType::Link, "bin/b", "bin/a");
        });
        unpack(data, &dest2).unwrap();
        let a = std::fs::metadata(dest2.join("bin/a")).unwrap();
        let b = std::fs::metadata(dest2.join("bin/b")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(
            a.mode() & 0o7777,
            0o755,
            "hardlink header mode must not apply"
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let data = layer(|b| {
            file(b, "etc/.wh.gone", b"", 0o644);
            file(b, "opq/.wh..wh..opq", b"", 0o644);
        });
        unpack(data, &dest).unwrap();
        let m = std::fs::symlink_metadata(dest.join("etc/gone")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        let mut buf = [0u8; 4];
        let p = CString::new(dest.join("opq").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and a buffer of buf.len() bytes.
        let n = unsafe {
            libc::getxattr(
                p.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(n, 1);
        assert_eq!(buf[0], b'y');
    }

    #[test]
    fn whiteouts_of_nothing_dot_or_dot_dot_are_refused_and_remove_nothing() {
        for name in [".wh...", ".wh..", ".wh.", "etc/.wh...", "etc/.wh.."] {
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("layer");
            std::fs::create_dir(&dest).unwrap();
            std::fs::write(outer.path().join("sibling"), "keep").unwrap();
            let data = layer(|b| {
                file(b, "etc/passwd", b"root", 0o644);
                file(b, name, b"", 0o644);
            });
            let err = unpack(data, &dest).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{name}: {err}");
            assert!(err.to_string().contains("whiteout"), "{name}: {err}");
            assert_eq!(
                std::fs::read_to_string(outer.path().join("sibling")).unwrap(),
                "keep",
                "{name}"
            );
            assert!(dest.join("etc/passwd").exists(), "{name}");
        }
    }

    #[test]
    fn limits_stop_an_unpack_by_bytes_and_by_entries() {
        let data = layer(|b| {
            file(b, "a", &[7u8; 3000], 0o644);
            file(b, "b", &[7u8; 3000], 0o644);
            file(b, "c", b"", 0o644);
        });
        let run = |limits| {
            let outer = tempfile::tempdir().unwrap();
            let dest = outer.path().join("layer");
            std::fs::create_dir(&dest).unwrap();
            unpack_layer(&mut tar::Archive::new(&data[..]), &dest, limits)
        };
        let err = run(UnpackLimits {
            bytes: 5000,
            entries: 0,
        })
        .unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        assert!(err.to_string().contains("max_layer_bytes"), "{err}");
        let err = run(UnpackLimits {
            bytes: 0,
            entries: 2,
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_layer_entries"), "{err}");
        let ok = run(UnpackLimits {
            bytes: 6000,
            entries: 3,
        })
        .unwrap();
        assert_eq!((ok.bytes, ok.entries), (6000, 3));
    }
}
