//! End to end, parking (`--park-after-ms`): idle clients' sockets parked in the gateway's epoll
//! set still receive, send, answer pings, time out and drain, on both event loops.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tungstenite::Message;

fn metric(body: &str, line_prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(gw: &Proc) -> String {
    gw.admin_get("/metrics").1
}

fn parked(gw: &Proc) -> f64 {
    metric(&metrics(gw), "connect_gateway_parked_connections{")
}

/// Waits until exactly `n` connections are parked on `gw`.
fn wait_parked(gw: &Proc, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = parked(gw);
        if p == n {
            return;
        }
        assert!(Instant::now() < deadline, "{p} parked, expected {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Extra gateway flags for the backend under test: `--io epoll`, unless the suite already
/// picks the event loop for every process (`CONNECT_E2E_IO`).
fn io_flags(epoll: bool) -> Vec<&'static str> {
    let suite_picks = std::env::var("CONNECT_E2E_IO").is_ok_and(|v| !v.is_empty());
    if epoll && !suite_picks {
        vec!["--io", "epoll"]
    } else {
        vec![]
    }
}

/// Deliveries to and sends from parked clients, and a drain that closes parked clients.
fn messages_and_drain(epoll: bool) {
    let mut flags = vec!["--park-after-ms", "100"];
    flags.extend(io_flags(epoll));
    let mut stack = Stack::start_with(1, 60, &flags);
    let port = stack.gw_ports[0];
    let mut alice = Client::connect(port, "alice");
    let mut bob = Client::connect(port, "bob");
    // Only these two: the readiness probes' closes were noticed, parked or not.
    wait_parked(&stack.gateways[0], 2.0);

    // A parked sender's message is read and routed; the parked recipient gets it.
    alice.send_to("bob", "p1", json!("to a parked bob"));
    assert_eq!(bob.recv_type("message")["body"], "to a parked bob");
    assert_eq!(alice.recv_type("ack")["status"], "delivered");
    wait_parked(&stack.gateways[0], 2.0);
    bob.send_to("alice", "p2", json!("and back"));
    assert_eq!(alice.recv_type("message")["body"], "and back");
    assert_eq!(bob.recv_type("ack")["status"], "delivered");
    let m = metrics(&stack.gateways[0]);
    assert!(metric(&m, "connect_gateway_parks_total{") >= 4.0, "{m}");
    assert!(metric(&m, "connect_gateway_unparks_total{") >= 2.0, "{m}");

    // A drain closes parked clients with 1012.
    wait_parked(&stack.gateways[0], 2.0);
    let gw = &mut stack.gateways[0];
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(gw.child.id() as i32, libc::SIGTERM);
    }
    for c in [&mut alice, &mut bob] {
        let close = loop {
            match c.ws.read() {
                Ok(Message::Close(f)) => break f.expect("close frame"),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(u16::from(close.code), 1012);
    }
    let st = gw.signal_and_wait(0, Duration::from_secs(7));
    assert!(st.success(), "{st:?}");
}

/// A parked client is pinged and its pongs are read, without unparking it (it outlives the
/// idle timeout while it answers); once it stops answering, the idle timeout closes it, parked.
fn pings_and_idle_timeout(epoll: bool) {
    let mut flags = vec![
        "--park-after-ms",
        "100",
        "--ping-interval",
        "1",
        "--idle-timeout",
        "3",
    ];
    flags.extend(io_flags(epoll));
    let stack = Stack::start_with(1, 60, &flags);
    let gw = &stack.gateways[0];
    let mut dave = Client::connect(stack.gw_ports[0], "dave");
    wait_parked(gw, 1.0);

    // Answer every ping for longer than the idle timeout.
    let until = Instant::now() + Duration::from_secs(5);
    let mut pings = 0;
    while Instant::now() < until {
        match dave.ws.read() {
            Ok(Message::Ping(_)) => {
                pings += 1;
                // tungstenite queued the pong; send it now.
                dave.ws.flush().expect("pong");
            }
            Ok(_) => {}
            Err(e) => panic!("closed while answering pings: {e}"),
        }
    }
    assert!(pings >= 3, "{pings} pings in 5 s");
    let m = metrics(gw);
    // The pings went straight to the parked socket and the pongs were read there: the
    // connection stayed parked (at most a pong split across reads would unpark it).
    assert!(
        metric(&m, "connect_gateway_parked_pings_total{") >= 3.0
            && metric(&m, "connect_gateway_parked_pongs_total{") >= 3.0,
        "pings and pongs should not need an unpark: {m}"
    );
    assert!(
        metric(&m, "connect_gateway_unparks_total{") < pings as f64,
        "an unpark per ping: {m}"
    );
    assert_eq!(parked(gw), 1.0, "{m}");
    assert_eq!(
        metric(&m, "connect_gateway_drops_total{reason=\"idle\"}"),
        0.0
    );

    // Silent now: parked again, then closed by the idle timeout.
    wait_parked(gw, 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(gw);
        if metric(&m, "connect_gateway_drops_total{reason=\"idle\"}") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no idle timeout: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The socket is closed: reading ends (after the pings that were still queued).
    let closed = loop {
        match dave.ws.read() {
            Ok(Message::Close(_)) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(closed);
    wait_parked(gw, 0.0);
}

#[test]
fn parked_clients_io_uring() {
    messages_and_drain(false);
}

#[test]
fn parked_clients_epoll() {
    messages_and_drain(true);
}

#[test]
fn parked_clients_pings_and_idle_timeout_io_uring() {
    pings_and_idle_timeout(false);
}

#[test]
fn parked_clients_pings_and_idle_timeout_epoll() {
    pings_and_idle_timeout(true);
}
