//! PullImage.

use skiff_proto::cri::{PullImageRequest, PullImageResponse};

use super::Cri;
use crate::error::{Error, Result};

pub async fn pull_image(cri: &Cri, req: PullImageRequest) -> Result<PullImageResponse> {
    let spec = req
        .image
        .ok_or_else(|| Error::InvalidArgument("image: field is required".into()))?;
    cri.cfg.handler(&spec.runtime_handler)?;
    let began = std::time::Instant::now();
    let pulled = cri.images.pull(&spec.image, req.auth.as_ref()).await;
    crate::metrics::get().pulled(began, pulled.as_ref().ok().map(|r| r.size));
    let rec = pulled?;
    Ok(PullImageResponse { image_ref: rec.id })
}
