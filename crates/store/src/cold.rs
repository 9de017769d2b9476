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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

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

    /// Whether the cold tier lacks `key`'s local version `version` and has not given up
    /// on it: its upload waits or runs, or was dropped from a full queue. Asked under
    /// the store's locks, when eviction is about to lose the version's last copy: only
    /// look (no I/O, no call into the store). Default: no.
    fn unsent(&self, _key: &[u8], _version: u64) -> bool {
        false
    }

    /// `key`'s version stamped `stamp_ns` left the local tiers before its upload
    /// ([`ColdTier::unsent`] said so): the store remembers a delete of the key at
    /// that stamp, and the cold tier sends it in place of the upload, so that the older
    /// versions it and other hosts hold go too: a newer write was acknowledged here,
    /// and what is left of it is a miss, never the version it replaced.
    fn lost_before_upload(&self, _key: &[u8], _stamp_ns: u64) {}
}

/// A fill's guard against what happens to its key while it is fetched: a delete, a
/// write, a purge or a ban here from when the fence is put up ([`Store::fence_fill`])
/// voids the fill, whose commit is then refused. The store's other checks at the
/// commit (its remembered deletes, its bans, a live local version) look at state that
/// does not last: a delete is forgotten once the cold tier has its tombstone, a ban
/// retired once nothing it covers is left, a local version may expire. A fill that
/// read its version's header before any of that happened would otherwise be published
/// after it, and serve what was deleted, purged or replaced. Put the fence up before
/// asking the cold tier, and keep it until the commit.
///
/// [`Store::fence_fill`]: crate::Store::fence_fill
#[derive(Debug)]
pub struct FillFence {
    pub(crate) state: Arc<FenceState>,
}

impl FillFence {
    /// The key the fence guards.
    pub fn key(&self) -> &[u8] {
        &self.state.key
    }

    /// Whether something voided fills of the key since the fence went up (of some
    /// versions at least: see [`FillFence::refuses`]).
    pub fn is_void(&self) -> bool {
        self.state.is_void()
    }

    /// Whether the fill of the version stamped `stamp_ns` is void: something here since
    /// the fence went up covers it. A delete, write, purge or ban made here covers every
    /// version; another host's delete or purge (applied here with its own stamp) only
    /// the versions it covers on the tier, so the newer write that replaced a version
    /// still lands.
    pub fn refuses(&self, stamp_ns: u64) -> bool {
        self.state.refuses(stamp_ns)
    }
}

#[derive(Debug)]
pub(crate) struct FenceState {
    key: Box<[u8]>,
    /// Versions stamped below this are void ([`VOID_ALL`]: every one); 0 while none is.
    void_below: AtomicU64,
}

/// What an invalidation made here voids: every version of the key being fetched.
pub(crate) const VOID_ALL: u64 = u64::MAX;

impl FenceState {
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn is_void(&self) -> bool {
        self.void_below.load(Ordering::Acquire) > 0
    }

    pub(crate) fn refuses(&self, stamp_ns: u64) -> bool {
        let below = self.void_below.load(Ordering::Acquire);
        below == VOID_ALL || stamp_ns < below
    }
}

/// The fences of the fills being fetched (at most a few dozen: the cold tier bounds
/// its fetches), held weakly: a fence dropped is gone at the next look.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    list: parking_lot::Mutex<Vec<Weak<FenceState>>>,
    /// Whether the list may hold a fence: every local write and delete asks, and
    /// without a cold tier (or a fill) it never takes the lock.
    any: AtomicBool,
}

impl Fences {
    /// Puts up a fence for `key`.
    pub(crate) fn add(&self, key: &[u8]) -> FillFence {
        let state = Arc::new(FenceState {
            key: key.into(),
            void_below: AtomicU64::new(0),
        });
        let mut v = self.list.lock();
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(&state));
        self.any.store(true, Ordering::SeqCst);
        FillFence { state }
    }

    /// Voids the fills whose keys `hit` says, of versions stamped below `below`
    /// ([`VOID_ALL`]: of every version).
    pub(crate) fn void_where(&self, below: u64, hit: impl Fn(&[u8]) -> bool) {
        if !self.any.load(Ordering::SeqCst) {
            return;
        }
        let mut v = self.list.lock();
        v.retain(|w| match w.upgrade() {
            Some(f) => {
                if hit(&f.key) {
                    f.void_below.fetch_max(below, Ordering::AcqRel);
                }
                true
            }
            None => false,
        });
        // Set again under the lock by the next `add`.
        self.any.store(!v.is_empty(), Ordering::SeqCst);
    }

    /// Voids the fills of `key`, of versions stamped below `below`.
    pub(crate) fn void_key(&self, key: &[u8], below: u64) {
        self.void_where(below, |k| k == key);
    }
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

/// Most deletes made on other hosts (from the invalidation log: deletes, and writes
/// over a version) remembered at once; beyond it the older half of them is forgotten
/// (counted in the second number of [`Store::tombstones`](crate::Store::tombstones)).
/// They only guard fills already running when the delete arrived (a fill that starts
/// later reads the tier's newer version or tombstone), so the newest are what matter.
pub(crate) const MAX_REMOTE_TOMBSTONES: usize = 1 << 18;

