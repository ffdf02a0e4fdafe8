//! One client connection: HTTP upgrade with JWT auth, session registration, then the WebSocket
//! read loop. Each connection has two tasks: this reader and the outbox writer.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use registry::SessionEntry;
use runtime::io::Stream;
use runtime::net::Listener;
use runtime::outbox::{Outbox, PushError};
use runtime::rt;
use serde_json::value::RawValue;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};
use tungstenite::{Message, WebSocket};
use wire::client::{self as cj, ClientMessage, ErrorCode};
use wire::frame::AckStatus;

use crate::http;
use crate::limits::TokenBucket;
use crate::metrics::{DropReason, RegistryOp};
use crate::shard::Shard;
use crate::tls::Transport;
use crate::ws::{self, Io};

/// A client must finish its HTTP upgrade request within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp`/`nbf`.
const JWT_LEEWAY_SECS: u64 = 30;
/// Buffers above this are released once drained, so idle connections hold no memory.
const KEEP_CAPACITY: usize = 16 * 1024;
/// Shortest reconnect hint given to a shed connection.
const SHED_MIN_MS: u64 = 1000;
/// Spread of the hints above the shortest.
const SHED_JITTER_MS: u64 = 4000;

/// A live client session on this shard.
pub struct Conn {
    pub session: u64,
    pub entry: SessionEntry,
    ws: RefCell<WebSocket<Io>>,
    outbox: Rc<Outbox>,
    stream: Stream,
    seq: Cell<u64>,
    uplink: usize,
    bucket: RefCell<TokenBucket>,
    pub last_rx: Cell<Instant>,
    closing: Cell<bool>,
    /// An `/echo` connection: messages come back as they are; not a session.
    echo: bool,
}

impl Conn {
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
    pub fn send_ping(&self) {
        if !self.closing.get() {
            // A pong held back while the queue was full (ping flood) goes out now, so a
            // client that flooded and then fell silent still gets its last pong.
            let _ = self.ws.borrow_mut().flush();
            let _ = self.outbox.push(|b| ws::encode_frame(b, 0x89, b""));
        }
    }

    /// A client that stopped reading: what is queued for it is dropped, it gets close code
    /// 1008 ("slow consumer") after whatever batch is already on its way, and the socket is
    /// shut 2 s later whatever it does, so its memory stays bounded by `--client-queue`.
    fn close_slow_consumer(&self) {
        if self.closing.replace(true) {
            return;
        }
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&1008u16.to_be_bytes());
        payload.extend_from_slice(b"slow consumer");
        self.outbox
            .replace_and_close(|b| ws::encode_frame(b, 0x88, &payload));
        let stream = self.stream.clone();
        rt::spawn(async move {
            rt::sleep(Duration::from_secs(2)).await;
            stream.shutdown();
        })
        .detach();
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
        self.close(CloseCode::Restart, &format!("reconnect_after_ms={wait_ms}"));
    }

    /// Starts a close handshake with `code`; the reader ends when it completes or the peer goes.
    fn close(&self, code: CloseCode, reason: &str) {
        if self.closing.replace(true) {
            return;
        }
        let mut ws = self.ws.borrow_mut();
        let _ = ws.close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }));
        let _ = ws.flush();
        drop(ws);
        self.outbox.close();
    }
}

