//! The seam for a cold tier behind the local ones: a tier that holds no local files,
//! hands out no descriptors, may answer slowly or not at all, and is shared with other
//! hosts (the S3 tier, crates/remote, wired up by the server).
//!
//! It differs from the local tiers in kind, not in degree, so it does not enter as a
//! third `Tier` (`tier/`) with a directory, a journal and an index. The store
//! talks to it through two narrow paths:
//!
//! - **outward**, the [`ColdTier`] the store is given with [`Store::attach_cold`]: it
//!   hears of every persistent commit, every delete and every ban, after the fact and
//!   outside the store's locks, and must not block (it queues);
//! - **inward**, objects come back as *fills*: bytes fetched from the cold tier are
//!   staged like a PUT ([`Store::begin_fill`]) and committed with their origin
//!   ([`Staging::commit_fill`]), which keeps the version's original commit stamp and
//!   checksum and refuses what the local store knows to be dead (a local delete or ban
//!   stamped after it, an expiry, a local version). A filled object is then an ordinary
//!   local object: served in every mode, fd included.
//!
//! Deletes and bans other hosts made arrive as [`Store::apply_cold_delete`] and
//! [`Store::apply_cold_ban`], which keep the other host's stamp.
//!
//! [`Store::attach_cold`]: crate::Store::attach_cold
//! [`Store::begin_fill`]: crate::Store::begin_fill
//! [`Staging::commit_fill`]: crate::Staging::commit_fill
//! [`Store::apply_cold_delete`]: crate::Store::apply_cold_delete
//! [`Store::apply_cold_ban`]: crate::Store::apply_cold_ban

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::ban::BanInfo;
use crate::meta::ObjectMeta;

/// What the store tells a cold tier. Each call comes after the change is published
/// (and durable as the caller asked), outside the store's locks; it must return quickly
/// (queue the work) and must not call back into the store synchronously.
pub trait ColdTier: Send + Sync + fmt::Debug {
    /// A persistent (not ephemeral) version was committed here: upload it. `meta` carries
    /// the key, the local version (to read it back with [`crate::Store::get`] and check
    /// it is still current), the commit stamp (`mtime_ns`) and the checksum. Fills are
    /// not reported: they came from the cold tier.
    fn committed(&self, meta: &Arc<ObjectMeta>);

    /// `key` was deleted here at `stamp_ns` (the store's clock): every version committed
    /// before it is dead, on every host. Reported whether or not a local version existed.
    fn deleted(&self, key: &[u8], stamp_ns: u64);

    /// A ban was added here: every object it matches committed before `ban.stamp` is dead.
    fn banned(&self, ban: &BanInfo);

    /// Every key starting with `prefix` was purged here at `stamp_ns`
    /// ([`crate::Store::purge_prefix`]; the local ban that stands for it is not also
    /// reported through [`ColdTier::banned`]).
    fn purged(&self, prefix: &[u8], stamp_ns: u64);
}

/// Where a fill came from: the commit stamp and checksum the cold tier recorded with
/// the version (see [`crate::Staging::commit_fill`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The version's commit stamp (ns since the epoch) on the host that wrote it.
    pub stamp_ns: u64,
    /// The xxh3-64 of its bytes, as recorded with it; the fill is refused if the bytes
    /// staged do not match.
    pub checksum: u64,
}

/// Most keys whose local delete is remembered for the cold tier at once; beyond it the
/// oldest half is forgotten (counted in the second number of
/// [`Store::tombstones`](crate::Store::tombstones)).
pub(crate) const MAX_TOMBSTONES: usize = 1 << 20;

/// Keys deleted here (or by another host) with the stamp of the delete, kept while a
/// cold tier is attached so a fill of an older version cannot bring one back before the
/// cold tier has recorded the delete itself ([`crate::Store::settle_tombstone`]).
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    map: HashMap<Box<[u8]>, u64>,
    pub(crate) dropped: u64,
}

impl Tombstones {
    /// Records a delete of `key` at `stamp` (keeps the later of two).
    pub(crate) fn record(&mut self, key: &[u8], stamp: u64) {
        if self.map.len() >= MAX_TOMBSTONES && !self.map.contains_key(key) {
            let mut stamps: Vec<u64> = self.map.values().copied().collect();
            let mid = stamps.len() / 2;
            let (_, cut, _) = stamps.select_nth_unstable(mid);
            let cut = *cut;
            let before = self.map.len();
            self.map.retain(|_, s| *s > cut);
            self.dropped += (before - self.map.len()) as u64;
        }
        let s = self.map.entry(key.into()).or_insert(stamp);
        *s = (*s).max(stamp);
    }

    /// The stamp of the latest delete of `key` remembered, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(key).copied()
    }

    /// Forgets the delete of `key` at `stamp` (not a later one).
    pub(crate) fn settle(&mut self, key: &[u8], stamp: u64) {
        if self.map.get(key).is_some_and(|s| *s <= stamp) {
            self.map.remove(key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_keep_the_latest_and_settle_only_what_they_were_told() {
        let mut t = Tombstones::default();
        t.record(b"k", 10);
        t.record(b"k", 5);
        assert_eq!(t.get(b"k"), Some(10));
        t.settle(b"k", 7);
        assert_eq!(t.get(b"k"), Some(10), "a later delete stays");
        t.settle(b"k", 10);
        assert_eq!(t.get(b"k"), None);
    }
}
