//! Test support for hostile input: a hand-rolled WebSocket client that sends whatever frames a
//! test asks for (unmasked, reserved bits, lying lengths), raw HTTP, forged JWTs, and a fake
//! Redis server that misbehaves on command.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{token, upgrade_request, Client};

/// Frame opcodes and bits (RFC 6455 section 5.2).
pub const FIN: u8 = 0x80;
pub const RSV1: u8 = 0x40;
pub const RSV2: u8 = 0x20;
pub const RSV3: u8 = 0x10;
pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

/// How a server connection ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code (and reason), then the TCP connection closed.
    Close(u16, String),
    /// The TCP connection closed (or was reset) without a close frame.
    Dropped,
}

/// A WebSocket client that frames everything itself.
pub struct RawWs {
    pub tcp: TcpStream,
    rx: Vec<u8>,
}

/// An HTTP response head and body as received.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Parses what a server sent back on a connection that it then closed.
pub fn parse_reply(bytes: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(bytes).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_else(|| (text.clone(), String::new()));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    HttpReply { status, head, body }
}

/// Sends `request` as is and reads the answer: up to the end of a `101` head, else until the
/// gateway closes (it does after every other response). A reset after the response still
/// counts: what arrived is returned.
pub fn http(port: u16, request: &[u8]) -> HttpReply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if buf.starts_with(b"HTTP/1.1 101 ") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    parse_reply(&buf)
}

/// Reads until EOF, a reset or the read timeout; returns what arrived.
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    buf
}

/// Whether the peer has closed `s` (EOF or reset) within `within`; false if it is still open.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

impl RawWs {
    /// Upgrades `path_and_query` (e.g. `/ws?token=...`); panics unless the answer is 101.
    pub fn open(port: u16, path_and_query: &str) -> RawWs {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(upgrade_request(path_and_query, "").as_bytes())
            .unwrap();
        Self::from_upgraded(tcp)
    }

