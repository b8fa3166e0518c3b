//! ImageFsInfo: what the image store and the containers' writable layers really occupy on disk
//! (the second for kubelet's split-disk eviction, KEP-4191).

use std::time::{SystemTime, UNIX_EPOCH};

use skiff_proto::cri::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};

use super::Cri;
use crate::error::{Error, Result};

pub async fn image_fs_info(cri: &Cri) -> Result<ImageFsInfoResponse> {
    let store = cri.images.store.clone();
    let (bytes, inodes) = tokio::task::spawn_blocking(move || store.usage())
        .await
        .map_err(|e| Error::Internal(format!("usage task: {e}")))??;
    // Every container's writable layer (its overlay's upper directory), summed.
    let node = cri.node.clone();
    let (c_bytes, c_inodes) = tokio::task::spawn_blocking(move || {
        let mut total = (0u64, 0u64);
        for c in node.containers.list() {
            // A container removed meanwhile counts nothing.
            let (b, i) = crate::store::disk_usage(&c.writable_layer()).unwrap_or((0, 0));
            total = (total.0.saturating_add(b), total.1.saturating_add(i));
        }
        total
    })
    .await
    .map_err(|e| Error::Internal(format!("usage task: {e}")))?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: cri.images.store.dir().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        }],
        container_filesystems: vec![FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: cri.node.containers.data_root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: c_bytes }),
            inodes_used: Some(UInt64Value { value: c_inodes }),
        }],
    })
}
