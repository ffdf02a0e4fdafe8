//! Router configuration: CLI flags with `CONNECT_*` environment variables, validated at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use runtime::probe::IoMode;

/// Default listen address for gateway links (the internal NLB's target port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7100";
/// How long a delivery may wait for the recipient gateway's result before the sender gets
/// `failed`. Below the gateway's send timeout (10 s) so the router's answer arrives first.
pub const DEFAULT_FORWARD_TIMEOUT_MS: u64 = 5_000;
/// How often each shard re-reads the gateway liveness records. A session whose gateway is not
/// in the set makes the router read them again at once, so this only bounds how long a
/// `kill -9`ed gateway still looks alive after its record expired (2 s + 250 ms < 3 s).
pub const DEFAULT_LIVENESS_POLL_MS: u64 = 250;
/// After a failed read of the liveness records, how long a gateway missing from them still
/// counts as alive. While the registry was unreachable the gateways could not renew their
/// records either (2 s TTL), so after a failover or an outage every record may have expired
/// although every gateway is up; they are renewed within a beat (500 ms) of the registry's
/// return. 3 s = the TTL plus two beats: no wrong `offline` after a Redis failover.
pub const DEFAULT_LIVENESS_GRACE_MS: u64 = 3_000;
/// Users one presence request may ask about: a contact list screen, not a directory dump.
pub const DEFAULT_MAX_PRESENCE_USERS: usize = 256;
/// Admin port (`/livez`, `/readyz`, `/metrics`) for NLB health checks and scraping.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
/// SIGTERM drain budget, below ECS's default 30 s stop timeout.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 25;

/// Command-line flags of the `router` binary.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "router",
    version,
    about = "Connect router: routes messages between gateways"
)]
pub struct Args {
    /// Listen address for gateway links.
    #[arg(long, env = "CONNECT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Session registry: redis://host:port[/db] or memory:// (single process only).
    #[arg(long, env = "CONNECT_REGISTRY")]
    pub registry: Option<String>,
    /// Executor shards (one per core by default).
    #[arg(long, env = "CONNECT_SHARDS")]
    pub shards: Option<usize>,
    /// Milliseconds a delivery waits for the recipient gateway before the send is acked failed.
    #[arg(long, env = "CONNECT_FORWARD_TIMEOUT_MS", default_value_t = DEFAULT_FORWARD_TIMEOUT_MS)]
    pub forward_timeout_ms: u64,
    /// Milliseconds between reads of the gateway liveness records.
    #[arg(long, env = "CONNECT_LIVENESS_POLL_MS", default_value_t = DEFAULT_LIVENESS_POLL_MS)]
    pub liveness_poll_ms: u64,
    /// Milliseconds after a failed liveness read during which gateways missing from the
    /// records still count as alive (their records may have expired during the outage).
    #[arg(long, env = "CONNECT_LIVENESS_GRACE_MS", default_value_t = DEFAULT_LIVENESS_GRACE_MS)]
    pub liveness_grace_ms: u64,
    /// Event loop: auto (io_uring where allowed, else epoll), uring, or epoll.
    #[arg(long, env = "CONNECT_IO", default_value = "auto")]
    pub io: String,
    /// Admin listen address (/livez, /readyz, /metrics); `off` disables it.
    #[arg(long, env = "CONNECT_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: String,
    /// Seconds a SIGTERM drain may take before the process exits anyway.
    #[arg(long, env = "CONNECT_DRAIN_TIMEOUT", default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS)]
    pub drain_timeout: u64,
    /// Log format: text or json.
    #[arg(long, env = "CONNECT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Shared secret authenticating router<->gateway links (HMAC challenge-response); the
    /// same value on every router and gateway. Without it links are unauthenticated.
    #[arg(long, env = "CONNECT_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
}

