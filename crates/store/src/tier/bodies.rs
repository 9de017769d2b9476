//! The bytes of small object versions, kept in the daemon's memory after their first
//! read ([`crate::Store::read_body`]), so that a GET whose bytes travel inline copies
//! them from here: no file to open, no `pread`. Object files are immutable and each
//! version's bytes were checked against its record when they were read, so an entry
//! stays right for as long as its version lives; it leaves with the version's file
//! ([`super::Tier::unlink_object`]), and a second-chance FIFO keeps the total within
//! the tier's budget (`StoreConfig::body_cache_bytes`).

use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::sync::Arc;

/// Largest object whose bytes the cache keeps.
pub const SMALL_BODY_MAX: u64 = 16 * 1024;

/// Cached bodies by version (versions are never reused, so an entry can never stand for
/// another object).
#[derive(Debug, Default)]
pub(crate) struct Bodies {
    map: FxHashMap<u64, Cached>,
    /// Insertion order for eviction; may hold versions already removed (skipped).
    order: VecDeque<u64>,
    /// Bytes of the bodies in `map`.
    bytes: u64,
}

#[derive(Debug)]
struct Cached {
    body: Arc<[u8]>,
    /// Read since it was last passed over by eviction: it gets a second chance.
    used: bool,
}

impl Bodies {
    /// The body of `version`, if kept.
    #[inline]
    pub(crate) fn get(&mut self, version: u64) -> Option<Arc<[u8]>> {
        let c = self.map.get_mut(&version)?;
        c.used = true;
        Some(c.body.clone())
    }

    /// Keeps `body` as `version`'s, evicting others until the total is within `budget`
    /// bytes. A body larger than the budget (or than [`SMALL_BODY_MAX`]) is not kept.
    pub(crate) fn insert(&mut self, version: u64, body: Arc<[u8]>, budget: u64) {
        let len = body.len() as u64;
        if len > budget || len > SMALL_BODY_MAX {
            return;
        }
        match self.map.entry(version) {
            Entry::Occupied(_) => return,
            Entry::Vacant(v) => {
                v.insert(Cached { body, used: false });
            }
        }
        self.order.push_back(version);
        self.bytes += len;
        // Each pass evicts, or clears one entry's mark, or passes over the new body
        // (which fits the budget alone), so this ends.
        while self.bytes > budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.map.get_mut(&old) {
                None => {}
                Some(c) if c.used || old == version => {
                    c.used = false;
                    self.order.push_back(old);
                }
                Some(_) => self.remove(old),
            }
        }
        // Versions removed from `map` leave stale slots in `order`: drop them before
        // they outnumber the live ones.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order.retain(|v| map.contains_key(v));
        }
    }

    /// Forgets `version`'s body (its file is being unlinked or moved away).
    #[inline]
    pub(crate) fn remove(&mut self, version: u64) {
        if let Some(c) = self.map.remove(&version) {
            self.bytes -= c.body.len() as u64;
        }
    }

    /// Bodies kept, and their bytes.
    pub(crate) fn usage(&self) -> (usize, u64) {
        (self.map.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize, b: u8) -> Arc<[u8]> {
        vec![b; n].into()
    }

    #[test]
    fn keeps_within_the_budget_and_evicts_the_oldest_unused() {
        let mut c = Bodies::default();
        for v in 1..=4 {
            c.insert(v, body(1000, v as u8), 3000);
        }
        assert_eq!(c.usage(), (3, 3000));
        assert!(c.get(1).is_none(), "the oldest went first");
        assert_eq!(&*c.get(2).unwrap(), &[2u8; 1000][..]);
        // 2 was read: it survives the next eviction, 3 (unread) does not.
        c.insert(5, body(1000, 5), 3000);
        assert!(c.get(2).is_some());
        assert!(c.get(3).is_none());
        assert!(c.get(4).is_some() && c.get(5).is_some());
        assert_eq!(c.usage(), (3, 3000));
    }

    #[test]
    fn refuses_what_cannot_fit_and_forgets_removed_versions() {
        let mut c = Bodies::default();
        c.insert(1, body(100, 1), 50);
        assert_eq!(c.usage(), (0, 0), "larger than the budget");
        c.insert(2, body(SMALL_BODY_MAX as usize + 1, 2), u64::MAX);
        assert_eq!(c.usage(), (0, 0), "larger than SMALL_BODY_MAX");
        c.insert(3, body(10, 3), 0);
        assert_eq!(c.usage(), (0, 0), "budget 0 keeps nothing");
        c.insert(4, body(10, 4), 100);
        c.insert(4, body(10, 9), 100);
        assert_eq!(
            &*c.get(4).unwrap(),
            &[4u8; 10][..],
            "a version's body is set once"
        );
        c.remove(4);
        assert!(c.get(4).is_none());
        assert_eq!(c.usage(), (0, 0));
        // Stale order slots are compacted away.
        for v in 10..1000 {
            c.insert(v, body(1, 0), 100);
            c.remove(v);
        }
        assert!(c.order.len() <= 64 + 2, "{}", c.order.len());
    }

    #[test]
    fn an_all_used_cache_still_evicts() {
        let mut c = Bodies::default();
        for v in 1..=3 {
            c.insert(v, body(10, 0), 30);
            c.get(v);
        }
        c.insert(4, body(10, 0), 30);
        assert_eq!(c.usage(), (3, 30));
        assert!(c.get(4).is_some(), "the new body stays");
    }
}
