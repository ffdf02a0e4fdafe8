//! The client JSON protocol: WebSocket text frames between a client and its gateway.
//!
//! # Messages
//!
//! Client to gateway:
//!
//! ```text
//! {"type":"send","id":CLIENT_ID,"to":USER,"body":ANY_JSON}
//! {"type":"presence","id":CLIENT_ID,"users":[USER,...]}
//! ```
//!
//! `CLIENT_ID` is a JSON string or number of at most [`MAX_ID_LEN`] bytes of raw JSON text; the
//! gateway echoes it verbatim in the `ack` or `error`. `USER` satisfies
//! [`crate::user::valid_user_id`] (written without escape sequences; the alphabet needs none).
//! `body` is any JSON value whose raw text is at most `max_body` bytes
//! ([`DEFAULT_MAX_BODY`]) nested at most [`MAX_BODY_DEPTH`] levels deep; recipients get it
//! byte for byte. Unknown extra fields are ignored.
//!
//! Gateway to client:
//!
//! ```text
//! {"type":"welcome","user":U,"session":S,"gateway":G}
//! {"type":"ack","id":CLIENT_ID,"status":"delivered"|"offline"|"failed"[,"reason":R]}
//! {"type":"error","id":CLIENT_ID|null,"code":CODE,"message":M}
//! {"type":"message","id":SERVER_ID,"from":U,"body":BODY,"ts":UNIX_MILLIS}
//! {"type":"presence","id":CLIENT_ID,"online":[U,...],"offline":[U,...][,"unknown":[U,...]]}
//! ```
//!
//! A `presence` request names 1 to [`MAX_PRESENCE_USERS`] users; the answer puts each (once)
//! in `online` (a live session somewhere), `offline`, or `unknown` (the registry could not be
//! read; present only when not empty).
//!
//! `CODE` is one of [`ErrorCode::as_str`]. Errors on a well-formed connection are answered,
//! not fatal: the gateway sends the `error` and keeps the session.
//!
//! # Layout
//!
//! * `parse`: [`parse_client`].
//! * `encode`: [`encode_welcome`], [`encode_ack`], [`encode_error`], [`encode_message`],
//!   [`encode_presence`].

mod encode;
mod parse;

use std::fmt;

use serde_json::value::RawValue;

pub use encode::{encode_ack, encode_error, encode_message, encode_presence, encode_welcome};
pub use parse::parse_client;

/// Default limit on a `send`'s `body`, in bytes of raw JSON text: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Longest client `id`, in bytes of raw JSON text (quotes included for strings).
pub const MAX_ID_LEN: usize = 128;

/// Most users one `presence` request may name: a contact list screen, not a directory dump
/// (each costs the router one registry lookup).
pub const MAX_PRESENCE_USERS: usize = 256;

/// Deepest nesting of arrays and objects accepted in a `send`'s `body`. Deeper bodies are valid
/// JSON, but recursive parsers refuse them (serde_json's `Value` stops at 128 levels, the
/// message envelope adds one), so the recipient could not read the message.
pub const MAX_BODY_DEPTH: usize = 64;

/// Slack allowed on top of `max_body` for a whole client text frame (type, id, to, keys,
/// whitespace). Longer frames are rejected with [`ErrorCode::TooLarge`] before being parsed.
pub const MAX_ENVELOPE_OVERHEAD: usize = 4 * 1024;

/// A parsed client message, borrowing from the text frame.
#[derive(Debug, Clone)]
pub enum ClientMessage<'a> {
    /// `{"type":"send",...}`: deliver `body` to every session of `to`.
    Send {
        /// The client's id for this message (a JSON string or number), echoed in the ack.
        id: &'a RawValue,
        /// Recipient; a valid user id.
        to: &'a str,
        /// The body, exactly as the client wrote it.
        body: &'a RawValue,
    },
    /// `{"type":"presence",...}`: which of `users` are online.
    Presence {
        /// The client's id for this request, echoed in the answer.
        id: &'a RawValue,
        /// 1 to [`MAX_PRESENCE_USERS`] distinct valid user ids, in request order.
        users: Vec<&'a str>,
    },
}

/// Why a client text frame was rejected; the gateway answers it with [`encode_error`] and keeps
/// the session (unless it decides otherwise, e.g. repeated abuse).
#[derive(Debug, Clone)]
pub struct ClientError<'a> {
    /// The message's `id` if it could be read and is valid, so the client can correlate.
    pub id: Option<&'a RawValue>,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl<'a> ClientError<'a> {
    pub(crate) fn new(
        id: Option<&'a RawValue>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        ClientError {
            id,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ClientError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ClientError<'_> {}

/// Error codes of the client protocol's `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// A JSON object, but a field is missing or of the wrong kind.
    BadRequest,
    /// `type` is not one the gateway knows.
    UnknownType,
    /// `body` (or the whole frame) exceeds the limit.
    TooLarge,
    /// `to` is not a valid user id.
    InvalidUser,
    /// The client sent a binary WebSocket frame; only text frames are spoken.
    BinaryUnsupported,
    /// The client sends faster than its rate limit.
    RateLimited,
    /// The gateway failed (e.g. its router link is down); retrying later may work.
    Internal,
}

impl ErrorCode {
    /// Wire spelling, e.g. `"bad_json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidUser => "invalid_user",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
