//! The store: two tiers, their eviction policies, and the moves between them.
//!
//! Invariants (see also docs/STORAGE.md, "Tiers"):
//! - A key's current version is the memory tier's if it has one, else the
//!   disk tier's: the memory tier never holds an older version than disk.
//! - Every change to which tier holds which version happens under the
//!   catalog lock, in the order catalog → tier journal → tier index; the
//!   policy lock is only ever taken inside the catalog lock or alone.
//! - A dirty memory object (not yet on disk, not ephemeral) is written to
//!   disk before the memory tier lets go of it.
//! - Object files are never rewritten: a version's file is created complete
//!   and only unlinked, so readers holding an fd keep their snapshot.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use xxhash_rust::xxh3::xxh3_64;

use crate::ban::Bans;
use crate::cold::{ColdTier, FenceState, Fences, Origin, Tombstones, VOID_ALL};
use crate::config::StoreConfig;
use crate::copy::Source;
use crate::error::{display_chain, io_ctx, CommitError, StoreError};
use crate::index::{Entry, SLOT_DIRTY};
use crate::journal::RecordRef;
use crate::layout::{self, key_hash, object_rel_path};
pub(crate) use crate::meta::{now_ns, now_secs};
use crate::meta::{Object, ObjectMeta, PutMeta, PutOptions, Tier as Placement};
use crate::policy::S3Fifo;
use crate::sync::Poison;
use crate::tier::{Install, Kind, OpenFail, Tier, SMALL_BODY_MAX};
use crate::tuning::{Live, Tuning, TuningError};
use crate::validate_key;
pub use staging::Staging;

/// Versions reserved per RESERVE record.
pub(crate) const RESERVE_STEP: u64 = 65536;

/// How often `get` re-reads the index after the file it found was unlinked
/// by a concurrent replace, delete, eviction or migration.
mod background;
mod bans;
mod close;
mod cold;
mod commit;
mod damage;
mod moves;
mod read;
mod staging;
mod stats;

pub use commit::Superseded;
pub use read::Found;
pub use stats::{StoreStats, TierStats};

const GET_ATTEMPTS: usize = 4;

/// Default of [`StoreConfig::open_files_max`]: most open files [`Store::get_shared`] keeps
/// per tier.
pub const SHARED_FDS_MAX: usize = 4096;

/// A shared, read-only open file of an object version, from [`Store::get_shared`].
#[derive(Debug, Clone)]
pub struct SharedObject {
    /// The file; shared with other callers (same file description).
    pub file: Arc<File>,
    /// Metadata of the version.
    pub meta: Arc<ObjectMeta>,
    /// The tier the file is in (for [`Store::reopen`]).
    kind: Kind,
    /// Set once the file's bytes matched the record's checksum ([`Store::verify`]).
    verified: Arc<AtomicBool>,
}

impl SharedObject {
    /// Whether this file's bytes have been checked against the record's checksum since
    /// the store opened it ([`Store::verify`], [`Store::check_streamed`]).
    pub fn verified(&self) -> bool {
        self.verified.load(Ordering::Acquire)
    }
}

/// The object checksum (xxh3-64, as in the journal's `PUT` record), computed
/// incrementally: for readers that hash an object's bytes as they send them, and report
/// the sum with [`Store::check_streamed`].
#[derive(Clone, Default)]
pub struct ObjectHasher(xxhash_rust::xxh3::Xxh3Default);

impl ObjectHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> ObjectHasher {
        ObjectHasher::default()
    }

    /// Adds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of every byte added so far.
    pub fn digest(&self) -> u64 {
        self.0.digest()
    }
}

impl std::fmt::Debug for ObjectHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectHasher")
    }
}

/// What is wrong with a damaged object file (docs/STORAGE.md, "Faults").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Its size is not the recorded size (truncated, or grown).
    Size,
    /// Its bytes do not match the recorded xxh3-64.
    Checksum,
    /// The index names it but the file is gone (a lost memory tier, a removed file).
    Missing,
}

impl Damage {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Damage::Size => "size",
            Damage::Checksum => "checksum",
            Damage::Missing => "missing",
        }
    }
}

/// Longest back-off before retrying a failed write-behind flush.
const MAX_FLUSH_BACKOFF: Duration = Duration::from_secs(30);

