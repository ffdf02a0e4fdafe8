//! Link authentication on the frame level: the `Challenge`/`Proof` exchange of `auth::link`,
//! and what happens to a peer's frames before its proof has checked out.
//!
//! Both sides queue data right after their `Hello` and `Challenge` (a router fills a link's
//! queue while it connects), so a peer's first data frames usually arrive before its proof,
//! which needs our challenge first. They are held, not acted on, and released in order once the
//! proof checks out; a wrong proof, or more than [`MAX_HELD`] frames without one, ends the link
//! without acting on any of them.

use std::collections::VecDeque;

use auth::LinkAuth;

use crate::frame::{Frame, Role};

/// Frames a peer may send before its proof arrives.
pub const MAX_HELD: usize = 4096;

/// One link's authentication state and the frames waiting for it.
#[derive(Debug)]
pub struct LinkGuard {
    auth: LinkAuth,
    peer_role: Role,
    held: VecDeque<Frame>,
}

impl LinkGuard {
    /// Guards a link whose peer must prove it holds the secret `auth` was made with.
    pub fn new(auth: LinkAuth, peer_role: Role) -> LinkGuard {
        LinkGuard {
            auth,
            peer_role,
            held: VecDeque::new(),
        }
    }

    /// Whether the peer may be acted on (proved the secret, or none is configured).
    pub fn authenticated(&self) -> bool {
        self.auth.may_act()
    }

    /// The challenge to send after `Hello`, when a secret is configured.
    pub fn challenge(&self) -> Option<u64> {
        self.auth.challenge()
    }

    /// Feeds one frame from the peer. `Hello` goes to `act` at once (the caller checks it); a
    /// `Challenge` is answered through `prove`; a `Proof` is checked, and then the held frames
    /// go to `act` in order; other frames go to `act` once the peer is authenticated and are
    /// held until then. `Err`: end the link.
    pub fn feed(
        &mut self,
        frame: Frame,
        prove: impl FnOnce(&[u8; 32]),
        mut act: impl FnMut(Frame) -> Result<(), String>,
    ) -> Result<(), String> {
        match frame {
            Frame::Hello { .. } => act(frame),
            Frame::Challenge { nonce } => {
                if let Some(mac) = self.auth.prove(nonce) {
                    prove(&mac);
                }
                Ok(())
            }
            Frame::Proof { mac } => {
                self.auth
                    .check(self.peer_role as u8, &mac)
                    .map_err(|e| e.to_string())?;
                while let Some(f) = self.held.pop_front() {
                    act(f)?;
                }
                Ok(())
            }
            other if self.auth.may_act() => act(other),
            other => {
                if self.held.len() >= MAX_HELD {
                    return Err("link peer sent too much before proving the link secret".into());
                }
                self.held.push_back(other);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn secret() -> Option<Arc<[u8]>> {
        Some(Arc::from(&b"link-secret-0123"[..]))
    }

    #[test]
    fn frames_before_the_proof_are_held_then_released_in_order() {
        let mut gw = LinkGuard::new(
            LinkAuth::new(secret(), Role::Gateway as u8, 1),
            Role::Router,
        );
        let router = LinkAuth::new(secret(), Role::Router as u8, 2);
        let mut acted = Vec::new();
        for n in [10, 11] {
            gw.feed(
                Frame::Ping { nonce: n },
                |_| {},
                |f| {
                    acted.push(f);
                    Ok(())
                },
            )
            .unwrap();
        }
        assert!(acted.is_empty(), "nothing acted on before the proof");
        let mut proof = None;
        gw.feed(
            Frame::Challenge { nonce: 2 },
            |m| proof = Some(*m),
            |_| Ok(()),
        )
        .unwrap();
        assert!(
            proof.is_some(),
            "the gateway answers the router's challenge"
        );
        let mac = router.prove(1).unwrap();
        gw.feed(
            Frame::Proof { mac },
            |_| {},
            |f| {
                acted.push(f);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            acted,
            vec![Frame::Ping { nonce: 10 }, Frame::Ping { nonce: 11 }]
        );
    }

    #[test]
    fn bad_proof_or_too_much_ends_the_link_unacted() {
        let mut gw = LinkGuard::new(LinkAuth::new(secret(), 1, 1), Role::Router);
        gw.feed(Frame::Ping { nonce: 1 }, |_| {}, |_| panic!("acted"))
            .unwrap();
        let r = gw.feed(Frame::Proof { mac: [0; 32] }, |_| {}, |_| panic!("acted"));
        assert!(r.is_err());
        let mut gw = LinkGuard::new(LinkAuth::new(secret(), 1, 1), Role::Router);
        let r = (0..=MAX_HELD).try_for_each(|n| {
            gw.feed(Frame::Ping { nonce: n as u64 }, |_| {}, |_| panic!("acted"))
        });
        assert!(r.is_err());
    }

    #[test]
    fn without_a_secret_everything_passes() {
        let mut gw = LinkGuard::new(LinkAuth::new(None, 1, 1), Role::Router);
        assert_eq!(gw.challenge(), None);
        let mut n = 0;
        gw.feed(
            Frame::Ping { nonce: 1 },
            |_| {},
            |_| {
                n += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 1);
    }
}
