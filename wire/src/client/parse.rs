//! [`parse_client`]: one client text frame into a [`ClientMessage`] or a [`ClientError`].

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::{
    ClientError, ClientMessage, ErrorCode, MAX_BODY_DEPTH, MAX_ENVELOPE_OVERHEAD, MAX_ID_LEN,
    MAX_PRESENCE_USERS,
};
use crate::user::valid_user_id;

/// The top-level fields, each kept as raw JSON so that one bad field does not hide the others
/// (in particular the `id`, which errors echo). A field present with any value, `null`
/// included, is `Some`.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Envelope<'a> {
    #[serde(rename = "type", default, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    users: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Parses one client text frame.
///
/// `max_body` bounds the raw JSON text of `body` ([`super::DEFAULT_MAX_BODY`] by default); a
/// frame longer than `max_body + MAX_ENVELOPE_OVERHEAD` is rejected with
/// [`ErrorCode::TooLarge`] without being parsed. Errors carry the message's `id` whenever it
/// was readable and valid. Checks, in order: JSON object ([`ErrorCode::BadJson`]), `type`
/// ([`ErrorCode::BadRequest`] if missing or not a string, [`ErrorCode::UnknownType`] if not
/// `"send"`), `id` (string or number of at most [`MAX_ID_LEN`] bytes, else
/// [`ErrorCode::BadRequest`]), `to` ([`ErrorCode::BadRequest`] if missing or not a string,
/// [`ErrorCode::InvalidUser`] if not a valid user id), `body` ([`ErrorCode::BadRequest`] if
/// missing, [`ErrorCode::BadJson`] if nested deeper than [`MAX_BODY_DEPTH`],
/// [`ErrorCode::TooLarge`] if over `max_body`).
pub fn parse_client(text: &str, max_body: usize) -> Result<ClientMessage<'_>, ClientError<'_>> {
    if text.len() > max_body.saturating_add(MAX_ENVELOPE_OVERHEAD) {
        return Err(ClientError::new(
            None,
            ErrorCode::TooLarge,
            format!("message of {} bytes is too large", text.len()),
        ));
    }
    // Structs also deserialize from JSON arrays; only objects are messages.
    if !text.trim_start().starts_with('{') {
        return Err(ClientError::new(
            None,
            ErrorCode::BadJson,
            "expected a JSON object",
        ));
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() {
            // An object that serde rejects for its content: a duplicate field.
            ErrorCode::BadRequest
        } else {
            ErrorCode::BadJson
        };
        ClientError::new(None, code, e.to_string())
    })?;

    let id = env.id.filter(|raw| {
        valid_id(raw) && unicode_escapes_valid(raw.get()) && numbers_finite(raw.get())
    });

    let Some(ty) = env.ty else {
        return Err(ClientError::new(
            id,
            ErrorCode::BadRequest,
            "missing field `type`",
        ));
    };
    let Some(ty) = json_string(ty) else {
        return Err(ClientError::new(
            id,
            ErrorCode::BadRequest,
            "field `type` must be a string",
        ));
    };
    if ty != "send" && ty != "presence" {
        return Err(ClientError::new(
            id,
            ErrorCode::UnknownType,
            "unknown message type (expected \"send\" or \"presence\")",
        ));
    }

    if env.id.is_none() {
        return Err(ClientError::new(
            None,
            ErrorCode::BadRequest,
            "missing field `id`",
        ));
    }
    let Some(id) = id else {
        return Err(ClientError::new(
            None,
            ErrorCode::BadRequest,
            format!("field `id` must be a string or number of at most {MAX_ID_LEN} bytes"),
        ));
    };

    if ty == "presence" {
        return parse_presence(id, env.users);
    }

    let Some(to) = env.to else {
        return Err(ClientError::new(
            Some(id),
            ErrorCode::BadRequest,
            "missing field `to`",
        ));
    };
    let to = match json_string(to) {
        None => {
            return Err(ClientError::new(
                Some(id),
                ErrorCode::BadRequest,
                "field `to` must be a string",
            ))
        }
        Some(JsonStr::Plain(to)) if valid_user_id(to) => to,
        Some(JsonStr::Escaped(to)) if valid_user_id(&to) => {
            return Err(ClientError::new(
                Some(id),
                ErrorCode::InvalidUser,
                "field `to` must be written without escape sequences",
            ))
        }
        Some(_) => {
            return Err(ClientError::new(
                Some(id),
                ErrorCode::InvalidUser,
                "field `to` must be 1 to 128 characters of [A-Za-z0-9._@+:-]",
            ))
        }
    };

    let Some(body) = env.body else {
        return Err(ClientError::new(
            Some(id),
            ErrorCode::BadRequest,
            "missing field `body`",
        ));
    };
    if !unicode_escapes_valid(body.get()) {
        return Err(ClientError::new(
            Some(id),
            ErrorCode::BadJson,
            "field `body` contains an unpaired UTF-16 surrogate escape",
        ));
    }
    match scan_body(body.get(), MAX_BODY_DEPTH) {
        Ok(()) => {}
        Err(BodyFault::NumberOutOfRange) => {
            return Err(ClientError::new(
                Some(id),
                ErrorCode::BadJson,
                "field `body` contains a number outside the double-precision range",
            ));
        }
        Err(BodyFault::TooDeep) => {
            return Err(ClientError::new(
                Some(id),
                ErrorCode::BadJson,
                format!(
                    "field `body` nests arrays and objects deeper than {MAX_BODY_DEPTH} levels"
                ),
            ));
        }
    }
    if body.get().len() > max_body {
        return Err(ClientError::new(
            Some(id),
            ErrorCode::TooLarge,
            format!(
                "body of {} bytes exceeds the limit of {max_body} bytes",
                body.get().len()
            ),
        ));
    }
    Ok(ClientMessage::Send { id, to, body })
}

