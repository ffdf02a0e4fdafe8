//! Which key a command is routed by in cluster mode, from its arguments or from its encoded
//! bytes (to split a pre-encoded [`crate::Batch`] per node). No I/O.
//!
//! The rule: the first key decides. Most commands have it as the first argument; the scripting
//! commands (`EVAL`, `EVALSHA`, `FCALL` and their `_RO` forms) after `numkeys`; `XREAD` and
//! `XREADGROUP` after `STREAMS`. Commands without keys (`PING`, `INFO`, `CLUSTER ...`, ...)
//! go to any node. Multi-key commands must keep their keys in one slot (use a `{hash tag}`);
//! Redis refuses them with `CROSSSLOT` otherwise.

/// The key that decides where `args` goes, or `None` for a command without keys.
pub fn command_key<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let name = args.first()?;
    if is_keyless(name) {
        return None;
    }
    if eq(name, b"EVAL")
        || eq(name, b"EVALSHA")
        || eq(name, b"EVAL_RO")
        || eq(name, b"EVALSHA_RO")
        || eq(name, b"FCALL")
        || eq(name, b"FCALL_RO")
    {
        let numkeys = std::str::from_utf8(args.get(2)?)
            .ok()?
            .parse::<u64>()
            .ok()?;
        return if numkeys > 0 {
            args.get(3).copied()
        } else {
            None
        };
    }
    if eq(name, b"XREAD") || eq(name, b"XREADGROUP") {
        let at = args.iter().position(|a| eq(a, b"STREAMS"))?;
        return args.get(at + 1).copied();
    }
    args.get(1).copied()
}

/// Commands that name no key (or whose first argument is not one): routed to any node.
fn is_keyless(name: &[u8]) -> bool {
    const KEYLESS: &[&[u8]] = &[
        b"PING",
        b"ECHO",
        b"INFO",
        b"CLUSTER",
        b"CONFIG",
        b"CLIENT",
        b"COMMAND",
        b"DBSIZE",
        b"FLUSHALL",
        b"FLUSHDB",
        b"TIME",
        b"SCRIPT",
        b"FUNCTION",
        b"HELLO",
        b"AUTH",
        b"SELECT",
        b"WAIT",
        b"LASTSAVE",
        b"MEMORY",
        b"SLOWLOG",
        b"LATENCY",
        b"ACL",
        b"DEBUG",
        b"READONLY",
        b"READWRITE",
        b"ASKING",
        b"RANDOMKEY",
        b"SCAN",
        b"KEYS",
        b"PUBLISH",
        b"QUIT",
    ];
    KEYLESS.iter().any(|k| eq(name, k))
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Walks a buffer of commands encoded by [`crate::codec::encode_command`], yielding each one's
/// length in bytes and routing key. Yields `None` as the key for keyless commands, and stops
/// (returning `Err`) at bytes that are not such an encoding.
pub(crate) struct EncodedCommands<'a> {
    buf: &'a [u8],
    pos: usize,
    args: Vec<&'a [u8]>,
}

impl<'a> EncodedCommands<'a> {
    pub fn new(buf: &'a [u8]) -> EncodedCommands<'a> {
        EncodedCommands {
            buf,
            pos: 0,
            args: Vec::new(),
        }
    }

    /// The next command as `(start, end, key)`; `Ok(None)` at the end of the buffer.
    #[allow(clippy::type_complexity)]
    pub fn next_command(&mut self) -> Result<Option<(usize, usize, Option<&'a [u8]>)>, ()> {
        let start = self.pos;
        if start == self.buf.len() {
            return Ok(None);
        }
        let count = self.header(b'*')?;
        self.args.clear();
        for _ in 0..count {
            let len = self.header(b'$')?;
            let end = self.pos.checked_add(len).ok_or(())?;
            let arg = self.buf.get(self.pos..end).ok_or(())?;
            if self.buf.get(end..end + 2) != Some(b"\r\n") {
                return Err(());
            }
            self.args.push(arg);
            self.pos = end + 2;
        }
        Ok(Some((start, self.pos, command_key(&self.args))))
    }

    /// Reads `<kind><decimal>\r\n`.
    fn header(&mut self, kind: u8) -> Result<usize, ()> {
        if self.buf.get(self.pos) != Some(&kind) {
            return Err(());
        }
        let rest = &self.buf[self.pos + 1..];
        let digits = rest.iter().position(|&b| b == b'\r').ok_or(())?;
        if digits == 0 || digits > 19 || rest.get(digits + 1) != Some(&b'\n') {
            return Err(());
        }
        let n = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(())?;
        self.pos += 1 + digits + 2;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_command;
    use bytes::BytesMut;

    #[test]
    fn keys_of_commands() {
        let k = |args: &[&[u8]]| command_key(args).map(|k| k.to_vec());
        assert_eq!(k(&[b"GET", b"a"]), Some(b"a".to_vec()));
        assert_eq!(k(&[b"set", b"a", b"v", b"EX", b"60"]), Some(b"a".to_vec()));
        assert_eq!(k(&[b"ZADD", b"z", b"1", b"m"]), Some(b"z".to_vec()));
        assert_eq!(k(&[b"PING"]), None);
        assert_eq!(k(&[b"cluster", b"slots"]), None);
        assert_eq!(k(&[b"EVAL", b"return 1", b"0"]), None);
        assert_eq!(
            k(&[b"EVAL", b"s", b"2", b"k1", b"k2"]),
            Some(b"k1".to_vec())
        );
        assert_eq!(k(&[b"FCALL", b"f", b"x"]), None, "bad numkeys");
        assert_eq!(
            k(&[b"XREAD", b"COUNT", b"2", b"STREAMS", b"s1", b"0"]),
            Some(b"s1".to_vec())
        );
        assert_eq!(
            k(&[b"DEL"]),
            None,
            "no argument: Redis will answer the error"
        );
        assert_eq!(k(&[]), None);
    }

    #[test]
    fn walks_encoded_commands() {
        let mut buf = BytesMut::new();
        encode_command(&mut buf, &[b"SET", b"{u}a", b"v"]);
        let first = buf.len();
        encode_command(&mut buf, &[b"PING"]);
        let second = buf.len();
        encode_command(&mut buf, &[b"ZRANGE", b"k", b"0", b"-1"]);
        let mut it = EncodedCommands::new(&buf);
        assert_eq!(it.next_command(), Ok(Some((0, first, Some(&b"{u}a"[..])))));
        assert_eq!(it.next_command(), Ok(Some((first, second, None))));
        assert_eq!(
            it.next_command(),
            Ok(Some((second, buf.len(), Some(&b"k"[..]))))
        );
        assert_eq!(it.next_command(), Ok(None));
        for bad in [
            &b"*1\r\n$3\r\nGE"[..],
            b"*x\r\n",
            b"+OK\r\n",
            b"*1\r\n$1\r\nab\r\n",
        ] {
            assert!(EncodedCommands::new(bad).next_command().is_err(), "{bad:?}");
        }
    }
}
