//! Jittered exponential backoff for reconnect loops, as a tiny state machine (no clock, no
//! sleeping).

use std::time::Duration;

/// Delays between reconnect attempts: "equal jitter", i.e. a random delay in `[d/2, d]` where
/// `d` starts at `min` and doubles after every failure up to `max`, so shards that lost Redis at
/// the same moment do not all come back at the same moment.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// Starts at `min`, caps at `max`; `seed` drives the jitter (any value; 0 is remapped).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
            rng: seed | 1,
        }
    }

    /// The next delay to wait; each call doubles the base for the following one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        let span = (base - half).as_nanos() as u64;
        half + Duration::from_nanos(self.next_random() % (span + 1))
    }

    /// Back to `min`, after a connection succeeded.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// xorshift64*: plenty for jitter.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(50), ms(2000), 42);
        let mut bases = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            bases.push(d);
        }
        let expect = [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000];
        for (d, base) in bases.iter().zip(expect) {
            assert!(*d >= ms(base) / 2 && *d <= ms(base), "{d:?} vs base {base}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(50));
    }

    #[test]
    fn seeds_spread() {
        let ms = Duration::from_millis;
        let a = Backoff::new(ms(1000), ms(1000), 1).next_delay();
        let b = Backoff::new(ms(1000), ms(1000), 2).next_delay();
        assert_ne!(a, b);
    }
}
