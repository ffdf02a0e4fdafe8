//! Gateway configuration: CLI flags, each with a `CONNECT_*` environment variable (12-factor, for
//! Fargate task definitions), validated all at once so an operator sees every mistake in one run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use runtime::probe::IoMode;

/// Default client port. 8080 is what ALB target groups and local tools expect for plain WS.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default internal port base for router links; shard `i` listens on `port + i`.
pub const DEFAULT_INTERNAL_LISTEN: &str = "0.0.0.0:7200";
/// Session TTL. Liveness records, not this TTL, make a crashed gateway's users offline within
/// seconds, so it can be long: it only bounds how long an entry nobody cleaned up lingers in
/// Redis. Each session is refreshed once per third of it, spread evenly over time: 30 min gives
/// 3 commands per session per 10 minutes, 0.3 per user per minute.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 1800;
/// Liveness heartbeat period: twice a second, so that four missed beats fit in the TTL below.
pub const DEFAULT_LIVENESS_INTERVAL_MS: u64 = 500;
/// Liveness record TTL: a `kill -9`ed gateway's users read as offline this long after its last
/// beat (plus the routers' poll, 250 ms): under 3 s, while a Redis hiccup of up to 1.5 s does
/// not make a healthy gateway look dead.
pub const DEFAULT_LIVENESS_TTL_MS: u64 = 2000;
/// Upgrades a shard may be handling at once (reading the request, verifying the token,
/// registering). A reconnect storm beyond it is shed with a retry hint instead of queueing
/// work that would time out anyway; 16384 per shard lets a whole gateway's clients (18k on
/// one shard in the storm test) reconnect at once without shedding, at a few KB each.
pub const DEFAULT_MAX_HANDSHAKES_PER_SHARD: usize = 16384;
/// Largest `body` a client may send: chat messages, not file transfer.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Largest WebSocket message accepted at all; above it the connection closes with 1009. Between
/// this and the body limit a client gets an `error` reply and keeps its connection.
pub const DEFAULT_MAX_WS_MESSAGE: usize = 1024 * 1024;
/// How long a send may wait for the router's outcome before the client gets `failed`. Above the
/// router's own forward timeout, so the router's answer normally wins.
pub const DEFAULT_SEND_TIMEOUT_MS: u64 = 10_000;
/// Bytes queued for one client before it counts as a slow consumer and is disconnected.
pub const DEFAULT_CLIENT_QUEUE: usize = 1024 * 1024;
/// Ping clients silent this long; mobile NATs drop idle flows after 30-60 s.
pub const DEFAULT_PING_INTERVAL_SECS: u64 = 25;
/// Close clients silent this long (no data, no pong): the phone has gone away.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 75;
/// Park a client connection silent in both directions this long (parked after 1-2x this): its
/// socket then waits in the shard's epoll set with no event-loop state (about 660 bytes less
/// per connection, docs/perf.md). 5 s: longer than the gaps in an active conversation, so a
/// chatting client is not parked and woken per message (each cycle costs a few syscalls), and
/// far shorter than the 25 s ping interval, so an idle connection spends most of its life
/// parked.
pub const DEFAULT_PARK_AFTER_MS: u64 = 5_000;
/// Shortest `--park-after-ms` accepted (other than 0, never): the shard scans its sessions
/// once per period.
pub const MIN_PARK_AFTER_MS: u64 = 10;
/// Admin port (`/livez`, `/readyz`, `/metrics`) for target-group health checks and scraping.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
/// SIGTERM drain budget: below ECS's default 30 s stop timeout, so the drain finishes before
/// the task is killed.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 25;
/// Connections per shard: 500k idle sessions at a few KB each stay within a Fargate task's
/// memory; beyond it clients get 503 and try another gateway.
pub const DEFAULT_MAX_CONNECTIONS_PER_SHARD: usize = 500_000;
/// Sends per second per connection: human chat is a few per second; bursts (pasting, resends
/// after reconnect) get `DEFAULT_MSG_BURST`.
pub const DEFAULT_MSG_RATE: u32 = 20;
/// Router link ping period: stalled routers are noticed within three of these (15 s), well
/// inside the send timeout's order of magnitude, and idle links stay open through NAT/NLB.
pub const DEFAULT_LINK_KEEPALIVE_MS: u64 = 5_000;
/// Token-bucket burst for sends.
pub const DEFAULT_MSG_BURST: u32 = 60;
/// A router that has answered nothing (not even a probe ping, which it answers as soon as it
/// reads it) for this long after a send is judged stalled: its pending sends are failed and new
/// sends go to another router until it speaks again. Well above a live router's pong time,
/// well below the keep-alive's 15 s.
pub const DEFAULT_LINK_STALL_MS: u64 = 1_000;

