//! The exact ledger of a run, with no I/O: every send by (sender connection, sequence) with its
//! ack, every receipt by (receiving session, sender, sequence), and the check of issue 7's
//! invariants by id after the run:
//!
//! 1. every send got exactly one ack (an `error` carrying the send's id counts as its ack);
//! 2. every `delivered` ack matches at least one receipt by a session of the recipient;
//! 3. no session receives a message twice;
//! 4. per-sender order to each recipient holds: within one sender connection (one
//!    *incarnation*: a reconnect is a new connection) and one receiving session, messages acked
//!    `delivered` arrive in sequence order. A `failed` send's outcome is unknown by definition,
//!    so it is left out of the order check and counted separately when it arrives anyway;
//! 5. `offline` and `failed` acks are counted by reason and by when they happened relative to
//!    the fault: acked before it, inside the fault window (acked from the fault on, for a send
//!    due before the recovery point), or after recovery (due after it). Only those inside the
//!    window are explained by the fault.
//!
//! Some departures are explained by the fault rather than violations, and are counted as such:
//! a send left unanswered because the *sender's* connection died (no ack can arrive on a dead
//! socket), and a `delivered` send never received because the recipient's session died after
//! it was sent (the gateway wrote it into a queue that died with the process).
//!
//! Memory: one 32-byte record per send (a `Vec` per sender, indexed by sequence) and 4 bytes
//! per receipt; a 100k-message run holds about 4 MB.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// What became of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not written (yet).
    #[default]
    Unsent,
    /// Written, no ack (yet).
    Pending,
    Delivered,
    Offline,
    Failed,
    /// An `error` frame carrying the send's id.
    Error,
}

/// One send as the sender saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendRec {
    /// The schedule slot's time (ns on the shared clock).
    pub intended_ns: u64,
    pub written_ns: u64,
    /// First ack.
    pub ack_ns: u64,
    pub status: Status,
    /// Acks (and errors) seen for this id.
    pub acks: u16,
    /// Which connection of the sender made it (0: the first; +1 per reconnect).
    pub incarnation: u16,
}

/// One receiving session (one incarnation of one client connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionBook {
    pub opened_ns: u64,
    /// When it ended; `None`: still open when the run stopped.
    pub closed_ns: Option<u64>,
    /// Ended by the server or the network, not by the harness.
    pub lost: bool,
    /// Sequences received per sender connection (global index), in arrival order.
    pub from: HashMap<u32, Vec<u32>>,
}

/// Everything one client connection (all its incarnations) recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientBook {
    /// Global connection index.
    pub client: u32,
    /// Sends by sequence.
    pub sends: Vec<SendRec>,
    /// Reasons of non-`delivered` acks (and error codes), by sequence.
    pub reasons: HashMap<u32, String>,
    /// Sessions in order; the last one is the current one.
    pub sessions: Vec<SessionBook>,
    /// Acks for ids this client never sent.
    pub unexpected_acks: u64,
    /// Messages whose probe could not be attributed (sender index out of range).
    pub strays: u64,
}

impl ClientBook {
    /// A book for connection `client`, which makes at most `sends` sends.
    pub fn new(client: usize, sends: u64) -> Self {
        ClientBook {
            client: client as u32,
            sends: vec![SendRec::default(); sends as usize],
            ..ClientBook::default()
        }
    }

    /// A session (the first, or a reconnect) came up at `now_ns`.
    pub fn opened(&mut self, now_ns: u64) {
        self.sessions.push(SessionBook {
            opened_ns: now_ns,
            ..SessionBook::default()
        });
    }

    /// The current session ended at `now_ns`; `lost`: not by the harness's choice.
    pub fn closed(&mut self, now_ns: u64, lost: bool) {
        if let Some(s) = self.sessions.last_mut().filter(|s| s.closed_ns.is_none()) {
            s.closed_ns = Some(now_ns);
            s.lost = lost;
        }
    }

    fn incarnation(&self) -> u16 {
        self.sessions.len().saturating_sub(1) as u16
    }

