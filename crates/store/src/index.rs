//! In-memory index of one tier: key → current version's packed metadata.
//!
//! Each entry is a single heap allocation holding the packed PUT payload
//! (the same bytes as the journal record's payload: fixed fields, key,
//! metadata section; see `journal::encode_put_payload`). Entries live in a
//! slab, so each has a stable `u32` slot id that the eviction policy uses;
//! a hashbrown table of slot ids, hashed by key with a per-process random
//! seed (so crafted keys cannot force collisions), finds them by key. Per
//! object this costs a 4-byte table slot plus a control byte, a 24-byte slab
//! slot, and one allocation of 43 + key + metadata bytes.

use std::sync::atomic::{AtomicU32, Ordering};

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::journal::{self, HEADER_LEN};
use crate::meta::ObjectMeta;

/// Offset of `expires` in a PUT payload.
const EXPIRES_OFF: usize = 32;
/// Offset of `flags` in a PUT payload.
const FLAGS_OFF: usize = 40;
/// Offset of `key_len` in a PUT payload.
const KEY_LEN_OFF: usize = 41;
/// Offset of the key in a PUT payload.
const KEY_OFF: usize = 43;

/// Slot flag (memory tier): the version is not on disk yet.
pub(crate) const SLOT_DIRTY: u8 = 0x01;

/// Packed index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry(Box<[u8]>);

impl Entry {
    /// Packs `m`. Fails only for invalid keys or oversized metadata.
    pub(crate) fn new(m: &ObjectMeta) -> Result<Entry, journal::EncodeError> {
        let mut v = Vec::with_capacity(journal::put_record_len(m) - HEADER_LEN - 1);
        journal::encode_put_payload(m, &mut v)?;
        Ok(Entry(v.into_boxed_slice()))
    }

    /// An entry holding a PUT payload that `journal::view_put_payload` accepted.
    pub(crate) fn from_payload(payload: &[u8]) -> Entry {
        Entry(Box::from(payload))
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_le_bytes(b)
    }

    pub(crate) fn version(&self) -> u64 {
        self.u64_at(0)
    }

    pub(crate) fn size(&self) -> u64 {
        self.u64_at(8)
    }

    /// The commit stamp (`ObjectMeta::mtime_ns`).
    pub(crate) fn mtime_ns(&self) -> u64 {
        self.u64_at(16)
    }

    /// Expiry in unix seconds, if any.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        Some(self.u64_at(EXPIRES_OFF)).filter(|&e| e != 0)
    }

    pub(crate) fn is_expired_at(&self, now: u64) -> bool {
        self.expires_at().is_some_and(|e| e <= now)
    }

    pub(crate) fn pinned(&self) -> bool {
        self.0[FLAGS_OFF] & journal::FLAG_PINNED != 0
    }

    pub(crate) fn ephemeral(&self) -> bool {
        self.0[FLAGS_OFF] & journal::FLAG_EPHEMERAL != 0
    }

    /// The same entry with the pinned flag set or cleared.
    pub(crate) fn with_pinned(&self, pinned: bool) -> Entry {
        let mut b = self.0.clone();
        if pinned {
            b[FLAGS_OFF] |= journal::FLAG_PINNED;
        } else {
            b[FLAGS_OFF] &= !journal::FLAG_PINNED;
        }
        Entry(b)
    }

    pub(crate) fn key(&self) -> &[u8] {
        let len = u16::from_le_bytes([self.0[KEY_LEN_OFF], self.0[KEY_LEN_OFF + 1]]) as usize;
        &self.0[KEY_OFF..KEY_OFF + len]
    }

    /// The PUT payload.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.0
    }

    /// Length of this entry's PUT record in the journal.
    pub(crate) fn record_len(&self) -> u64 {
        (HEADER_LEN + 1 + self.0.len()) as u64
    }

    /// Unpacks the metadata.
    pub(crate) fn meta(&self) -> ObjectMeta {
        // Entries are only built by `Entry::new`, whose output always decodes.
        journal::decode_put_payload(&self.0).expect("index entry holds a valid PUT payload")
    }
}

