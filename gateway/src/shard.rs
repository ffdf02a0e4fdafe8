//! Per-shard state and the shard's background loops.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::Registry;
use runtime::deadlines::Deadlines;
use runtime::net::Listener;
use runtime::park::ParkSet;
use runtime::rt::{self, sleep};
use serde_json::value::RawValue;
use socket2::Socket;
use wire::client::ErrorCode;
use wire::frame::{AckStatus, PresenceState};

use crate::client::Conn;
use crate::config::Config;
use crate::metrics::{Metrics, ShardMetrics};
use crate::upkeep::Liveness;
use crate::uplink::Uplink;

/// How often shards look for a drain request.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How often expired pending sends are failed.
const DEADLINE_TICK: Duration = Duration::from_millis(100);
/// How long shards other than 0 wait for the first liveness beat before accepting anyway
/// (registrations are shed until it lands).
const FIRST_BEAT_WAIT: Duration = Duration::from_secs(5);

/// A send waiting for the router's outcome.
pub struct Pending {
    conn: Weak<Conn>,
    id: Box<RawValue>,
    link: usize,
    session: u64,
}

/// A presence request waiting for the router's answer.
pub struct PendingPresence {
    conn: Weak<Conn>,
    id: Box<RawValue>,
    users: Vec<String>,
    link: usize,
}

/// Everything one shard owns.
pub struct Shard {
    pub id: u16,
    pub cfg: Arc<Config>,
    /// This shard's internal address as routers dial it (written into the registry).
    pub advertise: String,
    pub registry: Registry,
    /// Process-wide liveness state (heartbeat on shard 0, rebuild requests).
    pub live: Arc<Liveness>,
    pub sessions: RefCell<HashMap<u64, Rc<Conn>>>,
    /// Upgrades in progress on this shard (bounded by `--max-handshakes-per-shard`).
    pub handshakes: Cell<usize>,
    pub uplinks: Vec<Rc<Uplink>>,
    pending: RefCell<HashMap<u64, Pending>>,
    /// Per session with sends in flight: the router link they are on and how many. A session
    /// stays on that link until they are answered, so failing over (or back) never lets a later
    /// send overtake an earlier one through another router.
    routes: RefCell<HashMap<u64, (usize, u32)>>,
    presence: RefCell<HashMap<u64, PendingPresence>>,
    deadlines: RefCell<Deadlines>,
    next_msg: Cell<u64>,
    rng: Cell<u64>,
    /// Reused buffer for encoding outgoing message JSON (no allocation per message).
    pub scratch: RefCell<Vec<u8>>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: new sends are refused, clients are asked to reconnect elsewhere.
    pub draining: Cell<bool>,
    /// The epoch of the connections' rate limits (`limits::TokenBucket`).
    pub started: Instant,
    /// Idle connections' sockets (`--park-after-ms`); `None` when parking is off.
    pub park: Option<ParkSet>,
}

impl Shard {
    /// This shard's metrics.
    pub fn m(&self) -> &ShardMetrics {
        &self.metrics.shards[self.id as usize]
    }
}

impl Shard {
    /// A fresh random session id (never 0).
    pub fn new_session_id(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x.max(1)
    }

    /// The link a request should go on: the preferred one, or the next that is up and not
    /// stalled; failing that, the next that is up.
    pub fn pick_uplink(&self, preferred: usize) -> Option<&Rc<Uplink>> {
        let n = self.uplinks.len();
        let from = |k: usize| &self.uplinks[(preferred + k) % n];
        (0..n)
            .map(from)
            .find(|l| l.is_up() && !l.is_stalled())
            .or_else(|| (0..n).map(from).find(|l| l.is_up()))
    }

    /// The link session `session`'s next send goes on: the one its sends in flight are on, if
    /// any (per-connection order), else as [`Shard::pick_uplink`].
    pub fn pick_uplink_for(&self, session: u64, preferred: usize) -> Option<&Rc<Uplink>> {
        let current = self.routes.borrow().get(&session).map(|r| r.0);
        match current.map(|i| &self.uplinks[i]) {
            Some(l) if l.is_up() => Some(l),
            _ => self.pick_uplink(preferred),
        }
    }

