//! One client connection: HTTP upgrade with JWT auth, session registration, then the WebSocket
//! read loop and the outbox writer, both in the connection's one task.
//!
//! Memory per idle connection is what this module is laid out for (docs/perf.md, "Idle
//! memory"): one task whose future is small (the handshake and the deregistration are boxed,
//! so their state lives only while they run), one `Rc<Conn>` of fixed size, and no buffer at
//! all while nothing is pending: reads go into the shard's scratch buffer and are decoded there
//! in place ([`wire::ws::Decoder`]); only the bytes of an incomplete frame are copied into the
//! connection's `rx`, which is freed once they are consumed; the outbox frees its buffer once
//! it is written out.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use registry::SessionEntry;
use runtime::io::Stream;
use runtime::net::Listener;
use runtime::outbox::{Outbox, PushError};
use runtime::park::Parkable;
use runtime::rt;
use serde_json::value::RawValue;
use wire::client::{self as cj, ClientMessage, ErrorCode};
use wire::frame::AckStatus;
use wire::ws::{close, Decoder, Message};

use crate::http;
use crate::limits::TokenBucket;
use crate::metrics::{DropReason, RegistryOp};
use crate::shard::Shard;
use crate::tls::Transport;
use crate::ws;

/// A client must finish its HTTP upgrade request within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp`/`nbf`.
const JWT_LEEWAY_SECS: u64 = 30;
/// Write buffers kept once drained: none, so an idle connection holds no buffer (a batch after
/// a quiet spell allocates one afresh; under load the writer keeps swapping the same two).
const KEEP_CAPACITY: usize = 0;
/// Shortest reconnect hint given to a shed connection.
const SHED_MIN_MS: u64 = 1000;
/// Spread of the hints above the shortest.
const SHED_JITTER_MS: u64 = 4000;

/// A live client session on this shard. Fixed size, no buffer held while idle; the rest of
/// its registry entry (instance, epoch, shard, address) is the shard's ([`Conn::entry`]).
pub struct Conn {
    pub session: u64,
    pub user: Box<str>,
    outbox: Outbox,
    /// The socket: live on the shard's event loop, or parked (only its descriptor, in the
    /// shard's epoll set) while the connection is idle.
    stream: Parkable,
    /// The bytes of an incomplete frame (unallocated between frames).
    rx: Cell<Vec<u8>>,
    /// WebSocket decoding state: a fragmented message in progress, if any. (`Cell`s rather
    /// than `RefCell`s here and below: the connection is sized to fit 224 bytes.)
    ws: Cell<Decoder>,
    /// The pong for the latest ping that found the send queue full (a ping flood); it goes
    /// out with the next read or keep-alive ping, older ones are dropped (RFC 6455 5.5.3).
    held_pong: Cell<Option<Box<HeldPong>>>,
    seq: Cell<u64>,
    bucket: Cell<TokenBucket>,
    pub last_rx: Cell<Instant>,
    uplink: u32,
    closing: Cell<bool>,
    /// An `/echo` connection: messages come back as they are; not a session.
    echo: bool,
    park: Cell<ParkState>,
}

/// A pong's payload kept for later (a control frame's payload is at most 125 bytes), boxed
/// behind a thin pointer: 8 bytes less in `Conn` than a `Box<[u8]>`.
struct HeldPong {
    len: u8,
    buf: [u8; 125],
}

impl HeldPong {
    fn new(payload: &[u8]) -> Self {
        // The decoder refuses longer control frames; cut rather than trust it.
        let len = payload.len().min(125);
        let mut buf = [0; 125];
        buf[..len].copy_from_slice(&payload[..len]);
        HeldPong {
            len: len as u8,
            buf,
        }
    }

    fn payload(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// Where a connection stands with parking: the shard's park clock ([`Conn::park_tick`], every
/// `--park-after-ms`) moves it from `Busy` to `Quiet` to `Wanted`, and any traffic back to
/// `Busy`; its task parks it once `Wanted` and nothing is in flight ([`try_park`]), and
/// unparks it on its next wake-up, whatever woke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParkState {
    /// Parking is off, or the connection is not one the hand-written driver runs (TLS, echo).
    Never,
    Busy,
    /// No traffic since the last tick.
    Quiet,
    /// No traffic for a whole tick: the task is asked to park.
    Wanted,
    Parked,
}

impl Conn {
    /// One tick of the shard's park clock: a connection with no traffic in either direction
    /// over a whole tick is asked to park (its task is woken to do it).
    pub fn park_tick(&self) {
        match self.park.get() {
            ParkState::Busy => self.park.set(ParkState::Quiet),
            ParkState::Quiet => {
                self.park.set(ParkState::Wanted);
                self.outbox.wake();
            }
            ParkState::Never | ParkState::Wanted | ParkState::Parked => {}
        }
    }

