//! One connection's state once it is up, with no I/O: which sends are due, which acks are
//! outstanding, what arrived from whom. [`crate::conn`] feeds it frames and the time and writes
//! out what it hands back, so everything here is tested without a socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::micros_between;
use crate::ledger::{ClientBook, Status};
use crate::order::{Seen, SeqTracker};
use crate::protocol::{AckStatus, Dialect, ServerFrame};
use crate::schedule::Schedule;
use crate::stats::{Stats, Tally};

/// What every connection of a run shares.
pub struct Shared {
    pub schedule: Schedule,
    pub stats: Stats,
    /// JSON text length of each probe body.
    pub body_bytes: usize,
    pub dialect: Dialect,
    /// Sessions per user: connection `g` (global index) is device `g % devices` of user
    /// `g / devices`; every device of the recipient gets each message.
    pub devices: usize,
    /// Global index of this process's connection 0 (several perf processes split one run).
    pub offset: usize,
    /// The exact ledger (`--ledger`): each connection's book, handed in when it finishes.
    pub ledger: Option<Mutex<Vec<Option<ClientBook>>>>,
}

impl Shared {
    /// Sends scheduled to the user that connection `index` (local) belongs to: every device
    /// of its partner sends to it. Partners always live in the same process (see `plan`).
    pub fn expected_in(&self, index: usize) -> u64 {
        let k = self.devices.max(1);
        let global = self.offset + index;
        let peer_user = crate::plan::peer(global / k);
        (0..k)
            .filter_map(|d| (peer_user * k + d).checked_sub(self.offset))
            .map(|local| self.schedule.sends_for(local))
            .sum()
    }
}

/// One connection's sending and receiving state.
pub struct Session {
    shared: Arc<Shared>,
    index: usize,
    peer: String,
    /// Schedule start, ns on the shared clock; `None` until the run starts.
    start_ns: Option<u64>,
    /// Next send to make, and how many this connection makes in all.
    next_k: u64,
    total: u64,
    /// Outstanding sends: sequence -> intended send time (ns).
    pending: HashMap<u64, u64>,
    /// Sequences seen per sending connection (the partner's devices).
    from: HashMap<u64, SeqTracker>,
    /// Distinct probes received.
    received: u64,
    /// This connection's part of the ledger, if the run keeps one.
    book: Option<ClientBook>,
}

impl Session {
    /// Connection `index` (which picks its schedule slots), sending to `peer`.
    pub fn new(shared: Arc<Shared>, index: usize, peer: String) -> Self {
        let total = shared.schedule.sends_for(index);
        let book = shared
            .ledger
            .as_ref()
            .map(|_| ClientBook::new(shared.offset + index, total));
        Session {
            shared,
            index,
            peer,
            start_ns: None,
            next_k: 0,
            total,
            pending: HashMap::new(),
            from: HashMap::new(),
            received: 0,
            book,
        }
    }

    /// A session (the first, or a reconnect) is up.
    pub fn opened(&mut self, now_ns: u64) {
        if let Some(b) = &mut self.book {
            b.opened(now_ns);
        }
    }

    /// The connection ended (`lost`: not by the harness's choice). Its outstanding sends can
    /// get no ack any more: they count as missing; a reconnect starts from a clean slate.
    pub fn closed(&mut self, now_ns: u64, lost: bool) {
        let stats = &self.shared.stats;
        stats.add(|c| &c.missing_acks, self.pending.len() as u64);
        self.pending.clear();
        stats.add(
            |c| &c.gaps,
            self.from.values().map(SeqTracker::missing).sum(),
        );
        self.from.clear();
        if let Some(b) = &mut self.book {
            b.closed(now_ns, lost);
        }
    }

    /// Starts the schedule at `start_ns` (ignored once started).
    pub fn start(&mut self, start_ns: u64) {
        self.start_ns.get_or_insert(start_ns);
    }

