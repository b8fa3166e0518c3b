//! ImageFsInfo: what the image store really occupies on disk.

use std::time::{SystemTime, UNIX_EPOCH};

use skiff_proto::cri::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};

use super::Cri;
use crate::error::{Error, Result};

pub async fn image_fs_info(cri: &Cri) -> Result<ImageFsInfoResponse> {
    let store = cri.images.store.clone();
    let (bytes, inodes) = tokio::task::spawn_blocking(move || store.usage())
        .await
        .map_err(|e| Error::Internal(format!("usage task: {e}")))??;
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
        container_filesystems: vec![],
    })
}
