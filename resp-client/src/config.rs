//! [`Config`]: where Redis is, how to log in, and the client's limits; parsed from a
//! `redis://` URL or built from [`Config::default`] and setters.

use std::fmt;
use std::time::Duration;

use crate::codec::{DEFAULT_MAX_ARRAY_LEN, DEFAULT_MAX_REPLY_BYTES};
use crate::Error;

/// Port used when a `redis://` URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Client configuration. Each field's doc gives its default and why.
///
/// Only plain TCP to one Redis node is supported today. TLS (`rediss://`) and cluster
/// (`redis-cluster://`) will arrive as new fields (the struct is `#[non_exhaustive]`), and
/// [`Config::from_url`] already recognizes those schemes and answers [`Error::Unsupported`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Redis address as `host:port` (IPv6 as `[::1]:6379`). Default `127.0.0.1:6379`: a local
    /// Redis. A host name is resolved (blocking, through the system resolver) on every
    /// connection attempt, so prefer literal IPs on hot shards.
    pub addr: String,
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
    /// Parses `redis://[[user]:password@]host[:port][/db]`.
    ///
    /// User and password may be percent-encoded. `rediss://` (TLS), `redis-cluster://`,
    /// `rediss-cluster://` and unix-socket forms give [`Error::Unsupported`]; anything else
    /// malformed gives [`Error::InvalidConfig`] naming the part.
    pub fn from_url(url: &str) -> Result<Config, Error> {
        let bad =
            |what: String| Error::InvalidConfig(format!("{what} in Redis URL {:?}", redact(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("missing scheme (expected redis://host:port)".into()))?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => {}
            "rediss" => {
                return Err(Error::Unsupported(
                    "TLS (rediss://) is not supported yet".into(),
                ))
            }
            "redis-cluster" | "rediss-cluster" => {
                return Err(Error::Unsupported(format!(
                    "Redis Cluster ({scheme}://) is not supported yet"
                )))
            }
            "unix" | "redis+unix" => {
                return Err(Error::Unsupported(
                    "unix sockets are not supported yet".into(),
                ))
            }
            other => return Err(bad(format!("unknown scheme {other:?}"))),
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(Error::Unsupported("query parameters in Redis URLs".into()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let mut config = Config::default();
        if !path.is_empty() {
            config.db = path
                .parse()
                .map_err(|_| bad(format!("database {path:?} is not a number")))?;
        }
        let host_port = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
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
                host_port
            }
            None => authority,
        };
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in host".into()))?;
            match after {
                "" => (format!("[{host}]"), None),
                p => (
                    format!("[{host}]"),
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'".into()))?,
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
            return Err(bad("missing host".into()));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad(format!("port {p:?} is not in 1..=65535"))),
            },
        };
        config.addr = format!("{host}:{port}");
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
        Ok(())
    }

    /// Sets [`Config::addr`].
    pub fn with_addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
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
    fn rejects_bad_and_unsupported_urls() {
        for url in [
            "rediss://h:1",
            "redis-cluster://h:1",
            "unix:///tmp/r.sock",
            "redis://h:1/?x=1",
        ] {
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
