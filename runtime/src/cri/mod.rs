//! The CRI v1 gRPC services. Thin by design: each RPC lives in the module named after it, which
//! validates the request, calls the owner (`image`, …) and maps errors through [`status`].
//! RuntimeService RPCs that are not built yet keep the generated default: `Unimplemented`.

pub mod container_attach;
pub mod container_checkpoint;
pub mod container_create;
pub mod container_events;
pub mod container_exec;
pub mod container_exec_sync;
pub mod container_list;
pub mod container_log_reopen;
pub mod container_remove;
pub mod container_start;
pub mod container_stats;
pub mod container_status;
pub mod container_stop;
pub mod container_update;
pub mod image_fs_info;
pub mod image_list;
pub mod image_pull;
pub mod image_remove;
pub mod image_status;
pub mod metric_descriptors;
pub mod runtime_info;
pub mod sandbox_list;
pub mod sandbox_metrics;
pub mod sandbox_port_forward;
pub mod sandbox_remove;
pub mod sandbox_run;
pub mod sandbox_stats;
pub mod sandbox_status;
pub mod sandbox_stop;
pub mod sandbox_update_resources;
pub mod status;
pub mod views;

use std::sync::Arc;

use skiff_proto::cri::image_service_server::ImageService;
use skiff_proto::cri::runtime_service_server::RuntimeService;
use skiff_proto::cri::{
    ContainerEventResponse, ContainerStatsRequest, ContainerStatsResponse, ContainerStatusRequest,
    ContainerStatusResponse, CreateContainerRequest, CreateContainerResponse, ExecSyncRequest,
    ExecSyncResponse, GetEventsRequest, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageStatusRequest, ImageStatusResponse, ListContainerStatsRequest, ListContainerStatsResponse,
    ListContainersRequest, ListContainersResponse, ListImagesRequest, ListImagesResponse,
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, ListPodSandboxRequest, ListPodSandboxResponse,
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse, PodSandboxStatusRequest, PodSandboxStatusResponse, PullImageRequest,
    PullImageResponse, RemoveContainerRequest, RemoveContainerResponse, RemoveImageRequest,
    RemoveImageResponse, RemovePodSandboxRequest, RemovePodSandboxResponse,
    ReopenContainerLogRequest, ReopenContainerLogResponse, RunPodSandboxRequest,
    RunPodSandboxResponse, RuntimeConfigRequest, RuntimeConfigResponse, StartContainerRequest,
    StartContainerResponse, StatusRequest, StatusResponse, StopContainerRequest,
    StopContainerResponse, StopPodSandboxRequest, StopPodSandboxResponse,
    StreamContainerStatsRequest, StreamContainerStatsResponse, StreamContainersRequest,
    StreamContainersResponse, StreamImagesRequest, StreamImagesResponse,
    StreamPodSandboxMetricsRequest, StreamPodSandboxMetricsResponse, StreamPodSandboxStatsRequest,
    StreamPodSandboxStatsResponse, StreamPodSandboxesRequest, StreamPodSandboxesResponse,
    UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
    UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse, VersionRequest,
    VersionResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::image::Images;
use crate::node::Node;

/// Shared state behind both services.
#[derive(Clone)]
pub struct Cri {
    pub cfg: Arc<Config>,
    pub images: Arc<Images>,
    pub node: Arc<Node>,
}

impl Cri {
    pub fn new(node: Arc<Node>) -> Cri {
        Cri {
            cfg: node.cfg.clone(),
            images: node.images.clone(),
            node,
        }
    }
}

fn reply<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(status::to_status)
}

/// Like [`reply`], logging failures of calls that change state.
fn reply_logged<T>(rpc: &str, r: Result<T>) -> std::result::Result<Response<T>, Status> {
    if let Err(e) = &r {
        tracing::warn!(rpc, error = %e, "CRI call failed");
    }
    reply(r)
}

type R<T> = std::result::Result<Response<T>, Status>;

/// Runs `f` (file and cgroup reads: stats) on the blocking pool.
async fn blocking<T: Send + 'static>(
    node: &Arc<Node>,
    f: impl FnOnce(&Node) -> Result<T> + Send + 'static,
) -> Result<T> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || f(&node))
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

/// How many items one message of a `Stream*` list call carries: a node with many pods answers
/// in several bounded messages instead of one that grows with it.
pub const STREAM_PAGE: usize = 50;

/// The items of a list call as a `Stream*` call sends them: pages of [`STREAM_PAGE`] items,
/// each message holding at least one (none at all for an empty list), then the end.
fn paged<T: Send + 'static, M: Send + 'static>(
    items: Vec<T>,
    wrap: fn(Vec<T>) -> M,
) -> BoxStream<M> {
    let mut pages = vec![];
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        pages.push(Ok(wrap(items.by_ref().take(STREAM_PAGE).collect())));
    }
    Box::pin(futures_util::stream::iter(pages))
}