/// Accepts clients on this shard's share of the client port.
pub async fn accept_loop(shard: Rc<Shard>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                rt::spawn(serve(shard.clone(), stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                rt::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Turns a connection away with a retry hint a browser can read: the upgrade completes and
/// the socket closes at once with `code` (1013 try again later, or 1012 while draining) and
/// reason `reconnect_after_ms=N`, N jittered over 1-5 s so a storm of reconnects spreads out.
async fn shed(shard: &Shard, stream: &Transport, key: &str, code: CloseCode, why: &str) {
    shard.m().shed.inc();
    let wait_ms = SHED_MIN_MS + shard.new_session_id() % SHED_JITTER_MS;
    tracing::debug!(why, wait_ms, "connection shed");
    let mut out = Vec::with_capacity(256);
    http::response_switching(&mut out, key);
    let mut frame = BytesMut::with_capacity(64);
    let mut payload = Vec::with_capacity(32);
    payload.extend_from_slice(&u16::from(code).to_be_bytes());
    payload.extend_from_slice(format!("reconnect_after_ms={wait_ms}").as_bytes());
    ws::encode_frame(&mut frame, 0x88, &payload);
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
/// returns the live connection.
async fn handshake(shard: &Rc<Shard>, stream: &Transport) -> Option<Rc<Conn>> {
    let mut head = BytesMut::new();
    let parsed = rt::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let n = stream.read_with(|b| head.extend_from_slice(b)).await.ok()?;
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
        shed(shard, stream, key, CloseCode::Restart, "draining").await;
        return None;
    }
    if shard.sessions.borrow().len() >= shard.cfg.max_connections_per_shard {
        shard.m().drop(DropReason::Capacity);
        shed(
            shard,
            stream,
            key,
            CloseCode::Again,
            "at --max-connections-per-shard",
        )
        .await;
        return None;
    }
    if shard.handshakes.get() > shard.cfg.max_handshakes_per_shard {
        shed(
            shard,
            stream,
            key,
            CloseCode::Again,
            "handshake backlog full",
        )
        .await;
        return None;
    }
    if !echo && !shard.live.beating() {
        shed(
            shard,
            stream,
            key,
            CloseCode::Again,
            "no liveness record yet",
        )
        .await;
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
        shed(shard, stream, key, CloseCode::Again, "registry unavailable").await;
        return None;
    }

    let outbox = Rc::new(Outbox::for_client(shard.cfg.client_queue, KEEP_CAPACITY));
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
    let rx = head.split_off(consumed);
    let ws = WebSocket::from_raw_socket(
        Io {
            rx,
            out: outbox.clone(),
        },
        Role::Server,
        Some(ws::config(shard.cfg.max_ws_message, shard.cfg.client_queue)),
    );
    let uplink = (session as usize) % shard.uplinks.len().max(1);
    let conn = Rc::new(Conn {
        session,
        entry,
        ws: RefCell::new(ws),
        outbox: outbox.clone(),
        stream: stream.stream.clone(),
        seq: Cell::new(0),
        uplink,
        last_rx: Cell::new(Instant::now()),
        closing: Cell::new(false),
        echo,
        bucket: RefCell::new(TokenBucket::new(shard.cfg.msg_burst, Instant::now())),
    });
    if echo {
        return Some(conn);
    }
    shard.sessions.borrow_mut().insert(session, conn.clone());
    shard.m().connects.inc();
    shard.m().connections.inc();
    tracing::debug!(session, user = %conn.entry.user, "client connected");
    Some(conn)
}

async fn serve(shard: Rc<Shard>, stream: Stream) {
    let stream = match Transport::new(stream, shard.cfg.tls.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "TLS session setup failed");
            return;
        }
    };
    // Boxed so that the handshake's state (request buffer, parsed head, timers) is freed when
    // it is done instead of sizing every connection's long-lived task.
    shard.handshakes.set(shard.handshakes.get() + 1);
    let conn = Box::pin(handshake(&shard, &stream)).await;
    shard.handshakes.set(shard.handshakes.get() - 1);
    let Some(conn) = conn else {
        return;
    };
    let session = conn.session;
    let outbox = conn.outbox.clone();
    let writer_stream = stream.clone();
    let writer = rt::spawn(async move {
        if let Err(e) = writer_stream.run_writer(&outbox).await {
            tracing::debug!(error = %e, "client write failed");
        }
        writer_stream.stream.shutdown();
    });

    // Bytes that arrived with the upgrade request are processed before the first read.
    process(&shard, &conn);
    while !conn.outbox.is_closed() {
        let read = stream
            .read_with(|b| conn.ws.borrow_mut().get_mut().rx.extend_from_slice(b))
            .await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                conn.last_rx.set(Instant::now());
                process(&shard, &conn);
            }
        }
    }

    conn.closing.set(true);
    conn.outbox.close();
    if !conn.echo {
        shard.sessions.borrow_mut().remove(&session);
        shard.m().connections.dec();
    }
    // Let the writer flush a close frame, but never wait on a peer that stopped reading.
    if rt::timeout(Duration::from_secs(2), writer).await.is_none() {
        conn.stream.shutdown();
    }
    if conn.echo {
        return;
    }
    let unregister = shard.registry.unregister(&conn.entry);
    shard.m().registry_cmds(RegistryOp::Unregister, 1);
    if let Err(e) = unregister.await {
        tracing::warn!(error = %e, session, "session cleanup failed; its TTL will expire it");
    }
    tracing::debug!(session, "client disconnected");
}

