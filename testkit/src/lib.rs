//! Test helpers shared by every Connect crate's tests: throwaway `redis-server`s (one node,
//! one node with TLS and a password, or a 6-node Redis Cluster) on free loopback ports, and a
//! blocking one-shot Redis command for looking at what Redis holds.
//!
//! Std only, no async runtime: tests running under glommio (or none) can use it alike.
//!
//! # Layout
//! - [`RedisServer`]: spawns `redis-server` (the binary named by `CONNECT_REDIS_SERVER`, else
//!   `redis-server` on `PATH`) with no persistence in its own temporary directory, waits for
//!   `PING`, and kills it on drop; `stop`/`restart` simulate an outage on the same port.
//!   [`RedisServer::start_tls`] adds a TLS port with a throwaway CA and a password.
//! - [`cluster`]: [`RedisCluster`], 3 masters + 3 replicas, with failover and slot-migration
//!   helpers.
//! - [`tls`]: the throwaway CA and server certificate, made with the `openssl` CLI.
//! - [`free_port`]: a loopback TCP port that was free a moment ago.
//! - [`redis_cmd`]: sends one command over a fresh `std::net::TcpStream` and returns the raw
//!   RESP reply text (e.g. `":1500\r\n"` for a `PTTL`); [`redis_cmd_auth`] logs in first.

pub mod cluster;
pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use cluster::RedisCluster;

/// Environment variable naming the `redis-server` binary to run (default: `redis-server`).
pub const ENV_REDIS_SERVER: &str = "CONNECT_REDIS_SERVER";
/// How long [`RedisServer::start`] waits for the server to answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of [`redis_cmd`].
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback TCP port that was free when this returned (bind `127.0.0.1:0`, read, drop).
///
/// Another process may take it before the caller binds it; [`RedisServer::start`] retries
/// with a new port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// `n` distinct loopback ports that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen, so the kernel cannot hand one out twice.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("local_addr of a bound listener")
                .port()
        })
        .collect()
}

/// A temporary directory unique to this process and call, created empty.
pub(crate) fn temp_dir(what: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "connect-testkit-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("testkit: create {}: {e}", dir.display()));
    dir
}

/// The `redis-server` binary to run.
pub(crate) fn redis_binary() -> String {
    std::env::var(ENV_REDIS_SERVER).unwrap_or_else(|_| "redis-server".into())
}

/// Sends one command (as a RESP array of bulk strings) to the Redis at `addr` ("host:port") and
/// returns its raw reply text, e.g. `"+OK\r\n"`, `":-2\r\n"`, `"$3\r\nbar\r\n"`.
///
/// Panics on connection or I/O errors: this is for tests.
pub fn redis_cmd(addr: &str, args: &[&str]) -> String {
    redis_cmd_auth(addr, None, args)
}

