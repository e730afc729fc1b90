//! The gRPC layer: the CRI's tonic server traits, each method a one-line call into the core.
//! No behaviour lives here; the one mapping of core errors to gRPC codes does. A crate of its
//! own, so the pure core knows no server, socket or HTTP/2.
//!
//! The service stubs are generated here (build.rs) from the CRI proto that k8s-cri ships, over
//! k8s-cri's message types: real tonic in a normal build, which the `crid` binary serves on its
//! unix socket; madsim-tonic's simulated transport with `--cfg madsim`, which the simulator's
//! CRI node serves to its kubelet. Both builds run the same impl below and the same
//! [`status_from`], so the simulator sees the codes a client sees.

use std::sync::Arc;

use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

#[cfg(madsim)]
use cri::image_service_server::{ImageService, ImageServiceServer};
#[cfg(madsim)]
use cri::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use crid::CriService;
use crid::error::{Error, ErrorKind};
#[cfg(not(madsim))]
use sending::image_service_server::{ImageService, ImageServiceServer};
#[cfg(not(madsim))]
use sending::runtime_service_server::{RuntimeService, RuntimeServiceServer};

#[cfg(not(madsim))]
pub mod authority;

/// The CRI's `runtime.v1` services: servers and clients, generated for this build's tonic.
pub mod cri {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
    tonic::include_proto!("runtime.v1");
}

/// The servers the `crid` binary serves: those of [`cri`], but GetContainerEvents sends the
/// core's [`crid::ContainerEvent`], which encodes as `ContainerEventResponse` from the statuses
/// it read without copying them into CRI messages first (build.rs).
#[cfg(not(madsim))]
mod sending {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/sending/runtime.v1.rs"));
}

/// What GetContainerEvents sends: the core's event, which encodes itself, on the wire; in the
/// simulator, whose transport hands messages over as values, the CRI message clients expect.
#[cfg(not(madsim))]
type EventMessage = crid::ContainerEvent;
#[cfg(madsim)]
type EventMessage = ContainerEventResponse;

#[cfg(not(madsim))]
fn event_message(event: crid::ContainerEvent) -> EventMessage {
    event
}

#[cfg(madsim)]
fn event_message(event: crid::ContainerEvent) -> EventMessage {
    event.to_response()
}

/// Largest message either way: ExecSync returns up to 16 MiB per stream.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The one place where core errors become gRPC statuses.
pub fn status_from(error: Error) -> Status {
    let code = match error.kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorKind::Cancelled => tonic::Code::Cancelled,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::Unimplemented => tonic::Code::Unimplemented,
        ErrorKind::Internal => tonic::Code::Internal,
        ErrorKind::DataLoss => tonic::Code::DataLoss,
        ErrorKind::Unknown => tonic::Code::Unknown,
    };
    Status::new(code, error.message)
}

/// The generated servers over [`CriGrpc`]; madsim-tonic's carry their interceptor's type.
#[cfg(not(madsim))]
pub type RuntimeServer = RuntimeServiceServer<CriGrpc>;
#[cfg(madsim)]
pub type RuntimeServer = RuntimeServiceServer<CriGrpc, tonic::codegen::IdentityInterceptor>;
#[cfg(not(madsim))]
pub type ImageServer = ImageServiceServer<CriGrpc>;
#[cfg(madsim)]
pub type ImageServer = ImageServiceServer<CriGrpc, tonic::codegen::IdentityInterceptor>;

/// Serves both CRI services on behalf of one `CriService`.
#[derive(Clone)]
pub struct CriGrpc {
    service: Arc<CriService>,
}

impl CriGrpc {
    pub fn new(service: Arc<CriService>) -> Self {
        CriGrpc { service }
    }

    pub fn runtime_server(&self) -> RuntimeServer {
        RuntimeServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn image_server(&self) -> ImageServer {
        ImageServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Serves the CRI on an already-bound unix listener until `shutdown` completes. Each
/// connection goes through [`authority::AuthorityFixingStream`], so that clients which send the
/// socket path as `:authority` (grpc-go, grpc-python, grpc-java) are served.
#[cfg(all(unix, not(madsim)))]
pub async fn serve_unix(
    service: Arc<CriService>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let grpc = CriGrpc::new(service);
    tonic::transport::Server::builder()
        .add_service(grpc.runtime_server())
        .add_service(grpc.image_server())
        .serve_with_incoming_shutdown(
            futures::TryStreamExt::map_ok(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                authority::AuthorityFixingStream::new,
            ),
            shutdown,
        )
        .await
}

/// Generates an impl of a CRI server trait whose methods forward to the core method of the same
/// name. (async_trait must see the methods, so the macro emits the whole impl.)
macro_rules! forward_impl {
    ($trait:ident { $($method:ident($request:ty) -> $response:ty;)* } $($extra:tt)*) => {
        #[tonic::async_trait]
        impl $trait for CriGrpc {
            $(
                async fn $method(&self, request: Request<$request>) -> Result<Response<$response>, Status> {
                    tracing::debug!(rpc = stringify!($method), "request");
                    // tokio's clock: the simulator's virtual time in a simulated build.
                    let started = tokio::time::Instant::now();
                    let reply = self.service.$method(request.into_inner()).await;
                    tracing::debug!(
                        rpc = stringify!($method),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        ok = reply.is_ok(),
                        "reply"
                    );
                    reply.map(Response::new).map_err(status_from)
                }
            )*
            $($extra)*
        }
    };
}

forward_impl! {
    RuntimeService {
        version(VersionRequest) -> VersionResponse;
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        status(StatusRequest) -> StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
    }

    type GetContainerEventsStream = futures::stream::BoxStream<'static, Result<EventMessage, Status>>;

    async fn get_container_events(&self, request: Request<GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use futures::StreamExt;
        // Logged as the unary calls are, once the subscription exists: from here on no event is
        // missed by this stream.
        let receiver = self.service.get_container_events(request.into_inner()).map_err(status_from)?;
        tracing::debug!(rpc = "get_container_events", "request");
        let stream = futures::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|event| (Ok(event_message(event)), receiver)) });
        Ok(Response::new(stream.boxed()))
    }
}

forward_impl! {
    ImageService {
        list_images(ListImagesRequest) -> ListImagesResponse;
        image_status(ImageStatusRequest) -> ImageStatusResponse;
        pull_image(PullImageRequest) -> PullImageResponse;
        remove_image(RemoveImageRequest) -> RemoveImageResponse;
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
}
