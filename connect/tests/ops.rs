//! End to end, operations: admin endpoints and metrics, rate limiting, SIGTERM drains of a
//! gateway and of a router (no send is left without an outcome).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use support::*;

fn metric(body: &str, line_prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn admin_endpoints_and_metrics() {
    let stack = Stack::start(2, 60);
    let gw = &stack.gateways[0];
    assert_eq!(gw.admin_get("/livez").0, 200);
    assert_eq!(gw.admin_get("/readyz").0, 200);
    assert_eq!(stack.router.admin_get("/readyz").0, 200);
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    let mut bob = Client::connect(stack.gw_ports[1], "bob");
    for i in 0..5 {
        alice.send_to("bob", &format!("m{i}"), json!(i));
    }
    for _ in 0..5 {
        assert_eq!(alice.recv_type("ack")["status"], "delivered");
        bob.recv_type("message");
    }
    alice.send_raw("nope");
    alice.recv_type("error");
    let (status, m) = gw.admin_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metric(&m, "connect_gateway_acks_total{status=\"delivered\"}") >= 5.0,
        "{m}"
    );
    assert!(metric(&m, "connect_gateway_connections{") >= 1.0, "{m}");
    // Alice's send queue and the link to the router.
    assert!(metric(&m, "connect_gateway_client_queues ") >= 1.0, "{m}");
    assert!(metric(&m, "connect_gateway_link_queues ") >= 1.0, "{m}");
    assert!(m.contains("\nconnect_gateway_client_queue_bytes "), "{m}");
    assert!(
        metric(&m, "connect_gateway_client_errors_total") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "connect_registry_seconds_count{op=\"register\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "connect_io_backend{"),
        1.0,
        "exactly one backend: {m}"
    );
    let (_, rm) = stack.router.admin_get("/metrics");
    assert!(metric(&rm, "connect_router_link_queues ") >= 1.0, "{rm}");
    assert!(
        metric(&rm, "connect_router_acks_total{status=\"delivered\"}") >= 5.0,
        "{rm}"
    );
    assert!(
        metric(&rm, "connect_registry_seconds_count{op=\"lookup\"}") >= 5.0,
        "{rm}"
    );
}

#[test]
fn rate_limit_answers_every_send_once() {
    let stack = Stack::start_with(1, 60, &["--msg-rate", "5", "--msg-burst", "10"]);
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    let _bob = Client::connect(stack.gw_ports[0], "bob");
    const N: usize = 40;
    for i in 0..N {
        alice.send_to("bob", &format!("r{i}"), json!(i));
    }
    let mut outcomes: HashMap<String, String> = HashMap::new();
    while outcomes.len() < N {
        let v = alice.recv();
        let kind = match v["type"].as_str() {
            Some("ack") => v["status"].as_str().unwrap().to_string(),
            Some("error") => v["code"].as_str().unwrap().to_string(),
            _ => continue,
        };
        let id = v["id"]
            .as_str()
            .expect("outcome carries the id")
            .to_string();
        assert!(
            outcomes.insert(id.clone(), kind).is_none(),
            "two outcomes for {id}"
        );
    }
    let limited = outcomes.values().filter(|k| *k == "rate_limited").count();
    let delivered = outcomes.values().filter(|k| *k == "delivered").count();
    assert!(limited >= 20, "{outcomes:?}");
    assert!(delivered >= 10, "the burst goes through: {outcomes:?}");
    assert!(alice.try_recv(Duration::from_millis(300)).is_none());
}

#[test]
fn gateway_drain_on_sigterm() {
    let mut stack = Stack::start(2, 60);
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    let mut bob = Client::connect(stack.gw_ports[1], "bob");
    alice.send_to("bob", "before", json!(0));
    assert_eq!(alice.recv_type("ack")["status"], "delivered");
    bob.recv_type("message");

    // Bob's gateway drains while alice keeps sending to him.
    const N: usize = 200;
    for i in 0..N / 2 {
        alice.send_to("bob", &format!("d{i}"), json!(i));
    }
    let gw1 = &mut stack.gateways[1];
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(gw1.child.id() as i32, libc::SIGTERM);
    }
    for i in N / 2..N {
        alice.send_to("bob", &format!("d{i}"), json!(i));
    }
    // Bob is asked to reconnect: close 1012 with a delay hint.
    let close = loop {
        match bob.ws.read() {
            Ok(tungstenite::Message::Close(f)) => break f.expect("close frame"),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(u16::from(close.code), 1012);
    assert!(
        close.reason.starts_with("reconnect_after_ms="),
        "{}",
        close.reason
    );
    let st = gw1.signal_and_wait(0, Duration::from_secs(7));
    assert!(st.success(), "{st:?}");

    // Every send got exactly one ack.
    let mut acks = HashMap::new();
    while acks.len() < N {
        let a = alice.recv_type("ack");
        let id = a["id"].as_str().unwrap().to_string();
        assert!(
            acks.insert(id, a["status"].to_string()).is_none(),
            "duplicate ack"
        );
    }
    assert!(alice.try_recv(Duration::from_millis(300)).is_none());
    // The drained sessions were deregistered: bob is offline now, not after the TTL.
    alice.send_to("bob", "after", json!(1));
    assert_eq!(alice.recv_type("ack")["status"], "offline");
}

#[test]
fn router_drain_on_sigterm_acks_everything() {
    let mut stack = Stack::start(2, 60);
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    let mut bob = Client::connect(stack.gw_ports[1], "bob");
    const N: usize = 300;
    for i in 0..N {
        alice.send_to("bob", &format!("x{i}"), json!(i));
        if i == N / 2 {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(stack.router.child.id() as i32, libc::SIGTERM);
            }
        }
    }
    let mut statuses: HashMap<String, usize> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N {
        let a = alice.recv_type("ack");
        assert!(
            seen.insert(a["id"].as_str().unwrap().to_string()),
            "duplicate ack"
        );
        let key = match a["reason"].as_str() {
            Some(r) => format!("{}: {r}", a["status"].as_str().unwrap()),
            None => a["status"].as_str().unwrap().to_string(),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let delivered = statuses.get("delivered").copied().unwrap_or(0);
    // What was acked delivered really arrived, in order.
    let mut last = -1i64;
    for _ in 0..delivered {
        let m = bob.recv_type("message");
        let n = m["body"].as_i64().unwrap();
        assert!(n > last, "out of order");
        last = n;
    }
    // A graceful drain: the gateway learns of it (goaway) before the link goes, so nothing is
    // failed as "link lost"; sends after the goaway find no router and are failed at once.
    for k in statuses.keys() {
        assert!(
            k == "delivered" || k == "failed: no router available",
            "{statuses:?}"
        );
    }
    assert!(delivered > 0, "{statuses:?}");
    let st = stack.router.signal_and_wait(0, Duration::from_secs(7));
    assert!(st.success(), "{st:?}");
}

/// Under a seccomp filter that denies io_uring (as on Fargate), `--io=uring` refuses to start
/// with a clear error and `--io=auto` falls back to epoll and serves.
#[test]
fn io_uring_denied_falls_back_to_epoll() {
    let out = std::process::Command::new(bin("no-uring"))
        .arg(bin("router"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--registry",
            "memory://",
            "--io",
            "uring",
        ])
        .args(["--admin-listen", "off"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is unavailable"), "{err}");

    let port = testkit::free_port();
    let conn = Proc::start_with_stderr(
        "connect",
        "no-uring",
        &[
            bin("connect").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--router-listen".into(),
            "127.0.0.1:0".into(),
            "--jwt-secret".into(),
            SECRET.into(),
        ],
        "Ctrl-C stops",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !conn.stderr_log().contains("io=\"epoll\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no epoll in the log: {}",
            conn.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alice = Client::connect(port, "alice");
    let mut bob = Client::connect(port, "bob");
    alice.send_to("bob", "e1", json!("over epoll"));
    assert_eq!(bob.recv_type("message")["body"], "over epoll");
    assert_eq!(alice.recv_type("ack")["status"], "delivered");
}

/// `--tls-cert/--tls-key`: the gateway terminates TLS itself (deployments without an ALB).
#[test]
fn gateway_terminates_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    let dir = std::env::temp_dir().join(format!("connect-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = testkit::tls::make_certs(&dir);
    let (cert, key) = (
        certs.cert.display().to_string(),
        certs.key.display().to_string(),
    );
    let stack = Stack::start_with(1, 60, &["--tls-cert", &cert, "--tls-key", &key]);
    let port = stack.gw_ports[0];

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca).unwrap())
        .unwrap();
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let connect = |user: &str| {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let tls =
            rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let stream = rustls::StreamOwned::new(tls, tcp);
        let url = format!("wss://localhost:{port}/ws?token={}", token(user));
        let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("wss handshake");
        let welcome = read_json(&mut ws);
        assert_eq!(welcome["type"], "welcome");
        ws
    };
    let mut alice = connect("alice");
    let mut bob = connect("bob");
    let send = serde_json::json!({"type":"send","id":"t1","to":"bob","body":"over tls"});
    alice
        .send(tungstenite::Message::text(send.to_string()))
        .unwrap();
    let m = loop {
        let v = read_json(&mut bob);
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(m["body"], "over tls");
    let ack = read_json(&mut alice);
    assert_eq!(
        (ack["type"].as_str(), ack["status"].as_str()),
        (Some("ack"), Some("delivered"))
    );

    // A plain-text client on the TLS port gets nowhere (and the gateway keeps serving).
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    use std::io::{Read, Write};
    let _ = plain.write_all(upgrade_request("/ws", "").as_bytes());
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    alice
        .send(tungstenite::Message::text(send.to_string()))
        .unwrap();
    assert_eq!(read_json(&mut bob)["body"], "over tls");
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_json<S: std::io::Read + std::io::Write>(
    ws: &mut tungstenite::WebSocket<S>,
) -> serde_json::Value {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            _ => continue,
        }
    }
}

/// A client that reads too slowly is closed with 1008 once `--client-queue` bytes wait for it;
/// the sender keeps getting one ack per send throughout.
#[test]
fn slow_consumer_gets_1008() {
    let stack = Stack::start_with(1, 60, &["--client-queue", "65536"]);
    let port = stack.gw_ports[0];
    let mut alice = Client::connect(port, "alice");
    let mut bob = Client::connect(port, "bob");
    let body = "z".repeat(4000);
    let mut sent = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Bob reads nothing until the gateway has given up on him.
    loop {
        for _ in 0..50 {
            alice.send_to("bob", &format!("s{sent}"), json!(body));
            sent += 1;
        }
        for _ in 0..50 {
            alice.recv_type("ack");
        }
        let (_, m) = stack.gateways[0].admin_get("/metrics");
        if metric(&m, "connect_gateway_drops_total{reason=\"slow_consumer\"}") >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never dropped after {sent} sends"
        );
    }
    let code = loop {
        match bob.ws.read() {
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1008));
    // Alice is unaffected.
    alice.send_to("nobody", "after", json!(1));
    assert_eq!(alice.recv_type("ack")["status"], "offline");
}

/// A stalled router (SIGSTOP): its pending sends fail within three keep-alive periods, not
/// after the 10 s send timeout, and service resumes once it continues.
#[test]
fn stalled_router_is_detected() {
    let stack = Stack::start_with(1, 60, &["--link-keepalive-ms", "500"]);
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    let mut bob = Client::connect(stack.gw_ports[0], "bob");
    let pid = stack.router.child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let t = std::time::Instant::now();
    alice.send_to("bob", "stalled", json!(1));
    let ack = alice.recv_type("ack");
    assert_eq!(ack["status"], "failed", "{ack}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        alice.send_to("bob", "again", json!(2));
        if alice.recv_type("ack")["status"] == "delivered" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // `failed` means "outcome unknown": the stalled router may still deliver the first message
    // once it continues (it was in its receive buffer). The retry arrives either way.
    loop {
        let body = bob.recv_type("message")["body"].clone();
        if body == 2 {
            break;
        }
        assert_eq!(body, 1);
    }
}

/// `--echo-endpoint` (for Autobahn): `/echo` echoes text and binary messages without a token;
/// without the flag it does not exist.
#[test]
fn echo_endpoint_only_when_enabled() {
    let stack = Stack::start_with(1, 60, &["--echo-endpoint"]);
    let port = stack.gw_ports[0];
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let (mut ws, _) = tungstenite::client(url.as_str(), tcp).expect("echo handshake");
    ws.send(tungstenite::Message::text("héllo")).unwrap();
    ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = ws.read().unwrap();
        if m.is_text() || m.is_binary() {
            got.push(m);
        }
    }
    assert_eq!(got[0], tungstenite::Message::text("héllo"));
    assert_eq!(got[1], tungstenite::Message::binary(vec![0u8, 1, 2, 255]));

    let plain = Stack::start(1, 60);
    assert_eq!(
        http_status(plain.gw_ports[0], &upgrade_request("/echo", "")),
        404
    );
}

/// The internal port takes frames only from a peer that proves the link secret: a forged
/// router that skips the challenge, or answers it with the wrong secret, is disconnected and
/// nothing it sent is delivered.
#[test]
fn internal_port_rejects_unauthenticated_peers() {
    use bytes::BytesMut;
    use std::io::{Read, Write};
    use wire::frame::{self, Role};

    let stack = Stack::start(1, 60);
    let mut bob = Client::connect(stack.gw_ports[0], "bob");
    let sid = u64::from_str_radix(bob.welcome["session"].as_str().unwrap(), 16).unwrap();
    // "gateway listening on A (internal [B, C])"
    let line = &stack.gateways[0].ready_line;
    let inner = line
        .split_once("internal [")
        .unwrap()
        .1
        .trim_end_matches(")")
        .trim_end_matches(']');
    let internal: Vec<std::net::SocketAddr> =
        inner.split(", ").map(|a| a.parse().unwrap()).collect();
    assert!(!internal.is_empty(), "{line}");
    let forged = br#"{"type":"message","id":"x","from":"mallory","body":"forged","ts":1}"#;

    let closed = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("still open after 10 s: {e}"),
                Ok(_) => continue, // the gateway's own Hello/Challenge
            }
        }
    };
    for addr in &internal {
        // 1. No proof at all.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut out = BytesMut::new();
        frame::encode_hello(
            &mut out,
            frame::PROTOCOL_VERSION,
            Role::Router,
            "mallory",
            0,
        );
        frame::encode_deliver(&mut out, 1, "bob", &[sid], forged);
        s.write_all(&out).unwrap();
        assert!(closed(&mut s), "unauthenticated peer kept");

        // 2. A proof made with the wrong secret.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rx = BytesMut::new();
        let nonce = loop {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "gateway closed before its challenge");
            rx.extend_from_slice(&buf[..n]);
            let mut found = None;
            while let Some(f) = frame::decode(&mut rx, frame::DEFAULT_MAX_FRAME).unwrap() {
                if let wire::Frame::Challenge { nonce } = f {
                    found = Some(nonce);
                }
            }
            if let Some(n) = found {
                break n;
            }
        };
        let wrong: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"not-the-link-secret"[..]);
        let mac = auth::LinkAuth::new(Some(wrong), Role::Router as u8, 7)
            .prove(nonce)
            .unwrap();
        let mut out = BytesMut::new();
        frame::encode_hello(
            &mut out,
            frame::PROTOCOL_VERSION,
            Role::Router,
            "mallory",
            0,
        );
        frame::encode_proof(&mut out, &mac);
        frame::encode_deliver(&mut out, 2, "bob", &[sid], forged);
        s.write_all(&out).unwrap();
        assert!(closed(&mut s), "wrong-secret peer kept");
    }
    assert!(
        bob.try_recv(Duration::from_millis(500)).is_none(),
        "a forged delivery reached the client"
    );
    // The real router still delivers.
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    alice.send_to("bob", "real", json!("genuine"));
    assert_eq!(bob.recv_type("message")["body"], "genuine");
}