    /// Whether the bytes of an incomplete frame are buffered.
    fn has_partial_frame(&self) -> bool {
        let rx = self.rx.take();
        let partial = !rx.is_empty();
        self.rx.set(rx);
        partial
    }

    /// Wakes the connection's task (a parked socket became readable: the task unparks it).
    pub fn wake(&self) {
        self.outbox.wake();
    }

    /// Traffic: the park clock starts over.
    fn active(&self) {
        if matches!(self.park.get(), ParkState::Quiet | ParkState::Wanted) {
            self.park.set(ParkState::Busy);
        }
    }

    /// This session's registry entry.
    pub fn entry(&self, shard: &Shard) -> SessionEntry {
        SessionEntry {
            user: self.user.to_string(),
            session: self.session,
            instance: shard.cfg.instance_id.clone(),
            epoch: shard.cfg.epoch,
            shard: shard.id,
            addr: shard.advertise.clone(),
        }
    }

    /// Queues a text frame; false if the connection is closing or its queue is full (then it
    /// is dropped as a slow consumer: memory stays bounded).
    pub fn send_text(&self, shard: &Shard, payload: &[u8]) -> bool {
        if self.closing.get() {
            return false;
        }
        match self.outbox.push(|b| ws::encode_text_frame(b, payload)) {
            Ok(()) => true,
            Err(PushError::Full) => {
                tracing::info!(
                    session = self.session,
                    "slow consumer: send queue full, disconnecting"
                );
                shard.m().drop(DropReason::SlowConsumer);
                self.close_slow_consumer();
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Sends the ack of one client send.
    pub fn send_ack(&self, shard: &Shard, id: &RawValue, status: AckStatus, reason: Option<&str>) {
        let mut s = shard.scratch.borrow_mut();
        s.clear();
        cj::encode_ack(&mut s, id, status, reason);
        shard.m().ack(status);
        self.send_text(shard, &s);
    }

    /// Sends an `error` reply.
    pub fn send_error(&self, shard: &Shard, id: Option<&RawValue>, code: ErrorCode, message: &str) {
        let mut s = shard.scratch.borrow_mut();
        s.clear();
        cj::encode_error(&mut s, id, code, message);
        shard.m().client_errors.inc();
        self.send_text(shard, &s);
    }

    /// Queues a ping (keeps NAT mappings alive and detects dead phones).
    pub fn send_ping(&self, shard: &Shard) {
        if !self.closing.get() {
            // A pong held back while the queue was full (ping flood) goes out now, so a
            // client that flooded and then fell silent still gets its last pong.
            self.flush_pong();
            // Only with nothing queued: the ping must not overtake a queued frame's bytes, nor
            // a queued frame the rest of a half-written ping.
            if self.park.get() == ParkState::Parked
                && self.outbox.queued() == 0
                && self.ping_parked(shard)
            {
                return;
            }
            let _ = self.outbox.push(|b| ws::encode_frame(b, 0x89, b""));
        }
    }

    /// Writes the keep-alive ping straight to a parked socket, so a round of pings does not
    /// unpark (and later re-park) every idle connection; its pong is read by
    /// [`Conn::pong_while_parked`]. False if the socket would not take it: the caller queues
    /// it the usual way (which unparks, and finds any error).
    fn ping_parked(&self, shard: &Shard) -> bool {
        const PING: [u8; 2] = [0x89, 0x00];
        match self.stream.send_parked(&PING) {
            Ok(2) => {}
            // Half a frame went out: the rest follows through the outbox (which unparks).
            Ok(1) => {
                let _ = self.outbox.push(|b| b.extend_from_slice(&PING[1..]));
            }
            _ => return false,
        }
        shard.m().parked_pings.inc();
        true
    }

    /// A parked socket became readable: if all it holds is an empty pong (the answer to a
    /// ping written while parked), reads it as any input is read (the idle clock restarts)
    /// and stays parked. False for anything else: the caller wakes the task, which unparks.
    pub fn pong_while_parked(&self, shard: &Shard) -> bool {
        if self.park.get() != ParkState::Parked {
            return false;
        }
        let mut buf = [0u8; 8];
        match self.stream.peek_parked(&mut buf) {
            Ok(6) if wire::ws::is_empty_pong(&buf[..6]) => {}
            _ => return false,
        }
        if !matches!(self.stream.discard_parked(6), Ok(6)) {
            return false;
        }
        self.last_rx.set(Instant::now());
        shard.m().parked_pongs.inc();
        true
    }

    /// Takes a token from the send rate limit.
    /// `now`: time since the shard started ([`Shard::started`]).
    fn take_token(&self, now: Duration, rate: u32, burst: u32) -> bool {
        let mut b = self.bucket.get();
        let ok = b.take(rate, burst, now);
        self.bucket.set(b);
        ok
    }

    /// Answers a ping; with the queue full only the latest pong is kept for later.
    fn send_pong(&self, payload: &[u8]) {
        if self.closing.get() {
            return;
        }
        self.held_pong.take();
        if let Err(PushError::Full) = self.outbox.push(|b| ws::encode_frame(b, 0x8A, payload)) {
            self.held_pong.set(Some(Box::new(HeldPong::new(payload))));
        }
    }

    /// Sends the held pong if the queue has room now.
    fn flush_pong(&self) {
        if let Some(p) = self.held_pong.take() {
            self.send_pong(p.payload());
        }
    }

    /// A client that stopped reading: what is queued for it is dropped, it gets close code
    /// 1008 ("slow consumer") after whatever batch is already on its way, and the socket is
    /// shut 2 s later whatever it does, so its memory stays bounded by `--client-queue`.
    fn close_slow_consumer(&self) {
        if self.closing.replace(true) {
            return;
        }
        self.outbox
            .replace_and_close(|b| ws::encode_close(b, close::POLICY, "slow consumer"));
        // A parked socket has nothing in flight: its task unparks it for the close frame and
        // bounds the flush by FLUSH_TIMEOUT itself.
        if let Some(stream) = self.stream.stream() {
            rt::spawn(async move {
                rt::sleep(Duration::from_secs(2)).await;
                stream.shutdown();
            })
            .detach();
        }
    }

    /// Drops the connection now, without a close handshake.
    pub fn abort(&self) {
        self.closing.set(true);
        self.outbox.close();
        self.stream.shutdown();
    }

    /// Asks the client to reconnect elsewhere after `wait_ms` (gateway draining): close code
    /// 1012 (service restart) with reason `reconnect_after_ms=N`.
    pub fn close_for_restart(&self, wait_ms: u64) {
        self.close(close::RESTART, &format!("reconnect_after_ms={wait_ms}"));
    }

    /// Sends a close frame with `code` after what is queued and ends the connection once it
    /// is written (the close frame goes out even over the queue limit).
    fn close(&self, code: u16, reason: &str) {
        if self.closing.replace(true) {
            return;
        }
        self.held_pong.take();
        self.outbox
            .push_and_close(|b| ws::encode_close(b, code, reason));
    }
}

/// Accepts clients on this shard's share of the client port.
pub async fn accept_loop(shard: Rc<Shard>, listener: Listener) {
    rt::spawn(heap_collect_loop()).detach();
    let mut sized = false;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let task = serve(shard.clone(), stream);
                if !std::mem::replace(&mut sized, true) {
                    // The state every connection's task keeps (docs/perf.md, idle memory).
                    let bytes = std::mem::size_of_val(&task);
                    tracing::debug!(shard = shard.id, bytes, "connection task future");
                }
                rt::spawn(task).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                rt::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How often a shard hands the allocator's wholly free pages back to the OS.
const HEAP_COLLECT_EVERY: Duration = Duration::from_secs(1);

/// mimalloc returns a free page to the OS only when a later allocation or free on the same
/// thread finds its purge delay expired, so the pages a connect storm's handshakes freed stay
/// resident once the shard is idle: measured at about 1.4 KB per idle connection (docs/perf.md,
/// "Idle memory per connection"). A periodic collect on each shard thread returns them; it
/// walks only this thread's heap (microseconds) and frees nothing in use.
async fn heap_collect_loop() {
    loop {
        rt::sleep(HEAP_COLLECT_EVERY).await;
        // SAFETY: a plain call into the linked mimalloc; `false` = no forced abandonment.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// Turns a connection away with a retry hint a browser can read: the upgrade completes and
/// the socket closes at once with `code` (1013 try again later, or 1012 while draining) and
/// reason `reconnect_after_ms=N`, N jittered over 1-5 s so a storm of reconnects spreads out.
async fn shed(shard: &Shard, stream: &Transport, key: &str, code: u16, why: &str) {
    shard.m().shed.inc();
    let wait_ms = SHED_MIN_MS + shard.new_session_id() % SHED_JITTER_MS;
    tracing::debug!(why, wait_ms, "connection shed");
    let mut out = Vec::with_capacity(256);
    http::response_switching(&mut out, key);
    let mut frame = BytesMut::with_capacity(64);
    ws::encode_close(&mut frame, code, &format!("reconnect_after_ms={wait_ms}"));
    out.extend_from_slice(&frame);
    let _ = rt::timeout(HANDSHAKE_TIMEOUT, stream.write_all(&out)).await;
}

async fn respond(
    stream: &Transport,
    status: u16,
    reason: &str,
    body: &str,
    extra: &[(&str, &str)],
) {
    let mut out = Vec::with_capacity(256);
    http::response(
        &mut out,
        status,
        reason,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        extra,
    );
    let _ = rt::timeout(HANDSHAKE_TIMEOUT, stream.write_all(&out)).await;
}

/// Reads and answers the HTTP request; for an authorised upgrade, registers the session and
/// returns the live connection and any bytes that came after the request.
async fn handshake(shard: &Rc<Shard>, stream: &Transport) -> Option<(Rc<Conn>, BytesMut)> {
    let mut head = BytesMut::new();
    let parsed = rt::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let n = stream
                .read_with(None, |b| head.extend_from_slice(b))
                .await
                .ok()?;
            if n == 0 {
                return None;
            }
            match http::parse_request(&head, http::DEFAULT_MAX_HEAD) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    })
    .await
    .flatten();
    let (req, consumed) = match parsed {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            let (status, reason) = match e {
                http::HttpError::TooLarge => (431, "Request Header Fields Too Large"),
                _ => (400, "Bad Request"),
            };
            respond(stream, status, reason, &format!("{e}\n"), &[]).await;
            return None;
        }
        None => return None,
    };
    if req.method != http::Method::Get {
        respond(
            stream,
            405,
            "Method Not Allowed",
            "GET only\n",
            &[("Allow", "GET")],
        )
        .await;
        return None;
    }
    match req.path.as_str() {
        "/healthz" if shard.draining.get() => {
            respond(stream, 503, "Service Unavailable", "draining\n", &[]).await;
            return None;
        }
        "/healthz" => {
            respond(stream, 200, "OK", "ok\n", &[]).await;
            return None;
        }
        "/ws" => {}
        "/echo" if shard.cfg.echo_endpoint => {}
        "/" | "/demo" | "/dev/token" | "/dev/online" if shard.cfg.dev_mode => {
            let out = crate::dev::handle(shard, &req).await;
            let _ = rt::timeout(HANDSHAKE_TIMEOUT, stream.write_all(&out)).await;
            return None;
        }
        _ => {
            respond(stream, 404, "Not Found", "not found\n", &[]).await;
            return None;
        }
    }
    // The echo endpoint (conformance testing only, off by default) skips auth and the
    // registry but runs the very same WebSocket stack, limits and close handling.
    let echo = req.path == "/echo";
    let user = if echo {
        "echo".to_string()
    } else {
        let Some(token) = req.token.as_deref() else {
            shard.m().auth_failures.inc();
            respond(
                stream,
                401,
                "Unauthorized",
                "missing token\n",
                &[("WWW-Authenticate", "Bearer")],
            )
            .await;
            return None;
        };
        let claims = match auth::verify_hs256(
            &shard.cfg.jwt_secret,
            token,
            runtime::clock::unix_secs(),
            JWT_LEEWAY_SECS,
        ) {
            Ok(c) => c,
            Err(e) => {
                shard.m().auth_failures.inc();
                let body = format!("invalid token: {e}\n");
                respond(
                    stream,
                    401,
                    "Unauthorized",
                    &body,
                    &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
                )
                .await;
                return None;
            }
        };
        if !wire::user::valid_user_id(&claims.sub) {
            shard.m().auth_failures.inc();
            respond(
                stream,
                401,
                "Unauthorized",
                "invalid token: bad subject\n",
                &[],
            )
            .await;
            return None;
        }
        claims.sub
    };
    let (Some(key), true, true) = (req.websocket_key.as_deref(), req.is_upgrade, req.version_ok)
    else {
        respond(
            stream,
            426,
            "Upgrade Required",
            "WebSocket upgrade (version 13) required\n",
            &[("Sec-WebSocket-Version", "13")],
        )
        .await;
        return None;
    };

    if shard.draining.get() {
        shed(shard, stream, key, close::RESTART, "draining").await;
        return None;
    }
    if shard.sessions.borrow().len() >= shard.cfg.max_connections_per_shard {
        shard.m().drop(DropReason::Capacity);
        shed(
            shard,
            stream,
            key,
            close::AGAIN,
            "at --max-connections-per-shard",
        )
        .await;
        return None;
    }
    if shard.handshakes.get() > shard.cfg.max_handshakes_per_shard {
        shed(shard, stream, key, close::AGAIN, "handshake backlog full").await;
        return None;
    }
    if !echo && !shard.live.beating() {
        shed(shard, stream, key, close::AGAIN, "no liveness record yet").await;
        return None;
    }
    let session = shard.new_session_id();
    let entry = SessionEntry {
        user,
        session,
        instance: shard.cfg.instance_id.clone(),
        epoch: shard.cfg.epoch,
        shard: shard.id,
        addr: shard.advertise.clone(),
    };
    let started = Instant::now();
    let registered = if echo {
        Ok(())
    } else {
        let r = shard.registry.register(&entry, shard.cfg.session_ttl);
        shard
            .m()
            .registry_cmds(RegistryOp::Register, crate::upkeep::REGISTER_CMDS);
        r.await
    };
    shard.m().registry_register.observe(started.elapsed());
    if let Err(e) = registered {
        shard.m().register_failures.inc();
        tracing::warn!(error = %e, user = %entry.user, "session registration failed");
        shed(shard, stream, key, close::AGAIN, "registry unavailable").await;
        return None;
    }

    let outbox = Outbox::for_client(shard.cfg.client_queue, KEEP_CAPACITY);
    let mut resp = Vec::with_capacity(200);
    http::response_switching(&mut resp, key);
    let _ = outbox.push(|b| b.extend_from_slice(&resp));
    let session_hex = format!("{session:016x}");
    {
        let mut s = shard.scratch.borrow_mut();
        s.clear();
        cj::encode_welcome(&mut s, &entry.user, &session_hex, &shard.cfg.instance_id);
        if !echo {
            let _ = outbox.push(|b| ws::encode_text_frame(b, &s));
        }
    }
    // Usually empty: a client rarely sends frames before it has seen the upgrade response.
    let early = BytesMut::from(&head[consumed..]);
    let uplink = ((session as usize) % shard.uplinks.len().max(1)) as u32;
    let conn = Rc::new(Conn {
        session,
        user: entry.user.into_boxed_str(),
        outbox,
        stream: Parkable::new(stream.stream.clone()),
        rx: Cell::new(Vec::new()),
        ws: Cell::new(Decoder::default()),
        held_pong: Cell::new(None),
        seq: Cell::new(0),
        uplink,
        last_rx: Cell::new(Instant::now()),
        closing: Cell::new(false),
        echo,
        bucket: Cell::new(TokenBucket::new(
            shard.cfg.msg_burst,
            shard.started.elapsed(),
        )),
        park: Cell::new(if echo || stream.is_tls() || shard.park.is_none() {
            ParkState::Never
        } else {
            ParkState::Busy
        }),
    });
    if echo {
        return Some((conn, early));
    }
    shard.sessions.borrow_mut().insert(session, conn.clone());
    shard.m().connects.inc();
    shard.m().connections.inc();
    tracing::debug!(session, user = %conn.user, "client connected");
    Some((conn, early))
}

async fn serve(shard: Rc<Shard>, stream: Stream) {
    // Boxed so that the upgrade's state (request buffer, parsed head, timers, early bytes) is
    // freed when it is done instead of sizing every connection's long-lived task.
    let Some((conn, tls)) = Box::pin(open(&shard, stream)).await else {
        return;
    };
    match tls {
        // TLS (rare: the load balancer usually ends it) keeps the simple async form, boxed so
        // its larger state does not size plain connections.
        Some(transport) => Box::pin(run_tls(&shard, &conn, &transport)).await,
        None => {
            let mut d = Driver {
                shard: &shard,
                conn: &conn,
                out: BytesMut::new(),
                read_done: false,
                write_done: false,
            };
            (&mut d).await;
            ended(&shard, &conn);
            // Let the writer flush a close frame, but never wait on a peer that stopped
            // reading.
            if !d.write_done && Box::pin(rt::timeout(FLUSH_TIMEOUT, &mut d)).await.is_none() {
                conn.stream.shutdown();
            }
        }
    }
    if conn.echo {
        return;
    }
    let session = conn.session;
    // Boxed, like the upgrade: the registry call's state must not size the idle task.
    Box::pin(async {
        let entry = conn.entry(&shard);
        let unregister = shard.registry.unregister(&entry);
        shard.m().registry_cmds(RegistryOp::Unregister, 1);
        if let Err(e) = unregister.await {
            tracing::warn!(error = %e, session, "session cleanup failed; its TTL will expire it");
        }
    })
    .await;
    tracing::debug!(session, "client disconnected");
}

/// The upgrade of a new connection: the TLS session if configured, the handshake, the bytes
/// that came with it. Returns the connection and, for TLS, its transport; a plain connection
/// keeps no handle on the socket but its `Conn`'s, so that it can park.
async fn open(shard: &Rc<Shard>, stream: Stream) -> Option<(Rc<Conn>, Option<Transport>)> {
    let stream = match Transport::new(stream, shard.cfg.tls.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "TLS session setup failed");
            return None;
        }
    };
    shard.handshakes.set(shard.handshakes.get() + 1);
    let conn = handshake(shard, &stream).await;
    shard.handshakes.set(shard.handshakes.get() - 1);
    let (conn, mut early) = conn?;
    if !early.is_empty() {
        // Bytes that arrived with the upgrade request, before the first read.
        on_bytes(shard, &conn, &mut early);
    }
    Some((conn, stream.is_tls().then_some(stream)))
}

/// How long a closing connection may take to write out what is queued (a close frame).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Reads handled in one poll before the task yields to the others on the shard.
const READS_PER_POLL: usize = 8;

/// The reader stopped: the session is gone from the shard; the writer may still flush.
fn ended(shard: &Shard, conn: &Conn) {
    conn.closing.set(true);
    conn.outbox.close();
    if !conn.echo {
        shard.sessions.borrow_mut().remove(&conn.session);
        shard.m().connections.dec();
    }
}

/// A plain connection's reader and writer as one hand-written future: it holds no future per
/// direction (only references, the batch being written and two flags), so the connection's
/// task stays small. Resolves when the reader is done (peer closed, error, or the connection
/// closing) or the writer is; once `read_done`, polling it again only flushes.
struct Driver<'a> {
    shard: &'a Shard,
    conn: &'a Rc<Conn>,
    /// The batch being written; unallocated when nothing is.
    out: BytesMut,
    read_done: bool,
    /// The outbox is closed and written out, or writing failed; the socket is shut.
    write_done: bool,
}

impl Future for Driver<'_> {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let (shard, conn) = (this.shard, this.conn);
        let stream = match live_stream(shard, conn) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, session = conn.session, "unpark failed");
                conn.outbox.fail();
                this.out = BytesMut::new();
                this.read_done = true;
                this.write_done = true;
                return Poll::Ready(());
            }
        };
        let was_reading = !this.read_done;
        let mut reads = 0;
        while !this.read_done {
            if conn.outbox.is_closed() {
                this.read_done = true;
                break;
            }
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            reads += 1;
            match stream.poll_read_with(cx, &mut |b| on_bytes(shard, conn, b)) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => this.read_done = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        loop {
            if this.out.is_empty() {
                conn.outbox.take_into(&mut this.out);
                if this.out.is_empty() {
                    if conn.outbox.is_closed() {
                        stream.shutdown();
                        this.write_done = true;
                        return Poll::Ready(());
                    }
                    match std::pin::pin!(conn.outbox.wait()).poll(cx) {
                        Poll::Ready(()) => continue,
                        Poll::Pending => break,
                    }
                }
            }
            match stream.poll_write(cx, &this.out) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    conn.active();
                    this.out.advance(n);
                    if this.out.is_empty() {
                        // Keep the buffer for the next swap only while more is queued, so an
                        // idle connection holds none.
                        if conn.outbox.queued() == 0 {
                            this.out = BytesMut::new();
                        } else {
                            this.out.clear();
                        }
                    }
                }
                Poll::Ready(r) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "client write failed");
                    }
                    conn.outbox.fail();
                    stream.shutdown();
                    this.out = BytesMut::new();
                    this.write_done = true;
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        if was_reading && this.read_done {
            return Poll::Ready(());
        }
        if conn.park.get() == ParkState::Wanted && !this.read_done && reads < READS_PER_POLL {
            drop(stream);
            try_park(shard, conn, &this.out, cx);
        }
        Poll::Pending
    }
}

