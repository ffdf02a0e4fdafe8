//! RESP2 encoding of commands and bounded decoding of replies. No I/O.
//!
//! Commands are written straight into the caller's [`BytesMut`] (one `reserve`, no temporary
//! strings), so a writer can flush many commands with one write. Replies are located with the
//! bounded scan of the private `scan` module first, which checks every length, count, integer
//! and terminator; the reply is then built from those checked bytes in one pass, as [`Reply`]
//! values that share the read buffer's memory.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

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
    // An upper bound (every header at its longest) saves counting digits twice.
    let mut most = MAX_HEADER;
    for arg in args {
        most += MAX_HEADER + arg.len() + 2;
    }
    buf.reserve(most);
    let mut out = SpareWriter {
        spare: &mut buf.spare_capacity_mut()[..most],
        at: 0,
    };
    out.header(b'*', args.len());
    for arg in args {
        out.header(b'$', arg.len());
        out.put(arg);
        out.put(b"\r\n");
    }
    let len = out.at;
    // SAFETY: `SpareWriter` initialised the first `len` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + len) };
}

/// Longest `<kind><n>\r\n` header: a 20-digit count.
const MAX_HEADER: usize = 1 + 20 + 2;

/// Writes into a buffer's spare capacity front to back (one `reserve` for a whole command,
/// no per-piece capacity checks of `BufMut`).
struct SpareWriter<'a> {
    spare: &'a mut [MaybeUninit<u8>],
    /// Bytes written so far (all of `spare[..at]` is initialised).
    at: usize,
}

impl SpareWriter<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let dst = &mut self.spare[self.at..self.at + bytes.len()];
        // SAFETY: `dst` has exactly `bytes.len()` elements (the slice index is checked) and
        // `MaybeUninit<u8>` has the layout of `u8`; the regions cannot overlap (`&mut`).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.as_mut_ptr().cast(), bytes.len())
        };
        self.at += bytes.len();
    }

    /// `<kind><n>\r\n`, with the one- and two-digit counts of almost every header written
    /// directly.
    #[inline(always)]
    fn header(&mut self, kind: u8, n: usize) {
        if n < 10 {
            self.put(&[kind, b'0' + n as u8, b'\r', b'\n']);
        } else if n < 100 {
            let d = &DIGITS2[n * 2..n * 2 + 2];
            self.put(&[kind, d[0], d[1], b'\r', b'\n']);
        } else {
            self.put(&[kind]);
            self.put(Int::from(n as i64).as_ref());
            self.put(b"\r\n");
        }
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
                resp3: false,
                max_reply_bytes,
                max_array_len,
                max_depth: MAX_DEPTH,
            },
            scanner: Scanner::default(),
        }
    }

    /// Also accepts RESP3 replies (nulls `_`, doubles, booleans, big numbers, blob errors,
    /// verbatim strings, maps, sets, pushes, attributes), for a connection after `HELLO 3`.
    /// Off by default: a RESP2 connection treats those type bytes as protocol violations.
    pub fn with_resp3(mut self, on: bool) -> Decoder {
        self.limits.resp3 = on;
        self
    }

    /// Forgets a partially scanned reply (use with a fresh buffer).
    pub fn reset(&mut self) {
        self.scanner.reset();
    }

    /// Removes one complete reply from the front of `buf` and returns it; `Ok(None)` if `buf`
    /// does not hold a complete reply yet (nothing is consumed). Bytes after the reply stay in
    /// `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, Error> {
        if self.scanner.is_idle() {
            if let Some(reply) = fast(buf, &self.limits) {
                return Ok(Some(reply));
            }
        }
        let Some(len) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(None);
        };
        if let Some(reply) = bare(&buf[..len], self.limits.resp3)? {
            buf.advance(len);
            return Ok(Some(reply));
        }
        let bytes = buf.split_to(len).freeze();
        build(&bytes).map(Some)
    }
}

/// Longest status line or bulk header [`fast`] looks at for its CRLF: a bounded look, so that a
/// long line arriving in many reads is still scanned once (by the resumable scan), not once per
/// read.
const FAST_LINE: usize = 64;

