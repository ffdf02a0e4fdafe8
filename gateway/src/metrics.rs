//! The gateway's metrics: one [`ShardMetrics`] per shard (bumped only by that shard), summed
//! when the admin port renders them.

use std::sync::{Arc, OnceLock};

use ops::metrics::{header, histogram, sample, Counter, Gauge, Histogram};
use runtime::outbox::Class;
use runtime::rt::Backend;
use wire::frame::AckStatus;

/// Why a client connection was dropped by the gateway.
#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// Its send queue passed `--client-queue`.
    SlowConsumer = 0,
    /// Silent past `--idle-timeout`.
    Idle = 1,
    /// Refused at the limit of `--max-connections`.
    Capacity = 2,
}

const DROPS: [&str; 3] = ["slow_consumer", "idle", "capacity"];

/// Which registry operation sent some commands (for the upkeep figure: commands per user per
/// minute).
#[derive(Debug, Clone, Copy)]
pub enum RegistryOp {
    /// A new session.
    Register = 0,
    /// The spread TTL upkeep of live sessions.
    Refresh = 1,
    /// A closed session.
    Unregister = 2,
    /// The process's liveness record (shard 0 only).
    Heartbeat = 3,
    /// Re-registering every live session after Redis lost data.
    Rebuild = 4,
}

const REGISTRY_OPS: [&str; 5] = ["register", "refresh", "unregister", "heartbeat", "rebuild"];
const ACKS: [&str; 3] = ["delivered", "offline", "failed"];

/// Counters of one shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub connections: Gauge,
    pub connects: Counter,
    pub auth_failures: Counter,
    pub register_failures: Counter,
    pub messages_in: Counter,
    pub deliveries_out: Counter,
    pub client_errors: Counter,
    pub rate_limited: Counter,
    acks: [Counter; 3],
    drops: [Counter; 3],
    pub router_links_up: Gauge,
    pub pending_sends: Gauge,
    pub registry_register: Histogram,
    registry_cmds: [Counter; 5],
    /// Rebuilds of this shard's sessions in the registry, completed.
    pub rebuilds: Counter,
    /// Connection attempts shed (capacity, handshake backlog, registry down) with a retry hint.
    pub shed: Counter,
    /// Connections parked now (socket in the shard's epoll set, no event-loop state).
    pub parked: Gauge,
    /// Connections parked, and woken again, since start.
    pub parks: Counter,
    pub unparks: Counter,
    /// Keep-alive pings written to parked sockets, and their pongs read, without unparking.
    pub parked_pings: Counter,
    pub parked_pongs: Counter,
    /// This shard's Redis client.
    pub redis: ops::metrics::RedisGauges,
}