    /// Send `seq`, due at `intended_ns`, was written at `now_ns`.
    pub fn sent(&mut self, seq: u64, intended_ns: u64, now_ns: u64) {
        let incarnation = self.incarnation();
        if let Some(r) = self.sends.get_mut(seq as usize) {
            *r = SendRec {
                intended_ns,
                written_ns: now_ns,
                status: Status::Pending,
                incarnation,
                ..SendRec::default()
            };
        }
    }

    /// An ack (or an error with the send's id: `Status::Error`) for `seq` at `now_ns`.
    pub fn acked(&mut self, seq: u64, status: Status, reason: Option<&str>, now_ns: u64) {
        let Some(r) = self
            .sends
            .get_mut(seq as usize)
            .filter(|r| r.status != Status::Unsent)
        else {
            self.unexpected_acks += 1;
            return;
        };
        r.acks = r.acks.saturating_add(1);
        if r.acks > 1 {
            return;
        }
        r.status = status;
        r.ack_ns = now_ns;
        if status != Status::Delivered {
            self.reasons
                .insert(seq as u32, reason.unwrap_or("(none)").to_owned());
        }
    }

    /// The current session received sender `from`'s message `seq`.
    pub fn received(&mut self, from: u64, seq: u64) {
        let (Ok(from), Ok(seq)) = (u32::try_from(from), u32::try_from(seq)) else {
            self.strays += 1;
            return;
        };
        match self.sessions.last_mut() {
            Some(s) => s.from.entry(from).or_default().push(seq),
            None => self.strays += 1,
        }
    }
}

/// The fault's timing, ns on the shared clock; `None` for a run without a fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub fault_ns: Option<u64>,
    /// Outcomes acked from the fault on, of sends due before this, are inside the fault window.
    pub recovered_ns: Option<u64>,
}

impl Window {
    /// When a non-`delivered` outcome happened: before the fault (acked before it), after
    /// recovery (its send was due after the recovery point), or inside the fault window.
    fn phase(&self, rec: &SendRec) -> usize {
        match (self.fault_ns, self.recovered_ns) {
            (Some(f), _) if rec.ack_ns < f => 0,
            (Some(_), Some(r)) if rec.intended_ns >= r => 2,
            (Some(_), _) => 1,
            (None, _) => 0,
        }
    }
}

/// Counts of non-`delivered` outcomes by when the send was due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    pub before_fault: u64,
    pub during_fault: u64,
    pub after_recovery: u64,
}

impl Phases {
    fn add(&mut self, phase: usize) {
        match phase {
            0 => self.before_fault += 1,
            1 => self.during_fault += 1,
            _ => self.after_recovery += 1,
        }
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.before_fault + self.during_fault + self.after_recovery
    }
}

/// Examples kept per kind of violation.
const EXAMPLES: usize = 5;

/// The verdict on a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerReport {
    /// Sends written.
    pub sends: u64,
    pub delivered: u64,
    pub offline: u64,
    pub failed: u64,
    pub errors: u64,
    /// Receipts over all sessions (duplicates included).
    pub receipts: u64,
    /// Sessions over all clients (reconnects add one each).
    pub sessions: u64,
    /// Explained: sends left unanswered because the sender's connection died.
    pub unanswered_sender_lost: u64,
    /// Explained: `delivered`, never received, and a session of the recipient died after the send.
    pub delivered_into_lost_session: u64,
    /// Noted, allowed: `failed` sends that arrived anyway (the outcome was unknown).
    pub failed_but_received: u64,
    /// Noted, allowed: of those, the ones that arrived after a later message of their sender.
    pub failed_received_out_of_order: u64,
    /// Offline and failed (and error) acks: by status and reason, by phase.
    pub not_delivered: BTreeMap<String, Phases>,
    /// Offline/failed/error acks of sends due inside the fault window.
    pub explained: u64,
    /// Offline/failed/error acks of sends due before the fault or after recovery.
    pub unexplained: u64,
    /// Violations by kind (counts).
    pub violations: BTreeMap<String, u64>,
    /// A few concrete cases per kind.
    pub examples: BTreeMap<String, Vec<String>>,
}

