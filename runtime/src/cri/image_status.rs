//! ImageStatus, and the CRI view of an image record that ListImages shares.

use std::collections::HashMap;

use skiff_proto::cri::{Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value};

use super::Cri;
use crate::error::{Error, Result};
use crate::image::pinned::PinnedImages;
use crate::image::store::ImageRecord;

pub async fn image_status(cri: &Cri, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
    let spec = req
        .image
        .ok_or_else(|| Error::InvalidArgument("image: field is required".into()))?;
    // An unknown image is not an error: the response simply carries no image.
    let Some(rec) = cri.images.store.resolve(&spec.image) else {
        return Ok(ImageStatusResponse {
            image: None,
            info: HashMap::new(),
        });
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config = cri
            .images
            .store
            .read_blob(&rec.id)?
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let v = serde_json::json!({
            "imageSpec": config,
            "manifestDigest": rec.manifest_digest,
            "chainIDs": rec.chain_ids,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri_image(&rec, &cri.cfg.pinned_images)),
        info,
    })
}

/// The CRI `Image` for a record: the image's user goes to `uid` when numeric, else `username`.
pub fn to_cri_image(rec: &ImageRecord, pinned: &PinnedImages) -> Image {
    let user = rec.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(Int64Value { value: n }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    Image {
        id: rec.id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: rec.id.clone(),
            annotations: rec.annotations.clone().into_iter().collect(),
            ..Default::default()
        }),
        pinned: pinned.matches(rec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_named_users() {
        let mut r = ImageRecord {
            id: "sha256:x".into(),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest_digest: String::new(),
            blobs: vec![],
            chain_ids: vec![],
            size: 1,
            user: "1000:50".into(),
            annotations: Default::default(),
        };
        let i = to_cri_image(&r, &PinnedImages::default());
        assert_eq!(i.uid.unwrap().value, 1000);
        assert!(i.username.is_empty());
        r.user = "nobody".into();
        let i = to_cri_image(&r, &PinnedImages::default());
        assert!(i.uid.is_none());
        assert_eq!(i.username, "nobody");
    }
}