impl ShardMetrics {
    pub fn ack(&self, s: AckStatus) {
        self.acks[s as usize].inc();
    }
    pub fn drop(&self, d: DropReason) {
        self.drops[d as usize].inc();
    }
    /// Counts `n` Redis commands sent for `op`.
    pub fn registry_cmds(&self, op: RegistryOp, n: u64) {
        self.registry_cmds[op as usize].add(n);
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
        let per_shard = |out: &mut String,
                         name: &str,
                         kind: &str,
                         help: &str,
                         f: &dyn Fn(&ShardMetrics) -> i64| {
            header(out, name, kind, help);
            for (i, s) in self.shards.iter().enumerate() {
                sample(out, name, &format!("shard=\"{i}\""), f(s));
            }
        };
        per_shard(
            out,
            "connect_gateway_connections",
            "gauge",
            "Open client connections.",
            &|s| s.connections.get(),
        );
        per_shard(
            out,
            "connect_gateway_connects_total",
            "counter",
            "Client sessions established.",
            &|s| s.connects.get() as i64,
        );
        per_shard(
            out,
            "connect_gateway_messages_in_total",
            "counter",
            "Client sends accepted for routing.",
            &|s| s.messages_in.get() as i64,
        );
        per_shard(
            out,
            "connect_gateway_deliveries_out_total",
            "counter",
            "Messages written to client sessions.",
            &|s| s.deliveries_out.get() as i64,
        );
        per_shard(
            out,
            "connect_gateway_router_links_up",
            "gauge",
            "Router links connected.",
            &|s| s.router_links_up.get(),
        );
        per_shard(
            out,
            "connect_gateway_pending_sends",
            "gauge",
            "Sends waiting for their outcome.",
            &|s| s.pending_sends.get(),
        );
        per_shard(
            out,
            "connect_gateway_parked_connections",
            "gauge",
            "Idle client connections parked (no event-loop state until they have traffic).",
            &|s| s.parked.get(),
        );
        per_shard(
            out,
            "connect_gateway_parks_total",
            "counter",
            "Client connections parked after --park-after-ms of silence.",
            &|s| s.parks.get() as i64,
        );
        per_shard(
            out,
            "connect_gateway_unparks_total",
            "counter",
            "Parked client connections woken by input, output or a close.",
            &|s| s.unparks.get() as i64,
        );
        per_shard(
            out,
            "connect_gateway_parked_pings_total",
            "counter",
            "Keep-alive pings written straight to parked sockets (no unpark).",
            &|s| s.parked_pings.get() as i64,
        );
        per_shard(
            out,
            "connect_gateway_parked_pongs_total",
            "counter",
            "Pongs read from parked sockets without unparking them.",
            &|s| s.parked_pongs.get() as i64,
        );
        let total = |f: &dyn Fn(&ShardMetrics) -> u64| self.shards.iter().map(f).sum::<u64>();
        header(
            out,
            "connect_gateway_acks_total",
            "counter",
            "Acks sent to clients, by status.",
        );
        for (i, st) in ACKS.iter().enumerate() {
            sample(
                out,
                "connect_gateway_acks_total",
                &format!("status=\"{st}\""),
                total(&|s| s.acks[i].get()),
            );
        }
        header(
            out,
            "connect_gateway_drops_total",
            "counter",
            "Connections dropped by the gateway, by reason.",
        );
        for (i, r) in DROPS.iter().enumerate() {
            sample(
                out,
                "connect_gateway_drops_total",
                &format!("reason=\"{r}\""),
                total(&|s| s.drops[i].get()),
            );
        }
        header(
            out,
            "connect_gateway_rejects_total",
            "counter",
            "Upgrades refused, by reason.",
        );
        sample(
            out,
            "connect_gateway_rejects_total",
            "reason=\"auth\"",
            total(&|s| s.auth_failures.get()),
        );
        sample(
            out,
            "connect_gateway_rejects_total",
            "reason=\"registry\"",
            total(&|s| s.register_failures.get()),
        );
        header(
            out,
            "connect_gateway_client_errors_total",
            "counter",
            "Error replies sent for bad client input.",
        );
        sample(
            out,
            "connect_gateway_client_errors_total",
            "",
            total(&|s| s.client_errors.get()),
        );
        header(
            out,
            "connect_gateway_rate_limited_total",
            "counter",
            "Sends refused by the per-connection rate limit.",
        );
        sample(
            out,
            "connect_gateway_rate_limited_total",
            "",
            total(&|s| s.rate_limited.get()),
        );
        header(
            out,
            "connect_gateway_registry_commands_total",
            "counter",
            "Registry commands sent (Redis commands, also counted on memory://), by operation.",
        );
        for (i, op) in REGISTRY_OPS.iter().enumerate() {
            sample(
                out,
                "connect_gateway_registry_commands_total",
                &format!("op=\"{op}\""),
                total(&|s| s.registry_cmds[i].get()),
            );
        }
        header(
            out,
            "connect_gateway_registry_rebuilds_total",
            "counter",
            "Times a shard re-registered all its sessions (Redis lost data or reconnected).",
        );
        sample(
            out,
            "connect_gateway_registry_rebuilds_total",
            "",
            total(&|s| s.rebuilds.get()),
        );
        header(
            out,
            "connect_gateway_shed_total",
            "counter",
            "Connection attempts turned away with a retry hint.",
        );
        sample(
            out,
            "connect_gateway_shed_total",
            "",
            total(&|s| s.shed.get()),
        );
        header(
            out,
            "connect_registry_seconds",
            "histogram",
            "Session registration latency.",
        );
        histogram(
            out,
            "connect_registry_seconds",
            "op=\"register\"",
            self.shards.iter().map(|s| &s.registry_register),
        );
        ops::metrics::redis(out, "connect_gateway", self.shards.iter().map(|s| &s.redis));
        let t = runtime::outbox::totals(Class::Client);
        ops::metrics::queues(out, "connect_gateway", "client", t.outboxes, t.queued_bytes);
        let t = runtime::outbox::totals(Class::Link);
        ops::metrics::queues(out, "connect_gateway", "link", t.outboxes, t.queued_bytes);
        ops::metrics::process(out, self.backend.get().copied().unwrap_or(""));
    }
}