/// A list call's result as a streamed reply.
fn reply_paged<T: Send + 'static, M: Send + 'static>(
    r: Result<Vec<T>>,
    wrap: fn(Vec<T>) -> M,
) -> R<BoxStream<M>> {
    r.map(|items| Response::new(paged(items, wrap)))
        .map_err(status::to_status)
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _req: Request<VersionRequest>) -> R<VersionResponse> {
        Ok(Response::new(runtime_info::version()))
    }

    async fn status(&self, req: Request<StatusRequest>) -> R<StatusResponse> {
        Ok(Response::new(runtime_info::status(self, req.get_ref())))
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> R<RuntimeConfigResponse> {
        Ok(Response::new(runtime_info::runtime_config(self)))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> R<RunPodSandboxResponse> {
        reply_logged(
            "RunPodSandbox",
            sandbox_run::run_pod_sandbox(&self.node, req.into_inner()).await,
        )
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> R<StopPodSandboxResponse> {
        reply_logged(
            "StopPodSandbox",
            sandbox_stop::stop_pod_sandbox(&self.node, req.into_inner()).await,
        )
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> R<RemovePodSandboxResponse> {
        reply_logged(
            "RemovePodSandbox",
            sandbox_remove::remove_pod_sandbox(&self.node, req.into_inner()).await,
        )
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> R<PodSandboxStatusResponse> {
        reply(sandbox_status::pod_sandbox_status(&self.node, req.into_inner()).await)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> R<ListPodSandboxResponse> {
        reply(sandbox_list::list_pod_sandbox(&self.node, req.into_inner()))
    }

    async fn stream_pod_sandboxes(
        &self,
        req: Request<StreamPodSandboxesRequest>,
    ) -> R<BoxStream<StreamPodSandboxesResponse>> {
        let req = ListPodSandboxRequest {
            filter: req.into_inner().filter,
        };
        reply_paged(
            sandbox_list::list_pod_sandbox(&self.node, req).map(|r| r.items),
            |pod_sandboxes| StreamPodSandboxesResponse { pod_sandboxes },
        )
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> R<CreateContainerResponse> {
        reply_logged(
            "CreateContainer",
            container_create::create_container(&self.node, req.into_inner()).await,
        )
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> R<StartContainerResponse> {
        reply_logged(
            "StartContainer",
            container_start::start_container(&self.node, req.into_inner()).await,
        )
    }

    async fn stop_container(&self, req: Request<StopContainerRequest>) -> R<StopContainerResponse> {
        reply_logged(
            "StopContainer",
            container_stop::stop_container(&self.node, req.into_inner()).await,
        )
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> R<RemoveContainerResponse> {
        reply_logged(
            "RemoveContainer",
            container_remove::remove_container(&self.node, req.into_inner()).await,
        )
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> R<ListContainersResponse> {
        reply(container_list::list_containers(
            &self.node,
            req.into_inner(),
        ))
    }

    async fn stream_containers(
        &self,
        req: Request<StreamContainersRequest>,
    ) -> R<BoxStream<StreamContainersResponse>> {
        let req = ListContainersRequest {
            filter: req.into_inner().filter,
        };
        reply_paged(
            container_list::list_containers(&self.node, req).map(|r| r.containers),
            |containers| StreamContainersResponse { containers },
        )
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> R<ContainerStatusResponse> {
        reply(container_status::container_status(&self.node, req.into_inner()).await)
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> R<ReopenContainerLogResponse> {
        reply_logged(
            "ReopenContainerLog",
            container_log_reopen::reopen_container_log(&self.node, req.into_inner()).await,
        )
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> R<UpdateContainerResourcesResponse> {
        reply_logged(
            "UpdateContainerResources",
            container_update::update_container_resources(&self.node, req.into_inner()).await,
        )
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> R<ContainerStatsResponse> {
        let req = req.into_inner();
        reply(
            blocking(&self.node, move |node| {
                container_stats::container_stats(node, req)
            })
            .await,
        )
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> R<ListContainerStatsResponse> {
        let req = req.into_inner();
        reply(
            blocking(&self.node, move |node| {
                container_stats::list_container_stats(node, req)
            })
            .await,
        )
    }

    async fn stream_container_stats(
        &self,
        req: Request<StreamContainerStatsRequest>,
    ) -> R<BoxStream<StreamContainerStatsResponse>> {
        let req = ListContainerStatsRequest {
            filter: req.into_inner().filter,
        };
        let r = blocking(&self.node, move |node| {
            container_stats::list_container_stats(node, req)
        })
        .await;
        reply_paged(r.map(|r| r.stats), |container_stats| {
            StreamContainerStatsResponse { container_stats }
        })
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> R<PodSandboxStatsResponse> {
        let req = req.into_inner();
        reply(
            blocking(&self.node, move |node| {
                sandbox_stats::pod_sandbox_stats(node, req)
            })
            .await,
        )
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> R<ListPodSandboxStatsResponse> {
        let req = req.into_inner();
        reply(
            blocking(&self.node, move |node| {
                sandbox_stats::list_pod_sandbox_stats(node, req)
            })
            .await,
        )
    }

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<StreamPodSandboxStatsRequest>,
    ) -> R<BoxStream<StreamPodSandboxStatsResponse>> {
        let req = ListPodSandboxStatsRequest {
            filter: req.into_inner().filter,
        };
        let r = blocking(&self.node, move |node| {
            sandbox_stats::list_pod_sandbox_stats(node, req)
        })
        .await;
        reply_paged(r.map(|r| r.stats), |pod_sandbox_stats| {
            StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })
    }

    async fn get_container_events(
        &self,
        req: Request<GetEventsRequest>,
    ) -> R<BoxStream<ContainerEventResponse>> {
        reply(container_events::get_container_events(&self.node, req.into_inner()).await)
    }

    async fn list_metric_descriptors(
        &self,
        req: Request<ListMetricDescriptorsRequest>,
    ) -> R<ListMetricDescriptorsResponse> {
        Ok(Response::new(metric_descriptors::list_metric_descriptors(
            req.into_inner(),
        )))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        req: Request<ListPodSandboxMetricsRequest>,
    ) -> R<ListPodSandboxMetricsResponse> {
        let req = req.into_inner();
        reply(
            blocking(&self.node, move |node| {
                sandbox_metrics::list_pod_sandbox_metrics(node, req)
            })
            .await,
        )
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<StreamPodSandboxMetricsRequest>,
    ) -> R<BoxStream<StreamPodSandboxMetricsResponse>> {
        let r = blocking(&self.node, move |node| {
            sandbox_metrics::list_pod_sandbox_metrics(node, ListPodSandboxMetricsRequest {})
        })
        .await;
        reply_paged(r.map(|r| r.pod_metrics), |pod_sandbox_metrics| {
            StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<UpdatePodSandboxResourcesRequest>,
    ) -> R<UpdatePodSandboxResourcesResponse> {
        reply_logged(
            "UpdatePodSandboxResources",
            sandbox_update_resources::update_pod_sandbox_resources(&self.node, req.into_inner())
                .await,
        )
    }

    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> R<ExecSyncResponse> {
        reply(container_exec_sync::exec_sync(&self.node, req.into_inner()).await)
    }

    async fn update_runtime_config(
        &self,
        req: Request<skiff_proto::cri::UpdateRuntimeConfigRequest>,
    ) -> R<skiff_proto::cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR from kubelet");
            self.node.network.set_pod_cidr(&cidr);
        }
        Ok(Response::new(
            skiff_proto::cri::UpdateRuntimeConfigResponse {},
        ))
    }

    async fn checkpoint_container(
        &self,
        req: Request<skiff_proto::cri::CheckpointContainerRequest>,
    ) -> R<skiff_proto::cri::CheckpointContainerResponse> {
        reply_logged(
            "CheckpointContainer",
            container_checkpoint::checkpoint_container(&self.node, req.into_inner()).await,
        )
    }

    async fn exec(
        &self,
        req: Request<skiff_proto::cri::ExecRequest>,
    ) -> R<skiff_proto::cri::ExecResponse> {
        reply(container_exec::exec(&self.node, req.into_inner()).await)
    }

    async fn attach(
        &self,
        req: Request<skiff_proto::cri::AttachRequest>,
    ) -> R<skiff_proto::cri::AttachResponse> {
        reply(container_attach::attach(&self.node, req.into_inner()).await)
    }

    async fn port_forward(
        &self,
        req: Request<skiff_proto::cri::PortForwardRequest>,
    ) -> R<skiff_proto::cri::PortForwardResponse> {
        reply(sandbox_port_forward::port_forward(
            &self.node,
            req.into_inner(),
        ))
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

    async fn stream_images(
        &self,
        req: Request<StreamImagesRequest>,
    ) -> R<BoxStream<StreamImagesResponse>> {
        let req = ListImagesRequest {
            filter: req.into_inner().filter,
        };
        reply_paged(
            image_list::list_images(self, req).map(|r| r.images),
            |images| StreamImagesResponse { images },
        )
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
