//! One `encode_*` function per frame type. Each computes its exact size, reserves once and
//! appends the frame to `buf`, so a caller batches many frames before one write.
//!
//! Callers pass valid values: `to` a valid user id and every frame at most the peer's
//! `max_frame`; otherwise the peer rejects the frame and drops the link. Strings with a u16
//! length (`instance`, `to`, `reason`) longer than 65 535 bytes are cut at a character
//! boundary.
//!
//! # Panics
//!
//! If a frame would exceed `u32::MAX` bytes, which no configured `max_frame` allows.

use bytes::{BufMut, BytesMut};

use super::{ty, AckStatus, PresenceState, Role, HEADER_LEN};

/// Appends a `Hello` frame.
pub fn encode_hello(buf: &mut BytesMut, version: u16, role: Role, instance: &str, shard: u16) {
    let instance = clamp16(instance);
    let body = 2 + 1 + 2 + 2 + instance.len();
    header(buf, ty::HELLO, body);
    buf.put_u16(version);
    buf.put_u8(role as u8);
    buf.put_u16(shard);
    put_str16(buf, instance);
}

/// Appends a `Send` frame.
pub fn encode_send(buf: &mut BytesMut, msg_id: u64, to: &str, payload: &[u8]) {
    let to = clamp16(to);
    let body = 8 + 2 + to.len() + 4 + payload.len();
    header(buf, ty::SEND, body);
    buf.put_u64(msg_id);
    put_str16(buf, to);
    put_bytes32(buf, payload);
}

/// Appends an `Ack` frame; `reason` may be empty.
pub fn encode_ack(buf: &mut BytesMut, msg_id: u64, status: AckStatus, reason: &str) {
    let reason = clamp16(reason);
    let body = 8 + 1 + 2 + reason.len();
    header(buf, ty::ACK, body);
    buf.put_u64(msg_id);
    buf.put_u8(status as u8);
    put_str16(buf, reason);
}

/// Appends a `Deliver` frame.
pub fn encode_deliver(buf: &mut BytesMut, fwd_id: u64, to: &str, sessions: &[u64], payload: &[u8]) {
    let to = clamp16(to);
    let body = 8 + 2 + to.len() + 4 + sessions.len() * 8 + 4 + payload.len();
    header(buf, ty::DELIVER, body);
    buf.put_u64(fwd_id);
    put_str16(buf, to);
    buf.put_u32(len32(sessions.len()));
    for &s in sessions {
        buf.put_u64(s);
    }
    put_bytes32(buf, payload);
}

/// Appends a `DeliverResult` frame.
pub fn encode_deliver_result(buf: &mut BytesMut, fwd_id: u64, delivered: u32) {
    header(buf, ty::DELIVER_RESULT, 8 + 4);
    buf.put_u64(fwd_id);
    buf.put_u32(delivered);
}

/// Appends a `Ping` frame.
pub fn encode_ping(buf: &mut BytesMut, nonce: u64) {
    header(buf, ty::PING, 8);
    buf.put_u64(nonce);
}

/// Appends a `Pong` frame.
pub fn encode_pong(buf: &mut BytesMut, nonce: u64) {
    header(buf, ty::PONG, 8);
    buf.put_u64(nonce);
}

/// Appends a `Challenge` frame.
pub fn encode_challenge(buf: &mut BytesMut, nonce: u64) {
    header(buf, ty::CHALLENGE, 8);
    buf.put_u64(nonce);
}

/// Appends a `Proof` frame.
pub fn encode_proof(buf: &mut BytesMut, mac: &[u8; 32]) {
    header(buf, ty::PROOF, 32);
    buf.put_slice(mac);
}

/// Appends a `Presence` frame. At most `u16::MAX` users (callers cap far lower).
pub fn encode_presence<'a>(
    buf: &mut BytesMut,
    req_id: u64,
    users: impl Iterator<Item = &'a str> + Clone,
) {
    let (count, bytes) = users
        .clone()
        .take(u16::MAX as usize)
        .fold((0usize, 0usize), |(c, b), u| {
            (c + 1, b + 2 + clamp16(u).len())
        });
    header(buf, ty::PRESENCE, 8 + 2 + bytes);
    buf.put_u64(req_id);
    buf.put_u16(count as u16);
    for u in users.take(count) {
        put_str16(buf, clamp16(u));
    }
}

/// Appends a `PresenceResult` frame, one state per user of the request.
pub fn encode_presence_result(buf: &mut BytesMut, req_id: u64, states: &[PresenceState]) {
    let states = &states[..states.len().min(u16::MAX as usize)];
    header(buf, ty::PRESENCE_RESULT, 8 + 2 + states.len());
    buf.put_u64(req_id);
    buf.put_u16(states.len() as u16);
    for s in states {
        buf.put_u8(*s as u8);
    }
}

/// Appends a `Goaway` frame.
pub fn encode_goaway(buf: &mut BytesMut) {
    header(buf, ty::GOAWAY, 0);
}

/// Reserves room for the whole frame, then writes the length prefix and the type byte.
fn header(buf: &mut BytesMut, frame_type: u8, body_len: usize) {
    buf.reserve(HEADER_LEN + body_len);
    buf.put_u32(len32(1 + body_len));
    buf.put_u8(frame_type);
}

fn put_str16(buf: &mut BytesMut, s: &str) {
    // `clamp16` already bounded the length.
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

fn put_bytes32(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32(len32(b.len()));
    buf.put_slice(b);
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("link frame larger than u32::MAX bytes")
}

/// `s` cut to at most `u16::MAX` bytes at a character boundary.
fn clamp16(s: &str) -> &str {
    let max = u16::MAX as usize;
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
