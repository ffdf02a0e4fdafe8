//! The process-wide draining state. `main` starts a drain on SIGTERM; shards poll it (it changes
//! once per process life, so a relaxed load every few hundred milliseconds is plenty).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static DRAINING: AtomicBool = AtomicBool::new(false);
static DEADLINE_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Starts draining; everything must be done within `within`.
pub fn start(within: Duration) {
    let at = epoch().elapsed() + within;
    DEADLINE_MS.store(at.as_millis() as u64, Ordering::SeqCst);
    DRAINING.store(true, Ordering::SeqCst);
}

/// Whether a drain has started.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Time left before the drain deadline (zero when past it or not draining).
pub fn remaining() -> Duration {
    if !draining() {
        return Duration::ZERO;
    }
    let deadline = Duration::from_millis(DEADLINE_MS.load(Ordering::Relaxed));
    deadline.saturating_sub(epoch().elapsed())
}
