//! The open-loop send schedule, fixed before the first send.
//!
//! The global rate `R` is one stream of send slots `g = 0, 1, 2, ...` at `g / R` seconds after
//! the start; slot `g` belongs to client `g mod N`. Each client therefore sends every `N / R`
//! seconds, and the clients are staggered by `1 / R` so the aggregate is evenly spread rather
//! than N sends landing together. Because every slot's time is known in advance, a send that
//! goes out late (server or generator stalled) still has its latency measured from the slot,
//! which is what corrects for coordinated omission.

use std::time::Duration;

/// Send slots of one run: a warm-up (not measured) followed by the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    rate: f64,
    clients: u64,
    warmup_ns: u64,
    end_ns: u64,
    total: u64,
}

impl Schedule {
    /// `rate` sends per second over all `clients`, for `warmup` then `duration`.
    ///
    /// Callers validate the inputs (see `cli`); a zero or non-finite rate or zero clients gives
    /// an empty schedule rather than a panic.
    pub fn new(rate: f64, clients: usize, warmup: Duration, duration: Duration) -> Self {
        let warmup_ns = warmup.as_nanos() as u64;
        let end_ns = warmup_ns + duration.as_nanos() as u64;
        let total = if rate.is_finite() && rate > 0.0 && clients > 0 {
            // Slots with g / R < end: g < R * end, so ceil(R * end) of them. The epsilon keeps
            // an exact product (20000/s * 10 s) from gaining a slot through rounding.
            let exact = rate * (end_ns as f64 / 1e9);
            (exact - 1e-9).ceil().max(0.0) as u64
        } else {
            0
        };
        Schedule {
            rate,
            clients: clients as u64,
            warmup_ns,
            end_ns,
            total,
        }
    }

    /// Sends over all clients, warm-up included: slots `0..total()`.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Slot `g`'s client and time (ns after the start). Slots are in time order.
    pub fn slot(&self, g: u64) -> (usize, u64) {
        let client = (g % self.clients.max(1)) as usize;
        (client, (g as f64 * 1e9 / self.rate) as u64)
    }

    /// How many sends client `client` makes.
    pub fn sends_for(&self, client: usize) -> u64 {
        let c = client as u64;
        if c >= self.clients || c >= self.total {
            return 0;
        }
        (self.total - c).div_ceil(self.clients)
    }

    /// When client `client`'s `k`-th send is due, in ns after the schedule's start.
    pub fn offset_ns(&self, client: usize, k: u64) -> u64 {
        let slot = client as u64 + k * self.clients;
        (slot as f64 * 1e9 / self.rate) as u64
    }

    /// Whether a send due `offset_ns` after the start falls in the measured window.
    pub fn is_measured(&self, offset_ns: u64) -> bool {
        offset_ns >= self.warmup_ns
    }

    /// Length of the warm-up, ns.
    pub fn warmup_ns(&self) -> u64 {
        self.warmup_ns
    }

    /// When the last slot's window closes (warm-up plus duration), ns after the start.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// Time between two sends of one client, ns.
    pub fn client_interval_ns(&self) -> u64 {
        (self.clients as f64 * 1e9 / self.rate) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn total_is_rate_times_duration() {
        let s = Schedule::new(20_000.0, 1_000, secs(0.0), secs(10.0));
        assert_eq!(s.total, 200_000);
        let per: u64 = (0..1_000).map(|c| s.sends_for(c)).sum();
        assert_eq!(per, 200_000);
        assert_eq!(s.sends_for(0), 200);
        assert_eq!(s.client_interval_ns(), 50_000_000);
    }

    #[test]
    fn fractional_totals_round_up_to_slots_inside_the_window() {
        // 3/s for 0.5 s: slots at 0 and 0.333 s; 0.667 s is past the end.
        let s = Schedule::new(3.0, 2, secs(0.0), secs(0.5));
        assert_eq!(s.total, 2);
        assert_eq!(s.sends_for(0), 1);
        assert_eq!(s.sends_for(1), 1);
        // Uneven split: 5 slots over 2 clients.
        let s = Schedule::new(5.0, 2, secs(0.0), secs(1.0));
        assert_eq!((s.sends_for(0), s.sends_for(1)), (3, 2));
        // More clients than slots: the late ones send nothing.
        let s = Schedule::new(2.0, 4, secs(0.0), secs(1.0));
        assert_eq!(
            (0..4).map(|c| s.sends_for(c)).collect::<Vec<_>>(),
            vec![1, 1, 0, 0]
        );
        assert_eq!(s.sends_for(9), 0);
    }

    #[test]
    fn clients_are_staggered_and_evenly_spaced() {
        let s = Schedule::new(1_000.0, 4, secs(0.0), secs(1.0));
        // Client c's k-th send is slot c + 4k, 1 ms apart globally.
        assert_eq!(s.offset_ns(0, 0), 0);
        assert_eq!(s.offset_ns(1, 0), 1_000_000);
        assert_eq!(s.offset_ns(3, 0), 3_000_000);
        assert_eq!(s.offset_ns(0, 1), 4_000_000);
        assert_eq!(s.offset_ns(2, 5), 22_000_000);
        // Every slot of every client is inside the window, in increasing order per client.
        for c in 0..4 {
            let n = s.sends_for(c);
            for k in 0..n {
                assert!(s.offset_ns(c, k) < s.end_ns());
                if k > 0 {
                    assert!(s.offset_ns(c, k) > s.offset_ns(c, k - 1));
                }
            }
            assert!(s.offset_ns(c, n) >= s.end_ns());
        }
    }

    #[test]
    fn slots_walk_all_clients_in_time_order() {
        let s = Schedule::new(300.0, 3, secs(0.0), secs(1.0));
        let mut per_client = [0u64; 3];
        let mut last = 0;
        for g in 0..s.total() {
            let (c, at) = s.slot(g);
            assert!(at >= last);
            last = at;
            // Slot g is client c's k-th send, at the same time offset_ns gives.
            assert_eq!(at, s.offset_ns(c, per_client[c]));
            per_client[c] += 1;
        }
        assert_eq!(
            per_client.to_vec(),
            (0..3).map(|c| s.sends_for(c)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn warmup_extends_the_schedule_and_is_not_measured() {
        let s = Schedule::new(100.0, 10, secs(2.0), secs(3.0));
        assert_eq!(s.total, 500);
        assert_eq!(s.warmup_ns(), 2_000_000_000);
        assert_eq!(s.end_ns(), 5_000_000_000);
        assert!(!s.is_measured(s.offset_ns(0, 19))); // 1.9 s
        assert!(s.is_measured(s.offset_ns(0, 20))); // 2.0 s
    }

    #[test]
    fn degenerate_inputs_give_an_empty_schedule() {
        assert_eq!(Schedule::new(0.0, 10, secs(0.0), secs(1.0)).total, 0);
        assert_eq!(Schedule::new(f64::NAN, 10, secs(0.0), secs(1.0)).total, 0);
        assert_eq!(Schedule::new(10.0, 0, secs(0.0), secs(1.0)).sends_for(0), 0);
    }
}