impl LedgerReport {
    /// Whether every invariant held and every non-`delivered` ack is explained by the fault.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.unexplained == 0
    }

    fn violation(&mut self, kind: &str, example: impl FnOnce() -> String) {
        *self.violations.entry(kind.to_owned()).or_default() += 1;
        let ex = self.examples.entry(kind.to_owned()).or_default();
        if ex.len() < EXAMPLES {
            ex.push(example());
        }
    }

    /// A few lines for a terminal.
    pub fn table(&self) -> String {
        let mut s = format!(
            "ledger       sends {}  delivered {}  offline {}  failed {}  errors {}  receipts {}  sessions {}\n",
            self.sends, self.delivered, self.offline, self.failed, self.errors, self.receipts, self.sessions
        );
        s += &format!(
            "             explained {}  unexplained {}  unanswered (sender lost) {}  delivered into a lost session {}  failed but received {} ({} out of order)\n",
            self.explained,
            self.unexplained,
            self.unanswered_sender_lost,
            self.delivered_into_lost_session,
            self.failed_but_received,
            self.failed_received_out_of_order
        );
        for (why, p) in &self.not_delivered {
            s += &format!(
                "             {why}: before {} during {} after {}\n",
                p.before_fault, p.during_fault, p.after_recovery
            );
        }
        if self.violations.is_empty() {
            s += "             invariants hold\n";
        }
        for (kind, n) in &self.violations {
            s += &format!("VIOLATION    {kind}: {n}\n");
            for e in self.examples.get(kind).into_iter().flatten() {
                s += &format!("               e.g. {e}\n");
            }
        }
        s
    }
}

/// Who receives whose messages: connection `g` belongs to user `g / devices`, users pair
/// `2k <-> 2k+1`, and every device of the recipient gets each message (see `plan`).
fn recipients(sender: usize, devices: usize, clients: usize) -> impl Iterator<Item = usize> {
    let k = devices.max(1);
    let peer_user = crate::plan::peer(crate::plan::user_of(sender, k));
    (0..k)
        .map(move |d| peer_user * k + d)
        .filter(move |&r| r < clients)
}

