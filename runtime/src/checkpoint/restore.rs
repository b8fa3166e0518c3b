//! Restoring a checkpoint through CRI, the way CRI-O does for `crictl`: a CreateContainer
//! whose `image` is the path of a checkpoint archive (or an OCI image whose manifest carries a
//! checkpoint annotation and whose layer holds the archive's files) creates a container marked
//! for restore.
//! Its command, environment, working directory and annotations come from the archive's
//! `spec.dump`, its image from `config.dump` (pulled by digest when missing), its rootfs is a
//! fresh one of that image with `rootfs-diff.tar` and `deleted.files` applied (as overlay
//! whiteouts), and every bind mount the archive records must be given again by the request,
//! which says where its source is on this node. StartContainer then asks the pod's shim to
//! restore the process tree with CRIU (`skiff-shim restore`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use skiff_proto::cri::{ContainerConfig, ContainerMetadata, ImageSpec, KeyValue};

use crate::error::{Error, IoContext, Result};
use crate::image::store::ImageRecord;

/// Mounts every container gets from skiff itself, whatever the request says: an archive's
/// record of them needs no mount in the request (CRI-O keeps the same list).
const OWN_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/dev/shm",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/secrets",
    "/run/.containerenv",
];

/// Manifest annotations that mark an OCI image as a checkpoint (its layer holds the archive's
/// files): checkpointctl's and buildah's, and CRI-O's older one.
pub const CHECKPOINT_ANNOTATIONS: &[&str] = &[
    "org.criu.checkpoint.container.name",
    "io.kubernetes.cri-o.annotations.checkpoint.name",
];

/// Whether a CreateContainer request names a checkpoint archive: its image is a file path (an
/// image reference never starts with `/`).
pub fn is_archive(cfg: &ContainerConfig) -> bool {
    cfg.image.as_ref().is_some_and(|i| i.image.starts_with('/'))
}

/// `config.dump`, as skiff, CRI-O and containerd write it (the fields a restore reads).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub rootfs_image_name: String,
    #[serde(default)]
    pub rootfs_image_ref: String,
}

/// A checkpoint archive unpacked into a work directory.
pub struct Archive {
    /// The archive as the request named it.
    pub path: String,
    /// Where it was unpacked.
    pub dir: PathBuf,
    pub config: ConfigDump,
    /// `spec.dump`: the OCI spec of the checkpointed container.
    pub spec: serde_json::Value,
}

fn bad(path: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("config.image.image: {path}: {why}"))
}

/// Opens `name` in the unpacked checkpoint `dir` as a regular file, resolving it inside `dir`
/// and following no symlink out of it: the archive is its author's, not the node's.
fn open_in_archive(path: &str, dir: &Path, name: &str) -> Result<std::fs::File> {
    let root = skiff_shim::fsutil::open_dir(dir).ctx(|| format!("opening {}", dir.display()))?;
    let fd = skiff_shim::fsutil::openat2_in_root(
        &root,
        Path::new(name),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            bad(path, format!("not a checkpoint archive: it has no {name}"))
        }
        _ => bad(path, format!("{name}: {e} (a link is not followed)")),
    })?;
    let f = std::fs::File::from(fd);
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err(bad(path, format!("{name} is not a regular file")));
    }
    Ok(f)
}

