//! The Redis schema: key and member encoding, and the command batches of each operation.
//! Sans-I/O: builds [`Batch`]es and parses [`Reply`]s; the caller sends them.
//!
//! See the crate doc for the schema itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use resp_client::{Batch, Int, Reply};

use crate::{Error, SessionEntry};

/// Prefix of every per-user key; the user id follows inside a `{...}` hash tag.
pub const KEY_PREFIX: &str = "connect:u:";

/// `connect:u:{<user>}`. The user must be valid ([`crate::entry::validate_user`]).
pub fn key(user: &str) -> String {
    format!("{KEY_PREFIX}{{{user}}}")
}

/// `<session as 16 lowercase hex>|<instance>|<shard>|<addr>`.
pub fn member(entry: &SessionEntry) -> String {
    format!(
        "{:016x}|{}|{}|{}",
        entry.session, entry.instance, entry.shard, entry.addr
    )
}

/// Parses a member written by [`member`]; `None` if it is not one.
pub fn parse_member(user: &str, member: &[u8]) -> Option<SessionEntry> {
    let text = std::str::from_utf8(member).ok()?;
    let mut parts = text.split('|');
    let (session, instance, shard, addr) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || session.len() != 16
        || !session
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    Some(SessionEntry {
        user: user.to_string(),
        session: u64::from_str_radix(session, 16).ok()?,
        instance: instance.to_string(),
        shard: shard
            .parse()
            .ok()
            .filter(|_| shard.bytes().all(|b| b.is_ascii_digit()))?,
        addr: addr.to_string(),
    })
}

/// Wall-clock now as unix milliseconds (scores are absolute expiry times).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A TTL in whole milliseconds, at least 1 (Redis rejects 0).
pub fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX / 4)
        .max(1)
}

/// `ZREMRANGEBYSCORE key -inf <now>`, then the upsert of [`push_upsert`]: 4 commands.
pub fn push_register(batch: &mut Batch, entry: &SessionEntry, ttl_ms: i64, now_ms: i64) {
    let key = key(&entry.user);
    batch.push(&[
        b"ZREMRANGEBYSCORE",
        key.as_bytes(),
        b"-inf",
        Int::from(now_ms).as_ref(),
    ]);
    push_upsert_key(batch, &key, entry, ttl_ms, now_ms);
}

/// `ZADD key <now+ttl> <member>`, `PEXPIRE key <ttl> NX`, `PEXPIRE key <ttl> GT`: 3 commands.
/// The key ends up expiring with its latest member, without Lua.
pub fn push_upsert(batch: &mut Batch, entry: &SessionEntry, ttl_ms: i64, now_ms: i64) {
    push_upsert_key(batch, &key(&entry.user), entry, ttl_ms, now_ms);
}

fn push_upsert_key(batch: &mut Batch, key: &str, entry: &SessionEntry, ttl_ms: i64, now_ms: i64) {
    let member = member(entry);
    let ttl = Int::from(ttl_ms);
    batch.push(&[
        b"ZADD",
        key.as_bytes(),
        Int::from(now_ms.saturating_add(ttl_ms)).as_ref(),
        member.as_bytes(),
    ]);
    batch.push(&[b"PEXPIRE", key.as_bytes(), ttl.as_ref(), b"NX"]);
    batch.push(&[b"PEXPIRE", key.as_bytes(), ttl.as_ref(), b"GT"]);
}

/// The arguments of `ZRANGE key (<now> +inf BYSCORE`: the members not yet expired.
pub fn lookup_args(user: &str, now_ms: i64) -> [Vec<u8>; 5] {
    [
        b"ZRANGE".to_vec(),
        key(user).into_bytes(),
        format!("({now_ms}").into_bytes(),
        b"+inf".to_vec(),
        b"BYSCORE".to_vec(),
    ]
}

/// Turns a `ZRANGE` reply into entries, skipping (and logging) members that do not parse.
pub fn parse_lookup(user: &str, reply: Reply) -> Result<Vec<SessionEntry>, Error> {
    let members = match reply {
        Reply::Array(members) => members,
        Reply::Error(e) => return Err(Error::Command(String::from_utf8_lossy(&e).into_owned())),
        other => return Err(Error::UnexpectedReply(format!("ZRANGE returned {other:?}"))),
    };
    let mut entries = Vec::with_capacity(members.len());
    for m in members {
        match m.as_bytes().and_then(|b| parse_member(user, b)) {
            Some(entry) => entries.push(entry),
            None => tracing::warn!(user, member = ?m, "skipping corrupt session registry member"),
        }
    }
    Ok(entries)
}