/// A two-tier object store. See the crate documentation.
///
/// `Store` is `Send + Sync`; share it between threads as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) promotions: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_errors: AtomicU64,
    pub(crate) expirations: AtomicU64,
    pub(crate) no_space: AtomicU64,
    pub(crate) orphans_swept: AtomicU64,
    pub(crate) recovery_dropped: AtomicU64,
    pub(crate) corrupt_size: AtomicU64,
    pub(crate) corrupt_checksum: AtomicU64,
    pub(crate) corrupt_missing: AtomicU64,
    pub(crate) mem_write_fallbacks: AtomicU64,
    pub(crate) scrub_objects: AtomicU64,
    pub(crate) scrub_bytes: AtomicU64,
    pub(crate) scrub_damage: AtomicU64,
    pub(crate) scrub_passes: AtomicU64,
    pub(crate) scrub_last_pass: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Fingerprint of a key for the policies' ghost queues.
fn fingerprint(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Each local tier's eviction policy, in the order of [`Kind::ALL`].
#[derive(Debug)]
pub(crate) struct Policies(pub(crate) [S3Fifo; Kind::ALL.len()]);

impl Policies {
    pub(crate) fn of(&mut self, kind: Kind) -> &mut S3Fifo {
        &mut self.0[kind.rank()]
    }

    /// Tracks a (re)published entry under slot `id`.
    pub(crate) fn admit(&mut self, kind: Kind, id: u32, e: &Entry, replaced: bool) {
        let p = self.of(kind);
        if replaced {
            p.remove(id as u64);
        }
        p.insert(id as u64, fingerprint(e.key()), e.size());
        if e.pinned() {
            p.set_pinned(id as u64, true);
        }
    }
}

/// Background work.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Job {
    /// Write a dirty memory object to disk.
    Flush(Box<[u8]>, u64),
    /// Copy a disk object into memory.
    Promote(Box<[u8]>, u64),
    /// Remove an expired object.
    Expire(Box<[u8]>, u64),
    /// Remove an object a ban covers.
    Banned(Box<[u8]>, u64),
}

#[derive(Debug, Default)]
pub(crate) struct Jobs {
    queue: VecDeque<Job>,
    queued: HashSet<Job>,
    /// Failed flushes, retried after their time.
    retry: Vec<(Instant, Job, Duration)>,
    /// Write-behind flushes waiting out [`StoreConfig::write_behind_delay`], oldest
    /// first, with the time each becomes due. A version superseded meanwhile is never
    /// written (its job finds it no longer current).
    delayed: VecDeque<(Instant, Job)>,
    /// Set by [`Store::wait_idle`]: delayed flushes are due at once.
    hurry: bool,
}

/// The background thread wakes for delayed flushes at most this often.
const WRITE_BEHIND_TICK: Duration = Duration::from_millis(10);

/// Delayed write-behind flushes held at most; beyond this the oldest are due at once.
const WRITE_BEHIND_MAX_DELAYED: usize = 65536;

impl Jobs {
    /// The next delayed flush, if it is due.
    fn pop_due_flush(&mut self, now: Instant) -> Option<Job> {
        let due = match self.delayed.front() {
            Some((t, _)) => {
                *t <= now || self.hurry || self.delayed.len() > WRITE_BEHIND_MAX_DELAYED
            }
            None => false,
        };
        if !due {
            return None;
        }
        self.delayed.pop_front().map(|(_, job)| job)
    }
}

