//! The Redis schema: key and member encoding, and the command batches of each operation.
//! Sans-I/O: builds [`Batch`]es and parses [`Reply`]s; the caller sends them.
//!
//! See the crate doc for the schema itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use resp_client::{Batch, Int, Reply};

use crate::{Error, GatewayRecord, SessionEntry};

/// Prefix of every per-user key; the user id follows inside a `{...}` hash tag.
pub const KEY_PREFIX: &str = "connect:u:";
/// The sorted set of gateway liveness records: member [`gateway_member`], score = expiry ms.
pub const GATEWAYS_KEY: &str = "connect:gateways";

/// `connect:u:{<user>}`. The user must be valid ([`crate::entry::validate_user`]).
pub fn key(user: &str) -> String {
    format!("{KEY_PREFIX}{{{user}}}")
}

/// `<session as 16 lowercase hex>|<instance>|<epoch as 16 lowercase hex>|<shard>|<addr>`.
pub fn member(entry: &SessionEntry) -> String {
    format!(
        "{:016x}|{}|{:016x}|{}|{}",
        entry.session, entry.instance, entry.epoch, entry.shard, entry.addr
    )
}

/// Parses a member written by [`member`]; `None` if it is not one.
pub fn parse_member(user: &str, member: &[u8]) -> Option<SessionEntry> {
    let text = std::str::from_utf8(member).ok()?;
    let mut parts = text.split('|');
    let (session, instance, epoch, shard, addr) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() {
        return None;
    }
    Some(SessionEntry {
        user: user.to_string(),
        session: parse_hex16(session)?,
        instance: instance.to_string(),
        epoch: parse_hex16(epoch)?,
        shard: shard
            .parse()
            .ok()
            .filter(|_| shard.bytes().all(|b| b.is_ascii_digit()))?,
        addr: addr.to_string(),
    })
}

/// Exactly 16 lowercase hex digits, as [`member`] writes ids and epochs.
fn parse_hex16(s: &str) -> Option<u64> {
    let ok = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u64::from_str_radix(s, 16).ok()).flatten()
}

/// `<instance>|<epoch as 16 lowercase hex>|<addr>`: a member of [`GATEWAYS_KEY`].
pub fn gateway_member(gw: &GatewayRecord) -> String {
    format!("{}|{:016x}|{}", gw.instance, gw.epoch, gw.addr)
}

/// Parses a member written by [`gateway_member`]; `None` if it is not one.
pub fn parse_gateway_member(member: &[u8]) -> Option<GatewayRecord> {
    let text = std::str::from_utf8(member).ok()?;
    let mut parts = text.split('|');
    let (instance, epoch, addr) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || instance.is_empty() {
        return None;
    }
    Some(GatewayRecord {
        instance: instance.to_string(),
        epoch: parse_hex16(epoch)?,
        addr: addr.to_string(),
    })
}

/// The liveness heartbeat, 4 commands: `ZREMRANGEBYSCORE connect:gateways -inf <now>` (drops
/// expired records, this gateway's own included), `ZADD connect:gateways <now+ttl> <member>`
/// (its reply is 1 when the record was missing: first beat, Redis lost it, or it expired
/// while this gateway stalled), and `PEXPIRE NX` + `GT` so the set itself expires once every
/// gateway is gone.
pub fn push_heartbeat(batch: &mut Batch, gw: &GatewayRecord, ttl_ms: i64, now_ms: i64) {
    let key = GATEWAYS_KEY.as_bytes();
    let ttl = Int::from(ttl_ms);
    batch.push(&[
        b"ZREMRANGEBYSCORE",
        key,
        b"-inf",
        Int::from(now_ms).as_ref(),
    ]);
    batch.push(&[
        b"ZADD",
        key,
        Int::from(now_ms.saturating_add(ttl_ms)).as_ref(),
        gateway_member(gw).as_bytes(),
    ]);
    batch.push(&[b"PEXPIRE", key, ttl.as_ref(), b"NX"]);
    batch.push(&[b"PEXPIRE", key, ttl.as_ref(), b"GT"]);
}

/// The heartbeat's replies: whether the record was (re-)created.
pub fn parse_heartbeat(replies: Vec<Reply>) -> Result<bool, Error> {
    let created = matches!(replies.get(1), Some(Reply::Int(1)));
    check_writes(replies)?;
    Ok(created)
}

