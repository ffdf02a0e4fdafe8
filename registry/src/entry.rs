//! [`SessionEntry`]: one live WebSocket session as the registry stores it, and its validation.

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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, instance: &str, addr: &str) -> SessionEntry {
        SessionEntry {
            user: user.into(),
            session: 1,
            instance: instance.into(),
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
    }
}