/// Checks a batch of write replies: any Redis error reply fails the operation.
pub fn check_writes(replies: Vec<Reply>) -> Result<(), Error> {
    for r in replies {
        match r {
            Reply::Error(e) => {
                return Err(Error::Command(String::from_utf8_lossy(&e).into_owned()))
            }
            Reply::Int(_) => {}
            other => return Err(Error::UnexpectedReply(format!("write returned {other:?}"))),
        }
    }
    Ok(())
}

/// `ZREM`'s reply: whether the member was there.
pub fn parse_unregister(reply: Reply) -> Result<bool, Error> {
    match reply {
        Reply::Int(n) => Ok(n > 0),
        Reply::Error(e) => Err(Error::Command(String::from_utf8_lossy(&e).into_owned())),
        other => Err(Error::UnexpectedReply(format!("ZREM returned {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry() -> SessionEntry {
        SessionEntry {
            user: "alice".into(),
            session: 0xab,
            instance: "gw-1".into(),
            shard: 3,
            addr: "10.0.0.7:7100".into(),
        }
    }

    #[test]
    fn key_and_member_encoding() {
        assert_eq!(key("alice"), "connect:u:{alice}");
        assert_eq!(member(&entry()), "00000000000000ab|gw-1|3|10.0.0.7:7100");
        assert_eq!(
            parse_member("alice", member(&entry()).as_bytes()),
            Some(entry())
        );
        let max = SessionEntry {
            session: u64::MAX,
            shard: u16::MAX,
            ..entry()
        };
        assert_eq!(parse_member("alice", member(&max).as_bytes()), Some(max));
    }

    #[test]
    fn corrupt_members_do_not_parse() {
        for bad in [
            &b""[..],
            b"garbage",
            b"00000000000000ab|gw|3",
            b"00000000000000AB|gw|3|a:1",
            b"0000000000000ab|gw|3|a:1",
            b"00000000000000ab|gw|x|a:1",
            b"00000000000000ab|gw|+3|a:1",
            b"00000000000000ab|gw|70000|a:1",
            b"00000000000000ab|gw|3|a:1|extra",
            b"00000000000000ab|gw|3|\xff",
        ] {
            assert_eq!(
                parse_member("u", bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lookup_skips_corrupt_members() {
        let good = Reply::Bulk(Bytes::from(member(&entry())));
        let reply = Reply::Array(vec![
            good,
            Reply::Bulk(Bytes::from_static(b"junk")),
            Reply::Int(1),
        ]);
        assert_eq!(parse_lookup("alice", reply).unwrap(), vec![entry()]);
        assert!(matches!(
            parse_lookup("alice", Reply::Error(Bytes::from_static(b"WRONGTYPE x"))),
            Err(Error::Command(_))
        ));
        assert!(matches!(
            parse_lookup("alice", Reply::Nil),
            Err(Error::UnexpectedReply(_))
        ));
    }

    #[test]
    fn batches_have_the_documented_commands() {
        let mut b = Batch::new();
        push_register(&mut b, &entry(), 30_000, 1_000);
        assert_eq!(b.len(), 4);
        push_upsert(&mut b, &entry(), 30_000, 1_000);
        assert_eq!(b.len(), 7);
        let args = lookup_args("alice", 1_000);
        assert_eq!(args[1], b"connect:u:{alice}");
        assert_eq!(args[2], b"(1000");
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(30)), 30_000);
    }

    #[test]
    fn reply_checks() {
        assert!(check_writes(vec![Reply::Int(0), Reply::Int(1)]).is_ok());
        assert!(matches!(
            check_writes(vec![Reply::Int(0), Reply::Error(Bytes::from_static(b"ERR syntax"))]),
            Err(Error::Command(m)) if m == "ERR syntax"
        ));
        assert_eq!(parse_unregister(Reply::Int(1)), Ok(true));
        assert_eq!(parse_unregister(Reply::Int(0)), Ok(false));
    }
}
