//! The claims Connect reads from a token.

use serde::{Deserialize, Serialize};

/// Longest subject (user id), in bytes. Matches the gateway's user-id rule; kept local so this
/// crate depends on nothing of Connect's.
pub const MAX_SUBJECT_LEN: usize = 128;

/// Token claims. Times are Unix seconds (JWT NumericDate, integers only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user id.
    pub sub: String,
    /// Expiry: the token is refused from this second on (plus leeway).
    pub exp: u64,
    /// Not before: the token is refused before this second (minus leeway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Whether `sub` is a valid subject: 1 to [`MAX_SUBJECT_LEN`] bytes of `[A-Za-z0-9._@+:-]`.
pub fn valid_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= MAX_SUBJECT_LEN
        && sub.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b':' | b'-')
        })
}

/// The payload as it arrives: every claim optional, so a missing one gets its own error.
#[derive(Deserialize)]
pub(crate) struct RawClaims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub exp: Option<u64>,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iat: Option<u64>,
}
