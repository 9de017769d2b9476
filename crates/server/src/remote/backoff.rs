//! How long failed remote work waits before it is tried again: each upload, delete and
//! purge for itself ([`delay`], kept with the item in the queue as a time before which
//! no task takes it), and the tier as a whole ([`Tier`]) while its requests fail.
//!
//! The upload tasks used to sleep after a failure and put the item back at the front
//! of the queue, where another of the (up to 32) tasks took it at once: under a steady
//! `503 SlowDown` 7 PUTs a second went out, and 10 requests a second under `403`, for
//! one object (found from outside). Now the backoff belongs to the work and to the
//! tier, not to the task that happened to send it.

use std::time::{Duration, Instant};

/// The first wait after a failure.
pub(super) const FIRST: Duration = Duration::from_millis(100);

/// The longest wait: a tier that answers again is used within this.
pub(super) const MAX: Duration = Duration::from_secs(30);

/// The wait before the next try of work that failed `failures` times in a row:
/// 100 ms, doubling, at most 30 s.
pub(super) fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST * (1u32 << doublings)).min(MAX)
}

/// The tier as a whole: while its requests fail (unreachable, refusing this host,
/// without its bucket), one request at a time goes per backoff, whichever task and
/// item it is; the first answer lets every task go again.
#[derive(Debug, Default)]
pub(super) struct Tier {
    /// Failing, with the current wait and the time before which no request goes.
    failing: Option<(Duration, Instant)>,
    /// Since when the one request let through while failing is in flight.
    probe: Option<Instant>,
    /// Bumped at each failure counted: a request sent before it (several were in
    /// flight when the tier failed) does not double the wait again.
    generation: u64,
}

/// How a request was let through (see [`Tier::failed`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    generation: u64,
    probe: bool,
}

impl Tier {
    /// Whether a request may go now; else the time to look again.
    pub(super) fn ready(&self, now: Instant) -> Result<(), Instant> {
        let Some((_, next)) = self.failing else {
            return Ok(());
        };
        if now < next {
            return Err(next);
        }
        match self.probe {
            // One at a time; one that hangs is not waited for beyond the longest
            // backoff.
            Some(since) if now < since + MAX => Err(since + MAX),
            _ => Ok(()),
        }
    }

    /// A request goes now (after [`Tier::ready`]): while the tier fails, it is the one
    /// let through, and the next waits for its outcome and a backoff.
    pub(super) fn sending(&mut self, now: Instant) -> Ticket {
        let probe = self.failing.is_some();
        if probe {
            self.probe = Some(now);
        }
        Ticket {
            generation: self.generation,
            probe,
        }
    }

    /// The request of `ticket` failed in a way that says the tier fails: the wait
    /// doubles (once for the requests that were in flight together).
    pub(super) fn failed(&mut self, ticket: Ticket, now: Instant) {
        if ticket.probe {
            self.probe = None;
        }
        let current = ticket.generation == self.generation;
        let wait = match self.failing {
            None => FIRST,
            Some((wait, _)) if current => (wait * 2).min(MAX),
            Some((wait, _)) => wait,
        };
        if self.failing.is_none() || current {
            self.generation += 1;
        }
        self.failing = Some((wait, now + wait));
    }

    /// The work let through with `ticket` made no request after all (an upload whose
    /// version is gone): the next task may go.
    pub(super) fn unused(&mut self, ticket: Ticket) {
        if ticket.probe {
            self.probe = None;
        }
    }

    /// A request was answered: the tier is used again by every task. Returns whether
    /// it was failing (the caller wakes the tasks waiting).
    pub(super) fn answered(&mut self) -> bool {
        self.probe = None;
        self.failing.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_wait_doubles_from_100_ms_to_30_s() {
        let ms = |n| delay(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4)],
            [100, 100, 200, 400, 800]
        );
        assert_eq!(delay(9), Duration::from_millis(25_600));
        assert_eq!(delay(10), MAX);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn a_failing_tier_lets_one_request_through_per_backoff() {
        let t0 = Instant::now();
        let mut t = Tier::default();
        assert!(t.ready(t0).is_ok());
        let first = t.sending(t0);
        // Another task's request in flight at the same time.
        let other = t.sending(t0);
        t.failed(first, t0);
        assert_eq!(t.ready(t0), Err(t0 + FIRST));
        // The other request failing too does not double the wait.
        t.failed(other, t0);
        assert_eq!(t.ready(t0), Err(t0 + FIRST));
        let t1 = t0 + FIRST;
        assert!(t.ready(t1).is_ok());
        let probe = t.sending(t1);
        // While the probe runs, nobody else goes, however long it takes (up to the
        // longest backoff).
        assert!(t.ready(t1 + FIRST * 5).is_err());
        assert!(t.ready(t1 + MAX).is_ok(), "a hung probe is not waited for");
        let t2 = t1 + FIRST * 4;
        t.failed(probe, t2);
        assert_eq!(t.ready(t2), Err(t2 + 2 * FIRST));
        // Doubling up to the bound.
        let mut now = t2;
        for _ in 0..20 {
            now += MAX;
            let p = t.sending(now);
            t.failed(p, now);
        }
        assert_eq!(t.ready(now), Err(now + MAX));
        // A probe that made no request lets the next one go.
        let unused = t.sending(now + MAX);
        assert!(t.ready(now + MAX).is_err());
        t.unused(unused);
        assert!(t.ready(now + MAX).is_ok());
        assert!(t.answered(), "it was failing");
        assert!(t.ready(now).is_ok());
        assert!(!t.answered());
        // A new failure starts from the first wait again.
        let p = t.sending(now);
        t.failed(p, now);
        assert_eq!(t.ready(now), Err(now + FIRST));
    }
}