    /// Records a send handed to a router link; its outcome comes back through [`Shard::complete`].
    pub fn track(&self, conn: &Rc<Conn>, id: &RawValue, link: usize) -> u64 {
        let msg_id = self.next_msg.get();
        self.next_msg.set(msg_id + 1);
        self.pending.borrow_mut().insert(
            msg_id,
            Pending {
                conn: Rc::downgrade(conn),
                id: id.to_owned(),
                link,
                session: conn.session,
            },
        );
        let mut routes = self.routes.borrow_mut();
        let r = routes.entry(conn.session).or_insert((link, 0));
        *r = (link, r.1 + 1);
        drop(routes);
        self.deadlines
            .borrow_mut()
            .push(Instant::now() + self.cfg.send_timeout, msg_id);
        self.m().pending_sends.inc();
        msg_id
    }

    /// Records a presence request handed to a router link (ids shared with sends).
    pub fn track_presence(
        &self,
        conn: &Rc<Conn>,
        id: &RawValue,
        users: &[&str],
        link: usize,
    ) -> u64 {
        let req_id = self.next_msg.get();
        self.next_msg.set(req_id + 1);
        self.presence.borrow_mut().insert(
            req_id,
            PendingPresence {
                conn: Rc::downgrade(conn),
                id: id.to_owned(),
                users: users.iter().map(|u| u.to_string()).collect(),
                link,
            },
        );
        self.deadlines
            .borrow_mut()
            .push(Instant::now() + self.cfg.send_timeout, req_id);
        req_id
    }

    /// The router's answer to a presence request: one state byte per user.
    pub fn complete_presence(&self, req_id: u64, states: &[u8]) {
        let Some(p) = self.presence.borrow_mut().remove(&req_id) else {
            return;
        };
        let Some(conn) = p.conn.upgrade() else {
            return;
        };
        if states.len() != p.users.len() {
            conn.send_error(
                self,
                Some(&p.id),
                ErrorCode::Internal,
                "malformed presence answer",
            );
            return;
        }
        let answers = p.users.iter().zip(states).map(|(u, s)| {
            let state = PresenceState::from_u8(*s).unwrap_or(PresenceState::Unknown);
            (u.as_str(), state)
        });
        let mut out = self.scratch.borrow_mut();
        out.clear();
        wire::client::encode_presence(&mut out, &p.id, answers);
        conn.send_text(self, &out);
    }

    fn fail_presence(&self, req_id: u64, why: &str) {
        let Some(p) = self.presence.borrow_mut().remove(&req_id) else {
            return;
        };
        if let Some(conn) = p.conn.upgrade() {
            conn.send_error(self, Some(&p.id), ErrorCode::Internal, why);
        }
    }

    /// The next message id that [`Shard::track`] will hand out.
    pub fn peek_msg_id(&self) -> u64 {
        self.next_msg.get()
    }

    /// Delivers the one outcome of a send to its client. Later outcomes for the same id are
    /// ignored, which is what makes "exactly one ack" hold across timeouts and link losses.
    pub fn complete(&self, msg_id: u64, status: AckStatus, reason: Option<&str>) {
        let Some(p) = self.pending.borrow_mut().remove(&msg_id) else {
            return;
        };
        self.m().pending_sends.dec();
        let mut routes = self.routes.borrow_mut();
        if let Some(r) = routes.get_mut(&p.session) {
            r.1 = r.1.saturating_sub(1);
            if r.1 == 0 {
                routes.remove(&p.session);
            }
        }
        drop(routes);
        if let Some(conn) = p.conn.upgrade() {
            conn.send_ack(self, &p.id, status, reason);
        }
    }

