//! In-memory index: key → current version's metadata.
//!
//! Each entry is a single heap allocation holding the packed PUT payload
//! (the same bytes as the journal record's payload: fixed fields, key,
//! metadata section; see `journal::encode_put_payload`). The key is stored
//! once, inside the entry, and the set is hashed by it. `ObjectMeta` values
//! are materialized on lookup. Per object this costs a 16-byte table slot
//! plus one control byte, and one allocation of 34 + key + metadata bytes.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::journal::{self, HEADER_LEN};
use crate::meta::ObjectMeta;

/// Offset of `key_len` in a PUT payload.
const KEY_LEN_OFF: usize = 32;
/// Offset of the key in a PUT payload.
const KEY_OFF: usize = 34;

/// Packed index entry, hashed and compared by key only.
#[derive(Clone, Debug)]
pub(crate) struct Entry(Box<[u8]>);

impl Entry {
    /// Packs `m`. Fails only for invalid keys or oversized metadata.
    pub(crate) fn new(m: &ObjectMeta) -> Result<Entry, journal::EncodeError> {
        let mut v = Vec::with_capacity(journal::put_record_len(m) - HEADER_LEN - 1);
        journal::encode_put_payload(m, &mut v)?;
        Ok(Entry(v.into_boxed_slice()))
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

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match `<[u8] as Hash>::hash` for `Borrow<[u8]>` lookups.
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

pub(crate) type Index = HashSet<Entry>;

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &[u8], version: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            version,
            size: version * 10,
            mtime_ns: 0,
            checksum: 0,
            content_type: Some("text/plain".into()),
            custom: vec![("a".into(), Box::from(&b"b"[..]))],
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
        assert!(idx.replace(entry(b"a", 1)).is_none());
        assert!(idx.replace(entry(b"b", 2)).is_none());
        let old = idx.replace(entry(b"a", 3)).unwrap();
        assert_eq!(old.version(), 1);
        assert_eq!(idx.get(&b"a"[..]).unwrap().version(), 3);
        assert_eq!(idx.len(), 2);
        assert!(idx.remove(&b"b"[..]));
        assert!(!idx.contains(&b"b"[..]));
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
            };
            idx.insert(Entry::new(&m).unwrap());
        }
        let per_object = (rss_kib() - before) * 1024 / N;
        println!("index: {per_object} bytes/object (42-byte keys, content type text/html)");
        assert_eq!(idx.len(), N as usize);
    }
}
