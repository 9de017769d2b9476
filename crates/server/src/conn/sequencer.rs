//! Reply ordering, as a value with no I/O: which requests may start, and which replies
//! may go out, given the connection's ordering rule (docs/PROTOCOL.md, "Pipelining and
//! reply order").
//!
//! Every dispatched request takes the next sequence number and a slot. A slot is filled
//! with its reply when the request is done (at once, or later from the blocking pool).
//! Filled slots are released in sequence order when the connection is *strict* (V1, or
//! V2 without OUT_OF_ORDER), or as soon as they are filled otherwise, except that an
//! ORDERED slot goes out only after every earlier one, and nothing later passes it.

use std::collections::VecDeque;
use std::time::Instant;

/// One dispatched request whose reply has not been released yet.
struct Slot<R> {
    /// Answered only after every earlier request, and before every later one.
    ordered: bool,
    /// The reply, once the request is done.
    reply: Option<R>,
    /// The request's wire op byte (0 if unreadable), for the request counters.
    op: u8,
    /// When it was dispatched, for the latency histogram.
    started: Instant,
}

/// What a filled slot was, for counting it: its op byte and when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Done {
    pub(crate) op: u8,
    pub(crate) started: Instant,
}

/// The in-flight requests of one connection, by sequence number: a ring of slots, the
/// first numbered `base`, so a request costs no allocation once the ring has grown to
/// the connection's depth. A released slot is `None` until the ones before it go.
pub(crate) struct Sequencer<R> {
    slots: VecDeque<Option<Slot<R>>>,
    /// The sequence number of `slots[0]`.
    base: u64,
    /// Slots still holding a request.
    live: usize,
}

impl<R> Default for Sequencer<R> {
    fn default() -> Self {
        Sequencer {
            slots: VecDeque::new(),
            base: 0,
            live: 0,
        }
    }
}

impl<R> Sequencer<R> {
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Whether a request (ORDERED or not) may start now. `window`: `None` when strict (a
    /// request starts only once every earlier one is done), `Some(depth)` out of order (up
    /// to `depth` at once; an ORDERED one waits for all earlier ones and runs alone).
    pub(crate) fn may_start(&self, ordered: bool, window: Option<usize>) -> bool {
        match window {
            Some(depth) if !ordered => {
                self.live < depth && !self.slots.iter().flatten().any(|s| s.ordered)
            }
            _ => self.live == 0,
        }
    }

    /// Gives the next request its sequence number and an empty slot.
    pub(crate) fn begin(&mut self, ordered: bool, op: u8) -> u64 {
        let seq = self.base + self.slots.len() as u64;
        self.slots.push_back(Some(Slot {
            ordered,
            reply: None,
            op,
            started: Instant::now(),
        }));
        self.live += 1;
        seq
    }

    /// The index of slot `seq`, if it still holds a request.
    fn index(&self, seq: u64) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(i)?.as_ref().map(|_| i)
    }

