//! Server frames the gateway writes into a connection's outbox. Decoding (and the RFC 6455
//! checks) is [`wire::ws`]'s sans-I/O decoder; this is the thin sending side.

use bytes::BytesMut;

pub use wire::ws::{encode_close, encode_frame};

/// Appends an unmasked, unfragmented server text frame carrying `payload`.
pub fn encode_text_frame(buf: &mut BytesMut, payload: &[u8]) {
    encode_frame(buf, 0x81, payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    /// Our hand-made frames must parse as the same text in a real client.
    #[test]
    fn frames_parse_in_tungstenite_client() {
        for size in [0usize, 5, 125, 126, 300, 65535, 65536, 200_000] {
            let text = "x".repeat(size);
            let mut buf = BytesMut::new();
            encode_text_frame(&mut buf, text.as_bytes());
            encode_close(&mut buf, wire::ws::close::SIZE, &"r".repeat(size.min(300)));
            let cursor = std::io::Cursor::new(buf.to_vec());
            let mut client = WebSocket::from_raw_socket(cursor, Role::Client, None);
            match client.read().unwrap() {
                Message::Text(t) => assert_eq!(t.as_str(), text),
                m => panic!("unexpected {m:?}"),
            }
            match client.read().unwrap() {
                Message::Close(Some(c)) => assert_eq!(u16::from(c.code), 1009),
                m => panic!("unexpected {m:?}"),
            }
        }
    }
}