/// Shared state.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: StoreConfig,
    /// The runtime-adjustable part of the configuration (see `tuning.rs`).
    pub(crate) live: Live,
    /// The local tiers, fastest first: `tiers[kind.rank()]` is `kind`'s
    /// ([`Inner::tier`]).
    pub(crate) tiers: [Tier; Kind::ALL.len()],
    /// Orders every change to which tier holds which version.
    pub(crate) catalog: Mutex<()>,
    pub(crate) policy: Mutex<Policies>,
    pub(crate) next_version: AtomicU64,
    /// Versions up to and including this are covered by a durable RESERVE.
    pub(crate) reserved_upto: AtomicU64,
    pub(crate) poison: Poison,
    pub(crate) closed: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) stop: AtomicBool,
    /// Wakes the background threads' naps when `stop` is set ([`Inner::nap`]).
    pub(crate) stop_lock: Mutex<()>,
    pub(crate) stop_cv: Condvar,
    pub(crate) jobs: Mutex<Jobs>,
    pub(crate) jobs_cv: Condvar,
    /// Serializes flushes and promotions: two copies of one version must
    /// never be installed at once (they share a staging name, and the loser
    /// would unlink the winner's published file).
    pub(crate) moves: Mutex<()>,
    /// The active bans.
    pub(crate) bans: Bans,
    /// Local bans (with no form on the cold tier) that the lurker retired while a cold
    /// tier was attached: no fill they cover is taken (`FILLBANS`, at most
    /// [`crate::ban::MAX_FILL_BANS`]; docs/STORAGE.md, "On a host").
    pub(crate) fill_bans: Bans,
    /// No fill of a version stamped before this (ns) is taken: the newest of the bans
    /// dropped from `fill_bans` when it overflowed, or the start of a store whose
    /// `FILLBANS` or `FILLFLOOR` was damaged.
    pub(crate) fill_floor: AtomicU64,
    /// The last stamp handed out (commits and bans): see [`Inner::stamp`].
    pub(crate) clock: AtomicU64,
    /// The cold tier behind the local ones, once attached (`cold.rs`).
    pub(crate) cold: std::sync::OnceLock<Arc<dyn ColdTier>>,
    /// Deletes the cold tier may not know of yet (kept only while one is attached).
    pub(crate) tombstones: Mutex<Tombstones>,
    /// The fences of the fills being fetched ([`crate::FillFence`]).
    pub(crate) fences: Fences,
}

impl Inner {
    /// Sleeps `d`, or less if the store starts stopping; returns false if it is
    /// stopping. The background threads wait with it instead of polling `stop` on a
    /// short tick, so an idle store does not wake them.
    pub(crate) fn nap(&self, d: Duration) -> bool {
        let mut g = self.stop_lock.lock();
        if self.stop.load(Ordering::Acquire) {
            return false;
        }
        self.stop_cv.wait_for(&mut g, d);
        !self.stop.load(Ordering::Acquire)
    }
}

impl Inner {
    /// The next stamp of the store's monotonic clock: `max(wall clock ns, last + 1)`.
    /// Commits take it under the catalog lock, and so do bans, so every object with a
    /// lower stamp than a ban was published before the ban was recorded.
    pub(crate) fn stamp(&self) -> u64 {
        let now = now_ns();
        let prev = self
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .expect("the closure always returns Some");
        now.max(prev.saturating_add(1))
    }

    /// Whether an active ban covers this index entry.
    pub(crate) fn banned_entry(&self, e: &Entry) -> bool {
        self.bans.covers(e.key(), e.mtime_ns(), || e.meta())
    }

    /// The local tiers, fastest first (the order of [`Kind::ALL`]).
    pub(crate) fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    pub(crate) fn tier(&self, kind: Kind) -> &Tier {
        &self.tiers[kind.rank()]
    }

    fn capacity(&self, kind: Kind) -> (u64, u64) {
        match kind {
            Kind::Memory => (
                self.live.mem_capacity_bytes(),
                self.live.mem_max_objects.load(Ordering::Relaxed),
            ),
            Kind::Disk => (
                self.live.disk_capacity_bytes.load(Ordering::Relaxed),
                self.live.disk_max_objects.load(Ordering::Relaxed),
            ),
        }
    }

