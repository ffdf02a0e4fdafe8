//! [`Config`]: where Redis is, how to log in, and the client's limits; parsed from a
//! `redis://`, `rediss://`, `redis-cluster://` or `rediss-cluster://` URL or built from
//! [`Config::default`] and setters.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::codec::{DEFAULT_MAX_ARRAY_LEN, DEFAULT_MAX_REPLY_BYTES};
use crate::Error;

/// Port used when a `redis://` URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// TLS settings ([`Config::tls`]): rustls with the `ring` provider, TLS 1.2 and 1.3, server
/// certificate verified (there is no switch to turn verification off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust (URL `?ca=/path`). Default `None`: the Mozilla
    /// root store built into the binary (`webpki-roots`), which covers ElastiCache's public
    /// certificates; set it for a private CA.
    pub ca_file: Option<PathBuf>,
    /// Name the server certificate must be valid for (URL `?sni=name`). Default `None`: the
    /// host of the address connected to (a DNS name or an IP address).
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Sets [`TlsConfig::ca_file`].
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
    /// Sets [`TlsConfig::server_name`].
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// Client configuration. Each field's doc gives its default and why.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Redis address as `host:port` (IPv6 as `[::1]:6379`); in cluster mode the first seed
    /// node. Default `127.0.0.1:6379`: a local Redis. A host name is resolved (blocking,
    /// through the system resolver) on every connection attempt, so prefer literal IPs on hot
    /// shards.
    pub addr: String,
    /// Redis Cluster mode (URL `redis-cluster://` / `rediss-cluster://`). Default `false`.
    /// The slot map is learnt from [`Config::addr`] or a [`Config::seeds`] node (`CLUSTER
    /// SHARDS`, else `CLUSTER SLOTS`), one connection is kept per master, and commands are
    /// routed by their key's slot, following `MOVED`/`ASK`.
    pub cluster: bool,
    /// More cluster seed nodes (`host:port`) tried after [`Config::addr`] when the slot map
    /// must be (re)learnt and no known master answers. Default empty.
    pub seeds: Vec<String>,
    /// TLS (URL `rediss://`), e.g. ElastiCache in-transit encryption. Default `None`: plain
    /// TCP. In cluster mode every node connection uses it.
    pub tls: Option<TlsConfig>,
    /// Ask for RESP3 with `HELLO 3` (carrying `AUTH`) on every connection, falling back to
    /// RESP2 (and a plain `AUTH`) when the server does not know `HELLO` (Redis before 6) or
    /// refuses protocol 3 (URL `?protocol=2` turns it off). Default `true`: one round trip
    /// does both the protocol and the login, and replies keep their RESP3 types (maps,
    /// doubles, nulls). Pushes (`>`) are never matched to requests; Connect subscribes to none.
    pub resp3: bool,
    /// Most `MOVED`/`ASK` redirects one command follows before failing with
    /// [`Error::ClusterUnavailable`]. Default 5: one redirect is normal during a resharding,
    /// more means the slot map changes faster than it can be learnt.
    pub max_redirects: u32,
    /// Cluster mode: how often the slot map is reloaded when nothing forces it (redirects,
    /// lost connections and cluster errors reload it at once, at most every 100 ms).
    /// Default 30 s: catches scaling events that caused no redirect yet, at the cost of one
    /// small command per interval.
    pub topology_refresh: Duration,
    /// Database selected with `SELECT` after connecting. Default 0: Redis' default, and the
    /// only one Redis Cluster has.
    pub db: u32,
    /// ACL user for `AUTH <username> <password>`. Default `None`: the `default` user.
    pub username: Option<String>,
    /// Password for `AUTH`. Default `None`: no `AUTH` is sent.
    pub password: Option<String>,
    /// Bound on one connection attempt: TCP connect plus the `AUTH`/`SELECT` handshake.
    /// Default 1 s: a reachable Redis answers within milliseconds, and requests fail fast with
    /// [`Error::Disconnected`] during the attempt anyway; a longer wait only delays noticing a
    /// dead address.
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply before it fails with [`Error::Timeout`] and
    /// the connection is reset. Default 1 s: Redis answers Connect's commands in well under a
    /// millisecond, so a reply this late means Redis is stalled (a blocking fork, `DEBUG
    /// SLEEP`, an overloaded host); callers (message routing, session registration) would
    /// rather fail and retry than pile up. It also bounds how long requests may hold memory.
    pub command_timeout: Duration,
    /// Most requests waiting for replies at once; beyond it [`crate::Client::submit`] fails
    /// at once with [`Error::Overloaded`]. Default 16384: several full batches of a busy
    /// shard, while the pending state stays small (about 100 bytes per request plus the
    /// encoded command, so a few MiB at most).
    pub max_in_flight: usize,
    /// Largest reply accepted, including framing; a larger one (or a bulk length announcing
    /// one) is rejected with [`Error::Protocol`] before it is allocated. Default 64 MiB:
    /// far above any reply Connect asks for, yet a bound on what a broken or hostile server can
    /// make the read buffer grow to.
    pub max_reply_bytes: usize,
    /// Most elements in one reply array. Default 1 Mi: far above Connect's replies (a user's
    /// sessions number in the tens). Memory is bounded by the bytes actually received, this
    /// limit fails absurd announced counts early.
    pub max_array_len: usize,
    /// First delay before reconnecting after a failure; it doubles up to
    /// [`Config::reconnect_max`], with jitter. Default 50 ms: a restarted Redis is back soon.
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts. Default 2 s: keeps a down Redis from being
    /// hammered by every shard while noticing its return quickly.
    pub reconnect_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: format!("127.0.0.1:{DEFAULT_PORT}"),
            cluster: false,
            seeds: Vec::new(),
            tls: None,
            resp3: true,
            max_redirects: 5,
            topology_refresh: Duration::from_secs(30),
            db: 0,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            max_in_flight: 16384,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("cluster", &self.cluster)
            .field("seeds", &self.seeds)
            .field("tls", &self.tls)
            .field("resp3", &self.resp3)
            .field("max_redirects", &self.max_redirects)
            .field("topology_refresh", &self.topology_refresh)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_reply_bytes", &self.max_reply_bytes)
            .field("max_array_len", &self.max_array_len)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

