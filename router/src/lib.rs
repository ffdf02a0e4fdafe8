//! The Connect router (the design's Messaging Service): takes sends from gateways, looks the
//! recipient's sessions up in the registry and forwards each message to the gateway shards that
//! hold them, then reports one outcome per send back to the sender's gateway.
//!
//! Thread-per-core like the gateway: each shard owns the gateway links it accepted, its own
//! registry client and its own outgoing links to gateway shards.
//!
//! # Layout
//! - [`config`]: flags, environment variables, defaults and validation.
//! - `inbound`: links from gateways: sends in (lookups pipelined, order kept), acks out.
//! - `peers`: links to gateway shards: deliveries out, results in; reconnect and timeouts.
//! - `shard`: per-shard state: forwards awaiting results and their aggregation into one ack;
//!   the SIGTERM drain.
//! - `liveness`: the shard's view of which gateways are alive, and the judgement of looked-up
//!   sessions (dead ones skipped and removed lazily).
//! - `metrics`: per-shard counters and their Prometheus rendering for the admin port.

pub mod config;

mod inbound;
mod liveness;
mod metrics;
mod peers;
mod shard;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use metrics::Metrics;

pub use config::{Args, Config};

/// Errors starting a router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound. Fatal at start-up.
    #[error("binding {addr}: {source}")]
    Bind {
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

/// A running router.
pub struct Router {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The admin port's bound address, if enabled.
    pub admin_addr: Option<SocketAddr>,
    shards: runtime::shards::Shards,
}

/// What the admin port reports for a router.
struct Admin(Arc<Metrics>);

impl ops::admin::AdminState for Admin {
    fn ready(&self) -> Result<(), String> {
        if ops::drain::draining() {
            Err("draining".into())
        } else {
            Ok(())
        }
    }
    fn render(&self, out: &mut String) {
        self.0.render(out);
    }
}

impl Router {
    /// Binds the listener, then starts the shards.
    pub fn start(config: Config) -> Result<Router, Error> {
        let (addr, listeners) =
            runtime::listen::shared(config.listen, config.shards).map_err(|source| {
                Error::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        let listeners = Arc::new(Mutex::new(
            listeners.into_iter().map(Some).collect::<Vec<_>>(),
        ));
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
            Some(a) => Some(
                ops::admin::start(a, Arc::new(Admin(metrics.clone())))
                    .map_err(|source| Error::Bind { addr: a, source })?,
            ),
            None => None,
        };
        let m = metrics.clone();
        let shards =
            runtime::shards::Shards::spawn("router", config.shards, config.pin, backend, {
                move |i| {
                    let l = listeners.lock().ok().and_then(|mut v| v[i].take());
                    async move {
                        if let Some(l) = l {
                            shard::run(i as u16, cfg, m, l).await;
                        }
                    }
                }
            })
            .map_err(Error::Runtime)?;
        tracing::info!(%addr, shards = config.shards, "router started");
        Ok(Router {
            addr,
            admin_addr,
            shards,
        })
    }

    /// Waits for the shards to end (they run until the process exits).
    pub fn join(self) -> std::io::Result<()> {
        self.shards.join()
    }
}
