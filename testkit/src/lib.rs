//! Test helpers shared by every Connect crate's tests: a throwaway `redis-server` on a free
//! loopback port, and a blocking one-shot Redis command for looking at what Redis holds.
//!
//! Std only, no async runtime: tests running under glommio (or none) can use it alike.
//!
//! # Layout
//! - [`RedisServer`]: spawns `redis-server` (the binary named by `CONNECT_REDIS_SERVER`, else
//!   `redis-server` on `PATH`) with no persistence in its own temporary directory, waits for
//!   `PING`, and kills it on drop; `stop`/`restart` simulate an outage on the same port.
//! - [`free_port`]: a loopback TCP port that was free a moment ago.
//! - [`redis_cmd`]: sends one command over a fresh `std::net::TcpStream` and returns the raw
//!   RESP reply text (e.g. `":1500\r\n"` for a `PTTL`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

/// Sends one command (as a RESP array of bulk strings) to the Redis at `addr` ("host:port") and
/// returns its raw reply text, e.g. `"+OK\r\n"`, `":-2\r\n"`, `"$3\r\nbar\r\n"`.
///
/// Panics on connection or I/O errors: this is for tests.
pub fn redis_cmd(addr: &str, args: &[&str]) -> String {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("redis_cmd: connect {addr}: {e}"));
    stream.set_read_timeout(Some(CMD_TIMEOUT)).ok();
    stream.set_write_timeout(Some(CMD_TIMEOUT)).ok();
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        req.extend_from_slice(arg.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    stream
        .write_all(&req)
        .unwrap_or_else(|e| panic!("redis_cmd: write to {addr}: {e}"));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = reply_end(&buf, 0) {
            buf.truncate(end);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        let n = stream
            .read(&mut chunk)
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

/// A `redis-server` child process on `127.0.0.1:<port>` with persistence off and its own
/// temporary directory. Killed (and its directory removed) on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    binary: String,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// Panics with a message naming the binary if it cannot be run or does not answer within
    /// [`START_TIMEOUT`].
    pub fn start() -> RedisServer {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let binary = std::env::var(ENV_REDIS_SERVER).unwrap_or_else(|_| "redis-server".into());
        let dir = std::env::temp_dir().join(format!(
            "connect-testkit-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("testkit: create {}: {e}", dir.display()));
        // The port may be taken between `free_port` and the server's bind: try a few.
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: dir.clone(),
                binary: binary.clone(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    server.dir = PathBuf::new(); // keep the shared dir for the next try
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("testkit: could not start `{binary}`: {last_err}");
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:<port>"`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `"redis://127.0.0.1:<port>"`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let reply = redis_cmd(&self.addr(), &["FLUSHALL"]);
        assert_eq!(reply, "+OK\r\n", "testkit: FLUSHALL");
    }

    /// Spawns the child on `self.port` and waits for `PING`; kills it on failure.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
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
            if ping(&self.addr()) {
                return Ok(());
            }
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if exited.is_some() || Instant::now() >= deadline {
                self.stop();
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
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

/// True if `addr` answers a raw `PING` with `+PONG`.
fn ping(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    let mut got = 0;
    while got < 5 {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    buf.starts_with(b"+PONG")
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
        assert!(!ping(&redis.addr()));
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
