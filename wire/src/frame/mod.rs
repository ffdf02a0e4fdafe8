//! Router<->gateway link frames: a sans-I/O codec.
//!
//! A link is a persistent TCP connection between a gateway and a router. Each side reads into a
//! [`BytesMut`](bytes::BytesMut) and calls [`decode`] until it returns `Ok(None)`; each side
//! writes by calling the `encode_*` functions into one `BytesMut` and flushing it with one write,
//! however many frames it holds.
//!
//! # Byte layout
//!
//! All integers are big-endian.
//!
//! ```text
//! frame    = len:u32 | type:u8 | body      len counts the type byte and the body: 1 ..= max_frame
//! str16    = n:u16 | n bytes, UTF-8
//! bytes32  = n:u32 | n bytes
//!
//! type  frame          body
//! 0x01  Hello          version:u16 | role:u8 | shard:u16 | instance:str16
//! 0x02  Send           msg_id:u64 | to:str16 | payload:bytes32
//! 0x03  Ack            msg_id:u64 | status:u8 | reason:str16
//! 0x04  Deliver        fwd_id:u64 | to:str16 | count:u32 | count x session:u64 | payload:bytes32
//! 0x05  DeliverResult  fwd_id:u64 | delivered:u32
//! 0x06  Ping           nonce:u64
//! 0x07  Pong           nonce:u64
//! 0x08  Goaway         (empty)         router -> gateway: draining, send elsewhere
//! 0x09  Challenge      nonce:u64       both ways after Hello when a link secret is set
//! 0x0a  Proof          mac:32 bytes    HMAC-SHA256 answer to the peer's Challenge
//! 0x0b  Presence       req_id:u64 | count:u16 | count x user:str16     gateway -> router
//! 0x0c  PresenceResult req_id:u64 | count:u16 | count x state:u8        router -> gateway
//!
//! role:   1 = gateway, 2 = router
//! status: 0 = delivered, 1 = offline, 2 = failed
//! state:  0 = offline, 1 = online, 2 = unknown (the registry could not be read)
//! ```
//!
//! Every field must be consumed exactly: a frame whose inner lengths overrun it, or that has
//! bytes left after its last field, is an error. `to` must be a valid user id
//! ([`crate::user::valid_user_id`]); `instance`, `reason` and `payload` must be UTF-8 (payloads
//! are JSON text frames handed to WebSocket clients as they are).
//!
//! # Exchange
//!
//! Both ends send `Hello` first (`version` = [`PROTOCOL_VERSION`]). A gateway sends `Send` for
//! each client message and gets exactly one `Ack` per `msg_id`. A router sends `Deliver` to the
//! gateway shard holding the sessions and gets one `DeliverResult` per `fwd_id`. Either side may
//! send `Ping`; the other answers `Pong` with the same nonce. A gateway asks which users are
//! online with `Presence` and gets one `PresenceResult` per `req_id`, one state per user in
//! the request's order; every user in a `Presence` must be a valid user id.

mod decode;
mod encode;

use bytes::Bytes;

pub use decode::decode;
pub use encode::{
    encode_ack, encode_challenge, encode_deliver, encode_deliver_result, encode_goaway,
    encode_hello, encode_ping, encode_pong, encode_presence, encode_presence_result, encode_proof,
    encode_send,
};

/// Link protocol version sent in `Hello`.
pub const PROTOCOL_VERSION: u16 = 1;

/// Default largest frame (type byte + body) a link accepts: 1 MiB. It bounds how much one
/// link's read buffer may grow; client bodies are far smaller
/// ([`crate::client::DEFAULT_MAX_BODY`]).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Bytes before the body: the u32 length prefix and the type byte.
pub const HEADER_LEN: usize = 5;

pub(crate) mod ty {
    pub const HELLO: u8 = 0x01;
    pub const SEND: u8 = 0x02;
    pub const ACK: u8 = 0x03;
    pub const DELIVER: u8 = 0x04;
    pub const DELIVER_RESULT: u8 = 0x05;
    pub const PING: u8 = 0x06;
    pub const PONG: u8 = 0x07;
    pub const GOAWAY: u8 = 0x08;
    pub const CHALLENGE: u8 = 0x09;
    pub const PROOF: u8 = 0x0a;
    pub const PRESENCE: u8 = 0x0b;
    pub const PRESENCE_RESULT: u8 = 0x0c;
}

/// Which end of a link a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Holds client WebSocket sessions.
    Gateway = 1,
    /// Routes messages between gateways.
    Router = 2,
}

impl Role {
    fn from_u8(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Gateway),
            2 => Some(Role::Router),
            _ => None,
        }
    }
}

/// Outcome of a `Send`, reported in its `Ack` and passed on to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckStatus {
    /// Written to at least one session of the recipient.
    Delivered = 0,
    /// The recipient has no session anywhere.
    Offline = 1,
    /// Could not be delivered (see the `reason`).
    Failed = 2,
}

impl AckStatus {
    /// The client-protocol spelling: `"delivered"`, `"offline"` or `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Delivered => "delivered",
            AckStatus::Offline => "offline",
            AckStatus::Failed => "failed",
        }
    }

    fn from_u8(b: u8) -> Option<AckStatus> {
        match b {
            0 => Some(AckStatus::Delivered),
            1 => Some(AckStatus::Offline),
            2 => Some(AckStatus::Failed),
            _ => None,
        }
    }
}