/// The common replies (`+status`, `-error`, `:int`, `$bulk`, nil, and short flat arrays of
/// those) when complete in `buf`, decoded and consumed directly, without the general scan and
/// build. `None` (nothing
/// consumed) for everything else, including every malformed or over-limit reply: the general
/// path then reports it, so both paths accept exactly the same replies.
#[inline]
fn fast(buf: &mut BytesMut, limits: &Limits) -> Option<Reply> {
    let max_reply_bytes = limits.max_reply_bytes;
    let kind = *buf.first()?;
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return None;
    }
    let window = &buf[..buf.len().min(FAST_LINE)];
    let line_end = find_crlf(window, 1)?;
    let line = &buf[1..line_end];
    let head = line_end + 2;
    if head > max_reply_bytes {
        return None;
    }
    let reply = match kind {
        b':' => {
            let n = parse_int(line).ok()?;
            buf.advance(head);
            return Some(Reply::Int(n));
        }
        b'$' => {
            let n = parse_int(line).ok()?;
            if n == -1 {
                buf.advance(head);
                return Some(Reply::Nil);
            }
            let n = usize::try_from(n).ok()?;
            let total = head.checked_add(n)?.checked_add(2)?;
            if total > max_reply_bytes || buf.len() < total || &buf[total - 2..total] != b"\r\n" {
                return None;
            }
            // One split of the shared buffer (one reference count), not split + slice.
            buf.advance(head);
            let value = buf.split_to(n).freeze();
            buf.advance(2);
            Reply::Bulk(value)
        }
        b'*' => {
            let n = parse_int(line).ok()?;
            if n == -1 {
                buf.advance(head);
                return Some(Reply::Nil);
            }
            let n = usize::try_from(n).ok()?;
            if n == 0 {
                buf.advance(head);
                return Some(Reply::Array(Vec::new()));
            }
            if n > FAST_ARRAY || n > limits.max_array_len || limits.max_depth == 0 {
                return None;
            }
            fast_array(buf, head, n, max_reply_bytes)?
        }
        b'+' if line == b"OK" => {
            buf.advance(head);
            return Some(Reply::Simple(Bytes::from_static(b"OK")));
        }
        _ => {
            if kind == b'-' && std::str::from_utf8(line).is_err() {
                return None;
            }
            buf.advance(1);
            let text = buf.split_to(line_end - 1).freeze();
            buf.advance(2);
            if kind == b'+' {
                Reply::Simple(text)
            } else {
                Reply::Error(text)
            }
        }
    };
    Some(reply)
}

/// Most elements of an array [`fast`] decodes (e.g. a registry lookup's `ZRANGE` reply); longer
/// arrays take the general path.
const FAST_ARRAY: usize = 16;

/// One element of a flat array, located by [`fast_array`].
#[derive(Clone, Copy)]
enum FastItem {
    Nil,
    Int(i64),
    Bulk(usize, usize),
    Simple(usize, usize),
}

/// The rest of [`fast`] for `*n` (header of `head` bytes, `0 < n <= FAST_ARRAY`): an array of
/// `$` / `:` / `+` elements, all complete in `buf`, located first and then split off the buffer
/// once. `None` (nothing consumed) for anything else.
fn fast_array(buf: &mut BytesMut, head: usize, n: usize, max_reply_bytes: usize) -> Option<Reply> {
    let mut items = [FastItem::Nil; FAST_ARRAY];
    let mut pos = head;
    for item in &mut items[..n] {
        let kind = *buf.get(pos)?;
        let window = &buf[..buf.len().min(pos + FAST_LINE)];
        let line_end = find_crlf(window, pos + 1)?;
        let line = &buf[pos + 1..line_end];
        let next = line_end + 2;
        *item = match kind {
            b'$' => match parse_int(line).ok()? {
                -1 => {
                    pos = next;
                    FastItem::Nil
                }
                len => {
                    let end = next.checked_add(usize::try_from(len).ok()?)?;
                    if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
                        return None;
                    }
                    pos = end + 2;
                    FastItem::Bulk(next, end)
                }
            },
            b':' => {
                pos = next;
                FastItem::Int(parse_int(line).ok()?)
            }
            b'+' => {
                pos = next;
                FastItem::Simple(line_end - line.len(), line_end)
            }
            _ => return None,
        };
        if pos > max_reply_bytes {
            return None;
        }
    }
    let all = buf.split_to(pos).freeze();
    let replies = items[..n]
        .iter()
        .map(|item| match *item {
            FastItem::Nil => Reply::Nil,
            FastItem::Int(i) => Reply::Int(i),
            FastItem::Bulk(start, end) => Reply::Bulk(all.slice(start..end)),
            FastItem::Simple(start, end) => Reply::Simple(all.slice(start..end)),
        })
        .collect();
    Some(Reply::Array(replies))
}

