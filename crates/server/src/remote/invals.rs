//! Deletes and purges made here that the tier does not have yet, in the order they were
//! made: each sent by one upload task at a time (every host reads every event, so a
//! duplicate costs the fleet), and one that failed not sent again before its backoff.

use std::time::Instant;

use super::backoff;
use super::journal::Inval;

/// Most purges sent together (one write of the purge set).
pub(super) const PURGE_BATCH: usize = 256;

#[derive(Debug)]
struct Pending {
    inval: Inval,
    /// A task is sending it.
    sending: bool,
    /// How many times in a row it failed.
    failures: u32,
    /// Not sent again before this (after a failure).
    not_before: Option<Instant>,
}

/// The pending deletes and purges.
#[derive(Debug, Default)]
pub(super) struct Invals {
    list: Vec<Pending>,
}

impl Invals {
    pub(super) fn new(invals: Vec<Inval>) -> Invals {
        let mut v = Invals::default();
        for i in invals {
            v.push(i);
        }
        v
    }

    pub(super) fn push(&mut self, inval: Inval) {
        self.list.push(Pending {
            inval,
            sending: false,
            failures: 0,
            not_before: None,
        });
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Inval> {
        self.list.iter().map(|p| &p.inval)
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn due(p: &Pending, now: Instant) -> bool {
        !p.sending && p.not_before.is_none_or(|t| t <= now)
    }

    /// The oldest delete or purge no task is sending and whose backoff is over at
    /// `now`, marked as being sent; with a purge, up to [`PURGE_BATCH`] such purges
    /// (one write of the purge set for all). Finish each with [`Invals::settled`] or
    /// [`Invals::failed`].
    pub(super) fn claim(&mut self, now: Instant) -> Vec<Inval> {
        let Some(first) = self.list.iter().position(|p| Self::due(p, now)) else {
            return Vec::new();
        };
        if matches!(self.list[first].inval, Inval::Delete(..)) {
            self.list[first].sending = true;
            return vec![self.list[first].inval.clone()];
        }
        self.list
            .iter_mut()
            .skip(first)
            .filter(|p| Self::due(p, now) && matches!(p.inval, Inval::Purge(..)))
            .take(PURGE_BATCH)
            .map(|p| {
                p.sending = true;
                p.inval.clone()
            })
            .collect()
    }

    /// `i` is on the tier (or given up): no longer pending.
    pub(super) fn settled(&mut self, i: &Inval) {
        self.list.retain(|p| p.inval != *i);
    }

    /// `i` failed at `now`: any task sends it again once its backoff is over.
    pub(super) fn failed(&mut self, i: &Inval, now: Instant) {
        if let Some(p) = self.list.iter_mut().find(|p| p.inval == *i) {
            p.sending = false;
            p.failures = p.failures.saturating_add(1);
            p.not_before = Some(now + backoff::delay(p.failures));
        }
    }

    /// When the first one waiting out a backoff is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter(|p| !p.sending)
            .filter_map(|p| p.not_before)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(s: u64) -> Inval {
        Inval::Delete(s, b"k".to_vec().into())
    }

    fn purge(s: u64) -> Inval {
        Inval::Purge(s, b"p/".to_vec().into())
    }

    #[test]
    fn each_goes_to_one_task_at_a_time_and_purges_go_together() {
        let now = Instant::now();
        let mut v = Invals::new(vec![purge(1), delete(2), purge(3)]);
        assert_eq!(v.claim(now), vec![purge(1), purge(3)]);
        assert_eq!(v.claim(now), vec![delete(2)]);
        assert!(v.claim(now).is_empty(), "all being sent");
        v.settled(&purge(1));
        v.settled(&purge(3));
        v.settled(&delete(2));
        assert!(v.is_empty());
    }

    /// One that failed waits out its backoff, whichever task asks; the others go
    /// meanwhile.
    #[test]
    fn a_failed_one_waits_out_its_backoff() {
        let t0 = Instant::now();
        let mut v = Invals::new(vec![delete(1), delete(2)]);
        assert_eq!(v.claim(t0), vec![delete(1)]);
        v.failed(&delete(1), t0);
        assert_eq!(v.next_due(), Some(t0 + backoff::FIRST));
        assert_eq!(v.claim(t0), vec![delete(2)], "the other goes");
        assert!(v.claim(t0).is_empty(), "not before its backoff");
        let t1 = t0 + backoff::FIRST;
        assert_eq!(v.claim(t1), vec![delete(1)]);
        v.failed(&delete(1), t1);
        assert!(v.claim(t1 + backoff::FIRST).is_empty(), "twice as long");
        assert_eq!(v.claim(t1 + 2 * backoff::FIRST), vec![delete(1)]);
        assert_eq!(v.len(), 2);
    }
}
