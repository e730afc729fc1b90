//! The CRI node: a simulated process running the core against the fakes, reached through a
//! connection that behaves like gRPC — a call whose caller gives up is cancelled (its handler
//! future dropped), and a call to a dead process fails with Unavailable.

use std::future::Future;
use std::sync::{Arc, Mutex};

use crid::error::{Error, Result};
use crid::{Config, CriService};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::fakes::FakeWorld;
use crate::trace::Trace;

type Call = Box<dyn FnOnce(Arc<CriService>) -> BoxFuture<'static, ()> + Send>;

/// What outlives a CRI process: the listening address (the call queue of the current process)
/// and, for the checkers, the current service instance.
#[derive(Clone, Default)]
pub struct CriEndpoint {
    calls: Arc<Mutex<Option<mpsc::Sender<Call>>>>,
    service: Arc<Mutex<Option<Arc<CriService>>>>,
}

impl CriEndpoint {
    /// The live service, if the process is up.
    pub fn service(&self) -> Option<Arc<CriService>> {
        self.service.lock().unwrap().clone()
    }

    /// Marks the process dead (called when the node is killed).
    pub fn down(&self) {
        *self.calls.lock().unwrap() = None;
        *self.service.lock().unwrap() = None;
    }

    /// One CRI call. Dropping the returned future cancels the call on the server too.
    pub async fn call<R, F, Fut>(&self, handler: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<CriService>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let sender = self.calls.lock().unwrap().clone().ok_or_else(|| Error::unavailable("connection refused"))?;
        let (reply, response) = oneshot::channel();
        let call: Call = Box::new(move |service| {
            Box::pin(async move {
                let mut reply = reply;
                let handler = handler(service);
                let result = tokio::select! {
                    biased;
                    result = handler => Some(result),
                    () = reply.closed() => None,
                };
                if let Some(result) = result {
                    let _ = reply.send(result);
                }
            })
        });
        sender.send(call).await.map_err(|_| Error::unavailable("connection refused"))?;
        response.await.unwrap_or_else(|_| Err(Error::unavailable("connection lost")))
    }
}

/// The body of the CRI node: build the service, accept calls at once (they are refused by the
/// init gate until recovery is done), run recovery and the loops, serve.
pub async fn serve(config: Config, world: Arc<FakeWorld>, endpoint: CriEndpoint, trace: Arc<Trace>) {
    let service = CriService::new(config, world.backends()).expect("scenario config is valid");
    let (sender, mut calls) = mpsc::channel::<Call>(4096);
    *endpoint.calls.lock().unwrap() = Some(sender);
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
    while let Some(call) = calls.recv().await {
        tokio::spawn(call(service.clone()));
    }
}
