//! Per-shard routing state: forwards in flight and their aggregation into exactly one ack.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::{Registry, SessionEntry};
use runtime::deadlines::Deadlines;
use runtime::net::Listener;
use runtime::rt::{self, sleep};
use socket2::Socket;
use wire::frame::{self, AckStatus};

use crate::config::Config;
use crate::inbound::Inbound;
use crate::liveness::LiveView;
use crate::metrics::{Metrics, ShardMetrics};
use crate::peers::Peer;

/// How often shards look for a drain request.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How often forwards past their deadline are failed.
const DEADLINE_TICK: Duration = Duration::from_millis(100);

/// The outcome of one send while its deliveries are out.
pub struct Agg {
    origin: Weak<Inbound>,
    msg_id: u64,
    outstanding: Cell<u32>,
    delivered: Cell<bool>,
    failure: Cell<Option<&'static str>>,
    acked: Cell<bool>,
}

impl Agg {
    /// Sends the ack once it is decided: `delivered` as soon as one gateway took it, otherwise
    /// when the last delivery has answered (`offline` if all said "no such session").
    fn settle(&self) {
        if self.acked.get() {
            return;
        }
        let status = if self.delivered.get() {
            AckStatus::Delivered
        } else if self.outstanding.get() > 0 {
            return;
        } else if self.failure.get().is_some() {
            AckStatus::Failed
        } else {
            AckStatus::Offline
        };
        self.acked.set(true);
        if let Some(origin) = self.origin.upgrade() {
            let reason = if status == AckStatus::Failed {
                self.failure.get().unwrap_or("")
            } else {
                ""
            };
            origin.ack(self.msg_id, status, reason);
        }
    }
}

struct Fwd {
    agg: Rc<Agg>,
    peer: u64,
}

/// Everything one router shard owns.
pub struct Shard {
    pub id: u16,
    pub cfg: Arc<Config>,
    pub registry: Registry,
    /// Which gateways are alive.
    pub live: LiveView,
    peers: RefCell<HashMap<String, Rc<Peer>>>,
    fwds: RefCell<HashMap<u64, Fwd>>,
    deadlines: RefCell<Deadlines>,
    next_fwd: Cell<u64>,
    next_peer: Cell<u64>,
    pub metrics: Arc<Metrics>,
    inbound: RefCell<Vec<Weak<Inbound>>>,
}

impl Shard {
    /// This shard's metrics.
    pub fn m(&self) -> &ShardMetrics {
        &self.metrics.shards[self.id as usize]
    }

    /// Remembers a gateway link (to send it `Goaway` when draining).
    pub fn add_inbound(&self, link: &Rc<Inbound>) {
        self.m().gateway_links.inc();
        let mut v = self.inbound.borrow_mut();
        v.retain(|l| l.strong_count() > 0);
        v.push(Rc::downgrade(link));
    }

    /// Leaves out sessions of dead gateways and removes them from the registry in the
    /// background.
    pub async fn live_sessions(
        &self,
        entries: Vec<SessionEntry>,
        read_at: Instant,
    ) -> Vec<SessionEntry> {
        let judged = self.live.judge(entries, read_at).await;
        if !judged.dead.is_empty() {
            self.m().dead_sessions.add(judged.dead.len() as u64);
            tracing::debug!(
                sessions = judged.dead.len(),
                "skipping sessions of dead gateways"
            );
            let cleanup = self.registry.remove_sessions(&judged.dead);
            rt::spawn(async move {
                if let Err(e) = cleanup.await {
                    tracing::debug!(error = %e, "lazy cleanup of dead sessions failed");
                }
            })
            .detach();
        }
        judged.live
    }

