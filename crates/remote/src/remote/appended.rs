//! The events this client has appended, by content, so that one event (one kind,
//! subject and stamp) goes to the shared log once however often the work that appends
//! it is tried: each attempt of a conditional write that loses a race (the "write over a
//! live version" delete event is appended before the write), each retry of a whole
//! upload, delete or purge batch by the upload queue. Every host reads every event, so
//! a duplicate costs the fleet; behind a gateway whose ETags `If-Match` refused, one key
//! appended 4,389 events in 75 s (found from outside).
//!
//! The memory is bounded ([`MAX`], the oldest forgotten first) and lives as long as the
//! client: after a restart, or past the bound, an event may be appended once more. An
//! append that failed is not remembered (the store may not have it), so it is tried
//! again with the work; an error after the store took it can cost one duplicate.

use std::collections::{HashSet, VecDeque};

use sha2::{Digest, Sha256};

/// Events remembered at once: more than the upload queue holds by default (100,000),
/// so that every pending write stuck retrying keeps its event remembered. About 40
/// bytes each.
pub(super) const MAX: usize = 1 << 17;

/// What identifies an event: the first half of the SHA-256 of its encoding (the key
/// or prefix is another host's input; a 128-bit digest of a cryptographic hash is not
/// made to collide by choosing keys).
pub(super) type Id = [u8; 16];

/// The identity of the event encoded as `body`.
pub(super) fn id(body: &[u8]) -> Id {
    let d = Sha256::digest(body);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// A bounded set of event ids, the oldest dropped first.
#[derive(Debug)]
pub(super) struct Appended {
    ids: HashSet<Id>,
    order: VecDeque<Id>,
    max: usize,
}

impl Default for Appended {
    fn default() -> Self {
        Appended::with_max(MAX)
    }
}

impl Appended {
    fn with_max(max: usize) -> Self {
        Appended {
            ids: HashSet::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Whether the event was appended by this client (and not forgotten since).
    pub(super) fn contains(&self, id: &Id) -> bool {
        self.ids.contains(id)
    }

    /// Remembers an event the store took.
    pub(super) fn insert(&mut self, id: Id) {
        if !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_remembered_until_the_bound_pushes_it_out() {
        let mut a = Appended::with_max(2);
        let (x, y, z) = (id(b"x"), id(b"y"), id(b"z"));
        assert!(!a.contains(&x));
        a.insert(x);
        a.insert(x);
        a.insert(y);
        assert!(a.contains(&x) && a.contains(&y));
        a.insert(z);
        assert!(!a.contains(&x), "the oldest goes first");
        assert!(a.contains(&y) && a.contains(&z));
        assert_eq!(a.order.len(), 2);
    }

    #[test]
    fn the_same_encoding_is_the_same_event_and_another_is_not() {
        assert_eq!(id(b"event"), id(b"event"));
        assert_ne!(id(b"event"), id(b"event2"));
    }
}
