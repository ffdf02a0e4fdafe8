//! The embedded registry (`memory://`): the same schema and expiry rules as Redis, in process
//! memory, for a single machine.
//!
//! [`MemoryStore`] is the core and takes the time (`now_ms`, unix milliseconds) as an argument,
//! so expiry is tested without sleeping. It mirrors the Redis commands one for one: a user's
//! set of members with expiry scores, plus the key's own expiry (`PEXPIRE NX` then `GT`).
//! Users are spread over mutex-guarded shards; every executor of the process shares one store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::schema::{gateway_member, member, parse_gateway_member, parse_member};
use crate::{GatewayRecord, SessionEntry};

/// Number of independently locked shards of a store.
const SHARDS: usize = 16;
/// Writes to a shard between two sweeps of its expired users.
const SWEEP_EVERY: u32 = 1024;

/// A registry store: user -> members with expiry, with Redis' semantics.
#[derive(Debug)]
pub struct MemoryStore {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    /// What Redis holds under `connect:gateways`: liveness member -> expiry.
    gateways: Mutex<HashMap<String, i64>>,
}

#[derive(Debug, Default)]
struct Shard {
    users: HashMap<String, UserKey>,
    writes: u32,
}

/// What Redis holds under `connect:u:{user}`.
#[derive(Debug)]
struct UserKey {
    /// member -> expiry (the ZSET score).
    members: HashMap<String, i64>,
    /// The key's own expiry.
    expires_at: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            gateways: Mutex::default(),
        }
    }

    fn gateways(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.gateways.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The liveness heartbeat: the record expires `ttl` from now, expired records are dropped.
    /// True when the record was missing (first beat, or it had expired).
    pub fn heartbeat(&self, gw: &GatewayRecord, ttl_ms: i64, now_ms: i64) -> bool {
        let mut gws = self.gateways();
        gws.retain(|_, exp| *exp > now_ms);
        gws.insert(gateway_member(gw), now_ms.saturating_add(ttl_ms))
            .is_none()
    }

    /// Removes the gateway's record (a clean shutdown); true if it was there.
    pub fn retire(&self, gw: &GatewayRecord) -> bool {
        self.gateways().remove(&gateway_member(gw)).is_some()
    }

    /// Gateways whose record has not expired, in expiry order.
    pub fn live_gateways(&self, now_ms: i64) -> Vec<GatewayRecord> {
        let gws = self.gateways();
        let mut live: Vec<(&String, i64)> = gws
            .iter()
            .filter(|(_, exp)| **exp > now_ms)
            .map(|(m, exp)| (m, *exp))
            .collect();
        live.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        live.into_iter()
            .filter_map(|(m, _)| parse_gateway_member(m.as_bytes()))
            .collect()
    }

    /// Forgets everything, like `FLUSHALL` (for tests of recovery from data loss).
    pub fn flush(&self) {
        self.gateways().clear();
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .users
                .clear();
        }
    }

    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(user) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave a half-written entry (each write is
        // one map operation), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `ZREMRANGEBYSCORE -inf now` + the upsert of [`MemoryStore::refresh`].
    pub fn register(&self, entry: &SessionEntry, ttl_ms: i64, now_ms: i64) {
        let mut shard = self.shard(&entry.user);
        if let Some(key) = shard.live(&entry.user, now_ms) {
            key.members.retain(|_, exp| *exp > now_ms);
        }
        shard.upsert(entry, ttl_ms, now_ms);
    }

    /// For each entry: `ZADD` with expiry `now + ttl`, and the key's expiry raised to it.
    pub fn refresh(&self, entries: &[SessionEntry], ttl_ms: i64, now_ms: i64) {
        for entry in entries {
            self.shard(&entry.user).upsert(entry, ttl_ms, now_ms);
        }
    }

    /// `ZREM`: removes exactly this session; true if it was there (expired or not, like Redis
    /// before the key itself expires).
    pub fn unregister(&self, entry: &SessionEntry, now_ms: i64) -> bool {
        let mut shard = self.shard(&entry.user);
        let Some(key) = shard.live(&entry.user, now_ms) else {
            return false;
        };
        let removed = key.members.remove(&member(entry)).is_some();
        if key.members.is_empty() {
            shard.users.remove(&entry.user); // Redis deletes an empty ZSET
        }
        removed
    }

    /// The user's members with expiry after `now`, in expiry order (like `ZRANGE BYSCORE`).
    pub fn lookup(&self, user: &str, now_ms: i64) -> Vec<SessionEntry> {
        let mut shard = self.shard(user);
        let Some(key) = shard.live(user, now_ms) else {
            return Vec::new();
        };
        let mut live: Vec<(&String, i64)> = key
            .members
            .iter()
            .filter(|(_, exp)| **exp > now_ms)
            .map(|(m, exp)| (m, *exp))
            .collect();
        live.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        live.into_iter()
            .filter_map(|(m, _)| parse_member(user, m.as_bytes()))
            .collect()
    }

    /// Milliseconds until the user's key expires, `None` if there is no key (like `PTTL`).
    pub fn key_ttl_ms(&self, user: &str, now_ms: i64) -> Option<i64> {
        let mut shard = self.shard(user);
        shard.live(user, now_ms).map(|k| k.expires_at - now_ms)
    }
}