    /// When the next send is due, if the run has started and sends remain.
    pub fn next_due_ns(&self) -> Option<u64> {
        let start = self.start_ns?;
        (self.next_k < self.total)
            .then(|| start + self.shared.schedule.offset_ns(self.index, self.next_k))
    }

    /// Appends a `send` frame for every send due by `now_ns` to `out` and records them as
    /// outstanding. A connection that fell behind sends its backlog at once; each send keeps
    /// its intended time, so the delay shows up in the latencies rather than vanishing.
    pub fn take_due(&mut self, now_ns: u64, out: &mut Vec<String>) {
        let stats = &self.shared.stats;
        while let Some(due) = self.next_due_ns().filter(|&d| d <= now_ns) {
            let seq = self.next_k;
            let mut frame = String::with_capacity(self.shared.body_bytes + 64);
            let conn = (self.shared.offset + self.index) as u64;
            let sh = &self.shared;
            sh.dialect
                .encode_send(&mut frame, &self.peer, seq, due, conn, sh.body_bytes);
            out.push(frame);
            if let Some(b) = &mut self.book {
                b.sent(seq, due, now_ns);
            }
            self.pending.insert(seq, due);
            self.next_k += 1;
            stats.bump(|c| &c.sent);
            if self.is_measured(due) {
                stats.bump(|c| &c.sent_measured);
            }
            stats
                .send_lag
                .record(self.index, micros_between(due, now_ns));
        }
        if !out.is_empty() {
            stats.note_send_time(now_ns);
        }
    }

    /// Handles one text frame from the server, received at `now_ns`.
    pub fn on_text(&mut self, text: &str, now_ns: u64) {
        let stats = &self.shared.stats;
        let frame = match self.shared.dialect.parse(text) {
            Ok(f) => f,
            Err(_) => {
                stats.bump(|c| &c.bad_frames);
                return;
            }
        };
        match frame {
            ServerFrame::Ack { id, status, reason } => {
                if let (Some(b), Some(id)) = (&mut self.book, id) {
                    let st = match status {
                        AckStatus::Delivered => Status::Delivered,
                        AckStatus::Offline => Status::Offline,
                        AckStatus::Failed => Status::Failed,
                    };
                    b.acked(id, st, reason.as_deref(), now_ns);
                }
                let Some(intended) = id.and_then(|id| self.pending.remove(&id)) else {
                    stats.bump(|c| &c.unexpected_acks);
                    return;
                };
                match status {
                    AckStatus::Delivered => stats.bump(|c| &c.delivered),
                    AckStatus::Offline => stats.bump(|c| &c.offline),
                    AckStatus::Failed => {
                        stats.bump(|c| &c.failed);
                        stats.tally(Tally::FailedReason, reason.as_deref().unwrap_or("(none)"));
                    }
                }
                if self.is_measured(intended) {
                    stats
                        .ack
                        .record(self.index, micros_between(intended, now_ns));
                }
            }
            ServerFrame::Message {
                probe: Some(probe), ..
            } => {
                stats.bump(|c| &c.received);
                // Older probes carry no sender connection: one sender per recipient then.
                let sender = probe.c.unwrap_or(u64::MAX);
                if let Some(b) = &mut self.book {
                    b.received(sender, probe.s);
                }
                let seen = self.from.entry(sender).or_default().observe(probe.s);
                match seen {
                    Seen::InOrder => {}
                    Seen::Late => stats.bump(|c| &c.order_violations),
                    Seen::Duplicate => {
                        stats.bump(|c| &c.duplicates);
                        return;
                    }
                }
                self.received += 1;
                if self.is_measured(probe.t) {
                    stats.bump(|c| &c.received_measured);
                    stats
                        .delivery
                        .record(self.index, micros_between(probe.t, now_ns));
                }
            }
            ServerFrame::Message { probe: None, .. } => stats.bump(|c| &c.bad_frames),
            ServerFrame::Error { id, code } => {
                stats.bump(|c| &c.error_frames);
                stats.tally(Tally::ErrorCode, &code);
                if let (Some(b), Some(id)) = (&mut self.book, id) {
                    b.acked(id, Status::Error, Some(&code), now_ns);
                }
                // An error answering one of our sends replaces its ack.
                if id.and_then(|id| self.pending.remove(&id)).is_some() {
                    stats.bump(|c| &c.send_errors);
                }
            }
            // A second welcome or a frame type newer than perf: harmless, but worth seeing.
            ServerFrame::Welcome { .. } | ServerFrame::Other { .. } => {
                stats.bump(|c| &c.bad_frames)
            }
        }
    }

