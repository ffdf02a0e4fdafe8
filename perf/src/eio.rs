//! Socket.IO v5 over Engine.IO v4 on a WebSocket, as much of it as perf needs to drive the peer
//! in `perf/socketio/` with the same schedule and probes as Connect. No I/O.
//!
//! Every WebSocket text frame is one Engine.IO packet: a type digit (`0` open, `2` ping, `3`
//! pong, `4` message ...) and its data. A message carries one Socket.IO packet: a type digit
//! (`0` connect, `2` event, `3` ack, `4` connect error), an optional ack id (digits), then JSON.
//! So `40{"token":"..."}` connects with auth, `42["message",{...}]` is an event, `4217[...]` an
//! event that wants ack 17 and `4317[...]` that ack. The peer's events:
//!
//! * client -> server `42<seq>["send",{"to":USER,"body":PROBE}]`, acked with
//!   `43<seq>[{"status":"delivered"}]`;
//! * server -> client `42["message",{"from":USER,"body":PROBE}]`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::{encode_probe, AckStatus, ParseError, ServerFrame};

/// The path (and query) of an Engine.IO v4 WebSocket-only connection.
#[allow(dead_code)] // used by compare
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// The pong a client answers every ping with.
pub const PONG: &str = "3";

/// What kind of packet a text frame is, as the connection (not the session) cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{...}`: the Engine.IO handshake.
    Open,
    /// `2`: the server's heartbeat; answer with [`PONG`].
    Ping,
    /// `40{...}`: the Socket.IO connect succeeded (auth accepted).
    Connected,
    /// `44{...}`: the connect was refused; the data says why.
    ConnectError(&'a str),
    /// `1` or `41`: the server closes.
    Close,
    /// Anything else: events and acks for the session.
    Other,
}

pub fn classify(text: &str) -> Packet<'_> {
    let b = text.as_bytes();
    match (b.first(), b.get(1)) {
        (Some(b'0'), _) => Packet::Open,
        (Some(b'2'), _) => Packet::Ping,
        (Some(b'1'), _) | (Some(b'4'), Some(b'1')) => Packet::Close,
        (Some(b'4'), Some(b'0')) => Packet::Connected,
        (Some(b'4'), Some(b'4')) => Packet::ConnectError(&text[2..]),
        _ => Packet::Other,
    }
}

/// The connect packet carrying the JWT as Socket.IO `auth`.
pub fn connect_packet(token: &str) -> String {
    // Tokens are base64url and dots: nothing to escape.
    format!(r#"40{{"token":"{token}"}}"#)
}

/// Writes `42<seq>["send",{"to":TO,"body":PROBE}]` into `out` (cleared first).
pub fn encode_send(
    out: &mut String,
    to: &str,
    seq: u64,
    intended_ns: u64,
    conn: u64,
    body_bytes: usize,
) {
    out.clear();
    let _ = write!(out, r#"42{seq}["send",{{"to":"{to}","body":"#);
    encode_probe(out, seq, intended_ns, conn, body_bytes);
    out.push_str("}]");
}

#[derive(Deserialize)]
struct EventData<'a> {
    #[serde(default, borrow)]
    from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AckData<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
}

/// Parses an event or ack frame into the frame the session counts.
pub fn parse_server(text: &str) -> Result<ServerFrame<'_>, ParseError> {
    let err = |why: &str| ParseError(format!("socket.io: {why}"));
    let rest = text
        .strip_prefix('4')
        .ok_or_else(|| err("not an Engine.IO message"))?;
    let kind = rest
        .as_bytes()
        .first()
        .copied()
        .ok_or_else(|| err("empty"))?;
    let rest = &rest[1..];
    // Namespaces other than `/` are not used by the peer.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse::<u64>().ok();
    let json = &rest[digits..];
    match kind {
        b'2' => {
            let (name, data): (Cow<'_, str>, EventData<'_>) =
                serde_json::from_str(json).map_err(|e| err(&e.to_string()))?;
            if name != "message" {
                return Ok(ServerFrame::Other { kind: name });
            }
            Ok(ServerFrame::Message {
                from: data.from.ok_or_else(|| err("message without `from`"))?,
                probe: data.body.and_then(|b| serde_json::from_str(b.get()).ok()),
            })
        }
        b'3' => {
            let (data,): (AckData<'_>,) =
                serde_json::from_str(json).map_err(|e| err(&e.to_string()))?;
            let status = match &*data.status {
                "delivered" => AckStatus::Delivered,
                "offline" => AckStatus::Offline,
                "failed" => AckStatus::Failed,
                _ => return Ok(ServerFrame::Other { kind: "ack".into() }),
            };
            Ok(ServerFrame::Ack {
                id,
                status,
                reason: data.reason,
            })
        }
        _ => Ok(ServerFrame::Other {
            kind: Cow::Borrowed("socket.io packet"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Probe;

    #[test]
    fn classifies_engine_io_packets() {
        assert_eq!(
            classify(r#"0{"sid":"x","pingInterval":25000}"#),
            Packet::Open
        );
        assert_eq!(classify("2"), Packet::Ping);
        assert_eq!(classify(r#"40{"sid":"abc"}"#), Packet::Connected);
        assert_eq!(
            classify(r#"44{"message":"bad token"}"#),
            Packet::ConnectError(r#"{"message":"bad token"}"#)
        );
        assert_eq!(classify("41"), Packet::Close);
        assert_eq!(classify("1"), Packet::Close);
        assert_eq!(classify(r#"42["message",{}]"#), Packet::Other);
        assert_eq!(classify(""), Packet::Other);
        assert_eq!(connect_packet("a.b.c"), r#"40{"token":"a.b.c"}"#);
    }

    #[test]
    fn send_is_an_event_with_an_ack_id_and_a_padded_probe() {
        let mut out = String::from("stale");
        encode_send(&mut out, "u3", 17, 5_000, 2, 80);
        assert!(
            out.starts_with(r#"4217["send",{"to":"u3","body":{"#),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out[4..]).unwrap();
        assert_eq!(v[0], "send");
        assert_eq!(v[1]["to"], "u3");
        assert_eq!(v[1]["body"]["s"], 17);
        assert_eq!(v[1]["body"]["c"], 2);
        assert_eq!(serde_json::to_string(&v[1]["body"]).unwrap().len(), 80);
    }

    #[test]
    fn parses_messages_and_acks() {
        assert_eq!(
            parse_server(r#"42["message",{"from":"u0","body":{"t":5,"s":2,"c":0,"p":"x"}}]"#),
            Ok(ServerFrame::Message {
                from: "u0".into(),
                probe: Some(Probe {
                    t: 5,
                    s: 2,
                    c: Some(0)
                })
            })
        );
        assert_eq!(
            parse_server(r#"4317[{"status":"delivered"}]"#),
            Ok(ServerFrame::Ack {
                id: Some(17),
                status: AckStatus::Delivered,
                reason: None
            })
        );
        assert_eq!(
            parse_server(r#"430[{"status":"failed","reason":"x"}]"#),
            Ok(ServerFrame::Ack {
                id: Some(0),
                status: AckStatus::Failed,
                reason: Some("x".into())
            })
        );
        assert_eq!(
            parse_server(r#"42["presence",{}]"#),
            Ok(ServerFrame::Other {
                kind: "presence".into()
            })
        );
        assert!(parse_server("3").is_err());
        assert!(parse_server("42not json").is_err());
        assert!(parse_server(r#"43[]"#).is_err());
        assert!(parse_server(r#"42["message",{"body":{}}]"#).is_err());
    }
}
