//! Image volumes (KEP-4639): a CRI `Mount` naming an image (kubelet pulled it first) mounts that
//! image's layers read-only, nosuid, nodev and noexec at the container path, or only the
//! image's `image_sub_path`, resolved inside the image. The shim stages each image in the
//! bundle, in the container's own mount namespace ([`ImageVolume`]); the container gets a bind
//! mount of the stage. An image stays mounted-held (RemoveImage refuses it) for as long as a
//! container record names it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use skiff_proto::cri::ContainerConfig;
use skiff_shim::api::ImageVolume;
use skiff_shim::fsutil::{fd_path, openat2_in_root};
use skiff_shim::idmap;

use crate::error::{Error, IoContext, Result};
use crate::image::reference::digest_hex;
use crate::image::store::ImageStore;

/// The directory of the bundle that holds the image volumes' stages.
const DIR: &str = "image-volumes";

/// The image volumes of one container, their images held in the store until dropped, unless
/// [`Planned::keep`] hands the holds over to the container's record.
pub struct Planned<'a> {
    store: &'a ImageStore,
    /// By index in the request's `mounts`.
    pub volumes: BTreeMap<usize, Volume>,
    kept: bool,
}

pub struct Volume {
    pub image_id: String,
    /// What the container's bind mount takes as its source.
    pub source: PathBuf,
    /// Whether the sub path (or the image's root) is a directory.
    pub is_dir: bool,
    pub shim: ImageVolume,
}

impl Planned<'_> {
    /// The container's record now holds the images (released by RemoveContainer).
    pub fn keep(mut self) {
        self.kept = true;
    }

    /// Creates the stages in the bundle: a directory for each image's root, and the sub path's
    /// mount point (a directory or a file, as the sub path is).
    pub fn make_stages(&self) -> Result<()> {
        for v in self.volumes.values() {
            std::fs::create_dir_all(&v.shim.root)
                .ctx(|| format!("creating {}", v.shim.root.display()))?;
            if v.shim.at != v.shim.root {
                if v.is_dir {
                    std::fs::create_dir_all(&v.shim.at)
                } else {
                    std::fs::File::create(&v.shim.at).map(drop)
                }
                .ctx(|| format!("creating {}", v.shim.at.display()))?;
            }
        }
        Ok(())
    }

    pub fn shim_volumes(&self) -> Vec<ImageVolume> {
        self.volumes.values().map(|v| v.shim.clone()).collect()
    }
}

impl Drop for Planned<'_> {
    fn drop(&mut self) {
        if !self.kept {
            for v in self.volumes.values() {
                self.store.release_volume(&v.image_id);
            }
        }
    }
}

/// Checks each image mount of `cfg` (no host path, a clean relative sub path that exists in the
/// image) and holds its image. The container's bundle will be `bundle`.
pub fn plan<'a>(
    store: &'a ImageStore,
    cfg: &ContainerConfig,
    bundle: &Path,
    userns: bool,
) -> Result<Planned<'a>> {
    let mut planned = Planned {
        store,
        volumes: BTreeMap::new(),
        kept: false,
    };
    for (i, m) in cfg.mounts.iter().enumerate() {
        let Some(name) = m.image.as_ref().map(|s| s.image.as_str()) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let field = format!("mounts[{i}]");
        if !m.host_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{field}.host_path: must be empty for an image volume (image {name})"
            )));
        }
        if userns {
            return Err(Error::InvalidArgument(format!(
                "{field}.image: image volumes in a pod with its own user namespace are not \
                 supported by this skiff"
            )));
        }
        let sub = sub_path(&m.image_sub_path)
            .map_err(|e| Error::InvalidArgument(format!("{field}.image_sub_path: {e}")))?;
        let rec = store.hold_volume(name).ok_or_else(|| {
            Error::NotFound(format!(
                "{field}.image: image {name} not found: pull it first"
            ))
        })?;
        let lower: Vec<String> = rec
            .chain_ids
            .iter()
            .rev()
            .map(|c| digest_hex(c).to_string())
            .collect();
        let root = bundle.join(DIR).join(i.to_string());
        let layers: Vec<PathBuf> = lower
            .iter()
            .map(|l| store.dir().join("layers").join(l))
            .collect();
        // In `planned` from here on, so a failing check below releases the hold with it.
        let vol = planned.volumes.entry(i).or_insert(Volume {
            image_id: rec.id.clone(),
            source: root.clone(),
            is_dir: true,
            shim: ImageVolume {
                lower,
                sub_path: m.image_sub_path.clone(),
                root: root.clone(),
                at: root,
            },
        });
        if let Some(sub) = sub {
            vol.is_dir = sub_path_is_dir(&layers, &sub).map_err(|e| match e {
                SubPathError::Missing(e) => Error::NotFound(format!(
                    "{field}.image_sub_path: {:?} does not exist in image {name}: {e}",
                    m.image_sub_path
                )),
                SubPathError::Mount(e) => Error::Internal(format!(
                    "{field}.image: mounting image {name} to look up its sub path: {e}"
                )),
            })?;
            vol.shim.at = bundle.join(DIR).join(format!("{i}.sub"));
            vol.source = vol.shim.at.clone();
        }
    }
    Ok(planned)
}

/// A sub path as the request gives it: empty (the image's root), or relative without `..`.
fn sub_path(p: &str) -> std::result::Result<Option<PathBuf>, String> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err(format!("{p:?} is not relative"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{p:?} contains .."));
    }
    Ok(Some(path.to_path_buf()))
}

enum SubPathError {
    Missing(std::io::Error),
    Mount(std::io::Error),
}

/// Whether `sub` exists in the image of `layers` (top first) and is a directory, looked up in a
/// detached read-only mount of the image (gone when its descriptor closes), with symlinks
/// resolved inside the image.
fn sub_path_is_dir(layers: &[PathBuf], sub: &Path) -> std::result::Result<bool, SubPathError> {
    let tree = idmap::image_tree(layers).map_err(SubPathError::Mount)?;
    let fd = openat2_in_root(&tree, sub, libc::O_PATH | libc::O_CLOEXEC)
        .map_err(SubPathError::Missing)?;
    let meta = std::fs::metadata(fd_path(&fd)).map_err(SubPathError::Missing)?;
    Ok(meta.mode() & libc::S_IFMT == libc::S_IFDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_relative() {
        assert_eq!(sub_path("").unwrap(), None);
        assert_eq!(sub_path("a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert!(sub_path("/etc").is_err());
        assert!(sub_path("a/../../etc").is_err());
        assert!(sub_path("a\0b").is_err());
    }
}