impl Shard {
    /// The user's key if it exists and has not expired; an expired one is dropped.
    fn live(&mut self, user: &str, now_ms: i64) -> Option<&mut UserKey> {
        if self.users.get(user).is_some_and(|k| k.expires_at <= now_ms) {
            self.users.remove(user);
        }
        self.users.get_mut(user)
    }

    fn upsert(&mut self, entry: &SessionEntry, ttl_ms: i64, now_ms: i64) {
        let exp = now_ms.saturating_add(ttl_ms);
        match self.live(&entry.user, now_ms) {
            Some(key) => {
                key.members.insert(member(entry), exp);
                key.expires_at = key.expires_at.max(exp); // PEXPIRE GT
            }
            None => {
                let members = HashMap::from([(member(entry), exp)]);
                let key = UserKey {
                    members,
                    expires_at: exp, // PEXPIRE NX
                };
                self.users.insert(entry.user.clone(), key);
            }
        }
        self.writes += 1;
        if self.writes >= SWEEP_EVERY {
            self.writes = 0;
            self.users.retain(|_, k| k.expires_at > now_ms);
        }
    }
}

/// A handle on a [`MemoryStore`]; clones share it.
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    store: Arc<MemoryStore>,
}

impl MemoryRegistry {
    /// The process-global store that every `memory://` registry of this process shares
    /// (all threads and executors).
    pub fn global() -> MemoryRegistry {
        static GLOBAL: OnceLock<Arc<MemoryStore>> = OnceLock::new();
        MemoryRegistry {
            store: GLOBAL.get_or_init(Default::default).clone(),
        }
    }

    /// A private, empty store (for tests and embedding).
    pub fn new() -> MemoryRegistry {
        MemoryRegistry {
            store: Arc::default(),
        }
    }

