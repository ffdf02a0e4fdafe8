//! Metrics over relaxed atomics, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Latency bucket bounds in seconds: 50 us to 2.5 s, enough to see both a healthy loopback
/// Redis (sub-millisecond) and a struggling remote one.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// A latency histogram with [`LATENCY_BOUNDS`] buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line; `labels` is `key="value",...` or empty.
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Writes the sample lines of several histograms summed together (e.g. over shards).
pub fn histogram<'a>(
    out: &mut String,
    name: &str,
    labels: &str,
    parts: impl IntoIterator<Item = &'a Histogram> + Clone,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
        cumulative += parts
            .clone()
            .into_iter()
            .map(|h| h.buckets[i].load(Relaxed))
            .sum::<u64>();
        let l = format!("{labels}{sep}le=\"{bound}\"");
        sample(out, &format!("{name}_bucket"), &l, cumulative);
    }
    let count: u64 = parts
        .clone()
        .into_iter()
        .map(|h| h.count.load(Relaxed))
        .sum();
    let sum_ns: u64 = parts.into_iter().map(|h| h.sum_ns.load(Relaxed)).sum();
    sample(
        out,
        &format!("{name}_bucket"),
        &format!("{labels}{sep}le=\"+Inf\""),
        count,
    );
    sample(out, &format!("{name}_sum"), labels, sum_ns as f64 / 1e9);
    sample(out, &format!("{name}_count"), labels, count);
}

/// Writes `<prefix>_<kind>_queues` (outboxes alive) and `<prefix>_<kind>_queue_bytes` (bytes
/// queued in them, not yet handed to a socket), process-wide: a soak checks both stay flat.
pub fn queues(out: &mut String, prefix: &str, kind: &str, outboxes: i64, bytes: i64) {
    let name = format!("{prefix}_{kind}_queues");
    header(
        out,
        &name,
        "gauge",
        &format!("Send queues of {kind} connections alive (whole process)."),
    );
    sample(out, &name, "", outboxes);
    let name = format!("{prefix}_{kind}_queue_bytes");
    header(
        out,
        &name,
        "gauge",
        &format!("Bytes queued for {kind} connections, not yet written to their sockets (whole process)."),
    );
    sample(out, &name, "", bytes);
}

/// The process-wide gauges every binary exports: which event loop runs (`io_uring` or
/// `epoll`, 1 for the active one) and whether the process is draining.
pub fn process(out: &mut String, backend: &str) {
    header(
        out,
        "connect_io_backend",
        "gauge",
        "The event loop in use (1 for the active one).",
    );
    for b in ["io_uring", "epoll"] {
        let labels = format!("backend=\"{b}\"");
        sample(out, "connect_io_backend", &labels, i64::from(b == backend));
    }
    header(
        out,
        "connect_draining",
        "gauge",
        "1 while the process drains after SIGTERM.",
    );
    sample(
        out,
        "connect_draining",
        "",
        i64::from(crate::drain::draining()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let (a, b) = (Histogram::default(), Histogram::default());
        a.observe(Duration::from_micros(40));
        b.observe(Duration::from_millis(3));
        b.observe(Duration::from_secs(10));
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "op=\"lookup\"", [&a, &b]);
        assert!(
            out.contains("x_seconds_bucket{op=\"lookup\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"lookup\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"lookup\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{op=\"lookup\"} 3\n"), "{out}");
    }

    #[test]
    fn counters_and_gauges() {
        let c = Counter::default();
        c.inc();
        c.add(2);
        assert_eq!(c.get(), 3);
        let g = Gauge::default();
        g.inc();
        g.inc();
        g.dec();
        assert_eq!(g.get(), 1);
    }
}

/// One shard's view of its Redis client (copied from the client's stats by the shard every
/// few hundred ms; the client itself is shard-local and not `Send`).
#[derive(Debug, Default)]
pub struct RedisGauges {
    /// 1 while a connection serves requests.
    pub connected: Gauge,
    /// Requests waiting for replies.
    pub in_flight: Gauge,
    /// Write-to-reply latency, microseconds (moving average).
    pub latency_us: Gauge,
    /// Reconnects after a lost connection.
    pub reconnects: Gauge,
    /// Requests failed for lack of a reply in time.
    pub timeouts: Gauge,
    /// Requests refused at the in-flight bound.
    pub overloaded: Gauge,
}

impl RedisGauges {
    /// Copies a client's figures (the caller maps them from `resp_client::Stats`; ops stays
    /// free of a Redis dependency).
    pub fn set(
        &self,
        connected: bool,
        in_flight: usize,
        latency_us: u64,
        reconnects: u64,
        timeouts: u64,
        overloaded: u64,
    ) {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.connected.set(i64::from(connected));
        self.in_flight.set(i(in_flight as u64));
        self.latency_us.set(i(latency_us));
        self.reconnects.set(i(reconnects));
        self.timeouts.set(i(timeouts));
        self.overloaded.set(i(overloaded));
    }
}

/// Writes `<prefix>_redis_*` samples: per shard for the gauges, summed for the counts.
pub fn redis<'a>(
    out: &mut String,
    prefix: &str,
    shards: impl Iterator<Item = &'a RedisGauges> + Clone,
) {
    let per_shard = |out: &mut String, what: &str, help: &str, f: &dyn Fn(&RedisGauges) -> i64| {
        let name = format!("{prefix}_redis_{what}");
        header(out, &name, "gauge", help);
        for (i, g) in shards.clone().enumerate() {
            sample(out, &name, &format!("shard=\"{i}\""), f(g));
        }
    };
    per_shard(
        out,
        "connected",
        "1 while the shard's Redis connection serves requests.",
        &|g| g.connected.get(),
    );
    per_shard(
        out,
        "in_flight",
        "Redis requests waiting for replies.",
        &|g| g.in_flight.get(),
    );
    per_shard(
        out,
        "latency_microseconds",
        "Redis write-to-reply latency, moving average.",
        &|g| g.latency_us.get(),
    );
    let total = |out: &mut String, what: &str, help: &str, f: &dyn Fn(&RedisGauges) -> i64| {
        let name = format!("{prefix}_redis_{what}_total");
        header(out, &name, "counter", help);
        sample(out, &name, "", shards.clone().map(f).sum::<i64>());
    };
    total(
        out,
        "reconnects",
        "Redis connections re-established after a loss.",
        &|g| g.reconnects.get(),
    );
    total(
        out,
        "timeouts",
        "Redis requests failed for lack of a reply in time.",
        &|g| g.timeouts.get(),
    );
    total(
        out,
        "overloaded",
        "Redis requests refused at the in-flight bound.",
        &|g| g.overloaded.get(),
    );
}
