//! RFC 6455 WebSocket framing, server side, with no I/O and next to no state.
//!
//! The gateway holds up to a million mostly idle connections per host, so the per-connection
//! decoder state is one pointer ([`Decoder`]: 8 bytes, non-null only while a fragmented message
//! is being reassembled). [`Decoder::decode`] works on the caller's buffer: it parses every
//! complete frame at its start, unmasks payloads in place, validates them and hands each whole
//! message to a callback without copying it; the caller keeps only the bytes of an incomplete
//! last frame (see the gateway's read path). Frames the gateway sends are written by
//! [`encode_frame`] and [`encode_close`] (server frames are never masked).
//!
//! What is checked, each with the close code the gateway answers ([`WsError::close_code`]):
//! reserved bits (no extension is negotiated), unknown opcodes, unmasked client frames,
//! fragmented or over-125-byte control frames, continuations without a message and messages interleaved with one in progress, close codes
//! a peer may not send and one-byte close payloads (1002); UTF-8 of text messages, also across
//! fragments (checked as each fragment arrives), and of close reasons (1007); frames and
//! reassembled messages over the size limit (1009, before their payload is buffered).

/// Close codes the gateway sends (RFC 6455 7.4.1 and the IANA registry).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// Invalid payload data (not UTF-8 in a text message).
    pub const INVALID: u16 = 1007;
    /// Policy violation (the gateway: slow consumer).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const SIZE: u16 = 1009;
    /// Service restart (the gateway is draining).
    pub const RESTART: u16 = 1012;
    /// Try again later (the gateway sheds load).
    pub const AGAIN: u16 = 1013;
}

/// Why a client's byte stream is not acceptable WebSocket; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A framing rule of RFC 6455 was broken (the text says which): close code 1002.
    #[error("{0}")]
    Protocol(&'static str),
    /// A text message or a close reason is not valid UTF-8: close code 1007.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A frame, or a message reassembled from fragments, exceeds the limit: close code 1009.
    #[error("message of {size} bytes exceeds {max}")]
    TooBig {
        /// The frame's or message's size so far, bytes.
        size: u64,
        /// The limit, bytes.
        max: usize,
    },
}

impl WsError {
    /// The close code the server answers this error with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => close::PROTOCOL,
            WsError::InvalidUtf8 => close::INVALID,
            WsError::TooBig { .. } => close::SIZE,
        }
    }
}

/// A complete message (or control frame) decoded from the client, borrowed from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, validated UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping: the server answers with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong (unsolicited or an answer to our ping).
    Pong(&'a [u8]),
    /// A close frame: its status code (if it has one, already checked) and UTF-8 reason. The
    /// decoder consumes nothing after it.
    Close(Option<u16>, &'a str),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// FIN bit: the last frame of a message.
    pub fin: bool,
    /// The opcode (0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong).
    pub opcode: u8,
    /// The client's masking key.
    pub mask: [u8; 4],
    /// Header bytes (2 to 14).
    pub header_len: usize,
    /// Payload bytes.
    pub payload_len: u64,
}

/// Parses the header at the start of `buf`: `Ok(None)` if more bytes are needed. Checks
/// everything that can be checked on the header alone (see the module doc).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, WsError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set without an extension"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let len7 = b1 & 0x7f;
    match opcode {
        0..=2 => {}
        8..=10 => {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if len7 > 125 {
                return Err(WsError::Protocol("control frame payload over 125 bytes"));
            }
        }
        _ => return Err(WsError::Protocol("reserved opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("unmasked client frame"));
    }
    let (payload_len, off) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                // A length with the top bit set (RFC 6455: must be 0) is left to the size
                // limit, which refuses it as too big (1009).
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    let Some(m) = buf.get(off..off + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        header_len: off + 4,
        payload_len,
    }))
}

/// Whether `buf` is exactly one client pong frame with no payload: the answer to the
/// gateway's keep-alive ping, which it can consume without waking the connection.
pub fn is_empty_pong(buf: &[u8]) -> bool {
    matches!(
        parse_head(buf),
        Ok(Some(Head { fin: true, opcode: 10, payload_len: 0, header_len, .. })) if header_len == buf.len()
    )
}

