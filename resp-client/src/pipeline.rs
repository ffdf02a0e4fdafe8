//! In-order reply matching for one connection, as a state machine with no I/O and no clock.
//!
//! Redis answers the commands of one connection in the order it received them, so the oldest
//! pending request owns the next reply. [`Pipeline`] holds one slot per request in a FIFO
//! (`S` is whatever completes the request: a oneshot cell in the client, a plain value in
//! tests), each with its deadline computed from the `now` passed to [`Pipeline::push`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Error;

/// Pending requests of one connection, oldest first.
#[derive(Debug)]
pub struct Pipeline<S> {
    pending: VecDeque<Pending<S>>,
    timeout: Duration,
    max_in_flight: usize,
}

#[derive(Debug)]
struct Pending<S> {
    slot: S,
    deadline: Instant,
}

impl<S> Pipeline<S> {
    /// An empty pipeline whose requests expire `timeout` after they are pushed and which holds
    /// at most `max_in_flight` of them.
    pub fn new(timeout: Duration, max_in_flight: usize) -> Pipeline<S> {
        Pipeline {
            pending: VecDeque::new(),
            timeout,
            max_in_flight,
        }
    }

    /// Number of requests waiting for a reply.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when no request waits for a reply.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// `Ok` if `n` more requests fit, else [`Error::Overloaded`] (push nothing then).
    pub fn check_room(&self, n: usize) -> Result<(), Error> {
        if n > self.max_in_flight.saturating_sub(self.pending.len()) {
            return Err(Error::Overloaded {
                max_in_flight: self.max_in_flight,
            });
        }
        Ok(())
    }

    /// Appends a request sent at `now`. Call [`Pipeline::check_room`] first; the bound is the
    /// caller's promise, checked here only in debug builds.
    pub fn push(&mut self, slot: S, now: Instant) {
        debug_assert!(self.pending.len() < self.max_in_flight);
        self.pending.push_back(Pending {
            slot,
            deadline: now + self.timeout,
        });
    }

    /// The slot that owns the reply just decoded (the oldest), or `None` if no request is
    /// pending: an unsolicited reply, which is a protocol violation.
    pub fn on_reply(&mut self) -> Option<S> {
        self.pending.pop_front().map(|p| p.slot)
    }

    /// Like [`Pipeline::on_reply`], also giving when the request was pushed (for latency).
    pub fn on_reply_timed(&mut self) -> Option<(S, Instant)> {
        let timeout = self.timeout;
        self.pending.pop_front().map(|p| {
            (
                p.slot,
                p.deadline.checked_sub(timeout).unwrap_or(p.deadline),
            )
        })
    }

    /// When the oldest request expires. Later requests never expire earlier (same timeout,
    /// pushed later), so this is the only deadline to wait for.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.deadline)
    }

    /// True when the oldest request has passed its deadline at `now`: the connection must be
    /// reset, since a late reply can no longer be told apart from the next one.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.next_deadline().is_some_and(|d| d <= now)
    }

    /// Restarts every pending request's timeout at `now`: for requests queued before the
    /// connection existed, whose time only starts once they can be sent.
    pub fn restart_deadlines(&mut self, now: Instant) {
        for p in &mut self.pending {
            p.deadline = now + self.timeout;
        }
    }

    /// Removes every pending request (e.g. never sent, to be failed with one error).
    pub fn take_all(&mut self) -> Vec<S> {
        self.pending.drain(..).map(|p| p.slot).collect()
    }

    /// Removes every pending request, pairing each with its error: the oldest gets `first`
    /// (the cause: the timeout, protocol error or lost connection), each later one
    /// [`Error::Timeout`] if it is past its deadline at `now`, else `rest`.
    pub fn fail_all(&mut self, first: Error, rest: Error, now: Instant) -> Vec<(S, Error)> {
        let mut out = Vec::with_capacity(self.pending.len());
        let mut first = Some(first);
        for p in self.pending.drain(..) {
            let err = match first.take() {
                Some(e) => e,
                None if p.deadline <= now => Error::Timeout,
                None => rest.clone(),
            };
            out.push((p.slot, err));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn replies_match_in_push_order() {
        let now = Instant::now();
        let mut p = Pipeline::new(T, 10);
        for i in 0..5 {
            p.push(i, now);
        }
        assert_eq!(p.len(), 5);
        for i in 0..4 {
            assert_eq!(p.on_reply(), Some(i));
        }
        assert_eq!(p.on_reply_timed(), Some((4, now)), "pushed at now");
        assert_eq!(
            p.on_reply(),
            None,
            "a reply with nothing pending is unsolicited"
        );
        assert!(p.is_empty());
    }

    #[test]
    fn bounded_depth() {
        let now = Instant::now();
        let mut p = Pipeline::new(T, 3);
        p.check_room(3).unwrap();
        p.push('a', now);
        p.push('b', now);
        assert!(p.check_room(1).is_ok());
        assert_eq!(p.check_room(2), Err(Error::Overloaded { max_in_flight: 3 }));
        p.push('c', now);
        assert!(p.check_room(1).is_err());
        p.on_reply();
        assert!(p.check_room(1).is_ok());
    }

    #[test]
    fn deadlines_follow_the_oldest() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(T, 10);
        assert_eq!(p.next_deadline(), None);
        assert!(!p.is_expired(t0 + T * 10));
        p.push(1, t0);
        p.push(2, t0 + T / 2);
        assert_eq!(p.next_deadline(), Some(t0 + T));
        assert!(!p.is_expired(t0 + T / 2));
        assert!(p.is_expired(t0 + T));
        p.on_reply();
        assert_eq!(p.next_deadline(), Some(t0 + T + T / 2));
        assert!(!p.is_expired(t0 + T));
    }

    #[test]
    fn restart_deadlines_counts_from_now() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(T, 10);
        p.push(1, t0);
        p.push(2, t0 + T / 2);
        p.restart_deadlines(t0 + T * 3);
        assert!(!p.is_expired(t0 + T * 3));
        assert_eq!(p.next_deadline(), Some(t0 + T * 4));
        assert_eq!(p.take_all(), vec![1, 2]);
        assert!(p.is_empty());
    }

    #[test]
    fn fail_all_gives_cause_to_oldest() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(T, 10);
        p.push(1, t0);
        p.push(2, t0);
        p.push(3, t0 + T);
        let failed = p.fail_all(Error::Timeout, Error::ConnectionLost, t0 + T);
        assert_eq!(
            failed,
            vec![
                (1, Error::Timeout),
                (2, Error::Timeout),
                (3, Error::ConnectionLost)
            ]
        );
        assert!(p.is_empty());
        p.push(4, t0);
        let failed = p.fail_all(Error::Protocol("x".into()), Error::ConnectionLost, t0);
        assert_eq!(failed, vec![(4, Error::Protocol("x".into()))]);
    }
}