/// The connection's live stream, unparking it first if it is parked (whatever woke the task:
/// input, output to send, a close).
fn live_stream(shard: &Shard, conn: &Conn) -> std::io::Result<Stream> {
    if conn.park.get() == ParkState::Parked {
        conn.park.set(ParkState::Busy);
        shard.m().parked.dec();
        shard.m().unparks.inc();
        if let Some(set) = &shard.park {
            conn.stream.unpark(set)?;
        }
    }
    conn.stream
        .stream()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "socket lost"))
}

/// Parks a connection asked to if nothing is in flight: no batch being written, nothing queued,
/// no partial frame or fragmented message, no held pong, not closing. The task's waker stays in
/// the outbox's signal (the write side's last poll left it there), so a push, a close, or the
/// park set reporting the socket readable ([`Conn::wake`]) wakes it, and it unparks.
fn try_park(shard: &Shard, conn: &Conn, out: &BytesMut, cx: &mut std::task::Context<'_>) {
    let Some(set) = &shard.park else {
        return;
    };
    let held_pong = conn.held_pong.take();
    let pong = held_pong.is_some();
    conn.held_pong.set(held_pong);
    let dec = conn.ws.take();
    let in_message = dec.in_message();
    conn.ws.set(dec);
    if !out.is_empty()
        || conn.outbox.queued() > 0
        || conn.outbox.is_closed()
        || conn.closing.get()
        || conn.has_partial_frame()
        || in_message
        || pong
    {
        return;
    }
    match conn.stream.park(set, conn.session) {
        Ok(true) => {
            conn.park.set(ParkState::Parked);
            shard.m().parked.inc();
            shard.m().parks.inc();
        }
        // Another handle shares the stream for now: try again after the next quiet tick.
        Ok(false) => conn.park.set(ParkState::Busy),
        Err(e) => {
            tracing::debug!(error = %e, session = conn.session, "park failed");
            conn.park.set(ParkState::Busy);
            if conn.stream.stream().is_none() {
                // The socket is gone: the next poll ends the connection.
                cx.waker().wake_by_ref();
            }
        }
    }
}

