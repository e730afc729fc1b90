//! The streaming server's request cache: single-use tokens with a TTL and a bound on how many
//! wait to be served, which is the part of the server the CRI's Exec/Attach/PortForward see.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crid::error::{Error, ErrorKind, Result};
use crid::ports::clock::Clock;
use crid::ports::stream::{StreamRequest, StreamServer};

use super::faults::{self, FaultInjector, FaultSite};

pub const BASE_URL: &str = "http://127.0.0.1:10010";
/// The kubelet's streaming cache bounds, which the CRI's server copies.
pub const MAX_IN_FLIGHT: usize = 1000;
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
const TOKEN_LEN: usize = 8;
const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

struct Pending {
    expires_at_ns: i64,
    request: StreamRequest,
}

pub struct FakeStreamServer {
    clock: Arc<dyn Clock>,
    rng: Mutex<SmallRng>,
    pending: Mutex<BTreeMap<String, Pending>>,
    faults: Arc<dyn FaultInjector>,
}

impl FakeStreamServer {
    pub fn new(seed: u64, clock: Arc<dyn Clock>, faults: Arc<dyn FaultInjector>) -> Self {
        FakeStreamServer {
            clock,
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            pending: Mutex::new(BTreeMap::new()),
            faults,
        }
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<String, Pending>> {
        self.pending.lock().expect("fake stream lock poisoned")
    }

    fn new_token(&self, taken: &BTreeMap<String, Pending>) -> String {
        let mut rng = self.rng.lock().expect("fake stream rng lock poisoned");
        loop {
            let token: String =
                (0..TOKEN_LEN).map(|_| char::from(TOKEN_ALPHABET[rng.gen_range(0..TOKEN_ALPHABET.len())])).collect();
            if !taken.contains_key(&token) {
                return token;
            }
        }
    }

    /// Requests registered and neither served nor expired.
    pub fn in_flight(&self) -> usize {
        let now_ns = self.clock.now_ns();
        self.pending().values().filter(|pending| pending.expires_at_ns > now_ns).count()
    }

    /// Serves a token once, as a client connecting to the URL would; None when unknown or expired.
    pub fn take(&self, token: &str) -> Option<StreamRequest> {
        let now_ns = self.clock.now_ns();
        self.pending().remove(token).filter(|pending| pending.expires_at_ns > now_ns).map(|pending| pending.request)
    }

    /// Token → request, for assertions on what the CRI registered.
    pub fn requests(&self) -> BTreeMap<String, StreamRequest> {
        self.pending().iter().map(|(token, pending)| (token.clone(), pending.request.clone())).collect()
    }
}

fn path_of(request: &StreamRequest) -> &'static str {
    match request {
        StreamRequest::Exec { .. } => "exec",
        StreamRequest::Attach { .. } => "attach",
        StreamRequest::PortForward { .. } => "portforward",
    }
}

fn key_of(request: &StreamRequest) -> &str {
    match request {
        StreamRequest::Exec { container_id, .. } | StreamRequest::Attach { container_id, .. } => container_id,
        StreamRequest::PortForward { sandbox_id, .. } => sandbox_id,
    }
}

#[async_trait]
impl StreamServer for FakeStreamServer {
    async fn register(&self, request: StreamRequest) -> Result<String> {
        let after = faults::before(&*self.faults, FaultSite::StreamRegister, key_of(&request)).await?;
        let now_ns = self.clock.now_ns();
        let result = {
            let mut pending = self.pending();
            pending.retain(|_, entry| entry.expires_at_ns > now_ns);
            if pending.len() >= MAX_IN_FLIGHT {
                Err(Error::new(ErrorKind::ResourceExhausted, "too many in flight"))
            } else {
                let token = self.new_token(&pending);
                let url = format!("{BASE_URL}/{}/{token}", path_of(&request));
                let ttl_ns = i64::try_from(TOKEN_TTL.as_nanos()).expect("TTL fits in i64 ns");
                pending.insert(token, Pending { expires_at_ns: now_ns + ttl_ns, request });
                Ok(url)
            }
        };
        after.finish(result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::clock::SimClock;
    use crate::fakes::faults::NoFaults;

    fn exec() -> StreamRequest {
        StreamRequest::Exec {
            container_id: "c1".into(),
            cmd: vec!["sh".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_and_expiring() {
        let clock = Arc::new(SimClock::new());
        let server = FakeStreamServer::new(1, clock.clone(), Arc::new(NoFaults));
        let url = server.register(exec()).await.unwrap();
        let token = url.strip_prefix("http://127.0.0.1:10010/exec/").unwrap();
        assert_eq!(token.len(), 8);
        assert_eq!(server.take(token), Some(exec()));
        assert_eq!(server.take(token), None, "tokens are single-use");
        for _ in 0..MAX_IN_FLIGHT {
            server.register(exec()).await.unwrap();
        }
        let error = server.register(exec()).await.unwrap_err();
        assert_eq!((error.kind, error.message.as_str()), (ErrorKind::ResourceExhausted, "too many in flight"));
        clock.sleep(TOKEN_TTL).await;
        assert_eq!(server.in_flight(), 0);
        server.register(exec()).await.unwrap();
    }
}
