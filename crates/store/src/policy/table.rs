//! The machinery both policies share: the slab of nodes, the intrusive lists, the id
//! index and the ghost.

use super::*;

/// One resident object. Free slots reuse `next` as the free-list link.
#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    pub(super) id: u64,
    pub(super) fp: u32,
    /// Flags in the low [`SIZE_SHIFT`] bits, size above.
    pub(super) meta: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
}

pub(super) const EMPTY_NODE: Node = Node {
    id: 0,
    fp: 0,
    meta: 0,
    prev: NIL,
    next: NIL,
};

/// Nodes, in fixed-size chunks, with a free list.
#[derive(Debug)]
pub(super) struct Slab {
    pub(super) chunks: Vec<Box<[Node]>>,
    pub(super) free: u32,
    pub(super) high: u32,
}

impl Slab {
    pub(super) fn new() -> Self {
        Slab {
            chunks: Vec::new(),
            free: NIL,
            high: 0,
        }
    }

    pub(super) fn get(&self, slot: u32) -> &Node {
        &self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    pub(super) fn alloc(&mut self, node: Node) -> u32 {
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

    pub(super) fn release(&mut self, slot: u32) {
        let free = self.free;
        *self.get_mut(slot) = Node {
            next: free,
            ..EMPTY_NODE
        };
        self.free = slot;
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Box<[Node]>>()
            + self.chunks.len() * CHUNK * size_of::<Node>()
    }
}

/// A doubly linked list through slab nodes; `head` is the oldest end.
#[derive(Clone, Copy, Debug)]
pub(super) struct List {
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) len: u64,
    pub(super) bytes: u64,
}

pub(super) const EMPTY_LIST: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
    bytes: 0,
};

/// A strong 64-bit mixer (the SplitMix64 finalizer).
pub(super) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Maps a hash onto `0..n` without division (uses the high bits).
pub(super) fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// The 32-bit fingerprint kept per node and in the ghost (never 0, which
/// marks an empty ghost way).
pub(super) fn fold(fingerprint: u64) -> u32 {
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
pub(super) struct Index {
    pub(super) buckets: Vec<u32>,
    pub(super) len: usize,
    pub(super) slot_bits: u32,
}

/// An empty bucket. An occupied one never has all slot bits set.
pub(super) const EMPTY: u32 = u32::MAX;

impl Index {
    pub(super) fn new() -> Self {
        Index {
            buckets: Vec::new(),
            len: 0,
            slot_bits: 16,
        }
    }

    pub(super) fn mask(&self) -> u32 {
        u32::MAX >> (32 - self.slot_bits)
    }

    pub(super) fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    pub(super) fn find(&self, slab: &Slab, id: u64) -> Option<u32> {
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
    pub(super) fn insert(&mut self, slab: &Slab, id: u64, slot: u32) {
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

    pub(super) fn rebuild(&mut self, slab: &Slab, buckets: usize, slot_bits: u32) {
        let old_mask = self.mask();
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; buckets]);
        self.slot_bits = slot_bits;
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            let slot = b & old_mask;
            self.place(mix64(slab.get(slot).id), slot);
        }
    }

    pub(super) fn place(&mut self, hash: u64, slot: u32) {
        let mut i = reduce(hash, self.buckets.len());
        while self.buckets[i] != EMPTY {
            i = self.next(i);
        }
        self.buckets[i] = hash as u32 & !self.mask() | slot;
    }

    /// Removes `slot`, whose node (still in `slab`) holds `id`.
    pub(super) fn remove(&mut self, slab: &Slab, id: u64, slot: u32) {
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

    pub(super) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<u32>()
    }
}

/// Recently evicted fingerprints: a set-associative table whose sets are
/// tiny FIFOs (newest first), so it forgets the oldest entry of a set when
/// a new one arrives. Lossy by design; it is only a hint.
#[derive(Debug)]
pub(super) struct Ghost {
    pub(super) sets: Vec<[u32; GHOST_WAYS]>,
}

impl Ghost {
    pub(super) fn set_of(&self, fp: u32) -> usize {
        reduce(mix64(u64::from(fp)), self.sets.len())
    }

