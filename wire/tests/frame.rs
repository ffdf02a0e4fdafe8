//! Link frame codec: round trips, split reads, batching, and every rejection.

use bytes::{BufMut, Bytes, BytesMut};
use wire::frame::{self, *};
use wire::WireError;

const MAX: usize = DEFAULT_MAX_FRAME;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// One of each frame type, encoded, with the frame it must decode to.
fn samples() -> Vec<(BytesMut, Frame)> {
    let payload = r#"{"type":"message","id":"m1","from":"bob","body":{"x":[1,2,"é"]},"ts":1}"#;
    let mut out = Vec::new();

    let mut buf = BytesMut::new();
    encode_hello(&mut buf, PROTOCOL_VERSION, Role::Gateway, "gw-1.eu", 3);
    out.push((
        buf,
        Frame::Hello {
            version: PROTOCOL_VERSION,
            role: Role::Gateway,
            instance: b("gw-1.eu"),
            shard: 3,
        },
    ));
    let mut buf = BytesMut::new();
    encode_hello(&mut buf, 7, Role::Router, "", 0);
    out.push((
        buf,
        Frame::Hello {
            version: 7,
            role: Role::Router,
            instance: Bytes::new(),
            shard: 0,
        },
    ));
    let mut buf = BytesMut::new();
    encode_send(&mut buf, u64::MAX, "alice@example.com", payload.as_bytes());
    out.push((
        buf,
        Frame::Send {
            msg_id: u64::MAX,
            to: b("alice@example.com"),
            payload: b(payload),
        },
    ));
    for (status, reason) in [
        (AckStatus::Delivered, ""),
        (AckStatus::Offline, "no sessions"),
        (AckStatus::Failed, "router shutting down: ünïcode"),
    ] {
        let mut buf = BytesMut::new();
        encode_ack(&mut buf, 42, status, reason);
        out.push((
            buf,
            Frame::Ack {
                msg_id: 42,
                status,
                reason: b(reason),
            },
        ));
    }
    let mut buf = BytesMut::new();
    encode_deliver(
        &mut buf,
        9,
        "bob",
        &[1, u64::MAX, 0x0102030405060708],
        payload.as_bytes(),
    );
    out.push((
        buf,
        Frame::Deliver {
            fwd_id: 9,
            to: b("bob"),
            sessions: SessionIds::from_ids(&[1, u64::MAX, 0x0102030405060708]),
            payload: b(payload),
        },
    ));
    let mut buf = BytesMut::new();
    encode_deliver(&mut buf, 10, "bob", &[], b"");
    out.push((
        buf,
        Frame::Deliver {
            fwd_id: 10,
            to: b("bob"),
            sessions: SessionIds::from_ids(&[]),
            payload: Bytes::new(),
        },
    ));
    let mut buf = BytesMut::new();
    encode_deliver_result(&mut buf, 11, 2);
    out.push((
        buf,
        Frame::DeliverResult {
            fwd_id: 11,
            delivered: 2,
        },
    ));
    let mut buf = BytesMut::new();
    encode_ping(&mut buf, 0xdead_beef);
    out.push((buf, Frame::Ping { nonce: 0xdead_beef }));
    let mut buf = BytesMut::new();
    encode_pong(&mut buf, 0xdead_beef);
    out.push((buf, Frame::Pong { nonce: 0xdead_beef }));
    let mut buf = BytesMut::new();
    encode_goaway(&mut buf);
    out.push((buf, Frame::Goaway));
    let mut buf = BytesMut::new();
    encode_challenge(&mut buf, 42);
    out.push((buf, Frame::Challenge { nonce: 42 }));
    let mut buf = BytesMut::new();
    encode_proof(&mut buf, &[7; 32]);
    out.push((buf, Frame::Proof { mac: [7; 32] }));
    let users = ["alice", "bob@example.com", "c"];
    let mut buf = BytesMut::new();
    encode_presence(&mut buf, 77, users.iter().copied());
    out.push((
        buf,
        Frame::Presence {
            req_id: 77,
            users: UserList::from_users(&users),
        },
    ));
    let mut buf = BytesMut::new();
    encode_presence(&mut buf, 78, std::iter::empty());
    out.push((
        buf,
        Frame::Presence {
            req_id: 78,
            users: UserList::from_users(&[]),
        },
    ));
    let mut buf = BytesMut::new();
    let states = [
        PresenceState::Online,
        PresenceState::Offline,
        PresenceState::Unknown,
    ];
    encode_presence_result(&mut buf, 77, &states);
    out.push((
        buf,
        Frame::PresenceResult {
            req_id: 77,
            states: Bytes::from_static(&[1, 0, 2]),
        },
    ));
    out
}

