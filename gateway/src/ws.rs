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
    /// tungstenite writes only control frames through here (pongs, close replies). When the
    /// client's queue is full (a client pinging faster than it reads: a ping flood) the write
    /// would block: tungstenite keeps the frame in its own buffer of [`CONTROL_BUFFER`] bytes,
    /// answers only the latest of the pings that arrive meanwhile (RFC 6455 5.5.3) and
    /// retries on its next read or flush, so the connection neither grows nor drops.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.push(|b| b.extend_from_slice(buf)) {
            Ok(()) => Ok(buf.len()),
            Err(PushError::Full) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(push_err(e)),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Maps an outbox refusal to the I/O error tungstenite reports.
pub fn push_err(e: PushError) -> io::Error {
    match e {
        PushError::Closed => io::ErrorKind::BrokenPipe.into(),
        PushError::Full => io::Error::new(io::ErrorKind::OutOfMemory, "client send queue full"),
    }
}

/// Bytes of control frames (pongs, a close reply: at most 127 bytes each) tungstenite may hold
/// while the client's queue is full; beyond it pongs are coalesced to the latest.
pub const CONTROL_BUFFER: usize = 1024;

/// tungstenite settings for a client connection. `_max_queue` (`--client-queue`) is enforced by
/// the connection's [`Outbox`], which everything tungstenite writes goes through.
pub fn config(max_message: usize, _max_queue: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(CONTROL_BUFFER)
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
        // Over the limit: the write would block, so a slow consumer cannot grow memory
        // without bound.
        assert_eq!(
            io.write(b"more").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(out.queued(), 11);
        out.close();
        assert_eq!(
            io.write(b"more").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    /// A ping flood from a client that does not read: its queue fills, tungstenite holds at
    /// most [`CONTROL_BUFFER`] bytes of pongs, and once the queue drains the pong for the
    /// latest ping goes out on the next read.
    #[test]
    fn ping_flood_into_a_full_queue_keeps_the_latest_pong() {
        let out = Rc::new(Outbox::new(1000, 1024));
        let mut ws = WebSocket::from_raw_socket(
            Io {
                rx: BytesMut::new(),
                out: out.clone(),
            },
            Role::Server,
            Some(config(1 << 20, 1000)),
        );
        let ping = |n: u32| {
            let payload = format!("ping-{n:06}");
            let mut f = vec![0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0];
            f.extend_from_slice(payload.as_bytes());
            f
        };
        for n in 0..5000 {
            ws.get_mut().rx.extend_from_slice(&ping(n));
            loop {
                match ws.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break
                    }
                    Err(e) => panic!("ping {n}: {e}"),
                }
            }
        }
        let queued = out.queued();
        assert!(queued <= 1000 + 20, "queue bounded: {queued}");
        let mut sent = BytesMut::new();
        out.take_into(&mut sent);
        // As the writer drains the queue, the next read and flushes send what tungstenite
        // held, the pong for the latest ping last.
        ws.get_mut().rx.extend_from_slice(&ping(5000));
        let _ = ws.read();
        for _ in 0..3 {
            let mut rest = BytesMut::new();
            out.take_into(&mut rest);
            sent.extend_from_slice(&rest);
            let _ = ws.flush();
        }
        assert_eq!(out.queued(), 0);
        let mut client =
            WebSocket::from_raw_socket(std::io::Cursor::new(sent.to_vec()), Role::Client, None);
        let mut pongs = Vec::new();
        while let Ok(m) = client.read() {
            if let Message::Pong(p) = m {
                pongs.push(String::from_utf8(p.to_vec()).unwrap());
            }
        }
        assert!(pongs.len() > 10 && pongs.len() < 200, "{}", pongs.len());
        assert_eq!(pongs.last().map(String::as_str), Some("ping-005000"));
    }
}
