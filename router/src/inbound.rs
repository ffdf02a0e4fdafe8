//! Links from gateways. Sends arrive in order; each one's registry lookup is issued at once
//! (so many share one pipelined round trip). A send is routed once its lookup is back and no
//! earlier send on the link to the same recipient is still waiting, so messages to one
//! recipient are forwarded in the order they were sent, while a lookup held up by one Redis
//! node (a failover) holds up only the sends behind it to the same recipient, not the link.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use auth::LinkAuth;
use bytes::Bytes;
use registry::{RegistryFuture, SessionEntry};
use runtime::io::Stream;
use runtime::outbox::Outbox;
use runtime::signal::Signal;
use wire::frame::{self, AckStatus, Frame, PresenceState, Role};
use wire::link::LinkGuard;

use crate::metrics::Metrics;
use crate::shard::Shard;

/// Bytes of acks that may wait on one gateway link.
const LINK_QUEUE: usize = 32 * 1024 * 1024;
/// Sends awaiting their lookup on one link; beyond it sends are failed at once (backpressure).
const MAX_QUEUED: usize = 65_536;
/// How many sends past a waiting one the processor looks at for one it may route first: enough
/// to keep a link moving past one slow Redis node, few enough that the scan stays cheap.
const LOOKAHEAD: usize = 256;

type Lookup = RegistryFuture<Vec<SessionEntry>>;

struct Job {
    queued: Instant,
    msg_id: u64,
    to: Bytes,
    payload: Bytes,
    lookup: Lookup,
    /// The lookup's result once it is back.
    result: Option<Result<Vec<SessionEntry>, registry::Error>>,
}

/// One gateway's link into this shard.
pub struct Inbound {
    metrics: Arc<Metrics>,
    shard: usize,
    outbox: Rc<Outbox>,
    jobs: RefCell<VecDeque<Job>>,
    signal: Signal,
    reading: Cell<bool>,
    /// [`Inbound::poll_next`]'s list of sends still waiting for their lookup, kept so that a
    /// poll with the front send waiting (most of them, under load) allocates nothing.
    waiting: RefCell<Vec<usize>>,
}

impl Inbound {
    /// Whether sends are still waiting for their lookup.
    pub fn busy(&self) -> bool {
        !self.jobs.borrow().is_empty()
    }

    /// Tells the gateway this router drains: it sends its next messages elsewhere.
    pub fn goaway(&self) {
        let _ = self.outbox.push(frame::encode_goaway);
    }

    /// Queues the one ack of a send.
    pub fn ack(&self, msg_id: u64, status: AckStatus, reason: &str) {
        self.metrics.shards[self.shard].ack(status);
        let _ = self
            .outbox
            .push(|b| frame::encode_ack(b, msg_id, status, reason));
    }
}

pub async fn serve(shard: Rc<Shard>, stream: Stream) {
    let peer = stream.peer_addr();
    let outbox = Rc::new(Outbox::new(LINK_QUEUE, 1 << 20));
    let _ = outbox.push(|b| {
        frame::encode_hello(b, frame::PROTOCOL_VERSION, Role::Router, "router", shard.id)
    });
    let link = Rc::new(Inbound {
        metrics: shard.metrics.clone(),
        shard: shard.id as usize,
        outbox: outbox.clone(),
        jobs: RefCell::new(VecDeque::new()),
        signal: Signal::default(),
        reading: Cell::new(true),
        waiting: RefCell::default(),
    });
    shard.add_inbound(&link);
    let writer = runtime::link::spawn_writer(&outbox, &stream);
    let processor = runtime::rt::spawn(process(shard.clone(), link.clone()));
    let mut guard = LinkGuard::new(
        LinkAuth::new(
            shard.cfg.link_secret.clone(),
            Role::Router as u8,
            runtime::clock::random_u64(),
        ),
        Role::Gateway,
    );
    if let Some(nonce) = guard.challenge() {
        let _ = outbox.push(|b| frame::encode_challenge(b, nonce));
    }
    let proven = Rc::new(std::cell::Cell::new(guard.authenticated()));
    let _watchdog = runtime::link::require_proof(&stream, &proven);
    let mut greeted = false;
    let reason = runtime::link::read_frames(
        &stream,
        |rx| frame::decode(rx, frame::DEFAULT_MAX_FRAME),
        |f| {
            let prove = |mac: &[u8; 32]| {
                let _ = outbox.push(|b| frame::encode_proof(b, mac));
            };
            let r = guard.feed(f, prove, |f| on_frame(&shard, &link, &mut greeted, f));
            proven.set(guard.authenticated());
            r
        },
    )
    .await;
    link.reading.set(false);
    link.signal.raise();
    processor.await;
    outbox.close();
    let _ = writer.await;
    shard.m().gateway_links.dec();
    tracing::info!(shard = shard.id, ?peer, %reason, "gateway link closed");
}