impl Archive {
    /// Unpacks the archive at `path` into `dir` (which must not exist) and reads its
    /// descriptions. A file that is not a tar, or a tar without a checkpoint in it, is refused.
    pub fn unpack(path: &str, dir: &Path) -> Result<Archive> {
        let p = Path::new(path);
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!(
                "config.image.image: checkpoint archive {path} does not exist"
            )),
            _ => bad(path, e),
        })?;
        if !meta.is_file() {
            return Err(bad(
                path,
                "is not a file (a checkpoint archive is a tar file)",
            ));
        }
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let f = std::fs::File::open(p).map_err(|e| bad(path, e))?;
        let mut tar = tar::Archive::new(f);
        tar.set_preserve_permissions(true);
        // Entries are kept inside `dir` (`unpack` refuses `..` and absolute paths).
        tar.unpack(dir)
            .map_err(|e| bad(path, format!("not a readable tar archive: {e}")))?;
        Archive::read(path, dir)
    }

    /// The checkpoint an OCI checkpoint image (`reference`) carries in its layers (unpacked
    /// under `layers`, bottom first), copied into `dir`.
    pub fn from_image(reference: &str, layers: &[PathBuf], dir: &Path) -> Result<Archive> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        for l in layers {
            let out = std::process::Command::new("cp")
                .arg("-a")
                .arg(l.join("."))
                .arg(dir)
                .output()
                .ctx(|| "running cp")?;
            if !out.status.success() {
                return Err(Error::Internal(format!(
                    "copying the checkpoint out of image {reference}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Archive::read(reference, dir)
    }

    /// Reads the descriptions of a checkpoint laid out in `dir`.
    fn read(path: &str, dir: &Path) -> Result<Archive> {
        let read = |name: &str| -> Result<serde_json::Value> {
            let mut raw = vec![];
            std::io::Read::read_to_end(&mut open_in_archive(path, dir, name)?, &mut raw)
                .map_err(|e| bad(path, format!("{name}: {e}")))?;
            serde_json::from_slice(&raw).map_err(|e| bad(path, format!("{name}: {e}")))
        };
        let config: ConfigDump = serde_json::from_value(read("config.dump")?)
            .map_err(|e| bad(path, format!("config.dump: {e}")))?;
        if config.rootfs_image_name.is_empty() && config.rootfs_image_ref.is_empty() {
            return Err(bad(path, "config.dump names no image (rootfsImageName)"));
        }
        let spec = read("spec.dump")?;
        open_in_archive(path, dir, "checkpoint/inventory.img")?;
        if !spec["process"]["args"].is_array() {
            return Err(bad(path, "spec.dump has no process.args"));
        }
        Ok(Archive {
            path: path.to_string(),
            dir: dir.to_path_buf(),
            config,
            spec,
        })
    }

    /// Refuses a restore whose checkpointed process had more privilege than `granted` (the OCI
    /// spec built from the restore request) allows, naming what differs: another user or group,
    /// a capability the request does not give, no_new_privs off where the request sets it, and
    /// seccomp, AppArmor or SELinux confinement other than the request's (CRIU restores the
    /// dumped state as it was; none can be applied afterwards).
    pub fn check_privileges(&self, granted: &serde_json::Value) -> Result<()> {
        let (old, new) = (&self.spec["process"], &granted["process"]);
        let differs = |what: String| {
            Err(Error::FailedPrecondition(format!(
                "restoring {}: {what}: a restored container gets no more than its request grants",
                self.path
            )))
        };
        for id in ["uid", "gid"] {
            let (o, n) = (
                old["user"][id].as_u64().unwrap_or(0),
                new["user"][id].as_u64().unwrap_or(0),
            );
            if o != n {
                return differs(format!(
                    "the checkpoint ran as {id} {o}, the request grants {id} {n}"
                ));
            }
        }
        let groups = |v: &serde_json::Value| -> Vec<u64> {
            let mut g: Vec<u64> = v["user"]["additionalGids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_u64())
                .collect();
            g.sort_unstable();
            g.dedup();
            g
        };
        let extra: Vec<u64> = groups(old)
            .into_iter()
            .filter(|g| !groups(new).contains(g))
            .collect();
        if !extra.is_empty() {
            return differs(format!(
                "the checkpoint had supplementary groups {extra:?} the request does not give"
            ));
        }
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            let caps = |v: &serde_json::Value| -> Vec<String> {
                v["capabilities"][set]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            };
            let have = caps(new);
            let extra: Vec<String> = caps(old)
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect();
            if !extra.is_empty() {
                return differs(format!(
                    "the checkpoint had {} in its {set} capabilities",
                    extra.join(", ")
                ));
            }
        }
        if new["noNewPrivileges"].as_bool() == Some(true)
            && old["noNewPrivileges"].as_bool() != Some(true)
        {
            return differs("the checkpoint ran without no_new_privs".into());
        }
        let none_if_null = |v: &serde_json::Value| (!v.is_null()).then(|| v.clone());
        if none_if_null(&self.spec["linux"]["seccomp"])
            != none_if_null(&granted["linux"]["seccomp"])
        {
            return differs("its seccomp profile is not the request's".into());
        }
        for (key, what) in [
            ("apparmorProfile", "AppArmor profile"),
            ("selinuxLabel", "SELinux label"),
        ] {
            let (o, n) = (
                old[key].as_str().unwrap_or(""),
                new[key].as_str().unwrap_or(""),
            );
            // A fresh SELinux level is picked for every container: compare the type only.
            let strip = |l: &str| l.splitn(4, ':').take(3).collect::<Vec<_>>().join(":");
            let same = if key == "selinuxLabel" {
                strip(o) == strip(n)
            } else {
                o == n
            };
            if !same {
                return differs(format!(
                    "the checkpoint ran under {what} {o:?}, the request asks for {n:?}"
                ));
            }
        }
        Ok(())
    }

    /// The destinations of the checkpointed container's bind mounts, but for skiff's own.
    pub fn bind_mounts(&self) -> Vec<String> {
        let mut out: Vec<String> = super::bind_destinations(&self.spec)
            .into_iter()
            .filter(|d| !OWN_MOUNTS.contains(&d.trim_end_matches('/')))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether the checkpointed container had a terminal.
    pub fn tty(&self) -> bool {
        self.spec["process"]["terminal"].as_bool().unwrap_or(false)
    }

    /// The references to find or pull the original image by, best first: a digest reference
    /// pins the very layers the rootfs diff was made against.
    pub fn image_candidates(&self) -> Vec<String> {
        let c = &self.config;
        let mut out = vec![];
        if c.rootfs_image_ref.contains('@') {
            out.push(c.rootfs_image_ref.clone());
        }
        out.push(c.rootfs_image_name.clone());
        if !c.rootfs_image_ref.contains('@') {
            out.push(c.rootfs_image_ref.clone());
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Refuses a request that does not give every bind mount the archive records, and an
    /// archive of a container with a terminal.
    pub fn check(&self, req: &ContainerConfig) -> Result<()> {
        let given: Vec<String> = req
            .mounts
            .iter()
            .map(|m| m.container_path.trim_end_matches('/').to_string())
            .collect();
        let missing: Vec<String> = self
            .bind_mounts()
            .into_iter()
            .filter(|d| !given.iter().any(|g| g == d.trim_end_matches('/')))
            .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "config.mounts: restoring {} needs the bind mounts it was checkpointed with; \
                 missing: {}",
                self.path,
                missing.join(", ")
            )));
        }
        if self.tty() {
            return Err(Error::Unsupported(format!(
                "config.image.image: {}: restoring a container with a terminal (tty) is not \
                 supported",
                self.path
            )));
        }
        Ok(())
    }

    /// The CreateContainer request for the restored container: the checkpointed container's
    /// command, environment, working directory and annotations; the request's name (else the
    /// original's), labels, mounts, log path and Linux settings. Checked as [`Archive::check`].
    pub fn container_config(&self, req: &ContainerConfig, image: &str) -> Result<ContainerConfig> {
        self.check(req)?;
        let process = &self.spec["process"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let envs = strings(&process["env"])
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => KeyValue {
                    key: k.into(),
                    value: v.into(),
                },
                None => KeyValue {
                    key: kv,
                    value: Vec::new(),
                },
            })
            .collect();
        let mut annotations: BTreeMap<String, String> = req
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in self.spec["annotations"].as_object().into_iter().flatten() {
            if let Some(v) = v.as_str() {
                annotations.insert(k.clone(), v.to_string());
            }
        }
        let original = req.metadata.clone().unwrap_or_default();
        let name = if original.name.is_empty() {
            self.config.name.clone()
        } else {
            original.name.clone()
        };
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "config.metadata.name: is empty, and the checkpoint names no container".into(),
            ));
        }
        Ok(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name,
                attempt: original.attempt,
            }),
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: strings(&process["args"]),
            args: vec![],
            working_dir: process["cwd"].as_str().unwrap_or_default().to_string(),
            envs,
            mounts: req.mounts.clone(),
            devices: req.devices.clone(),
            labels: req.labels.clone(),
            annotations: annotations.into_iter().collect(),
            log_path: req.log_path.clone(),
            stdin: false,
            stdin_once: false,
            tty: false,
            linux: req.linux.clone(),
            ..Default::default()
        })
    }

    /// Puts the checkpointed container's rootfs changes into the new container's overlay
    /// upper directory: `rootfs-diff.tar` unpacked into it, and each path of `deleted.files`
    /// hidden by a whiteout (a 0:0 character device, as overlayfs writes on deletion).
    pub fn apply_rootfs_diff(&self, upper: &Path) -> Result<()> {
        if self.dir.join("rootfs-diff.tar").symlink_metadata().is_ok() {
            let f = open_in_archive(&self.path, &self.dir, "rootfs-diff.tar")?;
            let mut tar = tar::Archive::new(f);
            tar.set_preserve_permissions(true);
            tar.set_preserve_ownerships(true);
            tar.set_preserve_mtime(true);
            tar.set_overwrite(true);
            tar.unpack(upper)
                .map_err(|e| bad(&self.path, format!("rootfs-diff.tar: {e}")))?;
        }
        let list: Vec<String> = if self.dir.join("deleted.files").symlink_metadata().is_ok() {
            let mut raw = vec![];
            std::io::Read::read_to_end(
                &mut open_in_archive(&self.path, &self.dir, "deleted.files")?,
                &mut raw,
            )
            .map_err(|e| bad(&self.path, format!("deleted.files: {e}")))?;
            serde_json::from_slice(&raw)
                .map_err(|e| bad(&self.path, format!("deleted.files: {e}")))?
        } else {
            vec![]
        };
        for p in list {
            let rel = relative(&p)
                .ok_or_else(|| bad(&self.path, format!("deleted.files: bad path {p:?}")))?;
            whiteout(upper, &rel)
                .map_err(|e| bad(&self.path, format!("deleted.files: hiding {p}: {e}")))?;
        }
        Ok(())
    }
}

