//! Where a CRI call's time goes: every gRPC call to containerd is logged at debug level (target
//! `crid_backend::containerd::timing`) with its method and its time to the response headers.
//! For a unary call that is its whole latency; for a stream, the time until it opened.
//! `RUST_LOG=crid_backend::containerd::timing=debug` (or the bench's `CRID_BENCH_LOG`) turns it on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::transport::Channel;

/// A containerd channel that times its calls. Cheap to clone, as the channel is.
#[derive(Clone, Debug)]
pub struct TimedChannel {
    inner: Channel,
}

impl TimedChannel {
    pub fn new(inner: Channel) -> TimedChannel {
        TimedChannel { inner }
    }
}

type ChannelFuture = <Channel as tower::Service<Request<Body>>>::Future;
type ChannelResponse = <Channel as tower::Service<Request<Body>>>::Response;
type ChannelError = <Channel as tower::Service<Request<Body>>>::Error;

impl tower::Service<Request<Body>> for TimedChannel {
    type Response = ChannelResponse;
    type Error = ChannelError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, ChannelError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return Box::pin(self.inner.call(request));
        }
        // "/containerd.services.tasks.v1.Tasks/Create" → "Tasks/Create"
        let path = request.uri().path();
        let method = path.rsplit('/').take(2).collect::<Vec<_>>();
        let method = match method.as_slice() {
            [call, service] => format!("{}/{call}", service.rsplit('.').next().unwrap_or(service)),
            _ => path.to_string(),
        };
        let started = Instant::now();
        let call: ChannelFuture = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let elapsed_us = started.elapsed().as_micros() as u64;
            let status = match &result {
                Ok(response) => {
                    response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string()
                }
                Err(_) => "transport".to_string(),
            };
            tracing::debug!(method, elapsed_us, status, "containerd call");
            result
        })
    }
}
