//! One client connection's I/O: dial (TCP, WebSocket upgrade, welcome), then run a [`Session`]
//! against the socket until the run says stop or the server goes away.
//!
//! A connection is one tokio task that owns its socket and its session, so nothing per message
//! is shared between tasks except the counters and histograms in [`crate::stats`]. It sends when
//! the [`crate::pacer`] rings its bell.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::clock;
use crate::eio;
use crate::pacer::Bells;
use crate::protocol::{parse_server, Dialect, ServerFrame};
use crate::session::{Session, Shared};
use crate::stats::Tally;

/// What the run tells its connections. Every connection watches one shared value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Connections are still coming up; connected ones idle (but keep reading).
    Connecting,
    /// Send on the schedule, which starts at `start_ns` on the shared clock.
    Run { start_ns: u64 },
    /// Stop: count what is outstanding, close, and end the task.
    Stop,
}

/// One gateway to connect to.
#[derive(Debug)]
pub struct Target {
    /// The `ws://` URL as given, without the token.
    pub url: String,
    /// Resolved once up front, so thousands of dials do no name lookups.
    pub addr: SocketAddr,
}

/// How to dial, the same for every connection of a run.
pub struct Dial {
    /// Limit for TCP connect + upgrade + welcome.
    pub timeout: Duration,
    pub ws: WebSocketConfig,
    /// Connection `i` dials at `epoch_ns + i * spacing_ns` on the shared clock.
    pub epoch_ns: u64,
    /// Time between two dials (0: all at once).
    pub spacing_ns: u64,
    pub dialect: Dialect,
    /// Local address to bind before connecting (several source addresses widen the port space).
    pub source_ip: Option<IpAddr>,
    /// Gateways a dropped connection redials, in turn from the one after its own (`perf
    /// faults`); empty: a dropped connection stays down, as a measurement run wants.
    pub reconnect: Vec<Arc<Target>>,
}

impl Dial {
    /// Why 4 KiB: tungstenite allocates the read buffer eagerly (128 KiB by default), which at
    /// 10k connections would be over a gigabyte; perf's frames are a few hundred bytes.
    pub const READ_BUFFER: usize = 4 * 1024;

    pub fn ws_config() -> WebSocketConfig {
        WebSocketConfig::default().read_buffer_size(Self::READ_BUFFER)
    }
}

/// One connection of the run.
pub struct Spec {
    /// Position in the run: picks the schedule slots and the dial slot.
    pub index: usize,
    pub user: String,
    /// Whom this connection sends to.
    pub peer: String,
    pub target: Arc<Target>,
    pub token: String,
}

/// Sent once per connection when its dial finished, up or not.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub index: usize,
    pub up: bool,
}

type Ws = WebSocketStream<TcpStream>;

/// The whole life of one connection. Never fails: every problem ends up in the stats.
pub async fn run(
    mut spec: Spec,
    shared: Arc<Shared>,
    dial: Arc<Dial>,
    bells: Bells,
    mut ctrl: watch::Receiver<Control>,
    ready: mpsc::UnboundedSender<Ready>,
) {
    let stats = &shared.stats;
    // Pace dials so a big run does not overflow the server's accept backlog.
    if dial.spacing_ns > 0 {
        let at = dial.epoch_ns + dial.spacing_ns * spec.index as u64;
        tokio::time::sleep_until(clock::deadline(at)).await;
    }
    let began = clock::now_ns();
    let fail = |why: String| {
        stats.bump(|c| &c.connect_failed);
        stats.tally(Tally::ConnectError, &why);
        let _ = ready.send(Ready {
            index: spec.index,
            up: false,
        });
        None
    };
    let ws = match tokio::time::timeout(dial.timeout, first_open(&spec, &dial)).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(why)) => fail(why),
        Err(_) => fail("timeout".into()),
    };
    let Some(mut ws) = ws else {
        return;
    };
    stats
        .connect
        .record(spec.index, clock::micros_between(began, clock::now_ns()));
    stats.bump(|c| &c.connected);
    let _ = ready.send(Ready {
        index: spec.index,
        up: true,
    });

    let mut session = Session::new(shared.clone(), spec.index, spec.peer.clone());
    session.opened(clock::now_ns());
    loop {
        let stopped = drive(
            &mut ws,
            &mut session,
            &bells[spec.index],
            &mut ctrl,
            dial.dialect,
        )
        .await;
        if stopped {
            // Best effort: the server learns the session is over without waiting for a timeout.
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            break;
        }
        stats.bump(|c| &c.disconnects);
        session.closed(clock::now_ns(), true);
        match redial(&mut spec, &dial, &mut ctrl).await {
            Some(again) => {
                ws = again;
                stats.bump(|c| &c.reconnects);
                session.opened(clock::now_ns());
            }
            None => break,
        }
    }
    session.finish();
}

