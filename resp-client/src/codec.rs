//! RESP2 encoding of commands and bounded decoding of replies. No I/O.
//!
//! Commands are written straight into the caller's [`BytesMut`] (one `reserve`, no temporary
//! strings), so a writer can flush many commands with one write. Replies are located with the
//! bounded scan of the private `scan` module first and then decoded by `redis-protocol` into [`Reply`]
//! values that share the read buffer's memory.

use bytes::{BufMut, BytesMut};
use redis_protocol::resp2::{decode::decode_bytes, types::BytesFrame};

use crate::scan::{Limits, Scanner};
use crate::{Error, Reply};

/// Default for [`Decoder`]'s and [`crate::Config::max_reply_bytes`]: 64 MiB.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 << 20;
/// Default for [`crate::Config::max_array_len`]: 1 Mi elements.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 1 << 20;
/// Deepest array nesting accepted. Redis replies nest a few levels at most (e.g. `XREAD`);
/// the limit keeps the recursive decode's stack use small.
pub const MAX_DEPTH: usize = 16;

/// Appends `args` as one command (a RESP array of bulk strings) to `buf`.
///
/// An empty `args` is rejected by the client before it gets here: Redis ignores `*0`, which
/// would shift every later reply onto the wrong request.
pub fn encode_command(buf: &mut BytesMut, args: &[&[u8]]) {
    buf.reserve(encoded_len(args));
    put_header(buf, b'*', args.len());
    for arg in args {
        put_header(buf, b'$', arg.len());
        buf.put_slice(arg);
        buf.put_slice(b"\r\n");
    }
}

/// Exact number of bytes [`encode_command`] appends for `args`.
pub fn encoded_len(args: &[&[u8]]) -> usize {
    let mut len = 1 + decimal_len(args.len() as u64) + 2;
    for arg in args {
        len += 1 + decimal_len(arg.len() as u64) + 2 + arg.len() + 2;
    }
    len
}

fn put_header(buf: &mut BytesMut, kind: u8, n: usize) {
    buf.put_u8(kind);
    buf.put_slice(Int::from(n as i64).as_ref());
    buf.put_slice(b"\r\n");
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// An integer formatted as decimal text on the stack, for use as a command argument:
/// `client.submit(&[b"PEXPIRE", key, Int::from(ttl_ms).as_ref()])`.
#[derive(Clone, Copy)]
pub struct Int {
    buf: [u8; 20],
    start: u8,
}

impl From<i64> for Int {
    fn from(n: i64) -> Int {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut m = n.unsigned_abs();
        loop {
            i -= 1;
            buf[i] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        Int {
            buf,
            start: i as u8,
        }
    }
}

impl AsRef<[u8]> for Int {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start as usize..]
    }
}

/// Decodes replies from a read buffer, one at a time, within size limits.
///
/// Between calls the caller may only append to the buffer (bytes before the first undecoded
/// reply are consumed by `decode` itself). After an error the stream is unusable: drop the
/// connection, or [`Decoder::reset`] for a new one.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    scanner: Scanner,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_REPLY_BYTES, DEFAULT_MAX_ARRAY_LEN)
    }
}

impl Decoder {
    /// A decoder rejecting replies over `max_reply_bytes` in total or arrays of more than
    /// `max_array_len` elements, before allocating for them.
    pub fn new(max_reply_bytes: usize, max_array_len: usize) -> Decoder {
        Decoder {
            limits: Limits {
                max_reply_bytes,
                max_array_len,
                max_depth: MAX_DEPTH,
            },
            scanner: Scanner::default(),
        }
    }

    /// Forgets a partially scanned reply (use with a fresh buffer).
    pub fn reset(&mut self) {
        self.scanner.reset();
    }

    /// Removes one complete reply from the front of `buf` and returns it; `Ok(None)` if `buf`
    /// does not hold a complete reply yet (nothing is consumed). Bytes after the reply stay in
    /// `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, Error> {
        let Some(len) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(None);
        };
        let bytes = buf.split_to(len).freeze();
        match decode_bytes(&bytes) {
            Ok(Some((frame, used))) if used == len => Ok(Some(to_reply(frame))),
            Ok(_) => Err(Error::Protocol(
                "reply framing disagrees with the RESP2 decoder".into(),
            )),
            Err(e) => Err(Error::Protocol(e.to_string())),
        }
    }
}

