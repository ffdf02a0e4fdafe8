//! The Redis registry (`redis://`, `rediss://`, `redis-cluster://`, `rediss-cluster://`): the
//! schema's command batches sent over one shard-local [`resp_client::Client`].
//!
//! In cluster mode the client routes each command by its key's slot. Every key of a user
//! shares the `{<user>}` hash tag, so a per-user pipeline (`register`) stays on one node; a
//! multi-user `refresh` batch is split per node by the client and its replies reassembled.

use std::time::Duration;

use resp_client::{Batch, Client, Config};

use crate::future::RegistryFuture;
use crate::schema::{self, now_ms, ttl_ms};
use crate::{Error, GatewayRecord, RegistryOptions, SessionEntry};

/// A registry on one Redis, owned by one glommio executor (clones share its connection).
#[derive(Clone)]
pub struct RedisRegistry {
    client: Client,
}

impl RedisRegistry {
    /// Parses the URL (see [`crate::Registry::connect`]) and starts the client (connecting in
    /// the background). Call on the executor that will use it.
    ///
    /// # Panics
    /// Outside a glommio executor.
    pub fn connect(url: &str, opts: &RegistryOptions) -> Result<RedisRegistry, Error> {
        let parsed = Config::from_url(url).map_err(|e| match e {
            resp_client::Error::Unsupported(m) => Error::Unsupported(m),
            other => Error::InvalidUrl(other.to_string()),
        })?;
        let mut config = opts.redis.clone();
        config.addr = parsed.addr;
        config.db = parsed.db;
        config.username = parsed.username;
        config.password = parsed.password;
        config.cluster = parsed.cluster;
        config.seeds = parsed.seeds;
        // TLS from the URL; a template's TLS settings fill in what the URL leaves out.
        config.tls = match (parsed.tls, opts.redis.tls.clone()) {
            (None, _) => None,
            (Some(url), None) => Some(url),
            (Some(url), Some(template)) => {
                let mut tls = template;
                if url.ca_file.is_some() {
                    tls.ca_file = url.ca_file;
                }
                if url.server_name.is_some() {
                    tls.server_name = url.server_name;
                }
                Some(tls)
            }
        };
        config
            .validate()
            .map_err(|e| Error::InvalidUrl(e.to_string()))?;
        Ok(RedisRegistry::with_client(Client::new(config)))
    }

    /// A registry over an existing client.
    pub fn with_client(client: Client) -> RedisRegistry {
        RedisRegistry { client }
    }

    /// The underlying client (for its [`resp_client::Stats`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`crate::Registry::register`].
    pub fn register(&self, entry: &SessionEntry, ttl: Duration) -> RegistryFuture<()> {
        if let Err(e) = entry.validate() {
            return RegistryFuture::ready(Err(e));
        }
        let mut batch = Batch::new();
        schema::push_register(&mut batch, entry, ttl_ms(ttl), now_ms());
        RegistryFuture::batch(self.client.submit_batch(batch), schema::check_writes)
    }

    /// See [`crate::Registry::refresh`].
    pub fn refresh(&self, entries: &[SessionEntry], ttl: Duration) -> RegistryFuture<()> {
        if let Some(e) = entries.iter().find_map(|e| e.validate().err()) {
            return RegistryFuture::ready(Err(e));
        }
        let (ttl, now) = (ttl_ms(ttl), now_ms());
        let mut batch = Batch::new();
        for entry in entries {
            schema::push_upsert(&mut batch, entry, ttl, now);
        }
        RegistryFuture::batch(self.client.submit_batch(batch), schema::check_writes)
    }

    /// See [`crate::Registry::unregister`].
    pub fn unregister(&self, entry: &SessionEntry) -> RegistryFuture<bool> {
        if let Err(e) = entry.validate() {
            return RegistryFuture::ready(Err(e));
        }
        let key = schema::key(&entry.user);
        let member = schema::member(entry);
        let reply = self
            .client
            .submit(&[b"ZREM", key.as_bytes(), member.as_bytes()]);
        RegistryFuture::one(reply, String::new(), |_, r| schema::parse_unregister(r))
    }

    /// See [`crate::Registry::lookup`].
    pub fn lookup(&self, user: &str) -> RegistryFuture<Vec<SessionEntry>> {
        if let Err(e) = crate::entry::validate_user(user) {
            return RegistryFuture::ready(Err(e));
        }
        let args = schema::lookup_args(user, now_ms());
        let args: [&[u8]; 5] = [&args[0], &args[1], &args[2], &args[3], &args[4]];
        let reply = self.client.submit(&args);
        RegistryFuture::one(reply, user.to_string(), schema::parse_lookup)
    }

    /// See [`crate::Registry::remove_sessions`].
    pub fn remove_sessions(&self, entries: &[SessionEntry]) -> RegistryFuture<u64> {
        if let Some(e) = entries.iter().find_map(|e| e.validate().err()) {
            return RegistryFuture::ready(Err(e));
        }
        let mut batch = Batch::new();
        for entry in entries {
            let key = schema::key(&entry.user);
            let member = schema::member(entry);
            batch.push(&[b"ZREM", key.as_bytes(), member.as_bytes()]);
        }
        RegistryFuture::batch(self.client.submit_batch(batch), schema::count_removed)
    }

    /// See [`crate::Registry::heartbeat`].
    pub fn heartbeat(&self, gw: &GatewayRecord, ttl: Duration) -> RegistryFuture<bool> {
        if let Err(e) = gw.validate() {
            return RegistryFuture::ready(Err(e));
        }
        let mut batch = Batch::new();
        schema::push_heartbeat(&mut batch, gw, ttl_ms(ttl), now_ms());
        RegistryFuture::batch(self.client.submit_batch(batch), schema::parse_heartbeat)
    }

    /// See [`crate::Registry::retire`].
    pub fn retire(&self, gw: &GatewayRecord) -> RegistryFuture<bool> {
        if let Err(e) = gw.validate() {
            return RegistryFuture::ready(Err(e));
        }
        let member = schema::gateway_member(gw);
        let reply =
            self.client
                .submit(&[b"ZREM", schema::GATEWAYS_KEY.as_bytes(), member.as_bytes()]);
        RegistryFuture::one(reply, String::new(), |_, r| schema::parse_unregister(r))
    }

    /// See [`crate::Registry::live_gateways`].
    pub fn live_gateways(&self) -> RegistryFuture<Vec<GatewayRecord>> {
        let args = schema::live_gateways_args(now_ms());
        let args: [&[u8]; 5] = [&args[0], &args[1], &args[2], &args[3], &args[4]];
        let reply = self.client.submit(&args);
        RegistryFuture::one(reply, String::new(), schema::parse_live_gateways)
    }
}
