//! Encoders for the messages a gateway sends its clients. Each appends one complete JSON text
//! frame to `out` (it does not clear it), reserving once for the common case.

use serde_json::value::RawValue;

use super::ErrorCode;
use crate::frame::{AckStatus, PresenceState};
use crate::json::{str_len_hint, write_str, write_u64};

/// Appends `{"type":"welcome","user":U,"session":S,"gateway":G}`.
pub fn encode_welcome(out: &mut Vec<u8>, user: &str, session: &str, gateway: &str) {
    out.reserve(48 + str_len_hint(user) + str_len_hint(session) + str_len_hint(gateway));
    out.extend_from_slice(br#"{"type":"welcome","user":"#);
    write_str(out, user);
    out.extend_from_slice(br#","session":"#);
    write_str(out, session);
    out.extend_from_slice(br#","gateway":"#);
    write_str(out, gateway);
    out.push(b'}');
}

/// Appends `{"type":"ack","id":ID,"status":S}`, with `,"reason":R` before the `}` when
/// `reason` is given.
pub fn encode_ack(out: &mut Vec<u8>, id: &RawValue, status: AckStatus, reason: Option<&str>) {
    let reason_len = reason.map_or(0, |r| 10 + str_len_hint(r));
    out.reserve(40 + id.get().len() + reason_len);
    out.extend_from_slice(br#"{"type":"ack","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(br#","status":""#);
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b'"');
    if let Some(reason) = reason {
        out.extend_from_slice(br#","reason":"#);
        write_str(out, reason);
    }
    out.push(b'}');
}

/// Appends `{"type":"error","id":ID_or_null,"code":C,"message":M}`.
pub fn encode_error(out: &mut Vec<u8>, id: Option<&RawValue>, code: ErrorCode, message: &str) {
    let id = id.map_or("null", |id| id.get());
    out.reserve(60 + id.len() + str_len_hint(message));
    out.extend_from_slice(br#"{"type":"error","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#","code":""#);
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(br#"","message":"#);
    write_str(out, message);
    out.push(b'}');
}

/// Appends `{"type":"message","id":SID,"from":U,"body":BODY,"ts":T}`; `body` is copied byte for
/// byte.
pub fn encode_message(out: &mut Vec<u8>, server_id: &str, from: &str, body: &RawValue, ts_ms: u64) {
    out.reserve(60 + str_len_hint(server_id) + str_len_hint(from) + body.get().len());
    out.extend_from_slice(br#"{"type":"message","id":"#);
    write_str(out, server_id);
    out.extend_from_slice(br#","from":"#);
    write_str(out, from);
    out.extend_from_slice(br#","body":"#);
    out.extend_from_slice(body.get().as_bytes());
    out.extend_from_slice(br#","ts":"#);
    write_u64(out, ts_ms);
    out.push(b'}');
}

/// Appends `{"type":"presence","id":ID,"online":[...],"offline":[...]}`, with
/// `,"unknown":[...]` before the `}` when some user's state is unknown.
pub fn encode_presence<'a>(
    out: &mut Vec<u8>,
    id: &RawValue,
    answers: impl Iterator<Item = (&'a str, PresenceState)> + Clone,
) {
    let names: usize = answers.clone().map(|(u, _)| str_len_hint(u) + 1).sum();
    out.reserve(64 + id.get().len() + names);
    out.extend_from_slice(br#"{"type":"presence","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    let list = |out: &mut Vec<u8>, key: &[u8], state: PresenceState| {
        out.extend_from_slice(key);
        let mut first = true;
        for (u, _) in answers.clone().filter(|(_, s)| *s == state) {
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, u);
        }
        out.push(b']');
    };
    list(out, br#","online":["#, PresenceState::Online);
    list(out, br#","offline":["#, PresenceState::Offline);
    if answers.clone().any(|(_, s)| s == PresenceState::Unknown) {
        list(out, br#","unknown":["#, PresenceState::Unknown);
    }
    out.push(b'}');
}
