//! One doubling, capped retry delay for every loop that waits on containerd (a lost wait, a
//! lost event subscription, the first subscription at start) and for the event backoff
//! queue's per-container retries.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { next: initial, max }
    }

    /// The delay to wait now; each call doubles the next one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = after(now, self.max);
        now
    }
}

/// The wait that follows `previous`: twice as long, at most `max`.
pub fn after(previous: Duration, max: Duration) -> Duration {
    previous.saturating_mul(2).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(after(Duration::MAX, Duration::from_secs(300)), Duration::from_secs(300), "no overflow");
    }
}