    /// Takes over a connection whose upgrade request is already written: reads the `101`.
    pub fn from_upgraded(mut tcp: TcpStream) -> RawWs {
        let mut rx = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = rx.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tcp.read(&mut chunk).expect("reading the upgrade response");
            assert!(
                n > 0,
                "closed during the upgrade: {:?}",
                String::from_utf8_lossy(&rx)
            );
            rx.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&rx[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        rx.drain(..end);
        RawWs { tcp, rx }
    }

    /// A session of `user` on `/ws`, its welcome already read.
    pub fn connect(port: u16, user: &str) -> RawWs {
        let mut ws = Self::open(port, &format!("/ws?token={}", token(user)));
        let welcome = ws.recv_json();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws
    }

    /// Writes one frame: `first` = FIN/RSV bits | opcode; masked with a fixed key when `mask`.
    pub fn frame(&mut self, first: u8, mask: bool, payload: &[u8]) {
        let mut f = frame_header(first, mask, payload.len() as u64);
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if mask {
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.write(&f);
    }

    /// Writes raw bytes; a write refused because the server already closed is ignored (the
    /// test then reads how it closed).
    pub fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.tcp.write_all(bytes) {
            assert!(
                matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                "write: {e}"
            );
        }
    }

    /// A masked text frame with FIN.
    pub fn text(&mut self, text: &str) {
        self.frame(FIN | TEXT, true, text.as_bytes());
    }

    /// Reads one server frame: (first byte, payload); None on EOF or reset.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((first, payload, used)) = parse_server_frame(&self.rx) {
                self.rx.drain(..used);
                return Some((first, payload));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tcp.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.rx.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("no frame from the server within the read timeout")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next text message as JSON (pings and pongs skipped; panics on close).
    pub fn recv_json(&mut self) -> Value {
        loop {
            match self.read_frame() {
                Some((f, p)) if f & 0x0f == TEXT => {
                    return serde_json::from_slice(&p).expect("server text is JSON")
                }
                Some((f, _)) if f & 0x0f == PING || f & 0x0f == PONG => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the connection ends: the close frame's code and reason, or [`End::Dropped`].
    /// After a close frame, also waits for the server to close the TCP connection.
    pub fn end(&mut self) -> End {
        loop {
            match self.read_frame() {
                None => return End::Dropped,
                Some((f, p)) if f & 0x0f == CLOSE => {
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).to_string();
                    // Answer it, as a client should; the server then closes the socket.
                    self.frame(FIN | CLOSE, true, &p[..p.len().min(2)]);
                    assert!(
                        closed_within(&mut self.tcp, Duration::from_secs(5)),
                        "the server kept the socket open after its close frame {code}"
                    );
                    return End::Close(code, reason);
                }
                Some(_) => continue,
            }
        }
    }

    /// Asserts the server closes with `code`, returning the reason.
    pub fn expect_close(&mut self, code: u16, what: &str) -> String {
        match self.end() {
            End::Close(c, reason) if c == code => reason,
            other => panic!("{what}: expected close {code}, got {other:?}"),
        }
    }
}

/// The header of a client frame with a payload of `len` bytes.
pub fn frame_header(first: u8, mask: bool, len: u64) -> Vec<u8> {
    let m = if mask { 0x80 } else { 0 };
    let mut f = vec![first];
    if len < 126 {
        f.push(m | len as u8);
    } else if len <= u16::MAX as u64 {
        f.push(m | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&len.to_be_bytes());
    }
    if mask {
        f.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    }
    f
}

/// (first byte, payload, bytes used) of a complete unmasked server frame at the start of `b`.
fn parse_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
    let (len, hdr) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < hdr + len {
        return None;
    }
    Some((b[0], b[hdr..hdr + len].to_vec(), hdr + len))
}

/// Two connected users on one gateway who keep chatting while others misbehave: the proof that
/// hostile input leaves other connections untouched.
pub struct Bystanders {
    pub a: Client,
    pub b: Client,
    a_user: String,
    b_user: String,
    n: u32,
}

impl Bystanders {
    pub fn connect(port: u16, tag: &str) -> Bystanders {
        let (a_user, b_user) = (format!("{tag}-bystander-a"), format!("{tag}-bystander-b"));
        Bystanders {
            a: Client::connect(port, &a_user),
            b: Client::connect(port, &b_user),
            a_user,
            b_user,
            n: 0,
        }
    }

    /// Both directions: the message arrives with its body and the sender gets `delivered`.
    pub fn still_chatting(&mut self, after: &str) {
        self.n += 1;
        let id = format!("after-{}", self.n);
        one_way(&mut self.a, &mut self.b, &self.b_user, &id, after);
        one_way(&mut self.b, &mut self.a, &self.a_user, &id, after);
    }
}

fn one_way(from: &mut Client, to: &mut Client, to_user: &str, id: &str, after: &str) {
    from.send_to(to_user, id, serde_json::json!({ "after": after }));
    let m = to.recv_type("message");
    assert_eq!(m["body"]["after"], after, "bystander message after {after}");
    let ack = from.recv_type("ack");
    assert_eq!(
        (ack["id"].as_str(), ack["status"].as_str()),
        (Some(id), Some("delivered")),
        "bystander ack after {after}: {ack}"
    );
}

/// base64url without padding (JWT segments).
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 3);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// HMAC-SHA256, borrowed from rustls's ring provider (the TLS 1.3 HKDF's HMAC), so the tests
/// need no crypto crate of their own.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite")
    };
    let key = rustls::crypto::tls13::OkmBlock::new(key);
    suite.hkdf_provider.hmac_sign(&key, msg).as_ref().to_vec()
}

/// A compact JWS of `header` and `payload` (JSON texts), signed HS256 with `secret` whatever
/// the header says; `secret` None leaves the signature empty (as `alg: none` tokens do).
pub fn jwt(header: &str, payload: &str, secret: Option<&[u8]>) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let sig = secret
        .map(|s| b64url(&hmac_sha256(s, signing_input.as_bytes())))
        .unwrap_or_default();
    format!("{signing_input}.{sig}")
}

/// How the [`FakeRedis`] treats replies from the real Redis behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward them: a well-behaved Redis.
    Proxy = 0,
    /// Hold them (stop reading from the real Redis) until the mode changes: a stalled server.
    Silent = 1,
    /// Replace each with garbage (rotating through kinds of garbage).
    Garbage = 2,
    /// Send half of the reply, then close the connection.
    CloseMidReply = 3,
}

