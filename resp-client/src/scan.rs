//! A bounded, resumable scan for the end of one RESP2 reply, run before any decoding.
//!
//! Scanning before building any value means that a peer cannot make us allocate by announcing
//! a huge bulk length or element count (every length is checked against [`Limits`] and every
//! announced element must actually be present before the reply is built), cannot overflow the
//! stack with deep nesting (checked here, without recursion), and that a large reply arriving
//! in many reads is scanned once, not once per read (the scan resumes where it stopped).

use crate::Error;

/// Limits applied to every reply, and the protocol version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Accept RESP3 types too (after `HELLO 3`).
    pub resp3: bool,
    /// Largest whole reply, in bytes, including RESP framing.
    pub max_reply_bytes: usize,
    /// Largest element count of one array.
    pub max_array_len: usize,
    /// Deepest array nesting.
    pub max_depth: usize,
}

/// Longest header line for `:`, `$` and `*` (an i64 is at most 20 characters).
const MAX_NUMBER_LINE: usize = 20;

/// Where a scan of one reply stands between calls. The buffer must only grow at its end between
/// calls; [`Scanner::reset`] before scanning a different buffer.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// Offset of the next element header not yet accepted.
    pos: usize,
    /// Where to resume looking for the CRLF of the header line at `pos` (0 = from the start).
    line_from: usize,
    /// Elements still expected by each open array, outermost first.
    open: Vec<u64>,
}

impl Scanner {
    /// True when no reply is partly scanned (the next scan starts at the buffer's front).
    pub fn is_idle(&self) -> bool {
        self.pos == 0 && self.line_from == 0 && self.open.is_empty()
    }

    /// Forgets any partial scan.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.line_from = 0;
        self.open.clear();
    }

    /// `Ok(Some(n))` when `buf[..n]` holds one complete reply (the scanner is then reset for the
    /// next one), `Ok(None)` when more bytes are needed, `Err` when the bytes are not valid RESP2
    /// (RESP3 with [`Limits::resp3`]) or exceed `limits`.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
        loop {
            let start = self.pos;
            let Some(&kind) = buf.get(start) else {
                return Ok(None);
            };
            let Some(class) = class(kind, limits.resp3) else {
                return Err(Error::Protocol(format!(
                    "invalid reply type byte 0x{kind:02x} at offset {start}"
                )));
            };
            let from = self.line_from.max(start + 1);
            let Some(line_end) = find_crlf(buf, from) else {
                // Resume at the last byte next time: it may be the '\r' of the CRLF.
                self.line_from = buf.len().saturating_sub(1).max(start + 1);
                let line_len = buf.len() - start - 1;
                if !free_text(kind) && line_len > MAX_NUMBER_LINE + 1 {
                    return Err(Error::Protocol(format!(
                        "'{}' header line longer than {MAX_NUMBER_LINE} bytes",
                        kind as char
                    )));
                }
                check_total(buf.len(), limits)?;
                return Ok(None);
            };
            self.line_from = 0;
            let line = &buf[start + 1..line_end];
            let mut next = line_end + 2;
            match class {
                Class::Line => check_line(kind, line)?,
                Class::Blob => {
                    let len = parse_int(line)?;
                    if len >= 0 {
                        let len = len as u64;
                        if len > limits.max_reply_bytes as u64 {
                            return Err(too_large(
                                "bulk string",
                                len,
                                limits.max_reply_bytes as u64,
                            ));
                        }
                        next += len as usize + 2;
                        check_total(next, limits)?;
                        if buf.len() < next {
                            return Ok(None); // the header is rescanned next time: cheap
                        }
                        if &buf[next - 2..next] != b"\r\n" {
                            return Err(Error::Protocol(
                                "bulk string not terminated by CRLF".into(),
                            ));
                        }
                        // A verbatim string starts with its 3-byte format and ':'.
                        if kind == b'=' && (len < 4 || buf[line_end + 5] != b':') {
                            return Err(Error::Protocol("malformed verbatim string".into()));
                        }
                    } else if len != -1 || kind != b'$' {
                        return Err(Error::Protocol(format!("negative bulk length {len}")));
                    }
                }
                Class::Aggregate { per, extra } => {
                    let len = parse_int(line)?;
                    if len == -1 && kind == b'*' {
                        // RESP2 null array: a complete element.
                    } else if len < 0 {
                        return Err(Error::Protocol(format!("negative array length {len}")));
                    } else {
                        let count = len as u64;
                        if count > limits.max_array_len as u64 {
                            return Err(too_large(
                                "array length",
                                count,
                                limits.max_array_len as u64,
                            ));
                        }
                        let elements = count.saturating_mul(per).saturating_add(extra);
                        if elements > 0 {
                            if self.open.len() >= limits.max_depth {
                                return Err(too_large(
                                    "nesting depth",
                                    self.open.len() as u64 + 1,
                                    limits.max_depth as u64,
                                ));
                            }
                            check_total(next, limits)?;
                            self.open.push(elements);
                            self.pos = next;
                            continue;
                        }
                    }
                }
            }
            check_total(next, limits)?;
            self.pos = next;
            // One element is complete: close every array it completes.
            loop {
                match self.open.last_mut() {
                    None => {
                        let end = self.pos;
                        self.reset();
                        return Ok(Some(end));
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// How a reply type is framed.
#[derive(Clone, Copy)]
enum Class {
    /// The header line is the whole value.
    Line,
    /// A length, then that many bytes and CRLF.
    Blob,
    /// A count, then `count * per + extra` elements (maps: 2 per entry; an attribute map is
    /// followed by the value it describes).
    Aggregate { per: u64, extra: u64 },
}

fn class(kind: u8, resp3: bool) -> Option<Class> {
    Some(match kind {
        b'+' | b'-' | b':' => Class::Line,
        b'$' => Class::Blob,
        b'*' => Class::Aggregate { per: 1, extra: 0 },
        _ if !resp3 => return None,
        b'_' | b',' | b'#' | b'(' => Class::Line,
        b'!' | b'=' => Class::Blob,
        b'~' | b'>' => Class::Aggregate { per: 1, extra: 0 },
        b'%' => Class::Aggregate { per: 2, extra: 0 },
        b'|' => Class::Aggregate { per: 2, extra: 1 },
        _ => return None,
    })
}

/// Types whose line is free text, not a short number.
fn free_text(kind: u8) -> bool {
    matches!(kind, b'+' | b'-' | b'(' | b',')
}

/// Checks the value of a line type.
fn check_line(kind: u8, line: &[u8]) -> Result<(), Error> {
    let ok = match kind {
        b':' => return parse_int(line).map(|_| ()),
        b'_' => line.is_empty(),
        b'#' => line == b"t" || line == b"f",
        b',' => parse_double(line).is_some(),
        b'(' => {
            let digits = line.strip_prefix(b"-").unwrap_or(line);
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
        }
        _ => true, // '+' and '-': any text
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "invalid '{}' value {:?}",
            kind as char,
            String::from_utf8_lossy(&line[..line.len().min(MAX_NUMBER_LINE + 1)])
        )))
    }
}

/// A RESP3 double: decimal or exponent notation, `inf`, `-inf`, `nan`.
pub(crate) fn parse_double(line: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(line).ok()?;
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    text.parse().ok()
}

fn too_large(what: &str, len: u64, max: u64) -> Error {
    Error::Protocol(format!("{what} of {len} exceeds the limit of {max}"))
}

fn check_total(len: usize, limits: &Limits) -> Result<(), Error> {
    if len > limits.max_reply_bytes {
        return Err(too_large(
            "reply",
            len as u64,
            limits.max_reply_bytes as u64,
        ));
    }
    Ok(())
}

/// Offset of the first `\r\n` at or after `from`.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + buf.get(i..)?.iter().position(|&b| b == b'\r')?;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => i = at + 1,
            None => return None,
        }
    }
}

