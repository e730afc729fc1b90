//! Time, the only source of it for the core.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

/// Wall time for timestamps and a sleep for timers. In the simulator both are virtual.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch; what CRI timestamps carry.
    fn now_ns(&self) -> i64;
    /// Completes after `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration);
}

/// Error of [`timeout`]: the deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `future` for at most `duration` of `clock` time. The future is dropped on expiry.
pub async fn timeout<F: Future>(clock: &dyn Clock, duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = clock.sleep(duration) => Err(Elapsed),
    }
}