/// [`Driver`]'s job for a TLS connection, in plain async: reader and writer polled together.
async fn run_tls(shard: &Shard, conn: &Rc<Conn>, stream: &Transport) {
    let mut writer = std::pin::pin!(async {
        if let Err(e) = stream.run_writer(&conn.outbox).await {
            tracing::debug!(error = %e, "client write failed");
        }
        stream.stream.shutdown();
    });
    let reader = async {
        while !conn.outbox.is_closed() {
            let read = stream
                .read_with(Some(&conn.outbox), |b| on_bytes(shard, conn, b))
                .await;
            if matches!(read, Ok(0) | Err(_)) {
                break;
            }
        }
    };
    let writer_done = futures_lite::future::or(
        async {
            reader.await;
            false
        },
        async {
            writer.as_mut().await;
            true
        },
    )
    .await;
    ended(shard, conn);
    if !writer_done && rt::timeout(FLUSH_TIMEOUT, writer.as_mut()).await.is_none() {
        conn.stream.shutdown();
    }
}

/// Bytes read from the client (in the shard's read scratch, or early bytes): decodes the
/// complete frames where they lie and keeps only an incomplete last frame, in `conn.rx`.
fn on_bytes(shard: &Shard, conn: &Rc<Conn>, data: &mut [u8]) {
    conn.last_rx.set(Instant::now());
    conn.active();
    if conn.closing.get() {
        return;
    }
    conn.flush_pong();
    // Out of the cell while decoding (only this function uses it), so the message handlers
    // may use the connection freely.
    let mut rx = conn.rx.take();
    if rx.is_empty() {
        let Some(used) = decode(shard, conn, data) else {
            return;
        };
        if used < data.len() {
            rx.extend_from_slice(&data[used..]);
            conn.rx.set(rx);
        }
    } else {
        // The frame started in an earlier read: append and decode from the buffer.
        rx.extend_from_slice(data);
        let Some(used) = decode(shard, conn, &mut rx) else {
            return;
        };
        if used < rx.len() {
            rx.drain(..used);
            conn.rx.set(rx);
        }
    }
}

