//! [`LiveSet`]: which gateway processes are alive, from one read of their liveness records,
//! and the [`Verdict`] on a session read from the registry. Sans-I/O.
//!
//! A session is live only while its gateway's record carries the session's epoch. The
//! record expires a couple of seconds after its gateway's last heartbeat, so a `kill -9`
//! makes that gateway's sessions read as gone long before their own (long) TTLs run out.
//! A gateway writes its record before it registers any session, so a session whose gateway
//! is missing from a set *read after the session was* belongs to a dead gateway; with an
//! older set the answer is [`Verdict::Unknown`] and the caller reads the records again.

use std::collections::HashMap;

use crate::{GatewayRecord, SessionEntry};

/// What a [`LiveSet`] says about one session's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its gateway's record is live with the session's epoch.
    Alive,
    /// Its gateway restarted since (a live record of the same instance has a later epoch).
    Dead,
    /// Not in this set: the gateway died, or started after the set was read.
    Unknown,
}

/// The live gateways: instance id -> latest live epoch.
#[derive(Debug, Clone, Default)]
pub struct LiveSet {
    epochs: HashMap<String, u64>,
}

impl LiveSet {
    /// The set from live records (several epochs of one instance: the latest counts).
    pub fn new(records: &[GatewayRecord]) -> LiveSet {
        let mut epochs: HashMap<String, u64> = HashMap::with_capacity(records.len());
        for r in records {
            let e = epochs.entry(r.instance.clone()).or_insert(r.epoch);
            *e = (*e).max(r.epoch);
        }
        LiveSet { epochs }
    }

    /// The verdict on `entry`'s gateway.
    pub fn verdict(&self, entry: &SessionEntry) -> Verdict {
        match self.epochs.get(&entry.instance) {
            Some(&e) if e == entry.epoch => Verdict::Alive,
            Some(&e) if e > entry.epoch => Verdict::Dead,
            _ => Verdict::Unknown,
        }
    }

    /// Number of live gateway instances.
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    /// True when no gateway is live.
    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(instance: &str, epoch: u64) -> GatewayRecord {
        GatewayRecord {
            instance: instance.into(),
            epoch,
            addr: "h:1".into(),
        }
    }

    fn session(instance: &str, epoch: u64) -> SessionEntry {
        SessionEntry {
            user: "u".into(),
            session: 1,
            instance: instance.into(),
            epoch,
            shard: 0,
            addr: "h:1".into(),
        }
    }

    #[test]
    fn verdicts() {
        let set = LiveSet::new(&[gw("a", 5), gw("b", 1), gw("a", 9)]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.verdict(&session("a", 9)), Verdict::Alive);
        assert_eq!(
            set.verdict(&session("a", 5)),
            Verdict::Dead,
            "restarted: later epoch wins"
        );
        assert_eq!(set.verdict(&session("b", 1)), Verdict::Alive);
        assert_eq!(
            set.verdict(&session("a", 10)),
            Verdict::Unknown,
            "newer than the set"
        );
        assert_eq!(set.verdict(&session("c", 1)), Verdict::Unknown);
        assert!(LiveSet::default().is_empty());
    }
}