#[test]
fn presence_frames() {
    let mut buf = BytesMut::new();
    encode_presence(&mut buf, 1, ["alice", "bob"].into_iter());
    let Some(Frame::Presence { users, .. }) = decode(&mut buf, MAX).unwrap() else {
        panic!("not a presence");
    };
    assert_eq!(users.len(), 2);
    assert_eq!(users.iter().collect::<Vec<_>>(), vec!["alice", "bob"]);
    // A user that is not a valid id, a count past the end, trailing bytes, a bad state.
    let mut bad = BytesMut::new();
    encode_presence(&mut bad, 1, ["alice", "b{b}"].into_iter());
    assert!(matches!(
        decode(&mut bad, MAX),
        Err(WireError::InvalidUser { .. })
    ));
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&3u16.to_be_bytes());
    body.extend_from_slice(&[0, 1, b'a']);
    assert!(matches!(
        decode(&mut raw(0x0b, &body), MAX),
        Err(WireError::Truncated { .. })
    ));
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&[0, 1, b'a', 9]);
    assert!(matches!(
        decode(&mut raw(0x0b, &body), MAX),
        Err(WireError::TrailingBytes { .. })
    ));
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&2u16.to_be_bytes());
    body.extend_from_slice(&[1, 3]);
    assert_eq!(
        decode(&mut raw(0x0c, &body), MAX),
        Err(WireError::UnknownPresenceState(3))
    );
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&5u16.to_be_bytes());
    body.extend_from_slice(&[1, 0]);
    assert!(matches!(
        decode(&mut raw(0x0c, &body), MAX),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn round_trip_every_frame_type() {
    for (mut buf, expected) in samples() {
        let len = buf.len();
        let prefix = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(prefix + 4, len, "length prefix of {expected:?}");
        let got = decode(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(got, expected);
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, MAX).unwrap(), None);
    }
}

#[test]
fn session_ids_view() {
    let mut buf = BytesMut::new();
    encode_deliver(&mut buf, 1, "u", &[5, 6, 7], b"{}");
    let Some(Frame::Deliver { sessions, .. }) = decode(&mut buf, MAX).unwrap() else {
        panic!("not a deliver");
    };
    assert_eq!(sessions.len(), 3);
    assert!(!sessions.is_empty());
    assert_eq!(sessions.iter().collect::<Vec<_>>(), vec![5, 6, 7]);
}

#[test]
fn encoders_reserve_exactly_once() {
    // Each encoder reserves the exact frame size up front: from an empty buffer, the capacity
    // afterwards is exactly the frame's length (one allocation, no growth).
    // (A bodiless frame is 5 bytes; the allocator's minimum is larger, so it is skipped.)
    for (buf, expected) in samples().into_iter().filter(|(b, _)| b.len() > 5) {
        assert_eq!(buf.capacity(), buf.len(), "{expected:?}");
    }
    let mut buf = BytesMut::new();
    encode_deliver(&mut buf, 1, "bob", &[1, 2, 3], &[b'x'; 200]);
    assert_eq!(buf.capacity(), buf.len());
}

#[test]
fn split_reads_byte_by_byte() {
    for (encoded, expected) in samples() {
        let mut buf = BytesMut::new();
        for (i, byte) in encoded.iter().enumerate() {
            buf.put_u8(*byte);
            let got = decode(&mut buf, MAX).unwrap();
            if i + 1 < encoded.len() {
                assert_eq!(got, None, "decoded early at byte {i} of {expected:?}");
                assert_eq!(buf.len(), i + 1, "incomplete decode must not consume");
            } else {
                assert_eq!(got, Some(expected.clone()));
                assert!(buf.is_empty());
            }
        }
    }
}

#[test]
fn many_frames_in_one_buffer_with_trailing_partial() {
    let samples = samples();
    let mut buf = BytesMut::new();
    for (encoded, _) in &samples {
        buf.extend_from_slice(encoded);
    }
    // The start of another frame: 3 bytes of its 4-byte prefix, then more.
    let mut next = BytesMut::new();
    encode_send(&mut next, 77, "carol", b"{\"k\":1}");
    buf.extend_from_slice(&next[..3]);

    for (_, expected) in &samples {
        assert_eq!(decode(&mut buf, MAX).unwrap().as_ref(), Some(expected));
    }
    assert_eq!(decode(&mut buf, MAX).unwrap(), None);
    assert_eq!(&buf[..], &next[..3]);

    buf.extend_from_slice(&next[3..10]);
    assert_eq!(decode(&mut buf, MAX).unwrap(), None);
    assert_eq!(buf.len(), 10);
    buf.extend_from_slice(&next[10..]);
    buf.extend_from_slice(&[0, 0]); // partial prefix of yet another frame
    assert_eq!(
        decode(&mut buf, MAX).unwrap(),
        Some(Frame::Send {
            msg_id: 77,
            to: b("carol"),
            payload: b("{\"k\":1}"),
        })
    );
    assert_eq!(&buf[..], &[0, 0]);
}

#[test]
fn oversize_length_rejected_before_body_arrives() {
    let mut buf = BytesMut::new();
    buf.put_u32(1025);
    assert_eq!(
        decode(&mut buf, 1024),
        Err(WireError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    );
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    buf.put_u8(frame_type::SEND);
    assert!(matches!(
        decode(&mut buf, MAX),
        Err(WireError::FrameTooLarge { .. })
    ));
    // Exactly the maximum is fine (and waits for the body).
    let mut buf = BytesMut::new();
    buf.put_u32(1024);
    buf.put_u8(frame_type::SEND);
    assert_eq!(decode(&mut buf, 1024), Ok(None));
}

#[test]
fn encoded_frame_over_max_is_rejected() {
    let mut buf = BytesMut::new();
    encode_send(&mut buf, 1, "bob", &[b'x'; 100]);
    assert!(matches!(
        decode(&mut buf, 64),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn empty_frame_rejected() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert_eq!(decode(&mut buf, MAX), Err(WireError::EmptyFrame));
}

/// Wraps `body` in a length prefix and type byte, bypassing the encoders.
fn raw(frame_type: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(1 + body.len() as u32);
    buf.put_u8(frame_type);
    buf.put_slice(body);
    buf
}

mod frame_type {
    pub const HELLO: u8 = 1;
    pub const SEND: u8 = 2;
    pub const ACK: u8 = 3;
    pub const DELIVER: u8 = 4;
    pub const DELIVER_RESULT: u8 = 5;
    pub const PING: u8 = 6;
}

#[test]
fn garbage_types_rejected() {
    for t in [0u8, 0x0d, 0x7f, 0xff] {
        let mut buf = raw(t, &[0; 8]);
        assert_eq!(decode(&mut buf, MAX), Err(WireError::UnknownFrameType(t)));
    }
}

#[test]
fn truncated_fixed_fields() {
    let mut buf = raw(frame_type::PING, &[0; 7]);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::Truncated {
            frame: "Ping",
            field: "nonce"
        })
    );
    let mut buf = raw(frame_type::DELIVER_RESULT, &[0; 8]);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::Truncated {
            frame: "DeliverResult",
            field: "delivered"
        })
    );
    let mut buf = raw(frame_type::HELLO, &[]);
    assert!(matches!(
        decode(&mut buf, MAX),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn truncated_inner_lengths() {
    // Send whose `to` length overruns the frame.
    let mut body = BytesMut::new();
    body.put_u64(1);
    body.put_u16(50);
    body.put_slice(b"bob");
    let mut buf = raw(frame_type::SEND, &body);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::Truncated {
            frame: "Send",
            field: "to"
        })
    );

    // Send whose payload length overruns the frame.
    let mut body = BytesMut::new();
    body.put_u64(1);
    body.put_u16(3);
    body.put_slice(b"bob");
    body.put_u32(1000);
    body.put_slice(b"{}");
    let mut buf = raw(frame_type::SEND, &body);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::Truncated {
            frame: "Send",
            field: "payload"
        })
    );

    // Deliver whose session count overruns the frame (and would overflow count * 8 on 32-bit).
    for count in [3u32, u32::MAX] {
        let mut body = BytesMut::new();
        body.put_u64(1);
        body.put_u16(3);
        body.put_slice(b"bob");
        body.put_u32(count);
        body.put_u64(1);
        let mut buf = raw(frame_type::DELIVER, &body);
        assert_eq!(
            decode(&mut buf, MAX),
            Err(WireError::Truncated {
                frame: "Deliver",
                field: "sessions"
            })
        );
    }

    // Ack cut inside the reason's length prefix.
    let mut body = BytesMut::new();
    body.put_u64(1);
    body.put_u8(0);
    body.put_u8(0);
    let mut buf = raw(frame_type::ACK, &body);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::Truncated {
            frame: "Ack",
            field: "reason"
        })
    );
}

