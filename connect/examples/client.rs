//! A small Connect client on blocking tungstenite, the way a mobile app talks to a gateway:
//! connect with a token, send, wait for the ack, reconnect with backoff and jitter when the
//! connection drops (after the delay a draining gateway asks for, if it did), re-send what has
//! no outcome yet, and drop duplicate messages.
//! docs/clients.md walks through it; connect/tests/client_example.rs runs it against `connect`.
//!
//! With `cargo run -p connect` running (the embedded registry serves `/dev/token`):
//!
//! ```sh
//! cargo run -p connect --example client -- --user bob --listen
//! cargo run -p connect --example client -- --user alice --to bob --text "hi bob" --count 3
//! ```
//!
//! Against a deployed gateway pass `--token <JWT>` from your own auth service instead.

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Reconnect delays with "equal jitter": a random delay in `[d/2, d]`, where `d` starts at
/// `min` and doubles after every failed attempt up to `max`. The jitter spreads out the
/// clients that all lost the same gateway at the same moment.
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
            rng: seed | 1,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        // xorshift: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        half + Duration::from_nanos(self.rng % (half.as_nanos() as u64 + 1))
    }

    /// After a successful connect: start from `min` again.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// Remembers the last `cap` message keys seen, to drop copies of re-sent messages.
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Dedup {
    pub fn new(cap: usize) -> Dedup {
        Dedup {
            seen: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True the first time `key` is seen (within the last `cap` keys).
    pub fn first_time(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key.to_owned());
        self.order.push_back(key.to_owned());
        true
    }
}

/// The key a recipient de-duplicates on: the sender's idempotency key `cid` in the body when
/// there is one (it survives re-sends), else the server's message id.
pub fn dedup_key(msg: &Value) -> String {
    let from = msg["from"].as_str().unwrap_or("");
    match msg["body"]["cid"].as_str() {
        Some(cid) => format!("{from}/{cid}"),
        None => format!("{from}/{}", msg["id"].as_str().unwrap_or("")),
    }
}

/// The outcome of one send.
#[derive(Debug, Clone)]
pub struct Ack {
    /// `delivered`, `offline` or `failed` (after the last retry), or `error:<code>`.
    pub status: String,
    pub reason: Option<String>,
    /// From the last transmission to its ack.
    pub rtt: Duration,
    /// How many times the message was transmitted.
    pub attempts: u32,
}

enum Wait {
    Ack(Ack),
    /// The connection dropped: the outcome is unknown.
    Lost,
}

/// A client that keeps one connection as `user` to a gateway. Behind a load balancer there is
/// one address; given several (`host:port,host:port`), each connect attempt takes the next.
pub struct Client {
    addrs: Vec<String>,
    next_addr: usize,
    user: String,
    token: Option<String>,
    ws: Option<WebSocket<TcpStream>>,
    backoff: Backoff,
    dedup: Dedup,
    /// Messages read while waiting for an ack, already de-duplicated.
    inbox: VecDeque<Value>,
    next_id: u64,
    nonce: u64,
    /// Successful connects so far.
    pub connects: u32,
    /// The last `welcome`.
    pub welcome: Value,
    /// The close code and reason of the last connection the server closed.
    pub last_close: Option<(u16, String)>,
    /// A draining gateway's "reconnect after" hint, honoured before the next connect.
    reconnect_hint: Option<Duration>,
}

/// How long one blocking read waits before the caller's deadline is checked again.
const READ_SLICE: Duration = Duration::from_millis(100);
/// A `failed` ack (outcome unknown) or a `rate_limited` error is retried this many times.
const FAILED_RETRIES: u32 = 3;
/// Longest reconnect hint obeyed (a bad hint must not park the client for long).
const MAX_HINT: Duration = Duration::from_secs(30);

impl Client {
    /// `token`: a JWT from your auth service; `None` asks the local dev endpoint
    /// `/dev/token` (only `connect` with the embedded registry serves it).
    pub fn new(addrs: &str, user: &str, token: Option<String>) -> Client {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Client {
            addrs: addrs.split(',').map(|a| a.trim().to_owned()).collect(),
            next_addr: 0,
            user: user.to_owned(),
            token,
            ws: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5), seed),
            dedup: Dedup::new(10_000),
            inbox: VecDeque::new(),
            next_id: 0,
            nonce: seed & 0xffff_ffff,
            connects: 0,
            welcome: Value::Null,
            last_close: None,
            reconnect_hint: None,
        }
    }

    /// Connects if not connected, retrying with backoff until `deadline`.
    pub fn ensure_connected(&mut self, deadline: Instant) -> Result<(), String> {
        if self.ws.is_none() {
            // Closed by a draining gateway with `reconnect_after_ms=N`: wait that long first
            // (the gateway spreads its clients' hints so they do not all return at once).
            if let Some(hint) = self.reconnect_hint.take() {
                std::thread::sleep(hint.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
        while self.ws.is_none() {
            match self.try_connect() {
                Ok(ws) => {
                    self.ws = Some(ws);
                    self.connects += 1;
                    self.backoff.reset();
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    if Instant::now() + delay > deadline {
                        return Err(format!("could not connect: {e}"));
                    }
                    eprintln!("connect failed ({e}); retrying in {delay:?}");
                    std::thread::sleep(delay);
                }
            }
        }
        Ok(())
    }

    fn try_connect(&mut self) -> Result<WebSocket<TcpStream>, String> {
        let addr = self.addrs[self.next_addr % self.addrs.len()].clone();
        self.next_addr += 1;
        // A fresh token per connect: an old one may have expired while we were away.
        let token = match &self.token {
            Some(t) => t.clone(),
            None => dev_token(&addr, &self.user)?,
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let tcp =
            TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let url = format!("ws://{addr}/ws?token={token}");
        // 401: get a new token; 503 (registry down, gateway full or draining): retry later.
        // All end up in the backoff.
        let (mut ws, _) = tungstenite::client(url.as_str(), tcp).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                format!("HTTP {}", r.status())
            }
            e => e.to_string(),
        })?;
        let welcome = match ws.read().map_err(|e| e.to_string())? {
            Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).unwrap_or_default(),
            other => return Err(format!("expected welcome, got {other:?}")),
        };
        if welcome["type"] != "welcome" {
            return Err(format!("expected welcome, got {welcome}"));
        }
        ws.get_mut()
            .set_read_timeout(Some(READ_SLICE))
            .map_err(|e| e.to_string())?;
        self.welcome = welcome;
        Ok(ws)
    }

    /// Sends `text` to `to` and waits for its ack. While the outcome is unknown (connection
    /// lost, or a `failed` ack) it reconnects and sends the same body again: the body's `cid`
    /// lets the recipient drop the copy if the first one did arrive. A `rate_limited` error is
    /// retried after a pause too.
    pub fn send(&mut self, to: &str, text: &str, deadline: Instant) -> Result<Ack, String> {
        self.next_id += 1;
        // Unique per message across this client's runs: user, process nonce, counter.
        let cid = format!("{}-{:x}-{}", self.user, self.nonce, self.next_id);
        let body = json!({ "text": text, "cid": cid });
        let mut attempts = 0;
        let mut failed = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(format!("no ack for {cid} in time"));
            }
            self.ensure_connected(deadline)?;
            attempts += 1;
            self.next_id += 1;
            let id = format!("c-{}", self.next_id);
            let frame = json!({ "type": "send", "id": id, "to": to, "body": body });
            let t0 = Instant::now();
            let ws = self.ws.as_mut().ok_or("not connected")?;
            if ws.send(Message::text(frame.to_string())).is_err() {
                self.ws = None;
                continue;
            }
            match self.wait_ack(&id, deadline)? {
                Wait::Lost => self.ws = None,
                Wait::Ack(mut ack) => {
                    let retry = ack.status == "failed" || ack.status == "error:rate_limited";
                    if retry && failed < FAILED_RETRIES {
                        failed += 1;
                        std::thread::sleep(self.backoff.next_delay());
                        continue;
                    }
                    ack.rtt = t0.elapsed();
                    ack.attempts = attempts;
                    return Ok(ack);
                }
            }
        }
    }

    fn wait_ack(&mut self, id: &str, deadline: Instant) -> Result<Wait, String> {
        loop {
            let Some(v) = self.read(deadline)? else {
                return match self.ws {
                    None => Ok(Wait::Lost),
                    Some(_) => Err(format!("no ack for {id} in time")),
                };
            };
            match v["type"].as_str() {
                Some("ack") if v["id"] == id => {
                    return Ok(Wait::Ack(Ack {
                        status: v["status"].as_str().unwrap_or("").to_owned(),
                        reason: v["reason"].as_str().map(str::to_owned),
                        rtt: Duration::ZERO,
                        attempts: 0,
                    }))
                }
                Some("error") if v["id"] == id => {
                    return Ok(Wait::Ack(Ack {
                        status: format!("error:{}", v["code"].as_str().unwrap_or("")),
                        reason: v["message"].as_str().map(str::to_owned),
                        rtt: Duration::ZERO,
                        attempts: 0,
                    }))
                }
                Some("message") => self.inbox.push_back(v),
                _ => {}
            }
        }
    }

    /// The next message not seen before, reconnecting as needed; `None` at the deadline.
    pub fn recv_message(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        loop {
            while let Some(m) = self.inbox.pop_front() {
                if self.dedup.first_time(&dedup_key(&m)) {
                    return Ok(Some(m));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.ensure_connected(deadline)?;
            match self.read(deadline)? {
                Some(v) if v["type"] == "message" => self.inbox.push_back(v),
                Some(_) => {}
                None if self.ws.is_none() => {} // lost: reconnect on the next turn
                None => return Ok(None),
            }
        }
    }

    /// One JSON frame. `None` when the connection was lost (then `self.ws` is `None`) or the
    /// deadline passed.
    fn read(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        let Some(ws) = self.ws.as_mut() else {
            return Ok(None);
        };
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    return serde_json::from_str(t.as_str())
                        .map(Some)
                        .map_err(|e| format!("bad JSON from the server: {e}"));
                }
                Ok(Message::Close(frame)) => {
                    if let Some(f) = frame {
                        self.reconnect_hint = reconnect_hint(u16::from(f.code), &f.reason);
                        self.last_close = Some((f.code.into(), f.reason.to_string()));
                    }
                    break;
                }
                Ok(_) => {} // pings are answered by tungstenite on the next read/write
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    let _ = ws.flush(); // e.g. a pong queued by the last read
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(_) => break,
            }
        }
        self.ws = None;
        Ok(None)
    }
}

