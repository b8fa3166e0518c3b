//! ListImages.

use skiff_proto::cri::{ListImagesRequest, ListImagesResponse};

use super::image_status::to_cri_image;
use super::Cri;
use crate::error::Result;

pub fn list_images(cri: &Cri, req: ListImagesRequest) -> Result<ListImagesResponse> {
    let filter = req
        .filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.is_empty());
    let images = match filter {
        // A filter names one image (by id, tag or digest); an unknown one lists nothing.
        Some(spec) => cri
            .images
            .store
            .resolve(&spec)
            .map(|r| vec![to_cri_image(&r, &cri.cfg.pinned_images)])
            .unwrap_or_default(),
        None => cri
            .images
            .store
            .list()
            .iter()
            .map(|r| to_cri_image(r, &cri.cfg.pinned_images))
            .collect(),
    };
    Ok(ListImagesResponse { images })
}