/// Byte strings a broken or hostile server might send instead of RESP.
pub const GARBAGE: &[&[u8]] = &[
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    b"\x00\xff\xfe\x16\x03\x01garbage\r\n",
    // Well-formed type bytes with impossible contents.
    b"$99999999999999999\r\n",
    b"*-7\r\n",
    b":12ab\r\n",
    b"*9223372036854775807\r\n",
    b"$3\r\nabcdefgh\r\n",
    b"%1\r\n",
];

/// A TCP proxy in front of a real Redis that answers garbage, nothing, or half a reply on
/// command: a hostile registry for the gateway and router under test.
pub struct FakeRedis {
    pub port: u16,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far (reconnects show up here).
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// How often each entry of [`GARBAGE`] was sent.
    served: Arc<Vec<std::sync::atomic::AtomicUsize>>,
}

impl FakeRedis {
    /// Starts in [`Mode::Proxy`] in front of the Redis on `upstream`.
    pub fn start(upstream: u16) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Proxy as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served: Arc<Vec<_>> = Arc::new(
            GARBAGE
                .iter()
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect(),
        );
        let (m, st, acc, sv) = (mode.clone(), stop.clone(), accepted.clone(), served.clone());
        std::thread::spawn(move || {
            let mut garbage_turn = 0usize;
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        acc.fetch_add(1, Ordering::Relaxed);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        garbage_turn += 1;
                        spawn_pipe(
                            client,
                            server,
                            m.clone(),
                            st.clone(),
                            sv.clone(),
                            garbage_turn,
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRedis {
            port,
            mode,
            stop,
            accepted,
            served,
        }
    }

    /// How many of the kinds of [`GARBAGE`] have been sent at least once.
    pub fn garbage_kinds_served(&self) -> usize {
        self.served
            .iter()
            .filter(|n| n.load(Ordering::Relaxed) > 0)
            .count()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mode_of(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        0 => Mode::Proxy,
        1 => Mode::Silent,
        2 => Mode::Garbage,
        _ => Mode::CloseMidReply,
    }
}

/// Client -> Redis is copied as is; Redis -> client goes through the current [`Mode`].
fn spawn_pipe(
    client: TcpStream,
    server: TcpStream,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    served: Arc<Vec<std::sync::atomic::AtomicUsize>>,
    mut garbage_turn: usize,
) {
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s_write.shutdown(Shutdown::Both);
        let _ = c_read.shutdown(Shutdown::Both);
    });
    let (mut s_read, mut c_write) = (server, client);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match s_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // A stalled server: this reply and the ones behind it wait until the mode changes.
            while mode_of(&mode) == Mode::Silent && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let ok = match mode_of(&mode) {
                Mode::Proxy | Mode::Silent => c_write.write_all(&buf[..n]).is_ok(),
                Mode::Garbage => {
                    garbage_turn += 1;
                    let k = garbage_turn % GARBAGE.len();
                    served[k].fetch_add(1, Ordering::Relaxed);
                    c_write.write_all(GARBAGE[k]).is_ok()
                }
                Mode::CloseMidReply => {
                    let _ = c_write.write_all(&buf[..n.div_ceil(2).min(n.saturating_sub(1))]);
                    false
                }
            };
            if !ok {
                break;
            }
        }
        let _ = c_write.shutdown(Shutdown::Both);
        let _ = s_read.shutdown(Shutdown::Both);
    });
}