    /// Fails every send waiting on router link `link` (the link went down).
    pub fn fail_link(&self, link: usize, reason: &str) {
        let ids: Vec<u64> = self
            .pending
            .borrow()
            .iter()
            .filter(|(_, p)| p.link == link)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.complete(id, AckStatus::Failed, Some(reason));
        }
        let ids: Vec<u64> = self
            .presence
            .borrow()
            .iter()
            .filter(|(_, p)| p.link == link)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail_presence(id, reason);
        }
    }

    fn expire(&self, now: Instant) {
        loop {
            let Some(id) = self.deadlines.borrow_mut().pop_expired(now) else {
                break;
            };
            let why = "timed out waiting for the router";
            self.complete(id, AckStatus::Failed, Some(why));
            self.fail_presence(id, why);
        }
    }

    /// Writes `payload` to the listed sessions of `to`; returns how many took it.
    pub fn deliver(&self, to: &[u8], sessions: impl Iterator<Item = u64>, payload: &[u8]) -> u32 {
        let map = self.sessions.borrow();
        let mut n = 0;
        for sid in sessions {
            if let Some(c) = map.get(&sid) {
                if c.user.as_bytes() == to && c.send_text(self, payload) {
                    n += 1;
                }
            }
        }
        self.m().deliveries_out.add(n as u64);
        n
    }
}

/// Runs one shard until the process exits.
pub async fn run(
    id: u16,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    live: Arc<Liveness>,
    client: Socket,
    internal: Socket,
    internal_port: u16,
) {
    let (client, internal) = match (
        Listener::from_socket(client),
        Listener::from_socket(internal),
    ) {
        (Ok(c), Ok(i)) => (c, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(shard = id, error = %e, "listener unusable; shard stops");
            return;
        }
    };
    // Registration is 4 commands; a connect storm keeps up to --max-handshakes-per-shard of
    // them in flight, so the client's in-flight bound must hold all of them.
    let mut opts = registry::RegistryOptions::default();
    opts.redis.max_in_flight = opts
        .redis
        .max_in_flight
        .max(cfg.max_handshakes_per_shard * 4 + 4096);
    let registry = match Registry::connect(&cfg.registry, opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(shard = id, error = %e, "registry unusable; shard stops");
            return;
        }
    };
    // Accept only once the registry answers, so the first clients are not turned away.
    if let Err(e) = registry.wait_ready(Duration::from_secs(5)).await {
        tracing::warn!(shard = id, error = %e, "registry not reachable yet; serving anyway");
    }
    let port = cfg.advertise_port.map_or(internal_port, |p| p + id);
    let advertise = if cfg.advertise_host.contains(':') {
        format!("[{}]:{}", cfg.advertise_host, port)
    } else {
        format!("{}:{}", cfg.advertise_host, port)
    };
    let uplinks = cfg
        .routers
        .iter()
        .enumerate()
        .map(|(i, a): (usize, &SocketAddr)| Rc::new(Uplink::new(i, *a)))
        .collect();
    let park = cfg.park_after.and_then(|_| {
        ParkSet::new()
            .inspect_err(|e| tracing::warn!(shard = id, error = %e, "no epoll set: parking off"))
            .ok()
    });
    let shard = Rc::new(Shard {
        id,
        started: Instant::now(),
        park,
        advertise,
        registry,
        live,
        sessions: RefCell::new(HashMap::new()),
        handshakes: Cell::new(0),
        uplinks,
        pending: RefCell::new(HashMap::new()),
        routes: RefCell::new(HashMap::new()),
        presence: RefCell::new(HashMap::new()),
        deadlines: RefCell::new(Deadlines::default()),
        next_msg: Cell::new(1),
        rng: Cell::new(runtime::clock::random_u64() | 1),
        scratch: RefCell::new(Vec::with_capacity(4096)),
        cfg,
        metrics,
        draining: Cell::new(false),
    });
    for l in &shard.uplinks {
        rt::spawn(crate::uplink::run(shard.clone(), l.clone())).detach();
    }
    rt::spawn(crate::downlink::accept_loop(shard.clone(), internal)).detach();
    rt::spawn(deadline_loop(shard.clone())).detach();
    rt::spawn(crate::upkeep::upkeep_loop(shard.clone())).detach();
    rt::spawn(idle_loop(shard.clone())).detach();
    if shard.park.is_some() {
        rt::spawn(park_loop(shard.clone())).detach();
        rt::spawn(unpark_loop(shard.clone())).detach();
    }
    // The liveness record goes in before any session: a router judges a session whose
    // gateway has no record as dead.
    if id == 0 {
        rt::spawn(crate::upkeep::heartbeat_loop(shard.clone())).detach();
    }
    let waiting = Instant::now();
    while !shard.live.beating() && waiting.elapsed() < FIRST_BEAT_WAIT {
        sleep(Duration::from_millis(10)).await;
    }
    let accepting = rt::spawn(crate::client::accept_loop(shard.clone(), client));
    while !ops::drain::draining() {
        sleep(DRAIN_POLL).await;
    }
    drop(accepting);
    drain(&shard).await;
}

