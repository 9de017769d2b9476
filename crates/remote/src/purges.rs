//! The purge set: every purge by prefix ever made on the tier, the newest stamp per
//! prefix, in one object (`P/purges`) that every client reads before its first read
//! or upload.
//!
//! A purge removes nothing from the bucket (keys under a prefix cannot be listed:
//! names are hashes), so the versions it covers stay there until replaced, and a
//! client serves them unless it knows the purge. The invalidation log tells the
//! clients that are polling; a client that starts later (a new host, or one restarted
//! after later events moved its cursor past the purge) learns it here. Layout
//! (docs/STORAGE.md, "The purge set"), integers little endian:
//!
//! ```text
//! 8  magic "OBJMPSET"
//! 2  format u16 = 1
//! 2  reserved, 0
//! 4  count u32
//! count x { 8 time_ns u64, 1 host_len u8, host, 2 prefix_len u16, prefix }
//!    (sorted by prefix, each prefix once)
//! 8  xxh3-64 of all the bytes before
//! ```

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64;

use crate::format::{HostId, Stamp, FORMAT, MAX_KEY_LEN};

/// The purge set's name, relative to the prefix.
pub(crate) const NAME: &str = "purges";
/// The longest purge set read (64 MiB: some 15,000 purges of 4 KiB prefixes, or a
/// million of short ones); a longer answer is refused as damaged before it is held.
pub(crate) const MAX_LEN: u64 = 64 << 20;

const MAGIC: [u8; 8] = *b"OBJMPSET";

/// Known purges: for each purged prefix, the largest stamp it was purged at (a purge
/// covers the versions of its prefix with smaller stamps, so the newest one per prefix
/// says everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Purges {
    by_prefix: BTreeMap<Vec<u8>, Stamp>,
    /// The distinct prefix lengths, so a lookup tries only those.
    lens: BTreeSet<usize>,
}

impl Purges {
    /// Adds the purge of `prefix` at `stamp`; whether it changed the set (false when
    /// the prefix was already purged at that stamp or a later one).
    pub(crate) fn add(&mut self, prefix: &[u8], stamp: &Stamp) -> bool {
        match self.by_prefix.get_mut(prefix) {
            Some(s) if *s >= *stamp => false,
            Some(s) => {
                *s = stamp.clone();
                true
            }
            None => {
                self.by_prefix.insert(prefix.to_vec(), stamp.clone());
                self.lens.insert(prefix.len());
                true
            }
        }
    }

    /// Adds every purge of `other`; whether that changed the set.
    pub(crate) fn merge(&mut self, other: &Purges) -> bool {
        let mut changed = false;
        for (p, s) in &other.by_prefix {
            changed |= self.add(p, s);
        }
        changed
    }

    /// The largest stamp of a purge that covers `key` committed at `at`.
    pub(crate) fn covering(&self, key: &[u8], at: &Stamp) -> Option<&Stamp> {
        self.lens
            .iter()
            .take_while(|&&l| l <= key.len())
            .filter_map(|&l| self.by_prefix.get(&key[..l]))
            .filter(|s| *at < **s)
            .max()
    }

