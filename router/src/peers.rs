//! Links to gateway shards: deliveries out, results back.
//!
//! A link is created on first use and queues deliveries while it connects. When it cannot
//! connect or drops, every delivery waiting on it fails (its sender gets `failed`), and the
//! address is not retried until a jittered backoff has passed, so a dead gateway costs one
//! failed connect per backoff period rather than one per message.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::LinkAuth;
use bytes::BytesMut;
use runtime::outbox::Outbox;
use wire::frame::{self, Frame, Role};
use wire::link::LinkGuard;

use crate::shard::Shard;

/// Bytes of deliveries that may wait on one gateway shard link.
const LINK_QUEUE: usize = 32 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A link to one gateway shard.
pub struct Peer {
    pub id: u64,
    addr: SocketAddr,
    auth: RefCell<LinkGuard>,
    outbox: Rc<Outbox>,
    down_until: Cell<Option<Instant>>,
    failures: Cell<u32>,
}

impl Peer {
    pub fn new(id: u64, addr: SocketAddr, failures: u32, secret: Option<Arc<[u8]>>) -> Self {
        let outbox = Rc::new(Outbox::new(LINK_QUEUE, 1 << 20));
        let _ = outbox
            .push(|b| frame::encode_hello(b, frame::PROTOCOL_VERSION, Role::Router, "router", 0));
        let auth = LinkGuard::new(
            LinkAuth::new(secret, Role::Router as u8, runtime::clock::random_u64()),
            Role::Gateway,
        );
        if let Some(nonce) = auth.challenge() {
            let _ = outbox.push(|b| frame::encode_challenge(b, nonce));
        }
        Peer {
            id,
            addr,
            auth: RefCell::new(auth),
            outbox,
            down_until: Cell::new(None),
            failures: Cell::new(failures),
        }
    }

    /// Queues a frame; false if the link is down or congested.
    pub fn send(&self, f: impl FnOnce(&mut BytesMut)) -> bool {
        self.outbox.push(f).is_ok()
    }

    pub fn is_down(&self) -> bool {
        self.down_until.get().is_some()
    }

    /// Whether a down link's backoff has passed.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.down_until.get().is_none_or(|t| now >= t)
    }

    pub fn failures(&self) -> u32 {
        self.failures.get()
    }

    fn mark_down(&self) {
        let n = self.failures.get().saturating_add(1);
        self.failures.set(n);
        let base = Duration::from_millis(100) * 2u32.saturating_pow(n.min(6));
        let base = base.min(Duration::from_secs(5));
        let jitter =
            Duration::from_millis(runtime::clock::random_u64() % (base.as_millis() as u64 / 2 + 1));
        self.down_until
            .set(Some(Instant::now() + base / 2 + jitter));
        self.outbox.close();
    }
}

/// Connects the link and serves it until it fails.
pub async fn run(shard: Rc<Shard>, peer: Rc<Peer>) {
    let why = match runtime::net::connect(peer.addr, CONNECT_TIMEOUT).await {
        Ok(stream) => {
            peer.failures.set(0);
            shard.m().peer_links_up.inc();
            let writer = runtime::link::spawn_writer(&peer.outbox, &stream);
            let reason = runtime::link::read_frames(
                &stream,
                |rx| frame::decode(rx, frame::DEFAULT_MAX_FRAME),
                |f| {
                    let prove = |mac: &[u8; 32]| {
                        let _ = peer.outbox.push(|b| frame::encode_proof(b, mac));
                    };
                    peer.auth
                        .borrow_mut()
                        .feed(f, prove, |f| on_frame(&shard, f))
                },
            )
            .await;
            tracing::info!(shard = shard.id, gateway = %peer.addr, %reason, "gateway link down");
            stream.shutdown();
            peer.mark_down();
            shard.m().peer_links_up.dec();
            let _ = writer.await;
            "recipient gateway link lost"
        }
        Err(e) => {
            tracing::info!(shard = shard.id, gateway = %peer.addr, error = %e, "gateway unreachable");
            peer.mark_down();
            "recipient gateway unreachable"
        }
    };
    shard.fail_peer(peer.id, why);
}

fn on_frame(shard: &Shard, f: Frame) -> Result<(), String> {
    match f {
        Frame::DeliverResult { fwd_id, delivered } => shard.on_result(fwd_id, delivered),
        Frame::Hello {
            role: Role::Gateway,
            ..
        }
        | Frame::Ping { .. }
        | Frame::Pong { .. } => {}
        other => return Err(format!("unexpected frame from gateway: {other:?}")),
    }
    Ok(())
}
