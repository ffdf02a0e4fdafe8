//! Who is who in a run: connection `i` is user `u{i}`, partnered with its neighbour (`u0` and
//! `u1` message each other, `u2` and `u3`, ...), and dials gateway `i mod G`. Partners are
//! neighbours and gateways go round-robin, so with two or more gateway URLs every message
//! crosses from one gateway to another.
//!
//! With `--devices K`, connection `g` is device `g % K` of user `g / K`; users pair as above,
//! and every device of a user sends to its partner, whose K devices all receive each message.
//!
//! Everything is a function of the index alone, so several perf processes get disjoint index
//! ranges ([`split`]), each a whole number of user pairs, and keep the same pairing.

/// The user id of connection `i`.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

/// The connection that connection `i` sends to.
pub fn peer(i: usize) -> usize {
    i ^ 1
}

/// The user of connection `g` when every user has `devices` connections.
pub fn user_of(g: usize, devices: usize) -> usize {
    g / devices.max(1)
}

/// Splits `clients` connections into at most `parts` contiguous ranges `(offset, count)` of
/// whole user pairs (`2 * devices` connections), as even as possible, none empty.
pub fn split(clients: usize, devices: usize, parts: usize) -> Vec<(usize, usize)> {
    let unit = 2 * devices.max(1);
    let units = clients / unit;
    let parts = parts.clamp(1, units.max(1));
    let mut out = Vec::with_capacity(parts);
    let mut offset = 0;
    for p in 0..parts {
        let n = units / parts + usize::from(p < units % parts);
        let mut count = n * unit;
        if p == parts - 1 {
            // Whatever does not fill a unit goes to the last part.
            count = clients - offset;
        }
        out.push((offset, count));
        offset += count;
    }
    out
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

    #[test]
    fn devices_map_to_users() {
        assert_eq!(user_of(5, 1), 5);
        assert_eq!((user_of(0, 3), user_of(2, 3), user_of(3, 3)), (0, 0, 1));
        // Two devices over two gateways: each user has one device on each.
        assert_ne!(gateway(4, 2), gateway(5, 2));
    }

    #[test]
    fn split_keeps_pairs_together_and_covers_everything() {
        assert_eq!(split(10, 1, 1), vec![(0, 10)]);
        assert_eq!(
            split(40_000, 1, 3),
            vec![(0, 13_334), (13_334, 13_334), (26_668, 13_332)]
        );
        for (clients, devices, parts) in [(40_000, 2, 3), (100, 3, 4), (12, 1, 7), (2, 1, 5)] {
            let s = split(clients, devices, parts);
            assert!(s.len() <= parts);
            assert_eq!(s.iter().map(|p| p.1).sum::<usize>(), clients);
            let mut next = 0;
            for &(offset, count) in &s {
                assert_eq!(offset, next);
                assert!(count > 0);
                assert_eq!(offset % (2 * devices), 0, "{s:?}");
                next += count;
            }
        }
    }
}