/// A router and one gateway (two shards each) on the registry at `registry`, stderr kept (so a
/// test can check for panics); returns them and the gateway's client port. Unlike
/// [`crate::support::Stack`] it does not wait until sends are routable: the registry may be broken.
pub fn start_on_registry(registry: &str) -> (crate::support::Proc, crate::support::Proc, u16) {
    let router_port = testkit::free_port();
    let router = crate::support::Proc::start_with_stderr(
        "router",
        "router",
        &[
            "--listen".into(),
            format!("127.0.0.1:{router_port}"),
            "--registry".into(),
            registry.into(),
            "--shards".into(),
            "2".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--link-secret".into(),
            crate::support::LINK_SECRET.into(),
        ],
        "router listening",
    );
    let port = testkit::free_port();
    let gateway = crate::support::Proc::start_with_stderr(
        "gateway",
        "gateway",
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--internal-listen".into(),
            "127.0.0.1:0".into(),
            "--router".into(),
            format!("127.0.0.1:{router_port}"),
            "--registry".into(),
            registry.into(),
            "--jwt-secret".into(),
            crate::support::SECRET.into(),
            "--shards".into(),
            "2".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--link-secret".into(),
            crate::support::LINK_SECRET.into(),
            "--msg-rate".into(),
            "1000000".into(),
            "--msg-burst".into(),
            "1000000".into(),
        ],
        "gateway listening",
    );
    (router, gateway, port)
}

/// How an upgrade attempt ended.
#[derive(Debug)]
pub enum Upgrade {
    /// `101` and the welcome: a session.
    Welcome,
    /// `101`, then at once a close frame with this code and reason (the gateway shed it).
    Shed(u16, String),
    /// An HTTP answer other than `101`.
    Refused(HttpReply),
}

/// Tries to upgrade as `user` and reports how it ended; the connection is dropped after.
pub fn try_upgrade(port: u16, user: &str) -> Upgrade {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    let req = upgrade_request(&format!("/ws?token={}", token(user)), "");
    tcp.write_all(req.as_bytes()).unwrap();
    let mut rx = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = rx.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i + 4);
        }
        match tcp.read(&mut chunk) {
            Ok(n) if n > 0 => rx.extend_from_slice(&chunk[..n]),
            _ => break None,
        }
    };
    match end {
        Some(end) if rx.starts_with(b"HTTP/1.1 101 ") => {
            rx.drain(..end);
            let mut w = RawWs { tcp, rx };
            match w.read_frame() {
                Some((f, p)) if f & 0x0f == CLOSE => shed_of(&p),
                Some((f, _)) if f & 0x0f == TEXT => Upgrade::Welcome,
                other => panic!("after the 101: {other:?}"),
            }
        }
        _ => {
            rx.extend(read_to_close(&mut tcp));
            Upgrade::Refused(parse_reply(&rx))
        }
    }
}

fn shed_of(p: &[u8]) -> Upgrade {
    let code = p
        .get(..2)
        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
    Upgrade::Shed(
        code,
        String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).into(),
    )
}

/// Asserts the gateway shed an upgrade the documented way: close 1013 (try again later) with
/// reason `reconnect_after_ms=N`, N within 1-5 s. Returns N.
pub fn assert_shed(u: &Upgrade, what: &str) -> u64 {
    let Upgrade::Shed(1013, reason) = u else {
        panic!("{what}: expected a 101 then close 1013, got {u:?}");
    };
    let ms: u64 = reason
        .strip_prefix("reconnect_after_ms=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: reason {reason:?}"));
    assert!((1000..=5000).contains(&ms), "{what}: {reason}");
    ms
}

/// Connects `user` like [`Client::connect`], but returns the refusal (e.g. a close 1013 while
/// the registry is down) instead of panicking.
pub fn try_connect(port: u16, user: &str) -> Result<Client, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws?token={}", token(user));
    let (ws, _) = tungstenite::client(url.as_str(), tcp).map_err(|e| e.to_string())?;
    let mut c = Client {
        ws,
        welcome: Value::Null,
    };
    // A shed connection completes the upgrade and is closed at once.
    match c.ws.read().map_err(|e| e.to_string())? {
        tungstenite::Message::Text(t) => c.welcome = serde_json::from_str(t.as_str()).unwrap(),
        other => return Err(format!("instead of the welcome: {other:?}")),
    }
    assert_eq!(c.welcome["type"], "welcome", "{}", c.welcome);
    Ok(c)
}

/// [`try_connect`] until it succeeds or `within` has passed.
pub fn connect_within(port: u16, user: &str, within: Duration) -> Client {
    let deadline = Instant::now() + within;
    loop {
        match try_connect(port, user) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{user} could not connect within {within:?}: {e}"),
        }
    }
}
