//! Wall time for the simulation: a fixed epoch plus the runtime's (virtual, under madsim) elapsed
//! time, so that timestamps are the same in every run of a seed.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// Now, on the runtime's clock: madsim's virtual clock in the simulator (where
/// `tokio::time::Instant` is the standard library's Instant with time supplied by madsim), real time in the
/// normal-mode tests. Every simulated-time reading of the fakes, the trace and the tests goes
/// through here.
#[cfg_attr(madsim, expect(clippy::disallowed_methods, reason = "under madsim this instant is virtual time"))]
pub fn virtual_now() -> Instant {
    Instant::now() // determinism-ok: under madsim this instant is virtual time.
}

/// 2023-11-14T22:13:20Z: a plausible wall time, so that timestamps look real in traces.
pub const EPOCH_BASE_NS: i64 = 1_700_000_000 * 1_000_000_000;

pub struct SimClock {
    base_ns: i64,
    start: Instant,
}

impl SimClock {
    /// Must be called inside the runtime: under madsim the start instant is virtual.
    pub fn new() -> Self {
        Self::with_epoch_ns(EPOCH_BASE_NS)
    }

    pub fn with_epoch_ns(base_ns: i64) -> Self {
        SimClock { base_ns, start: virtual_now() }
    }

    /// The wall time of `instant`, for events that happened at a computed moment (a scripted
    /// exit) rather than now.
    pub fn ns_at(&self, instant: Instant) -> i64 {
        let since_start = instant.saturating_duration_since(self.start);
        self.base_ns + i64::try_from(since_start.as_nanos()).expect("simulated time overflowed i64 ns")
    }

    pub fn instant(&self) -> Instant {
        virtual_now()
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl crid::ports::Clock for SimClock {
    fn now_ns(&self) -> i64 {
        self.ns_at(virtual_now())
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid::ports::Clock;

    #[tokio::test(start_paused = true)]
    async fn now_advances_with_sleep() {
        let clock = SimClock::new();
        let t0 = clock.now_ns();
        assert!(t0 - EPOCH_BASE_NS < 1_000_000);
        clock.sleep(Duration::from_secs(3)).await;
        // madsim adds a few nanoseconds of jitter to every timer.
        let slept_ns = clock.now_ns() - t0;
        assert!((3_000_000_000..3_001_000_000).contains(&slept_ns), "slept {slept_ns} ns");
    }
}
