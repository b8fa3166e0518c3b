//! The spec's `mounts` from the request: bind mounts of host paths (idmapped in a pod with its
//! own user namespace) and image volumes, checked, with the records ContainerStatus reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, Mount, MountBuilder};
use skiff_proto::cri::{ContainerConfig, MountPropagation};

use crate::container::image_volume;
use crate::container::MountRecord;
use crate::error::{Error, Result};

pub(super) fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ.to_string())
        .source(PathBuf::from(source))
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::Internal(format!("mount {dest}: {e}")))
}

/// The request's volumes, checked: absolute container paths, existing (or creatable) host paths.
/// Id ranges as the OCI spec writes them.
pub(super) fn oci_idmaps(v: &[skiff_shim::idmap::IdRange]) -> Result<Vec<LinuxIdMapping>> {
    v.iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.container)
                .host_id(r.host)
                .size(r.len)
                .build()
                .map_err(|e| Error::Internal(format!("id mapping: {e}")))
        })
        .collect()
}

/// The request's volumes as OCI bind mounts. In a pod with its own user namespace (`userns`)
/// each is idmapped (option `ridmap`): with the mount's own `uidMappings`/`gidMappings` when
/// kubelet sends them, else with the pod's mapping. Image volumes (`images`, by index) are
/// bound read-only, nosuid, nodev and noexec from their stages in the bundle.
pub fn user_mounts(
    cfg: &ContainerConfig,
    userns: bool,
    images: &BTreeMap<usize, image_volume::Volume>,
) -> Result<(Vec<Mount>, Vec<MountRecord>)> {
    let mut mounts = vec![];
    let mut records = vec![];
    for (i, m) in cfg.mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "{field}.container_path: {:?} is not absolute",
                m.container_path
            )));
        }
        if m.container_path.split('/').any(|c| c == "..") {
            return Err(Error::InvalidArgument(format!(
                "{field}.container_path: {:?} contains ..",
                m.container_path
            )));
        }
        if let Some(v) = images.get(&i) {
            if m.propagation() != MountPropagation::PropagationPrivate {
                return Err(Error::InvalidArgument(format!(
                    "{field}.propagation: an image volume is mounted private"
                )));
            }
            let source = v.source.display().to_string();
            let opts = ["bind", "ro", "nosuid", "nodev", "noexec", "rprivate"];
            mounts.push(mount(&m.container_path, "bind", &source, &opts)?);
            records.push(MountRecord {
                container_path: m.container_path.clone(),
                host_path: String::new(),
                readonly: true,
                propagation: m.propagation,
                image: v.image_id.clone(),
                image_sub_path: m.image_sub_path.clone(),
            });
            continue;
        }
        if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
            return Err(Error::Internal(format!(
                "{field}.image: image volume was not prepared"
            )));
        }
        if !m.host_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "{field}.host_path: {:?} is not absolute",
                m.host_path
            )));
        }
        // As the CRI asks: recursive read-only needs readonly and private propagation.
        if m.recursive_read_only && !m.readonly {
            return Err(Error::InvalidArgument(format!(
                "{field}.recursive_read_only: requires readonly"
            )));
        }
        if m.recursive_read_only && m.propagation() != MountPropagation::PropagationPrivate {
            return Err(Error::InvalidArgument(format!(
                "{field}.recursive_read_only: requires private propagation"
            )));
        }
        let has_maps = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
        if has_maps && !userns {
            return Err(Error::InvalidArgument(format!(
                "{field}.uidMappings: idmapped volumes need a pod user namespace \
                 (userns_options mode POD)"
            )));
        }
        let maps = if has_maps {
            let (u, g) = (
                crate::pod::lifecycle::id_ranges(&m.uid_mappings),
                crate::pod::lifecycle::id_ranges(&m.gid_mappings),
            );
            skiff_shim::idmap::validate(&u, &format!("{field}.uidMappings"))
                .map_err(Error::InvalidArgument)?;
            skiff_shim::idmap::validate(&g, &format!("{field}.gidMappings"))
                .map_err(Error::InvalidArgument)?;
            Some((u, g))
        } else {
            None
        };
        let host = Path::new(&m.host_path);
        if std::fs::symlink_metadata(host).is_err() {
            // As containerd does: a missing host path becomes a directory.
            std::fs::create_dir_all(host).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{field}.host_path: {} does not exist and cannot be created: {e}",
                    m.host_path
                ))
            })?;
        }
        let prop = match m.propagation() {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
        };
        let mut opts = vec!["rbind", prop];
        if m.recursive_read_only {
            opts.push("rro");
        } else if m.readonly {
            opts.push("ro");
        }
        if userns {
            opts.push("ridmap");
        }
        let mut mnt = mount(&m.container_path, "bind", &m.host_path, &opts)?;
        if let Some((u, g)) = maps {
            mnt.set_uid_mappings(Some(oci_idmaps(&u)?));
            mnt.set_gid_mappings(Some(oci_idmaps(&g)?));
        }
        mounts.push(mnt);
        records.push(MountRecord {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            propagation: m.propagation,
            image: String::new(),
            image_sub_path: String::new(),
        });
    }
    Ok((mounts, records))
}
