//! Cache eviction policies: S3-FIFO (what the store uses) and LRU (the
//! baseline it is measured against).
//!
//! A policy is a pure, I/O-free bookkeeping engine; each tier (memory, disk)
//! owns one. It never sees keys or data. The caller names each object by an
//! opaque `u64` id (the store uses its slab slot and generation; an id may
//! be reused once it has been removed or evicted), gives a `u64` fingerprint
//! (a hash of the key, stable across id reuse, used for ghost tracking) and
//! a size in bytes. Capacity is a byte budget *and* an object budget; the
//! cache is over capacity when either is exceeded.
//!
//! Typical use on a miss:
//!
//! ```
//! use objmapper_store::policy::S3Fifo;
//!
//! let mut policy = S3Fifo::new(1 << 30, 1_000_000);
//! let (id, fingerprint, size) = (42, 0x9e37_79b9_7f4a_7c15, 4096);
//! while policy.needs_eviction(size) {
//!     match policy.evict() {
//!         Some(_victim) => { /* drop the victim's data */ }
//!         None => break, // the rest is pinned: skip caching, or go over
//!     }
//! }
//! policy.insert(id, fingerprint, size);
//! assert!(policy.touch(id)); // a later hit
//! ```
//!
//! # S3-FIFO
//!
//! [`S3Fifo`] follows Yang et al., "FIFO queues are all you need for cache
//! eviction" (SOSP '23): a small FIFO queue S (by default 10% of capacity)
//! that new objects enter, a main FIFO queue M, and a ghost G of the
//! fingerprints of objects evicted from S. Each object has a 2-bit
//! saturating access counter; a hit only bumps it (no queue movement).
//! Eviction takes from S while S is over its share: an object whose counter
//! reached [`S3FifoConfig::promote_threshold`] moves to M (where its counter
//! restarts at 0), any other is evicted and its fingerprint goes to G.
//! Otherwise eviction takes from M, reinserting objects with a non-zero
//! counter (decremented) at the tail, CLOCK style, and evicting the first
//! one whose counter is zero. An insert whose fingerprint is in G goes
//! straight to M (and leaves G).
//!
//! Pinned objects wait on a list of their own, outside S and M, so
//! eviction never scans them; unpinning puts an object back at the tail of
//! its queue. Every operation is O(1) (eviction amortized: each
//! reinsertion in M pays back one earlier hit).
//!
//! # Memory
//!
//! Per resident object (see [`S3Fifo::heap_bytes`], which adds up the
//! actual allocations):
//!
//! - a 24-byte node (id, 32-bit fingerprint, size and flags packed in 32
//!   bits, two 32-bit links) in a slab allocated in chunks of 1024 nodes, so
//!   growth never over-allocates by more than one chunk. The queues are
//!   intrusive doubly linked lists through these nodes: no separate queue
//!   slots, and removal is exact and O(1) (no tombstones to compact);
//! - a 4-byte bucket (slot number, plus hash bits that spare most probes a
//!   node read) in an open-addressing id → slot table kept between 47%
//!   and 70% full: 5.7 to 8.6 bytes;
//! - the ghost: 4 bytes per remembered fingerprint in 16-way sets (one
//!   cache line each), sized to `ghost_ratio` (0.9) × resident objects:
//!   about 3.6 bytes.
//!
//! That is 33 to 36.5 bytes per object; at 1,000,000 objects `heap_bytes`
//! reports 35.7 bytes per object for [`S3Fifo`] and 36.1 for [`Lru`] (whose
//! ghost is the size of the cache), and a counting allocator agreed to the
//! byte. Sizes of 2^28 - 1 bytes and up do not fit the packed field and
//! cost an extra `HashMap<u32, u64>` entry each. Memory is sized for the
//! high-water mark: removing objects or shrinking the capacity frees slab
//! slots for reuse but returns nothing to the allocator.
//!
//! Fingerprints are folded to 32 bits, so a ghost lookup has a false
//! positive rate of about (ghost entries) / 2^32, 0.02% at a million; the
//! ghost is a per-set FIFO, so it approximates a global FIFO of the most
//! recent evictions from S rather than being exactly one.

use std::collections::HashMap;
use std::mem::size_of;

