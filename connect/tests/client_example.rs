//! The client example (connect/examples/client.rs) and the dev mode, against real processes:
//! the example binary chats through `connect`; its reconnect logic survives a server restart
//! and follows a draining gateway's hint; the dev endpoints exist only in `connect` with the
//! embedded registry.

mod support;

#[allow(dead_code)]
#[path = "../examples/client.rs"]
mod example;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn connect_args(port: u16, router_port: u16, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--router-listen",
        &format!("127.0.0.1:{router_port}"),
        "--shards",
        "2",
        "--jwt-secret",
        SECRET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `connect` (embedded registry, dev mode) on free ports.
fn start_connect(port: u16, router_port: u16) -> Proc {
    Proc::start(
        "connect",
        "connect",
        &connect_args(port, router_port, &[]),
        "Ctrl-C stops",
    )
}

/// Waits until sends through `port` are routed (the router links come up in the background).
fn wait_routable(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..8 {
        let mut c = example::Client::new(&format!("127.0.0.1:{port}"), "probe", None);
        loop {
            let ack = c
                .send("nobody-at-all", "probe", deadline)
                .expect("probe send");
            if ack.status == "offline" {
                break;
            }
            assert!(Instant::now() < deadline, "never routable: {ack:?}");
        }
    }
}

/// GET `target`; returns the status and the body.
fn http_get(port: u16, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_owned())
}

