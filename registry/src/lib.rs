//! The Session Registry: which gateway shard holds each live session of a user, and which
//! gateway processes are alive.
//!
//! Gateways [`Registry::register`] a session when its WebSocket opens, [`Registry::refresh`]
//! their sessions in pipelined batches spread over the (long) session TTL, and
//! [`Registry::unregister`] on close. Each gateway process also beats
//! [`Registry::heartbeat`] about twice a second: a liveness record with a TTL of a couple of
//! seconds. Routers [`Registry::lookup`] a user's sessions for every message and judge each one
//! by a [`LiveSet`] read with [`Registry::live_gateways`]: a `kill -9` of a gateway makes its
//! users offline within seconds, however long the session TTL. Two backends with the same
//! semantics: `memory://` (the process-global embedded store, for a single machine) and Redis
//! (shared by every machine): one node (`redis://`, `rediss://` with TLS) or a Redis Cluster
//! such as ElastiCache in cluster mode (`redis-cluster://`, `rediss-cluster://`).
//!
//! Every operation queues its Redis commands when it is *called* and returns a `'static`
//! future ([`RegistryFuture`]), so a router can issue lookups for many messages and await them
//! in order over one pipelined connection.
//!
//! # Schema (Redis 7.0+)
//! - One sorted set per user, key `connect:u:{<user>}`. The `{...}` hash tag is the user id,
//!   so every key of a user stays in one cluster slot.
//! - Member `<session hex16>|<instance>|<epoch hex16>|<shard>|<addr>`, e.g.
//!   `00000000000000ab|gw-1|0000019c7e5f1a2b|3|10.0.0.7:7100`; score = the session's expiry in
//!   unix ms. The epoch is the gateway process's boot time in ms.
//! - `register` = one pipeline: `ZREMRANGEBYSCORE key -inf <now_ms>` (lazy removal of
//!   expired members), `ZADD key <now_ms+ttl_ms> <member>`, `PEXPIRE key <ttl_ms> NX`,
//!   `PEXPIRE key <ttl_ms> GT`. NX sets a TTL on a new key, GT only ever extends it, so the
//!   key expires with its latest member: every key Connect writes has a TTL, with no Lua.
//! - `refresh` = per entry `ZADD key <exp> <member>` plus the two `PEXPIRE`s, all entries in
//!   one pipeline. Plain `ZADD` (not `XX`): a refresh after Redis lost its data re-creates it.
//! - `unregister` = `ZREM key <member>`. The member names the exact session, so a late
//!   cleanup from an old gateway never removes a newer session of the same user.
//! - `lookup` = `ZRANGE key (<now_ms> +inf BYSCORE`: unexpired members only; members that do
//!   not parse are skipped with a warning.
//! - Gateway liveness: one sorted set `connect:gateways`, member
//!   `<instance>|<epoch hex16>|<addr>`, score = the record's expiry in unix ms. `heartbeat` =
//!   `ZREMRANGEBYSCORE -inf <now>`, `ZADD`, `PEXPIRE NX`, `PEXPIRE GT`; the `ZADD` reply says
//!   whether the record was missing (Redis lost data: the gateway re-registers its sessions).
//!   `live_gateways` = `ZRANGE connect:gateways (<now> +inf BYSCORE`. One key for all gateways:
//!   a few hundred members, a few hundred writes a second at most.
//! - Users are validated by the gateway; the registry still rejects a user that is empty or
//!   contains `{`, `}` or `|`, and an instance id or address containing `|`.
//!
//! Scores use the caller's wall clock and key TTLs Redis' clock; keep clocks in sync (NTP).
//!
//! # Layout
//! - [`entry`]: [`SessionEntry`], [`GatewayRecord`] and their validation.
//! - [`schema`]: key/member encoding, the command batch of each operation, reply parsing
//!   (sans-I/O).
//! - [`liveness`]: [`LiveSet`] and the [`Verdict`] on a session (sans-I/O).
//! - [`memory`]: [`MemoryStore`] (same semantics, time passed in) and [`MemoryRegistry`].
//! - [`redis`]: [`RedisRegistry`] over a shard-local [`resp_client::Client`].
//! - [`future`]: [`RegistryFuture`], the named future of every operation.
//! - [`error`]: [`Error`], the crate's one error type.
//! - this file: [`Registry`] (the backend chosen by URL) and [`RegistryOptions`].

pub mod entry;
pub mod error;
pub mod future;
pub mod liveness;
pub mod memory;
pub mod redis;
pub mod schema;

use std::time::Duration;

pub use entry::{GatewayRecord, SessionEntry};
pub use error::Error;
pub use future::RegistryFuture;
pub use liveness::{LiveSet, Verdict};
pub use memory::{MemoryRegistry, MemoryStore};
pub use redis::RedisRegistry;

/// Tuning for [`Registry::connect`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Template for the Redis client of a Redis registry: everything except the address(es),
    /// database, credentials, cluster mode and TLS, which come from the URL (TLS settings the
    /// URL leaves out, e.g. the CA file, may come from here). Defaults:
    /// [`resp_client::Config`]'s (1 s command timeout, 16384 requests in flight, reconnect
    /// backoff 50 ms to 2 s).
    pub redis: resp_client::Config,
}

/// The session registry, on the backend its URL names. Cheap to clone.
#[derive(Clone)]
pub enum Registry {
    /// `memory://`: the process-global embedded store.
    Memory(MemoryRegistry),
    /// `redis://...`: a Redis, through this executor's own client.
    Redis(RedisRegistry),
}