impl Config {
    /// Parses a Redis URL:
    /// - `redis://[[user]:password@]host[:port][/db]`: one node, plain TCP;
    /// - `rediss://...`: the same over TLS;
    /// - `redis-cluster://[[user]:password@]host:port[,host:port...]` and
    ///   `rediss-cluster://...`: Redis Cluster, seeded by the listed nodes (no `/db`, or `/0`).
    ///
    /// Query parameters: `protocol=2` or `protocol=3` ([`Config::resp3`]); TLS schemes also
    /// `ca=<PEM file>` ([`TlsConfig::ca_file`]) and `sni=<name>` ([`TlsConfig::server_name`]).
    /// User and password may be percent-encoded.
    /// Unix-socket forms give [`Error::Unsupported`]; anything else malformed gives
    /// [`Error::InvalidConfig`] naming the part.
    pub fn from_url(url: &str) -> Result<Config, Error> {
        let bad =
            |what: String| Error::InvalidConfig(format!("{what} in Redis URL {:?}", redact(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("missing scheme (expected redis://host:port)".into()))?;
        let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis-cluster" => (false, true),
            "rediss-cluster" => (true, true),
            "unix" | "redis+unix" => {
                return Err(Error::Unsupported(
                    "unix sockets are not supported yet".into(),
                ))
            }
            other => return Err(bad(format!("unknown scheme {other:?}"))),
        };
        if rest.contains('#') {
            return Err(bad("fragment ('#')".into()));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let mut config = Config::default();
        if !path.is_empty() {
            config.db = path
                .parse()
                .map_err(|_| bad(format!("database {path:?} is not a number")))?;
            if cluster && config.db != 0 {
                return Err(bad(
                    "a database other than 0 (Redis Cluster has only 0)".into()
                ));
            }
        }
        let hosts = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, pass) = userinfo
                    .split_once(':')
                    .ok_or_else(|| bad("user without password (use user:password@)".into()))?;
                if !user.is_empty() {
                    config.username = Some(
                        percent_decode(user).ok_or_else(|| bad("bad %-escape in user".into()))?,
                    );
                }
                config.password = Some(
                    percent_decode(pass).ok_or_else(|| bad("bad %-escape in password".into()))?,
                );
                hosts
            }
            None => authority,
        };
        let mut addrs = Vec::new();
        for host_port in hosts.split(',') {
            addrs.push(parse_host_port(host_port).map_err(&bad)?);
        }
        if addrs.len() > 1 && !cluster {
            return Err(bad("several hosts without a cluster scheme".into()));
        }
        config.addr = addrs.remove(0);
        config.seeds = addrs;
        config.cluster = cluster;
        if tls {
            config.tls = Some(TlsConfig::default());
        }
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value =
                percent_decode(value).ok_or_else(|| bad(format!("bad %-escape in {key:?}")))?;
            if key == "protocol" {
                config.resp3 = match value.as_str() {
                    "2" => false,
                    "3" => true,
                    _ => return Err(bad(format!("protocol {value:?} (expected 2 or 3)"))),
                };
                continue;
            }
            let tls = config
                .tls
                .as_mut()
                .ok_or_else(|| bad(format!("parameter {key:?} without TLS (rediss://)")))?;
            match key {
                "ca" if !value.is_empty() => tls.ca_file = Some(PathBuf::from(value)),
                "sni" if !value.is_empty() => tls.server_name = Some(value),
                _ => return Err(bad(format!("unknown or empty parameter {key:?}"))),
            }
        }
        Ok(config)
    }

    /// Checks the values a binary may have set: non-empty address, non-zero timeouts and
    /// limits, `reconnect_min <= reconnect_max`. Report the error at startup.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.into()));
        if self.addr.is_empty() {
            return bad("addr is empty");
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return bad("connect_timeout and command_timeout must be above zero");
        }
        if self.max_in_flight == 0 || self.max_reply_bytes == 0 || self.max_array_len == 0 {
            return bad("max_in_flight, max_reply_bytes and max_array_len must be above zero");
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad("reconnect_min must be above zero and at most reconnect_max");
        }
        if self.cluster && self.db != 0 {
            return bad("Redis Cluster has only database 0");
        }
        if self.cluster && self.topology_refresh.is_zero() {
            return bad("topology_refresh must be above zero");
        }
        if let Some(ca) = self.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            crate::tls::client_config(self.tls.as_ref().unwrap_or(&TlsConfig::default()))
                .map_err(|e| Error::InvalidConfig(format!("TLS CA file {}: {e}", ca.display())))?;
        }
        Ok(())
    }

    /// Sets [`Config::addr`].
    pub fn with_addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }
    /// Sets [`Config::cluster`] and [`Config::seeds`].
    pub fn with_cluster(mut self, seeds: Vec<String>) -> Self {
        self.cluster = true;
        self.seeds = seeds;
        self
    }
    /// Sets [`Config::tls`].
    pub fn with_tls(mut self, tls: Option<TlsConfig>) -> Self {
        self.tls = tls;
        self
    }
    /// Sets [`Config::resp3`].
    pub fn with_resp3(mut self, on: bool) -> Self {
        self.resp3 = on;
        self
    }
    /// Sets [`Config::max_redirects`].
    pub fn with_max_redirects(mut self, max: u32) -> Self {
        self.max_redirects = max;
        self
    }
    /// Sets [`Config::topology_refresh`].
    pub fn with_topology_refresh(mut self, every: Duration) -> Self {
        self.topology_refresh = every;
        self
    }
    /// Sets [`Config::db`].
    pub fn with_db(mut self, db: u32) -> Self {
        self.db = db;
        self
    }
    /// Sets [`Config::username`] and [`Config::password`].
    pub fn with_auth(mut self, username: Option<String>, password: Option<String>) -> Self {
        self.username = username;
        self.password = password;
        self
    }
    /// Sets [`Config::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets [`Config::command_timeout`].
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }
    /// Sets [`Config::max_in_flight`].
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }
    /// Sets [`Config::max_reply_bytes`].
    pub fn with_max_reply_bytes(mut self, max: usize) -> Self {
        self.max_reply_bytes = max;
        self
    }
    /// Sets [`Config::max_array_len`].
    pub fn with_max_array_len(mut self, max: usize) -> Self {
        self.max_array_len = max;
        self
    }
    /// Sets [`Config::reconnect_min`] and [`Config::reconnect_max`].
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }
}

