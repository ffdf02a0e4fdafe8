//! The client protocol as perf speaks it: the `send` frames it writes, with a probe body, and the
//! server frames it reads (`welcome`, `ack`, `message`, `error`). No I/O.
//!
//! The probe body is `{"t":T,"s":S,"c":C,"p":"xx.."}`: `t` is the sender's *intended* send time
//! (ns on the shared [`crate::clock`] base), `s` the sender's sequence number, `c` the sending
//! connection (a user with several devices sends from each), and `p` padding so the
//! body's JSON text is `--body-bytes` long. The gateway delivers the body byte for byte, so the
//! recipient reads `t` and `s` back from it.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The probe fields a recipient reads back out of a delivered body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Probe {
    /// Intended send time, ns since the clock base.
    pub t: u64,
    /// Sender's sequence number, from 0.
    pub s: u64,
    /// The sending connection's index in the run (absent from older probes).
    #[serde(default)]
    pub c: Option<u64>,
}

/// Which client protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(clap::ValueEnum)]
pub enum Dialect {
    /// Connect's JSON client protocol (`docs/protocol.md`).
    #[default]
    Connect,
    /// Socket.IO v5 over Engine.IO v4 over WebSocket (the peer in `perf/socketio/`).
    Socketio,
}

impl Dialect {
    /// Writes one send frame in this dialect; see [`encode_send`].
    pub fn encode_send(
        self,
        out: &mut String,
        to: &str,
        seq: u64,
        intended_ns: u64,
        conn: u64,
        body_bytes: usize,
    ) {
        match self {
            Dialect::Connect => encode_send(out, to, seq, intended_ns, conn, body_bytes),
            Dialect::Socketio => {
                crate::eio::encode_send(out, to, seq, intended_ns, conn, body_bytes)
            }
        }
    }

    /// Parses one text frame in this dialect.
    pub fn parse(self, text: &str) -> Result<ServerFrame<'_>, ParseError> {
        match self {
            Dialect::Connect => parse_server(text),
            Dialect::Socketio => crate::eio::parse_server(text),
        }
    }
}

/// Writes `{"type":"send","id":SEQ,"to":TO,"body":PROBE}` into `out` (cleared first), the probe
/// padded so its JSON text is at least `body_bytes` long.
///
/// `to` must need no JSON escaping: perf's user ids are `u<digits>`, and the protocol only allows
/// `[A-Za-z0-9._@+:-]`, none of which JSON escapes.
pub fn encode_send(
    out: &mut String,
    to: &str,
    seq: u64,
    intended_ns: u64,
    conn: u64,
    body_bytes: usize,
) {
    out.clear();
    let _ = write!(out, r#"{{"type":"send","id":{seq},"to":"{to}","body":"#);
    encode_probe(out, seq, intended_ns, conn, body_bytes);
    out.push('}');
}

/// Appends the probe body, padded so its JSON text is at least `body_bytes` long.
pub fn encode_probe(out: &mut String, seq: u64, intended_ns: u64, conn: u64, body_bytes: usize) {
    let body_start = out.len();
    let _ = write!(out, r#"{{"t":{intended_ns},"s":{seq},"c":{conn},"p":""#);
    // What is still to come after the padding: `"}` closes the string and the object.
    let unpadded = out.len() - body_start + 2;
    let pad = body_bytes.saturating_sub(unpadded);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str(r#""}"#);
}

/// Outcome of one send, from its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    Delivered,
    Offline,
    Failed,
}

/// A server frame, reduced to what perf counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    Welcome {
        user: Cow<'a, str>,
    },
    /// `id` is the client id echoed back; perf sends numbers, so anything else is `None`.
    Ack {
        id: Option<u64>,
        status: AckStatus,
        reason: Option<Cow<'a, str>>,
    },
    /// `probe` is `None` when the body is not one of perf's probes.
    Message {
        from: Cow<'a, str>,
        probe: Option<Probe>,
    },
    Error {
        id: Option<u64>,
        code: Cow<'a, str>,
    },
    /// A well-formed frame of a type perf does not know, or an ack with an unknown status.
    Other {
        kind: Cow<'a, str>,
    },
}

/// The union of the fields of all server frames; what each one needs is picked out in
/// [`parse_server`].
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
}

