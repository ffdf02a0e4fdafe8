//! The registry at scale, end to end (issue 4): gateway liveness, rebuild after Redis lost its
//! data, and the reconnect race. Real `redis-server`, router and gateway processes; the load
//! comes from client threads that each send in a closed loop, so every send's one ack is
//! checked in order, and receivers that record every message they get.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Long enough that no session expires by its own TTL during a test: only liveness records
/// and rebuilds can explain what the tests see.
const LONG_TTL: u64 = 600;

/// One send's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    n: u64,
    status: String,
    at: Instant,
}

/// A client sending to `to` in a closed loop (send, wait for its ack) until stopped.
fn sender(mut c: Client, to: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Outcome>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            c.send_to(to, &format!("m{n}"), json!(n));
            let ack = c.recv_type("ack");
            assert_eq!(
                ack["id"],
                format!("m{n}"),
                "acks come one per send, in order"
            );
            out.push(Outcome {
                n,
                status: ack["status"].as_str().unwrap_or("?").to_string(),
                at: Instant::now(),
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        // No second ack for anything.
        while let Some(v) = c.try_recv(Duration::from_millis(300)) {
            assert_ne!(v["type"], "ack", "an extra ack: {v}");
        }
        out
    })
}

/// What a receiver saw: message numbers in arrival order, and whether its connection was
/// still open when it was stopped.
struct Received {
    numbers: Vec<u64>,
    open: bool,
}

fn receiver(mut c: Client, stop: Arc<AtomicBool>) -> JoinHandle<Received> {
    std::thread::spawn(move || {
        let mut numbers = Vec::new();
        c.ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut quiet_after_stop = 0;
        loop {
            match c.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "message" {
                        numbers.push(v["body"].as_u64().unwrap());
                    }
                }
                Ok(tungstenite::Message::Close(_)) => {
                    return Received {
                        numbers,
                        open: false,
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        quiet_after_stop += 1;
                        if quiet_after_stop >= 3 {
                            return Received {
                                numbers,
                                open: true,
                            };
                        }
                    }
                }
                Err(_) => {
                    return Received {
                        numbers,
                        open: false,
                    }
                }
            }
        }
    })
}

/// Checks the ledger of one sender->receiver pair: every `delivered` number was received,
/// nothing was received twice, and order held.
fn check_pair(name: &str, sent: &[Outcome], got: &Received) {
    let mut seen = HashSet::new();
    for n in &got.numbers {
        assert!(seen.insert(*n), "{name}: message {n} received twice");
    }
    assert!(
        got.numbers.windows(2).all(|w| w[0] < w[1]),
        "{name}: out of order: {:?}",
        got.numbers
    );
    for o in sent {
        if o.status == "delivered" {
            assert!(
                seen.contains(&o.n),
                "{name}: {} acked delivered, never received",
                o.n
            );
        }
    }
    assert!(
        sent.iter()
            .all(|o| ["delivered", "offline", "failed"].contains(&o.status.as_str())),
        "{name}: odd status in {sent:?}"
    );
}

fn counts(sent: &[Outcome]) -> String {
    let c = |s: &str| sent.iter().filter(|o| o.status == s).count();
    format!(
        "{} sends: {} delivered, {} offline, {} failed",
        sent.len(),
        c("delivered"),
        c("offline"),
        c("failed")
    )
}

