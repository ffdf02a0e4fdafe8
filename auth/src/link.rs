//! Router<->gateway link authentication: a challenge-response over a shared secret, pure.
//!
//! Each side sends a random challenge nonce right after `Hello`; each answers the other's with
//! `HMAC-SHA256(secret, "connect-link/v1" | own role | peer's nonce)`. The role in the MAC stops
//! a reflected proof (an attacker bouncing one side's own challenge back at it), the fresh
//! nonce stops replays. A side acts on no other frame until the peer's proof checks out.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AuthError;

type HmacSha256 = Hmac<Sha256>;

const TAG: &[u8] = b"connect-link/v1";

/// One link's authentication state.
#[derive(Debug, Clone)]
pub struct LinkAuth {
    secret: Option<Arc<[u8]>>,
    role: u8,
    nonce: u64,
    verified: bool,
}

fn mac(secret: &[u8], role: u8, nonce: u64) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(TAG);
    m.update(&[role]);
    m.update(&nonce.to_be_bytes());
    m
}

impl LinkAuth {
    /// `secret`: the shared link secret, or `None` for unauthenticated links (then every peer
    /// may act at once). `own_role`: this side's role byte; `nonce`: a fresh random value.
    pub fn new(secret: Option<Arc<[u8]>>, own_role: u8, nonce: u64) -> LinkAuth {
        LinkAuth {
            secret,
            role: own_role,
            nonce,
            verified: false,
        }
    }

    /// The challenge to send after `Hello`, when a secret is configured.
    pub fn challenge(&self) -> Option<u64> {
        self.secret.as_ref().map(|_| self.nonce)
    }

    /// The proof answering the peer's challenge, when a secret is configured.
    pub fn prove(&self, peer_nonce: u64) -> Option<[u8; 32]> {
        let s = self.secret.as_ref()?;
        Some(mac(s, self.role, peer_nonce).finalize().into_bytes().into())
    }

    /// Checks the peer's proof of our challenge (constant time).
    pub fn check(&mut self, peer_role: u8, proof: &[u8; 32]) -> Result<(), AuthError> {
        let Some(s) = self.secret.as_ref() else {
            return Ok(());
        };
        mac(s, peer_role, self.nonce)
            .verify_slice(proof)
            .map_err(|_| AuthError::BadLinkProof)?;
        self.verified = true;
        Ok(())
    }

    /// Whether the peer's frames may be acted on.
    pub fn may_act(&self) -> bool {
        self.secret.is_none() || self.verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<Arc<[u8]>> {
        Some(Arc::from(s.as_bytes()))
    }

    #[test]
    fn both_sides_verify_each_other() {
        let mut gw = LinkAuth::new(secret("shared-secret-123"), 1, 111);
        let mut rt = LinkAuth::new(secret("shared-secret-123"), 2, 222);
        assert!(!gw.may_act() && !rt.may_act());
        let gw_proof = gw.prove(rt.challenge().unwrap()).unwrap();
        let rt_proof = rt.prove(gw.challenge().unwrap()).unwrap();
        rt.check(1, &gw_proof).unwrap();
        gw.check(2, &rt_proof).unwrap();
        assert!(gw.may_act() && rt.may_act());
    }

    #[test]
    fn wrong_secret_reflection_and_replay_fail() {
        let mut gw = LinkAuth::new(secret("shared-secret-123"), 1, 111);
        let evil = LinkAuth::new(secret("guessed-secret-00"), 2, 5);
        let forged = evil.prove(gw.challenge().unwrap()).unwrap();
        assert_eq!(gw.check(2, &forged), Err(AuthError::BadLinkProof));
        // Reflection: the gateway's own proof of its own nonce, claimed as a router's.
        let reflected = gw.prove(gw.challenge().unwrap()).unwrap();
        assert_eq!(gw.check(2, &reflected), Err(AuthError::BadLinkProof));
        // Replay: a valid proof for another nonce.
        let other = LinkAuth::new(secret("shared-secret-123"), 2, 5)
            .prove(999)
            .unwrap();
        assert_eq!(gw.check(2, &other), Err(AuthError::BadLinkProof));
        assert!(!gw.may_act());
    }

    #[test]
    fn without_a_secret_links_are_open() {
        let mut a = LinkAuth::new(None, 1, 1);
        assert!(a.may_act());
        assert_eq!(a.challenge(), None);
        assert_eq!(a.prove(7), None);
        assert!(a.check(2, &[0; 32]).is_ok());
    }
}
