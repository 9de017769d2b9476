//! LRU, the baseline S3-FIFO is measured against.

use super::*;

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

    table_accessors!();
}
