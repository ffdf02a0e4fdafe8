//! Links from gateways. Sends arrive in order; each one's registry lookup is issued at once
//! (so many share one pipelined round trip), and the results are consumed in arrival order, so
//! messages from one connection to one recipient are forwarded in the order they were sent.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;
use registry::{RegistryFuture, SessionEntry};
use runtime::io::Stream;
use runtime::outbox::Outbox;
use runtime::signal::Signal;
use wire::frame::{self, AckStatus, Frame, Role};

use crate::shard::Shard;

/// Bytes of acks that may wait on one gateway link.
const LINK_QUEUE: usize = 32 * 1024 * 1024;
/// Sends awaiting their lookup on one link; beyond it sends are failed at once (backpressure).
const MAX_QUEUED: usize = 65_536;

type Lookup = RegistryFuture<Vec<SessionEntry>>;

struct Job {
    msg_id: u64,
    to: Bytes,
    payload: Bytes,
    lookup: Lookup,
}

/// One gateway's link into this shard.
pub struct Inbound {
    outbox: Rc<Outbox>,
    jobs: RefCell<VecDeque<Job>>,
    signal: Signal,
    reading: Cell<bool>,
}

impl Inbound {
    /// Queues the one ack of a send.
    pub fn ack(&self, msg_id: u64, status: AckStatus, reason: &str) {
        let _ = self
            .outbox
            .push(|b| frame::encode_ack(b, msg_id, status, reason));
    }
}

pub async fn serve(shard: Rc<Shard>, tcp: TcpStream) {
    let stream = Stream::new(tcp);
    let peer = stream.peer_addr();
    let outbox = Rc::new(Outbox::new(LINK_QUEUE, 1 << 20));
    let _ = outbox.push(|b| {
        frame::encode_hello(b, frame::PROTOCOL_VERSION, Role::Router, "router", shard.id)
    });
    let link = Rc::new(Inbound {
        outbox: outbox.clone(),
        jobs: RefCell::new(VecDeque::new()),
        signal: Signal::default(),
        reading: Cell::new(true),
    });
    let writer = {
        let (outbox, stream) = (outbox.clone(), stream.clone());
        glommio::spawn_local(async move {
            let r = outbox.run_writer(&stream).await;
            stream.shutdown();
            r
        })
    };
    let processor = glommio::spawn_local(process(shard.clone(), link.clone()));
    let reason = read_loop(&shard, &link, &stream).await;
    link.reading.set(false);
    link.signal.raise();
    processor.await;
    outbox.close();
    let _ = writer.await;
    tracing::info!(shard = shard.id, ?peer, %reason, "gateway link closed");
}

async fn process(shard: Rc<Shard>, link: Rc<Inbound>) {
    loop {
        let job = link.jobs.borrow_mut().pop_front();
        let Some(job) = job else {
            if !link.reading.get() {
                return;
            }
            link.signal.wait().await;
            continue;
        };
        let result = job.lookup.await;
        match std::str::from_utf8(&job.to) {
            Ok(to) => shard.route(&link, job.msg_id, to, &job.payload, result),
            Err(_) => link.ack(job.msg_id, AckStatus::Failed, "recipient is not UTF-8"),
        }
    }
}

async fn read_loop(shard: &Rc<Shard>, link: &Rc<Inbound>, stream: &Stream) -> String {
    let mut rx = BytesMut::with_capacity(64 * 1024);
    let mut greeted = false;
    loop {
        match stream.read_with(|b| rx.extend_from_slice(b)).await {
            Ok(0) => return "closed by gateway".into(),
            Err(e) => return format!("read error: {e}"),
            Ok(_) => {}
        }
        loop {
            let f = match frame::decode(&mut rx, frame::DEFAULT_MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return format!("bad frame: {e}"),
            };
            match f {
                Frame::Hello { role, version, .. } if !greeted => {
                    if role != Role::Gateway || version != frame::PROTOCOL_VERSION {
                        return format!("peer is not a v{} gateway", frame::PROTOCOL_VERSION);
                    }
                    greeted = true;
                }
                _ if !greeted => return "first frame was not a gateway hello".into(),
                Frame::Send {
                    msg_id,
                    to,
                    payload,
                } => {
                    if link.jobs.borrow().len() >= MAX_QUEUED {
                        link.ack(msg_id, AckStatus::Failed, "router overloaded");
                        continue;
                    }
                    let lookup: Lookup = match std::str::from_utf8(&to) {
                        Ok(user) => shard.registry.lookup(user),
                        Err(_) => {
                            link.ack(msg_id, AckStatus::Failed, "recipient is not UTF-8");
                            continue;
                        }
                    };
                    link.jobs.borrow_mut().push_back(Job {
                        msg_id,
                        to,
                        payload,
                        lookup,
                    });
                    link.signal.raise();
                }
                Frame::Ping { nonce } => {
                    let _ = link.outbox.push(|b| frame::encode_pong(b, nonce));
                }
                Frame::Pong { .. } => {}
                other => return format!("unexpected frame from gateway: {other:?}"),
            }
        }
    }
}