#[test]
fn trailing_garbage_inside_frame() {
    for (encoded, expected) in samples() {
        // Grow the frame by one byte inside its length prefix.
        let mut buf = BytesMut::new();
        let len = u32::from_be_bytes(encoded[..4].try_into().unwrap());
        buf.put_u32(len + 1);
        buf.put_slice(&encoded[4..]);
        buf.put_u8(0xAA);
        assert!(
            matches!(
                decode(&mut buf, MAX),
                Err(WireError::TrailingBytes { extra: 1, .. })
            ),
            "{expected:?}"
        );
    }
}

#[test]
fn invalid_utf8_and_user_rejected() {
    let mut buf = BytesMut::new();
    encode_hello(&mut buf, 1, Role::Gateway, "gw", 0);
    let n = buf.len();
    buf[n - 1] = 0xff;
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::InvalidUtf8 {
            frame: "Hello",
            field: "instance"
        })
    );

    let mut buf = BytesMut::new();
    encode_send(&mut buf, 1, "bob", &[b'{', 0xc3, b'}']);
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::InvalidUtf8 {
            frame: "Send",
            field: "payload"
        })
    );

    let mut buf = BytesMut::new();
    encode_ack(&mut buf, 1, AckStatus::Failed, "é");
    let n = buf.len();
    buf[n - 1] = b'x'; // cut the two-byte sequence in half
    assert_eq!(
        decode(&mut buf, MAX),
        Err(WireError::InvalidUtf8 {
            frame: "Ack",
            field: "reason"
        })
    );

    for bad in ["", "has space", "a/b"] {
        let mut buf = BytesMut::new();
        encode_send(&mut buf, 1, bad, b"{}");
        assert_eq!(
            decode(&mut buf, MAX),
            Err(WireError::InvalidUser { frame: "Send" }),
            "{bad:?}"
        );
        let mut buf = BytesMut::new();
        encode_deliver(&mut buf, 1, bad, &[1], b"{}");
        assert_eq!(
            decode(&mut buf, MAX),
            Err(WireError::InvalidUser { frame: "Deliver" })
        );
    }
    let mut buf = BytesMut::new();
    encode_send(&mut buf, 1, &"u".repeat(wire::MAX_USER_LEN + 1), b"{}");
    assert!(matches!(
        decode(&mut buf, MAX),
        Err(WireError::InvalidUser { .. })
    ));
}