/// Runs the decoder over `buf` and handles each message; the bytes consumed, or `None` once
/// the connection is closing (the rest of the input is then moot).
fn decode(shard: &Shard, conn: &Rc<Conn>, buf: &mut [u8]) -> Option<usize> {
    let mut dec = conn.ws.take();
    let max = shard.cfg.max_ws_message;
    let res = dec.decode(buf, max, &mut |m| on_message(shard, conn, m));
    conn.ws.set(dec);
    match res {
        Err(e) => {
            tracing::debug!(session = conn.session, error = %e, "websocket protocol error");
            conn.close(e.close_code(), &e.to_string());
            None
        }
        Ok(_) if conn.closing.get() => None,
        Ok(used) => Some(used),
    }
}

fn on_message(shard: &Shard, conn: &Rc<Conn>, m: Message<'_>) {
    if conn.closing.get() {
        return;
    }
    match m {
        Message::Text(text) if conn.echo => {
            conn.send_text(shard, text.as_bytes());
        }
        Message::Binary(data) if conn.echo => {
            let _ = conn.outbox.push(|b| ws::encode_frame(b, 0x82, data));
        }
        Message::Text(text) => handle_text(shard, conn, text),
        Message::Binary(_) => conn.send_error(
            shard,
            None,
            ErrorCode::BinaryUnsupported,
            "binary frames are not supported; send JSON text frames",
        ),
        Message::Ping(p) => conn.send_pong(p),
        Message::Pong(_) => {}
        Message::Close(code, _) => {
            // Echo the peer's code (RFC 6455 5.5.1), then end once it is written.
            conn.closing.set(true);
            conn.held_pong.take();
            conn.outbox.push_and_close(|b| match code {
                Some(c) => ws::encode_close(b, c, ""),
                None => ws::encode_frame(b, 0x88, b""),
            });
        }
    }
}

