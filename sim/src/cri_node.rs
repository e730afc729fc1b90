//! The CRI node: a simulated process running the core against the fakes behind crid-grpc's
//! service — the production impl and its error → code mapping — served by madsim-tonic on a
//! simulated address; and the kubelet's side of it, madsim-tonic clients. A call to a dead
//! process fails with Unavailable, as one on a unix socket nobody listens on does; a call whose
//! caller gives up is cancelled on the server (its handler future dropped), as hyper does when a
//! client resets the HTTP/2 stream — madsim-tonic's transport has no stream reset of its own, so
//! [`CallStream`] and [`ResetOnHangUp`] model it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crid::{Config, CriService};
use crid_grpc::CriGrpc;
use crid_grpc::cri::image_service_client::ImageServiceClient;
use crid_grpc::cri::runtime_service_client::RuntimeServiceClient;
use tokio::sync::oneshot;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{BoxFuture, BoxMessageStream, Service};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, NamedService, Server};
use tonic::{Request, Response, Status};

use crate::fakes::FakeWorld;
use crate::trace::Trace;

/// Where the CRI node listens (the simulated network has no unix sockets for tonic).
pub const CRI_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 50051);
/// The kubelet node's address: a node must have one to reach another.
pub const KUBELET_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

/// What outlives a CRI process for the checkers: the current service instance.
#[derive(Clone, Default)]
pub struct CriEndpoint {
    service: Arc<Mutex<Option<Arc<CriService>>>>,
}

impl CriEndpoint {
    /// The live service, if the process is up.
    pub fn service(&self) -> Option<Arc<CriService>> {
        self.service.lock().unwrap().clone()
    }

    /// Marks the process dead (called when the node is killed).
    pub fn down(&self) {
        *self.service.lock().unwrap() = None;
    }
}

/// The kubelet's connection to the CRI: a lazily connecting channel (each call connects
/// anew, so a restarted process is reached without reconnecting by hand).
#[derive(Clone)]
pub struct CriConnection {
    channel: Channel,
}

impl Default for CriConnection {
    fn default() -> Self {
        let channel = Endpoint::from_shared(format!("http://{CRI_ADDR}")).expect("a valid URI").connect_lazy();
        CriConnection { channel }
    }
}

/// The CRI's two clients, for one call.
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel, HangUp>,
    pub image: ImageServiceClient<Channel, HangUp>,
}

/// A call's HTTP/2 stream, as far as its client holds it open: dropping it (the caller gave up
/// waiting) resets the stream, and the server drops the call's handler.
pub struct CallStream {
    _open: oneshot::Sender<()>,
}

impl CriConnection {
    /// Clients for one call, and the call's stream: keep it while waiting for the reply.
    pub fn open_call(&self) -> (CriClient, CallStream) {
        let (open, reset) = oneshot::channel();
        let hang_up = HangUp(Arc::new(Mutex::new(Some(reset))));
        let client = CriClient {
            runtime: RuntimeServiceClient::with_interceptor(self.channel.clone(), hang_up.clone()),
            image: ImageServiceClient::with_interceptor(self.channel.clone(), hang_up),
        };
        (client, CallStream { _open: open })
    }
}

/// The client's interceptor and the request's extension: the server's end of a [`CallStream`].
#[derive(Clone)]
pub struct HangUp(Arc<Mutex<Option<oneshot::Receiver<()>>>>);

impl Interceptor for HangUp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.extensions_mut().insert(self.clone());
        Ok(request)
    }
}

/// A generated CRI server as hyper runs it: a call's handler future is dropped when its
/// client hangs up before the reply.
#[derive(Clone)]
pub struct ResetOnHangUp<S>(S);

impl<S: NamedService> NamedService for ResetOnHangUp<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<(PathAndQuery, Request<BoxMessageStream>)> for ResetOnHangUp<S>
where
    S: Service<
            (PathAndQuery, Request<BoxMessageStream>),
            Response = Response<BoxMessageStream>,
            Error = Status,
            Future = BoxFuture<Response<BoxMessageStream>, Status>,
        >,
{
    type Response = Response<BoxMessageStream>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, (path, mut request): (PathAndQuery, Request<BoxMessageStream>)) -> Self::Future {
        let reset = request.extensions_mut().remove::<HangUp>().and_then(|hang_up| hang_up.0.lock().unwrap().take());
        let handler = self.0.call((path, request));
        let Some(reset) = reset else { return handler };
        Box::pin(async move {
            tokio::select! {
                biased;
                result = handler => result,
                _ = reset => Err(Status::cancelled("the client reset the stream")),
            }
        })
    }
}

/// The body of the CRI node: build the service, serve it at once (calls are refused by the
/// init gate until recovery is done), run recovery and the loops.
pub async fn serve(config: Config, world: Arc<FakeWorld>, endpoint: CriEndpoint, trace: Arc<Trace>) {
    let service = CriService::new(config, world.backends()).expect("scenario config is valid");
    *endpoint.service.lock().unwrap() = Some(service.clone());
    trace.log("cri", "process started; recovering");
    let runner = service.clone();
    let run_trace = trace.clone();
    tokio::spawn(async move {
        match runner.run().await {
            Ok(()) => {
                let snapshot = runner.snapshot();
                run_trace.log(
                    "cri",
                    format!(
                        "initialized: {} sandboxes, {} containers, {} image refs, {} quarantined",
                        snapshot.sandboxes.len(),
                        snapshot.containers.len(),
                        snapshot.image_refs.len(),
                        snapshot.quarantined.len()
                    ),
                );
                for quarantined in &snapshot.quarantined {
                    run_trace.log(
                        "cri",
                        format!(
                            "quarantined {} {}: {}",
                            quarantined.kind,
                            crate::trace::short(&quarantined.id),
                            quarantined.reason
                        ),
                    );
                }
            }
            Err(error) => run_trace.log("cri", format!("run failed: {error}")),
        }
    });
    let grpc = CriGrpc::new(service);
    Server::builder()
        .add_service(ResetOnHangUp(grpc.runtime_server()))
        .add_service(ResetOnHangUp(grpc.image_server()))
        .serve(CRI_ADDR)
        .await
        .expect("the CRI address is free (the node is killed before each restart)");
}