/// Checks every invariant over `books`: `books[i]` is connection `offset + i` (a missing book is
/// a connection that never came up).
pub fn check(
    books: &[Option<ClientBook>],
    offset: usize,
    devices: usize,
    window: Window,
) -> LedgerReport {
    let mut rep = LedgerReport::default();
    let n = offset + books.len();
    let book_of = |global: usize| {
        global
            .checked_sub(offset)
            .and_then(|i| books.get(i))
            .and_then(Option::as_ref)
    };
    for book in books.iter().flatten() {
        rep.sessions += book.sessions.len() as u64;
        if book.unexpected_acks > 0 {
            let (c, k) = (book.client, book.unexpected_acks);
            for _ in 0..k {
                rep.violation("ack for an id never sent", || {
                    format!("client {c}: {k} unexpected acks")
                });
            }
        }
        for _ in 0..book.strays {
            let c = book.client;
            rep.violation("message from an unknown sender", || {
                format!("client {c} got a probe it cannot attribute")
            });
        }
    }
    for (i, book) in books.iter().enumerate() {
        let Some(book) = book else { continue };
        let sender = offset + i;
        let recips: Vec<&ClientBook> = recipients(sender, devices, n).filter_map(book_of).collect();
        // Which of this sender's sequences any session of the recipient received.
        let mut got = vec![false; book.sends.len()];
        for r in &recips {
            for s in &r.sessions {
                for &seq in s.from.get(&(sender as u32)).into_iter().flatten() {
                    if let Some(g) = got.get_mut(seq as usize) {
                        *g = true;
                    }
                }
            }
        }
        for (seq, rec) in book.sends.iter().enumerate() {
            let id = || format!("client {sender} seq {seq}");
            match rec.status {
                Status::Unsent => continue,
                Status::Pending => {
                    let lost = book
                        .sessions
                        .get(rec.incarnation as usize)
                        .is_some_and(|s| s.lost);
                    rep.sends += 1;
                    if lost {
                        rep.unanswered_sender_lost += 1;
                    } else {
                        rep.violation("send never acked", || {
                            format!("{} (due at {:.3} s)", id(), rec.intended_ns as f64 / 1e9)
                        });
                    }
                    continue;
                }
                _ => rep.sends += 1,
            }
            if rec.acks > 1 {
                rep.violation("send acked more than once", || {
                    format!("{}: {} acks", id(), rec.acks)
                });
            }
            let received = got[seq];
            match rec.status {
                Status::Delivered => {
                    rep.delivered += 1;
                    if !received {
                        // The recipient's gateway may have written it into a session that
                        // then died with the process before the bytes reached the client.
                        let died = recips.iter().flat_map(|r| &r.sessions).any(|s| {
                            s.lost
                                && s.opened_ns <= rec.written_ns.max(rec.ack_ns)
                                && s.closed_ns.is_some_and(|c| c >= rec.written_ns)
                        });
                        if died {
                            rep.delivered_into_lost_session += 1;
                        } else {
                            rep.violation("delivered but never received", || {
                                format!(
                                    "{} (due at {:.3} s, acked at {:.3} s)",
                                    id(),
                                    rec.intended_ns as f64 / 1e9,
                                    rec.ack_ns as f64 / 1e9
                                )
                            });
                        }
                    }
                    continue;
                }
                Status::Offline => {
                    rep.offline += 1;
                    if received {
                        rep.violation("offline but received", id);
                    }
                }
                Status::Failed => {
                    rep.failed += 1;
                    if received {
                        rep.failed_but_received += 1;
                    }
                }
                Status::Error => rep.errors += 1,
                Status::Unsent | Status::Pending => {}
            }
            let reason = book
                .reasons
                .get(&(seq as u32))
                .map_or("(none)", String::as_str);
            let status = match rec.status {
                Status::Offline => "offline",
                Status::Failed => "failed",
                _ => "error",
            };
            let phase = window.phase(rec);
            rep.not_delivered
                .entry(format!("{status}: {reason}"))
                .or_default()
                .add(phase);
            if phase == 1 {
                rep.explained += 1;
            } else {
                rep.unexplained += 1;
            }
        }
    }
    // Per receiving session: duplicates and order.
    for book in books.iter().flatten() {
        for (si, s) in book.sessions.iter().enumerate() {
            for (&from, seqs) in &s.from {
                rep.receipts += seqs.len() as u64;
                let Some(sender) = book_of(from as usize) else {
                    let c = book.client;
                    rep.violation("message from an unknown sender", || {
                        format!("client {c} session {si} from {from}")
                    });
                    continue;
                };
                let mut seen = vec![false; sender.sends.len()];
                // Highest delivered sequence so far per sender incarnation.
                let mut last: HashMap<u16, u32> = HashMap::new();
                let mut last_any: HashMap<u16, u32> = HashMap::new();
                for &seq in seqs {
                    let who = || format!("client {} session {si} from client {from}", book.client);
                    let Some(rec) = sender.sends.get(seq as usize) else {
                        rep.violation("message never sent", || format!("{} seq {seq}", who()));
                        continue;
                    };
                    if rec.status == Status::Unsent {
                        rep.violation("message never sent", || format!("{} seq {seq}", who()));
                        continue;
                    }
                    if std::mem::replace(&mut seen[seq as usize], true) {
                        rep.violation("received twice by one session", || {
                            format!("{} seq {seq}", who())
                        });
                        continue;
                    }
                    let inc = rec.incarnation;
                    if rec.status == Status::Failed {
                        if last_any.get(&inc).is_some_and(|&l| l > seq) {
                            rep.failed_received_out_of_order += 1;
                        }
                    } else if let Some(&l) = last.get(&inc).filter(|&&l| l > seq) {
                        rep.violation("out of order", || {
                            format!("{}: seq {seq} arrived after seq {l}", who())
                        });
                    }
                    if rec.status != Status::Failed {
                        let e = last.entry(inc).or_insert(seq);
                        *e = (*e).max(seq);
                    }
                    let e = last_any.entry(inc).or_insert(seq);
                    *e = (*e).max(seq);
                }
            }
        }
    }
    rep
}