    /// Routes one send given its registry lookup result. Always leads to exactly one ack.
    pub fn route(
        self: &Rc<Self>,
        origin: &Rc<Inbound>,
        msg_id: u64,
        to: &str,
        payload: &[u8],
        lookup: Result<Vec<SessionEntry>, registry::Error>,
    ) {
        let entries = match lookup {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "registry lookup failed");
                return origin.ack(msg_id, AckStatus::Failed, "session registry unavailable");
            }
        };
        if entries.is_empty() {
            return origin.ack(msg_id, AckStatus::Offline, "");
        }
        let agg = Rc::new(Agg {
            origin: Rc::downgrade(origin),
            msg_id,
            outstanding: Cell::new(0),
            delivered: Cell::new(false),
            failure: Cell::new(None),
            acked: Cell::new(false),
        });
        // Group sessions by gateway shard address: one Deliver per shard.
        let mut done = vec![false; entries.len()];
        let mut sids = Vec::with_capacity(entries.len());
        let deadline = Instant::now() + self.cfg.forward_timeout;
        for i in 0..entries.len() {
            if done[i] {
                continue;
            }
            let addr = &entries[i].addr;
            sids.clear();
            for (j, e) in entries.iter().enumerate().skip(i) {
                if !done[j] && &e.addr == addr {
                    done[j] = true;
                    sids.push(e.session);
                }
            }
            let peer = match self.peer(addr) {
                Ok(p) => p,
                Err(why) => {
                    agg.failure.set(Some(why));
                    continue;
                }
            };
            let fwd_id = self.next_fwd.get();
            self.next_fwd.set(fwd_id + 1);
            if peer.send(|b| frame::encode_deliver(b, fwd_id, to, &sids, payload)) {
                self.m().deliveries.inc();
                self.m().forwards_pending.inc();
                self.fwds.borrow_mut().insert(
                    fwd_id,
                    Fwd {
                        agg: agg.clone(),
                        peer: peer.id,
                    },
                );
                self.deadlines.borrow_mut().push(deadline, fwd_id);
                agg.outstanding.set(agg.outstanding.get() + 1);
            } else {
                agg.failure.set(Some("recipient gateway link congested"));
            }
        }
        agg.settle();
    }

    /// The link to a gateway shard, creating (and connecting) it on first use.
    fn peer(self: &Rc<Self>, addr: &str) -> Result<Rc<Peer>, &'static str> {
        if let Some(p) = self.peers.borrow().get(addr) {
            if !p.is_down() {
                return Ok(p.clone());
            }
            if !p.retry_due(Instant::now()) {
                return Err("recipient gateway unreachable");
            }
        }
        let sock: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| "recipient gateway address invalid")?;
        let failures = self.peers.borrow().get(addr).map_or(0, |p| p.failures());
        let id = self.next_peer.get();
        self.next_peer.set(id + 1);
        let peer = Rc::new(Peer::new(id, sock, failures, self.cfg.link_secret.clone()));
        self.peers
            .borrow_mut()
            .insert(addr.to_string(), peer.clone());
        rt::spawn(crate::peers::run(self.clone(), peer.clone())).detach();
        Ok(peer)
    }

    /// A gateway shard answered a delivery.
    pub fn on_result(&self, fwd_id: u64, delivered: u32) {
        let Some(f) = self.fwds.borrow_mut().remove(&fwd_id) else {
            return;
        };
        self.m().forwards_pending.dec();
        f.agg.outstanding.set(f.agg.outstanding.get() - 1);
        if delivered > 0 {
            f.agg.delivered.set(true);
        }
        f.agg.settle();
    }

    /// Fails the deliveries still waiting on a peer link that went down.
    pub fn fail_peer(&self, peer: u64, why: &'static str) {
        let ids: Vec<u64> = self
            .fwds
            .borrow()
            .iter()
            .filter(|(_, f)| f.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail_fwd(id, why);
        }
    }

    fn fail_fwd(&self, fwd_id: u64, why: &'static str) {
        let Some(f) = self.fwds.borrow_mut().remove(&fwd_id) else {
            return;
        };
        self.m().forwards_pending.dec();
        f.agg.outstanding.set(f.agg.outstanding.get() - 1);
        f.agg.failure.set(Some(why));
        f.agg.settle();
    }

    fn expire(&self, now: Instant) {
        loop {
            let Some(id) = self.deadlines.borrow_mut().pop_expired(now) else {
                break;
            };
            self.fail_fwd(id, "recipient gateway timed out");
        }
    }
}

/// Runs one router shard until the process exits.
pub async fn run(id: u16, cfg: Arc<Config>, metrics: Arc<Metrics>, listener: Socket) {
    let listener = match Listener::from_socket(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = id, error = %e, "listener unusable; shard stops");
            return;
        }
    };
    let registry = match Registry::connect(&cfg.registry, Default::default()) {
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
    let shard = Rc::new(Shard {
        id,
        live: LiveView::new(registry.clone(), cfg.liveness_grace),
        cfg,
        registry,
        peers: RefCell::new(HashMap::new()),
        fwds: RefCell::new(HashMap::new()),
        deadlines: RefCell::new(Deadlines::default()),
        next_fwd: Cell::new(1),
        next_peer: Cell::new(1),
        metrics,
        inbound: RefCell::new(Vec::new()),
    });
    rt::spawn({
        let shard = shard.clone();
        async move {
            loop {
                sleep(DEADLINE_TICK).await;
                shard.expire(Instant::now());
            }
        }
    })
    .detach();
    rt::spawn({
        let shard = shard.clone();
        async move {
            loop {
                shard.live.refresh_after(Instant::now()).await;
                shard.m().live_gateways.set(shard.live.gateways() as i64);
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
                sleep(shard.cfg.liveness_poll).await;
            }
        }
    })
    .detach();
    let accepting = rt::spawn(accept_loop(shard.clone(), listener));
    while !ops::drain::draining() {
        sleep(DRAIN_POLL).await;
    }
    drop(accepting);
    drain(&shard).await;
}

/// SIGTERM: stop accepting (done by the caller), tell every gateway to send elsewhere, and
/// finish what is in flight: every send already received gets its ack before the router exits.
async fn drain(shard: &Shard) {
    let links: Vec<Rc<Inbound>> = shard
        .inbound
        .borrow()
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    tracing::info!(shard = shard.id, links = links.len(), "draining");
    for l in &links {
        l.goaway();
    }
    // Sends that raced the goaway still arrive; give them a moment, then wait for quiet.
    sleep(Duration::from_millis(200)).await;
    while (links.iter().any(|l| l.busy()) || !shard.fwds.borrow().is_empty())
        && ops::drain::remaining() > Duration::ZERO
    {
        sleep(Duration::from_millis(20)).await;
    }
    // Let the writers flush the last acks.
    sleep(Duration::from_millis(100)).await;
    tracing::info!(
        shard = shard.id,
        left = shard.fwds.borrow().len(),
        "drained"
    );
}

async fn accept_loop(shard: Rc<Shard>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                rt::spawn(crate::inbound::serve(shard.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
