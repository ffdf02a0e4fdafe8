//! Keeping the registry true to this gateway's live sockets: the process's liveness heartbeat,
//! the spread TTL refresh of every session, and the rebuild after Redis lost data.
//!
//! - Heartbeat (shard 0): the liveness record every `--liveness-interval-ms`. When its `ZADD`
//!   says the record was missing after the first beat, Redis lost data (restart, `FLUSHALL`,
//!   failover to a replica that missed writes, or this process stalled past the record's TTL),
//!   and every shard re-registers its sessions from local state: no client reconnects.
//! - Refresh (every shard): each session once per `--session-ttl`/3. Sessions are spread over
//!   one-second slots by their (random) id, so upkeep is a steady trickle of pipelined
//!   batches instead of a burst every period.
//! - Rebuild (every shard): all sessions at once, when shard 0 asks (above) or when the
//!   shard's own Redis client had to reconnect; retried every tick until it succeeds.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use registry::{GatewayRecord, SessionEntry};
use runtime::rt::{self, sleep};

use crate::metrics::RegistryOp;
use crate::shard::Shard;

/// How often a shard looks for a rebuild request.
const TICK: Duration = Duration::from_millis(200);
/// The refresh slot length.
const SLOT: Duration = Duration::from_secs(1);
/// Sessions per pipelined registry batch.
const BATCH: usize = 1000;
/// After a loss, a second rebuild this much later: routers that judged this gateway dead
/// while its record was missing may have cleaned up sessions lazily in the meantime.
const SECOND_REBUILD: Duration = Duration::from_secs(3);
/// Redis commands per refreshed session (`ZADD`, `PEXPIRE NX`, `PEXPIRE GT`).
pub const REFRESH_CMDS: u64 = 3;
/// Redis commands per registration (adds `ZREMRANGEBYSCORE`).
pub const REGISTER_CMDS: u64 = 4;
/// Redis commands per heartbeat.
const HEARTBEAT_CMDS: u64 = 4;

/// Process-wide liveness state, shared by the shards.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Bumped when Redis lost data: every shard re-registers its sessions.
    rebuild_gen: AtomicU64,
    /// The liveness record has been written: sessions may be registered (a router that sees
    /// a session of an instance without a record judges it dead).
    beating: AtomicBool,
    /// Shutting down: stop beating (the record is retired).
    stopped: AtomicBool,
}

impl Liveness {
    /// Whether the first heartbeat has landed.
    pub fn beating(&self) -> bool {
        self.beating.load(Ordering::Acquire)
    }

    fn request_rebuild(&self) {
        self.rebuild_gen.fetch_add(1, Ordering::AcqRel);
    }

    fn generation(&self) -> u64 {
        self.rebuild_gen.load(Ordering::Acquire)
    }
}

/// Whether `session` is refreshed in slot `tick` of `slots` (sans-I/O, for the tests).
pub fn due(session: u64, tick: u64, slots: u64) -> bool {
    session % slots.max(1) == tick % slots.max(1)
}

/// Slots per refresh period: one per second of `ttl / 3`.
pub fn slots(ttl: Duration) -> u64 {
    ((ttl / 3).as_secs()).max(1)
}

fn record(shard: &Shard) -> GatewayRecord {
    GatewayRecord {
        instance: shard.cfg.instance_id.clone(),
        epoch: shard.cfg.epoch,
        addr: shard.advertise.clone(),
    }
}

/// Shard 0's heartbeat, until [`retire`].
pub async fn heartbeat_loop(shard: Rc<Shard>) {
    let record = record(&shard);
    let (interval, ttl) = (shard.cfg.liveness_interval, shard.cfg.liveness_ttl);
    let mut failing_since: Option<Instant> = None;
    while !shard.live.stopped.load(Ordering::Acquire) {
        let beat = shard.registry.heartbeat(&record, ttl);
        shard
            .m()
            .registry_cmds(RegistryOp::Heartbeat, HEARTBEAT_CMDS);
        match beat.await {
            Ok(created) => {
                let first = !shard.live.beating.swap(true, Ordering::AcqRel);
                if first {
                    tracing::info!(instance = %record.instance, epoch = record.epoch, "liveness record written");
                } else if created {
                    tracing::warn!(
                        "liveness record was missing: the registry lost data (or this process \
                         stalled); re-registering every session"
                    );
                    shard.live.request_rebuild();
                    let live = shard.live.clone();
                    rt::spawn(async move {
                        sleep(SECOND_REBUILD).await;
                        live.request_rebuild();
                    })
                    .detach();
                }
                if let Some(since) = failing_since.take() {
                    tracing::info!(after = ?since.elapsed(), "liveness heartbeat recovered");
                }
            }
            Err(e) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, "liveness heartbeat failed; routers will read this gateway's users as offline if it keeps failing");
                }
            }
        }
        sleep(interval).await;
    }
}