/// Of the sends in one recovery window, the share that may be slow (over the normal latency)
/// without the window counting as disturbed: a scheduler hiccup on a shared machine is not a
/// fault's effect.
pub const SLOW_SHARE: f64 = 0.10;

/// When the system recovered from a fault at `fault_ns`: the due time of the last bad send in
/// the last disturbed window. Windows are `window_ns` long from the fault on; one is disturbed
/// if any of its sends was not acked `delivered` (or never acked), or more than [`SLOW_SHARE`]
/// of them were acked later than `normal_ns` after their due time. A bad send is one of those.
/// Every window after it was undisturbed. `None`: no window after the fault was disturbed.
pub fn last_bad_send(
    books: &[Option<ClientBook>],
    fault_ns: u64,
    normal_ns: u64,
    window_ns: u64,
) -> Option<u64> {
    // Per window: sends, slow ones, the last slow one, the last undelivered one.
    let mut w: BTreeMap<u64, (u64, u64, u64, Option<u64>)> = BTreeMap::new();
    for r in books.iter().flatten().flat_map(|b| &b.sends) {
        if r.status == Status::Unsent || r.intended_ns < fault_ns {
            continue;
        }
        let e = w
            .entry((r.intended_ns - fault_ns) / window_ns.max(1))
            .or_default();
        e.0 += 1;
        if r.status != Status::Delivered {
            e.3 = Some(e.3.map_or(r.intended_ns, |t: u64| t.max(r.intended_ns)));
        } else if r.ack_ns.saturating_sub(r.intended_ns) > normal_ns {
            e.1 += 1;
            e.2 = e.2.max(r.intended_ns);
        }
    }
    w.values()
        .rev()
        .find_map(|&(n, slow, last_slow, undelivered)| {
            let too_slow = slow as f64 > n as f64 * SLOW_SHARE;
            match (undelivered, too_slow) {
                (Some(u), true) => Some(u.max(last_slow)),
                (Some(u), false) => Some(u),
                (None, true) => Some(last_slow),
                (None, false) => None,
            }
        })
}

/// Outcomes of the sends due in one window of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Window start, ms after the reference (negative: before it).
    pub at_ms: i64,
    pub sends: u64,
    pub delivered: u64,
    /// Delivered, but acked later than the normal latency.
    pub slow: u64,
    pub offline: u64,
    pub failed: u64,
    /// Errors, and sends never answered.
    pub other: u64,
}

/// Per `window_ns` window from `from_ns` on (sends due earlier are left out), relative to
/// `ref_ns`: what became of the sends due in it.
pub fn windows(
    books: &[Option<ClientBook>],
    from_ns: u64,
    ref_ns: u64,
    window_ns: u64,
    normal_ns: u64,
) -> Vec<WindowCounts> {
    let mut w: BTreeMap<u64, WindowCounts> = BTreeMap::new();
    let window_ns = window_ns.max(1);
    for r in books.iter().flatten().flat_map(|b| &b.sends) {
        if r.status == Status::Unsent || r.intended_ns < from_ns {
            continue;
        }
        let k = (r.intended_ns - from_ns) / window_ns;
        let e = w.entry(k).or_insert_with(|| WindowCounts {
            at_ms: ((from_ns + k * window_ns) as i64 - ref_ns as i64) / 1_000_000,
            ..WindowCounts::default()
        });
        e.sends += 1;
        match r.status {
            Status::Delivered => {
                e.delivered += 1;
                if r.ack_ns.saturating_sub(r.intended_ns) > normal_ns {
                    e.slow += 1;
                }
            }
            Status::Offline => e.offline += 1,
            Status::Failed => e.failed += 1,
            _ => e.other += 1,
        }
    }
    w.into_values().collect()
}

