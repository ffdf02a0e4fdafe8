//! [`SessionEntry`]: one live WebSocket session as the registry stores it; [`GatewayRecord`]:
//! one running gateway process; and their validation.

use crate::Error;

/// One session of a user: which gateway shard holds its socket and how routers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionEntry {
    /// The user id (validated by the gateway: 1..=128 bytes of `[A-Za-z0-9._@+:-]`; the
    /// registry itself rejects only what would break its schema: empty, `{`, `}`, `|`).
    pub user: String,
    /// The session id, unique per connection (stored as 16 lowercase hex digits).
    pub session: u64,
    /// The gateway instance id (no `|`).
    pub instance: String,
    /// The boot epoch of that gateway process (unix ms at start): a session is live only
    /// while its gateway's liveness record carries the same epoch.
    pub epoch: u64,
    /// The gateway shard (executor) holding the socket.
    pub shard: u16,
    /// Internal `host:port` of that gateway shard, as routers dial it (no `|`).
    pub addr: String,
}

/// Checks a user id against the schema's needs: non-empty, no `{` `}` (the key's hash tag) and
/// no `|` (the member separator).
pub fn validate_user(user: &str) -> Result<(), Error> {
    if user.is_empty() || user.contains(['{', '}', '|']) {
        return Err(Error::InvalidUser(user.chars().take(160).collect()));
    }
    Ok(())
}

impl SessionEntry {
    /// Checks every field the schema encodes (see [`validate_user`]; instance and address
    /// must not contain `|`).
    pub fn validate(&self) -> Result<(), Error> {
        validate_user(&self.user)?;
        if self.instance.contains('|') {
            return Err(Error::InvalidEntry(format!(
                "instance id {:?} contains '|'",
                self.instance
            )));
        }
        if self.addr.contains('|') {
            return Err(Error::InvalidEntry(format!(
                "address {:?} contains '|'",
                self.addr
            )));
        }
        Ok(())
    }
}

/// One running gateway process, as its liveness record names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayRecord {
    /// The gateway instance id (no `|`).
    pub instance: String,
    /// Its boot epoch (unix ms at start); a restart under the same instance id gets a larger
    /// one, which marks every session of the earlier process as gone.
    pub epoch: u64,
    /// Its advertised internal address (shard 0's), for operators (no `|`).
    pub addr: String,
}

impl GatewayRecord {
    /// Checks the fields the schema encodes: instance and address must not contain `|`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.instance.is_empty() || self.instance.contains('|') {
            return Err(Error::InvalidEntry(format!(
                "instance id {:?} is empty or contains '|'",
                self.instance
            )));
        }
        if self.addr.contains('|') {
            return Err(Error::InvalidEntry(format!(
                "address {:?} contains '|'",
                self.addr
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, instance: &str, addr: &str) -> SessionEntry {
        SessionEntry {
            user: user.into(),
            session: 1,
            instance: instance.into(),
            epoch: 1,
            shard: 0,
            addr: addr.into(),
        }
    }

    #[test]
    fn validation() {
        entry("alice@example.com", "gw-1", "10.0.0.1:7001")
            .validate()
            .unwrap();
        for user in ["", "a{b", "a}b", "a|b", "{alice}"] {
            assert!(
                matches!(
                    entry(user, "gw", "h:1").validate(),
                    Err(Error::InvalidUser(_))
                ),
                "{user:?}"
            );
        }
        assert!(matches!(
            entry("u", "g|w", "h:1").validate(),
            Err(Error::InvalidEntry(_))
        ));
        assert!(matches!(
            entry("u", "gw", "h|1").validate(),
            Err(Error::InvalidEntry(_))
        ));
        let gw = |instance: &str, addr: &str| GatewayRecord {
            instance: instance.into(),
            epoch: 1,
            addr: addr.into(),
        };
        gw("gw-1", "10.0.0.1:7200").validate().unwrap();
        for (i, a) in [("", "h:1"), ("g|w", "h:1"), ("gw", "h|1")] {
            assert!(gw(i, a).validate().is_err(), "{i:?} {a:?}");
        }
    }
}
