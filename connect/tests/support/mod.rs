//! Test support: start the real binaries and talk to them as a client would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::{Message, WebSocket};

pub const SECRET: &str = "e2e-test-secret-0123456789";
/// The router<->gateway link secret every test process shares.
pub const LINK_SECRET: &str = "e2e-link-secret-0123456789";

/// Path of a workspace binary built next to this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the workspace binaries first (cargo build --bins)",
        p.display()
    );
    p
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// The admin port, when the process printed one.
    pub admin: Option<std::net::SocketAddr>,
    /// The stdout line that said it was ready.
    pub ready_line: String,
    /// Everything it wrote to stderr, when started with [`Proc::start_with_stderr`].
    stderr: Option<std::sync::Arc<std::sync::Mutex<String>>>,
}

impl Proc {
    /// Starts `bin` with `args` and waits until it prints a line containing `ready`.
    pub fn start(name: &str, binary: &str, args: &[String], ready: &str) -> Proc {
        Self::spawn(name, binary, args, ready, false)
    }

    /// Like [`Proc::start`], keeping stderr for [`Proc::stderr_log`].
    pub fn start_with_stderr(name: &str, binary: &str, args: &[String], ready: &str) -> Proc {
        Self::spawn(name, binary, args, ready, true)
    }

    /// What the process wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        self.stderr
            .as_ref()
            .map(|s| s.lock().unwrap().clone())
            .unwrap_or_default()
    }

    fn spawn(name: &str, binary: &str, args: &[String], ready: &str, keep_stderr: bool) -> Proc {
        // CONNECT_E2E_IO picks the event loop for the whole suite: `epoll` forces the fallback,
        // `seccomp` denies io_uring with a seccomp filter so that `--io=auto` must fall back.
        let io = match binary {
            "gateway" | "router" => std::env::var("CONNECT_E2E_IO").unwrap_or_default(),
            _ => String::new(),
        };
        let mut cmd = match io.as_str() {
            "seccomp" => {
                let mut c = Command::new(bin("no-uring"));
                c.arg(bin(binary));
                c
            }
            _ => Command::new(bin(binary)),
        };
        if io == "epoll" {
            cmd.args(["--io", "epoll"]);
        }
        if binary == "gateway" && std::env::var_os("CONNECT_LINK_STALL_MS").is_none() {
            // These stacks have one router, and the suites run in parallel on a shared CI
            // machine where a debug router can be starved of CPU for a second: the stall
            // verdict (tested by `perf faults`) would then fail sends these tests expect
            // delivered.
            cmd.env("CONNECT_LINK_STALL_MS", "3000");
        }
        let mut child = cmd
            .args(args)
            .env("CONNECT_LOG", if keep_stderr { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(if keep_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {binary}: {e}"));
        let stderr = child.stderr.take().map(|e| {
            let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let sink = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(e).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                }
            });
            log
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut admin = None;
        let ready_line = loop {
            assert!(Instant::now() < deadline, "{name} did not get ready");
            match lines.next() {
                Some(Ok(l)) if l.contains(ready) => break l,
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("admin listening on ") {
                        admin = a.trim().parse().ok();
                    }
                }
                _ => panic!("{name} exited before it was ready"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc {
            child,
            name: name.into(),
            admin,
            ready_line,
            stderr,
        }
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) and waits up to `within` for the exit.
    pub fn signal_and_wait(&mut self, sig: i32, within: Duration) -> std::process::ExitStatus {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin port; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let addr = self.admin.expect("no admin port");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        let status = r
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = r
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// SIGKILL, like a crashed task.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One router and two gateways on one Redis.
pub struct Stack {
    pub redis: testkit::RedisServer,
    pub router: Proc,
    pub gateways: Vec<Proc>,
    pub gw_ports: Vec<u16>,
}

impl Stack {
    pub fn start(gateways: usize, session_ttl: u64) -> Stack {
        Self::start_with(gateways, session_ttl, &[])
    }

    /// Like [`Stack::start`], with extra gateway flags.
    pub fn start_with(gateways: usize, session_ttl: u64, gateway_flags: &[&str]) -> Stack {
        let redis = testkit::RedisServer::start();
        let router_port = testkit::free_port();
        let router = Proc::start(
            "router",
            "router",
            &[
                "--listen".into(),
                format!("127.0.0.1:{router_port}"),
                "--registry".into(),
                redis.url(),
                "--shards".into(),
                "2".into(),
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
                "--drain-timeout".into(),
                "5".into(),
                "--link-secret".into(),
                LINK_SECRET.into(),
            ],
            "router listening",
        );
        let mut gws = Vec::new();
        let mut ports = Vec::new();
        for i in 0..gateways {
            let port = testkit::free_port();
            let mut args: Vec<String> = vec![
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
                "--drain-timeout".into(),
                "5".into(),
                "--link-secret".into(),
                LINK_SECRET.into(),
            ];
            if !gateway_flags.contains(&"--msg-rate") {
                // The tests send in bursts far above human chat.
                args.extend(["--msg-rate", "1000000", "--msg-burst", "1000000"].map(String::from));
            }
            args.extend(gateway_flags.iter().map(|s| s.to_string()));
            gws.push(Proc::start(
                &format!("gateway{i}"),
                "gateway",
                &[
                    &args[..],
                    &[
                        "--listen".into(),
                        format!("127.0.0.1:{port}"),
                        "--internal-listen".into(),
                        "127.0.0.1:0".into(),
                        "--router".into(),
                        format!("127.0.0.1:{router_port}"),
                        "--registry".into(),
                        redis.url(),
                        "--jwt-secret".into(),
                        SECRET.into(),
                        "--session-ttl".into(),
                        session_ttl.to_string(),
                        "--shards".into(),
                        "2".into(),
                        "--instance-id".into(),
                        format!("gw{i}"),
                    ],
                ]
                .concat(),
                "gateway listening",
            ));
            ports.push(port);
        }
        let s = Stack {
            redis,
            router,
            gateways: gws,
            gw_ports: ports,
        };
        // The gateways' router links connect in the background; wait until sends are routed.
        if gateway_flags.contains(&"--tls-cert") {
            // Plain probes cannot speak to a TLS port: wait for readiness instead.
            let deadline = Instant::now() + Duration::from_secs(10);
            for g in &s.gateways {
                while g.admin_get("/readyz").0 != 200 {
                    assert!(Instant::now() < deadline, "gateway never ready");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        } else {
            s.wait_routable();
        }
        s
    }

    fn wait_routable(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Several probes per gateway, so that every shard's router link is checked.
        for &p in &self.gw_ports {
            for _ in 0..8 {
                let mut c = Client::connect(p, "probe");
                loop {
                    c.send_to("nobody-at-all", "1", Value::Null);
                    let ack = c.recv_type("ack");
                    if ack["status"] == "offline" {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "gateway on {p} never routable: {ack}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

pub fn token(user: &str) -> String {
    auth::dev_token(SECRET.as_bytes(), user, 3600, now_secs())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A WebSocket client as a mobile app would be.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub welcome: Value,
}

impl Client {
    pub fn connect(port: u16, user: &str) -> Client {
        Self::connect_with_token(port, &token(user))
    }

    pub fn connect_with_token(port: u16, token: &str) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
        let (ws, _) = tungstenite::client(url.as_str(), tcp).expect("websocket handshake");
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        c.welcome = c.recv();
        assert_eq!(c.welcome["type"], "welcome", "{}", c.welcome);
        c
    }

    pub fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send_to(&mut self, to: &str, id: &str, body: Value) {
        let m = serde_json::json!({"type":"send","id":id,"to":to,"body":body});
        self.send_raw(&m.to_string());
    }

    /// Next JSON text message (panics after the read timeout).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Next message of the given type; others are returned in `skipped`.
    pub fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Reads with a short timeout; None if nothing arrived.
    pub fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        self.ws.get_mut().set_read_timeout(Some(wait)).unwrap();
        let r = match self.ws.read() {
            Ok(Message::Text(t)) => Some(serde_json::from_str(t.as_str()).expect("json")),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            Err(e) => panic!("read: {e}"),
        };
        self.ws
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        r
    }
}

/// A raw HTTP GET; returns the status code.
pub fn http_status(port: u16, request: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

pub fn upgrade_request(path_and_query: &str, extra: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}