/// Why a text frame is not a server frame perf understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one text frame from the server.
pub fn parse_server(text: &str) -> Result<ServerFrame<'_>, ParseError> {
    let raw: Raw<'_> = serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))?;
    let missing = |field: &str| ParseError(format!("{} frame without `{field}`", raw.kind));
    Ok(match &*raw.kind {
        "welcome" => ServerFrame::Welcome {
            user: raw.user.clone().ok_or_else(|| missing("user"))?,
        },
        "ack" => {
            let status = match raw.status.as_deref() {
                Some("delivered") => AckStatus::Delivered,
                Some("offline") => AckStatus::Offline,
                Some("failed") => AckStatus::Failed,
                Some(_) => return Ok(ServerFrame::Other { kind: raw.kind }),
                None => return Err(missing("status")),
            };
            ServerFrame::Ack {
                id: raw.id.and_then(numeric_id),
                status,
                reason: raw.reason,
            }
        }
        "message" => ServerFrame::Message {
            from: raw.from.clone().ok_or_else(|| missing("from"))?,
            probe: raw.body.and_then(|b| serde_json::from_str(b.get()).ok()),
        },
        "error" => ServerFrame::Error {
            id: raw.id.and_then(numeric_id),
            code: raw.code.unwrap_or(Cow::Borrowed("")),
        },
        _ => ServerFrame::Other { kind: raw.kind },
    })
}

/// A client id perf sent (a number) as echoed by the server, as a number or a numeric string.
fn numeric_id(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    text.parse()
        .ok()
        .or_else(|| serde_json::from_str::<&str>(text).ok()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(frame: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(frame).unwrap();
        serde_json::to_string(&v["body"]).unwrap()
    }

    #[test]
    fn send_frame_is_valid_json_with_a_padded_probe() {
        let mut out = String::new();
        encode_send(&mut out, "u7", 42, 123_456_789, 9, 100);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["type"], "send");
        assert_eq!(v["id"], 42);
        assert_eq!(v["to"], "u7");
        assert_eq!(v["body"]["t"], 123_456_789u64);
        assert_eq!(v["body"]["s"], 42);
        // The body's text, as the server measures and forwards it, is exactly 100 bytes.
        let start = out.find(r#""body":"#).unwrap() + 7;
        let body = &out[start..out.len() - 1];
        assert_eq!(body.len(), 100);
        assert_eq!(body_of(&out).len(), 100);
        let probe: Probe = serde_json::from_str(body).unwrap();
        assert_eq!(
            probe,
            Probe {
                t: 123_456_789,
                s: 42,
                c: Some(9)
            }
        );
    }

    #[test]
    fn small_body_bytes_give_the_minimal_probe() {
        let mut out = String::from("stale");
        encode_send(&mut out, "u1", 0, 0, 3, 0);
        assert_eq!(
            out,
            r#"{"type":"send","id":0,"to":"u1","body":{"t":0,"s":0,"c":3,"p":""}}"#
        );
    }

    #[test]
    fn parses_welcome_ack_message_error() {
        assert_eq!(
            parse_server(r#"{"type":"welcome","user":"u1","session":"ab","gateway":"g"}"#),
            Ok(ServerFrame::Welcome { user: "u1".into() })
        );
        assert_eq!(
            parse_server(r#"{"type":"ack","id":17,"status":"delivered"}"#),
            Ok(ServerFrame::Ack {
                id: Some(17),
                status: AckStatus::Delivered,
                reason: None
            })
        );
        assert_eq!(
            parse_server(r#"{"type":"ack","id":"18","status":"failed","reason":"no router"}"#),
            Ok(ServerFrame::Ack {
                id: Some(18),
                status: AckStatus::Failed,
                reason: Some("no router".into())
            })
        );
        assert_eq!(
            parse_server(
                r#"{"type":"message","id":"ab-1","from":"u0","body":{"t":5,"s":2,"p":"xx"},"ts":1}"#
            ),
            Ok(ServerFrame::Message {
                from: "u0".into(),
                probe: Some(Probe {
                    t: 5,
                    s: 2,
                    c: None
                })
            })
        );
        assert_eq!(
            parse_server(r#"{"type":"message","id":"x","from":"alice","body":{"text":"hi"}}"#),
            Ok(ServerFrame::Message {
                from: "alice".into(),
                probe: None
            })
        );
        assert_eq!(
            parse_server(r#"{"type":"error","id":3,"code":"too_large","message":"m"}"#),
            Ok(ServerFrame::Error {
                id: Some(3),
                code: "too_large".into()
            })
        );
    }

    #[test]
    fn odd_frames_are_other_or_errors() {
        assert_eq!(
            parse_server(r#"{"type":"presence"}"#),
            Ok(ServerFrame::Other {
                kind: "presence".into()
            })
        );
        assert_eq!(
            parse_server(r#"{"type":"ack","id":1,"status":"maybe"}"#),
            Ok(ServerFrame::Other { kind: "ack".into() })
        );
        assert!(parse_server(r#"{"type":"ack","id":1}"#).is_err());
        assert!(parse_server(r#"{"type":"message","body":{}}"#).is_err());
        assert!(parse_server("not json").is_err());
        assert!(parse_server(r#"{"no":"type"}"#).is_err());
        // A non-numeric id cannot be one of ours.
        assert_eq!(
            parse_server(r#"{"type":"ack","id":"c-1","status":"offline"}"#),
            Ok(ServerFrame::Ack {
                id: None,
                status: AckStatus::Offline,
                reason: None
            })
        );
    }
}