/// `host[:port]` (IPv6 in brackets) as `host:port`, with the default port if none.
fn parse_host_port(host_port: &str) -> Result<String, String> {
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in host".to_string())?;
        match after {
            "" => (format!("[{host}]"), None),
            p => (
                format!("[{host}]"),
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| "junk after ']'".to_string())?,
                ),
            ),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (host_port.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("missing host".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("port {p:?} is not in 1..=65535")),
        },
    };
    Ok(format!("{host}:{port}"))
}

/// The URL with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = Config::from_url("redis://127.0.0.1:7000").unwrap();
        assert_eq!(
            (c.addr.as_str(), c.db, &c.username, &c.password),
            ("127.0.0.1:7000", 0, &None, &None)
        );
        let c = Config::from_url("redis://localhost").unwrap();
        assert_eq!(c.addr, "localhost:6379");
        let c = Config::from_url("redis://alice:p%40ss@redis.internal:6380/3").unwrap();
        assert_eq!(c.addr, "redis.internal:6380");
        assert_eq!(c.db, 3);
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        let c = Config::from_url("redis://:secret@[::1]:6379/").unwrap();
        assert_eq!(c.addr, "[::1]:6379");
        assert_eq!(c.username, None);
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert!(
            !format!("{c:?}").contains("secret"),
            "Debug redacts the password"
        );
        c.validate().unwrap();
    }

    #[test]
    fn parses_tls_and_cluster_urls() {
        let c =
            Config::from_url("rediss://u:p@cache.example.com:6380?ca=/etc/ca%20file.pem").unwrap();
        assert_eq!(c.addr, "cache.example.com:6380");
        assert!(!c.cluster);
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca file.pem")));
        assert_eq!(tls.server_name, None);
        let c = Config::from_url("redis-cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002").unwrap();
        assert!(c.cluster && c.tls.is_none());
        assert_eq!(c.addr, "10.0.0.1:7000");
        assert_eq!(c.seeds, ["10.0.0.2:7001", "[::1]:7002"]);
        c.validate().unwrap();
        let c = Config::from_url("rediss-cluster://:pw@cfg.cache.amazonaws.com:6379/0?sni=x.y")
            .unwrap();
        assert!(c.cluster);
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.tls.unwrap().server_name.as_deref(), Some("x.y"));
        assert_eq!(
            Config::from_url("rediss://h").unwrap().tls,
            Some(TlsConfig::default())
        );
    }

    #[test]
    fn rejects_bad_and_unsupported_urls() {
        for url in ["unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"] {
            assert!(
                matches!(Config::from_url(url), Err(Error::Unsupported(_))),
                "{url}"
            );
        }
        for url in [
            "127.0.0.1:6379",
            "http://h:1",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:x",
            "redis://h:1/db",
            "redis://user@h:1",
            "redis://u:%zz@h:1",
            "redis://[::1",
            "redis://h:1/?x=1",
            "redis://h:1?ca=/x",
            "rediss://h:1?ca=",
            "rediss://h:1?bogus=1",
            "redis://h:1#frag",
            "redis://a:1,b:2",
            "redis-cluster://a:1,:2",
            "redis-cluster://a:1/3",
        ] {
            assert!(
                matches!(Config::from_url(url), Err(Error::InvalidConfig(_))),
                "{url}"
            );
        }
        let msg = Config::from_url("redis://u:hunter2@h:0")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn validate_catches_zero_limits() {
        Config::default().validate().unwrap();
        assert!(Config::default()
            .with_command_timeout(Duration::ZERO)
            .validate()
            .is_err());
        assert!(Config::default().with_max_in_flight(0).validate().is_err());
    }
}
