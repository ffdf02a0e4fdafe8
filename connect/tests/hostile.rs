//! Hostile input, end to end (issue 7): real `redis-server`, `router` and `gateway` processes,
//! attacked on the client port with bad HTTP, bad WebSocket frames, bad messages, floods and
//! forged tokens, and through a fake Redis that answers garbage, nothing, or half a reply.
//!
//! Every case asserts the answer docs/protocol.md promises (a status, a close code or an error
//! code) and that two bystanders already connected to the same gateway still chat afterwards.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use raw::*;
use serde_json::{json, Value};
use support::*;

/// Garbage before and inside the HTTP request head gets `400`, an oversized head `431`, and
/// neither disturbs anyone else.
#[test]
fn http_garbage_and_huge_heads() {
    let stack = Stack::start(1, 60);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "http");
    let tok = token("mallory");

    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "a TLS ClientHello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        ),
        ("NUL bytes", vec![0u8; 64]),
        ("random binary", (0..=255u8).rev().collect()),
        ("an SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        (
            "binary junk inside the head",
            format!("GET /ws?token={tok} HTTP/1.1\r\nHost: x\r\n\x16\x03\x01\x00\r\n\r\n")
                .into_bytes(),
        ),
        (
            "a header line without a colon",
            format!("GET /ws?token={tok} HTTP/1.1\r\nUpgrade websocket\r\n\r\n").into_bytes(),
        ),
        (
            "a control character in a header value",
            format!("GET /ws?token={tok} HTTP/1.1\r\nUpgrade: web\x01socket\r\n\r\n").into_bytes(),
        ),
        (
            "a bad percent escape in the token",
            upgrade_request("/ws?token=%zz", "").into_bytes(),
        ),
    ];
    for (what, bytes) in &garbage {
        let r = http(port, bytes);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(
            r.header("Connection").as_deref() == Some("close"),
            "{what}: {r:?}"
        );
        by.still_chatting(what);
    }

    // Garbage in the middle of an upgrade that arrives in pieces.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET /ws?token={tok} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"Connection: Upgrade\r\n\xff\xfe\xfd\r\n\r\n")
        .unwrap();
    assert_eq!(parse_reply(&read_to_close(&mut s)).status, 400);
    by.still_chatting("garbage in a split head");

    // Huge heads: one long header, too many header lines, far more than the limit at once.
    let long = upgrade_request(
        &format!("/ws?token={tok}"),
        &format!("X-Pad: {}\r\n", "a".repeat(9 * 1024)),
    );
    let many_lines: String = (0..40).map(|i| format!("X-Line-{i}: v\r\n")).collect();
    let many = upgrade_request(&format!("/ws?token={tok}"), &many_lines);
    let huge = upgrade_request(
        &format!("/ws?token={tok}"),
        &format!("X-Pad: {}\r\n", "b".repeat(256 * 1024)),
    );
    for (what, req) in [
        ("a 9 KiB header", long),
        ("40 header lines", many),
        ("a 256 KiB header", huge),
    ] {
        let r = http(port, req.as_bytes());
        assert_eq!(r.status, 431, "{what}: {r:?}");
        by.still_chatting(what);
    }

    // Valid HTTP that is not what the port serves.
    let post = format!("POST /ws?token={tok} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    let r = http(port, post.as_bytes());
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET".into())));
    let plain_get = format!("GET /ws?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = http(port, plain_get.as_bytes());
    assert_eq!(
        (r.status, r.header("Sec-WebSocket-Version")),
        (426, Some("13".into()))
    );
    let v8 = upgrade_request(&format!("/ws?token={tok}"), "")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    assert_eq!(http(port, v8.as_bytes()).status, 426);
    assert_eq!(
        http(port, upgrade_request("/../etc/passwd", "").as_bytes()).status,
        404
    );
    by.still_chatting("wrong methods and versions");
}

/// A client that never finishes its request head is closed after the 10 s handshake timeout,
/// whether it sends nothing, stops half way, or trickles bytes to keep the socket busy.
#[test]
fn unfinished_handshakes_are_closed() {
    let stack = Stack::start(1, 60);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "slow");
    let started = Instant::now();

    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(format!("GET /ws?token={} HTTP/1.1\r\nHost: x\r\n", token("half")).as_bytes())
        .unwrap();
    // Slowloris: one byte of a never-ending header every 100 ms.
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    trickle
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut trickle_w = trickle.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if trickle_w.write_all(b"a").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });

    // Others are served meanwhile, and the stalled handshakes are still open.
    by.still_chatting("three stalled handshakes");
    let mut conns = [("silent", silent), ("half", half), ("trickle", trickle)];
    for (what, s) in conns.iter_mut() {
        assert!(
            !closed_within(s, Duration::from_millis(50)),
            "{what} closed before the timeout"
        );
    }
    let mut early = Duration::MAX;
    for (what, s) in conns.iter_mut() {
        // Closed by the 10 s timeout (plus slack for a loaded machine), without any answer.
        let left = Duration::from_secs(14).saturating_sub(started.elapsed());
        assert!(closed_within(s, left), "{what} still open after 14 s");
        early = early.min(started.elapsed());
    }
    assert!(
        early >= Duration::from_secs(9),
        "closed after {early:?}, before the 10 s handshake timeout"
    );
    assert!(
        writer.join().unwrap(),
        "the trickling client was never cut off"
    );
    by.still_chatting("handshake timeouts");
}

