//! Signing and verifying compact HS256 tokens: `b64(header).b64(payload).b64(signature)` with
//! base64url without padding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::claims::{valid_subject, Claims, RawClaims};
use crate::error::AuthError;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes. Bounds the work done on a token before its signature is
/// known to be good.
pub const MAX_TOKEN_LEN: usize = 4096;

/// `{"alg":"HS256","typ":"JWT"}`, base64url.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Option<std::borrow::Cow<'a, str>>,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// Signs `claims` with `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> String {
    // Serializing a struct of strings and integers cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(HEADER_B64.len() + 2 + payload.len() * 4 / 3 + 48);
    token.push_str(HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let mut mac = mac(secret);
    mac.update(token.as_bytes());
    let sig = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    token
}

/// Verifies `token` against `secret` at time `now_unix` (seconds), allowing `leeway_secs` of
/// clock skew on `exp` and `nbf`, and returns its claims.
///
/// Checks, in order: length, shape, header (`alg` must be `"HS256"`), signature (constant
/// time), payload JSON, `sub` present and valid, `exp` present and not passed, `nbf` reached.
pub fn verify_hs256(
    secret: &[u8],
    token: &str,
    now_unix: u64,
    leeway_secs: u64,
) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };

    let header = b64(header_b64)?;
    let header: Header<'_> = json_object(&header)?;
    if header.alg.as_deref() != Some("HS256") {
        return Err(AuthError::UnsupportedAlgorithm);
    }

    let sig = b64(sig_b64)?;
    let mut mac = mac(secret);
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)?;

    let payload = b64(payload_b64)?;
    let raw: RawClaims = json_object(&payload)?;
    let sub = raw.sub.ok_or(AuthError::MissingSubject)?;
    if !valid_subject(&sub) {
        return Err(AuthError::InvalidSubject);
    }
    let exp = raw.exp.ok_or(AuthError::MissingExpiry)?;
    if now_unix >= exp.saturating_add(leeway_secs) {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = raw.nbf {
        if now_unix.saturating_add(leeway_secs) < nbf {
            return Err(AuthError::NotYetValid);
        }
    }
    Ok(Claims {
        sub,
        exp,
        nbf: raw.nbf,
        iat: raw.iat,
    })
}

/// A token for `user`, valid from `now_unix` for `valid_for_secs`; for tools and tests.
pub fn dev_token(secret: &[u8], user: &str, valid_for_secs: u64, now_unix: u64) -> String {
    sign_hs256(
        secret,
        &Claims {
            sub: user.to_owned(),
            exp: now_unix.saturating_add(valid_for_secs),
            nbf: None,
            iat: Some(now_unix),
        },
    )
}

/// Strict base64url decoding: no padding, canonical trailing bits.
fn b64(segment: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)
}

/// Parses a JSON object (serde would also take a struct from a JSON array).
fn json_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AuthError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(AuthError::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| AuthError::Malformed)
}
