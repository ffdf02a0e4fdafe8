//! What a run measures while it runs: lock-free counters, a few tallies by name, and latency
//! histograms shared by all connections.
//!
//! One HdrHistogram per connection would cost ~190 KiB each (1 µs to 1 h at 3 significant
//! digits), gigabytes for 10k connections, so connections record into a few striped histograms
//! instead (connection `i` into stripe `i % STRIPES`); a record holds its stripe's lock for a
//! few nanoseconds, and with at most a handful of worker threads contention stays negligible.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Largest latency a histogram holds, µs (one hour); larger values are clamped to it.
pub const HIST_MAX_US: u64 = 3_600_000_000;
/// Significant digits kept: 0.1% relative error.
pub const HIST_SIGFIGS: u8 = 3;
/// Histograms per metric; see the module doc.
pub const STRIPES: usize = 16;

/// An empty histogram with perf's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIGS).expect("constant histogram bounds")
}

/// One metric's histograms, striped by connection.
pub struct Striped {
    stripes: Box<[Mutex<Histogram<u64>>]>,
}

impl Default for Striped {
    fn default() -> Self {
        Striped {
            stripes: (0..STRIPES).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl Striped {
    /// Records `us` microseconds for connection `conn`.
    pub fn record(&self, conn: usize, us: u64) {
        let mut h = lock(&self.stripes[conn % STRIPES]);
        h.saturating_record(us.clamp(1, HIST_MAX_US));
    }

    /// All stripes added together.
    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for s in self.stripes.iter() {
            // Same bounds on both sides, so `add` cannot fail.
            let _ = out.add(&*lock(s));
        }
        out
    }
}

/// A poisoned lock only means another task panicked mid-record; the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, bumped by connection tasks.
        #[derive(Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A snapshot of [`Counters`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct Counts {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn snapshot(&self) -> Counts {
                Counts { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Counts {
            /// Adds `other` field by field (`last_send_ns`, a time, is fixed up by the caller).
            pub fn add(&mut self, other: &Counts) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Connections that got their welcome.
    connected,
    /// Connections that failed before their welcome (TCP, upgrade, timeout).
    connect_failed,
    /// Connections that closed or broke before the run told them to stop.
    disconnects,
    /// Of those, connections redialled and up again (`perf faults` only).
    reconnects,
    /// Sends written, warm-up included.
    sent,
    /// Sends whose intended time is in the measured window.
    sent_measured,
    /// Scheduled sends never written (connection lost, or still behind schedule at the stop).
    unsent,
    /// Acks by status.
    delivered,
    offline,
    failed,
    /// Acks whose id matched no outstanding send (a second ack, or an unknown id).
    unexpected_acks,
    /// Sends with neither an ack nor an error reply when the run stopped.
    missing_acks,
    /// Probe messages received, duplicates included.
    received,
    /// Of those, probes whose intended send time is in the measured window.
    received_measured,
    /// Probes whose sequence was already seen from that sender.
    duplicates,
    /// Probes that arrived after a later one from the same sender.
    order_violations,
    /// Sequences skipped over and still not received at the stop (below each sender's highest).
    gaps,
    /// `error` frames from the server.
    error_frames,
    /// Of those, errors that echoed one of our send ids (that send gets no ack).
    send_errors,
    /// Frames perf could not parse or attribute (bad JSON, messages that are not our probes).
    bad_frames,
    /// Connections that were up, whose user was sent messages acked `delivered`, yet received
    /// none: a device the system silently left out.
    silent_receivers,
    /// Latest actual send time, ns on the shared clock (a maximum, not a count).
    last_send_ns,
}

/// Counts by name: why acks failed, which error codes came back, why connects failed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tallies {
    pub failed_reasons: BTreeMap<String, u64>,
    pub error_codes: BTreeMap<String, u64>,
    pub connect_errors: BTreeMap<String, u64>,
}

/// Everything a run records, shared by all connection tasks.
#[derive(Default)]
pub struct Stats {
    pub counters: Counters,
    tallies: Mutex<Tallies>,
    /// Intended send -> ack received, µs.
    pub ack: Striped,
    /// Intended send -> recipient received, µs.
    pub delivery: Striped,
    /// TCP connect + upgrade + welcome, µs.
    pub connect: Striped,
    /// Intended send -> actually written, µs: how far the generator itself fell behind.
    pub send_lag: Striped,
}

/// Which tally to bump.
#[derive(Debug, Clone, Copy)]
pub enum Tally {
    FailedReason,
    ErrorCode,
    ConnectError,
}

impl Stats {
    pub fn bump(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        self.add(counter, 1);
    }

    pub fn add(&self, counter: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        counter(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    pub fn note_send_time(&self, ns: u64) {
        self.counters.last_send_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Counts one occurrence of `name` (these are rare: failures only, so a lock is fine).
    pub fn tally(&self, which: Tally, name: &str) {
        let mut t = lock(&self.tallies);
        let map = match which {
            Tally::FailedReason => &mut t.failed_reasons,
            Tally::ErrorCode => &mut t.error_codes,
            Tally::ConnectError => &mut t.connect_errors,
        };
        *map.entry(name.to_owned()).or_default() += 1;
    }

    pub fn tallies(&self) -> Tallies {
        lock(&self.tallies).clone()
    }
}

impl Tallies {
    pub fn add(&mut self, other: &Tallies) {
        for (mine, theirs) in [
            (&mut self.failed_reasons, &other.failed_reasons),
            (&mut self.error_codes, &other.error_codes),
            (&mut self.connect_errors, &other.connect_errors),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_merge_and_clamp() {
        let s = Striped::default();
        for conn in 0..100 {
            s.record(conn, 100);
        }
        s.record(3, 0); // clamped up to 1 µs
        s.record(4, u64::MAX); // clamped down to an hour
        let h = s.merged();
        assert_eq!(h.len(), 102);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= HIST_MAX_US);
        assert_eq!(h.value_at_quantile(0.5), 100);
    }

    #[test]
    fn counters_snapshot_and_tallies() {
        let s = Stats::default();
        s.bump(|c| &c.sent);
        s.add(|c| &c.delivered, 3);
        s.note_send_time(50);
        s.note_send_time(20);
        s.tally(Tally::FailedReason, "no router");
        s.tally(Tally::FailedReason, "no router");
        s.tally(Tally::ErrorCode, "too_large");
        let c = s.counters.snapshot();
        assert_eq!((c.sent, c.delivered, c.last_send_ns), (1, 3, 50));
        let t = s.tallies();
        assert_eq!(t.failed_reasons["no router"], 2);
        assert_eq!(t.error_codes["too_large"], 1);
        assert!(t.connect_errors.is_empty());
    }
}