#[test]
fn unknown_status_and_role_rejected() {
    let mut buf = BytesMut::new();
    encode_ack(&mut buf, 1, AckStatus::Delivered, "");
    buf[4 + 1 + 8] = 3;
    assert_eq!(decode(&mut buf, MAX), Err(WireError::UnknownAckStatus(3)));

    let mut buf = BytesMut::new();
    encode_hello(&mut buf, 1, Role::Router, "r", 0);
    buf[4 + 1 + 2] = 0;
    assert_eq!(decode(&mut buf, MAX), Err(WireError::UnknownRole(0)));
}

#[test]
fn long_strings_are_cut_at_char_boundary() {
    let reason = "é".repeat(40_000); // 80 000 bytes
    let mut buf = BytesMut::new();
    encode_ack(&mut buf, 1, AckStatus::Failed, &reason);
    let Some(Frame::Ack { reason: got, .. }) = decode(&mut buf, MAX).unwrap() else {
        panic!("not an ack");
    };
    assert_eq!(got.len(), 65_534);
    assert!(std::str::from_utf8(&got).is_ok());
}

#[test]
fn payloads_are_zero_copy_slices() {
    let mut buf = BytesMut::new();
    encode_send(&mut buf, 1, "bob", &[b'x'; 200]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Frame::Send { payload, .. }) = frame::decode(&mut buf, MAX).unwrap() else {
        panic!("not a send");
    };
    let p = payload.as_ptr() as usize;
    assert!(p >= start && p + payload.len() <= end);
}

#[test]
fn ack_status_strings() {
    assert_eq!(AckStatus::Delivered.as_str(), "delivered");
    assert_eq!(AckStatus::Offline.as_str(), "offline");
    assert_eq!(AckStatus::Failed.as_str(), "failed");
}