    /// The store, for operations at an explicit time.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, session: u64) -> SessionEntry {
        SessionEntry {
            user: user.into(),
            session,
            instance: "gw".into(),
            epoch: 7,
            shard: 0,
            addr: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn expiry_follows_scores_and_key_ttl() {
        let s = MemoryStore::new();
        s.register(&entry("u", 1), 100, 1_000);
        s.register(&entry("u", 2), 300, 1_050);
        assert_eq!(s.lookup("u", 1_050).len(), 2);
        assert_eq!(
            s.key_ttl_ms("u", 1_050),
            Some(300),
            "key lives as long as its latest member"
        );
        assert_eq!(
            s.lookup("u", 1_100),
            vec![entry("u", 2)],
            "score 1100 is not > now"
        );
        assert_eq!(s.lookup("u", 1_350), vec![]);
        assert_eq!(s.key_ttl_ms("u", 1_350), None, "the key expired too");
    }

    #[test]
    fn refresh_extends_and_recreates() {
        let s = MemoryStore::new();
        s.register(&entry("u", 1), 100, 0);
        s.refresh(&[entry("u", 1)], 100, 90);
        assert_eq!(s.lookup("u", 150).len(), 1);
        assert_eq!(s.key_ttl_ms("u", 150), Some(40));
        // After everything expired, a refresh re-creates the entry (plain ZADD).
        s.refresh(&[entry("u", 1)], 100, 1_000);
        assert_eq!(s.lookup("u", 1_050), vec![entry("u", 1)]);
        // A shorter refresh does not shorten the key (PEXPIRE GT).
        s.refresh(&[entry("u", 2)], 10, 1_050);
        assert_eq!(s.key_ttl_ms("u", 1_050), Some(50));
    }

    #[test]
    fn register_cleans_expired_members() {
        let s = MemoryStore::new();
        s.register(&entry("u", 1), 100, 0);
        s.register(&entry("u", 2), 1_000, 0);
        s.register(&entry("u", 3), 1_000, 200);
        // Session 1 expired and was removed by the second register: unregister finds nothing.
        assert!(!s.unregister(&entry("u", 1), 200));
        assert!(s.unregister(&entry("u", 2), 200));
        assert_eq!(s.lookup("u", 200), vec![entry("u", 3)]);
    }

    #[test]
    fn unregister_removes_exactly_one_session() {
        let s = MemoryStore::new();
        s.register(&entry("u", 1), 1_000, 0);
        s.register(&entry("u", 2), 1_000, 0);
        let other_gateway = SessionEntry {
            instance: "gw2".into(),
            ..entry("u", 1)
        };
        assert!(!s.unregister(&other_gateway, 1));
        assert!(s.unregister(&entry("u", 1), 1));
        assert!(!s.unregister(&entry("u", 1), 1));
        assert_eq!(s.lookup("u", 1), vec![entry("u", 2)]);
        assert!(s.unregister(&entry("u", 2), 1));
        assert_eq!(s.key_ttl_ms("u", 1), None, "an empty set is deleted");
    }

    #[test]
    fn sweep_drops_expired_users() {
        let s = MemoryStore::new();
        for i in 0..(SWEEP_EVERY as u64 * SHARDS as u64) {
            s.register(&entry(&format!("old{i}"), i), 10, 0);
        }
        for i in 0..(SWEEP_EVERY as u64 * SHARDS as u64 * 2) {
            s.register(&entry(&format!("new{i}"), i), 10, 100);
        }
        let old_left: usize = s
            .shards
            .iter()
            .map(|sh| {
                let sh = sh.lock().unwrap();
                sh.users.keys().filter(|u| u.starts_with("old")).count()
            })
            .sum();
        assert_eq!(old_left, 0);
    }

    #[test]
    fn heartbeat_reports_a_missing_record() {
        let s = MemoryStore::new();
        let gw = |i: &str, epoch| GatewayRecord {
            instance: i.into(),
            epoch,
            addr: "h:1".into(),
        };
        assert!(s.heartbeat(&gw("a", 1), 100, 0), "first beat creates");
        assert!(!s.heartbeat(&gw("a", 1), 100, 50), "later beats extend");
        assert!(s.heartbeat(&gw("b", 2), 100, 60));
        assert_eq!(s.live_gateways(120), vec![gw("a", 1), gw("b", 2)]);
        assert_eq!(s.live_gateways(150), vec![gw("b", 2)], "a expired at 150");
        assert!(
            s.heartbeat(&gw("a", 1), 100, 200),
            "an expired record is re-created"
        );
        assert!(s.retire(&gw("a", 1)));
        assert!(!s.retire(&gw("a", 1)));
        s.register(&entry("u", 1), 1_000, 0);
        s.flush();
        assert!(s.live_gateways(200).is_empty());
        assert!(s.lookup("u", 200).is_empty());
    }

    #[test]
    fn global_is_shared() {
        let a = MemoryRegistry::global();
        let b = MemoryRegistry::global();
        assert!(Arc::ptr_eq(&a.store, &b.store));
        assert!(!Arc::ptr_eq(&a.store, &MemoryRegistry::new().store));
    }
}
