//! [`RedisCluster`]: a throwaway 6-node Redis Cluster (3 masters, 3 replicas) on loopback, for
//! cluster-mode tests: routing, slot migration (`MOVED`/`ASK`), master failover.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_ports, log_tail, ping, redis_binary, redis_bulk, redis_cmd, temp_dir};

/// Environment variable naming the `redis-cli` binary (default: `redis-cli`).
pub const ENV_REDIS_CLI: &str = "CONNECT_REDIS_CLI";
/// Default `cluster-node-timeout` of [`RedisCluster::start`]: long enough that a loaded 2-core
/// CI machine does not see spurious failovers, short enough for a failover test in seconds.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long [`RedisCluster::start`] waits for the cluster to form and agree.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(40);
/// Number of nodes: 3 masters and 3 replicas.
pub const NODES: usize = 6;

struct Node {
    port: u16,
    bus_port: u16,
    /// TLS client port (TLS clusters only).
    tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// One node as a live node's `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id (40 hex characters).
    pub id: String,
    /// `"127.0.0.1:<port>"`.
    pub addr: String,
    /// True for a master.
    pub master: bool,
    /// True when flagged `fail` (or `fail?`).
    pub failing: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Slot ranges served (inclusive), masters only; migration markers are left out.
    pub slots: Vec<(u16, u16)>,
}

impl NodeInfo {
    /// True if this node serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Parses the text of `CLUSTER NODES`.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let addr = f[1]
            .split(['@', ','])
            .next()
            .unwrap_or_default()
            .to_string();
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue;
            }
            let range = match s.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => s.parse().ok().map(|a| (a, a)),
            };
            slots.extend(range);
        }
        out.push(NodeInfo {
            id: f[0].to_string(),
            addr,
            master: flags.contains(&"master"),
            failing: flags.contains(&"fail") || flags.contains(&"fail?"),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            slots,
        });
    }
    out
}

