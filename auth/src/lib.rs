//! HS256 JSON Web Tokens, signed and verified with no I/O and no clock: the caller passes the
//! current time, so expiry is tested without sleeping.
//!
//! Only what Connect needs: a compact JWS with header `{"alg":"HS256"}` (`typ` optional and
//! ignored) and the claims `sub` (the user id), `exp` (required), `nbf` and `iat`. Any other
//! algorithm, `none` included, is refused before the signature is looked at; the payload is
//! parsed only after its signature checks out.
//!
//! # Layout
//!
//! * [`claims`]: [`Claims`] and the subject syntax.
//! * [`jwt`]: [`sign_hs256`], [`verify_hs256`], [`dev_token`].
//! * [`link`]: [`LinkAuth`], the router<->gateway link challenge-response.
//! * [`error`]: the [`AuthError`] enum.

pub mod claims;
pub mod error;
pub mod jwt;
pub mod link;

pub use claims::{valid_subject, Claims, MAX_SUBJECT_LEN};
pub use error::AuthError;
pub use jwt::{dev_token, sign_hs256, verify_hs256, MAX_TOKEN_LEN};
pub use link::LinkAuth;
