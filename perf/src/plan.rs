//! Who is who in a run: connection `i` is user `u{i}`, partnered with its neighbour (`u0` and
//! `u1` message each other, `u2` and `u3`, ...), and dials gateway `i mod G`. Partners are
//! neighbours and gateways go round-robin, so with two or more gateway URLs every message
//! crosses from one gateway to another.
//!
//! Everything is a function of the index alone, so a later coordinator can give several perf
//! processes disjoint index ranges and keep the same pairing.

/// The user id of connection `i`.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

/// The connection that connection `i` sends to.
pub fn peer(i: usize) -> usize {
    i ^ 1
}

/// Which of `gateways` URLs connection `i` dials.
pub fn gateway(i: usize, gateways: usize) -> usize {
    i % gateways.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_mutual() {
        assert_eq!(user(7), "u7");
        for i in 0..100 {
            assert_ne!(peer(i), i);
            assert_eq!(peer(peer(i)), i);
        }
        assert_eq!((peer(0), peer(1), peer(4), peer(5)), (1, 0, 5, 4));
    }

    #[test]
    fn partners_sit_on_different_gateways() {
        for gateways in 2..5 {
            for i in 0..100 {
                assert_ne!(gateway(i, gateways), gateway(peer(i), gateways));
            }
        }
        assert_eq!(gateway(5, 1), 0);
        assert_eq!(gateway(5, 0), 0);
    }
}
