//! This shard's link to one router: sends go out, acks come back.
//!
//! The link reconnects with jittered backoff. While it is down, sends fail fast (the client gets
//! `failed` at once) instead of queueing without bound; when it drops, every send still waiting
//! on it is acked `failed`, so no send is left without an outcome.
//!
//! A router that is connected but silent (a stopped process, a hung host) is noticed sooner
//! than the keep-alive's three periods: once a send has waited half of `--link-stall-ms`
//! with nothing heard since, the link sends a probe ping, which a live router answers as soon
//! as it reads it, however long its lookups take; with still nothing heard at the full bound
//! the link counts as stalled (see [`Uplink::check_stall`]) until the router speaks again.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use auth::LinkAuth;
use runtime::backoff::Backoff;
use runtime::io::Stream;
use runtime::outbox::Outbox;
use runtime::rt::{self, sleep};
use wire::frame::{self, Frame, Role};
use wire::link::LinkGuard;

use crate::shard::Shard;

/// Bytes that may wait on one router link before sends are refused.
const LINK_QUEUE: usize = 32 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Nonce of the stall probe (keep-alive pings count up from 1).
const PROBE_NONCE: u64 = u64::MAX;
/// Stall checks after the probe before a silent router is judged stalled.
const PROBE_TICKS: u32 = 3;

/// One router link of one shard.
pub struct Uplink {
    pub idx: usize,
    pub addr: SocketAddr,
    outbox: RefCell<Option<Rc<Outbox>>>,
    /// When the oldest request sent since the router was last heard from went out.
    unanswered_since: Cell<Option<Instant>>,
    /// Stall checks since this silence was probed with a ping (`None`: not probed yet).
    probed: Cell<Option<u32>>,
    /// Judged stalled; cleared by the next frame from the router.
    stalled: Cell<bool>,
}

impl Uplink {
    pub fn new(idx: usize, addr: SocketAddr) -> Self {
        Uplink {
            idx,
            addr,
            outbox: RefCell::new(None),
            unanswered_since: Cell::new(None),
            probed: Cell::new(None),
            stalled: Cell::new(false),
        }
    }

    /// Whether the link is connected.
    pub fn is_up(&self) -> bool {
        self.outbox.borrow().is_some()
    }

    /// Whether the router has been silent past the stall bound (see [`Uplink::check_stall`]).
    pub fn is_stalled(&self) -> bool {
        self.stalled.get()
    }

    fn note_sent(&self) {
        if self.unanswered_since.get().is_none() {
            self.unanswered_since.set(Some(Instant::now()));
        }
    }

    /// Anything from the router: it is alive.
    fn heard(&self) {
        self.unanswered_since.set(None);
        self.probed.set(None);
        if self.stalled.replace(false) {
            tracing::info!(router = %self.addr, "router answers again; sending to it again");
        }
    }

    /// Called every deadline tick. Probes a router silent for half of `bound` since a send
    /// (once per silence); returns true when the silence reaches `bound` (once per silence):
    /// the caller then fails the link's pending sends. A zero `bound` disables it.
    ///
    /// The verdict also needs [`PROBE_TICKS`] checks after the probe: a gateway that was itself
    /// starved of CPU wakes with the router's answers unread, and its first timer may run
    /// before its reader; the reader gets its turn between checks.
    pub fn check_stall(&self, bound: Duration, now: Instant) -> bool {
        let Some(since) = self.unanswered_since.get().filter(|_| !bound.is_zero()) else {
            return false;
        };
        let quiet = now.saturating_duration_since(since);
        match self.probed.get() {
            None if quiet >= bound / 2 => {
                if let Some(o) = &*self.outbox.borrow() {
                    let _ = o.push(|b| frame::encode_ping(b, PROBE_NONCE));
                }
                self.probed.set(Some(0));
                false
            }
            None => false,
            Some(ticks) => {
                self.probed.set(Some(ticks.saturating_add(1)));
                ticks + 1 >= PROBE_TICKS && quiet >= bound && !self.stalled.replace(true)
            }
        }
    }

    /// Queues a presence request; false if the link is down or congested.
    pub fn presence(&self, req_id: u64, users: &[&str]) -> bool {
        match &*self.outbox.borrow() {
            Some(o) => {
                let ok = o
                    .push(|b| frame::encode_presence(b, req_id, users.iter().copied()))
                    .is_ok();
                if ok {
                    self.note_sent();
                }
                ok
            }
            None => false,
        }
    }

    /// Queues a send frame; false if the link is down or congested.
    pub fn send(&self, msg_id: u64, to: &str, payload: &[u8]) -> bool {
        match &*self.outbox.borrow() {
            Some(o) => {
                let ok = o
                    .push(|b| frame::encode_send(b, msg_id, to, payload))
                    .is_ok();
                if ok {
                    self.note_sent();
                }
                ok
            }
            None => false,
        }
    }
}

/// Keeps the link up for the life of the shard.
pub async fn run(shard: Rc<Shard>, link: Rc<Uplink>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(2),
        runtime::clock::random_u64(),
    );
    let mut logged_down = false;
    loop {
        match runtime::net::connect(link.addr, CONNECT_TIMEOUT).await {
            Ok(stream) => {
                backoff.reset();
                logged_down = false;
                tracing::info!(shard = shard.id, router = %link.addr, "router link up");
                let reason = serve(&shard, &link, stream).await;
                tracing::warn!(shard = shard.id, router = %link.addr, %reason, "router link down");
            }
            Err(e) => {
                if !logged_down {
                    tracing::warn!(shard = shard.id, router = %link.addr, error = %e, "router unreachable; retrying");
                    logged_down = true;
                }
            }
        }
        sleep(backoff.next_delay()).await;
    }
}