/// A 6-node Redis Cluster on `127.0.0.1` (3 masters with one replica each), every node on free
/// ports with its own directory and no persistence. Nodes are killed on drop.
///
/// Node addresses stay fixed for the cluster's life; which of them are masters changes with
/// failovers, so ask [`RedisCluster::masters`].
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// The throwaway CA and node certificate of a TLS cluster.
    certs: Option<crate::tls::CertFiles>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create ... --cluster-replicas 1`
    /// and waits (at most [`FORM_TIMEOUT`]) until every node reports `cluster_state:ok`, all
    /// 16384 slots covered by 3 masters, and every replica's link to its master up.
    ///
    /// Panics with the reason (binary missing, a node not starting, no agreement in time).
    pub fn start() -> RedisCluster {
        RedisCluster::start_with_node_timeout(DEFAULT_NODE_TIMEOUT)
    }

    /// [`RedisCluster::start`] with another `cluster-node-timeout` (how long a silent node
    /// takes to be declared failed; a failover completes about 1-2 s after that).
    pub fn start_with_node_timeout(node_timeout: Duration) -> RedisCluster {
        RedisCluster::start_inner(node_timeout, false)
    }

    /// [`RedisCluster::start`] with TLS: every node also listens on a TLS port (certificate
    /// for `127.0.0.1`/`localhost` from a throwaway CA, [`RedisCluster::ca_file`]), and the
    /// cluster bus and replication run over TLS (`tls-cluster`, `tls-replication`), so TLS
    /// clients are given TLS ports in `CLUSTER SHARDS`/`SLOTS` and redirects. The plain ports
    /// stay open for test inspection ([`RedisCluster::addrs`], [`redis_cmd`]).
    pub fn start_tls() -> RedisCluster {
        RedisCluster::start_inner(DEFAULT_NODE_TIMEOUT, true)
    }

    fn start_inner(node_timeout: Duration, tls: bool) -> RedisCluster {
        let mut last_err = String::new();
        for _ in 0..3 {
            match RedisCluster::try_start(node_timeout, tls) {
                Ok(c) => return c,
                Err(e) => last_err = e,
            }
        }
        panic!("testkit: could not start a Redis Cluster: {last_err}");
    }

    fn try_start(node_timeout: Duration, tls: bool) -> Result<RedisCluster, String> {
        let dir = temp_dir("cluster");
        let ports = free_ports(NODES * 3);
        let mut cluster = RedisCluster {
            dir: dir.clone(),
            nodes: (0..NODES)
                .map(|i| Node {
                    port: ports[i],
                    bus_port: ports[NODES + i],
                    tls_port: tls.then(|| ports[2 * NODES + i]),
                    dir: dir.join(format!("node{i}")),
                    child: None,
                })
                .collect(),
            certs: tls.then(|| crate::tls::make_certs(&dir)),
        };
        for i in 0..NODES {
            cluster.spawn(i, node_timeout)?;
        }
        let deadline = Instant::now() + crate::START_TIMEOUT;
        for node in &cluster.nodes {
            while !ping(&node.addr(), None) {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "node {} did not answer PING: {}",
                        node.addr(),
                        log_tail(&node.dir.join("redis.log"))
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let cli = std::env::var(ENV_REDIS_CLI).unwrap_or_else(|_| "redis-cli".into());
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(Node::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{cli}`: {e} (Debian's redis-tools)"))?;
        if !out.status.success() {
            return Err(format!(
                "`{cli} --cluster create` failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_stable(FORM_TIMEOUT)?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, node_timeout: Duration) -> Result<(), String> {
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir)
            .map_err(|e| format!("create {}: {e}", node.dir.display()))?;
        let mut cmd = Command::new(redis_binary());
        if let (Some(port), Some(certs)) = (node.tls_port, &self.certs) {
            cmd.arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(&certs.cert)
                .arg("--tls-key-file")
                .arg(&certs.key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca)
                .args(["--tls-auth-clients", "no"])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
        let child = cmd
            .arg("--port")
            .arg(node.port.to_string())
            .arg("--cluster-port")
            .arg(node.bus_port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes"])
            // Replicas sync at once instead of waiting 5 s for company.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(node_timeout.as_millis().to_string())
            .arg("--dir")
            .arg(&node.dir)
            .arg("--logfile")
            .arg(node.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Every node's address (`127.0.0.1:<port>`), killed ones included.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// The addresses of the nodes still running.
    pub fn live_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(Node::addr)
            .collect()
    }

    /// `redis-cluster://<node1>,<node2>,...` naming every node as a seed.
    pub fn seed_url(&self) -> String {
        format!("redis-cluster://{}", self.addrs().join(","))
    }

    /// `rediss-cluster://127.0.0.1:<tls port>,...?ca=<ca file>` of a TLS cluster.
    pub fn tls_seed_url(&self) -> Option<String> {
        let certs = self.certs.as_ref()?;
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.tls_port.map(|p| format!("127.0.0.1:{p}")))
            .collect();
        Some(format!(
            "rediss-cluster://{}?ca={}",
            seeds.join(","),
            certs.ca.display()
        ))
    }

    /// The CA file of a TLS cluster.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.certs.as_ref().map(|c| c.ca.as_path())
    }

    /// The TLS port of the node whose plain address is `addr` (TLS clusters).
    pub fn tls_port_of(&self, addr: &str) -> Option<u16> {
        self.nodes.iter().find(|n| n.addr() == addr)?.tls_port
    }

    /// The cluster as a live node sees it (`CLUSTER NODES`).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let addr = self.live_addrs().into_iter().next().expect("a live node");
        parse_cluster_nodes(&redis_bulk(&addr, &["CLUSTER", "NODES"]))
    }

    /// The masters serving slots, as a live node sees them.
    pub fn masters(&self) -> Vec<NodeInfo> {
        self.nodes()
            .into_iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .collect()
    }

    /// The address of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> String {
        self.masters()
            .into_iter()
            .find(|n| n.serves(slot))
            .map(|n| n.addr)
            .unwrap_or_else(|| panic!("testkit: no master serves slot {slot}"))
    }

    /// The id (`CLUSTER MYID`) of the node at `addr`.
    pub fn node_id(&self, addr: &str) -> String {
        redis_bulk(addr, &["CLUSTER", "MYID"])
    }

    /// Kills the node at `addr` (SIGKILL), as a crash would.
    pub fn kill(&mut self, addr: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("testkit: no cluster node {addr}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the cluster has recovered from the death of the master at `dead`: every live
    /// node reports `cluster_state:ok` and names a live master for every slot. Returns the new
    /// masters' addresses. Panics after `timeout`.
    pub fn wait_failover(&self, dead: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.check_recovered(dead) {
                Ok(masters) => return masters,
                Err(e) if Instant::now() >= deadline => {
                    panic!("testkit: no failover of {dead} within {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn check_recovered(&self, dead: &str) -> Result<Vec<String>, String> {
        let mut masters = Vec::new();
        for addr in self.live_addrs() {
            let info = redis_bulk(&addr, &["CLUSTER", "INFO"]);
            if !info.contains("cluster_state:ok") {
                return Err(format!("{addr}: cluster_state not ok"));
            }
            let nodes = parse_cluster_nodes(&redis_bulk(&addr, &["CLUSTER", "NODES"]));
            let live: Vec<&NodeInfo> = nodes
                .iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .collect();
            if live.iter().any(|n| n.addr == dead || n.failing) {
                return Err(format!("{addr} still routes slots to {dead}"));
            }
            let covered: u32 = live
                .iter()
                .flat_map(|n| &n.slots)
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum();
            if covered != 16384 {
                return Err(format!("{addr} sees {covered} slots covered"));
            }
            masters = live.iter().map(|n| n.addr.clone()).collect();
        }
        Ok(masters)
    }

    /// Waits until all nodes agree on 3 masters covering every slot and every replica is
    /// linked to its master.
    fn wait_stable(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let err = match self.check_stable() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("not stable within {timeout:?}: {err}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_stable(&self) -> Result<(), String> {
        let mut view: Option<Vec<MasterSlots>> = None;
        for addr in self.live_addrs() {
            let info = redis_bulk(&addr, &["CLUSTER", "INFO"]);
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                return Err(format!("{addr}: cluster not ok"));
            }
            let nodes = parse_cluster_nodes(&redis_bulk(&addr, &["CLUSTER", "NODES"]));
            let mut masters: Vec<MasterSlots> = nodes
                .iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .map(|n| (n.addr.clone(), n.slots.clone()))
                .collect();
            masters.sort();
            let replicas = nodes.iter().filter(|n| n.master_id.is_some()).count();
            if masters.len() != 3 || replicas != 3 || nodes.iter().any(|n| n.failing) {
                return Err(format!("{addr} sees {} masters", masters.len()));
            }
            match &view {
                Some(v) if *v != masters => return Err(format!("{addr} disagrees")),
                _ => view = Some(masters.clone()),
            }
            let repl = redis_bulk(&addr, &["INFO", "replication"]);
            if repl.contains("role:slave")
                && (!repl.contains("master_link_status:up")
                    || !repl.contains("master_sync_in_progress:0"))
            {
                return Err(format!("{addr}: replica not synced"));
            }
            // The master's side: a replica may say "up" while the master still prepares
            // its full sync (state=wait_bgsave); only state=online means it is streaming.
            if repl.contains("role:master") {
                let online = repl
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count();
                let has = masters.iter().any(|(a, _)| *a == addr);
                if has && online != 1 {
                    return Err(format!("{addr}: replica not online"));
                }
            }
        }
        Ok(())
    }

    /// Crashes the master at `addr` (SIGKILL) at a moment when its replica has every write it
    /// acknowledged: client writes are paused there (`CLIENT PAUSE ... WRITE`: they wait, and
    /// die with the node), the replica's offset is awaited, then the node is killed.
    ///
    /// Redis replication is asynchronous: a plain SIGKILL may lose writes acknowledged in the
    /// last moments, by Redis' design. Tests that check "no acknowledged write is lost" across
    /// a failover need this crash; tests of the client alone can use [`RedisCluster::kill`].
    pub fn crash_master_in_sync(&mut self, addr: &str) {
        let id = self.node_id(addr);
        let replica = self
            .nodes()
            .into_iter()
            .find(|n| n.master_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("testkit: {addr} has no replica"))
            .addr;
        assert_eq!(
            redis_cmd(addr, &["CLIENT", "PAUSE", "10000", "WRITE"]),
            "+OK\r\n",
            "CLIENT PAUSE on {addr}"
        );
        let offset = |a: &str, field: &str| -> Option<u64> {
            redis_bulk(a, &["INFO", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let master = offset(addr, "master_repl_offset:");
            if master.is_some() && master == offset(&replica, "slave_repl_offset:") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "testkit: replica {replica} of {addr} did not catch up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill(addr);
    }

    /// `FLUSHALL` on every live master.
    pub fn flushall(&self) {
        for m in self.masters() {
            assert_eq!(redis_cmd(&m.addr, &["FLUSHALL"]), "+OK\r\n", "FLUSHALL");
        }
    }

    /// Starts moving `slot` from the master at `from` to the one at `to`: `to` marks it
    /// `IMPORTING`, `from` marks it `MIGRATING`. Keys still on `from` are served there; a key
    /// missing there gets an `ASK` redirect to `to`.
    pub fn begin_slot_migration(&self, slot: u16, from: &str, to: &str) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot = slot.to_string();
        let ok = |addr: &str, args: &[&str]| {
            assert_eq!(redis_cmd(addr, args), "+OK\r\n", "{args:?} on {addr}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    }

    /// Moves every key of `slot` from `from` to `to` with `MIGRATE` (during a migration).
    pub fn migrate_keys(&self, slot: u16, from: &str, to: &str) {
        let (host, port) = to.rsplit_once(':').expect("host:port");
        // A TLS cluster migrates over TLS (tls-cluster): to the target's TLS port.
        let tls_port = self.tls_port_of(to).map(|p| p.to_string());
        let port = tls_port.as_deref().unwrap_or(port);
        loop {
            let reply = redis_cmd(
                from,
                &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "100"],
            );
            let keys = bulk_array(&reply);
            if keys.is_empty() {
                return;
            }
            let mut args = vec!["MIGRATE", host, port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            assert_eq!(redis_cmd(from, &args), "+OK\r\n", "MIGRATE");
        }
    }

    /// Ends a migration: every master assigns `slot` to `to` (`CLUSTER SETSLOT <slot> NODE`).
    pub fn finish_slot_migration(&self, slot: u16, to: &str) {
        let to_id = self.node_id(to);
        let mut masters: Vec<String> = self.masters().into_iter().map(|m| m.addr).collect();
        // The new owner first, as the Redis manual says.
        masters.sort_by_key(|m| m != to);
        for m in masters {
            let reply = redis_cmd(
                &m,
                &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id],
            );
            assert_eq!(reply, "+OK\r\n", "SETSLOT NODE on {m}");
        }
    }

    /// A whole migration of `slot` from its master to the master at `to`, keys included.
    pub fn move_slot(&self, slot: u16, to: &str) {
        let from = self.master_of_slot(slot);
        if from == to {
            return;
        }
        self.begin_slot_migration(slot, &from, to);
        self.migrate_keys(slot, &from, to);
        self.finish_slot_migration(slot, to);
    }
}

/// A master's address and slot ranges.
type MasterSlots = (String, Vec<(u16, u16)>);

/// The bulk strings of a flat RESP array reply.
fn bulk_array(reply: &str) -> Vec<String> {
    let mut lines = reply.split("\r\n");
    let mut out = Vec::new();
    let _count = lines.next();
    while let Some(header) = lines.next() {
        if header.starts_with('$') {
            if let Some(v) = lines.next() {
                out.push(v.to_string());
            }
        }
    }
    out
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
af8e 127.0.0.1:31006@31106 slave 8fdf 0 1795738675074 1 connected
8848 127.0.0.1:31003@31103 master - 0 1795738674970 3 connected 10923-16383
8fdf 127.0.0.1:31001@31101,host myself,master - 0 0 1 connected 0-5460 7000 [5->-8848]
dead 127.0.0.1:31002@31102 master,fail - 0 0 2 disconnected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].master_id.as_deref(), Some("8fdf"));
        assert!(!nodes[0].master);
        assert_eq!(nodes[1].slots, vec![(10923, 16383)]);
        assert_eq!(nodes[2].addr, "127.0.0.1:31001");
        assert_eq!(nodes[2].slots, vec![(0, 5460), (7000, 7000)]);
        assert!(nodes[2].serves(7000) && !nodes[2].serves(7001));
        assert!(nodes[3].failing);
    }

    #[test]
    fn tls_cluster_forms() {
        let cluster = RedisCluster::start_tls();
        assert_eq!(cluster.masters().len(), 3);
        let url = cluster.tls_seed_url().unwrap();
        assert!(
            url.starts_with("rediss-cluster://127.0.0.1:") && url.contains("?ca="),
            "{url}"
        );
        assert!(cluster.ca_file().unwrap().exists());
        let m = cluster.master_of_slot(0);
        assert!(cluster.tls_port_of(&m).is_some());
        assert_eq!(redis_cmd(&m, &["SET", "{06S}k", "v"]), "+OK\r\n");
    }

    #[test]
    fn cluster_forms_and_fails_over() {
        let mut cluster = RedisCluster::start_with_node_timeout(Duration::from_millis(1000));
        let masters = cluster.masters();
        assert_eq!(masters.len(), 3);
        assert!(cluster.seed_url().starts_with("redis-cluster://127.0.0.1:"));
        let m = cluster.master_of_slot(0);
        assert_eq!(redis_cmd(&m, &["SET", "{06S}k", "v"]), "+OK\r\n"); // slot 0
        let other = masters.iter().find(|n| n.addr != m).unwrap().addr.clone();
        cluster.move_slot(0, &other);
        assert_eq!(cluster.master_of_slot(0), other);
        assert_eq!(redis_cmd(&other, &["GET", "{06S}k"]), "$1\r\nv\r\n");
        cluster.kill(&other);
        let now = cluster.wait_failover(&other, Duration::from_secs(30));
        assert_eq!(now.len(), 3);
        assert!(!now.contains(&other));
    }
}
