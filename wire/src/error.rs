//! [`WireError`]: what can go wrong decoding the router<->gateway link protocol.

use thiserror::Error;

/// A router<->gateway link sent bytes that are not a valid frame.
///
/// Every variant is **fatal for the link**: the peer (a gateway or a router, never a client)
/// either speaks another protocol version or is broken, and the byte stream can no longer be
/// trusted to be in sync. The caller logs the error with the peer's address, closes the link
/// and lets the usual reconnect-with-backoff take over; retrying the same bytes never helps.
/// The read buffer is left in an unspecified state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The frame's length prefix exceeds the configured maximum (`max_frame` given to
    /// [`crate::frame::decode`], by default [`crate::frame::DEFAULT_MAX_FRAME`]). Reported as
    /// soon as the 4-byte prefix is read, before the body is buffered. If the peer is
    /// legitimately sending bigger frames, both ends need a larger `max_frame`.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Length announced by the peer (type byte + body).
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The length prefix was 0, so there is not even a type byte.
    #[error("empty frame (length 0)")]
    EmptyFrame,
    /// The type byte names no frame this version knows.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// A field (or the length prefix of an inner field) runs past the end of its frame.
    #[error("{frame} frame truncated in field `{field}`")]
    Truncated {
        /// Frame type name, e.g. `"Send"`.
        frame: &'static str,
        /// Field being read.
        field: &'static str,
    },
    /// All fields were read but the frame has bytes left over.
    #[error("{frame} frame has {extra} trailing bytes")]
    TrailingBytes {
        /// Frame type name.
        frame: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// A field that must be UTF-8 is not.
    #[error("{frame} frame field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// Frame type name.
        frame: &'static str,
        /// Offending field.
        field: &'static str,
    },
    /// A user field (`to`, or one of a `Presence`'s users) is not a valid user id (see
    /// [`crate::user::valid_user_id`]). Gateways validate user ids before sending, so this
    /// means a broken peer.
    #[error("{frame} frame has a user field that is not a valid user id")]
    InvalidUser {
        /// Frame type name.
        frame: &'static str,
    },
    /// An `Ack` frame carries a status byte this version does not know.
    #[error("unknown ack status {0}")]
    UnknownAckStatus(u8),
    /// A `PresenceResult` frame carries a state byte this version does not know.
    #[error("unknown presence state {0}")]
    UnknownPresenceState(u8),
    /// A `Hello` frame carries a role byte this version does not know.
    #[error("unknown role {0}")]
    UnknownRole(u8),
}