/// [`redis_cmd`] on a server with a password: sends `AUTH <password>` first (checking its
/// `+OK`), then the command, on one connection.
pub fn redis_cmd_auth(addr: &str, password: Option<&str>, args: &[&str]) -> String {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("redis_cmd: connect {addr}: {e}"));
    stream.set_read_timeout(Some(CMD_TIMEOUT)).ok();
    stream.set_write_timeout(Some(CMD_TIMEOUT)).ok();
    let mut req = Vec::new();
    if let Some(pw) = password {
        encode(&mut req, &["AUTH", pw]);
    }
    encode(&mut req, args);
    stream
        .write_all(&req)
        .unwrap_or_else(|e| panic!("redis_cmd: write to {addr}: {e}"));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut skip = usize::from(password.is_some());
    loop {
        if let Some(end) = reply_end(&buf, 0) {
            if skip > 0 {
                assert_eq!(&buf[..end], b"+OK\r\n", "redis_cmd: AUTH on {addr}");
                buf.drain(..end);
                skip -= 1;
                continue;
            }
            buf.truncate(end);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        // Test threads may run an executor whose signals interrupt blocking reads: retry.
        let n = loop {
            match stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        }
        .unwrap_or_else(|e| panic!("redis_cmd {args:?}: read from {addr}: {e}"));
        if n == 0 {
            panic!(
                "redis_cmd {args:?}: {addr} closed the connection after {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The text of a bulk-string reply from [`redis_cmd`] (e.g. `CLUSTER NODES`, `INFO`); panics
/// on any other reply.
pub fn redis_bulk(addr: &str, args: &[&str]) -> String {
    let reply = redis_cmd(addr, args);
    bulk_text(&reply).unwrap_or_else(|| panic!("redis_bulk {args:?} on {addr}: {reply:?}"))
}

fn bulk_text(reply: &str) -> Option<String> {
    let rest = reply.strip_prefix('$')?;
    let (len, body) = rest.split_once("\r\n")?;
    let len: usize = len.parse().ok()?;
    body.get(..len).map(str::to_string)
}

fn encode(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// End offset of the complete RESP2 value starting at `at`, or `None` if more bytes are needed.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after = line_end + 2;
    let header = std::str::from_utf8(buf.get(at + 1..line_end)?).ok()?;
    match buf[at] {
        b'$' => {
            let len: i64 = header.parse().ok()?;
            if len < 0 {
                return Some(after);
            }
            let end = after + len as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' => {
            let len: i64 = header.parse().ok()?;
            let mut pos = after;
            for _ in 0..len.max(0) {
                pos = reply_end(buf, pos)?;
            }
            Some(pos)
        }
        _ => Some(after),
    }
}

/// TLS set-up of a [`RedisServer::start_tls`] server.
struct TlsSetup {
    port: u16,
    files: tls::CertFiles,
}

/// A `redis-server` child process on `127.0.0.1:<port>` with persistence off and its own
/// temporary directory. Killed (and its directory removed) on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    binary: String,
    child: Option<Child>,
    password: Option<String>,
    tls: Option<TlsSetup>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// Panics with a message naming the binary if it cannot be run or does not answer within
    /// [`START_TIMEOUT`].
    pub fn start() -> RedisServer {
        RedisServer::start_with(None, false)
    }

    /// Starts a server with a TLS port as well as its plain one (for test inspection), both on
    /// 127.0.0.1, and `requirepass password` if given. The certificate (SAN `127.0.0.1` and
    /// `localhost`) is signed by a throwaway CA made with the `openssl` CLI in the server's
    /// temporary directory ([`RedisServer::ca_file`]); clients are not asked for certificates.
    ///
    /// Panics if `openssl` is not installed or the server does not start.
    pub fn start_tls(password: Option<&str>) -> RedisServer {
        RedisServer::start_with(password, true)
    }

    fn start_with(password: Option<&str>, tls: bool) -> RedisServer {
        let binary = redis_binary();
        let dir = temp_dir("redis");
        let files = tls.then(|| tls::make_certs(&dir));
        // The port may be taken between `free_port` and the server's bind: try a few.
        let mut last_err = String::new();
        let mut files = files;
        for _ in 0..5 {
            let ports = free_ports(2);
            let mut server = RedisServer {
                port: ports[0],
                dir: dir.clone(),
                binary: binary.clone(),
                child: None,
                password: password.map(str::to_string),
                tls: files.take().map(|files| TlsSetup {
                    port: ports[1],
                    files,
                }),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    files = server.tls.take().map(|t| t.files);
                    server.dir = PathBuf::new(); // keep the shared dir for the next try
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("testkit: could not start `{binary}`: {last_err}");
    }

    /// The (plain) TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:<port>"` (plain TCP).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `"redis://[:<password>@]127.0.0.1:<port>"` (plain TCP).
    pub fn url(&self) -> String {
        format!("redis://{}127.0.0.1:{}", self.userinfo(), self.port)
    }

    /// The password set with `requirepass`, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The TLS port of a [`RedisServer::start_tls`] server.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.port)
    }

    /// The PEM file of the throwaway CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.files.ca.as_path())
    }

    /// `"rediss://[:<password>@]127.0.0.1:<tls port>?ca=<ca file>"` of a TLS server.
    pub fn tls_url(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(format!(
            "rediss://{}127.0.0.1:{}?ca={}",
            self.userinfo(),
            tls.port,
            tls.files.ca.display()
        ))
    }

    fn userinfo(&self) -> String {
        match &self.password {
            Some(pw) => format!(":{pw}@"),
            None => String::new(),
        }
    }

    /// [`redis_cmd`] on this server's plain port, logging in if it has a password.
    pub fn cmd(&self, args: &[&str]) -> String {
        redis_cmd_auth(&self.addr(), self.password.as_deref(), args)
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Does nothing if it is stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        // The kernel may need a moment to release the port; retry until START_TIMEOUT.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("testkit: could not restart `{}`: {e}", self.binary)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Removes every key (`FLUSHALL`).
    pub fn flushall(&self) {
        let reply = self.cmd(&["FLUSHALL"]);
        assert_eq!(reply, "+OK\r\n", "testkit: FLUSHALL");
    }

    /// Spawns the child on `self.port` and waits for `PING`; kills it on failure.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log);
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tls-port")
                .arg(tls.port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.files.cert)
                .arg("--tls-key-file")
                .arg(&tls.files.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.files.ca)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run `{}`: {e} (install Debian's redis-server package or set {} \
                     to the redis-server binary)",
                    self.binary, ENV_REDIS_SERVER
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The TLS port opens together with the plain one (same event loop set-up).
            if ping(&self.addr(), self.password.as_deref())
                && self.tls.as_ref().is_none_or(|t| port_open(t.port))
            {
                return Ok(());
            }
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if exited.is_some() || Instant::now() >= deadline {
                self.stop();
                let tail = log_tail(&log);
                return Err(match exited {
                    Some(status) => format!("exited ({status}) on port {}: {tail}", self.port),
                    None => format!(
                        "no PONG on port {} within {START_TIMEOUT:?}: {tail}",
                        self.port
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last lines of a server log, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    tail.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// True if `addr` answers a raw `PING` (after `AUTH` if `password` is given) with `+PONG`.
pub(crate) fn ping(addr: &str, password: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let mut req = Vec::new();
    if let Some(pw) = password {
        encode(&mut req, &["AUTH", pw]);
    }
    req.extend_from_slice(b"PING\r\n");
    if stream.write_all(&req).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    while !buf.ends_with(b"+PONG\r\n") {
        match stream.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.starts_with(b"-") || buf.len() > 64 {
            return false; // e.g. -LOADING, -NOAUTH
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_cmd_restart_stop() {
        let mut redis = RedisServer::start();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        assert_eq!(redis_cmd(&redis.addr(), &["SET", "k", "v"]), "+OK\r\n");
        assert_eq!(redis_cmd(&redis.addr(), &["GET", "k"]), "$1\r\nv\r\n");
        assert_eq!(redis_cmd(&redis.addr(), &["PTTL", "k"]), ":-1\r\n");
        assert_eq!(
            redis_cmd(&redis.addr(), &["MGET", "k", "nope"]),
            "*2\r\n$1\r\nv\r\n$-1\r\n"
        );
        let port = redis.port();
        redis.restart();
        assert_eq!(redis.port(), port);
        assert_eq!(redis_cmd(&redis.addr(), &["GET", "k"]), "$-1\r\n");
        redis_cmd(&redis.addr(), &["SET", "k", "v"]);
        redis.flushall();
        assert_eq!(redis_cmd(&redis.addr(), &["DBSIZE"]), ":0\r\n");
        redis.stop();
        assert!(!ping(&redis.addr(), None));
    }

    #[test]
    fn tls_server_with_password() {
        let redis = RedisServer::start_tls(Some("s3cret"));
        assert!(redis.ca_file().unwrap().exists());
        let url = redis.tls_url().unwrap();
        assert!(url.starts_with("rediss://:s3cret@127.0.0.1:"), "{url}");
        assert_eq!(redis.cmd(&["SET", "k", "v"]), "+OK\r\n");
        assert!(redis_cmd(&redis.addr(), &["GET", "k"]).starts_with("-NOAUTH"));
        redis.flushall();
        assert_eq!(redis.cmd(&["DBSIZE"]), ":0\r\n");
    }

    #[test]
    fn bulk_text_extracts() {
        assert_eq!(bulk_text("$3\r\nabc\r\n").as_deref(), Some("abc"));
        assert_eq!(bulk_text(":1\r\n"), None);
    }

    #[test]
    fn reply_end_needs_whole_value() {
        assert_eq!(reply_end(b"+OK\r", 0), None);
        assert_eq!(reply_end(b"+OK\r\nxx", 0), Some(5));
        assert_eq!(reply_end(b"$3\r\nab", 0), None);
        assert_eq!(reply_end(b"*2\r\n:1\r\n", 0), None);
        assert_eq!(reply_end(b"*2\r\n:1\r\n$-1\r\n", 0), Some(13));
    }
}