/// A strict decimal i64: optional '-', then 1..=19 digits, no overflow.
pub(crate) fn parse_int(line: &[u8]) -> Result<i64, Error> {
    let bad = || {
        Error::Protocol(format!(
            "invalid integer {:?}",
            String::from_utf8_lossy(&line[..line.len().min(MAX_NUMBER_LINE + 1)])
        ))
    };
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad());
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        let d = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if neg {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or_else(bad)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        resp3: false,
        max_reply_bytes: 1024,
        max_array_len: 8,
        max_depth: 3,
    };

    fn scan_all(buf: &[u8]) -> Result<Option<usize>, Error> {
        Scanner::default().scan(buf, &LIMITS)
    }

    #[test]
    fn complete_replies() {
        assert_eq!(scan_all(b"+OK\r\n").unwrap(), Some(5));
        assert_eq!(scan_all(b"-ERR x\r\nrest").unwrap(), Some(8));
        assert_eq!(scan_all(b":-12\r\n").unwrap(), Some(6));
        assert_eq!(scan_all(b"$-1\r\n").unwrap(), Some(5));
        assert_eq!(scan_all(b"$0\r\n\r\n").unwrap(), Some(6));
        assert_eq!(scan_all(b"*0\r\n").unwrap(), Some(4));
        assert_eq!(scan_all(b"*-1\r\n").unwrap(), Some(5));
        assert_eq!(
            scan_all(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n+next").unwrap(),
            Some(19)
        );
    }

    #[test]
    fn resumes_byte_by_byte() {
        let reply = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n+a b\r\n$-1\r\n";
        let mut scanner = Scanner::default();
        for i in 0..reply.len() {
            assert_eq!(scanner.scan(&reply[..i], &LIMITS).unwrap(), None, "at {i}");
        }
        assert_eq!(scanner.scan(reply, &LIMITS).unwrap(), Some(reply.len()));
        // Reset after a complete reply: the next scan starts at 0.
        assert_eq!(scanner.scan(b"+OK\r\n", &LIMITS).unwrap(), Some(5));
    }

    #[test]
    fn limits_checked_before_bytes_arrive() {
        for (wire, what) in [
            (&b"$999999999999\r\n"[..], "bulk string of 999999999999"),
            (b"*9\r\n", "array length of 9"),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n", "nesting depth of 4"),
            (b"$1020\r\n", "reply of 1029"),
            (&[b'+'; 2000], "reply of 2000"),
        ] {
            match scan_all(wire) {
                Err(Error::Protocol(msg)) => assert!(msg.starts_with(what), "{msg}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn garbage_rejected() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"$abc\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
            b":1x\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$1\r\nab\r\n",
            b"$12345678901234567890123",
        ] {
            assert!(
                matches!(scan_all(bad), Err(Error::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn finds_crlf_past_lone_cr() {
        assert_eq!(find_crlf(b"+a\rb\r\n", 1), Some(4));
        assert_eq!(find_crlf(b"+ab\r", 1), None);
        assert_eq!(find_crlf(b"+ab", 1), None);
        assert_eq!(find_crlf(b"\r\n", 5), None);
    }

    #[test]
    fn parse_int_edges() {
        assert_eq!(parse_int(b"0").unwrap(), 0);
        assert_eq!(parse_int(b"9223372036854775807").unwrap(), i64::MAX);
        assert_eq!(parse_int(b"-9223372036854775808").unwrap(), i64::MIN);
        assert!(parse_int(b"9223372036854775808").is_err());
        assert!(parse_int(b"-").is_err());
        assert!(parse_int(b"+1").is_err());
    }
}
