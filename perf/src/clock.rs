//! One process-wide time base. Every timestamp perf handles is nanoseconds since [`base`], so a
//! sender's intended-send time embedded in a message body can be subtracted from the recipient's
//! receive time directly: both ends live in this process and read the same monotonic clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BASE: OnceLock<Instant> = OnceLock::new();

/// The instant all perf timestamps count from; fixed by the first call.
pub fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds elapsed since [`base`].
pub fn now_ns() -> u64 {
    // u64 nanoseconds last 584 years, so the truncation never bites.
    base().elapsed().as_nanos() as u64
}

/// The tokio instant `ns` nanoseconds after [`base`], for timers.
pub fn deadline(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(base() + Duration::from_nanos(ns))
}

/// Microseconds from `from_ns` to `to_ns`; 0 if `to_ns` is earlier (it never is on one
/// monotonic clock, but a corrupted body must not panic the tool).
pub fn micros_between(from_ns: u64, to_ns: u64) -> u64 {
    to_ns.saturating_sub(from_ns) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_monotonic_and_deadline_round_trips() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        let d = deadline(a);
        assert_eq!(d.into_std(), base() + Duration::from_nanos(a));
    }

    #[test]
    fn micros_between_saturates() {
        assert_eq!(micros_between(1_000, 5_500), 4);
        assert_eq!(micros_between(5_000, 1_000), 0);
    }
}