/// The delay a gateway asks for: close code 1012 (draining) or 1013 (shedding load: full,
/// handshake backlog, registry down) with reason `reconnect_after_ms=N`.
pub fn reconnect_hint(code: u16, reason: &str) -> Option<Duration> {
    let ms = reason.strip_prefix("reconnect_after_ms=")?.parse().ok()?;
    matches!(code, 1012 | 1013).then(|| Duration::from_millis(ms).min(MAX_HINT))
}

/// `GET /dev/token?user=USER` on the gateway's client port (local dev mode only).
pub fn dev_token(addr: &str, user: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| format!("dev token: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // User ids need no escaping in a URL except `+` (which would read as a space).
    let user = user.replace('+', "%2B");
    let req = format!("GET /dev/token?user={user} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or("dev token: bad response")?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(format!("dev token: {status} {body}"));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "dev token: no token in the answer".into())
}

/// Example client: send messages (and print their acks), or listen and print messages.
#[derive(Parser, Debug)]
struct Args {
    /// The gateway's client address, HOST:PORT (an `http://` or `ws://` prefix is ignored);
    /// several, comma-separated, are tried in turn.
    #[arg(long, default_value = "127.0.0.1:8080")]
    url: String,
    /// Who this client is.
    #[arg(long)]
    user: String,
    /// A JWT for `--user`; without it one is fetched from /dev/token (local `connect` only).
    #[arg(long)]
    token: Option<String>,
    /// Recipient of the messages to send.
    #[arg(long)]
    to: Option<String>,
    /// Text to send.
    #[arg(long, default_value = "hello")]
    text: String,
    /// How many messages to send (`<text> #<n>` when more than one).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Print incoming messages instead of sending.
    #[arg(long)]
    listen: bool,
    /// With --listen: exit after this many messages.
    #[arg(long)]
    expect: Option<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> Result<(), String> {
    let a = Args::parse();
    let addrs: Vec<&str> = a
        .url
        .split(',')
        .map(|u| {
            u.trim()
                .trim_start_matches("http://")
                .trim_start_matches("ws://")
        })
        .map(|u| u.trim_end_matches('/'))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut c = Client::new(&addrs.join(","), &a.user, a.token.clone());
    c.ensure_connected(deadline)?;
    println!(
        "connected as {} (session {})",
        c.welcome["user"].as_str().unwrap_or("?"),
        c.welcome["session"].as_str().unwrap_or("?")
    );
    if a.listen {
        let mut n = 0;
        while a.expect.is_none_or(|e| n < e) {
            let Some(m) = c.recv_message(deadline)? else {
                return Err(format!("timed out after {n} messages"));
            };
            n += 1;
            let body = &m["body"];
            let text = body["text"].as_str().map(str::to_owned);
            println!(
                "message from {}: {}",
                m["from"].as_str().unwrap_or("?"),
                text.unwrap_or_else(|| body.to_string())
            );
        }
        return Ok(());
    }
    let to = a.to.ok_or("--to is required unless --listen")?;
    let mut ok = true;
    for i in 1..=a.count {
        let text = match a.count {
            1 => a.text.clone(),
            _ => format!("{} #{i}", a.text),
        };
        let ack = c.send(&to, &text, deadline)?;
        ok &= ack.status == "delivered" || ack.status == "offline";
        println!(
            "ack {i}: {} in {} ms ({} attempt(s)){}",
            ack.status,
            ack.rtt.as_millis(),
            ack.attempts,
            ack.reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    if ok {
        Ok(())
    } else {
        Err("some sends failed".into())
    }
}