    pub(super) fn contains(&self, fp: u32) -> bool {
        !self.sets.is_empty() && self.sets[self.set_of(fp)].contains(&fp)
    }

    pub(super) fn insert(&mut self, fp: u32) {
        if self.sets.is_empty() {
            return;
        }
        let i = self.set_of(fp);
        let set = &mut self.sets[i];
        let pos = set.iter().position(|&f| f == fp).unwrap_or(GHOST_WAYS - 1);
        set.copy_within(0..pos, 1);
        set[0] = fp;
    }

    pub(super) fn remove(&mut self, fp: u32) -> bool {
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
    pub(super) fn fit(&mut self, entries: usize) {
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

    pub(super) fn heap_bytes(&self) -> usize {
        self.sets.capacity() * size_of::<[u32; GHOST_WAYS]>()
    }
}

/// State shared by both policies: nodes, index, lists, ghost, accounting.
#[derive(Debug)]
pub(super) struct Table {
    pub(super) slab: Slab,
    pub(super) index: Index,
    /// Sizes that do not fit the packed field, by slot.
    pub(super) big: HashMap<u32, u64>,
    pub(super) lists: [List; 3],
    pub(super) ghost: Ghost,
    pub(super) used_bytes: u64,
    pub(super) cap_bytes: u64,
    pub(super) cap_objects: u64,
}

impl Table {
    pub(super) fn new(cap_bytes: u64, cap_objects: u64) -> Self {
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

    pub(super) fn find(&self, id: u64) -> Option<u32> {
        self.index.find(&self.slab, id)
    }

    pub(super) fn meta(&self, slot: u32) -> u32 {
        self.slab.get(slot).meta
    }

    pub(super) fn set_meta(&mut self, slot: u32, meta: u32) {
        self.slab.get_mut(slot).meta = meta;
    }

    pub(super) fn size(&self, slot: u32) -> u64 {
        match self.meta(slot) >> SIZE_SHIFT {
            SIZE_BIG => self.big[&slot],
            s => u64::from(s),
        }
    }

    /// The list a node is on.
    pub(super) fn list_of(meta: u32) -> usize {
        if meta & PINNED != 0 {
            Q_PINNED
        } else if meta & HOME_MAIN != 0 {
            Q_MAIN
        } else {
            Q_SMALL
        }
    }

    pub(super) fn push_back(&mut self, q: usize, slot: u32) {
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

    pub(super) fn unlink(&mut self, q: usize, slot: u32) {
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
    pub(super) fn add(&mut self, id: u64, fingerprint: u64, size: u64, flags: u32) {
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
    pub(super) fn delete(&mut self, slot: u32) -> (u64, u32) {
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

    pub(super) fn touch(&mut self, slot: u32) {
        let meta = self.meta(slot);
        if meta & FREQ_MASK < u32::from(MAX_FREQ) {
            self.set_meta(slot, meta + 1);
        }
    }

    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self.find(id) {
            Some(slot) => {
                self.delete(slot);
                true
            }
            None => false,
        }
    }

    pub(super) fn set_pinned(&mut self, id: u64, pinned: bool) -> bool {
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

    pub(super) fn is_pinned(&self, id: u64) -> bool {
        self.find(id)
            .is_some_and(|slot| self.meta(slot) & PINNED != 0)
    }

    pub(super) fn frequency(&self, id: u64) -> Option<u8> {
        self.find(id)
            .map(|slot| (self.meta(slot) & FREQ_MASK) as u8)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len
    }

    pub(super) fn needs_eviction(&self, incoming: u64) -> bool {
        self.used_bytes.saturating_add(incoming) > self.cap_bytes
            || self.len() as u64 >= self.cap_objects
    }

    pub(super) fn over_capacity(&self) -> bool {
        self.used_bytes > self.cap_bytes || self.len() as u64 > self.cap_objects
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.slab.heap_bytes()
            + self.index.heap_bytes()
            + self.ghost.heap_bytes()
            + self.big.capacity() * (size_of::<(u32, u64)>() + 1)
    }

    /// Checks every structural invariant; panics on a violation.
    #[cfg(test)]
    pub(super) fn check(&self) {
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
