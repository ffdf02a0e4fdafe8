//! A FIFO of deadlines for requests that all get the same timeout: deadlines arrive in order,
//! so expiring is a pop from the front (no timer per request, no scan).

use std::collections::VecDeque;
use std::time::Instant;

/// Ids with their deadlines, in the order they were pushed.
#[derive(Debug, Default)]
pub struct Deadlines {
    queue: VecDeque<(Instant, u64)>,
}

impl Deadlines {
    /// Adds `id`, due at `at` (not earlier than any deadline pushed before, for a fixed timeout).
    pub fn push(&mut self, at: Instant, id: u64) {
        self.queue.push_back((at, id));
    }

    /// The next id whose deadline has passed at `now`. Ids already answered are still
    /// returned; the caller ignores those it no longer tracks.
    pub fn pop_expired(&mut self, now: Instant) -> Option<u64> {
        match self.queue.front() {
            Some((at, id)) if *at <= now => {
                let id = *id;
                self.queue.pop_front();
                Some(id)
            }
            _ => None,
        }
    }

    /// Entries queued (answered or not).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_only_what_is_due_in_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.push(t0 + Duration::from_millis(10), 1);
        d.push(t0 + Duration::from_millis(20), 2);
        assert_eq!(d.pop_expired(t0), None);
        assert_eq!(d.pop_expired(t0 + Duration::from_millis(15)), Some(1));
        assert_eq!(d.pop_expired(t0 + Duration::from_millis(15)), None);
        assert_eq!(d.pop_expired(t0 + Duration::from_millis(20)), Some(2));
        assert!(d.is_empty());
    }
}