    pub(crate) fn mem_enabled(&self) -> bool {
        self.cfg.mem_capacity_bytes > 0 && self.cfg.mem_max_objects > 0
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        self.poison.check()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Rewrites a tier's journal from its index if the file was unlinked while open
    /// (st_nlink 0: deleted by hand), so the next open finds every object. Called
    /// from [`Store::checkpoint`] (periodic in the server); appends check too.
    fn rewrite_unlinked_journals(&self) -> Result<(), StoreError> {
        for tier in self.tiers().iter().rev() {
            if tier.journal.lock().check_linked() {
                continue;
            }
            self.check_writable()?;
            let _c = self.catalog.lock();
            let mut j = tier.journal.lock();
            if j.unlinked {
                tier.compact_locked(&self.poison, &mut j, self.reserve_upto())?;
            }
        }
        Ok(())
    }

    /// Highest version that may have been handed out.
    pub(crate) fn reserve_upto(&self) -> u64 {
        self.reserved_upto
            .load(Ordering::Acquire)
            .max(self.next_version.load(Ordering::Acquire).saturating_sub(1))
    }

    /// Hands out a fresh version, extending the durable reservation first if needed.
    pub(crate) fn alloc_version(&self) -> Result<u64, StoreError> {
        let v = self.next_version.fetch_add(1, Ordering::AcqRel);
        if v <= self.reserved_upto.load(Ordering::Acquire) {
            return Ok(v);
        }
        let mut j = self.tier(Kind::Disk).journal.lock();
        if v <= self.reserved_upto.load(Ordering::Acquire) {
            return Ok(v);
        }
        self.check_writable()?;
        let upto = v.checked_add(RESERVE_STEP).ok_or_else(|| StoreError::Io {
            context: "version space exhausted".into(),
            source: io::Error::other("u64 versions exhausted"),
        })?;
        j.append(RecordRef::Reserve { upto }, &self.poison)?;
        self.tier(Kind::Disk)
            .sync(&self.cfg, &self.poison, "fdatasync journal", || j.sync_io())?;
        self.reserved_upto.fetch_max(upto, Ordering::AcqRel);
        Ok(v)
    }

    pub(crate) fn enqueue(&self, job: Job) {
        let mut j = self.jobs.lock();
        if j.queued.insert(job.clone()) {
            j.queue.push_back(job);
            self.jobs_cv.notify_one();
        }
    }

    /// Queues the write-behind of a new dirty version, due after
    /// [`StoreConfig::write_behind_delay`]: a key rewritten within the delay is written
    /// to disk once, not once per version.
    pub(crate) fn enqueue_flush(&self, key: Box<[u8]>, version: u64) {
        let delay = self.cfg.write_behind_delay;
        if delay.is_zero() {
            return self.enqueue(Job::Flush(key, version));
        }
        // Each version is committed, and so queued, once: no need for the `queued` set
        // (whose churn at tens of thousands of entries cost PUTs their tail latency).
        let due = Instant::now() + delay;
        let mut j = self.jobs.lock();
        let was_empty = j.delayed.is_empty();
        j.delayed.push_back((due, Job::Flush(key, version)));
        if was_empty {
            // The background thread may be sleeping without a deadline to wake for.
            self.jobs_cv.notify_one();
        }
    }

    /// The key's current live version (expired objects count as absent).
    /// Callers that act on it hold the catalog lock.
    pub(crate) fn current_version(&self, key: &[u8]) -> Option<u64> {
        let now = now_secs();
        for tier in self.tiers() {
            if let Some(e) = tier.index.read().get(key) {
                return (!e.is_expired_at(now) && !self.banned_entry(e)).then(|| e.version());
            }
        }
        None
    }

    /// Looks up the current version of `key`: (tier, slot id, metadata).
    /// `read_at`: see `lookup`.
    /// A version an active ban covers is absent: its removal is queued.
    fn find(&self, key: &[u8], read_at: Option<u64>) -> Option<(Kind, u32, ObjectMeta)> {
        let found = self.find_any(key, read_at)?;
        if self.bans.covers_meta(&found.2) {
            self.enqueue(Job::Banned(found.2.key.clone(), found.2.version));
            return None;
        }
        Some(found)
    }

    fn find_any(&self, key: &[u8], read_at: Option<u64>) -> Option<(Kind, u32, ObjectMeta)> {
        if let Some((id, mut m, flags)) = lookup(self.tier(Kind::Memory), key, read_at) {
            m.dirty = flags & SLOT_DIRTY != 0 && !m.ephemeral;
            m.tier = if m.dirty || m.ephemeral {
                Placement::Memory
            } else {
                Placement::Both
            };
            return Some((Kind::Memory, id, m));
        }
        lookup(self.tier(Kind::Disk), key, read_at).map(|(id, mut m, _)| {
            m.tier = Placement::Disk;
            (Kind::Disk, id, m)
        })
    }
}

/// `read_at`: this lookup is a read at that time (Unix seconds): stamp the slot's last access.
fn lookup(tier: &Tier, key: &[u8], read_at: Option<u64>) -> Option<(u32, ObjectMeta, u8)> {
    let idx = tier.index.read();
    let id = idx.id(key)?;
    let e = idx.by_id(id)?;
    if let Some(now) = read_at {
        idx.touch(id, now);
    }
    Some((id, e.meta(), idx.flags(id)))
}

impl Store {
    /// Starts a PUT: creates a staging memfd (`MFD_CLOEXEC|MFD_ALLOW_SEALING`).
    /// Nothing is visible until [`Staging::commit`].
    pub fn begin_put(&self, key: &[u8]) -> Result<Staging, StoreError> {
        validate_key(key)?;
        self.inner.check_writable()?;
        Staging::new(self.inner.clone(), key)
    }