fn handle_text(shard: &Shard, conn: &Rc<Conn>, text: &str) {
    let msg = match cj::parse_client(text, shard.cfg.max_body) {
        Ok(m) => m,
        Err(e) => return conn.send_error(shard, e.id, e.code, &e.message),
    };
    match msg {
        ClientMessage::Presence { id, users } => {
            let (rate, burst) = (shard.cfg.msg_rate, shard.cfg.msg_burst);
            if !conn.take_token(shard.started.elapsed(), rate, burst) {
                shard.m().rate_limited.inc();
                let msg = format!("over {rate} requests per second; slow down");
                return conn.send_error(shard, Some(id), ErrorCode::RateLimited, &msg);
            }
            let Some(link) = shard.pick_uplink(conn.uplink as usize) else {
                return conn.send_error(
                    shard,
                    Some(id),
                    ErrorCode::Internal,
                    "no router available",
                );
            };
            let req_id = shard.peek_msg_id();
            if link.presence(req_id, &users) {
                let tracked = shard.track_presence(conn, id, &users, link.idx);
                debug_assert_eq!(tracked, req_id);
            } else {
                conn.send_error(
                    shard,
                    Some(id),
                    ErrorCode::Internal,
                    "router link congested",
                );
            }
        }
        ClientMessage::Send { id, to, body } => {
            if shard.draining.get() {
                let why = "gateway draining; reconnect and resend";
                return conn.send_ack(shard, id, AckStatus::Failed, Some(why));
            }
            let (rate, burst) = (shard.cfg.msg_rate, shard.cfg.msg_burst);
            if !conn.take_token(shard.started.elapsed(), rate, burst) {
                shard.m().rate_limited.inc();
                let msg = format!("over {rate} messages per second; slow down");
                return conn.send_error(shard, Some(id), ErrorCode::RateLimited, &msg);
            }
            shard.m().messages_in.inc();
            let Some(link) = shard.pick_uplink_for(conn.session, conn.uplink as usize) else {
                return conn.send_ack(shard, id, AckStatus::Failed, Some("no router available"));
            };
            let seq = conn.seq.get() + 1;
            conn.seq.set(seq);
            let mut sid = [0u8; 40];
            let sid = fmt_server_id(&mut sid, conn.session, seq);
            let msg_id = shard.peek_msg_id();
            let queued = {
                let mut s = shard.scratch.borrow_mut();
                s.clear();
                cj::encode_message(&mut s, sid, &conn.user, body, runtime::clock::unix_ms());
                link.send(msg_id, to, &s)
            };
            if queued {
                let tracked = shard.track(conn, id, link.idx);
                debug_assert_eq!(tracked, msg_id);
            } else {
                conn.send_ack(shard, id, AckStatus::Failed, Some("router link congested"));
            }
        }
    }
}

/// `<session hex>-<seq>` without allocating.
fn fmt_server_id(buf: &mut [u8; 40], session: u64, seq: u64) -> &str {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{session:016x}-{seq}");
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `size_of` of what an async fn returns, without calling it.
    fn future_size<A, B, R, F: Fn(A, B) -> R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    /// The per-connection layout docs/perf.md accounts for: an `Rc<Conn>` (16 bytes of
    /// counts + the struct) fits mimalloc's 224-byte size class, and the task's future stays
    /// small: at most 152 bytes, so that tokio's task cell (about 100 bytes of its own around
    /// the future, 128-byte aligned) stays within 256 bytes instead of 384 (debug builds lay
    /// futures out larger than release ones).
    #[test]
    fn per_connection_state_stays_small() {
        let conn = std::mem::size_of::<Conn>();
        assert!(16 + conn <= 224, "Conn is {conn} bytes");
        let task = future_size(&serve);
        assert!(task <= 152, "connection future is {task} bytes");
    }
}
