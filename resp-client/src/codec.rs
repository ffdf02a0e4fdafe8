//! RESP2 encoding of commands and bounded decoding of replies. No I/O.
//!
//! Commands are written straight into the caller's [`BytesMut`] (one `reserve`, no temporary
//! strings), so a writer can flush many commands with one write. Replies are located with the
//! bounded scan of the private `scan` module first, which checks every length, count, integer
//! and terminator; the reply is then built from those checked bytes in one pass, as [`Reply`]
//! values that share the read buffer's memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::scan::{find_crlf, parse_int, Limits, Scanner};
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

/// `<kind><n>\r\n`, with the one- and two-digit counts of almost every header written
/// directly.
fn put_header(buf: &mut BytesMut, kind: u8, n: usize) {
    if n < 10 {
        buf.put_slice(&[kind, b'0' + n as u8, b'\r', b'\n']);
    } else if n < 100 {
        let d = &DIGITS2[n * 2..n * 2 + 2];
        buf.put_slice(&[kind, d[0], d[1], b'\r', b'\n']);
    } else {
        buf.put_u8(kind);
        buf.put_slice(Int::from(n as i64).as_ref());
        buf.put_slice(b"\r\n");
    }
}

fn decimal_len(n: u64) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => {
            let mut len = 5;
            let mut m = n / 100_000;
            while m > 0 {
                m /= 10;
                len += 1;
            }
            len
        }
    }
}

/// "00".."99": two digits per division when formatting integers.
const DIGITS2: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

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
        while m >= 100 {
            let d = (m % 100) as usize * 2;
            m /= 100;
            i -= 2;
            buf[i..i + 2].copy_from_slice(&DIGITS2[d..d + 2]);
        }
        if m >= 10 {
            let d = m as usize * 2;
            i -= 2;
            buf[i..i + 2].copy_from_slice(&DIGITS2[d..d + 2]);
        } else {
            i -= 1;
            buf[i] = b'0' + m as u8;
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
        if let Some(reply) = bare(&buf[..len])? {
            buf.advance(len);
            return Ok(Some(reply));
        }
        let bytes = buf.split_to(len).freeze();
        build(&bytes).map(Some)
    }
}

/// The replies that keep no bytes (integers, `+OK`, nil, empty arrays), read in place: no
/// split of the read buffer, no reference counting. `None` for every other reply.
fn bare(reply: &[u8]) -> Result<Option<Reply>, Error> {
    let line = &reply[1..reply.len() - 2];
    Ok(match (reply[0], line) {
        (b':', digits) => Some(Reply::Int(parse_int(digits)?)),
        (b'+', b"OK") => Some(Reply::Simple(Bytes::from_static(b"OK"))),
        (b'+', b"PONG") => Some(Reply::Simple(Bytes::from_static(b"PONG"))),
        (b'$' | b'*', b"-1") => Some(Reply::Nil),
        (b'*', b"0") => Some(Reply::Array(Vec::new())),
        _ => None,
    })
}

/// Builds the one reply that `bytes` holds, exactly, as checked by the scan (types, lengths,
/// counts, integers, terminators, depth); every `Err` here is a defence against a scan bug.
/// Arrays are built with an explicit stack (no recursion); an array's `Vec` is sized by its
/// count, which the scan bounded by the bytes actually present.
fn build(bytes: &Bytes) -> Result<Reply, Error> {
    let bad = |what: &str| Error::Protocol(format!("malformed reply: {what}"));
    let mut stack: Vec<(Vec<Reply>, usize)> = Vec::new();
    let mut pos = 0;
    loop {
        let kind = *bytes.get(pos).ok_or_else(|| bad("truncated"))?;
        let line_end = find_crlf(bytes, pos + 1).ok_or_else(|| bad("no CRLF"))?;
        let line = pos + 1..line_end;
        pos = line_end + 2;
        let mut value = match kind {
            b'+' => Reply::Simple(bytes.slice(line)),
            b'-' => {
                // Error text is shown to people and logged: it must be text.
                std::str::from_utf8(&bytes[line.clone()])
                    .map_err(|_| Error::Protocol("error reply is not UTF-8".into()))?;
                Reply::Error(bytes.slice(line))
            }
            b':' => Reply::Int(parse_int(&bytes[line])?),
            b'$' => match parse_int(&bytes[line])? {
                -1 => Reply::Nil,
                n if n >= 0 => {
                    let end = pos + n as usize;
                    if bytes.get(end..end + 2) != Some(&b"\r\n"[..]) {
                        return Err(bad("bulk string"));
                    }
                    let v = bytes.slice(pos..end);
                    pos = end + 2;
                    Reply::Bulk(v)
                }
                _ => return Err(bad("bulk length")),
            },
            b'*' => match parse_int(&bytes[line])? {
                -1 => Reply::Nil,
                0 => Reply::Array(Vec::new()),
                n if n > 0 && stack.len() < MAX_DEPTH => {
                    let n = n as usize;
                    // At least 3 bytes per element ("+\r\n"): the scan saw them all.
                    if n > (bytes.len() - pos) / 3 {
                        return Err(bad("array count"));
                    }
                    stack.push((Vec::with_capacity(n), n));
                    continue;
                }
                _ => return Err(bad("array")),
            },
            _ => return Err(bad("type byte")),
        };
        // One value is complete: add it to its array, closing every array it completes.
        loop {
            match stack.last_mut() {
                None if pos == bytes.len() => return Ok(value),
                None => return Err(bad("trailing bytes")),
                Some((items, left)) => {
                    items.push(value);
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    let (items, _) = stack.pop().ok_or_else(|| bad("stack"))?;
                    value = Reply::Array(items);
                }
            }
        }
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
        // Error replies must be text; a violation is reported, not a panic.
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&b"-\xff\xfe\r\n"[..]);
        assert!(matches!(dec.decode(&mut buf), Err(Error::Protocol(_))));
    }

    #[test]
    fn lone_cr_and_nesting() {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&b"+a\rb\r\n*2\r\n*1\r\n*0\r\n$-1\r\n*-1\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Reply::Simple(Bytes::from_static(b"a\rb")))
        );
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Reply::Array(vec![
                Reply::Array(vec![Reply::Array(vec![])]),
                Reply::Nil
            ]))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Reply::Nil));
        assert!(buf.is_empty());
        assert_eq!(
            build(&Bytes::from_static(b"+OK\r\nx")).ok(),
            None,
            "trailing bytes"
        );
        assert_eq!(
            build(&Bytes::from_static(b"*5\r\n:1\r\n")).ok(),
            None,
            "short array"
        );
    }

    #[test]
    fn empty_buffer_needs_more() {
        let mut dec = Decoder::default();
        assert_eq!(dec.decode(&mut BytesMut::new()).unwrap(), None);
    }
}
