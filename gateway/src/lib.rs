//! The Connect gateway: holds clients' WebSocket connections, registers their sessions in the
//! session registry and exchanges messages with routers.
//!
//! Thread-per-core: each shard (one glommio executor per core) accepts its share of clients from
//! an `SO_REUSEPORT` listener, owns those connections outright, keeps its own registry client,
//! its own links to every router and its own internal port on which routers deliver messages
//! for its sessions. Nothing on the message path crosses shards or takes a lock.
//!
//! # Layout
//! - [`config`]: flags, environment variables, defaults and validation.
//! - [`http`]: pure HTTP/1.1 request-head parsing and responses for the upgrade.
//! - `ws`: the server frames the gateway sends (decoding is [`wire::ws`], sans-I/O).
//! - `client`: one client connection: handshake, auth, registration, then one task per
//!   connection whose hand-written future reads and writes; per idle connection one task, one
//!   224-byte `Rc<Conn>` and no buffer; after `--park-after-ms` of silence the task parks the
//!   socket ([`runtime::park`]) and holds no event-loop state either (docs/perf.md, "Idle
//!   memory per connection").
//! - `shard`: per-shard state: sessions, pending sends awaiting an ack (and which router link
//!   each session's sends in flight are on), timers, the park clock and the parked sockets'
//!   wake-ups, drain.
//! - `limits`: the per-connection send rate limit (token bucket).
//! - `tls`: optional TLS termination on the client port (rustls, sans-I/O).
//! - `metrics`: per-shard counters and their Prometheus rendering for the admin port.
//! - `upkeep`: the liveness heartbeat, the spread session refresh and the rebuild after the
//!   registry lost data.
//! - `uplink`: this shard's links to the routers (sends out, acks in), and the stall verdict on
//!   a router that stops answering.
//! - `downlink`: routers' links to this shard (deliveries in, results out).
//! - `dev`: local dev mode only: the demo chat page (`demo.html`), `/dev/token`, `/dev/online`.

pub mod config;
pub mod http;

mod client;
mod dev;
mod downlink;
mod limits;
mod metrics;
mod shard;
mod tls;
mod upkeep;
mod uplink;
mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use metrics::Metrics;

pub use config::{Args, Config};

/// Errors starting a gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound (address in use, no permission). Fatal at start-up.
    #[error("binding {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No usable event loop (`--io=uring` where io_uring is denied). Fatal at start-up.
    #[error("{0}")]
    NoBackend(String),
    /// An executor could not start (io_uring denied, memlock too low). Fatal at start-up.
    #[error("starting shards: {0}")]
    Runtime(std::io::Error),
}

/// A running gateway.
pub struct Gateway {
    /// The bound client address (the real port when 0 was asked for).
    pub client_addr: SocketAddr,
    /// Each shard's bound internal address, in shard order.
    pub internal_addrs: Vec<SocketAddr>,
    /// The admin port's bound address, if enabled.
    pub admin_addr: Option<SocketAddr>,
    shards: runtime::shards::Shards,
}

/// What the admin port reports for a gateway.
struct Admin(Arc<Metrics>);

impl ops::admin::AdminState for Admin {
    fn ready(&self) -> Result<(), String> {
        if ops::drain::draining() {
            return Err("draining".into());
        }
        if self.0.shards.iter().all(|s| s.router_links_up.get() == 0) {
            return Err("no router link up".into());
        }
        Ok(())
    }
    fn render(&self, out: &mut String) {
        self.0.render(out);
    }
}

impl Gateway {
    /// Binds all listeners, then starts the shards.
    pub fn start(config: Config) -> Result<Gateway, Error> {
        let (client_addr, client_listeners) = runtime::listen::shared(config.listen, config.shards)
            .map_err(|source| Error::Bind {
                what: "client listener",
                addr: config.listen,
                source,
            })?;
        let internal = runtime::listen::per_shard(config.internal_listen, config.shards).map_err(
            |source| Error::Bind {
                what: "internal listener",
                addr: config.internal_listen,
                source,
            },
        )?;
        let internal_addrs: Vec<SocketAddr> = internal.iter().map(|(a, _)| *a).collect();
        // Each shard takes its own pair of listeners out of this table when it starts.
        let per_shard: Vec<_> = client_listeners
            .into_iter()
            .zip(internal)
            .map(|(c, (a, n))| Some((c, n, a.port())))
            .collect();
        let per_shard = Arc::new(Mutex::new(per_shard));
        let config = Arc::new(config);
        let cfg = config.clone();
        let (backend, why) = runtime::probe::choose(config.io).map_err(Error::NoBackend)?;
        tracing::info!(io = backend.as_str(), reason = %why, "event loop chosen");
        if config.link_secret.is_none() {
            tracing::warn!(
                "no --link-secret: router<->gateway links are not authenticated; \
                 only network rules keep other hosts off the internal ports"
            );
        }
        let metrics = Metrics::new(config.shards);
        metrics.set_backend(backend);
        let admin_addr = match config.admin_listen {
            Some(addr) => Some(
                ops::admin::start(addr, Arc::new(Admin(metrics.clone()))).map_err(|source| {
                    Error::Bind {
                        what: "admin listener",
                        addr,
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let m = metrics.clone();
        let live = Arc::new(upkeep::Liveness::default());
        let shards =
            runtime::shards::Shards::spawn("gateway", config.shards, config.pin, backend, {
                move |i| {
                    let taken = per_shard.lock().ok().and_then(|mut v| v[i].take());
                    let live = live.clone();
                    async move {
                        if let Some((client, internal, port)) = taken {
                            shard::run(i as u16, cfg, m, live, client, internal, port).await;
                        }
                    }
                }
            })
            .map_err(Error::Runtime)?;
        tracing::info!(
            client = %client_addr,
            internal = ?internal_addrs,
            instance = %config.instance_id,
            shards = config.shards,
            "gateway started"
        );
        Ok(Gateway {
            client_addr,
            internal_addrs,
            admin_addr,
            shards,
        })
    }

    /// Waits for the shards to end (after a drain, see [`ops::drain`]).
    pub fn join(self) -> std::io::Result<()> {
        self.shards.join()
    }
}