/// Command-line flags of the `gateway` binary.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "gateway",
    version,
    about = "Connect gateway: holds client WebSocket connections"
)]
pub struct Args {
    /// Client (WebSocket) listen address.
    #[arg(long, env = "CONNECT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Internal listen address for router links; shard i uses port+i (each shard its own port
    /// when the port is 0).
    #[arg(long, env = "CONNECT_INTERNAL_LISTEN", default_value = DEFAULT_INTERNAL_LISTEN)]
    pub internal_listen: String,
    /// Address routers use to reach this gateway: HOST or HOST:PORT (shard i: PORT+i). Required
    /// when --internal-listen is a wildcard address.
    #[arg(long, env = "CONNECT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Router addresses, comma separated.
    #[arg(long, env = "CONNECT_ROUTER", value_delimiter = ',')]
    pub router: Vec<String>,
    /// Session registry: redis://host:port[/db] or memory:// (single process only).
    #[arg(long, env = "CONNECT_REGISTRY")]
    pub registry: Option<String>,
    /// HS256 secret that client JWTs are signed with.
    #[arg(long, env = "CONNECT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Session TTL in seconds (each session is refreshed once per third of it, the refreshes
    /// of all sessions spread evenly over that period).
    #[arg(long, env = "CONNECT_SESSION_TTL", default_value_t = DEFAULT_SESSION_TTL_SECS)]
    pub session_ttl: u64,
    /// Milliseconds between this gateway's liveness heartbeats.
    #[arg(long, env = "CONNECT_LIVENESS_INTERVAL_MS", default_value_t = DEFAULT_LIVENESS_INTERVAL_MS)]
    pub liveness_interval_ms: u64,
    /// Milliseconds the liveness record lives after a beat: how soon a crashed gateway's
    /// users read as offline.
    #[arg(long, env = "CONNECT_LIVENESS_TTL_MS", default_value_t = DEFAULT_LIVENESS_TTL_MS)]
    pub liveness_ttl_ms: u64,
    /// Upgrades in progress per shard; beyond it new connections are shed with close code
    /// 1013 and a jittered `reconnect_after_ms` hint.
    #[arg(long, env = "CONNECT_MAX_HANDSHAKES_PER_SHARD", default_value_t = DEFAULT_MAX_HANDSHAKES_PER_SHARD)]
    pub max_handshakes_per_shard: usize,
    /// Executor shards (one per core by default).
    #[arg(long, env = "CONNECT_SHARDS")]
    pub shards: Option<usize>,
    /// Unique id of this gateway instance (default: hostname-pid-random).
    #[arg(long, env = "CONNECT_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Largest message body in bytes (larger sends get an error reply).
    #[arg(long, env = "CONNECT_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Largest WebSocket message in bytes (larger ones close the connection with 1009).
    #[arg(long, env = "CONNECT_MAX_WS_MESSAGE", default_value_t = DEFAULT_MAX_WS_MESSAGE)]
    pub max_ws_message: usize,
    /// Milliseconds a send waits for its outcome before it is acked `failed`.
    #[arg(long, env = "CONNECT_SEND_TIMEOUT_MS", default_value_t = DEFAULT_SEND_TIMEOUT_MS)]
    pub send_timeout_ms: u64,
    /// Bytes queued towards one client before it is disconnected as a slow consumer.
    #[arg(long, env = "CONNECT_CLIENT_QUEUE", default_value_t = DEFAULT_CLIENT_QUEUE)]
    pub client_queue: usize,
    /// Seconds of client silence before the gateway pings.
    #[arg(long, env = "CONNECT_PING_INTERVAL", default_value_t = DEFAULT_PING_INTERVAL_SECS)]
    pub ping_interval: u64,
    /// Seconds of client silence before the gateway closes the connection.
    #[arg(long, env = "CONNECT_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,
    /// Milliseconds of silence in both directions after which a client connection is parked
    /// (its socket kept in the shard's epoll set, without event-loop state, until it has
    /// input or output); 0: never.
    #[arg(long, env = "CONNECT_PARK_AFTER_MS", default_value_t = DEFAULT_PARK_AFTER_MS)]
    pub park_after_ms: u64,
    /// Event loop: auto (io_uring where allowed, else epoll), uring, or epoll.
    #[arg(long, env = "CONNECT_IO", default_value = "auto")]
    pub io: String,
    /// Admin listen address (/livez, /readyz, /metrics); `off` disables it.
    #[arg(long, env = "CONNECT_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: String,
    /// Seconds a SIGTERM drain may take before the process exits anyway.
    #[arg(long, env = "CONNECT_DRAIN_TIMEOUT", default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS)]
    pub drain_timeout: u64,
    /// Client connections per shard; beyond it upgrades get 503.
    #[arg(long, env = "CONNECT_MAX_CONNECTIONS_PER_SHARD", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_SHARD)]
    pub max_connections_per_shard: usize,
    /// Sends per second allowed per connection (token bucket refill rate).
    #[arg(long, env = "CONNECT_MSG_RATE", default_value_t = DEFAULT_MSG_RATE)]
    pub msg_rate: u32,
    /// Sends a connection may burst above the rate (token bucket size).
    #[arg(long, env = "CONNECT_MSG_BURST", default_value_t = DEFAULT_MSG_BURST)]
    pub msg_burst: u32,
    /// Log format: text or json.
    #[arg(long, env = "CONNECT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Milliseconds between pings on router links; a router silent for three of them is
    /// dropped as stalled (its pending sends fail, the link reconnects).
    #[arg(long, env = "CONNECT_LINK_KEEPALIVE_MS", default_value_t = DEFAULT_LINK_KEEPALIVE_MS)]
    pub link_keepalive_ms: u64,
    /// Milliseconds a router may stay silent (probed with a ping at half of it) after a send
    /// before it counts as stalled: its pending sends are acked `failed` and new sends go to
    /// another router until it answers again. 0: off (only the keep-alive drops the link).
    #[arg(long, env = "CONNECT_LINK_STALL_MS", default_value_t = DEFAULT_LINK_STALL_MS)]
    pub link_stall_ms: u64,
    /// Serve `GET /echo` without a token: an echo WebSocket on the same stack, limits and close
    /// handling as `/ws`, for conformance suites (Autobahn). Off by default; never in production.
    #[arg(long, env = "CONNECT_ECHO_ENDPOINT")]
    pub echo_endpoint: bool,
    /// Shared secret authenticating router<->gateway links (HMAC challenge-response); the
    /// same value on every router and gateway. Without it links are unauthenticated.
    #[arg(long, env = "CONNECT_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// PEM certificate chain: terminate TLS on the client port (for deployments without a
    /// load balancer that does it). Needs --tls-key.
    #[arg(long, env = "CONNECT_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CONNECT_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Validated gateway configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub listen: SocketAddr,
    pub internal_listen: SocketAddr,
    /// Host (and optional base port) written into the registry for routers to dial.
    pub advertise_host: String,
    pub advertise_port: Option<u16>,
    pub routers: Vec<SocketAddr>,
    pub registry: String,
    pub jwt_secret: Vec<u8>,
    pub session_ttl: Duration,
    pub liveness_interval: Duration,
    pub liveness_ttl: Duration,
    pub max_handshakes_per_shard: usize,
    pub shards: usize,
    pub instance_id: String,
    /// This process's boot epoch (unix ms at start-up), written into its liveness record and
    /// every session: a restart under the same instance id outdates the earlier sessions.
    pub epoch: u64,
    pub max_body: usize,
    pub max_ws_message: usize,
    pub send_timeout: Duration,
    pub client_queue: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Park connections silent this long (`None`: never).
    pub park_after: Option<Duration>,
    /// Pin shard i to the i-th allowed CPU.
    pub pin: bool,
    /// Serve the demo chat page (`GET /`, `GET /demo`) and the dev endpoints (`/dev/token`,
    /// which signs a token for any user, and `/dev/online`) on the client port. Default false;
    /// no flag or environment variable sets it: only the local all-in-one `connect` binary
    /// does, and only with the embedded `memory://` registry, so no deployed gateway ever
    /// hands out tokens.
    pub dev_mode: bool,
    /// Which event loop to run on.
    pub io: IoMode,
    /// Admin port address, if enabled.
    pub admin_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub max_connections_per_shard: usize,
    pub msg_rate: u32,
    pub msg_burst: u32,
    /// TLS on the client port, when --tls-cert/--tls-key are given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub link_keepalive: Duration,
    /// Silence after a send that makes a router link stalled (zero: never).
    pub link_stall: Duration,
    /// Serve the `/echo` conformance endpoint.
    pub echo_endpoint: bool,
    /// Link authentication secret, if set.
    pub link_secret: Option<Arc<[u8]>>,
}