/// Frames that break RFC 6455 close the connection with the documented code: 1002 for
/// protocol violations, 1007 for text that is not UTF-8, 1009 for frames and messages over
/// `--max-ws-message` (refused from the frame header, before the payload is sent).
#[test]
fn websocket_violations_get_close_codes() {
    let stack = Stack::start(1, 60);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "ws");
    let mb = 1024 * 1024;

    type Attack = Box<dyn Fn(&mut RawWs)>;
    let cases: Vec<(&str, u16, Attack)> = vec![
        (
            "an unmasked text frame",
            1002,
            Box::new(|w| w.frame(FIN | TEXT, false, b"{}")),
        ),
        (
            "RSV1 without an extension",
            1002,
            Box::new(|w| w.frame(FIN | RSV1 | TEXT, true, b"{}")),
        ),
        (
            "RSV2",
            1002,
            Box::new(|w| w.frame(FIN | RSV2 | TEXT, true, b"{}")),
        ),
        (
            "RSV3 on a ping",
            1002,
            Box::new(|w| w.frame(FIN | RSV3 | PING, true, b"")),
        ),
        (
            "reserved data opcode 3",
            1002,
            Box::new(|w| w.frame(FIN | 0x3, true, b"x")),
        ),
        (
            "reserved control opcode 0xB",
            1002,
            Box::new(|w| w.frame(FIN | 0xb, true, b"")),
        ),
        (
            "a ping over 125 bytes",
            1002,
            Box::new(|w| w.frame(FIN | PING, true, &[b'p'; 126])),
        ),
        (
            "a fragmented ping",
            1002,
            Box::new(|w| w.frame(PING, true, b"half")),
        ),
        (
            "a continuation without a start",
            1002,
            Box::new(|w| w.frame(FIN | CONT, true, b"orphan")),
        ),
        (
            "a new message inside a fragmented one",
            1002,
            Box::new(|w| {
                w.frame(TEXT, true, b"{\"type\":");
                w.frame(FIN | TEXT, true, b"{}");
            }),
        ),
        (
            "a close frame with a 1-byte payload",
            1002,
            Box::new(|w| w.frame(FIN | CLOSE, true, &[0x03])),
        ),
        (
            "a close frame with the reserved code 1005",
            1002,
            Box::new(|w| w.frame(FIN | CLOSE, true, &1005u16.to_be_bytes())),
        ),
        (
            "garbage where frames belong",
            1002,
            Box::new(|w| w.write(&[0xff; 64])),
        ),
        (
            "invalid UTF-8 text",
            1007,
            Box::new(|w| w.frame(FIN | TEXT, true, b"{\"type\":\"s\xc3\x28nd\"}")),
        ),
        (
            "invalid UTF-8 split over fragments",
            1007,
            Box::new(|w| {
                w.frame(TEXT, true, b"{\"body\":\"\xf0\x9f");
                w.frame(CONT, true, b"\x98");
                w.frame(FIN | CONT, true, b"\"}");
            }),
        ),
        (
            "a lone surrogate encoded in UTF-8",
            1007,
            Box::new(|w| w.frame(FIN | TEXT, true, b"\"\xed\xa0\x80\"")),
        ),
        (
            "a 2 MiB frame header (no payload sent)",
            1009,
            Box::new(move |w| w.write(&frame_header(FIN | TEXT, true, 2 * mb as u64))),
        ),
        (
            "a frame claiming 2^63 bytes",
            1009,
            Box::new(|w| w.write(&frame_header(FIN | BINARY, true, 1 << 63))),
        ),
        (
            "a fragmented message over 1 MiB",
            1009,
            Box::new(move |w| {
                let chunk = vec![b'x'; 256 * 1024];
                w.frame(TEXT, true, &chunk);
                for _ in 0..4 {
                    w.frame(CONT, true, &chunk);
                }
                w.frame(FIN | CONT, true, b"");
            }),
        ),
    ];
    for (i, (what, code, attack)) in cases.iter().enumerate() {
        let mut w = RawWs::connect(port, &format!("violator-{i}"));
        attack(&mut w);
        let reason = w.expect_close(*code, what);
        println!("{what}: {code} {reason:?}");
        by.still_chatting(what);
    }

    // Frames pipelined in the same packet as the upgrade request are read as frames: a send
    // is answered, garbage gets 1002.
    let tok = token("pipeliner");
    for (what, frames, expect) in [
        ("a send pipelined with the upgrade", true, None),
        ("garbage pipelined with the upgrade", false, Some(1002)),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut bytes = upgrade_request(&format!("/ws?token={tok}"), "").into_bytes();
        if frames {
            let send = br#"{"type":"send","id":"piped","to":"nobody","body":1}"#;
            bytes.extend(frame_header(FIN | TEXT, true, send.len() as u64));
            bytes.extend(
                send.iter()
                    .enumerate()
                    .map(|(j, b)| b ^ [0x37, 0xfa, 0x21, 0x3d][j % 4]),
            );
        } else {
            bytes.extend_from_slice(&[0xf7; 32]);
        }
        tcp.write_all(&bytes).unwrap();
        let mut w = RawWs::from_upgraded(tcp);
        assert_eq!(w.recv_json()["type"], "welcome", "{what}");
        match expect {
            None => assert_eq!(w.recv_json()["status"], "offline", "{what}"),
            Some(code) => {
                w.expect_close(code, what);
            }
        }
        by.still_chatting(what);
    }

    // A message just under the limit is fine (with --max-body raised it would be delivered;
    // here it is simply too large a body, which is an error, not a close).
    let mut w = RawWs::connect(port, "near-limit");
    let body = "y".repeat(mb - 100);
    w.text(&json!({"type":"send","id":"big","to":"nobody","body": body}).to_string());
    let e = w.recv_json();
    assert_eq!(e["code"], "too_large", "{e}");
    w.text(r#"{"type":"send","id":"ok","to":"nobody","body":1}"#);
    assert_eq!(w.recv_json()["status"], "offline");
    by.still_chatting("a message just under the limit");
}

