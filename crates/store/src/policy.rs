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
// Shared machinery: slab of nodes, id index, ghost.

/// One resident object. Free slots reuse `next` as the free-list link.
#[derive(Clone, Copy, Debug)]
struct Node {
    id: u64,
    fp: u32,
    /// Flags in the low [`SIZE_SHIFT`] bits, size above.
    meta: u32,
    prev: u32,
    next: u32,
}

const EMPTY_NODE: Node = Node {
    id: 0,
    fp: 0,
    meta: 0,
    prev: NIL,
    next: NIL,
};

/// Nodes, in fixed-size chunks, with a free list.
#[derive(Debug)]
struct Slab {
    chunks: Vec<Box<[Node]>>,
    free: u32,
    high: u32,
}

impl Slab {
    fn new() -> Self {
        Slab {
            chunks: Vec::new(),
            free: NIL,
            high: 0,
        }
    }

    fn get(&self, slot: u32) -> &Node {
        &self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    fn get_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    fn alloc(&mut self, node: Node) -> u32 {
        let slot = if self.free != NIL {
            let s = self.free;
            self.free = self.get(s).next;
            s
        } else {
            let s = self.high;
            assert!(s != NIL, "eviction policy: too many objects");
            if s as usize & (CHUNK - 1) == 0 {
                self.chunks.push(vec![EMPTY_NODE; CHUNK].into_boxed_slice());
            }
            self.high += 1;
            s
        };
        *self.get_mut(slot) = node;
        slot
    }

    fn release(&mut self, slot: u32) {
        let free = self.free;
        *self.get_mut(slot) = Node {
            next: free,
            ..EMPTY_NODE
        };
        self.free = slot;
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Box<[Node]>>()
            + self.chunks.len() * CHUNK * size_of::<Node>()
    }
}

/// A doubly linked list through slab nodes; `head` is the oldest end.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: u64,
    bytes: u64,
}

const EMPTY_LIST: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
    bytes: 0,
};

/// A strong 64-bit mixer (the SplitMix64 finalizer).
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Maps a hash onto `0..n` without division (uses the high bits).
fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// The 32-bit fingerprint kept per node and in the ghost (never 0, which
/// marks an empty ghost way).
fn fold(fingerprint: u64) -> u32 {
    match (fingerprint ^ (fingerprint >> 32)) as u32 {
        0 => 1,
        f => f,
    }
}

/// id → slot: linear probing with backward-shift deletion (no
/// tombstones). A 4-byte bucket holds the slot number in its low
/// `slot_bits` bits and, above them, the same bits of the id's hash, so a
/// probe reads a node only when those bits match. `slot_bits` widens, and
/// the table is rebuilt, as the slab grows (12 tag bits up to 2^20 - 1
/// slots, none at 2^30 and more). The table size need not be a power of
/// two, which lets it grow by 1.5×.
#[derive(Debug)]
struct Index {
    buckets: Vec<u32>,
    len: usize,
    slot_bits: u32,
}

/// An empty bucket. An occupied one never has all slot bits set.
const EMPTY: u32 = u32::MAX;