impl crate::node::Node {
    /// The image a CreateContainer request names, when it is a checkpoint image.
    pub fn checkpoint_image(&self, cfg: &ContainerConfig) -> Option<ImageRecord> {
        let name = &cfg.image.as_ref()?.image;
        let image = self.images.store.resolve(name)?;
        CHECKPOINT_ANNOTATIONS
            .iter()
            .any(|a| image.annotations.contains_key(*a))
            .then_some(image)
    }

    /// CreateContainer of a checkpoint archive, or of a checkpoint image (`image`; see the
    /// module): unpacks and checks it, finds (or pulls) its image, and creates the container
    /// marked for restore.
    pub async fn create_restored(
        &self,
        pod_id: &str,
        req: ContainerConfig,
        image: Option<ImageRecord>,
    ) -> Result<String> {
        let path = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image.is_some() && !self.cfg.restore_from_images {
            return Err(Error::FailedPrecondition(format!(
                "image {path} is a checkpoint: restoring from checkpoint images is off on this \
                 node (an operator turns it on with restore_from_images = true)"
            )));
        }
        let pod = self.pods.find(pod_id)?;
        let ns = crate::pod::lifecycle::pod_namespaces(pod.config())?;
        if ns.pid != skiff_shim::api::PidMode::Container {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {}: a restored container needs a PID namespace of its own \
                 (namespace_options.pid CONTAINER, kubelet's default)",
                pod.id
            )));
        }
        if ns.userns.is_some() {
            return Err(Error::Unsupported(format!(
                "pod sandbox {}: restoring into a pod with a user namespace is not supported",
                pod.id
            )));
        }
        let work = super::work_dir(
            &self.cfg.root,
            &format!("restore-{}", hex::encode(rand::random::<[u8; 8]>())),
        );
        let result = async {
            let archive = match &image {
                None => Archive::unpack(&path, &work)?,
                Some(img) => {
                    let layers: Vec<PathBuf> = img
                        .chain_ids
                        .iter()
                        .map(|c| self.images.store.layer_path(c))
                        .collect();
                    Archive::from_image(&path, &layers, &work)?
                }
            };
            // The mounts and the terminal are checked before any image is pulled.
            archive.check(&req)?;
            self.criu
                .as_ref()
                .map_err(|why| Error::FailedPrecondition(format!("restoring {path}: {why}")))?;
            let image = self.restore_image(&archive).await?;
            let cfg = archive.container_config(&req, &image)?;
            self.create_container(pod_id, cfg, Some(&archive)).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&work);
        let id = result?;
        tracing::info!(container = %id, archive = %path, "container created from a checkpoint");
        Ok(id)
    }

    /// The checkpointed container's image: found by digest or name, else pulled (by digest
    /// first, which pins the layers its rootfs diff was made on).
    async fn restore_image(&self, archive: &Archive) -> Result<String> {
        let candidates = archive.image_candidates();
        for c in &candidates {
            if self.images.store.resolve(c).is_some() {
                return Ok(c.clone());
            }
        }
        let mut errors = vec![];
        for c in &candidates {
            match self.images.pull(c, None).await {
                Ok(_) => return Ok(c.clone()),
                Err(e) => errors.push(format!("{c}: {e}")),
            }
        }
        Err(Error::NotFound(format!(
            "restoring {}: the checkpoint's image is not here and could not be pulled ({})",
            archive.path,
            errors.join("; ")
        )))
    }
}