/// "No slot" (end of a list or of the free list).
/// The read-only accessors [`S3Fifo`] and [`Lru`] share: each delegates
/// to the policy's `Table`. Expanded inside each type's `impl` block.
macro_rules! table_accessors {
    () => {
        /// Whether `id` is resident and pinned.
        pub fn is_pinned(&self, id: u64) -> bool {
            self.t.is_pinned(id)
        }

        /// Whether adding one object of `incoming` bytes would exceed the byte
        /// or the object capacity.
        pub fn needs_eviction(&self, incoming: u64) -> bool {
            self.t.needs_eviction(incoming)
        }

        /// Whether the byte or the object capacity is exceeded now.
        pub fn over_capacity(&self) -> bool {
            self.t.over_capacity()
        }

        /// Whether `id` is resident.
        pub fn contains(&self, id: u64) -> bool {
            self.t.find(id).is_some()
        }

        /// Number of resident objects, pinned ones included.
        pub fn len(&self) -> usize {
            self.t.len()
        }

        /// Whether no object is resident.
        pub fn is_empty(&self) -> bool {
            self.t.len() == 0
        }

        /// Sum of the sizes of resident objects, pinned ones included.
        pub fn used_bytes(&self) -> u64 {
            self.t.used_bytes
        }

        /// `(bytes, objects)` capacity.
        pub fn capacity(&self) -> (u64, u64) {
            (self.t.cap_bytes, self.t.cap_objects)
        }

        /// Heap memory held by the policy: slab chunks, index, ghost and the
        /// side table of very large sizes (estimated from its capacity).
        pub fn heap_bytes(&self) -> usize {
            self.t.heap_bytes()
        }
    };
}

mod lru;
mod table;

use table::*;

const NIL: u32 = u32::MAX;

/// Node flags, in the low bits of `Node::meta`: 2-bit access counter...
const FREQ_MASK: u32 = 0b11;
/// ...largest counter value...
const MAX_FREQ: u8 = 3;
/// ...the object's home queue is M (S3-FIFO; always set by [`Lru`])...
const HOME_MAIN: u32 = 1 << 2;
/// ...and the object is pinned (it sits on the pinned list).
const PINNED: u32 = 1 << 3;
/// The size lives in the remaining 28 bits...
const SIZE_SHIFT: u32 = 4;
/// ...where this value means "look it up in `Table::big`".
const SIZE_BIG: u32 = u32::MAX >> SIZE_SHIFT;

/// Nodes per slab chunk (a power of two).
const CHUNK_SHIFT: u32 = 10;
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// Ways per ghost set: 16 × 4 bytes = one cache line.
const GHOST_WAYS: usize = 16;

/// List numbers in `Table::lists`. [`Lru`] keeps its recency list in
/// `Q_MAIN` (front = least recently used).
const Q_SMALL: usize = 0;
const Q_MAIN: usize = 1;
const Q_PINNED: usize = 2;