impl Index {
    fn new() -> Self {
        Index {
            buckets: Vec::new(),
            len: 0,
            slot_bits: 16,
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX >> (32 - self.slot_bits)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    fn find(&self, slab: &Slab, id: u64) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let hash = mix64(id);
        let mask = self.mask();
        let tag = hash as u32 & !mask;
        let mut i = reduce(hash, self.buckets.len());
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return None;
            }
            if b & !mask == tag && slab.get(b & mask).id == id {
                return Some(b & mask);
            }
            i = self.next(i);
        }
    }

    /// Adds `slot`, whose node (already in `slab`) holds `id`, which must
    /// not be in the table.
    fn insert(&mut self, slab: &Slab, id: u64, slot: u32) {
        if slot >= self.mask() {
            let mut bits = self.slot_bits;
            while bits < 32 && slot >= u32::MAX >> (32 - bits) {
                bits = (bits + 2).min(32);
            }
            self.rebuild(slab, self.buckets.len(), bits);
        }
        // At most 70% full; 47% right after growing.
        if (self.len + 1) * 10 > self.buckets.len() * 7 {
            self.rebuild(slab, (self.buckets.len() * 3 / 2).max(16), self.slot_bits);
        }
        self.place(mix64(id), slot);
        self.len += 1;
    }

    fn rebuild(&mut self, slab: &Slab, buckets: usize, slot_bits: u32) {
        let old_mask = self.mask();
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; buckets]);
        self.slot_bits = slot_bits;
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            let slot = b & old_mask;
            self.place(mix64(slab.get(slot).id), slot);
        }
    }

    fn place(&mut self, hash: u64, slot: u32) {
        let mut i = reduce(hash, self.buckets.len());
        while self.buckets[i] != EMPTY {
            i = self.next(i);
        }
        self.buckets[i] = hash as u32 & !self.mask() | slot;
    }

    /// Removes `slot`, whose node (still in `slab`) holds `id`.
    fn remove(&mut self, slab: &Slab, id: u64, slot: u32) {
        let n = self.buckets.len();
        let mask = self.mask();
        let mut hole = reduce(mix64(id), n);
        while self.buckets[hole] & mask != slot {
            debug_assert!(self.buckets[hole] != EMPTY, "slot not in index");
            hole = self.next(hole);
        }
        let mut j = hole;
        loop {
            j = self.next(j);
            let b = self.buckets[j];
            if b == EMPTY {
                break;
            }
            let home = reduce(mix64(slab.get(b & mask).id), n);
            // The entry at j may fill the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
    }

    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<u32>()
    }
}

/// Recently evicted fingerprints: a set-associative table whose sets are
/// tiny FIFOs (newest first), so it forgets the oldest entry of a set when
/// a new one arrives. Lossy by design; it is only a hint.
#[derive(Debug)]
struct Ghost {
    sets: Vec<[u32; GHOST_WAYS]>,
}

impl Ghost {
    fn set_of(&self, fp: u32) -> usize {
        reduce(mix64(u64::from(fp)), self.sets.len())
    }

    fn contains(&self, fp: u32) -> bool {
        !self.sets.is_empty() && self.sets[self.set_of(fp)].contains(&fp)
    }

    fn insert(&mut self, fp: u32) {
        if self.sets.is_empty() {
            return;
        }
        let i = self.set_of(fp);
        let set = &mut self.sets[i];
        let pos = set.iter().position(|&f| f == fp).unwrap_or(GHOST_WAYS - 1);
        set.copy_within(0..pos, 1);
        set[0] = fp;
    }

    fn remove(&mut self, fp: u32) -> bool {
        if self.sets.is_empty() {
            return false;
        }
        let i = self.set_of(fp);
        let set = &mut self.sets[i];
        match set.iter().position(|&f| f == fp) {
            Some(pos) => {
                set.copy_within(pos + 1.., pos);
                set[GHOST_WAYS - 1] = 0;
                true
            }
            None => false,
        }
    }

