//! [`AuthError`]: why a token was refused.

use thiserror::Error;

/// Why [`crate::verify_hs256`] refused a token.
///
/// All come from the client (its token), none is fatal for the server: answer `401
/// Unauthorized` and close. Retrying the same token never helps; `Expired` and `NotYetValid`
/// mean the client should fetch a fresh token (or the clocks disagree by more than the
/// leeway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The token is longer than [`crate::MAX_TOKEN_LEN`]; refused before any decoding.
    #[error("token too long")]
    TooLong,
    /// Not three base64url (unpadded) segments, or a segment is not the JSON it should be,
    /// or a claim has the wrong type.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not exactly `"HS256"` (e.g. `none`, `RS256`, `HS512`).
    #[error("unsupported algorithm (only HS256 is accepted)")]
    UnsupportedAlgorithm,
    /// The signature does not match: wrong key or a tampered token.
    #[error("bad signature")]
    BadSignature,
    /// `now >= exp + leeway`.
    #[error("token expired")]
    Expired,
    /// `now + leeway < nbf`.
    #[error("token not yet valid")]
    NotYetValid,
    /// No `exp` claim: Connect refuses tokens that never expire.
    #[error("token has no expiry (`exp`)")]
    MissingExpiry,
    /// No `sub` claim.
    #[error("token has no subject (`sub`)")]
    MissingSubject,
    /// `sub` is not a valid user id (see [`crate::valid_subject`]).
    #[error("token subject is not a valid user id")]
    InvalidSubject,
    /// A router<->gateway link peer's proof did not match our challenge under the shared link
    /// secret (wrong secret, or no secret on its side). Fatal for the link: disconnect it.
    #[error("link peer failed the challenge: wrong or missing link secret")]
    BadLinkProof,
}
