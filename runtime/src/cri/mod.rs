//! The CRI v1 gRPC services. Thin by design: each RPC lives in the module named after it, which
//! validates the request, calls the owner (`image`, …) and maps errors through [`status`].
//! RuntimeService RPCs that are not built yet keep the generated default: `Unimplemented`.

pub mod image_fs_info;
pub mod image_list;
pub mod image_pull;
pub mod image_remove;
pub mod image_status;
pub mod runtime_info;
pub mod status;

use std::sync::Arc;

use skiff_proto::cri::image_service_server::ImageService;
use skiff_proto::cri::runtime_service_server::RuntimeService;
use skiff_proto::cri::{
    ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, RuntimeConfigRequest, RuntimeConfigResponse, StatusRequest,
    StatusResponse, VersionRequest, VersionResponse,
};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::image::Images;

/// Shared state behind both services.
#[derive(Clone)]
pub struct Cri {
    pub cfg: Arc<Config>,
    pub images: Arc<Images>,
}

/// skiff has one runtime handler, the default (empty name); any other is refused.
pub fn check_runtime_handler(h: &str) -> Result<()> {
    if h.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "runtime_handler {h:?} is unknown: skiff has only the default handler \"\""
        )))
    }
}

fn reply<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(status::to_status)
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> std::result::Result<Response<VersionResponse>, Status> {
        Ok(Response::new(runtime_info::version()))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> std::result::Result<Response<StatusResponse>, Status> {
        Ok(Response::new(runtime_info::status(self, req.get_ref())))
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> std::result::Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_info::runtime_config()))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> std::result::Result<Response<ListImagesResponse>, Status> {
        reply(image_list::list_images(self, req.into_inner()))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> std::result::Result<Response<ImageStatusResponse>, Status> {
        reply(image_status::image_status(self, req.into_inner()).await)
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> std::result::Result<Response<PullImageResponse>, Status> {
        let r = image_pull::pull_image(self, req.into_inner()).await;
        if let Err(e) = &r {
            tracing::warn!(error = %e, "PullImage failed");
        }
        reply(r)
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> std::result::Result<Response<RemoveImageResponse>, Status> {
        reply(image_remove::remove_image(self, req.into_inner()).await)
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> std::result::Result<Response<ImageFsInfoResponse>, Status> {
        reply(image_fs_info::image_fs_info(self).await)
    }
}
