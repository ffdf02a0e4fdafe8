//! Per-sender sequence tracking on the receiving side: is each message new, late (arrived after
//! a later one from the same sender, an order violation) or a duplicate?
//!
//! Memory is proportional to the number of *gaps* (runs of sequences not seen yet below the
//! highest seen), not to the number of messages: in a healthy run that is zero.

use std::collections::BTreeMap;

/// How one observed sequence number relates to those seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Higher than everything seen so far.
    InOrder,
    /// Not seen before, but a higher one was: the sender's order was not kept.
    Late,
    /// Seen before.
    Duplicate,
}

/// Sequences seen from one sender.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// One past the highest sequence seen (0: none yet).
    next: u64,
    /// Unseen runs below `next`: start -> end (exclusive).
    gaps: BTreeMap<u64, u64>,
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) -> Seen {
        if seq >= self.next {
            if seq > self.next {
                self.gaps.insert(self.next, seq);
            }
            self.next = seq + 1;
            return Seen::InOrder;
        }
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return Seen::Duplicate;
        };
        if seq >= end {
            return Seen::Duplicate;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        Seen::Late
    }

    /// Sequences below the highest seen that have not arrived (yet).
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut t = SeqTracker::default();
        for s in 0..100 {
            assert_eq!(t.observe(s), Seen::InOrder);
        }
        assert_eq!(t.missing(), 0);
        assert!(t.gaps.is_empty());
    }

    #[test]
    fn reordering_is_late_and_repeats_are_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Seen::InOrder);
        assert_eq!(t.observe(3), Seen::InOrder); // 1, 2 skipped
        assert_eq!(t.missing(), 2);
        assert_eq!(t.observe(2), Seen::Late);
        assert_eq!(t.observe(1), Seen::Late);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.observe(1), Seen::Duplicate);
        assert_eq!(t.observe(3), Seen::Duplicate);
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert_eq!(t.observe(4), Seen::InOrder);
    }

    #[test]
    fn a_late_arrival_splits_its_gap() {
        let mut t = SeqTracker::default();
        t.observe(10); // gap 0..10
        assert_eq!(t.observe(5), Seen::Late);
        assert_eq!(t.gaps.len(), 2);
        assert_eq!(t.missing(), 9);
        assert_eq!(t.observe(5), Seen::Duplicate);
        assert_eq!(t.observe(0), Seen::Late);
        assert_eq!(t.observe(9), Seen::Late);
        assert_eq!(t.missing(), 7);
        assert_eq!(t.observe(20), Seen::InOrder); // new gap 11..20
        assert_eq!(t.observe(11), Seen::Late);
        assert_eq!(t.observe(10), Seen::Duplicate);
        assert_eq!(t.missing(), 7 + 8);
    }

    #[test]
    fn first_message_may_be_anything() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Seen::InOrder);
        assert_eq!(t.observe(0), Seen::Duplicate);
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(2), Seen::InOrder);
        assert_eq!(t.observe(0), Seen::Late);
    }
}