async fn process(shard: Rc<Shard>, link: Rc<Inbound>) {
    while let Some(job) = std::future::poll_fn(|cx| link.poll_next(cx)).await {
        let Some(result) = job.result else {
            continue; // poll_next hands out only jobs with a result
        };
        let m = shard.m();
        m.lookup.observe(job.queued.elapsed());
        let result = match result {
            Ok(entries) => Ok(shard.live_sessions(entries, Instant::now()).await),
            Err(e) => {
                m.lookup_errors.inc();
                Err(e)
            }
        };
        match std::str::from_utf8(&job.to) {
            Ok(to) => shard.route(&link, job.msg_id, to, &job.payload, result),
            Err(_) => link.ack(job.msg_id, AckStatus::Failed, "recipient is not UTF-8"),
        }
    }
}

impl Inbound {
    /// The next send to route: the first (within [`LOOKAHEAD`]) whose lookup is back and
    /// that no earlier waiting send to the same recipient precedes. `None` once the link is
    /// closed and every send was handed out.
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Job>> {
        // Registers for new sends first, so one pushed after the scan wakes this task.
        let _ = Pin::new(&mut self.signal.wait()).poll(cx);
        let mut jobs = self.jobs.borrow_mut();
        if jobs.is_empty() {
            return if self.reading.get() {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        }
        let mut waiting = self.waiting.borrow_mut();
        waiting.clear();
        for i in 0..jobs.len().min(LOOKAHEAD) {
            let job = &mut jobs[i];
            if job.result.is_none() {
                if let Poll::Ready(r) = Pin::new(&mut job.lookup).poll(cx) {
                    job.result = Some(r);
                }
            }
            if job.result.is_none() {
                waiting.push(i);
                continue;
            }
            // The common case (the front is ready) takes no comparison at all.
            let to = &jobs[i].to;
            if !waiting.iter().any(|&w| jobs[w].to == *to) {
                return Poll::Ready(jobs.remove(i));
            }
        }
        Poll::Pending
    }
}

fn on_frame(shard: &Rc<Shard>, link: &Inbound, greeted: &mut bool, f: Frame) -> Result<(), String> {
    match f {
        Frame::Hello { role, version, .. } if !*greeted => {
            if role != Role::Gateway || version != frame::PROTOCOL_VERSION {
                return Err(format!(
                    "peer is not a v{} gateway",
                    frame::PROTOCOL_VERSION
                ));
            }
            *greeted = true;
        }
        _ if !*greeted => return Err("first frame was not a gateway hello".into()),
        Frame::Send {
            msg_id,
            to,
            payload,
        } => {
            if link.jobs.borrow().len() >= MAX_QUEUED {
                link.ack(msg_id, AckStatus::Failed, "router overloaded");
                return Ok(());
            }
            let Ok(user) = std::str::from_utf8(&to) else {
                link.ack(msg_id, AckStatus::Failed, "recipient is not UTF-8");
                return Ok(());
            };
            let lookup = shard.registry.lookup(user);
            shard.m().sends.inc();
            link.jobs.borrow_mut().push_back(Job {
                queued: Instant::now(),
                msg_id,
                to,
                payload,
                lookup,
                result: None,
            });
            link.signal.raise();
        }
        Frame::Ping { nonce } => {
            let _ = link.outbox.push(|b| frame::encode_pong(b, nonce));
        }
        Frame::Presence { req_id, users } => {
            // Every lookup is queued now (one pipelined round trip for the lot); the answer
            // goes out when the last one is back, judged against gateway liveness.
            let lookups: Vec<_> = users.iter().map(|u| shard.registry.lookup(u)).collect();
            let (shard, outbox) = (shard.clone(), link.outbox.clone());
            runtime::rt::spawn(async move {
                let mut states = Vec::with_capacity(lookups.len());
                for lookup in lookups {
                    let state = match lookup.await {
                        Ok(entries) => {
                            let live = shard.live_sessions(entries, Instant::now()).await;
                            if live.is_empty() {
                                PresenceState::Offline
                            } else {
                                PresenceState::Online
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "presence lookup failed");
                            shard.m().lookup_errors.inc();
                            PresenceState::Unknown
                        }
                    };
                    states.push(state);
                }
                shard.m().presence.inc();
                let _ = outbox.push(|b| frame::encode_presence_result(b, req_id, &states));
            })
            .detach();
        }
        Frame::Pong { .. } => {}
        other => return Err(format!("unexpected frame from gateway: {other:?}")),
    }
    Ok(())
}