fn resolve(what: &str, s: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    match s.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Some(a),
        Ok(None) => {
            errors.push(format!("{what}: `{s}` resolves to no address"));
            None
        }
        Err(e) => {
            errors.push(format!("{what}: `{s}` is not a valid HOST:PORT ({e})"));
            None
        }
    }
}

/// Default shard count: one per CPU this process may use.
pub fn default_shards() -> usize {
    runtime::shards::allowed_cpus().len().max(1)
}

/// Default instance id: unique per process start.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "gw".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    format!(
        "{}-{}-{:04x}",
        host,
        std::process::id(),
        runtime::clock::random_u64() & 0xffff
    )
}

impl Args {
    /// Checks every flag and returns all problems at once.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let listen = resolve("--listen", &self.listen, &mut errors);
        let internal_listen = resolve("--internal-listen", &self.internal_listen, &mut errors);
        let mut routers = Vec::new();
        if self.router.is_empty() {
            errors
                .push("--router (CONNECT_ROUTER) is required: at least one router address".into());
        }
        for r in &self.router {
            if let Some(a) = resolve("--router", r.trim(), &mut errors) {
                routers.push(a);
            }
        }
        let registry = match self.registry {
            Some(r) if r.starts_with("redis://") || r.starts_with("memory://") => r,
            Some(r) if r.starts_with("rediss://") || r.contains("-cluster://") => r,
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
        let jwt_secret = match self.jwt_secret {
            Some(s) if s.len() >= 16 => s.into_bytes(),
            Some(_) => {
                errors.push("--jwt-secret must be at least 16 bytes".into());
                Vec::new()
            }
            None => {
                errors.push("--jwt-secret (CONNECT_JWT_SECRET) is required".into());
                Vec::new()
            }
        };
        if self.session_ttl < 2 {
            errors.push("--session-ttl must be at least 2 seconds".into());
        }
        if self.liveness_interval_ms < 50 || self.liveness_ttl_ms < 2 * self.liveness_interval_ms {
            errors.push(
                "--liveness-interval-ms must be at least 50 and --liveness-ttl-ms at least twice it"
                    .into(),
            );
        }
        if self.max_handshakes_per_shard == 0 {
            errors.push("--max-handshakes-per-shard must be positive".into());
        }
        let shards = self.shards.unwrap_or_else(default_shards);
        if shards == 0 || shards > 256 {
            errors.push("--shards must be between 1 and 256".into());
        }
        let instance_id = self.instance_id.unwrap_or_else(default_instance_id);
        if instance_id.is_empty()
            || instance_id.len() > 64
            || !instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            errors.push(format!(
                "--instance-id `{instance_id}`: 1-64 characters of [A-Za-z0-9-_.:]"
            ));
        }
        if self.max_body == 0 || self.max_body > self.max_ws_message {
            errors.push("--max-body must be between 1 and --max-ws-message".into());
        }
        if self.idle_timeout <= self.ping_interval {
            errors.push("--idle-timeout must be longer than --ping-interval".into());
        }
        if self.park_after_ms != 0 && self.park_after_ms < MIN_PARK_AFTER_MS {
            errors.push(format!(
                "--park-after-ms must be 0 (never) or at least {MIN_PARK_AFTER_MS}"
            ));
        }
        let io = self.io.parse::<IoMode>().unwrap_or_else(|e| {
            errors.push(format!("--io {e}"));
            IoMode::Auto
        });
        let admin_listen = match self.admin_listen.as_str() {
            "off" | "" => None,
            a => resolve("--admin-listen", a, &mut errors),
        };
        if self.msg_rate == 0 || self.msg_burst == 0 {
            errors.push("--msg-rate and --msg-burst must be positive".into());
        }
        if self.max_connections_per_shard == 0 {
            errors.push("--max-connections-per-shard must be positive".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            errors.push(format!("--log-format `{}`: text or json", self.log_format));
        }
        if self.link_secret.as_ref().is_some_and(|s| s.len() < 16) {
            errors.push("--link-secret must be at least 16 bytes".into());
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => match crate::tls::server_config(c, k) {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            (None, None) => None,
            _ => {
                errors.push("--tls-cert and --tls-key go together".into());
                None
            }
        };
        let (mut advertise_host, mut advertise_port) = (String::new(), None);
        match (&self.advertise, internal_listen) {
            (Some(a), _) => match a.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !h.ends_with(':') => match p.parse::<u16>() {
                    Ok(p) => {
                        advertise_host = h.to_string();
                        advertise_port = Some(p);
                    }
                    Err(_) => errors.push(format!("--advertise: bad port in `{a}`")),
                },
                _ => advertise_host = a.clone(),
            },
            (None, Some(il)) if il.ip().is_unspecified() => errors.push(
                "--advertise is required when --internal-listen is a wildcard address".into(),
            ),
            (None, Some(il)) => advertise_host = il.ip().to_string(),
            (None, None) => {}
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            listen: listen.expect("checked"),
            internal_listen: internal_listen.expect("checked"),
            advertise_host,
            advertise_port,
            routers,
            registry,
            jwt_secret,
            session_ttl: Duration::from_secs(self.session_ttl),
            liveness_interval: Duration::from_millis(self.liveness_interval_ms),
            liveness_ttl: Duration::from_millis(self.liveness_ttl_ms),
            max_handshakes_per_shard: self.max_handshakes_per_shard,
            shards,
            instance_id,
            epoch: runtime::clock::unix_ms(),
            max_body: self.max_body,
            max_ws_message: self.max_ws_message,
            send_timeout: Duration::from_millis(self.send_timeout_ms),
            client_queue: self.client_queue,
            ping_interval: Duration::from_secs(self.ping_interval),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            park_after: (self.park_after_ms > 0).then(|| Duration::from_millis(self.park_after_ms)),
            pin: true,
            dev_mode: false,
            io,
            admin_listen,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            max_connections_per_shard: self.max_connections_per_shard,
            msg_rate: self.msg_rate,
            msg_burst: self.msg_burst,
            tls,
            link_keepalive: Duration::from_millis(self.link_keepalive_ms.max(100)),
            link_stall: Duration::from_millis(self.link_stall_ms),
            echo_endpoint: self.echo_endpoint,
            link_secret: self.link_secret.map(|s| Arc::from(s.into_bytes())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["gateway"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn reports_every_error_at_once() {
        let errs = args(&[
            "--listen",
            "nonsense",
            "--session-ttl",
            "1",
            "--liveness-ttl-ms",
            "600",
            "--park-after-ms",
            "3",
        ])
        .validate()
        .unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("--listen"), "{all}");
        assert!(all.contains("--router"), "{all}");
        assert!(all.contains("--registry"), "{all}");
        assert!(all.contains("--jwt-secret"), "{all}");
        assert!(all.contains("--session-ttl"), "{all}");
        assert!(all.contains("--liveness-ttl-ms"), "{all}");
        assert!(all.contains("--advertise"), "{all}");
        assert!(all.contains("--park-after-ms"), "{all}");
    }

    #[test]
    fn valid_config() {
        let c = args(&[
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--router",
            "127.0.0.1:7100,127.0.0.1:7101",
            "--registry",
            "memory://",
            "--jwt-secret",
            "0123456789abcdef",
            "--shards",
            "2",
        ])
        .validate()
        .unwrap();
        assert_eq!(c.routers.len(), 2);
        assert_eq!(c.advertise_host, "127.0.0.1");
        assert_eq!(c.shards, 2);
        assert_eq!(
            c.park_after,
            Some(Duration::from_millis(DEFAULT_PARK_AFTER_MS))
        );
        assert!(
            !c.dev_mode,
            "no flag turns dev mode on, even with memory://"
        );
    }
}