/// One decoded link frame. Byte fields are zero-copy slices of the read buffer; the fields
/// documented as UTF-8 have been validated, so `std::str::from_utf8` on them cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame on every link, both directions.
    Hello {
        /// Sender's [`PROTOCOL_VERSION`].
        version: u16,
        /// Sender's role.
        role: Role,
        /// Sender's instance id (UTF-8).
        instance: Bytes,
        /// Sender's shard (a gateway has one link per shard; routers send 0).
        shard: u16,
    },
    /// gateway -> router: route `payload` (the complete JSON text frame to hand to recipients)
    /// to every session of `to`.
    Send {
        /// Gateway-chosen id, echoed in the `Ack`.
        msg_id: u64,
        /// Recipient user id (valid per [`crate::user::valid_user_id`]).
        to: Bytes,
        /// JSON text frame (UTF-8).
        payload: Bytes,
    },
    /// router -> gateway: the one outcome for a `Send`.
    Ack {
        /// The `Send`'s `msg_id`.
        msg_id: u64,
        /// Outcome.
        status: AckStatus,
        /// Human-readable detail, empty when there is none (UTF-8).
        reason: Bytes,
    },
    /// router -> gateway shard: write `payload` to these sessions of user `to`.
    Deliver {
        /// Router-chosen id, echoed in the `DeliverResult`.
        fwd_id: u64,
        /// Recipient user id (valid per [`crate::user::valid_user_id`]).
        to: Bytes,
        /// Sessions of `to` on the receiving shard.
        sessions: SessionIds,
        /// JSON text frame (UTF-8).
        payload: Bytes,
    },
    /// gateway -> router: how many of the `Deliver`'s sessions got the payload written.
    DeliverResult {
        /// The `Deliver`'s `fwd_id`.
        fwd_id: u64,
        /// Sessions written to.
        delivered: u32,
    },
    /// Liveness probe; answered with `Pong` carrying the same nonce.
    Ping {
        /// Opaque value to echo.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// Link authentication, both directions, right after `Hello` when a link secret is set:
    /// a fresh nonce the peer must answer with a `Proof`.
    Challenge {
        /// Random, fresh per link.
        nonce: u64,
    },
    /// Answer to the peer's `Challenge`: HMAC-SHA256 under the link secret (see `auth::link`).
    Proof {
        /// The MAC.
        mac: [u8; 32],
    },
    /// router -> gateway: this router is draining; send nothing new on this link (acks for
    /// what was sent still come), use another router.
    Goaway,
    /// gateway -> router: which of these users have a live session?
    Presence {
        /// Gateway-chosen id, echoed in the `PresenceResult`.
        req_id: u64,
        /// The users asked about (each a valid user id).
        users: UserList,
    },
    /// router -> gateway: the answer to a `Presence`, one state per user in its order.
    PresenceResult {
        /// The `Presence`'s `req_id`.
        req_id: u64,
        /// One [`PresenceState`] byte per user (validated).
        states: Bytes,
    },
}

/// A user's presence as a router answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PresenceState {
    /// No live session.
    Offline = 0,
    /// At least one live session.
    Online = 1,
    /// The registry could not be read.
    Unknown = 2,
}

impl PresenceState {
    /// From its wire byte.
    pub fn from_u8(b: u8) -> Option<PresenceState> {
        match b {
            0 => Some(PresenceState::Offline),
            1 => Some(PresenceState::Online),
            2 => Some(PresenceState::Unknown),
            _ => None,
        }
    }
}

/// The users of a `Presence` frame: a zero-copy view of `count x str16`, each a valid user id
/// (checked by the decoder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserList {
    count: u16,
    packed: Bytes,
}

impl UserList {
    pub(crate) fn from_packed(count: u16, packed: Bytes) -> UserList {
        UserList { count, packed }
    }

    /// Packs `users` (copying); handy for building expected frames in tests.
    pub fn from_users(users: &[&str]) -> UserList {
        let mut packed = Vec::new();
        for u in users {
            packed.extend_from_slice(&(u.len() as u16).to_be_bytes());
            packed.extend_from_slice(u.as_bytes());
        }
        UserList::from_packed(users.len() as u16, Bytes::from(packed))
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The user ids, in frame order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut rest: &[u8] = &self.packed;
        (0..self.count).map_while(move |_| {
            let n = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
            let user = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
            rest = &rest[2 + n..];
            Some(user)
        })
    }
}

/// Packed big-endian u64 session ids: a zero-copy view into a `Deliver` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIds(Bytes);

impl SessionIds {
    /// Wraps packed ids; `packed.len()` must be a multiple of 8 (checked by the decoder).
    pub(crate) fn from_packed(packed: Bytes) -> SessionIds {
        debug_assert_eq!(packed.len() % 8, 0);
        SessionIds(packed)
    }

    /// Packs `ids` (copying); handy for building expected frames in tests.
    pub fn from_ids(ids: &[u64]) -> SessionIds {
        let mut packed = Vec::with_capacity(ids.len() * 8);
        for id in ids {
            packed.extend_from_slice(&id.to_be_bytes());
        }
        SessionIds(Bytes::from(packed))
    }

    /// Number of session ids.
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// Whether there are no session ids.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids, in frame order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
    }
}