#[derive(Debug)]
struct Slot {
    entry: Option<Entry>,
    flags: u8,
    /// Unix seconds of the last GET since the process started (0 = none). Sits in what
    /// was padding: a slot is 24 bytes with or without it.
    last_access: AtomicU32,
}

/// One tier's entries, by key and by slot id.
#[derive(Debug)]
pub(crate) struct Index {
    table: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    seed: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

/// A random 64-bit value from the OS (also the journal salt).
pub(crate) fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_le_bytes(b),
        // Fall back to something that still varies per process and run.
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (std::process::id() as u64).rotate_left(32)
        }
    }
}

impl Index {
    pub(crate) fn new() -> Index {
        Index::with_capacity(0)
    }

    /// An index with room for `n` entries before it reallocates.
    pub(crate) fn with_capacity(n: usize) -> Index {
        Index {
            table: HashTable::with_capacity(n),
            slots: Vec::with_capacity(n),
            free: Vec::new(),
            seed: random_seed(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.seed)
    }

    fn entry_at(&self, id: u32) -> &Entry {
        self.slots[id as usize]
            .entry
            .as_ref()
            .expect("table only holds occupied slots")
    }

    /// Slot ids run from 0 to this (exclusive); some may be free.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Slot id of `key`.
    pub(crate) fn id(&self, key: &[u8]) -> Option<u32> {
        let h = self.hash(key);
        self.table
            .find(h, |&id| self.entry_at(id).key() == key)
            .copied()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.id(key).map(|id| self.entry_at(id))
    }

    /// Entry and slot flags of `key`.
    pub(crate) fn get_with_flags(&self, key: &[u8]) -> Option<(&Entry, u8)> {
        self.id(key)
            .map(|id| (self.entry_at(id), self.slots[id as usize].flags))
    }

    pub(crate) fn by_id(&self, id: u32) -> Option<&Entry> {
        self.slots.get(id as usize).and_then(|s| s.entry.as_ref())
    }

    /// Records a read of slot `id` at `now` (Unix seconds). Takes `&self`: readers do it
    /// under the index's read lock.
    pub(crate) fn touch(&self, id: u32, now: u64) {
        if let Some(s) = self.slots.get(id as usize) {
            s.last_access
                .store(u32::try_from(now).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
    }

    /// Unix seconds of the last read of slot `id` since the process started, if any.
    pub(crate) fn last_access(&self, id: u32) -> Option<u64> {
        self.slots
            .get(id as usize)
            .map(|s| s.last_access.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .map(u64::from)
    }

    pub(crate) fn flags(&self, id: u32) -> u8 {
        self.slots.get(id as usize).map_or(0, |s| s.flags)
    }

    pub(crate) fn set_flags(&mut self, id: u32, flags: u8) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.flags = flags;
        }
    }

    /// Inserts `entry` or replaces the entry with the same key (keeping its
    /// slot id and setting `flags`). Returns the slot id and the old entry.
    pub(crate) fn replace(&mut self, entry: Entry, flags: u8) -> (u32, Option<Entry>) {
        if let Some(id) = self.id(entry.key()) {
            let slot = &mut self.slots[id as usize];
            slot.flags = flags;
            return (id, slot.entry.replace(entry));
        }
        let h = self.hash(entry.key());
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Slot {
                    entry: Some(entry),
                    flags,
                    last_access: AtomicU32::new(0),
                };
                id
            }
            None => {
                let id = u32::try_from(self.slots.len()).expect("fewer than 2^32 objects");
                self.slots.push(Slot {
                    entry: Some(entry),
                    flags,
                    last_access: AtomicU32::new(0),
                });
                id
            }
        };
        let (slots, seed) = (&self.slots, self.seed);
        self.table.insert_unique(h, id, |&other| {
            let e = slots[other as usize].entry.as_ref().expect("occupied");
            xxh3_64_with_seed(e.key(), seed)
        });
        (id, None)
    }

