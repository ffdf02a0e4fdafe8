//! End to end: real `redis-server`, one `router` and two `gateway` processes, clients over
//! WebSocket. Exercises the contract in docs/protocol.md.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[test]
fn chat_across_gateways() {
    let stack = Stack::start(2, 60);
    let (g1, g2) = (stack.gw_ports[0], stack.gw_ports[1]);

    // Health and auth before the upgrade.
    assert_eq!(
        http_status(g1, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        200
    );
    assert_eq!(
        http_status(g1, &upgrade_request("/ws", "")),
        401,
        "missing token"
    );
    let forged = auth::dev_token(b"some-other-secret-xxxxxxxx", "alice", 3600, now_secs());
    assert_eq!(
        http_status(g1, &upgrade_request(&format!("/ws?token={forged}"), "")),
        401,
        "wrong key"
    );
    let expired = auth::sign_hs256(
        SECRET.as_bytes(),
        &auth::Claims {
            sub: "alice".into(),
            exp: now_secs() - 600,
            nbf: None,
            iat: None,
        },
    );
    assert_eq!(
        http_status(
            g1,
            &upgrade_request("/ws", &format!("Authorization: Bearer {expired}\r\n"))
        ),
        401,
        "expired"
    );
    assert_eq!(
        http_status(g1, &upgrade_request("/ws?token=not.a.jwt", "")),
        401,
        "garbage token"
    );

    let mut alice = Client::connect(g1, "alice");
    let mut bob = Client::connect(g2, "bob");
    assert_eq!(alice.welcome["user"], "alice");
    assert_eq!(bob.welcome["gateway"], "gw1");
    assert!(alice.welcome["session"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // One message across gateways, body preserved, exactly one ack.
    alice.send_to("bob", "m1", json!({"text": "hi bob", "n": [1, 2.5, null]}));
    let msg = bob.recv_type("message");
    assert_eq!(msg["from"], "alice");
    assert_eq!(msg["body"], json!({"text": "hi bob", "n": [1, 2.5, null]}));
    assert!(msg["ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(msg["id"].as_str().is_some_and(|s| !s.is_empty()));
    let ack = alice.recv_type("ack");
    assert_eq!(ack, json!({"type":"ack","id":"m1","status":"delivered"}));
    assert!(
        alice.try_recv(Duration::from_millis(300)).is_none(),
        "one ack only"
    );

    // Numeric client ids are echoed as sent; a reply goes the other way.
    bob.send_raw(r#"{"type":"send","id":42,"to":"alice","body":"hello"}"#);
    assert_eq!(alice.recv_type("message")["body"], "hello");
    assert_eq!(
        bob.recv_type("ack"),
        json!({"type":"ack","id":42,"status":"delivered"})
    );

    // Offline recipient.
    alice.send_to("carol", "m2", json!("anyone?"));
    assert_eq!(
        alice.recv_type("ack"),
        json!({"type":"ack","id":"m2","status":"offline"})
    );

    // Malformed and oversized input: an error reply, the connection keeps working.
    alice.send_raw("{not json");
    let e = alice.recv_type("error");
    assert_eq!(e["code"], "bad_json");
    alice.send_raw(r#"{"type":"send","id":"m3","to":"bob"}"#);
    let e = alice.recv_type("error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("bad_request"), Some("m3"))
    );
    alice.send_raw(r#"{"type":"dance","id":"m4"}"#);
    assert_eq!(alice.recv_type("error")["code"], "unknown_type");
    alice.send_raw(r#"{"type":"send","id":"m5","to":"not a user!","body":1}"#);
    assert_eq!(alice.recv_type("error")["code"], "invalid_user");
    let big = "x".repeat(65 * 1024);
    alice.send_to("bob", "m6", json!(big));
    let e = alice.recv_type("error");
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("too_large"), Some("m6"))
    );
    // Far over the limit the frame is refused unparsed (no id), still without closing.
    alice.send_to("bob", "m6b", json!("y".repeat(200 * 1024)));
    assert_eq!(alice.recv_type("error")["code"], "too_large");
    alice.send_to("bob", "m7", json!("still here"));
    assert_eq!(bob.recv_type("message")["body"], "still here");
    assert_eq!(alice.recv_type("ack")["status"], "delivered");

    // Multi-device: bob on both gateways gets every message; alice gets one ack.
    let mut bob2 = Client::connect(g1, "bob");
    assert_ne!(bob2.welcome["session"], bob.welcome["session"]);
    alice.send_to("bob", "m8", json!("to all devices"));
    assert_eq!(bob.recv_type("message")["body"], "to all devices");
    assert_eq!(bob2.recv_type("message")["body"], "to all devices");
    assert_eq!(alice.recv_type("ack")["status"], "delivered");
    assert!(
        alice.try_recv(Duration::from_millis(300)).is_none(),
        "one ack only"
    );

    // Closing one device removes exactly that session.
    drop(bob2);
    std::thread::sleep(Duration::from_millis(300));
    alice.send_to("bob", "m9", json!("after close"));
    assert_eq!(bob.recv_type("message")["body"], "after close");
    assert_eq!(alice.recv_type("ack")["status"], "delivered");
}

#[test]
fn order_is_kept_per_sender_and_recipient() {
    let stack = Stack::start(2, 60);
    let mut alice = Client::connect(stack.gw_ports[0], "alice");
    let mut bob = Client::connect(stack.gw_ports[1], "bob");
    const N: u64 = 2000;
    for i in 0..N {
        alice.send_to("bob", &i.to_string(), json!(i));
    }
    for i in 0..N {
        let m = bob.recv_type("message");
        assert_eq!(m["body"], json!(i), "out of order");
    }
    let mut acked = HashSet::new();
    while acked.len() < N as usize {
        let a = alice.recv_type("ack");
        assert_eq!(a["status"], "delivered", "{a}");
        assert!(
            acked.insert(a["id"].as_str().unwrap().to_string()),
            "duplicate ack {a}"
        );
    }
}

#[test]
fn redis_restart_gives_failed_acks_then_recovers() {
    let mut stack = Stack::start(1, 4);
    let g = stack.gw_ports[0];
    let mut alice = Client::connect(g, "alice");
    let mut bob = Client::connect(g, "bob");
    stack.redis.stop();
    alice.send_to("bob", "down", json!(1));
    let ack = alice.recv_type("ack");
    assert_eq!(ack["status"], "failed", "{ack}");
    assert!(
        ack["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{ack}"
    );

    // Redis comes back empty; the gateways re-register their live sessions without any
    // reconnect (tests/registry.rs covers this under load).
    stack.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        alice.send_to("bob", &format!("r{n}"), json!(n));
        let ack = alice.recv_type("ack");
        if ack["status"] == "delivered" {
            assert_eq!(bob.recv_type("message")["body"], json!(n));
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {ack}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