/// The first dial. A run that redials dropped connections (`perf faults`) also retries a
/// refused first dial (a gateway shedding while its first liveness beat is late) until the
/// dial timeout: a fault test needs every client up before the fault.
async fn first_open(spec: &Spec, dial: &Dial) -> Result<Ws, String> {
    loop {
        match open(spec, dial).await {
            Err(_) if !dial.reconnect.is_empty() => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Dials the next gateway after a dropped connection, as a client behind a load balancer would:
/// after a short jittered pause, then every half second, until it is up (`Some`) or the run stops
/// (`None`). Nothing is redialled unless the run asked for it (`Dial::reconnect`).
async fn redial(spec: &mut Spec, dial: &Dial, ctrl: &mut watch::Receiver<Control>) -> Option<Ws> {
    let n = dial.reconnect.len();
    if n == 0 {
        return None;
    }
    let mut at = dial
        .reconnect
        .iter()
        .position(|t| Arc::ptr_eq(t, &spec.target))
        .unwrap_or(0);
    let jitter = 200 + (spec.index as u64 * 7919) % 300;
    let mut pause = Duration::from_millis(jitter);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            changed = ctrl.changed() => {
                if changed.is_err() || *ctrl.borrow_and_update() == Control::Stop {
                    return None;
                }
                continue;
            }
        }
        if *ctrl.borrow() == Control::Stop {
            return None;
        }
        at = (at + 1) % n;
        spec.target = dial.reconnect[at].clone();
        if let Ok(Ok(ws)) = tokio::time::timeout(dial.timeout, open(spec, dial)).await {
            return Some(ws);
        }
        pause = Duration::from_millis(500);
    }
}

/// Sends and reads until told to stop (`true`) or the connection ends (`false`).
async fn drive(
    ws: &mut Ws,
    session: &mut Session,
    bell: &Notify,
    ctrl: &mut watch::Receiver<Control>,
    dialect: Dialect,
) -> bool {
    let mut batch = Vec::new();
    // The run may have moved on while this connection was dialling.
    let mut control = *ctrl.borrow_and_update();
    loop {
        match control {
            Control::Connecting => {}
            Control::Run { start_ns } => session.start(start_ns),
            Control::Stop => return true,
        }
        tokio::select! {
            // Control first, then sending: the schedule matters more than reading promptly,
            // and reading late only inflates latencies, which is what it then shows.
            biased;
            changed = ctrl.changed() => {
                control = match changed {
                    Ok(()) => *ctrl.borrow_and_update(),
                    // The run is gone: stop.
                    Err(_) => Control::Stop,
                };
            }
            () = bell.notified() => {
                // Rings may have merged while this task was busy: send everything now due.
                session.take_due(clock::now_ns(), &mut batch);
                if write_all(ws, &mut batch).await.is_err() {
                    return false;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) if dialect == Dialect::Socketio => {
                    match eio::classify(&text) {
                        eio::Packet::Ping => {
                            let mut pong = vec![eio::PONG.to_owned()];
                            if write_all(ws, &mut pong).await.is_err() {
                                return false;
                            }
                        }
                        eio::Packet::Close => return false,
                        _ => session.on_text(&text, clock::now_ns()),
                    }
                }
                Some(Ok(Message::Text(text))) => session.on_text(&text, clock::now_ns()),
                // Pings are answered by tungstenite on the next write or flush.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(_))) => session.on_unparsed(),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
            },
        }
    }
}

/// Writes a batch of frames with one flush (one syscall for a backlog, not one per frame).
async fn write_all(ws: &mut Ws, batch: &mut Vec<String>) -> Result<(), WsError> {
    for text in batch.drain(..) {
        ws.feed(Message::text(text)).await?;
    }
    ws.flush().await
}

/// TCP connect, upgrade, and wait for this user's welcome. Errors are short tally keys.
async fn open(spec: &Spec, dial: &Dial) -> Result<Ws, String> {
    let tcp = connect_tcp(spec.target.addr, dial.source_ip)
        .await
        .map_err(|e| format!("tcp: {:?}", e.kind()))?;
    // Small frames, latency measured: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let url = match dial.dialect {
        Dialect::Connect => with_token(&spec.target.url, &spec.token),
        Dialect::Socketio => spec.target.url.clone(),
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(dial.ws))
        .await
        .map_err(|e| describe(&e))?;
    if dial.dialect == Dialect::Socketio {
        return socketio_handshake(ws, &spec.token).await;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match parse_server(&text) {
                    Ok(ServerFrame::Welcome { user }) if user == spec.user => Ok(ws),
                    Ok(ServerFrame::Welcome { .. }) => Err("welcome for another user".into()),
                    _ => Err("first frame is not a welcome".into()),
                }
            }
            Some(Ok(Message::Close(_))) | None => return Err("closed before welcome".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(describe(&e)),
        }
    }
}