/// The operations shared by [`S3Fifo`] and [`Lru`], for code (benchmarks,
/// tests) that wants to drive either. Both types also have every method as
/// an inherent method, so the store does not need this trait in scope.
pub trait EvictionPolicy {
    /// Changes the capacity. Nothing is evicted here: the caller evicts
    /// until [`over_capacity`](Self::over_capacity) is false.
    fn set_capacity(&mut self, bytes: u64, objects: u64);
    /// Adds a resident object. `id` must not be resident (checked by a
    /// debug assertion; in release builds the old entry is replaced).
    /// Evict first (see [`needs_eviction`](Self::needs_eviction)): `insert`
    /// itself never evicts.
    fn insert(&mut self, id: u64, fingerprint: u64, size: u64);
    /// Records a hit. Returns false if `id` is not resident.
    fn touch(&mut self, id: u64) -> bool;
    /// Forgets a resident object (delete, expiry, migration to another
    /// tier) without recording it in the ghost. Returns false if `id` is
    /// not resident.
    fn remove(&mut self, id: u64) -> bool;
    /// Pins or unpins `id`; a pinned object is never returned by
    /// [`evict`](Self::evict) but still counts against capacity. Returns
    /// false if `id` is not resident.
    fn set_pinned(&mut self, id: u64, pinned: bool) -> bool;
    /// Whether `id` is resident and pinned.
    fn is_pinned(&self, id: u64) -> bool;
    /// Whether adding one object of `incoming` bytes would exceed either
    /// capacity.
    fn needs_eviction(&self, incoming: u64) -> bool;
    /// Whether either capacity is exceeded now (after a shrink, say).
    fn over_capacity(&self) -> bool;
    /// Removes and returns the next victim, or None if no resident object
    /// is unpinned. Always returns promptly.
    fn evict(&mut self) -> Option<u64>;
    /// The access counter of a resident object (0..=3).
    fn frequency(&self, id: u64) -> Option<u8>;
    /// Whether an object with this fingerprint was evicted recently
    /// (the ghost).
    fn was_recently_evicted(&self, fingerprint: u64) -> bool;
    /// Whether `id` is resident.
    fn contains(&self, id: u64) -> bool;
    /// Number of resident objects, pinned ones included.
    fn len(&self) -> usize;
    /// Whether no object is resident.
    fn is_empty(&self) -> bool;
    /// Sum of the sizes of resident objects, pinned ones included.
    fn used_bytes(&self) -> u64;
    /// `(bytes, objects)` capacity.
    fn capacity(&self) -> (u64, u64);
    /// Heap memory held by the policy, in bytes.
    fn heap_bytes(&self) -> usize;
}

/// Tuning parameters of [`S3Fifo`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct S3FifoConfig {
    /// Share of the capacity (bytes and objects alike) given to the small
    /// queue S; clamped to 0.01..=0.9. Default 0.1, as in the paper.
    pub small_ratio: f64,
    /// An object leaving S moves to M if it was hit at least this many
    /// times while in S; clamped to 1..=3. Default 1 (the "freq > 0"
    /// variant): with S at 10% it beat 2 in both mean and worst-case
    /// difference to LRU; see `docs/BENCHMARKS.md`.
    pub promote_threshold: u8,
    /// Ghost size as a fraction of the number of resident objects; clamped
    /// to 0.0..=4.0. Default 0.9, the share of M.
    pub ghost_ratio: f64,
    /// Also record objects evicted from M in the ghost, so that
    /// [`S3Fifo::was_recently_evicted`] covers every eviction and such an
    /// object comes back straight into M. The paper records only S's
    /// evictions. Default false (the paper's rule), although true measured
    /// slightly better on the synthetic traces; see `docs/BENCHMARKS.md`.
    pub ghost_main_evictions: bool,
}

impl Default for S3FifoConfig {
    fn default() -> Self {
        S3FifoConfig {
            small_ratio: 0.1,
            promote_threshold: 1,
            ghost_ratio: 0.9,
            ghost_main_evictions: false,
        }
    }
}

/// S3-FIFO eviction policy; see the [module documentation](self).
#[derive(Debug)]
pub struct S3Fifo {
    t: Table,
    config: S3FifoConfig,
    /// S's share of the capacity: S is evicted from once it holds this
    /// many bytes or objects.
    small_target_bytes: u64,
    small_target_objects: u64,
}

/// LRU eviction policy, the baseline. Same methods as [`S3Fifo`]; a hit
/// moves the object to the most recently used end, and every eviction is
/// recorded in a ghost the size of the cache.
#[derive(Debug)]
pub struct Lru {
    t: Table,
}

// ---------------------------------------------------------------------------
// S3-FIFO

impl S3Fifo {
    /// An empty policy with the given capacity and the default
    /// [`S3FifoConfig`]. Pass `u64::MAX` for a dimension that should not
    /// limit.
    pub fn new(capacity_bytes: u64, capacity_objects: u64) -> Self {
        Self::with_config(capacity_bytes, capacity_objects, S3FifoConfig::default())
    }

    /// An empty policy with explicit tuning parameters (clamped to their
    /// documented ranges).
    pub fn with_config(capacity_bytes: u64, capacity_objects: u64, config: S3FifoConfig) -> Self {
        let config = S3FifoConfig {
            small_ratio: config.small_ratio.clamp(0.01, 0.9),
            promote_threshold: config.promote_threshold.clamp(1, MAX_FREQ),
            ghost_ratio: config.ghost_ratio.clamp(0.0, 4.0),
            ghost_main_evictions: config.ghost_main_evictions,
        };
        let mut p = S3Fifo {
            t: Table::new(capacity_bytes, capacity_objects),
            config,
            small_target_bytes: 0,
            small_target_objects: 0,
        };
        p.set_capacity(capacity_bytes, capacity_objects);
        p
    }