    /// Removes `key`, returning its slot id and entry.
    pub(crate) fn take(&mut self, key: &[u8]) -> Option<(u32, Entry)> {
        let h = self.hash(key);
        let slots = &self.slots;
        let found = self.table.find_entry(h, |&id| {
            slots[id as usize].entry.as_ref().map(Entry::key) == Some(key)
        });
        let id = match found {
            Ok(occupied) => occupied.remove().0,
            Err(_) => return None,
        };
        let slot = &mut self.slots[id as usize];
        slot.flags = 0;
        slot.last_access.store(0, Ordering::Relaxed);
        let e = slot.entry.take().expect("occupied");
        self.free.push(id);
        Some((id, e))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|s| s.entry.as_ref())
    }

    /// Slot ids with their entries and flags.
    pub(crate) fn iter_ids(&self) -> impl Iterator<Item = (u32, &Entry, u8)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_ref().map(|e| (i as u32, e, s.flags)))
    }
}

/// Index slots examined per read-lock acquisition while listing or lurking, so a
/// scan never keeps writers out for long.
pub const LIST_SCAN_CHUNK: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_access_costs_no_slot_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    fn meta(key: &[u8], version: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            version,
            size: version * 10,
            mtime_ns: 0,
            checksum: 0,
            content_type: Some("text/plain".into()),
            custom: vec![("a".into(), Box::from(&b"b"[..]))],
            ..Default::default()
        }
    }

    fn entry(key: &[u8], version: u64) -> Entry {
        Entry::new(&meta(key, version)).unwrap()
    }

    #[test]
    fn packed_entry_accessors() {
        let m = meta(b"some key", 7);
        let e = Entry::new(&m).unwrap();
        assert_eq!(e.key(), b"some key");
        assert_eq!(e.version(), 7);
        assert_eq!(e.size(), 70);
        assert_eq!(e.meta(), m);
        assert_eq!(e.record_len(), journal::put_record_len(&m) as u64);
        assert!(Entry::new(&meta(b"", 1)).is_err());
    }

    #[test]
    fn lookup_and_replace_by_key() {
        let mut idx = Index::new();
        let (a, old) = idx.replace(entry(b"a", 1), 0);
        assert!(old.is_none());
        let (b, old) = idx.replace(entry(b"b", 2), SLOT_DIRTY);
        assert!(old.is_none());
        assert_ne!(a, b);
        let (a2, old) = idx.replace(entry(b"a", 3), 0);
        assert_eq!(a2, a, "a replaced entry keeps its slot id");
        assert_eq!(old.unwrap().version(), 1);
        assert_eq!(idx.get(&b"a"[..]).unwrap().version(), 3);
        assert_eq!(idx.flags(b), SLOT_DIRTY);
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.take(&b"b"[..]).map(|(id, e)| (id, e.version())),
            Some((b, 2))
        );
        assert!(idx.get(&b"b"[..]).is_none());
        assert!(idx.by_id(b).is_none());
        // The freed slot is reused.
        let (c, _) = idx.replace(entry(b"c", 4), 0);
        assert_eq!(c, b);
        assert_eq!(idx.iter().count(), 2);
    }
}

/// Memory probe: `cargo test -p objmapper-store --release --lib index_memory -- --ignored --nocapture`.
#[cfg(test)]
mod mem_probe {
    use super::*;

    fn rss_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    #[ignore = "slow; prints index bytes per object"]
    fn index_memory_per_object() {
        const N: u64 = 1_000_000;
        let before = rss_kib();
        let mut idx = Index::new();
        for i in 0..N {
            let key = format!("https://example.com/some/path/{i:012}").into_bytes();
            let m = ObjectMeta {
                key: key.into(),
                version: i + 1,
                size: 1000,
                mtime_ns: 0,
                checksum: 0,
                content_type: Some("text/html".into()),
                custom: Vec::new(),
                ..Default::default()
            };
            idx.replace(Entry::new(&m).unwrap(), 0);
        }
        let per_object = (rss_kib() - before) * 1024 / N;
        println!("index: {per_object} bytes/object (42-byte keys, content type text/html)");
        assert_eq!(idx.len(), N as usize);
    }
}