/// Validated router configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub listen: SocketAddr,
    pub registry: String,
    pub shards: usize,
    pub forward_timeout: Duration,
    pub liveness_poll: Duration,
    /// See [`DEFAULT_LIVENESS_GRACE_MS`].
    pub liveness_grace: Duration,
    /// Pin shard i to the i-th allowed CPU.
    pub pin: bool,
    /// Which event loop to run on.
    pub io: IoMode,
    /// Admin port address, if enabled.
    pub admin_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
    /// Link authentication secret, if set.
    pub link_secret: Option<Arc<[u8]>>,
}

impl Config {
    /// A config for embedding (tests, the all-in-one binary).
    pub fn new(listen: SocketAddr, registry: &str, shards: usize) -> Config {
        Config {
            listen,
            registry: registry.to_string(),
            shards,
            forward_timeout: Duration::from_millis(DEFAULT_FORWARD_TIMEOUT_MS),
            liveness_poll: Duration::from_millis(DEFAULT_LIVENESS_POLL_MS),
            liveness_grace: Duration::from_millis(DEFAULT_LIVENESS_GRACE_MS),
            pin: true,
            io: IoMode::Auto,
            admin_listen: None,
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
            link_secret: None,
        }
    }
}

impl Args {
    /// Checks every flag and returns all problems at once.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let listen = match self.listen.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(a),
            _ => {
                errors.push(format!(
                    "--listen: `{}` is not a valid HOST:PORT",
                    self.listen
                ));
                None
            }
        };
        let registry = match self.registry {
            Some(r) if r.starts_with("redis") || r.starts_with("memory://") => r,
            Some(r) => {
                errors.push(format!(
                    "--registry: `{r}` is not a registry URL (redis://host:port[/db] or memory://)"
                ));
                String::new()
            }
            None => {
                errors.push("--registry (CONNECT_REGISTRY) is required".into());
                String::new()
            }
        };
        let shards = self
            .shards
            .unwrap_or_else(|| runtime::shards::allowed_cpus().len().max(1));
        if shards == 0 || shards > 256 {
            errors.push("--shards must be between 1 and 256".into());
        }
        if self.forward_timeout_ms == 0 {
            errors.push("--forward-timeout-ms must be positive".into());
        }
        if !(10..=60_000).contains(&self.liveness_poll_ms) {
            errors.push("--liveness-poll-ms must be between 10 and 60000".into());
        }
        if self.liveness_grace_ms > 600_000 {
            errors.push("--liveness-grace-ms must be at most 600000".into());
        }
        let io = self.io.parse::<IoMode>().unwrap_or_else(|e| {
            errors.push(format!("--io {e}"));
            IoMode::Auto
        });
        let admin_listen = match self.admin_listen.as_str() {
            "off" | "" => None,
            a => match a.to_socket_addrs().map(|mut x| x.next()) {
                Ok(Some(x)) => Some(x),
                _ => {
                    errors.push(format!("--admin-listen: `{a}` is not a valid HOST:PORT"));
                    None
                }
            },
        };
        if self.link_secret.as_ref().is_some_and(|s| s.len() < 16) {
            errors.push("--link-secret must be at least 16 bytes".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            errors.push(format!("--log-format `{}`: text or json", self.log_format));
        }
        match listen {
            Some(listen) if errors.is_empty() => Ok(Config {
                listen,
                registry,
                shards,
                forward_timeout: Duration::from_millis(self.forward_timeout_ms),
                liveness_poll: Duration::from_millis(self.liveness_poll_ms),
                liveness_grace: Duration::from_millis(self.liveness_grace_ms),
                pin: true,
                io,
                admin_listen,
                drain_timeout: Duration::from_secs(self.drain_timeout),
                link_secret: self.link_secret.map(|s| Arc::from(s.into_bytes())),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_errors_at_once() {
        let a = Args::try_parse_from(["router", "--listen", "x", "--shards", "0"]).unwrap();
        let e = a.validate().unwrap_err().join("\n");
        assert!(
            e.contains("--listen") && e.contains("--registry") && e.contains("--shards"),
            "{e}"
        );
    }
}