    /// How many prefixes are purged.
    pub(crate) fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// Every (prefix, stamp), by prefix.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&[u8], &Stamp)> {
        self.by_prefix.iter().map(|(p, s)| (p.as_slice(), s))
    }

    /// Removes the purge of `prefix` at exactly `stamp` (not a newer one of it);
    /// whether it was there.
    pub(crate) fn remove(&mut self, prefix: &[u8], stamp: &Stamp) -> bool {
        if self.by_prefix.get(prefix) != Some(stamp) {
            return false;
        }
        self.by_prefix.remove(prefix);
        if !self.by_prefix.keys().any(|p| p.len() == prefix.len()) {
            self.lens.remove(&prefix.len());
        }
        true
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.by_prefix.len() * 48);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(self.by_prefix.len() as u32).to_le_bytes());
        for (p, s) in &self.by_prefix {
            out.extend_from_slice(&s.time_ns.to_le_bytes());
            let host = s.host.as_str().as_bytes();
            out.push(host.len() as u8);
            out.extend_from_slice(host);
            out.extend_from_slice(&(p.len() as u16).to_le_bytes());
            out.extend_from_slice(p);
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Purges, &'static str> {
        if buf.len() < 16 + 8 || buf[..8] != MAGIC {
            return Err("not objmapper's purge set (bad magic)");
        }
        let (body, sum) = buf.split_at(buf.len() - 8);
        if xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err("purge set checksum mismatch");
        }
        if u16::from_le_bytes([body[8], body[9]]) != FORMAT {
            return Err("unknown purge set format version");
        }
        if body[10..12] != [0, 0] {
            return Err("reserved bytes are not 0");
        }
        let count = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes"));
        let mut rest = &body[16..];
        let mut take = |n: usize| -> Result<&[u8], &'static str> {
            if rest.len() < n {
                return Err("truncated purge set");
            }
            let (a, b) = rest.split_at(n);
            rest = b;
            Ok(a)
        };
        let mut set = Purges::default();
        for _ in 0..count {
            let time_ns = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            let hl = take(1)?[0] as usize;
            let host = std::str::from_utf8(take(hl)?).map_err(|_| "bad host id")?;
            let host = HostId::new(host).map_err(|_| "bad host id")?;
            let pl = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
            if pl > MAX_KEY_LEN {
                return Err("purge prefix longer than a key");
            }
            let prefix = take(pl)?;
            if !set.add(prefix, &Stamp { time_ns, host }) {
                return Err("a prefix twice in the purge set");
            }
        }
        if !rest.is_empty() {
            return Err("trailing bytes in the purge set");
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(t: u64, h: &str) -> Stamp {
        Stamp {
            time_ns: t,
            host: HostId::new(h).unwrap(),
        }
    }

    #[test]
    fn the_newest_purge_of_a_prefix_covers_what_came_before_it() {
        let mut p = Purges::default();
        assert!(p.add(b"img/", &stamp(10, "a")));
        assert!(
            !p.add(b"img/", &stamp(5, "b")),
            "an older purge adds nothing"
        );
        assert!(p.add(b"img/", &stamp(20, "b")));
        assert!(p.add(b"", &stamp(3, "c")));
        assert_eq!(p.covering(b"img/1", &stamp(19, "z")), Some(&stamp(20, "b")));
        assert_eq!(p.covering(b"img/1", &stamp(20, "b")), None, "not itself");
        assert_eq!(p.covering(b"doc/1", &stamp(2, "a")), Some(&stamp(3, "c")));
        assert_eq!(p.covering(b"doc/1", &stamp(4, "a")), None);
        assert_eq!(p.covering(b"im", &stamp(1, "a")), Some(&stamp(3, "c")));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn the_set_round_trips_and_refuses_damage() {
        let mut p = Purges::default();
        p.add(b"img/", &stamp(10, "host-a"));
        p.add(b"", &stamp(7, "host-b"));
        p.add(&[0xff, 0, 1], &stamp(u64::MAX, "h"));
        let bytes = p.encode();
        assert_eq!(Purges::decode(&bytes).unwrap(), p);
        assert_eq!(
            Purges::decode(&Purges::default().encode()).unwrap().len(),
            0
        );
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Purges::decode(&b).is_err(), "a flipped byte {i} is seen");
        }
        assert!(Purges::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Purges::decode(b"OBJMREMT").is_err());
    }

    #[test]
    fn merging_keeps_the_newest_stamp_per_prefix() {
        let mut a = Purges::default();
        a.add(b"x/", &stamp(5, "a"));
        let mut b = Purges::default();
        b.add(b"x/", &stamp(9, "b"));
        b.add(b"y/", &stamp(1, "b"));
        assert!(a.merge(&b));
        assert!(!a.merge(&b), "nothing new the second time");
        assert_eq!(a.covering(b"x/1", &stamp(8, "z")), Some(&stamp(9, "b")));
        assert_eq!(a.len(), 2);
    }
}