/// The replies that keep no bytes (integers, `+OK`, nil, empty arrays), read in place: no
/// split of the read buffer, no reference counting. `None` for every other reply.
fn bare(reply: &[u8], resp3: bool) -> Result<Option<Reply>, Error> {
    let line = &reply[1..reply.len() - 2];
    Ok(match (reply[0], line) {
        (b':', digits) => Some(Reply::Int(parse_int(digits)?)),
        (b'+', b"OK") => Some(Reply::Simple(Bytes::from_static(b"OK"))),
        (b'+', b"PONG") => Some(Reply::Simple(Bytes::from_static(b"PONG"))),
        (b'$' | b'*', b"-1") => Some(Reply::Nil),
        (b'*', b"0") => Some(Reply::Array(Vec::new())),
        (b'_', b"") if resp3 => Some(Reply::Nil),
        _ => None,
    })
}

/// The value of a complete aggregate.
fn close(open: Open, mut items: Vec<Reply>) -> Reply {
    match open {
        Open::Array => Reply::Array(items),
        Open::Set => Reply::Set(items),
        Open::Push => Reply::Push(items),
        Open::Map => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Reply::Map(pairs)
        }
        Open::Attribute => items.pop().unwrap_or(Reply::Nil),
    }
}

/// What an open aggregate becomes when its last element arrives.
#[derive(Clone, Copy)]
enum Open {
    Array,
    Set,
    Push,
    Map,
    /// An attribute map followed by the value it describes: the value is kept.
    Attribute,
}

