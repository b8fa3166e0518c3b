//! RemoveImage: idempotent; the image goes with all its names.

use skiff_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::Cri;
use crate::error::{Error, Result};

pub async fn remove_image(cri: &Cri, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
    let spec = req
        .image
        .ok_or_else(|| Error::InvalidArgument("image: field is required".into()))?;
    if spec.image.is_empty() {
        return Err(Error::InvalidArgument("image.image: is empty".into()));
    }
    let store = cri.images.store.clone();
    let name = spec.image.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove(&name))
        .await
        .map_err(|e| Error::Internal(format!("remove task: {e}")))??;
    match removed {
        Some(r) => tracing::info!(image = %spec.image, id = %r.id, "removed image"),
        None => tracing::debug!(image = %spec.image, "remove: no such image (already removed)"),
    }
    Ok(RemoveImageResponse {})
}
