//! The cluster's slot map, parsed from `CLUSTER SHARDS` (Redis 7+) or `CLUSTER SLOTS` replies.
//! No I/O: the cluster glue sends the command and hands the reply here.

use crate::slot::SLOTS;
use crate::{Error, Reply};

/// Marks a slot no master serves in [`Topology`]'s table.
pub const NO_NODE: u16 = u16::MAX;

/// Which master serves each slot: a list of master addresses (`host:port`) and a 16384-entry
/// table of indices into it.
#[derive(Clone, PartialEq, Eq)]
pub struct Topology {
    masters: Vec<String>,
    slots: Box<[u16]>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("masters", &self.masters)
            .field("covered", &self.covered())
            .finish()
    }
}

impl Topology {
    /// Every slot served by the one node at `addr` (before the real map is known: that node
    /// answers or redirects).
    pub fn single(addr: &str) -> Topology {
        Topology {
            masters: vec![addr.to_string()],
            slots: vec![0; SLOTS].into_boxed_slice(),
        }
    }

    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replica...], ...]`.
    /// `host` (the node that was asked) replaces an empty or `?` endpoint.
    pub fn from_slots_reply(reply: &Reply, host: &str) -> Result<Topology, Error> {
        let bad = |what: &str| Error::Protocol(format!("CLUSTER SLOTS reply: {what}"));
        let Reply::Array(ranges) = reply else {
            return Err(bad("not an array"));
        };
        let mut b = Builder::new();
        for range in ranges {
            let Some(items) = array(range) else {
                return Err(bad("range is not an array"));
            };
            let (Some(start), Some(end), Some(master)) = (
                items.first().and_then(int),
                items.get(1).and_then(int),
                items.get(2).and_then(array),
            ) else {
                return Err(bad("range without start, end and master"));
            };
            let (Some(endpoint), Some(port)) =
                (master.first().and_then(text), master.get(1).and_then(int))
            else {
                return Err(bad("master without host and port"));
            };
            let addr = node_addr(endpoint, port, host).ok_or_else(|| bad("bad port"))?;
            b.assign(start, end, addr).map_err(|e| bad(&e))?;
        }
        Ok(b.finish())
    }

    /// Parses a `CLUSTER SHARDS` reply: per shard `slots` (start/end pairs) and `nodes`, whose
    /// `role` `master` with `health` `online` serves them. With `tls`, the node's `tls-port`
    /// is used when present. `host` replaces an empty or `?` endpoint.
    pub fn from_shards_reply(reply: &Reply, host: &str, tls: bool) -> Result<Topology, Error> {
        let bad = |what: &str| Error::Protocol(format!("CLUSTER SHARDS reply: {what}"));
        let Some(shards) = array(reply) else {
            return Err(bad("not an array"));
        };
        let mut b = Builder::new();
        for shard in shards {
            let fields = pairs(shard).ok_or_else(|| bad("shard is not a map"))?;
            let slots = field(&fields, "slots")
                .and_then(array)
                .ok_or_else(|| bad("no slots"))?;
            let nodes = field(&fields, "nodes")
                .and_then(array)
                .ok_or_else(|| bad("no nodes"))?;
            if slots.len() % 2 != 0 {
                return Err(bad("odd slot list"));
            }
            let mut master = None;
            for node in nodes {
                let f = pairs(node).ok_or_else(|| bad("node is not a map"))?;
                let is = |k: &str, v: &str| field(&f, k).and_then(text) == Some(v);
                if !is("role", "master") || !(is("health", "online")) {
                    continue;
                }
                let port = tls
                    .then(|| field(&f, "tls-port").and_then(int))
                    .flatten()
                    .or_else(|| field(&f, "port").and_then(int))
                    .ok_or_else(|| bad("node without port"))?;
                let endpoint = field(&f, "endpoint")
                    .or_else(|| field(&f, "ip"))
                    .and_then(text)
                    .unwrap_or("");
                master = Some(node_addr(endpoint, port, host).ok_or_else(|| bad("bad port"))?);
            }
            let Some(master) = master else {
                continue; // a shard with no healthy master (failing over): its slots stay unserved
            };
            for pair in slots.chunks(2) {
                let (Some(start), Some(end)) = (int(&pair[0]), int(&pair[1])) else {
                    return Err(bad("slot bound is not an integer"));
                };
                b.assign(start, end, master.clone()).map_err(|e| bad(&e))?;
            }
        }
        Ok(b.finish())
    }

    /// The masters' addresses; [`Topology::node_of`] indexes into it.
    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    /// Index (into [`Topology::masters`]) of the master serving `slot`, if any.
    pub fn node_of(&self, slot: u16) -> Option<usize> {
        match self.slots.get(usize::from(slot)) {
            Some(&n) if n != NO_NODE => Some(usize::from(n)),
            _ => None,
        }
    }

    /// Address of the master serving `slot`, if any.
    pub fn master_of(&self, slot: u16) -> Option<&str> {
        self.node_of(slot).map(|i| self.masters[i].as_str())
    }

    /// Number of slots some master serves (16384 when the cluster is whole).
    pub fn covered(&self) -> usize {
        self.slots.iter().filter(|&&n| n != NO_NODE).count()
    }

    /// The slot table, one master index (or [`NO_NODE`]) per slot.
    pub fn slot_table(&self) -> &[u16] {
        &self.slots
    }
}

struct Builder {
    masters: Vec<String>,
    slots: Box<[u16]>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            masters: Vec::new(),
            slots: vec![NO_NODE; SLOTS].into_boxed_slice(),
        }
    }

    fn assign(&mut self, start: i64, end: i64, addr: String) -> Result<(), String> {
        if start < 0 || end < start || end >= SLOTS as i64 {
            return Err(format!("slot range {start}-{end}"));
        }
        let idx = match self.masters.iter().position(|m| *m == addr) {
            Some(i) => i,
            None if self.masters.len() < usize::from(NO_NODE) => {
                self.masters.push(addr);
                self.masters.len() - 1
            }
            None => return Err("too many masters".into()),
        };
        self.slots[start as usize..=end as usize].fill(idx as u16);
        Ok(())
    }

    fn finish(self) -> Topology {
        Topology {
            masters: self.masters,
            slots: self.slots,
        }
    }
}

fn node_addr(endpoint: &str, port: i64, host: &str) -> Option<String> {
    let port = u16::try_from(port).ok().filter(|&p| p != 0)?;
    let endpoint = match endpoint {
        "" | "?" => host,
        e => e,
    };
    Some(if endpoint.contains(':') && !endpoint.starts_with('[') {
        format!("[{endpoint}]:{port}") // a bare IPv6 address
    } else {
        format!("{endpoint}:{port}")
    })
}

fn array(r: &Reply) -> Option<&[Reply]> {
    match r {
        Reply::Array(v) => Some(v),
        _ => None,
    }
}

fn int(r: &Reply) -> Option<i64> {
    match r {
        Reply::Int(i) => Some(*i),
        _ => None,
    }
}

fn text(r: &Reply) -> Option<&str> {
    r.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
}

/// A RESP2 flat key/value array or a RESP3 map, as pairs.
fn pairs(r: &Reply) -> Option<Vec<(&Reply, &Reply)>> {
    match r {
        Reply::Map(m) => Some(m.iter().map(|(k, v)| (k, v)).collect()),
        Reply::Array(v) if v.len() % 2 == 0 => Some(v.chunks(2).map(|c| (&c[0], &c[1])).collect()),
        _ => None,
    }
}

fn field<'a>(pairs: &[(&'a Reply, &'a Reply)], name: &str) -> Option<&'a Reply> {
    pairs
        .iter()
        .find(|(k, _)| text(k) == Some(name))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(host: &str, port: i64) -> Reply {
        Reply::Array(vec![
            b(host),
            Reply::Int(port),
            b("id"),
            Reply::Array(vec![]),
        ])
    }

    #[test]
    fn parses_cluster_slots() {
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Reply::Array(vec![Reply::Int(5461), Reply::Int(10922), node("", 7001)]),
            Reply::Array(vec![Reply::Int(10923), Reply::Int(16383), node("?", 7002)]),
            Reply::Array(vec![
                Reply::Int(100),
                Reply::Int(100),
                node("10.0.0.1", 7000),
            ]),
        ]);
        let t = Topology::from_slots_reply(&reply, "seed").unwrap();
        assert_eq!(t.masters(), ["10.0.0.1:7000", "seed:7001", "seed:7002"]);
        assert_eq!(t.covered(), SLOTS);
        assert_eq!(t.master_of(0), Some("10.0.0.1:7000"));
        assert_eq!(t.master_of(5461), Some("seed:7001"));
        assert_eq!(t.master_of(16383), Some("seed:7002"));
        assert_eq!(t.node_of(100), Some(0));
        assert_eq!(t.master_of(16384), None);
    }

    #[test]
    fn partial_and_bad_slots() {
        let reply = Reply::Array(vec![Reply::Array(vec![
            Reply::Int(0),
            Reply::Int(9),
            node("h", 1),
        ])]);
        let t = Topology::from_slots_reply(&reply, "x").unwrap();
        assert_eq!(t.covered(), 10);
        assert_eq!(t.master_of(10), None);
        for bad in [
            Reply::Nil,
            Reply::Array(vec![Reply::Int(0)]),
            Reply::Array(vec![Reply::Array(vec![
                Reply::Int(5),
                Reply::Int(4),
                node("h", 1),
            ])]),
            Reply::Array(vec![Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(16384),
                node("h", 1),
            ])]),
            Reply::Array(vec![Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(1),
                node("h", 0),
            ])]),
            Reply::Array(vec![Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(3),
            ])]),
        ] {
            assert!(
                matches!(
                    Topology::from_slots_reply(&bad, "x"),
                    Err(Error::Protocol(_))
                ),
                "{bad:?}"
            );
        }
    }

    fn shard_node(
        endpoint: &str,
        port: i64,
        tls_port: Option<i64>,
        role: &str,
        health: &str,
    ) -> Reply {
        let mut v = vec![b("id"), b("abc"), b("port"), Reply::Int(port)];
        if let Some(p) = tls_port {
            v.extend([b("tls-port"), Reply::Int(p)]);
        }
        v.extend([
            b("ip"),
            b("10.9.9.9"),
            b("endpoint"),
            b(endpoint),
            b("role"),
            b(role),
            b("replication-offset"),
            Reply::Int(1),
            b("health"),
            b(health),
        ]);
        Reply::Array(v)
    }

    #[test]
    fn parses_cluster_shards() {
        let shard = |slots: &[i64], nodes: Vec<Reply>| {
            Reply::Array(vec![
                b("slots"),
                Reply::Array(slots.iter().map(|&s| Reply::Int(s)).collect()),
                b("nodes"),
                Reply::Array(nodes),
            ])
        };
        let reply = Reply::Array(vec![
            shard(
                &[0, 100, 200, 16383],
                vec![
                    shard_node("10.0.0.2", 7001, Some(8001), "replica", "online"),
                    shard_node("10.0.0.1", 7000, Some(8000), "master", "online"),
                ],
            ),
            shard(
                &[101, 199],
                vec![shard_node("?", 7002, None, "master", "online")],
            ),
            // A shard whose master failed and whose replica is not promoted yet.
            shard(
                &[],
                vec![shard_node("10.0.0.3", 7003, None, "master", "failed")],
            ),
        ]);
        let t = Topology::from_shards_reply(&reply, "seed", false).unwrap();
        assert_eq!(t.masters(), ["10.0.0.1:7000", "seed:7002"]);
        assert_eq!(t.covered(), SLOTS);
        assert_eq!(t.master_of(150), Some("seed:7002"));
        let t = Topology::from_shards_reply(&reply, "seed", true).unwrap();
        assert_eq!(t.master_of(0), Some("10.0.0.1:8000"), "tls-port with TLS");
        assert_eq!(t.master_of(150), Some("seed:7002"), "port when no tls-port");
        let odd = Reply::Array(vec![shard(&[1], vec![])]);
        assert!(Topology::from_shards_reply(&odd, "x", false).is_err());
        assert!(Topology::from_shards_reply(&Reply::Int(1), "x", false).is_err());
    }

    #[test]
    fn single_node_serves_everything() {
        let t = Topology::single("h:1");
        assert_eq!(t.covered(), SLOTS);
        assert_eq!(t.master_of(123), Some("h:1"));
        assert_eq!(node_addr("::1", 7000, "x").as_deref(), Some("[::1]:7000"));
    }
}
