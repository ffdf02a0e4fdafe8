//! The router's metrics: one [`ShardMetrics`] per shard, summed by the admin port.

use std::sync::{Arc, OnceLock};

use ops::metrics::{header, histogram, sample, Counter, Gauge, Histogram};
use runtime::outbox::Class;
use runtime::rt::Backend;
use wire::frame::AckStatus;

const ACKS: [&str; 3] = ["delivered", "offline", "failed"];

/// Counters of one shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub gateway_links: Gauge,
    pub peer_links_up: Gauge,
    pub sends: Counter,
    pub deliveries: Counter,
    pub forwards_pending: Gauge,
    pub lookup_errors: Counter,
    /// Sessions skipped because their gateway is dead (and queued for removal).
    pub dead_sessions: Counter,
    /// Gateway instances in this shard's liveness view.
    pub live_gateways: Gauge,
    /// Presence requests answered.
    pub presence: Counter,
    /// This shard's Redis client.
    pub redis: ops::metrics::RedisGauges,
    acks: [Counter; 3],
    pub lookup: Histogram,
}

impl ShardMetrics {
    pub fn ack(&self, s: AckStatus) {
        self.acks[s as usize].inc();
    }
}

/// All shards' metrics plus process-wide state.
#[derive(Debug)]
pub struct Metrics {
    pub shards: Vec<ShardMetrics>,
    backend: OnceLock<&'static str>,
}

impl Metrics {
    pub fn new(shards: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            backend: OnceLock::new(),
        })
    }

    pub fn set_backend(&self, b: Backend) {
        let _ = self.backend.set(b.as_str());
    }

    /// Prometheus text for every metric.
    pub fn render(&self, out: &mut String) {
        type Get = dyn Fn(&ShardMetrics) -> i64;
        let per_shard = |out: &mut String, name: &str, kind: &str, help: &str, f: &Get| {
            header(out, name, kind, help);
            for (i, s) in self.shards.iter().enumerate() {
                sample(out, name, &format!("shard=\"{i}\""), f(s));
            }
        };
        per_shard(
            out,
            "connect_router_gateway_links",
            "gauge",
            "Links from gateways.",
            &|s| s.gateway_links.get(),
        );
        per_shard(
            out,
            "connect_router_peer_links_up",
            "gauge",
            "Links to gateway shards.",
            &|s| s.peer_links_up.get(),
        );
        per_shard(
            out,
            "connect_router_sends_total",
            "counter",
            "Sends received.",
            &|s| s.sends.get() as i64,
        );
        per_shard(
            out,
            "connect_router_deliveries_total",
            "counter",
            "Deliver frames sent.",
            &|s| s.deliveries.get() as i64,
        );
        per_shard(
            out,
            "connect_router_forwards_pending",
            "gauge",
            "Deliveries awaiting results.",
            &|s| s.forwards_pending.get(),
        );
        per_shard(
            out,
            "connect_router_live_gateways",
            "gauge",
            "Gateway instances with a live liveness record, as this shard last read them.",
            &|s| s.live_gateways.get(),
        );
        let total = |f: &dyn Fn(&ShardMetrics) -> u64| self.shards.iter().map(f).sum::<u64>();
        header(
            out,
            "connect_router_dead_sessions_total",
            "counter",
            "Sessions skipped because their gateway is dead or restarted (removed lazily).",
        );
        sample(
            out,
            "connect_router_dead_sessions_total",
            "",
            total(&|s| s.dead_sessions.get()),
        );
        header(
            out,
            "connect_router_presence_total",
            "counter",
            "Presence requests answered.",
        );
        sample(
            out,
            "connect_router_presence_total",
            "",
            total(&|s| s.presence.get()),
        );
        header(
            out,
            "connect_router_acks_total",
            "counter",
            "Acks sent, by status.",
        );
        for (i, st) in ACKS.iter().enumerate() {
            sample(
                out,
                "connect_router_acks_total",
                &format!("status=\"{st}\""),
                total(&|s| s.acks[i].get()),
            );
        }
        header(
            out,
            "connect_router_lookup_errors_total",
            "counter",
            "Registry lookups that failed.",
        );
        sample(
            out,
            "connect_router_lookup_errors_total",
            "",
            total(&|s| s.lookup_errors.get()),
        );
        header(
            out,
            "connect_registry_seconds",
            "histogram",
            "Registry lookup latency (queued to answered).",
        );
        histogram(
            out,
            "connect_registry_seconds",
            "op=\"lookup\"",
            self.shards.iter().map(|s| &s.lookup),
        );
        ops::metrics::redis(out, "connect_router", self.shards.iter().map(|s| &s.redis));
        let t = runtime::outbox::totals(Class::Link);
        ops::metrics::queues(out, "connect_router", "link", t.outboxes, t.queued_bytes);
        ops::metrics::process(out, self.backend.get().copied().unwrap_or(""));
    }
}