/// Stops the heartbeat and removes the liveness record (end of a drain): routers read any
/// session left behind as gone at once.
pub async fn retire(shard: &Shard) {
    shard.live.stopped.store(true, Ordering::Release);
    if let Err(e) = shard.registry.retire(&record(shard)).await {
        tracing::warn!(error = %e, "could not remove the liveness record; it expires by itself");
    }
}

/// Every shard: spread refreshes and rebuilds, forever.
pub async fn upkeep_loop(shard: Rc<Shard>) {
    let slots = slots(shard.cfg.session_ttl);
    let reconnects = |s: &Shard| s.registry.redis_stats().map_or(0, |st| st.reconnects);
    let mut seen_gen = shard.live.generation();
    let mut seen_reconnects = reconnects(&shard);
    let mut rebuild_due = false;
    let mut tick = 0u64;
    let mut next_slot = Instant::now() + SLOT;
    loop {
        sleep(TICK).await;
        if let Some(st) = shard.registry.redis_stats() {
            let g = &shard.m().redis;
            g.set(
                st.connected,
                st.in_flight,
                st.latency_us,
                st.reconnects,
                st.timeouts,
                st.overloaded,
            );
        }
        let gen = shard.live.generation();
        let rc = reconnects(&shard);
        if gen != seen_gen || rc != seen_reconnects {
            (seen_gen, seen_reconnects) = (gen, rc);
            rebuild_due = true;
        }
        if rebuild_due {
            let started = Instant::now();
            let all = collect(&shard, |_| true);
            match write(&shard, all, RegistryOp::Rebuild).await {
                Ok(n) => {
                    rebuild_due = false;
                    shard.m().rebuilds.inc();
                    tracing::info!(shard = shard.id, sessions = n, took = ?started.elapsed(), "sessions re-registered");
                }
                Err(e) => {
                    tracing::warn!(shard = shard.id, error = %e, "re-registering sessions failed; retrying")
                }
            }
        }
        while Instant::now() >= next_slot {
            next_slot += SLOT;
            tick += 1;
            let entries = collect(&shard, |sid| due(sid, tick, slots));
            if let Err(e) = write(&shard, entries, RegistryOp::Refresh).await {
                tracing::warn!(shard = shard.id, error = %e, "session refresh failed");
            }
        }
    }
}

fn collect(shard: &Shard, pick: impl Fn(u64) -> bool) -> Vec<SessionEntry> {
    shard
        .sessions
        .borrow()
        .iter()
        .filter(|(sid, _)| pick(**sid))
        .map(|(_, c)| c.entry(shard))
        .collect()
}

/// Refreshes `entries` (re-creating missing ones) in pipelined batches. Each batch is cut to
/// the sessions still open right before it is queued, so a session closed meanwhile (whose
/// `ZREM` is already queued) is not written back as a ghost.
async fn write(
    shard: &Shard,
    entries: Vec<SessionEntry>,
    op: RegistryOp,
) -> Result<usize, registry::Error> {
    let ttl = shard.cfg.session_ttl;
    let mut n = 0;
    for chunk in entries.chunks(BATCH) {
        let batch: Vec<SessionEntry> = {
            let open = shard.sessions.borrow();
            chunk
                .iter()
                .filter(|e| open.contains_key(&e.session))
                .cloned()
                .collect()
        };
        if batch.is_empty() {
            continue;
        }
        let fut = shard.registry.refresh(&batch, ttl);
        shard
            .m()
            .registry_cmds(op, REFRESH_CMDS * batch.len() as u64);
        n += batch.len();
        fut.await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_is_due_once_per_period() {
        let n = slots(Duration::from_secs(1800));
        assert_eq!(n, 600);
        for session in [1u64, 599, 600, 12345, u64::MAX] {
            let due_ticks = (0..n * 2).filter(|t| due(session, *t, n)).count();
            assert_eq!(due_ticks, 2, "session {session}");
        }
        assert_eq!(
            slots(Duration::from_secs(2)),
            1,
            "short TTLs refresh every second"
        );
        assert!(due(7, 3, 1));
    }

    #[test]
    fn slots_spread_sessions_evenly() {
        let slots = 600;
        let mut per_slot = vec![0u32; slots as usize];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..60_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            per_slot[(x % slots) as usize] += 1;
        }
        let (min, max) = (
            per_slot.iter().min().unwrap(),
            per_slot.iter().max().unwrap(),
        );
        assert!(*min > 50 && *max < 150, "{min}..{max}");
    }
}