/// Runs tungstenite over the bytes received so far and handles each complete message.
fn process(shard: &Shard, conn: &Rc<Conn>) {
    loop {
        let res = conn.ws.borrow_mut().read();
        match res {
            Ok(Message::Text(text)) if conn.echo => {
                conn.send_text(shard, text.as_bytes());
            }
            Ok(Message::Binary(data)) if conn.echo => {
                let _ = conn.outbox.push(|b| ws::encode_frame(b, 0x82, &data));
            }
            Ok(Message::Text(text)) => handle_text(shard, conn, text.as_str()),
            Ok(Message::Binary(_)) => conn.send_error(
                shard,
                None,
                ErrorCode::BinaryUnsupported,
                "binary frames are not supported; send JSON text frames",
            ),
            Ok(Message::Close(_)) => {
                // tungstenite queued the close reply; flush it and let the writer end.
                conn.closing.set(true);
                let _ = conn.ws.borrow_mut().flush();
                conn.outbox.close();
                return;
            }
            Ok(_) => {} // ping (pong queued by tungstenite), pong, raw frame
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {
                conn.outbox.close();
                return;
            }
            Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                let reason = format!("message of {size} bytes exceeds {max_size}");
                return conn.close(CloseCode::Size, &reason);
            }
            Err(WsError::Utf8(_)) => return conn.close(CloseCode::Invalid, "invalid UTF-8"),
            Err(WsError::Protocol(p)) => {
                return conn.close(CloseCode::Protocol, &p.to_string());
            }
            Err(e) => {
                tracing::debug!(session = conn.session, error = %e, "websocket error");
                conn.abort();
                return;
            }
        }
    }
    let mut ws = conn.ws.borrow_mut();
    let _ = ws.flush();
    let rx = &mut ws.get_mut().rx;
    if rx.is_empty() && rx.capacity() > KEEP_CAPACITY {
        *rx = BytesMut::new();
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
            if !conn.bucket.borrow_mut().take(rate, burst, Instant::now()) {
                shard.m().rate_limited.inc();
                let msg = format!("over {rate} requests per second; slow down");
                return conn.send_error(shard, Some(id), ErrorCode::RateLimited, &msg);
            }
            let Some(link) = shard.pick_uplink(conn.uplink) else {
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
            if !conn.bucket.borrow_mut().take(rate, burst, Instant::now()) {
                shard.m().rate_limited.inc();
                let msg = format!("over {rate} messages per second; slow down");
                return conn.send_error(shard, Some(id), ErrorCode::RateLimited, &msg);
            }
            shard.m().messages_in.inc();
            let Some(link) = shard.pick_uplink_for(conn.session, conn.uplink) else {
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
                cj::encode_message(
                    &mut s,
                    sid,
                    &conn.entry.user,
                    body,
                    runtime::clock::unix_ms(),
                );
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