    /// Starts a PUT whose bytes are staged in process memory (a buffer of
    /// `capacity` bytes to begin with) rather than a memfd: for small
    /// copy-mode PUTs, it saves creating, sealing and reading back a memfd.
    /// The `Staging` has no fd ([`Staging::fd`] is `None`). Nothing is visible
    /// until [`Staging::commit`].
    pub fn begin_put_buffered(&self, key: &[u8], capacity: usize) -> Result<Staging, StoreError> {
        validate_key(key)?;
        self.inner.check_writable()?;
        Ok(Staging::buffered(self.inner.clone(), key, capacity))
    }

    /// Deletes `key` from both tiers. Returns true if something was deleted.
    /// Readers holding an fd to the deleted version keep their bytes.
    ///
    /// The DEL record is not synced: after a power loss (not after a process
    /// crash) a delete issued after the last checkpoint may be undone. Use
    /// [`Store::delete_durable`] to sync it.
    pub fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.delete_if(key, crate::meta::Condition::Always, false)
    }

    /// Like [`Store::delete`], but the deletion is fsynced before returning.
    pub fn delete_durable(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.delete_if(key, crate::meta::Condition::Always, true)
    }

    /// Deletes `key` only if `condition` holds (atomically with the delete;
    /// [`StoreError::PreconditionFailed`] otherwise, and nothing changes).
    /// With `durable`, the deletion is fsynced before returning.
    pub fn delete_if(
        &self,
        key: &[u8],
        condition: crate::meta::Condition,
        durable: bool,
    ) -> Result<bool, StoreError> {
        self.delete_inner(key, condition, durable, true)
    }