/// The rest of a `presence` request: `users`, an array of 1 to [`MAX_PRESENCE_USERS`] valid
/// user ids written without escapes; duplicates are dropped, first occurrence kept.
fn parse_presence<'a>(
    id: &'a RawValue,
    users: Option<&'a RawValue>,
) -> Result<ClientMessage<'a>, ClientError<'a>> {
    let Some(users) = users else {
        return Err(ClientError::new(
            Some(id),
            ErrorCode::BadRequest,
            "missing field `users`",
        ));
    };
    let list: Vec<&'a str> = serde_json::from_str(users.get()).map_err(|_| {
        ClientError::new(
            Some(id),
            ErrorCode::BadRequest,
            "field `users` must be an array of user ids written without escape sequences",
        )
    })?;
    if list.is_empty() || list.len() > MAX_PRESENCE_USERS {
        return Err(ClientError::new(
            Some(id),
            ErrorCode::BadRequest,
            format!("field `users` must hold 1 to {MAX_PRESENCE_USERS} user ids"),
        ));
    }
    let mut out: Vec<&'a str> = Vec::with_capacity(list.len());
    for u in list {
        if !valid_user_id(u) {
            return Err(ClientError::new(
                Some(id),
                ErrorCode::InvalidUser,
                "every user id must be 1 to 128 characters of [A-Za-z0-9._@+:-]",
            ));
        }
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(ClientMessage::Presence { id, users: out })
}

/// A client id is a JSON string or number of at most [`MAX_ID_LEN`] bytes of raw text.
fn valid_id(raw: &RawValue) -> bool {
    let s = raw.get();
    s.len() <= MAX_ID_LEN && matches!(s.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

/// Whether every `\uXXXX` escape in already-validated JSON text forms a Unicode scalar value:
/// no unpaired surrogates. serde_json's raw-value scanner lets `"\ud800"` through, but strict
/// parsers on the receiving side (serde_json's own `Value`, for one) refuse it, so a body with
/// one would be undeliverable to them.
fn unicode_escapes_valid(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while let Some(off) = b
        .get(i..)
        .and_then(|rest| rest.iter().position(|&c| c == b'\\'))
    {
        i += off;
        if b.get(i + 1) != Some(&b'u') {
            i += 2; // a two-character escape
            continue;
        }
        let Some(unit) = hex4(b, i + 2) else {
            return false;
        };
        i += 6;
        match unit {
            0xD800..=0xDBFF => {
                let low = if b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u') {
                    hex4(b, i + 2)
                } else {
                    None
                };
                match low {
                    Some(0xDC00..=0xDFFF) => i += 6,
                    _ => return false,
                }
            }
            0xDC00..=0xDFFF => return false,
            _ => {}
        }
    }
    true
}

/// What [`scan_body`] found wrong with a body.
#[derive(Debug, PartialEq, Eq)]
enum BodyFault {
    /// A number outside the f64 range. JSON allows `1e400`; strict parsers on the receiving
    /// side (serde_json's `Value`) refuse it, and JavaScript turns it into `Infinity`, so such
    /// a message would not arrive as sent.
    NumberOutOfRange,
    /// Arrays and objects nested deeper than allowed. serde_json's raw-value scanner accepts
    /// any depth; recursive parsers on the receiving side (serde_json's `Value`: 128 levels)
    /// do not.
    TooDeep,
}

/// Checks already-validated JSON text in one pass: every number within the f64 range, and
/// nesting at most `max` levels deep (a number fault wins over depth, as it is reported
/// first). String contents, most of a chat body's bytes, are skipped with `memchr`: the
/// byte-at-a-time versions of these two checks were 60% of parsing a `send`.
fn scan_body(raw: &str, max: usize) -> Result<(), BodyFault> {
    let b = raw.as_bytes();
    let (mut i, mut depth, mut too_deep) = (0, 0usize, false);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // Skip to the closing quote; `\x` escapes skip the escaped byte.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or_default()) {
                        Some(off) if b[i + off] == b'\\' => i += off + 2,
                        Some(off) => {
                            i += off + 1;
                            break;
                        }
                        None => {
                            // Unterminated: unreachable for validated JSON.
                            i = b.len();
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                too_deep |= depth > max;
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c == b'-' || c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                if !raw[start..i].parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(BodyFault::NumberOutOfRange);
                }
            }
            _ => i += 1,
        }
    }
    if too_deep {
        Err(BodyFault::TooDeep)
    } else {
        Ok(())
    }
}

/// Whether every number in already-validated JSON text is within the f64 range (see
/// [`BodyFault::NumberOutOfRange`]).
fn numbers_finite(raw: &str) -> bool {
    scan_body(raw, usize::MAX) != Err(BodyFault::NumberOutOfRange)
}

fn hex4(b: &[u8], at: usize) -> Option<u16> {
    let digits = b.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v as u16)
    })
}

/// A JSON string's value: borrowed when it has no escape sequences, decoded otherwise.
enum JsonStr<'a> {
    Plain(&'a str),
    Escaped(String),
}

impl PartialEq<&str> for JsonStr<'_> {
    fn eq(&self, other: &&str) -> bool {
        match self {
            JsonStr::Plain(s) => s == other,
            JsonStr::Escaped(s) => s == other,
        }
    }
}

/// `Some` if `raw` is a JSON string. RawValue has already validated the JSON, so a string
/// without a backslash is exactly the text between its quotes.
fn json_string(raw: &RawValue) -> Option<JsonStr<'_>> {
    let s = raw.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(JsonStr::Plain(inner));
    }
    serde_json::from_str::<String>(s).ok().map(JsonStr::Escaped)
}