#[test]
fn example_binary_chats_through_connect() {
    let (port, router_port) = (testkit::free_port(), testkit::free_port());
    let _server = start_connect(port, router_port);
    wait_routable(port);
    let example = bin("examples/client");
    let addr = format!("127.0.0.1:{port}");

    let mut bob = Command::new(&example)
        .args(["--url", &addr, "--user", "bob", "--listen", "--expect", "3"])
        .args(["--timeout", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the example");
    let mut bob_out = BufReader::new(bob.stdout.take().unwrap()).lines();
    let first = bob_out.next().unwrap().unwrap();
    assert!(first.starts_with("connected as bob"), "{first}");

    let alice = Command::new(&example)
        .args(["--url", &format!("http://{addr}/"), "--user", "alice"])
        .args(["--to", "bob", "--text", "hi bob", "--count", "3"])
        .output()
        .expect("running the example");
    let out = String::from_utf8_lossy(&alice.stdout);
    assert!(alice.status.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("connected as alice"), "{out}");
    for (i, line) in lines[1..].iter().enumerate() {
        let prefix = format!("ack {}: delivered in ", i + 1);
        assert!(line.starts_with(&prefix), "{out}");
    }
    assert_eq!(lines.len(), 4, "{out}");

    let got: Vec<String> = bob_out.map(Result::unwrap).collect();
    assert_eq!(
        got,
        [
            "message from alice: hi bob #1",
            "message from alice: hi bob #2",
            "message from alice: hi bob #3",
        ]
    );
    assert!(bob.wait().unwrap().success());

    // Nobody listening: `offline` is an outcome, not a failure.
    let carol = Command::new(&example)
        .args(["--url", &addr, "--user", "alice", "--to", "carol"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&carol.stdout);
    assert!(carol.status.success(), "{out}");
    assert!(out.contains("ack 1: offline in "), "{out}");
}

#[test]
fn example_client_reconnects_with_backoff_and_resends() {
    let (port, router_port) = (testkit::free_port(), testkit::free_port());
    let mut server = start_connect(port, router_port);
    wait_routable(port);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut alice = example::Client::new(&addr, "alice", None);
    alice.ensure_connected(deadline).unwrap();
    let mut bob = example::Client::new(&addr, "bob", None);
    bob.ensure_connected(deadline).unwrap();
    let first = alice.welcome["session"].clone();

    let ack = alice.send("bob", "before", deadline).unwrap();
    assert_eq!((ack.status.as_str(), ack.attempts), ("delivered", 1));
    let m = bob.recv_message(deadline).unwrap().unwrap();
    assert_eq!(m["body"]["text"], "before");

    // The server goes away and comes back on the same ports 1.5 s later. Meanwhile alice's
    // send finds the connection dead, retries the connection with growing jittered delays and
    // sends again once it is back.
    server.kill();
    let restarted = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        start_connect(port, router_port)
    });
    let t0 = Instant::now();
    let ack = loop {
        // Right after the restart the router link may not be up yet: `failed` is retried by
        // send() a few times; loop in case the link takes longer.
        let ack = alice.send("bob", "after", deadline).unwrap();
        if ack.status != "failed" {
            break ack;
        }
    };
    let _server = restarted.join().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(alice.connects, 2, "one reconnect");
    assert_ne!(alice.welcome["session"], first, "a new session");
    assert!(ack.attempts >= 2, "re-sent after the reconnect: {ack:?}");
    // Bob's own connection was lost too: at the time alice's message was routed he may or
    // may not have been back, so either outcome is right.
    assert!(
        ack.status == "delivered" || ack.status == "offline",
        "{ack:?}"
    );

    // Bob reconnects when he next reads; after that, messages flow again.
    wait_routable(port);
    let _ = bob.recv_message(Instant::now() + Duration::from_millis(500));
    assert_eq!(bob.connects, 2);
    let ack = alice.send("bob", "again", deadline).unwrap();
    assert_eq!(ack.status, "delivered");
    let mut texts = Vec::new();
    while let Some(m) = bob
        .recv_message(Instant::now() + Duration::from_secs(2))
        .unwrap()
    {
        texts.push(m["body"]["text"].as_str().unwrap().to_owned());
        if texts.last().map(String::as_str) == Some("again") {
            break;
        }
    }
    assert_eq!(texts.last().map(String::as_str), Some("again"), "{texts:?}");
}

#[test]
fn example_client_follows_a_draining_gateway() {
    let mut stack = Stack::start(2, 60);
    let (g0, g1) = (stack.gw_ports[0], stack.gw_ports[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // No load balancer here: the client is given both gateways and tries them in turn.
    let addrs = format!("127.0.0.1:{g0},127.0.0.1:{g1}");
    let mut alice = example::Client::new(&addrs, "alice", Some(token("alice")));
    alice.ensure_connected(deadline).unwrap();
    assert_eq!(alice.welcome["gateway"], "gw0");
    let mut bob = Client::connect(g1, "bob");
    assert_eq!(
        alice.send("bob", "before", deadline).unwrap().status,
        "delivered"
    );
    assert_eq!(bob.recv_type("message")["body"]["text"], "before");

    // Alice's gateway drains: sends are refused (`failed`, retried), then it closes her
    // connection with 1012 and a delay hint; she waits that long and reconnects elsewhere.
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(stack.gateways[0].child.id() as i32, libc::SIGTERM);
    }
    let mut n = 0;
    let ack = loop {
        n += 1;
        let ack = alice.send("bob", &format!("during {n}"), deadline).unwrap();
        if alice.connects == 2 && ack.status == "delivered" {
            break ack;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, reason) = alice.last_close.clone().expect("closed by the gateway");
    assert_eq!(code, 1012);
    assert!(reason.starts_with("reconnect_after_ms="), "{reason}");
    assert_eq!(alice.welcome["gateway"], "gw1");
    assert!(ack.attempts >= 1);
    let last = format!("during {n}");
    loop {
        if bob.recv_type("message")["body"]["text"] == last.as_str() {
            break;
        }
    }
    let st = stack.gateways[0].signal_and_wait(0, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
}

#[test]
fn reconnect_hints_are_read_from_1012_and_1013_only() {
    let hint = example::reconnect_hint;
    assert_eq!(
        hint(1012, "reconnect_after_ms=1500"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        hint(1012, "reconnect_after_ms=99999999"),
        Some(Duration::from_secs(30)),
        "capped"
    );
    assert_eq!(
        hint(1013, "reconnect_after_ms=2500"),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(hint(1000, "reconnect_after_ms=1500"), None);
    assert_eq!(hint(1012, "reconnect_after_ms=soon"), None);
    assert_eq!(hint(1012, ""), None);
}

#[test]
fn backoff_is_jittered_exponential_and_resets() {
    let ms = Duration::from_millis;
    let mut b = example::Backoff::new(ms(100), ms(5000), 7);
    let bases = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
    let delays: Vec<Duration> = bases.iter().map(|_| b.next_delay()).collect();
    for (d, base) in delays.iter().zip(bases) {
        assert!(
            *d >= ms(base) / 2 && *d <= ms(base),
            "{d:?} for base {base}"
        );
    }
    b.reset();
    assert!(b.next_delay() <= ms(100));
    // Two clients that failed together wait different times.
    let x = example::Backoff::new(ms(1000), ms(1000), 1).next_delay();
    let y = example::Backoff::new(ms(1000), ms(1000), 2).next_delay();
    assert_ne!(x, y);
}

#[test]
fn dedup_drops_resent_copies_and_stays_bounded() {
    let msg = |id: &str, cid: Option<&str>| -> Value {
        let body = match cid {
            Some(c) => serde_json::json!({"text": "hi", "cid": c}),
            None => serde_json::json!("hi"),
        };
        serde_json::json!({"type": "message", "id": id, "from": "alice", "body": body})
    };
    let mut d = example::Dedup::new(2);
    // A re-send has a new server id but the same cid.
    assert!(d.first_time(&example::dedup_key(&msg("s1-1", Some("a-1")))));
    assert!(!d.first_time(&example::dedup_key(&msg("s2-1", Some("a-1")))));
    // Without a cid the server id is the key.
    assert!(d.first_time(&example::dedup_key(&msg("s1-2", None))));
    assert!(!d.first_time(&example::dedup_key(&msg("s1-2", None))));
    // Bounded: the oldest key is forgotten.
    assert!(d.first_time("k3"));
    assert!(d.first_time(&example::dedup_key(&msg("s3-1", Some("a-1")))));
}

#[test]
fn dev_endpoints_only_in_connect_with_the_embedded_registry() {
    // `connect` with memory://: the demo page, tokens, presence.
    let (port, router_port) = (testkit::free_port(), testkit::free_port());
    let server = start_connect(port, router_port);
    let (status, body) = http_get(port, "/");
    assert_eq!(status, 200);
    assert!(body.contains("Connect demo chat"), "{body}");
    assert_eq!(http_get(port, "/demo").0, 200);
    let (status, body) = http_get(port, "/dev/token?user=dora");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["user"], "dora");
    let claims = auth::verify_hs256(
        SECRET.as_bytes(),
        v["token"].as_str().unwrap(),
        now_secs(),
        0,
    )
    .unwrap();
    assert_eq!(claims.sub, "dora");
    assert_eq!(http_get(port, "/dev/token?user=no%20spaces").0, 400);
    assert_eq!(http_get(port, "/dev/token").0, 400);
    assert_eq!(http_get(port, "/dev/online?users=a,,b%zz").0, 400);

    let dora = Client::connect_with_token(port, v["token"].as_str().unwrap());
    let (status, body) = http_get(port, "/dev/online?users=dora,eve,dora");
    assert_eq!((status, body.as_str()), (200, r#"{"online":["dora"]}"#));
    drop(dora);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(port, "/dev/online?users=dora").1 != r#"{"online":[]}"# {
        assert!(Instant::now() < deadline, "dora still online after closing");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);

    // `connect` with a real Redis: no dev mode.
    let redis = testkit::RedisServer::start();
    let (port, router_port) = (testkit::free_port(), testkit::free_port());
    let _server = Proc::start(
        "connect-redis",
        "connect",
        &connect_args(port, router_port, &["--registry", &redis.url()]),
        "Ctrl-C stops",
    );
    for target in [
        "/",
        "/demo",
        "/dev/token?user=dora",
        "/dev/online?users=dora",
    ] {
        assert_eq!(http_get(port, target).0, 404, "{target} with Redis");
    }

    // The gateway binary: no flag or variable turns dev mode on, even with memory://.
    let port = testkit::free_port();
    let _gw = Proc::start(
        "gateway",
        "gateway",
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--internal-listen".into(),
            "127.0.0.1:0".into(),
            "--router".into(),
            // Nothing listens on port 1: the router link just keeps retrying.
            "127.0.0.1:1".into(),
            "--registry".into(),
            "memory://".into(),
            "--jwt-secret".into(),
            SECRET.into(),
            "--shards".into(),
            "1".into(),
        ],
        "gateway listening",
    );
    for target in [
        "/",
        "/demo",
        "/dev/token?user=dora",
        "/dev/online?users=dora",
    ] {
        assert_eq!(http_get(port, target).0, 404, "{target} on a gateway");
    }
    assert_eq!(http_get(port, "/healthz").0, 200);
}

#[test]
fn rust_excerpts_in_docs_are_verbatim_from_the_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("../docs/clients.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/client.rs")).unwrap();
    let blocks: Vec<&str> = docs
        .split("```rust\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""))
        .collect();
    assert!(blocks.len() >= 3, "{} rust blocks", blocks.len());
    for b in blocks {
        assert!(
            example.contains(b),
            "docs/clients.md shows code that is not in examples/client.rs:\n{b}"
        );
    }
}
