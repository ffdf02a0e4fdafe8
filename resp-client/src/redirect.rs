//! Cluster error replies that mean "not executed here, try again": `MOVED`, `ASK`, and the
//! transient ones. No I/O.

/// What an error reply asks a cluster client to do. Every case means Redis did not execute
/// the command, so resending it is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED <slot> <addr>`: the slot lives at `addr` now; update the slot map and resend.
    Moved {
        /// The slot of the command's key.
        slot: u16,
        /// `host:port` of the new owner; an empty host means the replying node's host.
        addr: String,
    },
    /// `ASK <slot> <addr>`: the slot is being migrated and this key already moved; send
    /// `ASKING` and the command to `addr` once, leave the slot map alone.
    Ask {
        /// The slot of the command's key.
        slot: u16,
        /// `host:port` of the importing node; an empty host means the replying node's host.
        addr: String,
    },
    /// `TRYAGAIN` (multi-key command during a migration), `CLUSTERDOWN` (slot not served,
    /// cluster failing), `MASTERDOWN`, `READONLY` (the node became a replica after a
    /// failover), `LOADING`: refresh the slot map, wait a little and resend.
    Retry,
}

/// Classifies the message of an error reply; `None` for an ordinary error (`ERR ...`,
/// `WRONGTYPE ...`), which is the command's answer.
pub fn parse_redirect(err: &[u8]) -> Option<Redirect> {
    let word_end = err.iter().position(|&b| b == b' ').unwrap_or(err.len());
    let (word, rest) = (
        &err[..word_end],
        err.get(word_end + 1..).unwrap_or_default(),
    );
    match word {
        b"MOVED" | b"ASK" => {
            let text = std::str::from_utf8(rest).ok()?;
            let (slot, addr) = text.trim_end().split_once(' ')?;
            let slot: u16 = slot
                .parse()
                .ok()
                .filter(|&s| usize::from(s) < crate::slot::SLOTS)?;
            if !addr.contains(':') || addr.contains(' ') {
                return None;
            }
            let addr = addr.to_string();
            Some(if word == b"MOVED" {
                Redirect::Moved { slot, addr }
            } else {
                Redirect::Ask { slot, addr }
            })
        }
        b"TRYAGAIN" | b"CLUSTERDOWN" | b"MASTERDOWN" | b"READONLY" | b"LOADING" => {
            Some(Redirect::Retry)
        }
        _ => None,
    }
}

/// `addr` from a redirect with an empty host (`:6380`, sent by nodes that do not know their
/// own endpoint) completed with `host` (the node that sent the redirect); else `addr`.
pub fn complete_addr(addr: &str, host: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("{host}:{port}"),
        None => addr.to_string(),
    }
}

/// The host part of `host:port` (IPv6 hosts keep their brackets).
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redirects() {
        assert_eq!(
            parse_redirect(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            parse_redirect(b"ASK 0 [::1]:7000"),
            Some(Redirect::Ask {
                slot: 0,
                addr: "[::1]:7000".into()
            })
        );
        assert_eq!(
            parse_redirect(b"MOVED 12 :7001"),
            Some(Redirect::Moved {
                slot: 12,
                addr: ":7001".into()
            })
        );
        for retry in [
            &b"TRYAGAIN Multiple keys request during rehashing of slot"[..],
            b"CLUSTERDOWN The cluster is down",
            b"CLUSTERDOWN Hash slot not served",
            b"READONLY You can't write against a read only replica.",
            b"LOADING Redis is loading the dataset in memory",
            b"MASTERDOWN Link with MASTER is down",
        ] {
            assert_eq!(parse_redirect(retry), Some(Redirect::Retry));
        }
        for plain in [
            &b"ERR unknown command"[..],
            b"WRONGTYPE Operation against a key",
            b"MOVED",
            b"MOVED 16384 h:1",
            b"MOVED x h:1",
            b"MOVED 1 nohostport",
            b"ASK 1",
            b"",
            b"MOVEDX 1 h:1",
        ] {
            assert_eq!(parse_redirect(plain), None, "{plain:?}");
        }
    }

    #[test]
    fn completes_empty_hosts() {
        assert_eq!(complete_addr(":7001", "10.0.0.1"), "10.0.0.1:7001");
        assert_eq!(complete_addr("h:7001", "10.0.0.1"), "h:7001");
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6379"), "[::1]");
    }
}
