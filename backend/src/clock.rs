//! Real time: the system clock for timestamps and tokio's timer for sleeps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use crid::ports::Clock;

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        now_ns()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

/// Nanoseconds since the epoch; a clock before 1970 reads as 0 rather than panicking.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