    /// The tuning parameters in effect.
    pub fn config(&self) -> S3FifoConfig {
        self.config
    }

    /// Changes the tuning parameters (clamped to their documented ranges).
    /// Resident objects stay where they are; a new `small_ratio` resizes S's
    /// share, which eviction then works towards, and a new `ghost_ratio`
    /// applies at the next eviction.
    pub fn set_config(&mut self, config: S3FifoConfig) {
        self.config = S3FifoConfig {
            small_ratio: config.small_ratio.clamp(0.01, 0.9),
            promote_threshold: config.promote_threshold.clamp(1, MAX_FREQ),
            ghost_ratio: config.ghost_ratio.clamp(0.0, 4.0),
            ghost_main_evictions: config.ghost_main_evictions,
        };
        let (bytes, objects) = (self.t.cap_bytes, self.t.cap_objects);
        self.set_capacity(bytes, objects);
    }

    /// Changes the capacity; takes effect at the next [`evict`](Self::evict)
    /// (nothing is evicted here: evict while
    /// [`over_capacity`](Self::over_capacity)).
    pub fn set_capacity(&mut self, bytes: u64, objects: u64) {
        self.t.cap_bytes = bytes;
        self.t.cap_objects = objects;
        let share = |cap: u64| ((cap as f64 * self.config.small_ratio) as u64).max(1);
        self.small_target_bytes = share(bytes);
        self.small_target_objects = share(objects);
    }

    /// Adds a resident object of `size` bytes, to M if its fingerprint is
    /// in the ghost, else to S. `id` must not be resident (debug
    /// assertion; in release builds the old entry is replaced). Does not
    /// evict: call [`evict`](Self::evict) first while
    /// [`needs_eviction`](Self::needs_eviction).
    pub fn insert(&mut self, id: u64, fingerprint: u64, size: u64) {
        debug_assert!(!self.contains(id), "insert of resident id {id}");
        self.t.remove(id);
        let flags = if self.t.ghost.remove(fold(fingerprint)) {
            HOME_MAIN
        } else {
            0
        };
        self.t.add(id, fingerprint, size, flags);
    }

    /// Records a hit: bumps the object's 2-bit counter. O(1), no queue
    /// movement. Returns false if `id` is not resident.
    pub fn touch(&mut self, id: u64) -> bool {
        match self.t.find(id) {
            Some(slot) => {
                self.t.touch(slot);
                true
            }
            None => false,
        }
    }

    /// Forgets a resident object (delete, expiry, migration out) without
    /// recording it in the ghost. O(1). Returns false if not resident.
    pub fn remove(&mut self, id: u64) -> bool {
        self.t.remove(id)
    }

    /// Pins or unpins a resident object. A pinned object is never returned
    /// by [`evict`](Self::evict) but counts against capacity; on unpinning
    /// it goes to the newest end of its queue (S or M). Returns false if
    /// `id` is not resident.
    pub fn set_pinned(&mut self, id: u64, pinned: bool) -> bool {
        self.t.set_pinned(id, pinned)
    }

    /// Removes and returns the next victim, or None if every resident
    /// object is pinned (or there are none). Pinned objects wait on a
    /// list of their own, so this never scans them; it is O(1) amortized.
    pub fn evict(&mut self) -> Option<u64> {
        self.t
            .ghost
            .fit((self.t.len() as f64 * self.config.ghost_ratio) as usize);
        let small = self.t.lists[Q_SMALL];
        if small.len > 0
            && (self.t.lists[Q_MAIN].len == 0
                || small.bytes >= self.small_target_bytes
                || small.len >= self.small_target_objects)
        {
            if let Some(id) = self.evict_small() {
                return Some(id);
            }
            // Everything in S was promoted; M is not empty now.
        }
        self.evict_main()
    }

