//! In-order reply matching for one connection, as a state machine with no I/O and no clock.
//!
//! Redis answers the commands of one connection in the order it received them, so the oldest
//! pending request owns the next reply. [`Pipeline`] holds one slot per request in a FIFO
//! (`S` is whatever completes the request: a oneshot cell in the client, a plain value in
//! tests), each with its deadline computed from the `now` passed to [`Pipeline::push`], or,
//! for requests pushed with [`Pipeline::push_unsent`], from the `now` passed to
//! [`Pipeline::mark_sent`] when the writer takes them (one clock read per write, not per
//! request).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Error;

/// Pending requests of one connection, oldest first.
#[derive(Debug)]
pub struct Pipeline<S> {
    pending: VecDeque<Pending<S>>,
    timeout: Duration,
    max_in_flight: usize,
    /// The newest `unsent` requests have no deadline yet (pushed with
    /// [`Pipeline::push_unsent`], not yet [`Pipeline::mark_sent`]); their `deadline` field is
    /// a placeholder.
    unsent: usize,
    /// The placeholder deadline of unsent requests.
    epoch: Instant,
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
            unsent: 0,
            epoch: Instant::now(),
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
        self.push_unsent(slot);
        self.mark_sent(now);
    }

    /// Appends a request whose timeout starts at the next [`Pipeline::mark_sent`] (when the
    /// writer takes it). Call [`Pipeline::check_room`] first, as for [`Pipeline::push`].
    #[inline]
    pub fn push_unsent(&mut self, slot: S) {
        debug_assert!(self.pending.len() < self.max_in_flight);
        self.pending.push_back(Pending {
            slot,
            deadline: self.epoch,
        });
        self.unsent += 1;
    }

    /// Starts the timeout of every request pushed with [`Pipeline::push_unsent`] since the
    /// last call: they were handed to the socket at `now`.
    #[inline]
    pub fn mark_sent(&mut self, now: Instant) {
        if self.unsent == 0 {
            return;
        }
        let deadline = now + self.timeout;
        let from = self.pending.len() - self.unsent;
        for p in self.pending.range_mut(from..) {
            p.deadline = deadline;
        }
        self.unsent = 0;
    }

    /// Requests pushed with [`Pipeline::push_unsent`] and not marked sent yet.
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// The slot that owns the reply just decoded (the oldest), or `None` if no request is
    /// pending: an unsolicited reply, which is a protocol violation.
    #[inline]
    pub fn on_reply(&mut self) -> Option<S> {
        if self.unsent == self.pending.len() {
            // A reply to a request not written yet: matched in order all the same (the
            // caller's check); keep the count of unsent requests right.
            self.unsent = self.unsent.saturating_sub(1);
        }
        self.pending.pop_front().map(|p| p.slot)
    }

    /// Like [`Pipeline::on_reply`], also giving when the request was sent (for latency). For a
    /// request not marked sent that time is unknown: the pipeline's creation time is given
    /// ([`Pipeline::sent_at_front`] tells the two apart).
    pub fn on_reply_timed(&mut self) -> Option<(S, Instant)> {
        let sent = self.sent_at_front().unwrap_or(self.epoch);
        self.on_reply().map(|slot| (slot, sent))
    }

    /// When the oldest request was sent (`None` if none is pending or it is unsent).
    pub fn sent_at_front(&self) -> Option<Instant> {
        self.next_deadline()
            .map(|d| d.checked_sub(self.timeout).unwrap_or(d))
    }

    /// When the oldest request expires (`None` if no request is pending, or the oldest is not
    /// sent yet). Later requests never expire earlier (same timeout, sent later), so this is
    /// the only deadline to wait for.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.unsent == self.pending.len() {
            return None;
        }
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
        self.unsent = 0;
    }

    /// Removes every pending request (e.g. never sent, to be failed with one error).
    pub fn take_all(&mut self) -> Vec<S> {
        self.unsent = 0;
        self.pending.drain(..).map(|p| p.slot).collect()
    }

    /// Removes every pending request, pairing each with its error: the oldest gets `first`
    /// (the cause: the timeout, protocol error or lost connection), each later one
    /// [`Error::Timeout`] if it is past its deadline at `now`, else `rest`.
    pub fn fail_all(&mut self, first: Error, rest: Error, now: Instant) -> Vec<(S, Error)> {
        let mut out = Vec::with_capacity(self.pending.len());
        let mut first = Some(first);
        let sent = self.pending.len() - self.unsent;
        self.unsent = 0;
        for (i, p) in self.pending.drain(..).enumerate() {
            let err = match first.take() {
                Some(e) => e,
                None if i < sent && p.deadline <= now => Error::Timeout,
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
    fn unsent_requests_time_out_from_when_they_are_sent() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(T, 10);
        p.push_unsent(1);
        p.push_unsent(2);
        assert_eq!(p.unsent(), 2);
        assert_eq!(
            p.next_deadline(),
            None,
            "nothing sent: nothing can time out"
        );
        assert!(!p.is_expired(t0 + T * 100));
        p.mark_sent(t0 + T);
        assert_eq!(p.unsent(), 0);
        assert_eq!(p.next_deadline(), Some(t0 + T * 2));
        p.push_unsent(3);
        assert_eq!(p.sent_at_front(), Some(t0 + T));
        assert_eq!(p.on_reply_timed(), Some((1, t0 + T)));
        assert_eq!(p.on_reply(), Some(2));
        assert_eq!(p.next_deadline(), None, "3 is not sent yet");
        assert_eq!(p.sent_at_front(), None);
        assert_eq!(p.on_reply(), Some(3));
        assert_eq!(p.unsent(), 0);
        // Unsent requests never fail with Timeout, whatever their placeholder deadline.
        p.push(4, t0);
        p.push_unsent(5);
        let failed = p.fail_all(Error::ConnectionLost, Error::ConnectionLost, t0 + T * 9);
        assert_eq!(
            failed,
            vec![(4, Error::ConnectionLost), (5, Error::ConnectionLost)]
        );
        assert_eq!(p.unsent(), 0);
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