/// XORs `buf` with the masking key, eight bytes at a time.
pub fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let m = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(a) ^ m).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at mask byte 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 7.4: not 1004-1006, 1015, nor
/// unassigned codes; 1012-1013 are the IANA-registered restart and try-again codes).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A message being reassembled from fragments (boxed: most connections never have one).
#[derive(Debug)]
struct Fragmented {
    text: bool,
    buf: Vec<u8>,
    /// Bytes of `buf` known to be valid UTF-8 (a text message's incomplete last character is
    /// checked once the next fragment completes it).
    checked: usize,
}

impl Fragmented {
    /// Checks the text not yet checked; an incomplete character at the end is fine unless this
    /// was the last fragment.
    fn check_utf8(&mut self, last: bool) -> Result<(), WsError> {
        match std::str::from_utf8(&self.buf[self.checked..]) {
            Ok(_) => {
                self.checked = self.buf.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !last => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(WsError::InvalidUtf8),
        }
    }
}

/// Per-connection decoding state: only a fragmented message in progress, if any.
#[derive(Debug, Default)]
pub struct Decoder {
    frag: Option<Box<Fragmented>>,
}

impl Decoder {
    /// Whether a fragmented message is being reassembled (its bytes are held here).
    pub fn in_message(&self) -> bool {
        self.frag.is_some()
    }

    /// Decodes the complete frames at the start of `buf`, unmasking them in place, and passes
    /// every complete message and control frame to `on`. Returns the bytes consumed: the rest
    /// is the beginning of a frame that needs more bytes. Stops right after a close frame.
    /// `max_message` bounds frames and reassembled messages alike.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        on: &mut impl FnMut(Message<'_>),
    ) -> Result<usize, WsError> {
        let mut pos = 0;
        loop {
            let rest = &mut buf[pos..];
            let Some(h) = parse_head(rest)? else {
                return Ok(pos);
            };
            if h.payload_len > max_message as u64 {
                return Err(WsError::TooBig {
                    size: h.payload_len,
                    max: max_message,
                });
            }
            let end = h.header_len + h.payload_len as usize;
            if rest.len() < end {
                return Ok(pos);
            }
            let payload = &mut rest[h.header_len..end];
            unmask(payload, h.mask);
            pos += end;
            match h.opcode {
                8 => {
                    let (code, reason) = parse_close(payload)?;
                    on(Message::Close(code, reason));
                    return Ok(pos);
                }
                9 => on(Message::Ping(payload)),
                10 => on(Message::Pong(payload)),
                1 | 2 => {
                    if self.frag.is_some() {
                        return Err(WsError::Protocol(
                            "new message while a fragmented one is unfinished",
                        ));
                    }
                    let text = h.opcode == 1;
                    if h.fin {
                        on(whole(text, payload)?);
                    } else {
                        let mut f = Box::new(Fragmented {
                            text,
                            buf: payload.to_vec(),
                            checked: 0,
                        });
                        if text {
                            f.check_utf8(false)?;
                        }
                        self.frag = Some(f);
                    }
                }
                _ => {
                    // 0: continuation (parse_head let no other opcode through).
                    let Some(f) = self.frag.as_mut() else {
                        return Err(WsError::Protocol("continuation frame without a message"));
                    };
                    let size = f.buf.len() + payload.len();
                    if size > max_message {
                        return Err(WsError::TooBig {
                            size: size as u64,
                            max: max_message,
                        });
                    }
                    f.buf.extend_from_slice(payload);
                    if h.fin {
                        if let Some(f) = self.frag.take() {
                            on(whole(f.text, &f.buf)?);
                        }
                    } else if f.text {
                        f.check_utf8(false)?;
                    }
                }
            }
        }
    }
}

fn whole(text: bool, payload: &[u8]) -> Result<Message<'_>, WsError> {
    if text {
        std::str::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Message::Binary(payload))
    }
}

fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &str), WsError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(WsError::Protocol("close frame with a one-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_allowed(code) {
                return Err(WsError::Protocol("close code not allowed on the wire"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Appends an unmasked server frame with the given first byte (FIN + opcode).
pub fn encode_frame(buf: &mut bytes::BytesMut, first: u8, payload: &[u8]) {
    let len = payload.len();
    buf.reserve(len + 10);
    if len < 126 {
        buf.extend_from_slice(&[first, len as u8]);
    } else if len <= u16::MAX as usize {
        let l = (len as u16).to_be_bytes();
        buf.extend_from_slice(&[first, 126, l[0], l[1]]);
    } else {
        buf.extend_from_slice(&[first, 127]);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    buf.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason`, the reason cut to fit the 125-byte limit
/// of control frames (at a character boundary).
pub fn encode_close(buf: &mut bytes::BytesMut, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = [0u8; 125];
    p[..2].copy_from_slice(&code.to_be_bytes());
    p[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(buf, 0x88, &p[..2 + end]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn empty_pong_recognised_exactly() {
        let m = [1, 2, 3, 4];
        let pong = [0x8a, 0x80, m[0], m[1], m[2], m[3]];
        assert!(is_empty_pong(&pong));
        assert!(!is_empty_pong(&pong[..5]), "truncated");
        assert!(!is_empty_pong(&[0x8a, 0x00]), "unmasked");
        assert!(!is_empty_pong(&[0x89, 0x80, 1, 2, 3, 4]), "a ping");
        assert!(
            !is_empty_pong(&[0x8a, 0x81, 1, 2, 3, 4, 9]),
            "with a payload"
        );
        let mut two = pong.to_vec();
        two.extend_from_slice(&pong);
        assert!(!is_empty_pong(&two), "followed by more");
        assert!(!is_empty_pong(&[0x0a, 0x80, 1, 2, 3, 4]), "without FIN");
    }

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_frame(&mut b, first, payload);
        let mut v = b.to_vec();
        let hl = v.len() - payload.len();
        v[1] |= 0x80;
        let mut body = v.split_off(hl);
        unmask(&mut body, mask);
        v.extend_from_slice(&mask);
        v.extend_from_slice(&body);
        v
    }

    #[derive(Debug, PartialEq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    fn decode_all(
        d: &mut Decoder,
        buf: &mut [u8],
        max: usize,
    ) -> (Vec<Owned>, Result<usize, WsError>) {
        let mut out = Vec::new();
        let r = d.decode(buf, max, &mut |m| {
            out.push(match m {
                Message::Text(t) => Owned::Text(t.into()),
                Message::Binary(b) => Owned::Binary(b.into()),
                Message::Ping(b) => Owned::Ping(b.into()),
                Message::Pong(b) => Owned::Pong(b.into()),
                Message::Close(c, r) => Owned::Close(c, r.into()),
            })
        });
        (out, r)
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn unmask_matches_bytewise() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut a = data.clone();
            unmask(&mut a, M);
            let b: Vec<u8> = data.iter().enumerate().map(|(i, x)| x ^ M[i % 4]).collect();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn frames_of_every_length_encoding_round_trip_and_split_anywhere() {
        for size in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let text = "é".repeat(size / 2) + &"x".repeat(size % 2);
            let mut wire = client_frame(0x81, text.as_bytes(), M);
            wire.extend(client_frame(0x89, b"hi", M));
            let mut d = Decoder::default();
            let (got, r) = decode_all(&mut d, &mut wire.clone(), 1 << 20);
            assert_eq!(r, Ok(wire.len()));
            assert_eq!(
                got,
                vec![Owned::Text(text.clone()), Owned::Ping(b"hi".to_vec())]
            );
            // Any prefix decodes the complete frames only and consumes no partial frame.
            for cut in [1, 2, 5, wire.len() / 2, wire.len() - 1] {
                let mut d = Decoder::default();
                let mut part = wire[..cut].to_vec();
                let (got, r) = decode_all(&mut d, &mut part, 1 << 20);
                let used = r.unwrap();
                assert!(got.len() <= 1);
                let mut rest = part[used..].to_vec();
                rest.extend_from_slice(&wire[cut..]);
                let (more, r) = decode_all(&mut d, &mut rest, 1 << 20);
                assert_eq!(r, Ok(rest.len()));
                assert_eq!(got.len() + more.len(), 2);
            }
        }
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut wire = client_frame(0x01, "hé".as_bytes()[..2].as_ref(), M);
        wire.extend(client_frame(0x89, b"p", M));
        // The 'é' is split across the two fragments.
        wire.extend(client_frame(0x80, &"hé".as_bytes()[2..], M));
        let mut d = Decoder::default();
        let (got, r) = decode_all(&mut d, &mut wire, 100);
        assert_eq!(r.map(|_| ()), Ok(()));
        assert_eq!(
            got,
            vec![Owned::Ping(b"p".to_vec()), Owned::Text("hé".into())]
        );
        assert!(!d.in_message());
    }

    #[test]
    fn rule_breaks_map_to_their_close_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (client_frame(0xC1, b"x", M), 1002),                   // RSV1
            (client_frame(0x83, b"x", M), 1002),                   // reserved opcode
            (client_frame(0x8B, b"", M), 1002),                    // reserved control opcode
            (client_frame(0x09, b"", M), 1002),                    // fragmented ping
            (client_frame(0x89, &[0; 126], M), 1002),              // long ping
            (client_frame(0x80, b"x", M), 1002),                   // continuation, no message
            (client_frame(0x88, &[3], M), 1002),                   // 1-byte close
            (client_frame(0x88, &1005u16.to_be_bytes(), M), 1002), // code not for the wire
            (client_frame(0x88, &[3, 232, 0xff], M), 1007),        // reason not UTF-8
            (client_frame(0x81, &[0xce, 0xba, 0xff], M), 1007),    // text not UTF-8
            (client_frame(0x82, &[0; 101], M), 1009),              // over the limit
            ([0x81u8, 0x01, b'x'].to_vec(), 1002),                 // unmasked
            (
                [0x82u8, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4].to_vec(),
                1009,
            ), // 2^63 bytes
        ];
        for (i, (mut wire, code)) in cases.into_iter().enumerate() {
            let (_, r) = decode_all(&mut Decoder::default(), &mut wire, 100);
            assert_eq!(r.map_err(|e| e.close_code()), Err(code), "case {i}");
        }
        // Interleaved messages, and UTF-8 broken in a middle fragment (caught before the end).
        let mut wire = client_frame(0x01, b"a", M);
        wire.extend(client_frame(0x81, b"b", M));
        let (_, r) = decode_all(&mut Decoder::default(), &mut wire, 100);
        assert_eq!(r.map_err(|e| e.close_code()), Err(1002));
        let mut wire = client_frame(0x01, b"a", M);
        wire.extend(client_frame(0x00, &[0xff], M));
        let (_, r) = decode_all(&mut Decoder::default(), &mut wire, 100);
        assert_eq!(r.map_err(|e| e.close_code()), Err(1007));
        // Reassembly over the limit.
        let mut wire = client_frame(0x02, &[0; 60], M);
        wire.extend(client_frame(0x80, &[0; 60], M));
        let (_, r) = decode_all(&mut Decoder::default(), &mut wire, 100);
        assert_eq!(r.map_err(|e| e.close_code()), Err(1009));
    }

    #[test]
    fn close_stops_decoding() {
        let mut wire = client_frame(0x88, &[3, 232, b'b', b'y', b'e'], M);
        wire.extend(client_frame(0x81, b"after", M));
        let first = wire.len() - 11;
        let (got, r) = decode_all(&mut Decoder::default(), &mut wire, 100);
        assert_eq!(got, vec![Owned::Close(Some(1000), "bye".into())]);
        assert_eq!(r, Ok(first));
    }

    #[test]
    fn close_frame_reason_is_cut_to_fit() {
        let mut b = BytesMut::new();
        encode_close(&mut b, 1008, &"é".repeat(100));
        assert_eq!(b[0], 0x88);
        assert!(b[1] as usize <= 125);
        assert!(std::str::from_utf8(&b[4..]).is_ok());
        assert_eq!(&b[2..4], &1008u16.to_be_bytes());
    }
}