/// `p` as a relative path of normal components only (no `..`), or None.
fn relative(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Makes `rel` a whiteout in the upper directory `upper`, creating its parent directories
/// (never following a symlink: each is opened inside `upper`).
fn whiteout(upper: &Path, rel: &Path) -> std::io::Result<()> {
    use skiff_shim::fsutil;
    let root = fsutil::open_dir(upper)?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = fsutil::mkdir_all_in_root(&root, parent)?;
    let name = rel.file_name().unwrap_or_default();
    // A file the diff put there is replaced by the whiteout.
    let _ = nix::unistd::unlinkat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    nix::sys::stat::mknodat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
        name,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .or_else(|e| {
        if e == nix::errno::Errno::EEXIST {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::cri::Mount;

    /// A checkpoint archive as skiff writes one, with a data volume and a deletion.
    fn archive(dir: &Path) -> PathBuf {
        let content = dir.join("content");
        std::fs::create_dir_all(content.join("checkpoint")).unwrap();
        std::fs::write(content.join("checkpoint/inventory.img"), b"x").unwrap();
        std::fs::write(
            content.join("config.dump"),
            r#"{"name":"counter","rootfsImageName":"reg/busybox:v1","rootfsImageRef":"reg/busybox@sha256:ab"}"#,
        )
        .unwrap();
        std::fs::write(
            content.join("spec.dump"),
            r#"{"process":{"args":["sh","-c","count"],"env":["PATH=/bin","A=b=c"],"cwd":"/w"},
               "annotations":{"k":"from-archive"},
               "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                         {"destination":"/etc/hosts","type":"bind","source":"/x/hosts","options":["rbind"]},
                         {"destination":"/data","type":"bind","source":"/old/vol","options":["rbind"]},
                         {"destination":"/cfg","source":"/old/cfg","options":["bind","ro"]}]}"#,
        )
        .unwrap();
        let upper = dir.join("old-upper");
        std::fs::create_dir_all(upper.join("tmp")).unwrap();
        std::fs::write(upper.join("tmp/written"), b"kept").unwrap();
        super::super::rootfs_diff(&upper, &content.join("rootfs-diff.tar")).unwrap();
        std::fs::write(
            content.join("deleted.files"),
            r#"["/bin/true","/tmp/written"]"#,
        )
        .unwrap();
        let out = dir.join("c.tar");
        super::super::write_archive(&content, &out).unwrap();
        out
    }

    fn mount(path: &str) -> Mount {
        Mount {
            container_path: path.into(),
            host_path: format!("/new{path}"),
            ..Default::default()
        }
    }

    #[test]
    fn an_archive_gives_the_container_its_config() {
        let d = tempfile::tempdir().unwrap();
        let path = archive(d.path());
        let a = Archive::unpack(path.to_str().unwrap(), &d.path().join("unpacked")).unwrap();
        assert_eq!(a.bind_mounts(), vec!["/cfg", "/data"]);
        assert_eq!(
            a.image_candidates(),
            vec!["reg/busybox@sha256:ab", "reg/busybox:v1"]
        );

        // Every recorded bind mount must be given again.
        let mut req = ContainerConfig {
            mounts: vec![mount("/data")],
            annotations: [
                ("k".to_string(), "req".to_string()),
                ("r".into(), "1".into()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let err = a.container_config(&req, "img").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("config.mounts") && m.contains("missing: /cfg")),
            "{err:?}"
        );
        req.mounts.push(mount("/cfg/"));
        let c = a.container_config(&req, "img").unwrap();
        assert_eq!(c.metadata.unwrap().name, "counter");
        assert_eq!(c.command, vec!["sh", "-c", "count"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.envs[1].key, "A");
        assert_eq!(c.envs[1].value, b"b=c");
        assert_eq!(c.annotations["k"], "from-archive");
        assert_eq!(c.annotations["r"], "1");
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(c.image.unwrap().image, "img");

        // The rootfs diff lands in the new upper directory; deletions become whiteouts, also
        // over a file the diff brought.
        let upper = d.path().join("new-upper");
        std::fs::create_dir_all(&upper).unwrap();
        a.apply_rootfs_diff(&upper).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        for w in ["bin/true", "tmp/written"] {
            let m = std::fs::symlink_metadata(upper.join(w)).unwrap();
            assert!(m.file_type().is_char_device() && m.rdev() == 0, "{w}");
        }
    }

    #[test]
    fn foreign_and_corrupt_archives_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let missing = Archive::unpack("/nonexistent/c.tar", &d.path().join("a"))
            .err()
            .unwrap();
        assert!(matches!(&missing, Error::NotFound(m) if m.contains("/nonexistent/c.tar")));
        let junk = d.path().join("junk.tar");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = Archive::unpack(junk.to_str().unwrap(), &d.path().join("b"))
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("junk.tar")),
            "{err:?}"
        );
        // A tar, but not of a checkpoint.
        let content = d.path().join("other");
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("hello"), b"x").unwrap();
        let other = d.path().join("other.tar");
        super::super::write_archive(&content, &other).unwrap();
        let err = Archive::unpack(other.to_str().unwrap(), &d.path().join("c"))
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("not a checkpoint archive") && m.contains("config.dump")),
            "{err:?}"
        );
        assert!(relative("/a/../../etc").is_none());
        assert_eq!(relative("/a/b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn archive_files_are_never_read_through_links_out_of_it() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret.json");
        std::fs::write(
            &secret,
            r#"{"name":"x","rootfsImageName":"host/secret:v1"}"#,
        )
        .unwrap();
        let dir = d.path().join("unpacked");
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        std::fs::write(dir.join("checkpoint/inventory.img"), b"x").unwrap();
        std::fs::write(dir.join("spec.dump"), r#"{"process":{"args":["sh"]}}"#).unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("config.dump")).unwrap();
        let err = Archive::read("a.tar", &dir).err().expect("refused");
        assert!(err.to_string().contains("config.dump"), "{err}");
        // A relative link up and out is resolved inside the archive (and is not there).
        std::fs::remove_file(dir.join("config.dump")).unwrap();
        std::os::unix::fs::symlink("../secret.json", dir.join("config.dump")).unwrap();
        assert!(Archive::read("a.tar", &dir).is_err());
        // A directory in place of a file.
        std::fs::remove_file(dir.join("config.dump")).unwrap();
        std::fs::create_dir(dir.join("config.dump")).unwrap();
        let err = Archive::read("a.tar", &dir).err().expect("refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_restore_gets_no_more_privilege_than_its_request() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("unpacked");
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        std::fs::write(dir.join("checkpoint/inventory.img"), b"x").unwrap();
        std::fs::write(
            dir.join("config.dump"),
            r#"{"name":"c","rootfsImageName":"r/b:v1"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("spec.dump"),
            r#"{"process":{"args":["sh"],"user":{"uid":1000,"gid":1000,"additionalGids":[1000]},
                "capabilities":{"bounding":["CAP_CHOWN"],"effective":["CAP_CHOWN"]},
                "noNewPrivileges":true,
                "selinuxLabel":"system_u:system_r:container_t:s0:c1,c2"}}"#,
        )
        .unwrap();
        let a = Archive::read("a.tar", &dir).expect("archive");
        let same = serde_json::json!({"process":{"user":{"uid":1000,"gid":1000,"additionalGids":[1000, 5]},
            "capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN"]},
            "noNewPrivileges":true,
            "selinuxLabel":"system_u:system_r:container_t:s0:c7,c9"}});
        a.check_privileges(&same)
            .expect("the request grants as much");
        for (edit, want) in [
            ("/process/user/uid", "uid 1000"),
            ("/process/capabilities/bounding", "CAP_CHOWN"),
            ("/process/noNewPrivileges", ""),
            ("/process/selinuxLabel", "SELinux"),
        ] {
            let mut g = same.clone();
            let v = g.pointer_mut(edit).unwrap();
            *v = match edit {
                "/process/user/uid" => serde_json::json!(0),
                "/process/capabilities/bounding" => serde_json::json!([]),
                "/process/noNewPrivileges" => serde_json::json!(false),
                _ => serde_json::json!("system_u:system_r:spc_t:s0"),
            };
            if edit == "/process/noNewPrivileges" {
                // Dropping no_new_privs in the request is not asking for less.
                a.check_privileges(&g)
                    .expect("no_new_privs off in the request");
                continue;
            }
            let err = a.check_privileges(&g).expect_err("refused");
            assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
            assert!(err.to_string().contains(want), "{edit}: {err}");
        }
        // A seccomp filter in the request that the checkpoint did not run under.
        let mut g = same.clone();
        g["linux"] = serde_json::json!({"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}});
        let err = a.check_privileges(&g).expect_err("refused");
        assert!(err.to_string().contains("seccomp"), "{err}");
    }
}