    /// Takes from the head of S until one object is evicted (to the
    /// ghost) or S is empty.
    fn evict_small(&mut self) -> Option<u64> {
        loop {
            let slot = self.t.lists[Q_SMALL].head;
            if slot == NIL {
                return None;
            }
            let meta = self.t.meta(slot);
            if (meta & FREQ_MASK) as u8 >= self.config.promote_threshold {
                self.t.unlink(Q_SMALL, slot);
                self.t.set_meta(slot, (meta & !FREQ_MASK) | HOME_MAIN);
                self.t.push_back(Q_MAIN, slot);
            } else {
                let (id, fp) = self.t.delete(slot);
                self.t.ghost.insert(fp);
                return Some(id);
            }
        }
    }

    /// Takes from the head of M, reinserting objects with a non-zero
    /// counter (decremented), until one is evicted. Terminates because
    /// every reinsertion decrements a counter.
    fn evict_main(&mut self) -> Option<u64> {
        loop {
            let slot = self.t.lists[Q_MAIN].head;
            if slot == NIL {
                return None;
            }
            let meta = self.t.meta(slot);
            if meta & FREQ_MASK > 0 {
                self.t.unlink(Q_MAIN, slot);
                self.t.set_meta(slot, meta - 1);
                self.t.push_back(Q_MAIN, slot);
            } else {
                let (id, fp) = self.t.delete(slot);
                if self.config.ghost_main_evictions {
                    self.t.ghost.insert(fp);
                }
                return Some(id);
            }
        }
    }

    /// The 2-bit access counter of a resident object (0..=3): hits since
    /// insertion, less one per pass through M's eviction point, reset
    /// when the object moves from S to M.
    pub fn frequency(&self, id: u64) -> Option<u8> {
        self.t.frequency(id)
    }

    /// Whether an object with this fingerprint was evicted from S (or, with
    /// [`S3FifoConfig::ghost_main_evictions`], from M) recently: it is in
    /// the ghost, and an insert of it would go to M. An object evicted
    /// from M under the default configuration does not count.
    pub fn was_recently_evicted(&self, fingerprint: u64) -> bool {
        self.t.ghost.contains(fold(fingerprint))
    }

    table_accessors!();
}

macro_rules! impl_policy {
    ($t:ty) => {
        impl EvictionPolicy for $t {
            fn set_capacity(&mut self, bytes: u64, objects: u64) {
                <$t>::set_capacity(self, bytes, objects)
            }
            fn insert(&mut self, id: u64, fingerprint: u64, size: u64) {
                <$t>::insert(self, id, fingerprint, size)
            }
            fn touch(&mut self, id: u64) -> bool {
                <$t>::touch(self, id)
            }
            fn remove(&mut self, id: u64) -> bool {
                <$t>::remove(self, id)
            }
            fn set_pinned(&mut self, id: u64, pinned: bool) -> bool {
                <$t>::set_pinned(self, id, pinned)
            }
            fn is_pinned(&self, id: u64) -> bool {
                <$t>::is_pinned(self, id)
            }
            fn needs_eviction(&self, incoming: u64) -> bool {
                <$t>::needs_eviction(self, incoming)
            }
            fn over_capacity(&self) -> bool {
                <$t>::over_capacity(self)
            }
            fn evict(&mut self) -> Option<u64> {
                <$t>::evict(self)
            }
            fn frequency(&self, id: u64) -> Option<u8> {
                <$t>::frequency(self, id)
            }
            fn was_recently_evicted(&self, fingerprint: u64) -> bool {
                <$t>::was_recently_evicted(self, fingerprint)
            }
            fn contains(&self, id: u64) -> bool {
                <$t>::contains(self, id)
            }
            fn len(&self) -> usize {
                <$t>::len(self)
            }
            fn is_empty(&self) -> bool {
                <$t>::is_empty(self)
            }
            fn used_bytes(&self) -> u64 {
                <$t>::used_bytes(self)
            }
            fn capacity(&self) -> (u64, u64) {
                <$t>::capacity(self)
            }
            fn heap_bytes(&self) -> usize {
                <$t>::heap_bytes(self)
            }
        }
    };
}

impl_policy!(S3Fifo);
impl_policy!(Lru);

#[cfg(test)]
mod tests;