/// The ack latency (ns) at quantile `q` of sends due in `[from_ns, to_ns)` and acked
/// `delivered`: the "normal" latency before a fault.
pub fn ack_quantile(books: &[Option<ClientBook>], from_ns: u64, to_ns: u64, q: f64) -> Option<u64> {
    let mut v: Vec<u64> = books
        .iter()
        .flatten()
        .flat_map(|b| &b.sends)
        .filter(|r| r.status == Status::Delivered && (from_ns..to_ns).contains(&r.intended_ns))
        .map(|r| r.ack_ns.saturating_sub(r.intended_ns))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    Some(v[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Two clients (a pair), one session each, `n` sends each, due one a second.
    fn pair(n: u64) -> Vec<Option<ClientBook>> {
        (0..2)
            .map(|c| {
                let mut b = ClientBook::new(c, n);
                b.opened(0);
                Some(b)
            })
            .collect()
    }

    /// Client `from` sends `seq` at second `seq`; it is acked `status` 10 ms later.
    fn send(books: &mut [Option<ClientBook>], from: usize, seq: u64, status: Status) {
        let b = books[from].as_mut().unwrap();
        b.sent(seq, seq * S, seq * S);
        let reason = (status == Status::Failed).then_some("router link lost");
        b.acked(seq, status, reason, seq * S + 10_000_000);
    }

    fn recv(books: &mut [Option<ClientBook>], at: usize, from: u64, seq: u64) {
        books[at].as_mut().unwrap().received(from, seq);
    }

    #[test]
    fn a_send_record_is_32_bytes() {
        assert_eq!(std::mem::size_of::<SendRec>(), 32);
    }

    #[test]
    fn a_clean_run_holds_every_invariant() {
        let mut b = pair(5);
        for seq in 0..5 {
            send(&mut b, 0, seq, Status::Delivered);
            recv(&mut b, 1, 0, seq);
            send(&mut b, 1, seq, Status::Delivered);
            recv(&mut b, 0, 1, seq);
        }
        let r = check(&b, 0, 1, Window::default());
        assert!(r.ok(), "{}", r.table());
        assert_eq!(
            (r.sends, r.delivered, r.receipts, r.sessions),
            (10, 10, 10, 2)
        );
        assert_eq!(last_bad_send(&b, 0, S / 10, S), None);
    }

    #[test]
    fn each_violation_is_found_by_id() {
        let mut b = pair(6);
        send(&mut b, 0, 0, Status::Delivered); // never received
        send(&mut b, 0, 1, Status::Delivered);
        recv(&mut b, 1, 0, 1);
        recv(&mut b, 1, 0, 1); // twice
        send(&mut b, 0, 2, Status::Delivered);
        send(&mut b, 0, 3, Status::Delivered);
        recv(&mut b, 1, 0, 3);
        recv(&mut b, 1, 0, 2); // out of order
        b[0].as_mut().unwrap().sent(4, 4 * S, 4 * S); // never acked
        send(&mut b, 0, 5, Status::Offline);
        recv(&mut b, 1, 0, 5); // offline, yet received
        b[0].as_mut()
            .unwrap()
            .acked(5, Status::Delivered, None, 6 * S); // a second ack
        b[0].as_mut().unwrap().acked(99, Status::Delivered, None, 0); // never sent
        recv(&mut b, 0, 1, 3); // never sent by client 1
        let r = check(&b, 0, 1, Window::default());
        assert!(!r.ok());
        let v = |k: &str| r.violations.get(k).copied().unwrap_or(0);
        assert_eq!(v("delivered but never received"), 1);
        assert_eq!(v("received twice by one session"), 1);
        assert_eq!(v("out of order"), 1);
        assert_eq!(v("send never acked"), 1);
        assert_eq!(v("offline but received"), 1);
        assert_eq!(v("send acked more than once"), 1);
        assert_eq!(v("ack for an id never sent"), 1);
        assert_eq!(v("message never sent"), 1);
        assert_eq!(
            r.examples["out of order"][0],
            "client 1 session 0 from client 0: seq 2 arrived after seq 3"
        );
        assert_eq!(r.examples["delivered but never received"].len(), 1);
        assert!(r.examples["delivered but never received"][0].starts_with("client 0 seq 0 "));
        // No fault: the offline ack is unexplained.
        assert_eq!(r.unexplained, 1);
    }

    #[test]
    fn faults_explain_what_they_cause_and_nothing_else() {
        let mut b = pair(10);
        let w = Window {
            fault_ns: Some(3 * S),
            recovered_ns: Some(6 * S),
        };
        send(&mut b, 0, 1, Status::Failed); // before the fault: unexplained
        send(&mut b, 0, 4, Status::Failed); // during: explained, and it arrived anyway
        recv(&mut b, 1, 0, 4);
        send(&mut b, 0, 5, Status::Offline); // during
        send(&mut b, 0, 7, Status::Offline); // after recovery: unexplained
                                             // Due before the fault, in flight when it struck: explained.
        let bk = b[0].as_mut().unwrap();
        bk.sent(2, 2 * S, 2 * S);
        bk.acked(2, Status::Failed, Some("router link lost"), 3 * S + 1);
        let r = check(&b, 0, 1, w);
        assert_eq!((r.explained, r.unexplained), (3, 2));
        assert_eq!(r.failed_but_received, 1);
        let f = r.not_delivered["failed: router link lost"];
        assert_eq!(
            (f.before_fault, f.during_fault, f.after_recovery),
            (1, 2, 0)
        );
        assert_eq!(r.not_delivered["offline: (none)"].total(), 2);
        assert!(r.violations.is_empty());
        assert!(!r.ok());
    }

    #[test]
    fn lost_connections_explain_missing_acks_and_receipts() {
        let mut b = pair(10);
        // Client 0's first connection dies with seq 2 in flight; it reconnects.
        send(&mut b, 0, 1, Status::Delivered);
        recv(&mut b, 1, 0, 1);
        b[0].as_mut().unwrap().sent(2, 2 * S, 2 * S);
        b[0].as_mut().unwrap().closed(2 * S + 5, true);
        b[0].as_mut().unwrap().opened(3 * S);
        send(&mut b, 0, 3, Status::Delivered);
        recv(&mut b, 1, 0, 3);
        // Client 1's session dies after seq 4 was sent to it and acked delivered.
        send(&mut b, 0, 4, Status::Delivered);
        b[1].as_mut().unwrap().closed(4 * S + 20_000_000, true);
        b[1].as_mut().unwrap().opened(5 * S);
        send(&mut b, 0, 5, Status::Delivered);
        recv(&mut b, 1, 0, 5);
        // Sent after the recipient's first session died and never received: a violation.
        send(&mut b, 0, 6, Status::Delivered);
        let r = check(&b, 0, 1, Window::default());
        assert_eq!(r.unanswered_sender_lost, 1);
        assert_eq!(r.delivered_into_lost_session, 1);
        assert_eq!(r.violations["delivered but never received"], 1);
        assert_eq!(r.violations.len(), 1, "{}", r.table());
        assert_eq!(r.sessions, 4);
        // The unanswered send is bad for recovery; so is a slow one.
        // A slow send is bad when it is most of its window, not when it is one in two hundred.
        assert_eq!(last_bad_send(&b, 0, S / 10, S), Some(2 * S));
        b[0].as_mut().unwrap().sent(7, 7 * S, 7 * S);
        b[0].as_mut()
            .unwrap()
            .acked(7, Status::Delivered, None, 7 * S + S / 2);
        assert_eq!(last_bad_send(&b, 0, S / 10, S), Some(7 * S));
        assert_eq!(last_bad_send(&b, 0, S, S), Some(2 * S));
        let mut many = pair(0);
        let bk = many[0].as_mut().unwrap();
        bk.sends = vec![SendRec::default(); 200];
        for seq in 0..200u64 {
            let t = 10 * S + seq * 1_000_000;
            bk.sent(seq, t, t);
            let lat = if seq == 50 { S / 2 } else { 1_000 };
            bk.acked(seq, Status::Delivered, None, t + lat);
        }
        assert_eq!(last_bad_send(&many, 0, S / 10, S), None, "1 slow in 200");
        for seq in 60..79 {
            bk_slow(&mut many, seq);
        }
        assert_eq!(last_bad_send(&many, 0, S / 10, S), None, "20 in 200 is 10%");
        bk_slow(&mut many, 90);
        let last = last_bad_send(&many, 0, S / 10, S);
        assert_eq!(last, Some(10 * S + 90_000_000));
    }

    /// Makes send `seq` of client 0 (due 10 s + `seq` ms) slow.
    fn bk_slow(b: &mut [Option<ClientBook>], seq: usize) {
        let r = &mut b[0].as_mut().unwrap().sends[seq];
        r.ack_ns = r.intended_ns + S;
    }

    #[test]
    fn order_is_per_sender_connection_and_skips_failed_sends() {
        let mut b = pair(6);
        send(&mut b, 0, 0, Status::Delivered);
        send(&mut b, 0, 1, Status::Failed);
        send(&mut b, 0, 2, Status::Delivered);
        recv(&mut b, 1, 0, 0);
        recv(&mut b, 1, 0, 2);
        recv(&mut b, 1, 0, 1); // failed, late: noted, not a violation
                               // A reconnect of the sender starts a new order.
        b[0].as_mut().unwrap().closed(3 * S, true);
        b[0].as_mut().unwrap().opened(3 * S);
        send(&mut b, 0, 4, Status::Delivered);
        send(&mut b, 0, 5, Status::Delivered);
        recv(&mut b, 1, 0, 5);
        recv(&mut b, 1, 0, 4);
        let r = check(&b, 0, 1, Window::default());
        assert_eq!(r.failed_received_out_of_order, 1);
        assert_eq!(
            r.violations["out of order"], 1,
            "4 after 5 is still a violation"
        );
    }

    #[test]
    fn devices_any_session_of_the_recipient_counts() {
        // devices 2: clients 0,1 are user 0; 2,3 user 1.
        let mut b: Vec<Option<ClientBook>> = (0..4)
            .map(|c| {
                let mut b = ClientBook::new(c, 2);
                b.opened(0);
                Some(b)
            })
            .collect();
        send(&mut b, 0, 0, Status::Delivered);
        recv(&mut b, 3, 0, 0);
        let r = check(&b, 0, 2, Window::default());
        assert!(r.ok(), "{}", r.table());
        send(&mut b, 0, 1, Status::Delivered);
        recv(&mut b, 1, 0, 1); // the sender's own other device is not the recipient
        let r = check(&b, 0, 2, Window::default());
        assert_eq!(r.violations["delivered but never received"], 1);
    }

    #[test]
    fn windows_count_outcomes_by_due_time() {
        let mut b = pair(10);
        send(&mut b, 0, 1, Status::Delivered);
        send(&mut b, 0, 2, Status::Offline);
        send(&mut b, 0, 3, Status::Failed);
        send(&mut b, 1, 3, Status::Delivered);
        b[0].as_mut().unwrap().sent(4, 4 * S, 4 * S);
        let w = windows(&b, 2 * S, 3 * S, 2 * S, S / 1000);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (
                w[0].at_ms,
                w[0].sends,
                w[0].offline,
                w[0].failed,
                w[0].delivered
            ),
            (-1000, 3, 1, 1, 1)
        );
        assert_eq!(w[0].slow, 1, "acked 10 ms after it was due");
        assert_eq!((w[1].at_ms, w[1].other), (1000, 1));
    }

    #[test]
    fn latency_quantile_of_a_window() {
        let mut b = pair(10);
        for seq in 0..10 {
            let bk = b[0].as_mut().unwrap();
            bk.sent(seq, seq * S, seq * S);
            bk.acked(seq, Status::Delivered, None, seq * S + (seq + 1) * 1_000);
        }
        assert_eq!(ack_quantile(&b, 0, 10 * S, 1.0), Some(10_000));
        assert_eq!(ack_quantile(&b, 0, 5 * S, 0.0), Some(1_000));
        assert_eq!(ack_quantile(&b, 20 * S, 30 * S, 0.5), None);
    }
}