/// A remembered delete: its stamp, and whether it was made here and the cold tier
/// does not have it yet.
#[derive(Clone, Copy, Debug)]
struct Tomb {
    stamp: u64,
    here: bool,
}

/// Keys deleted here (or by another host) with the stamp of the delete, kept while a
/// cold tier is attached so a fill of an older version cannot bring one back. A delete
/// made here is kept until the cold tier has recorded it
/// ([`crate::Store::settle_tombstone`]) and is never forgotten before: the cold tier's
/// own queue of deletes bounds them. Other hosts' deletes are bounded by
/// [`MAX_REMOTE_TOMBSTONES`], the oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    map: HashMap<Box<[u8]>, Tomb>,
    /// How many entries are other hosts' deletes (`here == false`).
    remote: usize,
    pub(crate) dropped: u64,
}

impl Tombstones {
    /// Records a delete of `key` made here at `stamp`, to keep until it is settled.
    pub(crate) fn record_here(&mut self, key: &[u8], stamp: u64) {
        self.record(key, stamp, true);
    }

    /// Records a delete of `key` another host made at `stamp`.
    pub(crate) fn record_remote(&mut self, key: &[u8], stamp: u64) {
        if self.remote >= MAX_REMOTE_TOMBSTONES && !self.map.contains_key(key) {
            let mut stamps: Vec<u64> = self
                .map
                .values()
                .filter(|t| !t.here)
                .map(|t| t.stamp)
                .collect();
            let mid = stamps.len() / 2;
            let (_, cut, _) = stamps.select_nth_unstable(mid);
            let cut = *cut;
            let before = self.map.len();
            self.map.retain(|_, t| t.here || t.stamp > cut);
            let gone = before - self.map.len();
            self.remote -= gone;
            self.dropped += gone as u64;
        }
        self.record(key, stamp, false);
    }

    /// Keeps the later of two deletes; a key stays "here" while a delete made here is
    /// unsettled.
    fn record(&mut self, key: &[u8], stamp: u64, here: bool) {
        match self.map.get_mut(key) {
            Some(t) => {
                if here && !t.here {
                    self.remote -= 1;
                }
                t.here |= here;
                t.stamp = t.stamp.max(stamp);
            }
            None => {
                if !here {
                    self.remote += 1;
                }
                self.map.insert(key.into(), Tomb { stamp, here });
            }
        }
    }

    /// The stamp of the latest delete of `key` remembered, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(key).map(|t| t.stamp)
    }

    /// The cold tier has the delete of `key` at `stamp`: from now on it is remembered
    /// as another host's are (bounded, the oldest forgotten first), no longer kept
    /// whatever their number. It is not forgotten at once: a store that said it
    /// recorded the tombstone and did not (a store or gateway answering 200 to a write
    /// it dropped) would otherwise have this host read back what it deleted (found
    /// from outside; the other hosts, which remembered the delete's event, did not).
    pub(crate) fn settle(&mut self, key: &[u8], _stamp: u64) {
        let Some(t) = self.map.get_mut(key) else {
            return;
        };
        // Settled (or, when the remembered delete is later, another host's: bounded as
        // theirs are).
        if t.here {
            t.here = false;
            self.remote += 1;
        }
    }

    /// Deletes made here that the cold tier does not have yet.
    pub(crate) fn unsettled(&self) -> usize {
        self.map.values().filter(|t| t.here).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_keep_the_latest_and_stay_remembered_once_settled() {
        let mut t = Tombstones::default();
        t.record_here(b"k", 10);
        t.record_remote(b"k", 5);
        assert_eq!(t.get(b"k"), Some(10));
        assert_eq!(t.unsettled(), 1);
        t.settle(b"k", 10);
        assert_eq!(t.get(b"k"), Some(10), "remembered as other hosts' are");
        assert_eq!((t.unsettled(), t.remote), (0, 1));
    }

    #[test]
    fn other_hosts_deletes_are_bounded_and_never_push_out_a_delete_made_here() {
        let mut t = Tombstones::default();
        t.record_here(b"mine", 1);
        for i in 0..MAX_REMOTE_TOMBSTONES as u64 + 10 {
            t.record_remote(&i.to_le_bytes(), 100 + i);
        }
        assert_eq!(t.get(b"mine"), Some(1), "the oldest of all, and kept");
        assert!(t.map.len() <= MAX_REMOTE_TOMBSTONES + 1, "{}", t.map.len());
        assert!(t.dropped > 0);
        // The newest other hosts' deletes are the ones kept.
        let last = MAX_REMOTE_TOMBSTONES as u64 + 9;
        assert_eq!(t.get(&last.to_le_bytes()), Some(100 + last));
        assert_eq!(t.get(&0u64.to_le_bytes()), None);
        t.settle(b"mine", 1);
        assert_eq!(t.unsettled(), 0);
        // Settled, it is bounded as theirs are: the oldest, it goes first.
        for i in 0..MAX_REMOTE_TOMBSTONES as u64 {
            t.record_remote(&(i + 1_000_000).to_le_bytes(), 1_000_000 + i);
        }
        assert_eq!(t.get(b"mine"), None);
    }
}