/// Builds the one reply that `bytes` holds, exactly, as checked by the scan (types, lengths,
/// counts, integers, terminators, depth); every `Err` here is a defence against a scan bug.
/// Arrays are built with an explicit stack (no recursion); an array's `Vec` is sized by its
/// count, which the scan bounded by the bytes actually present.
fn build(bytes: &Bytes) -> Result<Reply, Error> {
    let bad = |what: &str| Error::Protocol(format!("malformed reply: {what}"));
    let mut stack: Vec<(Open, Vec<Reply>, usize)> = Vec::new();
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
            b'_' => Reply::Nil,
            b'#' => Reply::Boolean(bytes[line] == *b"t"),
            b',' => {
                Reply::Double(crate::scan::parse_double(&bytes[line]).ok_or_else(|| bad("double"))?)
            }
            b'(' => Reply::BigNumber(bytes.slice(line)),
            b'!' | b'=' => {
                let n = usize::try_from(parse_int(&bytes[line])?).map_err(|_| bad("length"))?;
                let end = pos + n;
                if bytes.get(end..end + 2) != Some(&b"\r\n"[..]) {
                    return Err(bad("blob"));
                }
                let v = bytes.slice(pos..end);
                pos = end + 2;
                if kind == b'!' {
                    std::str::from_utf8(&v)
                        .map_err(|_| Error::Protocol("error reply is not UTF-8".into()))?;
                    Reply::Error(v)
                } else if v.len() >= 4 && v[3] == b':' {
                    Reply::Verbatim {
                        format: v.slice(..3),
                        text: v.slice(4..),
                    }
                } else {
                    return Err(bad("verbatim string"));
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = parse_int(&bytes[line])?;
                let (open, per, extra) = match kind {
                    b'*' => (Open::Array, 1, 0),
                    b'~' => (Open::Set, 1, 0),
                    b'>' => (Open::Push, 1, 0),
                    b'%' => (Open::Map, 2, 0),
                    _ => (Open::Attribute, 2, 1),
                };
                if n == -1 && kind == b'*' {
                    Reply::Nil
                } else if n < 0 {
                    return Err(bad("aggregate count"));
                } else {
                    let elements = (n as usize).saturating_mul(per).saturating_add(extra);
                    // At least 3 bytes per element ("+\r\n"): the scan saw them all.
                    if elements > (bytes.len() - pos) / 3 || stack.len() >= MAX_DEPTH {
                        return Err(bad("aggregate"));
                    }
                    if elements == 0 {
                        close(open, Vec::new())
                    } else {
                        stack.push((open, Vec::with_capacity(elements), elements));
                        continue;
                    }
                }
            }
            _ => return Err(bad("type byte")),
        };
        // One value is complete: add it to its array, closing every array it completes.
        loop {
            match stack.last_mut() {
                None if pos == bytes.len() => return Ok(value),
                None => return Err(bad("trailing bytes")),
                Some((_, items, left)) => {
                    items.push(value);
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    let (open, items, _) = stack.pop().ok_or_else(|| bad("stack"))?;
                    value = close(open, items);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes};

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
    fn resp3_types() {
        let wire = b"_\r\n#t\r\n,1.5\r\n,-inf\r\n(12345678901234567890\r\n!3\r\nERR\r\n\
            =7\r\ntxt:abc\r\n%2\r\n+a\r\n:1\r\n+b\r\n_\r\n~1\r\n:2\r\n>2\r\n+x\r\n+y\r\n\
            |1\r\n+ttl\r\n:3\r\n:42\r\n%0\r\n*1\r\n|0\r\n#f\r\n";
        let mut dec = Decoder::default().with_resp3(true);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // Byte by byte: the RESP3 framing resumes like RESP2's.
        for &b in wire.iter() {
            buf.put_u8(b);
            while let Some(r) = dec.decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        let s = |t: &'static str| Reply::Simple(Bytes::from_static(t.as_bytes()));
        assert_eq!(
            got,
            vec![
                Reply::Nil,
                Reply::Boolean(true),
                Reply::Double(1.5),
                Reply::Double(f64::NEG_INFINITY),
                Reply::BigNumber(Bytes::from_static(b"12345678901234567890")),
                Reply::Error(Bytes::from_static(b"ERR")),
                Reply::Verbatim {
                    format: Bytes::from_static(b"txt"),
                    text: Bytes::from_static(b"abc")
                },
                Reply::Map(vec![(s("a"), Reply::Int(1)), (s("b"), Reply::Nil)]),
                Reply::Set(vec![Reply::Int(2)]),
                Reply::Push(vec![s("x"), s("y")]),
                Reply::Int(42), // the attribute is dropped, its value kept
                Reply::Map(vec![]),
                Reply::Array(vec![Reply::Boolean(false)]),
            ]
        );
        assert!(buf.is_empty());
        // A RESP2 decoder refuses RESP3 types; a RESP3 one refuses malformed values.
        for bad in [&b"_\r\n"[..], b"%1\r\n", b"#t\r\n"] {
            let mut buf = BytesMut::from(bad);
            assert!(Decoder::default().decode(&mut buf).is_err(), "{bad:?}");
        }
        for bad in [
            &b"_x\r\n"[..],
            b"#x\r\n",
            b",abc\r\n",
            b"(12a\r\n",
            b"=2\r\nab\r\n",
            b"=4\r\nabcd\r\n",
            b"!-1\r\n",
            b"~-1\r\n",
            b"*?\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let r = Decoder::default().with_resp3(true).decode(&mut buf);
            assert!(r.is_err(), "{bad:?}: {r:?}");
        }
        // Map counts are bounded like arrays (2 elements per entry).
        let mut buf = BytesMut::from(&b"%600000\r\n"[..]);
        let r = Decoder::new(1 << 20, 1000)
            .with_resp3(true)
            .decode(&mut buf);
        assert!(matches!(r, Err(Error::Protocol(m)) if m.starts_with("array length")));
    }

    /// Replies decoded whole (the direct path where it applies) and byte by byte (always the
    /// general scan) are the same, errors included.
    #[test]
    fn direct_and_general_paths_agree() {
        let cases: &[&[u8]] = &[
            b"*3\r\n$5\r\nhello\r\n:-12\r\n+ok go\r\n",
            b"*2\r\n$-1\r\n$0\r\n\r\n",
            b"*1\r\n+\r\n",
            b"*-01\r\n*-0\r\n*00\r\n$-1\r\n",
            b"*2\r\n-ERR x\r\n:1\r\n",
            b"*1\r\n*1\r\n:1\r\n",
            b"*17\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
            b"*2\r\n$3\r\nabcd\r\n",
            b"*2\r\n$-2\r\n:1\r\n",
            b"*1\r\n:1x\r\n",
            b"$3\r\nabcX\r\n",
            b"+a\rb\r\n-\xff\r\n",
            b"*3\r\n$100\r\n",
        ];
        for max in [16, 40, 1 << 20] {
            for &wire in cases {
                let run = |bytewise: bool| {
                    let mut dec = Decoder::new(max, 8);
                    let mut buf = BytesMut::new();
                    let mut got = Vec::new();
                    let chunks: Vec<&[u8]> = if bytewise {
                        wire.chunks(1).collect()
                    } else {
                        vec![wire]
                    };
                    for chunk in chunks {
                        buf.extend_from_slice(chunk);
                        loop {
                            match dec.decode(&mut buf) {
                                Ok(Some(r)) => got.push(Ok(r)),
                                Ok(None) => break,
                                Err(_) => {
                                    got.push(Err(()));
                                    return (got, None);
                                }
                            }
                        }
                    }
                    (got, Some(buf.len()))
                };
                assert_eq!(
                    run(false),
                    run(true),
                    "max {max}: {:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }

    #[test]
    fn empty_buffer_needs_more() {
        let mut dec = Decoder::default();
        assert_eq!(dec.decode(&mut BytesMut::new()).unwrap(), None);
    }
}