    /// Resizes to hold about `entries` fingerprints, if that differs
    /// enough from the current size (hysteresis keeps this amortized O(1)).
    fn fit(&mut self, entries: usize) {
        let want = entries.div_ceil(GHOST_WAYS);
        let have = self.sets.len();
        if want <= have + have / 4 && want >= have / 2 {
            return;
        }
        let old = std::mem::replace(&mut self.sets, vec![[0; GHOST_WAYS]; want]);
        // Oldest first, so each new set keeps the newest entries.
        for way in (0..GHOST_WAYS).rev() {
            for set in &old {
                if set[way] != 0 {
                    self.insert(set[way]);
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.sets.capacity() * size_of::<[u32; GHOST_WAYS]>()
    }
}

/// State shared by both policies: nodes, index, lists, ghost, accounting.
#[derive(Debug)]
struct Table {
    slab: Slab,
    index: Index,
    /// Sizes that do not fit the packed field, by slot.
    big: HashMap<u32, u64>,
    lists: [List; 3],
    ghost: Ghost,
    used_bytes: u64,
    cap_bytes: u64,
    cap_objects: u64,
}

impl Table {
    fn new(cap_bytes: u64, cap_objects: u64) -> Self {
        Table {
            slab: Slab::new(),
            index: Index::new(),
            big: HashMap::new(),
            lists: [EMPTY_LIST; 3],
            ghost: Ghost { sets: Vec::new() },
            used_bytes: 0,
            cap_bytes,
            cap_objects,
        }
    }

    fn find(&self, id: u64) -> Option<u32> {
        self.index.find(&self.slab, id)
    }

    fn meta(&self, slot: u32) -> u32 {
        self.slab.get(slot).meta
    }

    fn set_meta(&mut self, slot: u32, meta: u32) {
        self.slab.get_mut(slot).meta = meta;
    }

    fn size(&self, slot: u32) -> u64 {
        match self.meta(slot) >> SIZE_SHIFT {
            SIZE_BIG => self.big[&slot],
            s => u64::from(s),
        }
    }

    /// The list a node is on.
    fn list_of(meta: u32) -> usize {
        if meta & PINNED != 0 {
            Q_PINNED
        } else if meta & HOME_MAIN != 0 {
            Q_MAIN
        } else {
            Q_SMALL
        }
    }

    fn push_back(&mut self, q: usize, slot: u32) {
        let size = self.size(slot);
        let tail = self.lists[q].tail;
        {
            let n = self.slab.get_mut(slot);
            n.prev = tail;
            n.next = NIL;
        }
        if tail == NIL {
            self.lists[q].head = slot;
        } else {
            self.slab.get_mut(tail).next = slot;
        }
        let l = &mut self.lists[q];
        l.tail = slot;
        l.len += 1;
        l.bytes += size;
    }

    fn unlink(&mut self, q: usize, slot: u32) {
        let size = self.size(slot);
        let (prev, next) = {
            let n = self.slab.get(slot);
            (n.prev, n.next)
        };
        if prev == NIL {
            self.lists[q].head = next;
        } else {
            self.slab.get_mut(prev).next = next;
        }
        if next == NIL {
            self.lists[q].tail = prev;
        } else {
            self.slab.get_mut(next).prev = prev;
        }
        let l = &mut self.lists[q];
        l.len -= 1;
        l.bytes -= size;
    }

    /// Adds a node with `flags` and links it at the back of its list.
    fn add(&mut self, id: u64, fingerprint: u64, size: u64, flags: u32) {
        let packed = if size >= u64::from(SIZE_BIG) {
            SIZE_BIG
        } else {
            size as u32
        };
        let slot = self.slab.alloc(Node {
            id,
            fp: fold(fingerprint),
            meta: packed << SIZE_SHIFT | flags,
            prev: NIL,
            next: NIL,
        });
        if packed == SIZE_BIG {
            self.big.insert(slot, size);
        }
        self.index.insert(&self.slab, id, slot);
        self.used_bytes += size;
        self.push_back(Self::list_of(flags), slot);
    }

    /// Unlinks and frees a node; returns its id and folded fingerprint.
    fn delete(&mut self, slot: u32) -> (u64, u32) {
        let meta = self.meta(slot);
        self.unlink(Self::list_of(meta), slot);
        self.used_bytes -= self.size(slot);
        if meta >> SIZE_SHIFT == SIZE_BIG {
            self.big.remove(&slot);
        }
        let (id, fp) = {
            let n = self.slab.get(slot);
            (n.id, n.fp)
        };
        self.index.remove(&self.slab, id, slot);
        self.slab.release(slot);
        (id, fp)
    }

    fn touch(&mut self, slot: u32) {
        let meta = self.meta(slot);
        if meta & FREQ_MASK < u32::from(MAX_FREQ) {
            self.set_meta(slot, meta + 1);
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        match self.find(id) {
            Some(slot) => {
                self.delete(slot);
                true
            }
            None => false,
        }
    }

    fn set_pinned(&mut self, id: u64, pinned: bool) -> bool {
        let Some(slot) = self.find(id) else {
            return false;
        };
        let meta = self.meta(slot);
        if (meta & PINNED != 0) != pinned {
            self.unlink(Self::list_of(meta), slot);
            let meta = meta ^ PINNED;
            self.set_meta(slot, meta);
            // An unpinned object goes back to the newest end of its queue.
            self.push_back(Self::list_of(meta), slot);
        }
        true
    }

    fn is_pinned(&self, id: u64) -> bool {
        self.find(id)
            .is_some_and(|slot| self.meta(slot) & PINNED != 0)
    }

    fn frequency(&self, id: u64) -> Option<u8> {
        self.find(id)
            .map(|slot| (self.meta(slot) & FREQ_MASK) as u8)
    }

    fn len(&self) -> usize {
        self.index.len
    }

    fn needs_eviction(&self, incoming: u64) -> bool {
        self.used_bytes.saturating_add(incoming) > self.cap_bytes
            || self.len() as u64 >= self.cap_objects
    }

    fn over_capacity(&self) -> bool {
        self.used_bytes > self.cap_bytes || self.len() as u64 > self.cap_objects
    }

    fn heap_bytes(&self) -> usize {
        self.slab.heap_bytes()
            + self.index.heap_bytes()
            + self.ghost.heap_bytes()
            + self.big.capacity() * (size_of::<(u32, u64)>() + 1)
    }

    /// Checks every structural invariant; panics on a violation.
    #[cfg(test)]
    fn check(&self) {
        let mut total = 0;
        let mut bytes = 0;
        for (q, l) in self.lists.iter().enumerate() {
            let (mut n, mut b, mut prev, mut s) = (0, 0, NIL, l.head);
            while s != NIL {
                let node = self.slab.get(s);
                assert_eq!(node.prev, prev, "list {q} back link");
                assert_eq!(Self::list_of(node.meta), q, "node on the wrong list");
                assert_eq!(self.find(node.id), Some(s), "index disagrees");
                n += 1;
                b += self.size(s);
                prev = s;
                s = node.next;
            }
            assert_eq!(l.tail, prev, "list {q} tail");
            assert_eq!((l.len, l.bytes), (n, b), "list {q} counters");
            total += n;
            bytes += b;
        }
        assert_eq!(total, self.index.len as u64);
        assert_eq!(bytes, self.used_bytes);
        let occupied = self.index.buckets.iter().filter(|&&b| b != EMPTY).count();
        assert_eq!(occupied, self.index.len);
    }
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
}

// ---------------------------------------------------------------------------
// LRU

impl Lru {
    /// An empty policy with the given capacity. Pass `u64::MAX` for a
    /// dimension that should not limit.
    pub fn new(capacity_bytes: u64, capacity_objects: u64) -> Self {
        Lru {
            t: Table::new(capacity_bytes, capacity_objects),
        }
    }

    /// Changes the capacity; takes effect at the next [`evict`](Self::evict).
    pub fn set_capacity(&mut self, bytes: u64, objects: u64) {
        self.t.cap_bytes = bytes;
        self.t.cap_objects = objects;
    }

    /// Adds a resident object at the most recently used end. `id` must not
    /// be resident (debug assertion; in release builds the old entry is
    /// replaced). Does not evict.
    pub fn insert(&mut self, id: u64, fingerprint: u64, size: u64) {
        debug_assert!(!self.contains(id), "insert of resident id {id}");
        self.t.remove(id);
        self.t.ghost.remove(fold(fingerprint));
        self.t.add(id, fingerprint, size, HOME_MAIN);
    }

    /// Records a hit: moves the object to the most recently used end (if
    /// not pinned) and bumps its counter. Returns false if not resident.
    pub fn touch(&mut self, id: u64) -> bool {
        let Some(slot) = self.t.find(id) else {
            return false;
        };
        self.t.touch(slot);
        let meta = self.t.meta(slot);
        if meta & PINNED == 0 {
            self.t.unlink(Q_MAIN, slot);
            self.t.push_back(Q_MAIN, slot);
        }
        true
    }

    /// Forgets a resident object without recording it in the ghost.
    /// Returns false if not resident.
    pub fn remove(&mut self, id: u64) -> bool {
        self.t.remove(id)
    }

    /// Pins or unpins a resident object; on unpinning it becomes the most
    /// recently used. Returns false if not resident.
    pub fn set_pinned(&mut self, id: u64, pinned: bool) -> bool {
        self.t.set_pinned(id, pinned)
    }

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

    /// Removes and returns the least recently used unpinned object, or
    /// None if there is none. O(1).
    pub fn evict(&mut self) -> Option<u64> {
        self.t.ghost.fit(self.t.len());
        let slot = self.t.lists[Q_MAIN].head;
        if slot == NIL {
            return None;
        }
        let (id, fp) = self.t.delete(slot);
        self.t.ghost.insert(fp);
        Some(id)
    }

    /// Hits since insertion, saturating at 3.
    pub fn frequency(&self, id: u64) -> Option<u8> {
        self.t.frequency(id)
    }

    /// Whether an object with this fingerprint was evicted recently (within
    /// about one cache's worth of evictions).
    pub fn was_recently_evicted(&self, fingerprint: u64) -> bool {
        self.t.ghost.contains(fold(fingerprint))
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

    /// Heap memory held by the policy (see [`S3Fifo::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.t.heap_bytes()
    }
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
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    const NO_LIMIT: u64 = u64::MAX;

    fn fp(key: u64) -> u64 {
        mix64(key ^ 0x5eed)
    }

    /// Evicts as needed, then inserts; returns the victims.
    fn admit<P: EvictionPolicy>(p: &mut P, id: u64, fingerprint: u64, size: u64) -> Vec<u64> {
        let mut victims = Vec::new();
        while p.needs_eviction(size) {
            match p.evict() {
                Some(v) => victims.push(v),
                None => break,
            }
        }
        p.insert(id, fingerprint, size);
        victims
    }

    /// One access of `key` (id = key): touch on a hit, admit on a miss.
    /// Returns whether it hit.
    fn access<P: EvictionPolicy>(p: &mut P, key: u64) -> bool {
        if p.touch(key) {
            true
        } else {
            admit(p, key, fp(key), 1);
            false
        }
    }

    fn both(bytes: u64, objects: u64) -> (S3Fifo, Lru) {
        (S3Fifo::new(bytes, objects), Lru::new(bytes, objects))
    }

    fn check_byte_capacity<P: EvictionPolicy>(p: &mut P) {
        for id in 0..500 {
            admit(p, id, fp(id), 10 + id % 7 * 13);
            assert!(p.used_bytes() <= 1000, "{} bytes", p.used_bytes());
            assert!(p.contains(id));
        }
        assert!(p.used_bytes() > 900);
    }

    #[test]
    fn byte_capacity_is_honoured() {
        let (mut s, mut l) = both(1000, NO_LIMIT);
        check_byte_capacity(&mut s);
        check_byte_capacity(&mut l);
        s.t.check();
        l.t.check();
    }

    fn check_object_capacity<P: EvictionPolicy>(p: &mut P) {
        for id in 0..500 {
            admit(p, id, fp(id), 1 << 20);
            assert!(p.len() <= 50);
            if id % 3 == 0 {
                p.touch(id);
            }
        }
        assert_eq!(p.len(), 50);
        assert_eq!(p.used_bytes(), 50 << 20);
    }

    #[test]
    fn object_capacity_is_honoured() {
        let (mut s, mut l) = both(NO_LIMIT, 50);
        check_object_capacity(&mut s);
        check_object_capacity(&mut l);
    }

    fn check_pinning<P: EvictionPolicy>(p: &mut P) {
        for id in 0..10 {
            p.insert(id, fp(id), 1);
        }
        for id in (0..10).step_by(2) {
            assert!(p.set_pinned(id, true));
        }
        assert!(!p.set_pinned(99, true));
        assert!(!p.is_pinned(99));
        let mut victims: Vec<u64> = std::iter::from_fn(|| p.evict()).collect();
        victims.sort_unstable();
        assert_eq!(victims, [1, 3, 5, 7, 9]);
        assert_eq!(p.len(), 5);
        // Everything left is pinned: None, again and again, not a hang.
        assert_eq!(p.evict(), None);
        assert_eq!(p.evict(), None);
        assert!(p.needs_eviction(0));
        assert!(p.is_pinned(4));
        assert!(p.set_pinned(4, false));
        assert!(!p.is_pinned(4));
        assert_eq!(p.evict(), Some(4));
        assert_eq!(p.evict(), None);
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn pinned_objects_are_never_evicted() {
        let (mut s, mut l) = both(NO_LIMIT, 5);
        check_pinning(&mut s);
        check_pinning(&mut l);
        s.t.check();
        l.t.check();
    }

    #[test]
    fn all_pinned_returns_none() {
        let mut s = S3Fifo::new(NO_LIMIT, 1000);
        for id in 0..1000 {
            s.insert(id, fp(id), 1);
            s.touch(id);
            s.set_pinned(id, true);
        }
        assert_eq!(s.evict(), None);
        let mut l = Lru::new(NO_LIMIT, 1000);
        for id in 0..1000 {
            l.insert(id, fp(id), 1);
            l.set_pinned(id, true);
        }
        assert_eq!(l.evict(), None);
    }

    fn check_reuse<P: EvictionPolicy>(p: &mut P) {
        p.insert(7, fp(1), 100);
        p.touch(7);
        p.set_pinned(7, true);
        assert!(p.remove(7));
        assert!(!p.remove(7));
        assert!(!p.contains(7) && !p.touch(7) && !p.is_pinned(7));
        assert_eq!((p.len(), p.used_bytes()), (0, 0));
        // The id now names a different object.
        p.insert(7, fp(2), 30);
        assert_eq!(p.frequency(7), Some(0));
        assert!(!p.is_pinned(7));
        assert_eq!((p.len(), p.used_bytes()), (1, 30));
        assert_eq!(p.evict(), Some(7));
        assert_eq!(p.evict(), None);
        // Removal does not count as an eviction.
        assert!(!p.was_recently_evicted(fp(1)));
    }

    #[test]
    fn remove_then_reinsert_reused_id() {
        let (mut s, mut l) = both(NO_LIMIT, 10);
        check_reuse(&mut s);
        check_reuse(&mut l);
    }

    #[test]
    fn ghost_hit_goes_to_main() {
        let mut s = S3Fifo::new(NO_LIMIT, 10);
        for id in 0..10 {
            s.insert(id, fp(id), 1);
        }
        // Object 0 is the oldest in S and unused: it goes to the ghost.
        assert_eq!(s.evict(), Some(0));
        assert!(s.was_recently_evicted(fp(0)));
        assert!(!s.was_recently_evicted(fp(1)));
        // It comes back under a new id: straight to M, out of the ghost.
        s.insert(100, fp(0), 1);
        assert!(!s.was_recently_evicted(fp(0)));
        let slot = s.t.find(100).unwrap();
        assert_eq!(Table::list_of(s.t.meta(slot)), Q_MAIN);
        // So it outlives the objects still in S.
        for id in 1..10 {
            assert_eq!(s.evict(), Some(id));
        }
        assert_eq!(s.evict(), Some(100));
        s.t.check();
    }

    #[test]
    fn main_evictions_reach_the_ghost_only_if_configured() {
        for ghost_main_evictions in [false, true] {
            let config = S3FifoConfig {
                ghost_main_evictions,
                ..S3FifoConfig::default()
            };
            let mut s = S3Fifo::with_config(NO_LIMIT, 10, config);
            s.insert(1, fp(1), 1);
            s.touch(1);
            s.insert(2, fp(2), 1);
            assert_eq!(s.evict(), Some(2)); // from S, 1 moves to M
            assert!(s.was_recently_evicted(fp(2)));
            assert_eq!(s.evict(), Some(1)); // from M
            assert_eq!(s.was_recently_evicted(fp(1)), ghost_main_evictions);
        }
    }

    #[test]
    fn frequency_saturates_and_promotes() {
        let mut s = S3Fifo::new(NO_LIMIT, 10);
        s.insert(1, fp(1), 1);
        s.insert(2, fp(2), 1);
        for n in 1..=5u8 {
            s.touch(1);
            assert_eq!(s.frequency(1), Some(n.min(3)));
        }
        assert_eq!(s.frequency(9), None);
        // Evicting from S promotes 1 (its counter restarts in M) and
        // evicts 2.
        assert_eq!(s.evict(), Some(2));
        assert_eq!(s.frequency(1), Some(0));
        assert_eq!(s.evict(), Some(1));
    }

    /// 200 hot keys, each accessed a few times, then a scan of 5000 keys
    /// accessed once; count how many hot keys are still resident.
    fn hot_survivors<P: EvictionPolicy>(p: &mut P) -> usize {
        for _ in 0..4 {
            for k in 0..200 {
                access(p, k);
            }
        }
        for k in 10_000..15_000 {
            access(p, k);
        }
        (0..200).filter(|&k| p.contains(k)).count()
    }

    #[test]
    fn scan_does_not_flush_s3fifo_but_flushes_lru() {
        let (mut s, mut l) = both(NO_LIMIT, 400);
        let s_kept = hot_survivors(&mut s);
        let l_kept = hot_survivors(&mut l);
        assert_eq!(s_kept, 200, "S3-FIFO lost hot objects to a scan");
        assert_eq!(l_kept, 0, "LRU is expected to be flushed by a scan");
        s.t.check();
    }

    fn check_shrink<P: EvictionPolicy>(p: &mut P) {
        for id in 0..100 {
            admit(p, id, fp(id), 10);
        }
        assert_eq!((p.len(), p.used_bytes()), (100, 1000));
        p.set_pinned(3, true);
        p.set_capacity(500, 80);
        assert_eq!(p.capacity(), (500, 80));
        assert!(p.over_capacity());
        let mut evicted = 0;
        while p.over_capacity() {
            assert!(p.evict().is_some());
            evicted += 1;
        }
        assert_eq!(evicted, 50);
        assert_eq!((p.len(), p.used_bytes()), (50, 500));
        assert!(p.contains(3));
        p.set_capacity(500, 10);
        while p.over_capacity() {
            assert_ne!(p.evict(), Some(3));
        }
        assert_eq!(p.len(), 10);
        p.set_capacity(0, 0);
        while p.evict().is_some() {}
        assert_eq!((p.len(), p.used_bytes()), (1, 10));
        assert!(p.needs_eviction(0));
    }

    #[test]
    fn set_capacity_shrink_then_evict_down() {
        let (mut s, mut l) = both(NO_LIMIT, NO_LIMIT);
        check_shrink(&mut s);
        check_shrink(&mut l);
        s.t.check();
        l.t.check();
    }

    #[test]
    fn huge_sizes_are_exact() {
        let (mut s, mut l) = both(NO_LIMIT, NO_LIMIT);
        let sizes = [u64::from(SIZE_BIG) - 1, u64::from(SIZE_BIG), 5 << 40, 1];
        for p in [&mut s as &mut dyn EvictionPolicy, &mut l] {
            for (id, &size) in sizes.iter().enumerate() {
                p.insert(id as u64, fp(id as u64), size);
            }
            assert_eq!(p.used_bytes(), sizes.iter().sum::<u64>());
            p.remove(2);
            assert_eq!(p.used_bytes(), sizes.iter().sum::<u64>() - (5 << 40));
            while p.evict().is_some() {}
            assert_eq!((p.len(), p.used_bytes()), (0, 0));
        }
        assert!(s.t.big.is_empty() && l.t.big.is_empty());
    }

    #[test]
    fn memory_per_object() {
        let n = 200_000u64;
        let (mut s, mut l) = both(NO_LIMIT, n);
        for id in 0..2 * n {
            admit(&mut s, id * 7919, fp(id), 1000);
            admit(&mut l, id * 7919, fp(id), 1000);
        }
        // 200,000 slots also widened the index's slot field once.
        assert_eq!(s.t.index.slot_bits, 18);
        s.t.check();
        l.t.check();
        for (name, bytes) in [("s3fifo", s.heap_bytes()), ("lru", l.heap_bytes())] {
            let per = bytes as f64 / n as f64;
            assert!(per <= 40.0, "{name}: {per:.1} bytes per object");
        }
    }

    /// Random operations against a model, checking the invariants after
    /// every step.
    fn model_test<P: EvictionPolicy>(p: &mut P, t: impl Fn(&P) -> &Table, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        // id → (size, pinned)
        let mut model: HashMap<u64, (u64, bool)> = HashMap::new();
        let mut returned: HashSet<u64> = HashSet::new();
        for step in 0..20_000 {
            let id = rng.gen_range(0..300u64);
            match rng.gen_range(0..100) {
                0..=39 => {
                    if !model.contains_key(&id) {
                        let size = match rng.gen_range(0..50) {
                            0 => 1 << 29,
                            _ => rng.gen_range(0..2000),
                        };
                        for v in admit(p, id, rng.gen(), size) {
                            let (_, pinned) = model.remove(&v).expect("victim not resident");
                            assert!(!pinned, "pinned victim");
                            assert!(returned.insert(v), "victim returned twice");
                        }
                        model.insert(id, (size, false));
                        returned.remove(&id);
                    }
                }
                40..=64 => assert_eq!(p.touch(id), model.contains_key(&id)),
                65..=74 => assert_eq!(p.remove(id), model.remove(&id).is_some()),
                75..=84 => {
                    let pin = rng.gen_bool(0.5);
                    let expect = model.get_mut(&id).map(|e| e.1 = pin).is_some();
                    assert_eq!(p.set_pinned(id, pin), expect);
                }
                85..=94 => match p.evict() {
                    Some(v) => {
                        let (_, pinned) = model.remove(&v).expect("victim not resident");
                        assert!(!pinned, "pinned victim");
                        assert!(returned.insert(v), "victim returned twice");
                    }
                    None => assert!(model.values().all(|e| e.1), "None with unpinned objects"),
                },
                95..=97 => {
                    let objects = rng.gen_range(1..200);
                    let bytes = rng.gen_range(1000..200_000);
                    p.set_capacity(bytes, objects);
                    while p.over_capacity() {
                        match p.evict() {
                            Some(v) => {
                                let (_, pinned) = model.remove(&v).expect("not resident");
                                assert!(!pinned);
                                assert!(returned.insert(v));
                            }
                            None => break,
                        }
                    }
                }
                _ => {
                    assert_eq!(p.frequency(id).is_some(), model.contains_key(&id));
                    assert_eq!(p.is_pinned(id), model.get(&id).is_some_and(|e| e.1));
                }
            }
            assert_eq!(p.len(), model.len());
            assert_eq!(p.is_empty(), model.is_empty());
            assert_eq!(p.used_bytes(), model.values().map(|e| e.0).sum::<u64>());
            assert_eq!(p.contains(id), model.contains_key(&id));
            if step % 97 == 0 {
                t(p).check();
                for (&id, &(_, pinned)) in &model {
                    assert!(p.contains(id));
                    assert_eq!(p.is_pinned(id), pinned);
                }
            }
        }
    }

    #[test]
    fn randomized_against_model() {
        for seed in 0..4 {
            model_test(&mut S3Fifo::new(100_000, 100), |p| &p.t, seed);
            model_test(&mut Lru::new(100_000, 100), |p| &p.t, seed);
            let config = S3FifoConfig {
                small_ratio: 0.3,
                promote_threshold: 2,
                ghost_ratio: 2.0,
                ghost_main_evictions: true,
            };
            model_test(&mut S3Fifo::with_config(50_000, 60, config), |p| &p.t, seed);
        }
    }

    #[test]
    fn index_survives_heavy_churn() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut s = S3Fifo::new(NO_LIMIT, NO_LIMIT);
        let mut live = HashSet::new();
        for _ in 0..50_000 {
            let id = rng.gen_range(0..3000u64) << 32 | rng.gen_range(0..4);
            if live.remove(&id) {
                assert!(s.remove(id));
            } else {
                s.insert(id, id, 1);
                live.insert(id);
            }
        }
        s.t.check();
        for id in &live {
            assert!(s.contains(*id));
        }
        assert_eq!(s.len(), live.len());
    }
}