fn to_reply(frame: BytesFrame) -> Reply {
    match frame {
        BytesFrame::SimpleString(b) => Reply::Simple(b),
        BytesFrame::Error(s) => Reply::Error(s.into_inner()),
        BytesFrame::Integer(i) => Reply::Int(i),
        BytesFrame::BulkString(b) => Reply::Bulk(b),
        BytesFrame::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        BytesFrame::Null => Reply::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn encode_matches_resp() {
        let mut buf = BytesMut::new();
        let args: [&[u8]; 3] = [b"SET", b"key", b""];
        encode_command(&mut buf, &args);
        assert_eq!(&buf[..], b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n");
        assert_eq!(encoded_len(&args), buf.len());
        let big = vec![b'x'; 12345];
        let args: Vec<&[u8]> = vec![&big[..]; 11];
        let before = buf.len();
        encode_command(&mut buf, &args);
        assert_eq!(buf.len() - before, encoded_len(&args));
        assert!(buf[before..].starts_with(b"*11\r\n$12345\r\nxxx"));
    }

    #[test]
    fn int_formats() {
        for n in [0, 7, -7, 10, 1_700_000_000_000, i64::MAX, i64::MIN] {
            assert_eq!(Int::from(n).as_ref(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn decodes_all_kinds_with_trailing_bytes() {
        let mut buf = BytesMut::from(
            &b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\nfoo\r\n$-1\r\n*2\r\n$1\r\na\r\n*-1\r\n+PAR"[..],
        );
        let mut dec = Decoder::default();
        let mut got = Vec::new();
        while let Some(r) = dec.decode(&mut buf).unwrap() {
            got.push(r);
        }
        assert_eq!(
            got,
            vec![
                Reply::Simple(Bytes::from_static(b"OK")),
                Reply::Error(Bytes::from_static(b"ERR bad")),
                Reply::Int(42),
                bulk("foo"),
                Reply::Nil,
                Reply::Array(vec![bulk("a"), Reply::Nil]),
            ]
        );
        assert_eq!(&buf[..], b"+PAR", "the partial reply stays in the buffer");
        buf.extend_from_slice(b"TIAL\r\n");
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Reply::Simple(Bytes::from_static(b"PARTIAL")))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn split_reads_byte_by_byte() {
        let wire = b"*3\r\n$5\r\nhello\r\n:1\r\n*1\r\n$0\r\n\r\n:7\r\n";
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            while let Some(r) = dec.decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(
            got,
            vec![
                Reply::Array(vec![
                    bulk("hello"),
                    Reply::Int(1),
                    Reply::Array(vec![bulk("")])
                ]),
                Reply::Int(7),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_lengths_fail_without_allocating() {
        let mut dec = Decoder::new(1 << 20, 1000);
        let mut buf = BytesMut::from(&b"$999999999999\r\n"[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(Error::Protocol(m)) if m.starts_with("bulk string")
        ));
        let mut dec = Decoder::new(1 << 20, 1000);
        let mut buf = BytesMut::from(&b"*2147483647\r\n:1\r\n"[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(Error::Protocol(m)) if m.starts_with("array length")
        ));
        // Within the count limit but never delivered: just incomplete, nothing allocated.
        let mut dec = Decoder::new(1 << 20, 1000);
        let mut buf = BytesMut::from(&b"*1000\r\n:1\r\n"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 11);
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&b"hello\r\n"[..]);
        assert!(matches!(dec.decode(&mut buf), Err(Error::Protocol(_))));
        // Errors must be UTF-8 for redis-protocol; a violation is reported, not a panic.
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&b"-\xff\xfe\r\n"[..]);
        assert!(matches!(dec.decode(&mut buf), Err(Error::Protocol(_))));
    }

    #[test]
    fn empty_buffer_needs_more() {
        let mut dec = Decoder::default();
        assert_eq!(dec.decode(&mut BytesMut::new()).unwrap(), None);
    }
}
