//! [`decode`]: one frame off the front of a read buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::{ty, AckStatus, Frame, PresenceState, Role, SessionIds, UserList};
use crate::error::WireError;
use crate::user::valid_user_id;

/// Decodes one frame from the front of `buf`.
///
/// * `Ok(Some(frame))`: the frame's bytes were split off `buf`; anything after it stays in
///   `buf` for the next call. Byte fields share the split-off allocation (no copy).
/// * `Ok(None)`: `buf` holds less than one whole frame; it is left untouched. Read more and
///   call again.
/// * `Err(_)`: the peer violated the protocol; close the link (see [`WireError`]). A length
///   prefix above `max_frame` is rejected as soon as the prefix itself is in `buf`, so a peer
///   cannot make the caller buffer an oversized body.
pub fn decode(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > max_frame {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    if buf.len() - 4 < len {
        return Ok(None);
    }
    buf.advance(4);
    let mut bytes = buf.split_to(len).freeze();
    let frame_type = bytes.get_u8();
    parse_body(frame_type, bytes).map(Some)
}

fn parse_body(frame_type: u8, bytes: Bytes) -> Result<Frame, WireError> {
    let frame = match frame_type {
        ty::HELLO => {
            let mut r = Body::new("Hello", bytes);
            let version = r.u16("version")?;
            let role_byte = r.u8("role")?;
            let role = Role::from_u8(role_byte).ok_or(WireError::UnknownRole(role_byte))?;
            let shard = r.u16("shard")?;
            let instance = r.str16("instance")?;
            r.finish()?;
            Frame::Hello {
                version,
                role,
                instance,
                shard,
            }
        }
        ty::SEND => {
            let mut r = Body::new("Send", bytes);
            let msg_id = r.u64("msg_id")?;
            let to = r.user()?;
            let payload = r.text32("payload")?;
            r.finish()?;
            Frame::Send {
                msg_id,
                to,
                payload,
            }
        }
        ty::ACK => {
            let mut r = Body::new("Ack", bytes);
            let msg_id = r.u64("msg_id")?;
            let status_byte = r.u8("status")?;
            let status =
                AckStatus::from_u8(status_byte).ok_or(WireError::UnknownAckStatus(status_byte))?;
            let reason = r.str16("reason")?;
            r.finish()?;
            Frame::Ack {
                msg_id,
                status,
                reason,
            }
        }
        ty::DELIVER => {
            let mut r = Body::new("Deliver", bytes);
            let fwd_id = r.u64("fwd_id")?;
            let to = r.user()?;
            let count = r.u32("count")? as usize;
            let sessions = match count.checked_mul(8) {
                Some(n) => r.take(n, "sessions")?,
                None => return Err(r.truncated("sessions")),
            };
            let payload = r.text32("payload")?;
            r.finish()?;
            Frame::Deliver {
                fwd_id,
                to,
                sessions: SessionIds::from_packed(sessions),
                payload,
            }
        }
        ty::DELIVER_RESULT => {
            let mut r = Body::new("DeliverResult", bytes);
            let fwd_id = r.u64("fwd_id")?;
            let delivered = r.u32("delivered")?;
            r.finish()?;
            Frame::DeliverResult { fwd_id, delivered }
        }
        ty::PING => {
            let mut r = Body::new("Ping", bytes);
            let nonce = r.u64("nonce")?;
            r.finish()?;
            Frame::Ping { nonce }
        }
        ty::PONG => {
            let mut r = Body::new("Pong", bytes);
            let nonce = r.u64("nonce")?;
            r.finish()?;
            Frame::Pong { nonce }
        }
        ty::CHALLENGE => {
            let mut r = Body::new("Challenge", bytes);
            let nonce = r.u64("nonce")?;
            r.finish()?;
            Frame::Challenge { nonce }
        }
        ty::PROOF => {
            let mut r = Body::new("Proof", bytes);
            let mut mac = [0u8; 32];
            for (i, b) in mac.iter_mut().enumerate() {
                *b = r.u8(if i == 0 { "mac" } else { "mac (truncated)" })?;
            }
            r.finish()?;
            Frame::Proof { mac }
        }
        ty::GOAWAY => {
            Body::new("Goaway", bytes).finish()?;
            Frame::Goaway
        }
        ty::PRESENCE => {
            let mut r = Body::new("Presence", bytes);
            let req_id = r.u64("req_id")?;
            let count = r.u16("count")?;
            let packed = r.bytes.clone();
            let mut used = 0;
            for _ in 0..count {
                let before = r.bytes.len();
                r.user_field("users")?;
                used += before - r.bytes.len();
            }
            r.finish()?;
            Frame::Presence {
                req_id,
                users: UserList::from_packed(count, packed.slice(..used)),
            }
        }
        ty::PRESENCE_RESULT => {
            let mut r = Body::new("PresenceResult", bytes);
            let req_id = r.u64("req_id")?;
            let count = r.u16("count")? as usize;
            let states = r.take(count, "states")?;
            r.finish()?;
            if let Some(&bad) = states
                .iter()
                .find(|b| PresenceState::from_u8(**b).is_none())
            {
                return Err(WireError::UnknownPresenceState(bad));
            }
            Frame::PresenceResult { req_id, states }
        }
        other => return Err(WireError::UnknownFrameType(other)),
    };
    Ok(frame)
}

/// Cursor over one frame's body that turns every short read into [`WireError::Truncated`].
struct Body {
    frame: &'static str,
    bytes: Bytes,
}

impl Body {
    fn new(frame: &'static str, bytes: Bytes) -> Body {
        Body { frame, bytes }
    }

    fn truncated(&self, field: &'static str) -> WireError {
        WireError::Truncated {
            frame: self.frame,
            field,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, WireError> {
        if self.bytes.len() < n {
            return Err(self.truncated(field));
        }
        Ok(self.bytes.split_to(n))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        if self.bytes.len() < N {
            return Err(self.truncated(field));
        }
        self.bytes.copy_to_slice(&mut out);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn utf8(&self, field: &'static str, bytes: Bytes) -> Result<Bytes, WireError> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(bytes),
            Err(_) => Err(WireError::InvalidUtf8 {
                frame: self.frame,
                field,
            }),
        }
    }

    /// A u16-length-prefixed UTF-8 string.
    fn str16(&mut self, field: &'static str) -> Result<Bytes, WireError> {
        let n = self.u16(field)? as usize;
        let bytes = self.take(n, field)?;
        self.utf8(field, bytes)
    }

    /// A u32-length-prefixed UTF-8 payload.
    fn text32(&mut self, field: &'static str) -> Result<Bytes, WireError> {
        let n = self.u32(field)? as usize;
        let bytes = self.take(n, field)?;
        self.utf8(field, bytes)
    }

    /// The `to` field: a str16 that must be a valid user id.
    fn user(&mut self) -> Result<Bytes, WireError> {
        self.user_field("to")
    }

    /// A str16 that must be a valid user id.
    fn user_field(&mut self, field: &'static str) -> Result<Bytes, WireError> {
        let bytes = self.str16(field)?;
        match std::str::from_utf8(&bytes) {
            Ok(s) if valid_user_id(s) => Ok(bytes),
            _ => Err(WireError::InvalidUser { frame: self.frame }),
        }
    }

    fn finish(self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                frame: self.frame,
                extra: self.bytes.len(),
            })
        }
    }
}