/// Thousands of tiny continuation frames, empty ones, and a flood of pings are handled: the
/// message still arrives whole, pings are answered, and the connection keeps working.
#[test]
fn fragment_and_ping_floods() {
    let stack = Stack::start(1, 60);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "flood");

    // A 20 KB body sent one byte per frame, with 20,000 empty continuation frames and some
    // pings in between.
    let mut w = RawWs::connect(port, "fragmenter");
    let body = "z".repeat(20_000);
    let msg = json!({"type":"send","id":"frag","to":"flood-bystander-b","body": body}).to_string();
    let bytes = msg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 8 + 20_000 * 6);
    out.extend(frame_header(TEXT, true, 1));
    out.push(bytes[0] ^ 0x37);
    for (i, &b) in bytes[1..].iter().enumerate() {
        let last = i == bytes.len() - 2;
        out.extend(frame_header(if last { FIN } else { 0 }, true, 1));
        out.push(b ^ 0x37);
        if last {
            break;
        }
        if i % 2 == 0 {
            out.extend(frame_header(CONT, true, 0));
        }
        if i % 1000 == 0 {
            out.extend(frame_header(FIN | PING, true, 0));
        }
    }
    let started = Instant::now();
    w.write(&out);
    let ack = loop {
        let v = w.recv_json();
        if v["type"] == "ack" {
            break v;
        }
    };
    assert_eq!(ack["id"], "frag");
    assert_eq!(ack["status"], "delivered");
    let m = by.b.recv_type("message");
    assert_eq!(m["body"].as_str().map(str::len), Some(20_000));
    println!(
        "{} frames for one message handled in {:?}",
        bytes.len() + bytes.len() / 2 + bytes.len() / 1000,
        started.elapsed()
    );
    by.still_chatting("a fragment flood");

    // Ping flood from a client that reads: 20,000 pings in bursts of 1,000, each burst written
    // at once. Every ping gets its own pong, in order, and chat continues.
    let mut w = RawWs::connect(port, "pinger");
    let ping = |i: usize| {
        let payload = format!("ping-{i:08}-{}", "p".repeat(100));
        let mut f = frame_header(FIN | PING, true, payload.len() as u64);
        f.extend(
            payload
                .bytes()
                .enumerate()
                .map(|(j, b)| b ^ [0x37, 0xfa, 0x21, 0x3d][j % 4]),
        );
        (f, payload.into_bytes())
    };
    for burst in 0..20 {
        let pings: Vec<_> = (burst * 1000..(burst + 1) * 1000).map(ping).collect();
        w.write(
            &pings
                .iter()
                .flat_map(|(f, _)| f.clone())
                .collect::<Vec<u8>>(),
        );
        for (_, payload) in &pings {
            let (f, p) = w
                .read_frame()
                .expect("connection closed during the ping flood");
            assert_eq!(f & 0x0f, PONG, "unexpected frame {f:#x}");
            assert_eq!(&p, payload, "pongs answer their pings in order");
        }
    }
    w.text(r#"{"type":"send","id":"after-pings","to":"nobody","body":1}"#);
    assert_eq!(w.recv_json()["status"], "offline");
    by.still_chatting("a ping flood");

    // Ping flood from a client that does not read (a small receive buffer, so the pongs back
    // up at once): 100,000 pings, the last one different. The client's queue stays bounded:
    // while it is full, pongs are coalesced to the latest (RFC 6455 5.5.3). A message for the
    // client that finds the queue full closes it with 1008 (slow consumer), like any other;
    // otherwise the connection keeps working and the latest ping gets its pong.
    let mut w = RawWs::connect(port, "deaf-pinger");
    small_receive_buffer(&w.tcp);
    let mut f = frame_header(FIN | PING, true, 125);
    f.extend((0..125).map(|j| b'q' ^ [0x37, 0xfa, 0x21, 0x3d][j % 4]));
    let batch: Vec<u8> = f.repeat(1000);
    for _ in 0..100 {
        w.write(&batch);
    }
    w.frame(FIN | PING, true, b"last");
    w.text(r#"{"type":"send","id":"deaf-1","to":"nobody","body":1}"#);
    let (mut pongs, mut last_pong, mut acks) = (0usize, false, 0);
    let outcome = loop {
        match w.read_frame() {
            Some((f, p)) if f & 0x0f == PONG => {
                pongs += 1;
                last_pong |= p == b"last";
            }
            Some((f, p)) if f & 0x0f == TEXT => {
                let v: Value = serde_json::from_slice(&p).unwrap();
                assert_eq!(v["status"], "offline", "{v}");
                acks += 1;
                if acks == 2 {
                    break "served";
                }
                // The next frame from the client lets the gateway flush the pong it held.
                w.text(r#"{"type":"send","id":"deaf-2","to":"nobody","body":1}"#);
            }
            Some((f, p)) if f & 0x0f == CLOSE => {
                assert_eq!(p.get(..2), Some(&1008u16.to_be_bytes()[..]), "{p:?}");
                break "closed 1008 (slow consumer)";
            }
            other => panic!("deaf pinger: unexpected {other:?}"),
        }
    };
    println!("deaf pinger: 100,001 pings, {pongs} pongs received, then {outcome}");
    assert!(pongs < 100_001, "pongs were coalesced");
    if outcome == "served" {
        assert!(last_pong, "the latest ping was answered");
    }
    by.still_chatting("a ping flood from a client that does not read");
}

/// Caps a socket's receive buffer (and so the TCP window) at 64 KiB.
fn small_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

/// Bad messages get the documented error code (with the send's `id` when readable) and the
/// connection stays usable; sending to oneself is an ordinary delivery.
#[test]
fn bad_messages_get_error_codes() {
    let stack = Stack::start(1, 60);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "msg");
    let mut m = Client::connect(port, "mallory");

    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let long_id = "i".repeat(129);
    let long_user = "u".repeat(129);
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("not JSON", "{not json".into(), "bad_json", None),
        ("empty text", "".into(), "bad_json", None),
        ("a JSON array", "[1,2,3]".into(), "bad_json", None),
        ("a JSON string", r#""send""#.into(), "bad_json", None),
        (
            "trailing garbage",
            r#"{"type":"send"} x"#.into(),
            "bad_json",
            None,
        ),
        ("10,000 nested arrays", nested.clone(), "bad_json", None),
        (
            "nesting inside a body",
            format!(r#"{{"type":"send","id":"n1","to":"x","body":{nested}}}"#),
            "bad_json",
            Some("n1"),
        ),
        (
            "no type",
            r#"{"id":"t0"}"#.into(),
            "bad_request",
            Some("t0"),
        ),
        (
            "type not a string",
            r#"{"type":7,"id":"t1"}"#.into(),
            "bad_request",
            Some("t1"),
        ),
        (
            "unknown type",
            r#"{"type":"dance","id":"t2"}"#.into(),
            "unknown_type",
            Some("t2"),
        ),
        (
            "type with a NUL",
            "{\"type\":\"send\\u0000\",\"id\":\"t3\"}".into(),
            "unknown_type",
            Some("t3"),
        ),
        (
            "no id",
            r#"{"type":"send","to":"x","body":1}"#.into(),
            "bad_request",
            None,
        ),
        (
            "an id over 128 bytes",
            format!(r#"{{"type":"send","id":"{long_id}","to":"x","body":1}}"#),
            "bad_request",
            None,
        ),
        (
            "an object id",
            r#"{"type":"send","id":{"a":1},"to":"x","body":1}"#.into(),
            "bad_request",
            None,
        ),
        (
            "no to",
            r#"{"type":"send","id":"t4","body":1}"#.into(),
            "bad_request",
            Some("t4"),
        ),
        (
            "to not a string",
            r#"{"type":"send","id":"t5","to":["x"],"body":1}"#.into(),
            "bad_request",
            Some("t5"),
        ),
        (
            "no body",
            r#"{"type":"send","id":"t6","to":"x"}"#.into(),
            "bad_request",
            Some("t6"),
        ),
        (
            "a duplicate field",
            r#"{"type":"send","id":"t7","to":"x","to":"y","body":1}"#.into(),
            "bad_request",
            None,
        ),
        (
            "an invalid user id",
            r#"{"type":"send","id":"u1","to":"not a user!","body":1}"#.into(),
            "invalid_user",
            Some("u1"),
        ),
        (
            "an empty user id",
            r#"{"type":"send","id":"u2","to":"","body":1}"#.into(),
            "invalid_user",
            Some("u2"),
        ),
        (
            "a user id over 128 bytes",
            format!(r#"{{"type":"send","id":"u3","to":"{long_user}","body":1}}"#),
            "invalid_user",
            Some("u3"),
        ),
        (
            "a user id with a slash",
            r#"{"type":"send","id":"u4","to":"../admin","body":1}"#.into(),
            "invalid_user",
            Some("u4"),
        ),
        (
            "a user id with a brace",
            r#"{"type":"send","id":"u5","to":"a}{b","body":1}"#.into(),
            "invalid_user",
            Some("u5"),
        ),
        (
            "a number beyond f64",
            r#"{"type":"send","id":"b1","to":"x","body":1e999}"#.into(),
            "bad_json",
            None,
        ),
        (
            "an unpaired surrogate escape",
            r#"{"type":"send","id":"b2","to":"x","body":"\ud800"}"#.into(),
            "bad_json",
            None,
        ),
        (
            "a body over --max-body",
            json!({"type":"send","id":"b3","to":"x","body":"w".repeat(66_000)}).to_string(),
            "too_large",
            Some("b3"),
        ),
    ];
    for (what, text, code, id) in &cases {
        m.send_raw(text);
        let e = m.recv_type("error");
        assert_eq!(e["code"], *code, "{what}: {e}");
        assert!(
            e["message"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {e}"
        );
        if let Some(id) = id {
            assert_eq!(e["id"], *id, "{what}: {e}");
        }
        // The connection stays usable: the next send gets its one ack.
        m.send_to("msg-bystander-a", &format!("ok-{what}"), json!(what));
        let ack = m.recv_type("ack");
        assert_eq!(
            (ack["id"].as_str(), ack["status"].as_str()),
            (Some(format!("ok-{what}").as_str()), Some("delivered")),
            "{what}"
        );
        assert_eq!(by.a.recv_type("message")["body"], *what);
        by.still_chatting(what);
    }

    // Binary frames are refused with an error, not a close.
    m.ws.send(tungstenite::Message::binary(vec![1u8, 2, 3]))
        .unwrap();
    assert_eq!(m.recv_type("error")["code"], "binary_unsupported");

    // Sending to oneself is allowed: the sender's own session receives it.
    m.send_to("mallory", "self", json!("note to self"));
    let (mut got_msg, mut got_ack) = (None, None);
    while got_msg.is_none() || got_ack.is_none() {
        let v = m.recv();
        match v["type"].as_str() {
            Some("message") => got_msg = Some(v),
            Some("ack") => got_ack = Some(v),
            _ => panic!("unexpected {v}"),
        }
    }
    let msg = got_msg.unwrap();
    assert_eq!(
        (msg["from"].as_str(), &msg["body"]),
        (Some("mallory"), &json!("note to self"))
    );
    assert_eq!(got_ack.unwrap()["status"], "delivered");
    by.still_chatting("bad messages");
}

/// A send flood over --msg-rate/--msg-burst: every send gets exactly one outcome, those over
/// the limit the `rate_limited` error carrying their id, and the connection stays open.
#[test]
fn send_flood_is_rate_limited() {
    let stack = Stack::start_with(1, 60, &["--msg-rate", "5", "--msg-burst", "10"]);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "rate");
    let mut f = Client::connect(port, "flooder");
    let n = 300;
    for i in 0..n {
        f.send_to("rate-bystander-b", &format!("f{i}"), json!(i));
    }
    let mut outcomes = std::collections::HashMap::new();
    while outcomes.len() < n {
        let v = f.recv();
        let (kind, id) = match v["type"].as_str() {
            Some("ack") => (
                format!("ack:{}", v["status"].as_str().unwrap()),
                v["id"].clone(),
            ),
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                ("rate_limited".to_string(), v["id"].clone())
            }
            _ => panic!("unexpected {v}"),
        };
        let id = id
            .as_str()
            .expect("every outcome names its send")
            .to_string();
        assert!(
            outcomes.insert(id.clone(), kind).is_none(),
            "two outcomes for {id}"
        );
    }
    let limited = outcomes.values().filter(|k| *k == "rate_limited").count();
    let delivered = outcomes.values().filter(|k| *k == "ack:delivered").count();
    assert_eq!(limited + delivered, n, "{outcomes:?}");
    assert!(limited >= n - 20, "only {limited} of {n} limited");
    assert!(delivered >= 10, "the burst of 10 goes through: {delivered}");
    for _ in 0..delivered {
        by.b.recv_type("message");
    }
    assert!(
        f.try_recv(Duration::from_millis(300)).is_none(),
        "one outcome per send"
    );
    // Still connected: after the bucket refills, sends go through again.
    std::thread::sleep(Duration::from_millis(1100));
    f.send_to("rate-bystander-b", "later", json!("calm now"));
    assert_eq!(f.recv_type("ack")["status"], "delivered");
    assert_eq!(by.b.recv_type("message")["body"], "calm now");
    by.still_chatting("a send flood");
}

/// Every forged, broken or out-of-date token is refused with 401 before the upgrade, and the
/// body says why.
#[test]
fn bad_tokens_get_401() {
    let stack = Stack::start(1, 60);
    let port = stack.gw_ports[0];
    let mut by = Bystanders::connect(port, "tok");
    let now = now_secs();
    let key = SECRET.as_bytes();
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = |extra: &str| format!(r#"{{"sub":"mallory","exp":{}{extra}}}"#, now + 3600);

    // Our forger is right: it reproduces the gateway's own tokens byte for byte, and a forged
    // token with the right key is accepted.
    let exact = auth::sign_hs256(
        key,
        &auth::Claims {
            sub: "mallory".into(),
            exp: now + 3600,
            nbf: None,
            iat: None,
        },
    );
    assert_eq!(jwt(hs256, &claims(""), Some(key)), exact);
    Client::connect_with_token(port, &jwt(hs256, &claims(""), Some(key)));
    // Within the 30 s leeway an expired token still works.
    Client::connect_with_token(
        port,
        &jwt(
            hs256,
            &format!(r#"{{"sub":"mallory","exp":{}}}"#, now - 10),
            Some(key),
        ),
    );

    let pad = "p".repeat(4200);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none, no signature",
            jwt(r#"{"alg":"none","typ":"JWT"}"#, &claims(""), None),
            "unsupported algorithm",
        ),
        (
            "alg none, HS256 signature",
            jwt(r#"{"alg":"none"}"#, &claims(""), Some(key)),
            "unsupported algorithm",
        ),
        (
            "alg None",
            jwt(r#"{"alg":"None"}"#, &claims(""), None),
            "unsupported algorithm",
        ),
        (
            "alg HS384",
            jwt(r#"{"alg":"HS384","typ":"JWT"}"#, &claims(""), Some(key)),
            "unsupported algorithm",
        ),
        (
            "alg RS256",
            jwt(r#"{"alg":"RS256","typ":"JWT"}"#, &claims(""), Some(key)),
            "unsupported algorithm",
        ),
        (
            "alg hs256",
            jwt(r#"{"alg":"hs256"}"#, &claims(""), Some(key)),
            "unsupported algorithm",
        ),
        (
            "no alg",
            jwt(r#"{"typ":"JWT"}"#, &claims(""), Some(key)),
            "unsupported algorithm",
        ),
        (
            "wrong key",
            jwt(hs256, &claims(""), Some(b"not-the-gateway-secret-012345")),
            "bad signature",
        ),
        (
            "tampered payload",
            {
                let good = jwt(hs256, &claims(""), Some(key));
                let parts: Vec<&str> = good.split('.').collect();
                format!(
                    "{}.{}.{}",
                    parts[0],
                    b64url(r#"{"sub":"admin","exp":99999999999}"#.as_bytes()),
                    parts[2]
                )
            },
            "bad signature",
        ),
        (
            "empty signature",
            jwt(hs256, &claims(""), None),
            "bad signature",
        ),
        (
            "expired",
            jwt(
                hs256,
                &format!(r#"{{"sub":"mallory","exp":{}}}"#, now - 600),
                Some(key),
            ),
            "expired",
        ),
        (
            "not yet valid",
            jwt(
                hs256,
                &claims(&format!(r#","nbf":{}"#, now + 600)),
                Some(key),
            ),
            "not yet valid",
        ),
        (
            "missing sub",
            jwt(hs256, &format!(r#"{{"exp":{}}}"#, now + 3600), Some(key)),
            "no subject",
        ),
        (
            "invalid sub",
            jwt(
                hs256,
                &format!(r#"{{"sub":"bad user!","exp":{}}}"#, now + 3600),
                Some(key),
            ),
            "not a valid user id",
        ),
        (
            "empty sub",
            jwt(
                hs256,
                &format!(r#"{{"sub":"","exp":{}}}"#, now + 3600),
                Some(key),
            ),
            "not a valid user id",
        ),
        (
            "missing exp",
            jwt(hs256, r#"{"sub":"mallory"}"#, Some(key)),
            "no expiry",
        ),
        (
            "exp as a string",
            jwt(
                hs256,
                &format!(r#"{{"sub":"mallory","exp":"{}"}}"#, now + 3600),
                Some(key),
            ),
            "malformed",
        ),
        (
            "oversized (5 KB, validly signed)",
            jwt(hs256, &claims(&format!(r#","pad":"{pad}""#)), Some(key)),
            "too long",
        ),
        (
            "two segments",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0".into(),
            "malformed",
        ),
        ("not base64", "!!!.???.***".into(), "malformed"),
    ];
    for (what, tok, why) in &cases {
        for how in ["header", "query"] {
            let req = match how {
                "header" => upgrade_request("/ws", &format!("Authorization: Bearer {tok}\r\n")),
                _ => upgrade_request(&format!("/ws?token={tok}"), ""),
            };
            let r = http(port, req.as_bytes());
            assert_eq!(r.status, 401, "{what} in the {how}: {r:?}");
            assert!(
                r.body.contains(why),
                "{what} in the {how}: {:?} should say {why:?}",
                r.body
            );
        }
        by.still_chatting(what);
    }
    // A token so large that the head passes 8 KiB is refused as a huge head.
    let huge = jwt(
        hs256,
        &claims(&format!(r#","pad":"{}""#, "p".repeat(9000))),
        Some(key),
    );
    let r = http(
        port,
        upgrade_request("/ws", &format!("Authorization: Bearer {huge}\r\n")).as_bytes(),
    );
    assert_eq!(r.status, 431);
    // The header wins over the query: a bad header token is refused even with a good query one.
    let req = upgrade_request(
        &format!("/ws?token={}", token("mallory")),
        "Authorization: Bearer x.y.z\r\n",
    );
    assert_eq!(http(port, req.as_bytes()).status, 401);
    by.still_chatting("bad tokens");
}

/// Waits for one outcome of send `id` on `c`; returns it and how long it took.
fn outcome(c: &mut Client, id: &str) -> (Value, Duration) {
    let t0 = Instant::now();
    loop {
        let v = c.recv();
        if v["id"] == id && (v["type"] == "ack" || v["type"] == "error") {
            return (v, t0.elapsed());
        }
    }
}

/// One send from `from` to `to_user` (whose client is `to`): delivered once, intact.
fn exchange(from: &mut Client, to: &mut Client, to_user: &str, id: &str) {
    from.send_to(to_user, id, json!({ "id": id }));
    let (ack, _) = outcome(from, id);
    assert_eq!(ack["status"], "delivered", "{id}: {ack}");
    assert_eq!(to.recv_type("message")["body"]["id"], id);
}

/// The processes are alive, answer `/livez`, and never panicked.
fn assert_healthy(procs: &mut [&mut Proc], during: &str) {
    for p in procs.iter_mut() {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "{} exited during {during}:\n{}",
            p.name,
            p.stderr_log()
        );
        assert_eq!(
            p.admin_get("/livez").0,
            200,
            "{} /livez during {during}",
            p.name
        );
        let log = p.stderr_log();
        assert!(
            !log.contains("panicked"),
            "{} panicked during {during}:\n{log}",
            p.name
        );
    }
}

/// The registry misbehaves under a running router and gateway: garbage replies, no replies,
/// replies cut off mid-way. Sends get `failed` acks before the send timeout, upgrades are shed
/// (close 1013 with a retry hint), no process hangs or panics, and when Redis behaves again everything
/// recovers by itself.
#[test]
fn hostile_registry_gives_failed_acks_then_recovers() {
    let redis = testkit::RedisServer::start();
    let fake = FakeRedis::start(redis.port());
    let (mut router, mut gateway, port) = start_on_registry(&fake.url());
    // Routable while Redis behaves.
    let mut alice = Client::connect(port, "alice");
    let mut bob = Client::connect(port, "bob");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        alice.send_to("bob", "warmup", json!("hi"));
        let (ack, _) = outcome(&mut alice, "warmup");
        if ack["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "never routable: {ack}");
        std::thread::sleep(Duration::from_millis(100));
    }
    bob.recv_type("message");
    // Most of the send timeout is slack: the registry client's own timeout is 1 s.
    let send_timeout = Duration::from_secs(10);

    for mode in [Mode::Garbage, Mode::Silent, Mode::CloseMidReply] {
        let what = format!("{mode:?}");
        fake.set(mode);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        // At least three sends; with garbage, until every kind of garbage has been served.
        while i < 3 || (mode == Mode::Garbage && fake.garbage_kinds_served() < GARBAGE.len()) {
            assert!(
                Instant::now() < deadline,
                "{what}: garbage kinds served: {}",
                fake.garbage_kinds_served()
            );
            i += 1;
            let id = format!("{what}-{i}");
            alice.send_to("bob", &id, json!(i));
            let (ack, took) = outcome(&mut alice, &id);
            assert_eq!(ack["type"], "ack", "{what}: {ack}");
            assert_eq!(ack["status"], "failed", "{what}: {ack}");
            assert!(
                ack["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{what}: {ack}"
            );
            assert!(
                took <= send_timeout + Duration::from_secs(2),
                "{what}: ack after {took:?}"
            );
            println!("{what}: failed ack after {took:?}: {}", ack["reason"]);
            if mode == Mode::Garbage {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // New sessions cannot register: the upgrade completes and closes at once with 1013
        // and a retry hint, well before the handshake timeout.
        let t0 = Instant::now();
        let u = try_upgrade(port, "carol");
        let wait = assert_shed(&u, &what);
        println!("{what}: shed after {:?}, retry in {wait} ms", t0.elapsed());
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: shed after {:?}",
            t0.elapsed()
        );
        // Existing connections are untouched: they still get answers that need no registry.
        alice.send_raw("{not json");
        assert_eq!(alice.recv_type("error")["code"], "bad_json");
        assert_eq!(
            bob.try_recv(Duration::from_millis(100)),
            None,
            "{what}: nothing delivered"
        );
        assert_healthy(&mut [&mut router, &mut gateway], &what);
        // Back to a well-behaved Redis: sends are delivered again, new sessions register.
        fake.set(Mode::Proxy);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut n = 0;
        loop {
            n += 1;
            let id = format!("{what}-recover-{n}");
            alice.send_to("bob", &id, json!(n));
            let (ack, _) = outcome(&mut alice, &id);
            if ack["status"] == "delivered" {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: no recovery: {ack}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(bob.recv_type("message")["body"], n);
        // Each gateway shard has its own registry client, reconnecting with a backoff of up
        // to 2 s: new sessions may need a retry or two.
        let mut carol = connect_within(port, "carol", Duration::from_secs(10));
        // Carol's connection may be pinned to the other router shard, whose registry client
        // reconnects on its own schedule: its first sends may still fail.
        let deadline = Instant::now() + Duration::from_secs(15);
        for k in 0.. {
            let id = format!("{what}-carol-{k}");
            carol.send_to("alice", &id, json!(id));
            let (ack, _) = outcome(&mut carol, &id);
            if ack["status"] == "delivered" {
                assert_eq!(alice.recv_type("message")["body"], id.as_str());
                break;
            }
            assert_eq!(ack["status"], "failed", "{ack}");
            assert!(
                Instant::now() < deadline,
                "{what}: carol never routable: {ack}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // No reply is matched to the wrong request after the fault: a few exchanges in both
        // directions each arrive once, intact, with their own ack.
        for k in 0..5 {
            exchange(&mut alice, &mut bob, "bob", &format!("{what}-after-a-{k}"));
            exchange(
                &mut carol,
                &mut alice,
                "alice",
                &format!("{what}-after-c-{k}"),
            );
        }
        println!("{what}: recovered after {n} sends");
    }
    assert!(
        fake.accepted.load(std::sync::atomic::Ordering::Relaxed) > 4,
        "clients reconnected"
    );
    assert_healthy(&mut [&mut router, &mut gateway], "the whole test");
}

/// A router and gateway that start against a registry answering only garbage come up anyway,
/// shed upgrades (close 1013 with a retry hint), and serve as soon as Redis behaves.
#[test]
fn garbage_registry_from_the_start() {
    let redis = testkit::RedisServer::start();
    let fake = FakeRedis::start(redis.port());
    fake.set(Mode::Garbage);
    let (mut router, mut gateway, port) = start_on_registry(&fake.url());
    for _ in 0..3 {
        assert_shed(&try_upgrade(port, "dave"), "a garbage registry");
    }
    assert_healthy(&mut [&mut router, &mut gateway], "a garbage registry");
    fake.set(Mode::Proxy);
    let mut dave = connect_within(port, "dave", Duration::from_secs(15));
    // The router's registry client reconnects on its own schedule: routable again soon.
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        let id = format!("d{n}");
        dave.send_to("nobody", &id, json!(n));
        let (ack, _) = outcome(&mut dave, &id);
        if ack["status"] == "offline" {
            break;
        }
        assert_eq!(ack["status"], "failed", "{ack}");
        assert!(Instant::now() < deadline, "never routable again: {ack}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_healthy(&mut [&mut router, &mut gateway], "recovery");
}
