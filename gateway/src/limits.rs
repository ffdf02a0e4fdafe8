//! Per-connection send rate limit: a token bucket, pure (time passed in).

use std::time::Instant;

/// Refills `rate` tokens per second up to `burst`; each send takes one.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: burst as f32,
            last: now,
        }
    }

    /// Takes a token if one is available at `now`.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
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
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
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