/// Engine.IO open, then the Socket.IO connect with the token as auth, until the server accepts.
async fn socketio_handshake(mut ws: Ws, token: &str) -> Result<Ws, String> {
    let mut sent = false;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match eio::classify(&text) {
                eio::Packet::Open if !sent => {
                    sent = true;
                    ws.send(Message::text(eio::connect_packet(token)))
                        .await
                        .map_err(|e| describe(&e))?;
                }
                eio::Packet::Ping => {
                    let _ = ws.send(Message::text(eio::PONG)).await;
                }
                eio::Packet::Connected if sent => return Ok(ws),
                eio::Packet::ConnectError(_) => return Err("socket.io connect refused".into()),
                _ => return Err("unexpected packet before connect".into()),
            },
            Some(Ok(Message::Close(_))) | None => return Err("closed before connect".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(describe(&e)),
        }
    }
}

/// First and one-past-last source port the generator binds explicitly: below Linux's ephemeral
/// range (32768-60999), where servers started next to a load run (tests, `perf faults`) get
/// their free ports. A client bound to the port a server was just given makes that server's
/// listen fail (seen as routers exiting at start-up while a soak ran). 22,768 ports still
/// cover the 18,000 connections of one process.
const PORT_LO: u32 = 10_000;
const PORT_HI: u32 = 32_768;
/// Next explicit source port (offset per process, so workers sharing a source address rarely
/// collide).
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

fn next_port() -> u16 {
    use std::sync::atomic::Ordering::Relaxed;
    let _ = NEXT_PORT.compare_exchange(u32::MAX, std::process::id() * 7919, Relaxed, Relaxed);
    let n = NEXT_PORT.fetch_add(1, Relaxed);
    (PORT_LO + n % (PORT_HI - PORT_LO)) as u16
}

/// TCP connect, from `source` if given. Each connection first binds an explicit source port
/// from a rotating range: letting the kernel pick one costs a scan of the ports in use towards
/// the same destination (`__inet_hash_connect`), which made the generator, not the server, the
/// bottleneck of an 18,000-client connect storm (80% of its CPU). A port that is taken is
/// skipped; after a few misses the kernel picks.
async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let src = source.unwrap_or(match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    for _ in 0..8 {
        let sock = new_socket(src)?;
        if sock.bind(SocketAddr::new(src, next_port())).is_err() {
            continue;
        }
        match sock.connect(addr).await {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                continue
            }
            other => return other,
        }
    }
    let Some(src) = source else {
        return TcpStream::connect(addr).await;
    };
    let sock = new_socket(src)?;
    if src.is_ipv4() {
        use std::os::fd::AsRawFd as _;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int. Failing only
        // means the port is picked at bind time (fewer ports per source address).
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    sock.bind(SocketAddr::new(src, 0))?;
    sock.connect(addr).await
}

fn new_socket(src: IpAddr) -> std::io::Result<TcpSocket> {
    match src {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// `url` with `token=` added to its query.
pub fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

/// A short, low-cardinality description of a WebSocket error, for the failure tally.
fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!("http {}", resp.status().as_u16()),
        WsError::Io(io) => format!("io: {:?}", io.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".into(),
        WsError::Protocol(p) => format!("protocol: {p}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_goes_into_the_query() {
        assert_eq!(
            with_token("ws://h:1/ws", "a.b.c"),
            "ws://h:1/ws?token=a.b.c"
        );
        assert_eq!(
            with_token("ws://h:1/ws?x=1", "a.b.c"),
            "ws://h:1/ws?x=1&token=a.b.c"
        );
    }
}
