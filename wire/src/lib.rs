//! Connect's wire formats, with no I/O: nothing here touches a socket, a clock or a runtime.
//!
//! Two protocols live here:
//!
//! * the binary router<->gateway link protocol ([`frame`]): length-prefixed frames decoded from a
//!   [`bytes::BytesMut`] read buffer and encoded into one, so a link batches many frames per write;
//! * the client JSON protocol ([`client`]): the text frames a client exchanges with its gateway
//!   over WebSocket.
//!
//! Both decoders are pure functions over bytes, so they are tested (and fuzzed) without sockets.
//!
//! # Layout
//!
//! * [`user`]: user-id syntax ([`user::valid_user_id`], [`user::MAX_USER_LEN`]), shared by both
//!   protocols.
//! * [`frame`]: router<->gateway frames: [`frame::Frame`], [`frame::decode`] and one
//!   `encode_*` function per frame type. The module doc gives the byte layout.
//! * [`link`]: [`link::LinkGuard`], link authentication (`Challenge`/`Proof`) on the frame level.
//! * [`client`]: client JSON messages: [`client::parse_client`] for what clients send and one
//!   `encode_*` function per message the gateway sends.
//! * [`error`]: [`WireError`], the link-protocol error (client JSON errors are values of
//!   [`client::ClientError`], since they are answered, not fatal).
//! * [`ws`]: RFC 6455 WebSocket framing for the gateway's client connections: a sans-I/O
//!   decoder ([`ws::Decoder`], one pointer of state per connection) that validates and unmasks
//!   frames in the caller's buffer, and the server-frame encoders.
//! * `json` (private): JSON string escaping and integer formatting for the client encoders.

pub mod client;
pub mod error;
pub mod frame;
mod json;
pub mod link;
pub mod user;
pub mod ws;

pub use error::WireError;
pub use frame::{AckStatus, Frame, Role, SessionIds, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
pub use user::{valid_user_id, MAX_USER_LEN};