impl Registry {
    /// `memory://` -> the process-global embedded registry (one store per process, shared by
    /// all threads and executors). Redis URLs -> a [`RedisRegistry`] with its own client,
    /// connecting in the background:
    /// - `redis://[user:pass@]host:port[/db]`, `rediss://...[?ca=/path/ca.pem&sni=name]` (TLS);
    /// - `redis-cluster://[user:pass@]h1:p1,h2:p2`, `rediss-cluster://...` (Redis Cluster,
    ///   seeded by the listed nodes; ElastiCache's configuration endpoint is one seed).
    ///
    /// Call on the glommio executor that will use it (one per shard).
    ///
    /// # Panics
    /// For Redis URLs, outside a glommio executor.
    pub fn connect(url: &str, opts: RegistryOptions) -> Result<Registry, Error> {
        if url == "memory://" {
            return Ok(Registry::Memory(MemoryRegistry::global()));
        }
        if url.starts_with("memory:") {
            return Err(Error::InvalidUrl(format!(
                "{url:?}: the embedded registry is spelled exactly memory://"
            )));
        }
        Ok(Registry::Redis(RedisRegistry::connect(url, &opts)?))
    }

    /// Adds (or re-adds) this session, expiring `ttl` from now; expired sessions of the user
    /// are cleaned up on the way.
    pub fn register(&self, entry: &SessionEntry, ttl: Duration) -> RegistryFuture<()> {
        match self {
            Registry::Memory(m) => RegistryFuture::ready(entry.validate().map(|()| {
                m.store()
                    .register(entry, schema::ttl_ms(ttl), schema::now_ms())
            })),
            Registry::Redis(r) => r.register(entry, ttl),
        }
    }

    /// Extends every entry to expire `ttl` from now (re-creating missing ones), as one
    /// pipelined batch. An invalid entry fails the whole batch before anything is sent.
    pub fn refresh(&self, entries: &[SessionEntry], ttl: Duration) -> RegistryFuture<()> {
        match self {
            Registry::Memory(m) => {
                let valid = entries.iter().try_for_each(SessionEntry::validate);
                RegistryFuture::ready(valid.map(|()| {
                    m.store()
                        .refresh(entries, schema::ttl_ms(ttl), schema::now_ms())
                }))
            }
            Registry::Redis(r) => r.refresh(entries, ttl),
        }
    }

    /// Removes exactly this session (same session id, instance, shard and address); true if
    /// it was registered.
    pub fn unregister(&self, entry: &SessionEntry) -> RegistryFuture<bool> {
        match self {
            Registry::Memory(m) => RegistryFuture::ready(
                entry
                    .validate()
                    .map(|()| m.store().unregister(entry, schema::now_ms())),
            ),
            Registry::Redis(r) => r.unregister(entry),
        }
    }

    /// The user's live (unexpired) sessions.
    pub fn lookup(&self, user: &str) -> RegistryFuture<Vec<SessionEntry>> {
        match self {
            Registry::Memory(m) => RegistryFuture::ready(
                entry::validate_user(user).map(|()| m.store().lookup(user, schema::now_ms())),
            ),
            Registry::Redis(r) => r.lookup(user),
        }
    }

    /// Removes exactly these sessions (lazy cleanup of sessions whose gateway is dead), as one
    /// pipelined batch; how many were there.
    pub fn remove_sessions(&self, entries: &[SessionEntry]) -> RegistryFuture<u64> {
        match self {
            Registry::Memory(m) => {
                let valid = entries.iter().try_for_each(SessionEntry::validate);
                RegistryFuture::ready(valid.map(|()| {
                    let now = schema::now_ms();
                    entries
                        .iter()
                        .filter(|e| m.store().unregister(e, now))
                        .count() as u64
                }))
            }
            Registry::Redis(r) => r.remove_sessions(entries),
        }
    }

    /// A gateway's liveness heartbeat: its record expires `ttl` from now, and records of dead
    /// gateways are dropped. True when the record was missing: on the first beat, and after
    /// Redis lost it (restart, flush, failover, or the record expired while this gateway was
    /// stalled), when the gateway must register its sessions again.
    pub fn heartbeat(&self, gw: &GatewayRecord, ttl: Duration) -> RegistryFuture<bool> {
        match self {
            Registry::Memory(m) => RegistryFuture::ready(gw.validate().map(|()| {
                m.store()
                    .heartbeat(gw, schema::ttl_ms(ttl), schema::now_ms())
            })),
            Registry::Redis(r) => r.heartbeat(gw, ttl),
        }
    }

    /// Removes a gateway's liveness record (clean shutdown); true if it was there.
    pub fn retire(&self, gw: &GatewayRecord) -> RegistryFuture<bool> {
        match self {
            Registry::Memory(m) => {
                RegistryFuture::ready(gw.validate().map(|()| m.store().retire(gw)))
            }
            Registry::Redis(r) => r.retire(gw),
        }
    }

    /// The gateways whose liveness record has not expired (see [`LiveSet`]).
    pub fn live_gateways(&self) -> RegistryFuture<Vec<GatewayRecord>> {
        match self {
            Registry::Memory(m) => {
                RegistryFuture::ready(Ok(m.store().live_gateways(schema::now_ms())))
            }
            Registry::Redis(r) => r.live_gateways(),
        }
    }

    /// Waits until the backend can serve requests, at most `timeout` (the Redis client
    /// connects in the background and fails requests fast until then). Immediate for memory.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        match self {
            Registry::Memory(_) => Ok(()),
            Registry::Redis(r) => Ok(r.client().wait_connected(timeout).await?),
        }
    }

    /// Health of the Redis connection (`None` for memory), e.g. for a metrics endpoint.
    pub fn redis_stats(&self) -> Option<resp_client::Stats> {
        match self {
            Registry::Memory(_) => None,
            Registry::Redis(r) => Some(r.client().stats()),
        }
    }
}