async fn serve(shard: &Rc<Shard>, link: &Rc<Uplink>, stream: Stream) -> String {
    let outbox = Rc::new(Outbox::new(LINK_QUEUE, 1 << 20));
    let _ = outbox.push(|b| {
        frame::encode_hello(
            b,
            frame::PROTOCOL_VERSION,
            Role::Gateway,
            &shard.cfg.instance_id,
            shard.id,
        )
    });
    let mut guard = LinkGuard::new(
        LinkAuth::new(
            shard.cfg.link_secret.clone(),
            Role::Gateway as u8,
            runtime::clock::random_u64(),
        ),
        Role::Router,
    );
    if let Some(nonce) = guard.challenge() {
        let _ = outbox.push(|b| frame::encode_challenge(b, nonce));
    }
    *link.outbox.borrow_mut() = Some(outbox.clone());
    shard.m().router_links_up.inc();
    let writer = runtime::link::spawn_writer(&outbox, &stream);
    let heard = Rc::new(Cell::new(Instant::now()));
    let every = shard.cfg.link_keepalive;
    let pinger = rt::spawn(keepalive(
        every,
        outbox.clone(),
        stream.clone(),
        heard.clone(),
    ));
    let reason = runtime::link::read_frames(
        &stream,
        |rx| frame::decode(rx, frame::DEFAULT_MAX_FRAME),
        |f| {
            heard.set(Instant::now());
            link.heard();
            let prove = |mac: &[u8; 32]| {
                let _ = outbox.push(|b| frame::encode_proof(b, mac));
            };
            guard.feed(f, prove, |f| on_frame(shard, link, f))
        },
    )
    .await;
    drop(pinger);
    if link.outbox.borrow_mut().take().is_some() {
        shard.m().router_links_up.dec();
    }
    // A new connection starts with a clean slate.
    link.heard();
    outbox.close();
    stream.shutdown();
    let _ = writer.await;
    shard.fail_link(link.idx, "router link lost");
    reason
}

/// Pings the router every `every` and drops the link when it has been silent for three
/// periods: a stalled router (stopped process, dead host behind a load balancer that
/// keeps the TCP connection open) then fails its pending sends instead of holding them, and the
/// link reconnects. Also keeps idle links alive through NAT and load-balancer idle timeouts.
async fn keepalive(every: Duration, outbox: Rc<Outbox>, stream: Stream, heard: Rc<Cell<Instant>>) {
    let mut nonce = 0u64;
    loop {
        sleep(every).await;
        if heard.get().elapsed() > every * 3 {
            tracing::warn!("router silent for {:?}; dropping the link", every * 3);
            stream.shutdown();
            return;
        }
        nonce += 1;
        if outbox.push(|b| frame::encode_ping(b, nonce)).is_err() {
            return;
        }
    }
}

fn on_frame(shard: &Shard, link: &Uplink, f: Frame) -> Result<(), String> {
    match f {
        // The router drains: send nothing new here; its acks still come on this link.
        Frame::Goaway => {
            if link.outbox.borrow_mut().take().is_some() {
                shard.m().router_links_up.dec();
            }
            tracing::info!(shard = shard.id, router = %link.addr, "router draining (goaway)");
        }
        Frame::Ack {
            msg_id,
            status,
            reason,
        } => {
            let reason = std::str::from_utf8(&reason).ok().filter(|r| !r.is_empty());
            shard.complete(msg_id, status, reason);
        }
        Frame::PresenceResult { req_id, states } => shard.complete_presence(req_id, &states),
        Frame::Hello {
            role: Role::Router, ..
        }
        | Frame::Ping { .. }
        | Frame::Pong { .. } => {}
        other => return Err(format!("unexpected frame from router: {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_router_is_stalled_after_the_bound_and_the_probe_checks() {
        let l = Uplink::new(0, "127.0.0.1:1".parse().unwrap());
        let b = Duration::from_secs(1);
        assert!(!l.check_stall(b, Instant::now() + b * 10), "nothing sent");
        l.note_sent();
        let since = l.unanswered_since.get().unwrap();
        assert!(!l.check_stall(b, since + b / 4));
        assert!(!l.check_stall(b, since + b / 2), "probes");
        assert!(!l.check_stall(b, since + b));
        assert!(!l.check_stall(b, since + b));
        assert!(l.check_stall(b, since + b), "third check after the probe");
        assert!(l.is_stalled());
        assert!(!l.check_stall(b, since + b * 2), "once per silence");
        l.heard();
        assert!(!l.is_stalled());

        // A gateway that was starved wakes long past the bound: it probes first, and its
        // reader hears the router before the verdict.
        l.note_sent();
        let since = l.unanswered_since.get().unwrap();
        assert!(!l.check_stall(b, since + b * 5));
        assert!(!l.check_stall(b, since + b * 5));
        l.heard();
        assert!(!l.check_stall(b, since + b * 6));
        assert!(!l.is_stalled());

        // Off.
        l.note_sent();
        for k in 1..10 {
            assert!(!l.check_stall(Duration::ZERO, Instant::now() + b * k));
        }
    }
}
