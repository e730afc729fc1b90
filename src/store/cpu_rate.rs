//! The CPU a container or a pod uses, as a rate: the CRI's `usage_nano_cores`, which kubelet
//! reads as the object's current CPU use. The kernel only counts CPU time, so a rate needs two
//! reads; each object keeps its last one.

use std::sync::Mutex;

/// Reads closer together than this do not replace the kept one: kubelet's stats calls and a
/// crictl's can come within milliseconds of each other, and a rate over such a window would be
/// mostly noise. A read that comes sooner gets the rate of the last full window.
pub const MIN_RATE_WINDOW_NS: i64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    usage_core_ns: u64,
    at_ns: i64,
    /// The rate between this reading and the one kept before it.
    nano_cores: u64,
}

/// An object's last CPU reading. Memory only: after a restart the first read gives 0 again, as
/// it does for a new object.
#[derive(Debug, Default)]
pub struct CpuRate {
    kept: Mutex<Option<Reading>>,
}

impl CpuRate {
    /// The average use, in billionths of a core, between the reading kept last and this one
    /// (`usage_core_ns` of CPU time used, read at `at_ns`). The first reading gives 0; so does
    /// one whose counter went back (a pod's usage summed over its containers drops when one
    /// of them goes), which starts afresh.
    pub fn nano_cores(&self, usage_core_ns: u64, at_ns: i64) -> u64 {
        let mut kept = self.kept.lock().unwrap();
        let last = match *kept {
            Some(last) if usage_core_ns >= last.usage_core_ns => last,
            _ => {
                *kept = Some(Reading { usage_core_ns, at_ns, nano_cores: 0 });
                return 0;
            }
        };
        let window_ns = at_ns.saturating_sub(last.at_ns);
        if window_ns < MIN_RATE_WINDOW_NS {
            return last.nano_cores;
        }
        let used_ns = u128::from(usage_core_ns - last.usage_core_ns);
        let nano_cores = u64::try_from(used_ns * 1_000_000_000 / window_ns as u128).unwrap_or(u64::MAX);
        *kept = Some(Reading { usage_core_ns, at_ns, nano_cores });
        nano_cores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_NS: i64 = 1_000_000_000;

    #[test]
    fn the_rate_is_the_cpu_time_used_over_the_window_since_the_kept_reading() {
        let rate = CpuRate::default();
        assert_eq!(rate.nano_cores(5_000_000_000, 100 * SECOND_NS), 0, "a first reading has no rate");
        // 1.5 s of CPU time in 10 s: 0.15 of a core.
        assert_eq!(rate.nano_cores(6_500_000_000, 110 * SECOND_NS), 150_000_000);
        // A read soon after gets the last full window's rate and keeps the window's start.
        assert_eq!(rate.nano_cores(6_600_000_000, 110 * SECOND_NS + 10_000_000), 150_000_000);
        assert_eq!(rate.nano_cores(6_500_000_000 + 2 * SECOND_NS as u64, 112 * SECOND_NS), 1_000_000_000);
        // A clock that went back is a window too short, not a negative rate.
        assert_eq!(rate.nano_cores(9_000_000_000, 50 * SECOND_NS), 1_000_000_000);
        // A counter that went back starts afresh.
        assert_eq!(rate.nano_cores(1_000, 120 * SECOND_NS), 0);
        assert_eq!(rate.nano_cores(1_000 + SECOND_NS as u64 / 2, 121 * SECOND_NS), 500_000_000);
    }
}