/// A metric's value summed over its samples (the admin port's Prometheus text).
fn metric(p: &Proc, name: &str) -> f64 {
    let (status, body) = p.admin_get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn killed_gateway_users_are_offline_within_3s_and_nobody_else_is_affected() {
    let mut stack = Stack::start(2, LONG_TTL);
    let (g0, g1) = (stack.gw_ports[0], stack.gw_ports[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let bob = receiver(Client::connect(g1, "bob"), stop.clone());
    let carol = receiver(Client::connect(g0, "carol"), stop.clone());
    let to_bob = sender(Client::connect(g0, "alice"), "bob", stop.clone());
    let to_carol = sender(Client::connect(g0, "dave"), "carol", stop.clone());

    std::thread::sleep(Duration::from_secs(1));
    stack.gateways[1].kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let (to_bob, to_carol) = (to_bob.join().unwrap(), to_carol.join().unwrap());
    let (bob, carol) = (bob.join().unwrap(), carol.join().unwrap());
    eprintln!("alice->bob: {}", counts(&to_bob));
    eprintln!("dave->carol: {}", counts(&to_carol));

    let before: Vec<&Outcome> = to_bob.iter().filter(|o| o.at < killed).collect();
    assert!(!before.is_empty());
    // The last send before the kill may have raced it; every earlier one was delivered.
    assert!(before[..before.len() - 1]
        .iter()
        .all(|o| o.status == "delivered"));
    let first_offline = to_bob
        .iter()
        .find(|o| o.at >= killed && o.status == "offline")
        .expect("bob never read as offline");
    let detect = first_offline.at - killed;
    eprintln!("bob offline for senders {detect:?} after the kill -9 of his gateway");
    assert!(
        detect < Duration::from_secs(3),
        "offline only after {detect:?}"
    );
    assert!(
        to_bob
            .iter()
            .filter(|o| o.n > first_offline.n)
            .all(|o| o.status == "offline"),
        "once offline, bob stays offline: {to_bob:?}"
    );
    assert!(!bob.open);
    check_pair("alice->bob", &to_bob, &bob);

    // Nobody else noticed.
    assert!(
        to_carol.iter().all(|o| o.status == "delivered"),
        "{}",
        counts(&to_carol)
    );
    assert!(carol.open);
    check_pair("dave->carol", &to_carol, &carol);
    assert!(metric(&stack.router, "connect_router_dead_sessions_total") >= 1.0);
    // Each shard exports its Redis client's health (2 shards per process in these tests).
    assert_eq!(
        metric(&stack.gateways[0], "connect_gateway_redis_connected"),
        2.0
    );
    assert_eq!(metric(&stack.router, "connect_router_redis_connected"), 2.0);
}

/// Redis loses everything while clients chat; the gateways put their live sessions back
/// without any client reconnecting.
fn recovers_from_data_loss(lose: impl FnOnce(&mut Stack)) -> Stack {
    let mut stack = Stack::start(2, LONG_TTL);
    let (g0, g1) = (stack.gw_ports[0], stack.gw_ports[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let bob = receiver(Client::connect(g1, "bob"), stop.clone());
    let erin = receiver(Client::connect(g0, "erin"), stop.clone());
    let to_bob = sender(Client::connect(g0, "alice"), "bob", stop.clone());
    let to_erin = sender(Client::connect(g1, "dave"), "erin", stop.clone());
    let rebuilds_before = metric(
        &stack.gateways[0],
        "connect_gateway_registry_rebuilds_total",
    );
    let connects_before: Vec<f64> = stack
        .gateways
        .iter()
        .map(|g| metric(g, "connect_gateway_connects_total"))
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    lose(&mut stack);
    let lost = Instant::now();
    std::thread::sleep(Duration::from_secs(7));
    stop.store(true, Ordering::Relaxed);
    let (to_bob, to_erin) = (to_bob.join().unwrap(), to_erin.join().unwrap());
    let (bob, erin) = (bob.join().unwrap(), erin.join().unwrap());

    for (name, sent, got) in [
        ("alice->bob", &to_bob, &bob),
        ("dave->erin", &to_erin, &erin),
    ] {
        eprintln!("{name}: {}", counts(sent));
        assert!(got.open, "{name}: the recipient's connection was closed");
        check_pair(name, sent, got);
        // Routable again: from some point after the loss on, everything is delivered.
        let last_bad = sent
            .iter()
            .rfind(|o| o.status != "delivered")
            .map_or(lost, |o| o.at);
        let recovered = sent
            .iter()
            .find(|o| o.at > last_bad && o.status == "delivered")
            .unwrap_or_else(|| panic!("{name}: never routable again: {}", counts(sent)));
        let took = recovered.at.saturating_duration_since(lost);
        eprintln!("{name}: routable again {took:?} after the loss");
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
    }
    let rebuilds = metric(
        &stack.gateways[0],
        "connect_gateway_registry_rebuilds_total",
    );
    assert!(
        rebuilds > rebuilds_before,
        "the gateway re-registered its sessions"
    );
    let connects_after: Vec<f64> = stack
        .gateways
        .iter()
        .map(|g| metric(g, "connect_gateway_connects_total"))
        .collect();
    assert_eq!(connects_before, connects_after, "no client reconnected");
    stack
}

#[test]
fn flushall_under_load_sessions_come_back_without_reconnects() {
    recovers_from_data_loss(|stack| {
        let reply = testkit::redis_cmd(&stack.redis.addr(), &["FLUSHALL"]);
        assert!(reply.starts_with("+OK"), "{reply:?}");
    });
}

#[test]
fn redis_restart_empty_under_load_sessions_come_back_without_reconnects() {
    let stack = recovers_from_data_loss(|stack| stack.redis.restart());
    assert!(metric(&stack.gateways[0], "connect_gateway_redis_reconnects_total") >= 2.0);
    assert!(metric(&stack.router, "connect_router_redis_reconnects_total") >= 1.0);
}

#[test]
fn reconnect_race_the_new_session_survives() {
    let stack = Stack::start(2, LONG_TTL);
    let (g0, g1) = (stack.gw_ports[0], stack.gw_ports[1]);
    let mut alice = Client::connect(g0, "alice");
    // Bob's phone changes networks: a new connection lands on the other gateway while the
    // old one is still open; then the old socket dies without a close handshake, and its
    // gateway cleans up after the new session registered.
    let old = Client::connect(g0, "bob");
    let mut new = Client::connect(g1, "bob");
    drop(old);
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..20 {
        alice.send_to("bob", &format!("r{n}"), json!(n));
        let ack = alice.recv_type("ack");
        assert_eq!(ack["status"], "delivered", "{ack}");
        assert_eq!(new.recv_type("message")["body"], n);
    }
    // Same gateway, same shard or not: reconnect there too, and the old one goes.
    let again = Client::connect(g1, "bob");
    drop(new);
    std::thread::sleep(Duration::from_millis(500));
    let mut again = again;
    alice.send_to("bob", "last", json!("last"));
    assert_eq!(alice.recv_type("ack")["status"], "delivered");
    assert_eq!(again.recv_type("message")["body"], "last");
}

#[test]
fn presence_requests_are_answered_with_liveness() {
    let mut stack = Stack::start(2, LONG_TTL);
    let (g0, g1) = (stack.gw_ports[0], stack.gw_ports[1]);
    let mut alice = Client::connect(g0, "alice");
    let _bob = Client::connect(g1, "bob");
    let _carol = Client::connect(g0, "carol");
    let _carol2 = Client::connect(g1, "carol");
    let ask = |c: &mut Client, id: &str, users: &[&str]| {
        c.send_raw(&json!({"type":"presence","id":id,"users":users}).to_string());
        loop {
            let v = c.recv();
            if v["id"] == id {
                return v;
            }
        }
    };
    let v = ask(&mut alice, "p1", &["bob", "carol", "nobody", "bob"]);
    assert_eq!(v["type"], "presence", "{v}");
    assert_eq!(v["online"], json!(["bob", "carol"]), "{v}");
    assert_eq!(v["offline"], json!(["nobody"]), "{v}");
    assert!(v.get("unknown").is_none(), "{v}");

    // Bad requests get an error and the connection stays.
    let v = ask(&mut alice, "p2", &[]);
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    let v = ask(&mut alice, "p3", &["not a user"]);
    assert_eq!(v["code"], "invalid_user", "{v}");

    // A gateway dies: its users read offline within the liveness bound; carol still has a
    // session on the live gateway.
    stack.gateways[1].kill();
    let killed = Instant::now();
    loop {
        let v = ask(&mut alice, "p4", &["bob", "carol"]);
        if v["offline"] == json!(["bob"]) {
            assert_eq!(v["online"], json!(["carol"]), "{v}");
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "bob still online: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Redis down: every user's state is unknown, in one answer.
    stack.redis.stop();
    let v = ask(&mut alice, "p5", &["bob", "carol"]);
    assert_eq!(v["unknown"], json!(["bob", "carol"]), "{v}");
    // p1, at least one p4 and p5 reached the router; p2 and p3 were refused by the gateway.
    assert!(metric(&stack.router, "connect_router_presence_total") >= 3.0);
}

#[test]
fn a_full_gateway_sheds_with_close_1013_and_a_jittered_hint() {
    // Two shards of at most 4 sessions each; clients are held until 5 have been shed.
    let stack = Stack::start_with(1, LONG_TTL, &["--max-connections-per-shard", "4"]);
    let g = stack.gw_ports[0];
    std::thread::sleep(Duration::from_millis(300)); // the start-up probes' sessions close
    let mut held = Vec::new();
    let mut hints = HashSet::new();
    let mut shed = 0;
    for i in 0..40 {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", g)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let url = format!("ws://127.0.0.1:{g}/ws?token={}", token(&format!("u{i}")));
        let (mut ws, resp) = tungstenite::client(url.as_str(), tcp).expect("upgrade completes");
        assert_eq!(resp.status(), 101);
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                assert!(t.as_str().contains("welcome"), "{t}");
                held.push(ws);
            }
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1013);
                let ms: u64 = frame
                    .reason
                    .strip_prefix("reconnect_after_ms=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("reason {:?}", frame.reason));
                assert!((1000..5000).contains(&ms), "{ms}");
                hints.insert(ms);
                shed += 1;
                if shed == 5 {
                    break;
                }
            }
            other => panic!("expected a welcome or a close, got {other:?}"),
        }
    }
    assert_eq!(shed, 5, "{} held", held.len());
    assert!(held.len() <= 8, "at most 4 per shard: {}", held.len());
    assert!(hints.len() > 1, "hints are jittered: {hints:?}");
    assert!(metric(&stack.gateways[0], "connect_gateway_shed_total") >= 5.0);
}