/// The arguments of `ZRANGE connect:gateways (<now> +inf BYSCORE`: the live gateways.
pub fn live_gateways_args(now_ms: i64) -> [Vec<u8>; 5] {
    [
        b"ZRANGE".to_vec(),
        GATEWAYS_KEY.as_bytes().to_vec(),
        format!("({now_ms}").into_bytes(),
        b"+inf".to_vec(),
        b"BYSCORE".to_vec(),
    ]
}

/// Turns the live-gateways `ZRANGE` reply into records, skipping members that do not parse.
pub fn parse_live_gateways(_: &str, reply: Reply) -> Result<Vec<GatewayRecord>, Error> {
    let members = match reply {
        Reply::Array(members) => members,
        Reply::Error(e) => return Err(Error::Command(String::from_utf8_lossy(&e).into_owned())),
        other => return Err(Error::UnexpectedReply(format!("ZRANGE returned {other:?}"))),
    };
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        match m.as_bytes().and_then(|b| parse_gateway_member(b)) {
            Some(gw) => out.push(gw),
            None => tracing::warn!(member = ?m, "skipping corrupt gateway liveness member"),
        }
    }
    Ok(out)
}

/// Sums `ZREM` replies: how many members were removed.
pub fn count_removed(replies: Vec<Reply>) -> Result<u64, Error> {
    let mut n = 0;
    for r in replies {
        match r {
            Reply::Int(k) => n += k.max(0) as u64,
            Reply::Error(e) => {
                return Err(Error::Command(String::from_utf8_lossy(&e).into_owned()))
            }
            other => return Err(Error::UnexpectedReply(format!("ZREM returned {other:?}"))),
        }
    }
    Ok(n)
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
            epoch: 0x18c,
            shard: 3,
            addr: "10.0.0.7:7100".into(),
        }
    }

    #[test]
    fn key_and_member_encoding() {
        assert_eq!(key("alice"), "connect:u:{alice}");
        assert_eq!(
            member(&entry()),
            "00000000000000ab|gw-1|000000000000018c|3|10.0.0.7:7100"
        );
        assert_eq!(
            parse_member("alice", member(&entry()).as_bytes()),
            Some(entry())
        );
        let max = SessionEntry {
            session: u64::MAX,
            epoch: u64::MAX,
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
            b"00000000000000ab|gw|3|a:1",
            b"00000000000000ab|gw|0000000000000001|3",
            b"00000000000000AB|gw|0000000000000001|3|a:1",
            b"0000000000000ab|gw|0000000000000001|3|a:1",
            b"00000000000000ab|gw|000000000000001|3|a:1",
            b"00000000000000ab|gw|000000000000000x|3|a:1",
            b"00000000000000ab|gw|0000000000000001|x|a:1",
            b"00000000000000ab|gw|0000000000000001|+3|a:1",
            b"00000000000000ab|gw|0000000000000001|70000|a:1",
            b"00000000000000ab|gw|0000000000000001|3|a:1|extra",
            b"00000000000000ab|gw|0000000000000001|3|\xff",
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
    fn gateway_member_encoding() {
        let gw = GatewayRecord {
            instance: "gw-1".into(),
            epoch: 0x18c,
            addr: "10.0.0.7:7200".into(),
        };
        assert_eq!(gateway_member(&gw), "gw-1|000000000000018c|10.0.0.7:7200");
        assert_eq!(
            parse_gateway_member(gateway_member(&gw).as_bytes()),
            Some(gw)
        );
        for bad in [
            &b""[..],
            b"gw-1|18c|a:1",
            b"|000000000000018c|a:1",
            b"gw-1|000000000000018c",
            b"gw-1|000000000000018c|a:1|x",
            b"gw-1|\xff00000000000018c|a:1",
        ] {
            assert_eq!(parse_gateway_member(bad), None, "{bad:?}");
        }
        let mut b = Batch::new();
        push_heartbeat(&mut b, &gateway(), 2_000, 1_000);
        assert_eq!(b.len(), 4);
        assert_eq!(
            parse_heartbeat(vec![
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(0)
            ]),
            Ok(true)
        );
        assert_eq!(
            parse_heartbeat(vec![
                Reply::Int(2),
                Reply::Int(0),
                Reply::Int(0),
                Reply::Int(1)
            ]),
            Ok(false)
        );
        assert!(parse_heartbeat(vec![
            Reply::Int(1),
            Reply::Error(Bytes::from_static(b"ERR x"))
        ])
        .is_err());
        assert_eq!(
            count_removed(vec![Reply::Int(1), Reply::Int(0), Reply::Int(1)]),
            Ok(2)
        );
    }

    fn gateway() -> GatewayRecord {
        GatewayRecord {
            instance: "gw".into(),
            epoch: 1,
            addr: "h:1".into(),
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