    /// A delete; `tell_cold`: stamp it, remember it and report it to the cold tier (if
    /// one is attached). A purge by prefix does not: its ban stands for every key.
    fn delete_inner(
        &self,
        key: &[u8],
        condition: crate::meta::Condition,
        durable: bool,
        tell_cold: bool,
    ) -> Result<bool, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        // Whatever there is to remove: a fill of the key being fetched must not land
        // after the delete (the delete is remembered only until the cold tier has it).
        inner.fences.void_key(key, VOID_ALL);
        let banned;
        let mut cold_stamp = None;
        let removed = {
            let _c = inner.catalog.lock();
            inner.check_writable()?;
            condition
                .check(inner.current_version(key))
                .map_err(StoreError::PreconditionFailed)?;
            // With a cold tier, the delete is stamped and remembered until the cold tier
            // has it: a fill of an older version must not bring the key back.
            if tell_cold && inner.cold.get().is_some() {
                let stamp = inner.stamp();
                inner.tombstones.lock().record_here(key, stamp);
                cold_stamp = Some(stamp);
            }
            // A banned object is absent: removing it is not a delete to report.
            banned = !inner.bans.is_empty()
                && inner
                    .tiers()
                    .iter()
                    .find_map(|t| t.index.read().get(key).map(|e| inner.banned_entry(e)))
                    .unwrap_or(false);
            let mut removed = Vec::new();
            for kind in Kind::ALL {
                let r = inner.tier(kind).remove(
                    &inner.cfg,
                    &inner.poison,
                    key,
                    None,
                    durable && kind == Kind::Disk,
                    inner.reserve_upto(),
                )?;
                if let Some((id, e)) = r {
                    inner.policy.lock().of(kind).remove(id as u64);
                    removed.push((kind, e.version()));
                }
            }
            removed
        };
        for (kind, version) in &removed {
            inner.tier(*kind).unlink_object(key, *version);
            // Space the delete freed refills the reserve first, if it was used.
            inner.tier(*kind).refill_reserve();
        }
        if let (Some(cold), Some(stamp)) = (inner.cold.get(), cold_stamp) {
            cold.deleted(key, stamp);
        }
        if removed.is_empty() || banned {
            return Ok(false);
        }
        bump(&inner.counters.deletes);
        Ok(true)
    }

    /// Pins or unpins `key` (in every tier holding it): pinned objects are
    /// never evicted. The state is journaled and survives restarts.
    /// Returns false if there is no such object.
    pub fn set_pinned(&self, key: &[u8], pinned: bool) -> Result<bool, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        let _c = inner.catalog.lock();
        let mut found = false;
        for kind in Kind::ALL {
            let tier = inner.tier(kind);
            let cur = tier
                .index
                .read()
                .get_with_flags(key)
                .map(|(e, f)| (e.clone(), f));
            let Some((e, flags)) = cur else { continue };
            found = true;
            if e.is_expired_at(now_secs()) || inner.banned_entry(&e) {
                return Ok(false);
            }
            if e.pinned() == pinned {
                continue;
            }
            // Same version re-published with the flag changed: the file stays.
            let (id, _) = tier.publish(
                &inner.cfg,
                &inner.poison,
                e.with_pinned(pinned),
                flags,
                false,
                inner.reserve_upto(),
            )?;
            inner.policy.lock().of(kind).set_pinned(id as u64, pinned);
        }
        Ok(found)
    }

    /// syncfs the data directory, then atomically record the journal offset
    /// up to which all data is durable (see docs/STORAGE.md).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.rewrite_unlinked_journals()?;
        self.inner
            .tier(Kind::Disk)
            .checkpoint(&self.inner.cfg, &self.inner.poison, false)
    }

    /// Compacts both journals now, regardless of the garbage ratio.
    pub fn compact(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _c = inner.catalog.lock();
        for tier in inner.tiers().iter().rev() {
            let mut j = tier.journal.lock();
            tier.compact_locked(&inner.poison, &mut j, inner.reserve_upto())?;
        }
        Ok(())
    }

    /// Deletes object files that no index entry refers to and whose version
    /// predates this run. Returns how many were removed.
    pub fn sweep_orphans(&self) -> Result<usize, StoreError> {
        let inner = &*self.inner;
        let never = AtomicBool::new(false);
        let mut n = 0;
        for tier in inner.tiers().iter().rev() {
            n += tier.sweep_orphans(&never, &inner.moves)?;
        }
        inner
            .counters
            .orphans_swept
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Removes expired objects now (the background thread also does this
    /// every [`StoreConfig::expiry_sweep_interval`]). Returns how many.
    pub fn sweep_expired(&self) -> usize {
        self.inner.sweep_expired()
    }

    /// Writes every dirty memory object to disk now. Returns how many were written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let inner = &*self.inner;
        let mut n = 0;
        for (key, version) in inner.dirty_objects() {
            if inner.flush(&key, version)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Waits until the background queue is empty (or `timeout` passes), writing
    /// behind at once what [`StoreConfig::write_behind_delay`] still holds back.
    /// Returns whether it drained. For tests and orderly shutdown.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let idle = |j: &Jobs| j.queue.is_empty() && j.retry.is_empty() && j.delayed.is_empty();
        loop {
            {
                let mut j = self.inner.jobs.lock();
                if !j.delayed.is_empty() && !j.hurry {
                    j.hurry = true;
                    self.inner.jobs_cv.notify_one();
                }
                if idle(&j) {
                    // One more beat for a job popped but still running.
                    drop(j);
                    std::thread::sleep(Duration::from_millis(20));
                    let j = self.inner.jobs.lock();
                    if idle(&j) {
                        return true;
                    }
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.tier(Kind::Disk).dirs.path
    }

    /// The memory tier directory.
    pub fn mem_dir(&self) -> &Path {
        &self.inner.tier(Kind::Memory).dirs.path
    }

    /// Path of the disk-tier file holding `version` of `key` (for
    /// diagnostics; the file exists only while that version is on disk or
    /// held by readers).
    pub fn object_path(&self, key: &[u8], version: u64) -> PathBuf {
        self.inner
            .tier(Kind::Disk)
            .dirs
            .path
            .join(layout::OBJECTS)
            .join(object_rel_path(key_hash(key), version))
    }

    /// Like [`Store::object_path`], in the memory tier.
    pub fn mem_object_path(&self, key: &[u8], version: u64) -> PathBuf {
        self.inner
            .tier(Kind::Memory)
            .dirs
            .path
            .join(layout::OBJECTS)
            .join(object_rel_path(key_hash(key), version))
    }

    /// Changes tier capacities at runtime (bytes, objects), keeping the rest
    /// of the [`Tuning`]; the policies evict down lazily, at the next PUT
    /// into the tier. Refused like [`Store::set_tuning`].
    pub fn set_capacity(&self, memory: (u64, u64), disk: (u64, u64)) -> Result<(), TuningError> {
        let mut t = self.tuning();
        (t.mem_capacity_bytes, t.mem_max_objects) = memory;
        (t.disk_capacity_bytes, t.disk_max_objects) = disk;
        self.set_tuning(&t)
    }

    /// The capacities, thresholds and eviction knobs in effect.
    pub fn tuning(&self) -> Tuning {
        let inner = &*self.inner;
        let mut p = inner.policy.lock();
        let r = Ordering::Relaxed;
        let l = &inner.live;
        Tuning {
            mem_capacity_bytes: l.mem_capacity_bytes.load(r),
            mem_max_objects: l.mem_max_objects.load(r),
            disk_capacity_bytes: l.disk_capacity_bytes.load(r),
            disk_max_objects: l.disk_max_objects.load(r),
            direct_to_disk_threshold: l.direct_to_disk_threshold.load(r),
            promote_after_hits: l.promote_after_hits.load(r),
            mem_eviction: p.of(Kind::Memory).config(),
            disk_eviction: p.of(Kind::Disk).config(),
        }
    }

    /// Validates `t` ([`Tuning::validate`]) and applies all of it, or none
    /// of it. A smaller capacity is not enforced here: the tier evicts down
    /// to it at its next PUT (or promotion). The memory tier cannot be
    /// enabled or disabled at runtime.
    pub fn set_tuning(&self, t: &Tuning) -> Result<(), TuningError> {
        let inner = &*self.inner;
        t.validate(inner.mem_enabled())?;
        let mut p = inner.policy.lock();
        inner.live.store(t);
        p.of(Kind::Memory).set_config(t.mem_eviction);
        p.of(Kind::Memory)
            .set_capacity(t.mem_capacity_bytes, t.mem_max_objects);
        p.of(Kind::Disk).set_config(t.disk_eviction);
        p.of(Kind::Disk)
            .set_capacity(t.disk_capacity_bytes, t.disk_max_objects);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn poison_for_test(&self) {
        self.inner
            .poison
            .set("test-induced sync", io::Error::other("injected"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PutMeta;

    fn cfg(dir: &Path) -> StoreConfig {
        let mut c = StoreConfig::new(dir.join("d"));
        c.mem_dir = Some(dir.join("m"));
        c
    }

    #[test]
    fn poisoned_store_refuses_writes_but_serves_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(cfg(dir.path())).unwrap();
        let mut p = store.begin_put(b"k").unwrap();
        p.write_all(b"v1").unwrap();
        p.commit(
            2,
            PutMeta::default(),
            PutOptions {
                durable: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut pending = store.begin_put(b"k").unwrap();
        pending.write_all(b"v2").unwrap();

        store.poison_for_test();
        assert!(store.is_poisoned());
        assert!(store.stats().poisoned);
        assert!(matches!(store.begin_put(b"x"), Err(StoreError::Poisoned)));
        assert!(matches!(store.delete(b"k"), Err(StoreError::Poisoned)));
        assert!(matches!(store.checkpoint(), Err(StoreError::Poisoned)));
        assert!(matches!(
            pending.commit(2, PutMeta::default(), PutOptions::default()),
            Err(crate::CommitError::Store(StoreError::Poisoned))
        ));
        let obj = store.get(b"k").unwrap().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &obj.file, &mut got).unwrap();
        assert_eq!(got, b"v1");
        assert!(store.head(b"k").is_some());
        // close reports the poisoning and does not mark the shutdown clean.
        assert!(store.close().is_err());
        assert!(!dir.path().join("d/CLEAN").exists());
    }

    #[test]
    fn store_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
        check::<Arc<Store>>();
    }
}
