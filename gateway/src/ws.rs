//! WebSocket plumbing for one client: tungstenite runs over in-memory buffers so that it never
//! touches the socket. Bytes read by the connection's reader are appended to `rx`; everything
//! tungstenite writes goes straight into the connection's [`Outbox`]. Data frames we send
//! ourselves (acks, deliveries) are framed here and appended to the same outbox, so there is one
//! ordered byte stream per client and one writer.

use std::io::{self, Read, Write};
use std::rc::Rc;

use bytes::{Buf, BytesMut};
use runtime::outbox::{Outbox, PushError};
use tungstenite::protocol::WebSocketConfig;

/// tungstenite's eager read buffer. Its default (128 KiB) would cost 128 GB per million idle
/// connections; messages larger than this still work (the buffer grows for them).
pub const WS_READ_BUFFER: usize = 256;

/// The stream tungstenite sees.
pub struct Io {
    /// Bytes received and not yet consumed by tungstenite.
    pub rx: BytesMut,
    /// The connection's write queue.
    pub out: Rc<Outbox>,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rx.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.rx.len());
        buf[..n].copy_from_slice(&self.rx[..n]);
        self.rx.advance(n);
        Ok(n)
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.push(|b| b.extend_from_slice(buf)) {
            Ok(()) => Ok(buf.len()),
            // A client that pings faster than it reads the pongs (a ping flood) would
            // otherwise fill its queue with pongs and be dropped. RFC 6455 5.5.3 lets an
            // endpoint leave pongs out while earlier ones are still unsent: skip this one.
            Err(PushError::Full) if is_pong(buf) => Ok(buf.len()),
            Err(e) => Err(push_err(e)),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `buf` is exactly one server pong frame (what tungstenite writes when it answers a
/// ping; it writes nothing else through [`Io`] but close frames).
fn is_pong(buf: &[u8]) -> bool {
    matches!(buf, [0x8a, len, ..] if *len < 126 && buf.len() == 2 + *len as usize)
}

/// Maps an outbox refusal to the I/O error tungstenite reports.
pub fn push_err(e: PushError) -> io::Error {
    match e {
        PushError::Closed => io::ErrorKind::BrokenPipe.into(),
        PushError::Full => io::Error::new(io::ErrorKind::OutOfMemory, "client send queue full"),
    }
}

/// tungstenite settings for a client connection.
pub fn config(max_message: usize, max_queue: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(max_queue)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Appends an unmasked, unfragmented server text frame carrying `payload`.
pub fn encode_text_frame(buf: &mut BytesMut, payload: &[u8]) {
    encode_frame(buf, 0x81, payload);
}

/// Appends an unmasked server frame with the given first byte (FIN + opcode).
pub fn encode_frame(buf: &mut BytesMut, first: u8, payload: &[u8]) {
    let len = payload.len();
    buf.reserve(len + 10);
    buf.extend_from_slice(&[first]);
    if len < 126 {
        buf.extend_from_slice(&[len as u8]);
    } else if len <= u16::MAX as usize {
        buf.extend_from_slice(&[126]);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.extend_from_slice(&[127]);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    buf.extend_from_slice(payload);
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
            let cursor = std::io::Cursor::new(buf.to_vec());
            let mut client = WebSocket::from_raw_socket(cursor, Role::Client, None);
            match client.read().unwrap() {
                Message::Text(t) => assert_eq!(t.as_str(), text),
                m => panic!("unexpected {m:?}"),
            }
        }
    }

    #[test]
    fn io_reads_would_block_when_empty_and_writes_to_outbox() {
        let out = Rc::new(Outbox::new(10, 1024));
        let mut io = Io {
            rx: BytesMut::from(&b"abc"[..]),
            out: out.clone(),
        };
        let mut b = [0u8; 2];
        assert_eq!(io.read(&mut b).unwrap(), 2);
        assert_eq!(io.read(&mut b).unwrap(), 1);
        assert_eq!(
            io.read(&mut b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        io.write_all(b"0123456789x").unwrap();
        assert_eq!(out.queued(), 11);
        // Over the limit: refused, so a slow consumer cannot grow memory without bound.
        assert!(io.write(b"more").is_err());
        // Except pongs, which are skipped instead (nothing queued, no error).
        assert_eq!(io.write(&[0x8a, 2, b'h', b'i']).unwrap(), 4);
        assert_eq!(io.write(&[0x8a, 0]).unwrap(), 2);
        assert_eq!(out.queued(), 11);
        assert!(io.write(&[0x8a, 2, b'h']).is_err(), "not a whole pong");
        assert!(io.write(&[0x88, 2, 0x03, 0xe8]).is_err(), "a close frame");
    }
}