    /// Empties slot `i` and drops the released slots at the front of the ring.
    fn take(&mut self, i: usize) -> Option<Slot<R>> {
        let slot = self.slots.get_mut(i)?.take();
        if slot.is_some() {
            self.live -= 1;
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        slot
    }

    /// Fills slot `seq` with its reply, hands every reply that may go out now to `emit`,
    /// in sequence order, and returns what the slot was (None if there is no such slot:
    /// abandoned). Allocates nothing on the common path.
    pub(crate) fn complete(
        &mut self,
        seq: u64,
        reply: R,
        strict: bool,
        mut emit: impl FnMut(R),
    ) -> Option<Done> {
        let Some(i) = self.index(seq) else {
            self.release(strict, &mut emit);
            return None;
        };
        // The common case (V1, or a pipeline answered in order): the oldest request is
        // done, and nothing can be ahead of it. Out it goes, without a scan.
        if i == 0 {
            let slot = self.take(0).expect("a live slot");
            emit(reply);
            if self.live > 0 {
                self.release(strict, &mut emit);
            }
            return Some(Done {
                op: slot.op,
                started: slot.started,
            });
        }
        let slot = self.slots[i].as_mut().expect("a live slot");
        slot.reply = Some(reply);
        let done = Done {
            op: slot.op,
            started: slot.started,
        };
        self.release(strict, &mut emit);
        Some(done)
    }

    /// Gives up on slot `seq` (a half-received request): it gets no reply. Hands the
    /// replies that may now go out to `emit`.
    pub(crate) fn abandon(&mut self, seq: u64, strict: bool, mut emit: impl FnMut(R)) {
        if let Some(i) = self.index(seq) {
            self.take(i);
        }
        self.release(strict, &mut emit);
    }

    /// Removes every reply that may go out now and hands it to `emit`, in sequence order.
    fn release(&mut self, strict: bool, emit: &mut impl FnMut(R)) {
        loop {
            // An earlier request is still running: nothing ordered may pass it.
            let mut gap = false;
            let mut next = None;
            for (i, slot) in self.slots.iter().enumerate() {
                let Some(slot) = slot else { continue };
                if strict || slot.ordered {
                    if !gap && slot.reply.is_some() {
                        next = Some(i);
                    }
                    break;
                } else if slot.reply.is_some() {
                    next = Some(i);
                    break;
                } else {
                    gap = true;
                }
            }
            let Some(i) = next else { return };
            if let Some(reply) = self.take(i).and_then(|s| s.reply) {
                emit(reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(
        s: &mut Sequencer<&'static str>,
        seq: u64,
        r: &'static str,
        strict: bool,
    ) -> Vec<&'static str> {
        let mut v = Vec::new();
        s.complete(seq, r, strict, |x| v.push(x));
        v
    }

    #[test]
    fn strict_releases_in_sequence_order() {
        let mut s = Sequencer::default();
        let (a, b, c) = (s.begin(false, 3), s.begin(false, 3), s.begin(false, 3));
        assert_eq!(out(&mut s, c, "c", true), Vec::<&str>::new());
        assert_eq!(out(&mut s, b, "b", true), Vec::<&str>::new());
        assert_eq!(out(&mut s, a, "a", true), vec!["a", "b", "c"]);
        assert!(s.is_empty());
    }

    #[test]
    fn out_of_order_releases_when_ready_but_not_past_an_ordered_slot() {
        let mut s = Sequencer::default();
        let a = s.begin(false, 3);
        let b = s.begin(false, 3);
        let o = s.begin(true, 5);
        let d = s.begin(false, 3);
        assert_eq!(out(&mut s, b, "b", false), vec!["b"]);
        // d is ready but sits behind the ORDERED o, which waits for a.
        assert_eq!(out(&mut s, d, "d", false), Vec::<&str>::new());
        assert_eq!(out(&mut s, o, "o", false), Vec::<&str>::new());
        assert_eq!(out(&mut s, a, "a", false), vec!["a", "o", "d"]);
        assert!(s.is_empty());
    }

    #[test]
    fn starting_follows_the_window_and_ordered_slots_run_alone() {
        let mut s: Sequencer<()> = Sequencer::default();
        assert!(s.may_start(false, None) && s.may_start(true, Some(2)));
        let a = s.begin(false, 3);
        assert!(!s.may_start(false, None), "strict: one at a time");
        assert!(s.may_start(false, Some(2)));
        assert!(
            !s.may_start(true, Some(2)),
            "ORDERED waits for every earlier one"
        );
        s.begin(false, 3);
        assert!(!s.may_start(false, Some(2)), "the window is full");
        s.complete(a, (), false, |_| {});
        assert!(s.may_start(false, Some(2)));
        let mut t: Sequencer<()> = Sequencer::default();
        t.begin(true, 5);
        assert!(
            !t.may_start(false, Some(8)),
            "nothing starts beside an ORDERED one"
        );
    }

    #[test]
    fn abandoning_a_slot_lets_later_replies_go() {
        let mut s = Sequencer::default();
        let a = s.begin(false, 5);
        let b = s.begin(false, 3);
        assert_eq!(out(&mut s, b, "b", true), Vec::<&str>::new());
        let mut v = Vec::new();
        s.abandon(a, true, |x| v.push(x));
        assert_eq!(v, vec!["b"]);
        // A reply for an abandoned slot is not counted and goes nowhere.
        assert_eq!(out(&mut s, a, "late", true), Vec::<&str>::new());
        assert!(s.complete(a, "late", true, |_| {}).is_none());
    }

    #[test]
    fn a_filled_slot_reports_what_it_was() {
        let mut s = Sequencer::default();
        let a = s.begin(false, 7);
        let done = s.complete(a, "x", true, |_| {});
        assert_eq!(done.map(|d| d.op), Some(7));
    }

    #[test]
    fn a_long_pipeline_completed_out_of_order_comes_out_in_order_when_strict() {
        let mut s: Sequencer<u64> = Sequencer::default();
        let mut inflight = Vec::new();
        let mut got = Vec::new();
        let mut x = 12345u64;
        for _ in 0..2000 {
            inflight.push(s.begin(false, 3));
            if inflight.len() == 16 {
                // Complete a pseudo-random one of the 16.
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let seq = inflight.swap_remove((x >> 33) as usize % inflight.len());
                assert!(s.complete(seq, seq, true, |r| got.push(r)).is_some());
            }
        }
        inflight.sort_unstable();
        for seq in inflight.into_iter().rev() {
            s.complete(seq, seq, true, |r| got.push(r));
        }
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert!(s.slots.is_empty(), "released slots are dropped");
    }
}