/// SIGTERM: stop accepting (done by the caller), refuse new sends, let the sends in flight get
/// their acks, then ask every client to reconnect elsewhere (1012 with a jittered delay hint)
/// and wait for their sessions to be deregistered.
async fn drain(shard: &Rc<Shard>) {
    shard.draining.set(true);
    let conns = shard.sessions.borrow().len();
    tracing::info!(shard = shard.id, conns, "draining");
    // Half the budget for outcomes of sends in flight, the rest for closing.
    let acks_by = Instant::now() + ops::drain::remaining() / 2;
    while !shard.pending.borrow().is_empty() && Instant::now() < acks_by {
        sleep(Duration::from_millis(20)).await;
    }
    let spread = ops::drain::remaining().min(Duration::from_secs(10));
    let conns: Vec<Rc<Conn>> = shard.sessions.borrow().values().cloned().collect();
    for c in conns {
        let wait = (shard.new_session_id() % (spread.as_millis() as u64 + 1)).max(100);
        c.close_for_restart(wait);
    }
    while !shard.sessions.borrow().is_empty() && ops::drain::remaining() > Duration::ZERO {
        sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        shard = shard.id,
        left = shard.sessions.borrow().len(),
        "drained"
    );
    if shard.id == 0 {
        crate::upkeep::retire(shard).await;
    }
}

async fn deadline_loop(shard: Rc<Shard>) {
    loop {
        sleep(DEADLINE_TICK).await;
        let now = Instant::now();
        shard.expire(now);
        for l in &shard.uplinks {
            if l.check_stall(shard.cfg.link_stall, now) {
                tracing::warn!(
                    shard = shard.id,
                    router = %l.addr,
                    "router silent for {:?} after a send; failing its pending sends and sending elsewhere",
                    shard.cfg.link_stall
                );
                shard.fail_link(l.idx, "router stalled");
            }
        }
    }
}

/// Pings quiet clients and drops silent ones.
async fn idle_loop(shard: Rc<Shard>) {
    let tick = (shard.cfg.ping_interval / 2).max(Duration::from_millis(500));
    loop {
        sleep(tick).await;
        let now = Instant::now();
        let conns: Vec<Rc<Conn>> = shard.sessions.borrow().values().cloned().collect();
        for c in conns {
            let quiet = now.saturating_duration_since(c.last_rx.get());
            if quiet >= shard.cfg.idle_timeout {
                tracing::debug!(session = c.session, "idle timeout");
                shard.m().drop(crate::metrics::DropReason::Idle);
                c.abort();
            } else if quiet >= shard.cfg.ping_interval {
                c.send_ping(&shard);
            }
        }
    }
}

/// The park clock: every `--park-after-ms` each session moves one step towards parking (see
/// `client::ParkState`), so a connection silent in both directions for 1-2 periods parks.
async fn park_loop(shard: Rc<Shard>) {
    let Some(tick) = shard.cfg.park_after else {
        return;
    };
    loop {
        sleep(tick).await;
        // Only flags and wake-ups: no task runs inside this borrow.
        for c in shard.sessions.borrow().values() {
            c.park_tick();
        }
    }
}

/// Wakes the tasks of parked connections whose sockets became readable (input, end of input,
/// an error); each unparks itself.
async fn unpark_loop(shard: Rc<Shard>) {
    let Some(set) = &shard.park else {
        return;
    };
    let mut ready = Vec::with_capacity(64);
    loop {
        if let Err(e) = set.wait(&mut ready).await {
            // Parked connections still wake for output, pings and closes meanwhile.
            tracing::error!(shard = shard.id, error = %e, "waiting on parked sockets failed");
            sleep(Duration::from_secs(1)).await;
            continue;
        }
        let sessions = shard.sessions.borrow();
        for session in &ready {
            if let Some(c) = sessions.get(session) {
                if !c.pong_while_parked(&shard) {
                    c.wake();
                }
            }
        }
    }
}