    /// Counts a frame that is not text (the server never sends binary frames).
    pub fn on_unparsed(&self) {
        self.shared.stats.bump(|c| &c.bad_frames);
    }

    /// Sends written but not answered yet.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Closes the books when the connection stops: outstanding sends count as missing acks,
    /// sends never made as unsent, and unfilled sequence gaps as gaps.
    pub fn finish(&mut self) {
        let stats = &self.shared.stats;
        stats.add(|c| &c.missing_acks, self.pending.len() as u64);
        stats.add(|c| &c.unsent, self.total - self.next_k);
        stats.add(
            |c| &c.gaps,
            self.from.values().map(SeqTracker::missing).sum(),
        );
        if self.received == 0 && self.shared.expected_in(self.index) > 0 {
            stats.bump(|c| &c.silent_receivers);
        }
        self.pending.clear();
        self.next_k = self.total;
        if let (Some(book), Some(ledger)) = (self.book.take(), &self.shared.ledger) {
            if let Some(slot) = ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(self.index)
            {
                *slot = Some(book);
            }
        }
    }

    /// Whether a send intended at `ns` falls in the measured window.
    fn is_measured(&self, ns: u64) -> bool {
        let start = self.start_ns.unwrap_or(0);
        ns >= start && self.shared.schedule.is_measured(ns - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// 2 clients at 1000/s: client 0 sends at 0, 2, 4, ... ms; 1 s warm-up then 1 s measured.
    fn shared(warmup_s: u64) -> Arc<Shared> {
        Arc::new(Shared {
            schedule: Schedule::new(
                1_000.0,
                2,
                Duration::from_secs(warmup_s),
                Duration::from_secs(1),
            ),
            stats: Stats::default(),
            body_bytes: 50,
            dialect: Dialect::Connect,
            devices: 1,
            offset: 0,
            ledger: None,
        })
    }

    fn ack(id: u64, status: &str) -> String {
        format!(r#"{{"type":"ack","id":{id},"status":"{status}"}}"#)
    }

    fn msg(from: &str, t: u64, s: u64) -> String {
        format!(
            r#"{{"type":"message","id":"x","from":"{from}","body":{{"t":{t},"s":{s}}},"ts":0}}"#
        )
    }

    #[test]
    fn sends_follow_the_schedule_and_catch_up() {
        let sh = shared(0);
        let mut s = Session::new(sh.clone(), 0, "u1".into());
        let mut out = Vec::new();
        assert_eq!(s.next_due_ns(), None);
        s.take_due(10 * MS, &mut out);
        assert!(out.is_empty(), "nothing is due before the start");

        s.start(100 * MS);
        assert_eq!(s.next_due_ns(), Some(100 * MS));
        s.take_due(99 * MS, &mut out);
        assert!(out.is_empty());
        // 5 ms late: slots at 100, 102, 104 ms are all due.
        s.take_due(105 * MS, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out[2].contains(r#""id":2,"to":"u1""#));
        assert!(out[2].contains(&format!(r#""t":{}"#, 104 * MS)));
        assert_eq!(s.next_due_ns(), Some(106 * MS));
        assert_eq!(s.outstanding(), 3);

        let c = sh.stats.counters.snapshot();
        assert_eq!((c.sent, c.sent_measured), (3, 3));
        let lag = sh.stats.send_lag.merged();
        assert_eq!(lag.max(), lag.highest_equivalent(5_000)); // the first slot, 5 ms late
        assert_eq!(c.last_send_ns, 105 * MS);
    }

    #[test]
    fn acks_resolve_sends_and_latency_counts_from_the_intended_time() {
        let sh = shared(0);
        let mut s = Session::new(sh.clone(), 1, "u0".into());
        s.start(0);
        let mut out = Vec::new();
        s.take_due(10 * MS, &mut out); // client 1: slots at 1, 3, 5, 7, 9 ms
        assert_eq!(out.len(), 5);
        s.on_text(&ack(0, "delivered"), 21 * MS); // intended 1 ms -> 20 ms
        s.on_text(&ack(1, "offline"), 21 * MS);
        s.on_text(
            r#"{"type":"ack","id":2,"status":"failed","reason":"router link lost"}"#,
            21 * MS,
        );
        s.on_text(&ack(2, "delivered"), 22 * MS); // second ack for 2
        s.on_text(&ack(99, "delivered"), 22 * MS); // never sent
        s.on_text(r#"{"type":"error","id":3,"code":"too_large"}"#, 22 * MS);
        assert_eq!(s.outstanding(), 1);
        s.finish();

        let c = sh.stats.counters.snapshot();
        assert_eq!((c.delivered, c.offline, c.failed), (1, 1, 1));
        assert_eq!(c.unexpected_acks, 2);
        assert_eq!((c.error_frames, c.send_errors), (1, 1));
        assert_eq!(c.missing_acks, 1);
        assert_eq!(c.unsent, 500 - 5);
        let t = sh.stats.tallies();
        assert_eq!(t.failed_reasons["router link lost"], 1);
        assert_eq!(t.error_codes["too_large"], 1);
        let h = sh.stats.ack.merged();
        assert_eq!(h.len(), 3);
        assert_eq!(h.max(), h.highest_equivalent(20_000));
    }

    #[test]
    fn deliveries_track_order_duplicates_and_gaps() {
        let sh = shared(0);
        let mut s = Session::new(sh.clone(), 1, "u0".into());
        s.start(0);
        s.on_text(&msg("u0", MS, 0), 3 * MS);
        s.on_text(&msg("u0", 5 * MS, 2), 6 * MS);
        s.on_text(&msg("u0", 3 * MS, 1), 7 * MS); // late
        s.on_text(&msg("u0", 3 * MS, 1), 7 * MS); // duplicate
        s.on_text(&msg("u0", 9 * MS, 4), 10 * MS); // 3 skipped
        s.on_text(r#"{"type":"message","from":"u0","body":"hello"}"#, 10 * MS);
        s.on_text("{oops", 10 * MS);
        s.finish();

        let c = sh.stats.counters.snapshot();
        assert_eq!(c.received, 5);
        assert_eq!(c.received_measured, 4);
        assert_eq!((c.order_violations, c.duplicates, c.gaps), (1, 1, 1));
        assert_eq!(c.bad_frames, 2);
        let h = sh.stats.delivery.merged();
        assert_eq!(h.len(), 4);
        assert_eq!(h.max(), h.highest_equivalent(4_000));
    }

    #[test]
    fn warmup_traffic_is_counted_but_not_measured() {
        let sh = shared(1);
        let mut s = Session::new(sh.clone(), 0, "u1".into());
        s.start(0);
        let mut out = Vec::new();
        // Slots at 998 ms (warm-up) and 1000 ms (measured).
        s.take_due(1_000 * MS, &mut out);
        assert_eq!(out.len(), 501);
        s.on_text(&ack(499, "delivered"), 1_001 * MS);
        s.on_text(&ack(500, "delivered"), 1_001 * MS);
        s.on_text(&msg("u1", 998 * MS, 499), 1_001 * MS);
        s.on_text(&msg("u1", 1_000 * MS, 500), 1_001 * MS);
        let c = sh.stats.counters.snapshot();
        assert_eq!((c.sent, c.sent_measured), (501, 1));
        assert_eq!((c.received, c.received_measured), (2, 1));
        assert_eq!(sh.stats.ack.merged().len(), 1);
        assert_eq!(sh.stats.delivery.merged().len(), 1);
    }
}
