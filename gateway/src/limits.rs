//! Per-connection send rate limit: a token bucket, pure (time passed in).

use std::time::Duration;

/// Refills `rate` tokens per second up to `burst`; each send takes one. 16 bytes: times are
/// microseconds since an epoch the caller picks (the shard's start), not `Instant`s (16 bytes
/// each), as the bucket lives in every connection's state.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    /// When it was last refilled, in microseconds since the caller's epoch.
    last_us: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl TokenBucket {
    /// A full bucket; `now` is the time since the caller's epoch.
    pub fn new(burst: u32, now: Duration) -> Self {
        TokenBucket {
            tokens: burst as f32,
            last_us: micros(now),
        }
    }

    /// Takes a token if one is available at `now` (since the same epoch).
    pub fn take(&mut self, rate: u32, burst: u32, now: Duration) -> bool {
        let now = micros(now);
        let dt = now.saturating_sub(self.last_us) as f32 / 1e6;
        self.last_us = now;
        self.tokens = (self.tokens + dt * rate as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Duration::from_secs(1000);
        assert_eq!(std::mem::size_of::<TokenBucket>(), 16);
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.take(10, 3, t0)));
        assert!(!b.take(10, 3, t0), "burst spent");
        // 10/s: one token per 100 ms.
        assert!(!b.take(10, 3, t0 + Duration::from_millis(50)));
        assert!(b.take(10, 3, t0 + Duration::from_millis(150)));
        // Refill stops at the burst size.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(10, 3, later)));
        assert!(!b.take(10, 3, later));
    }
}
