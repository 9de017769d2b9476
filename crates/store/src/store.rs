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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use xxhash_rust::xxh3::xxh3_64;

use crate::ban::Bans;
use crate::config::StoreConfig;
use crate::error::{display_chain, io_ctx, CommitError, OpenError, StoreError};
use crate::index::{Entry, SLOT_DIRTY};
use crate::journal::RecordRef;
use crate::layout::{self, key_hash, object_rel_path};
use crate::meta::{Object, ObjectMeta, PutMeta, PutOptions, Tier as Placement};
use crate::policy::S3Fifo;
use crate::staging::{BufferedPut, Source, Staging};
use crate::sync::Poison;
use crate::tier::{Kind, OpenFail, Tier};
use crate::tuning::{Live, Tuning, TuningError};
use crate::validate_key;

/// Versions reserved per RESERVE record.
pub(crate) const RESERVE_STEP: u64 = 65536;

/// How often `get` re-reads the index after the file it found was unlinked
/// by a concurrent replace, delete, eviction or migration.
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
    threads: Vec<JoinHandle<()>>,
}

/// Usage and counters of one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Objects held.
    pub objects: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Capacity in objects.
    pub capacity_objects: u64,
    /// GETs served from this tier.
    pub hits: u64,
    /// Objects this tier's policy evicted.
    pub evictions: u64,
    /// Writes refused because the tier's filesystem was full (ENOSPC or EDQUOT).
    pub full_errors: u64,
    /// The last write to this tier failed because its filesystem was full, and no
    /// commit to it has succeeded since.
    pub full: bool,
    /// Object files the filesystem would not label with their record (no user extended
    /// attributes, or metadata too large for one): they cannot be re-admitted if the
    /// journal loses their record.
    pub unlabelled: u64,
    /// Damaged journal regions recovery found when the store was opened.
    pub journal_damage: u64,
    /// Objects recovery re-admitted from their files' labels when the store was opened.
    pub readmitted: u64,
}

/// Counters and gauges, as returned by [`Store::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Live objects (each key once, whichever tiers hold it).
    pub objects: u64,
    /// Bytes of live objects (each key once).
    pub bytes: u64,
    /// The memory tier.
    pub memory: TierStats,
    /// The disk tier.
    pub disk: TierStats,
    /// `get` calls with a valid key.
    pub gets: u64,
    /// `get` calls that returned an object.
    pub hits: u64,
    /// `get` calls that returned `None` (including expired objects).
    pub misses: u64,
    /// Successful commits.
    pub puts: u64,
    /// Deletes that removed an object.
    pub deletes: u64,
    /// Objects copied from disk into memory because they were read often.
    pub promotions: u64,
    /// Memory objects written to disk (write-behind and demotion).
    pub flushes: u64,
    /// Failed attempts to write a memory object to disk.
    pub flush_errors: u64,
    /// Memory objects not yet on disk.
    pub dirty: u64,
    /// Objects removed because they expired.
    pub expirations: u64,
    /// PUTs refused because no tier could make room.
    pub no_space: u64,
    /// Current disk journal size in bytes.
    pub journal_bytes: u64,
    /// Bytes of disk journal records needed to rebuild the index.
    pub journal_live_bytes: u64,
    /// Disk journal compactions since open (including one at open).
    pub compactions: u64,
    /// Orphaned object files deleted since open.
    pub orphans_swept: u64,
    /// Objects dropped by recovery at open because their data failed verification.
    pub recovery_dropped: u64,
    /// Whether the store is poisoned.
    pub poisoned: bool,
    /// Bans active now (see [`Store::ban`]).
    pub bans_active: u64,
    /// Bans added since open.
    pub bans_added: u64,
    /// Objects removed because a ban covered them (by a read or the ban lurker).
    pub ban_removals: u64,
    /// Object versions dropped because their file's size was not the recorded size.
    pub corrupt_size: u64,
    /// Object versions dropped because their bytes did not match the recorded checksum.
    pub corrupt_checksum: u64,
    /// Object versions dropped because the index named a file that was gone.
    pub corrupt_missing: u64,
    /// Memory-tier PUTs written to the disk tier instead because the memory tier's
    /// directory could not take the file (removed, damaged).
    pub mem_write_fallbacks: u64,
    /// Object versions the scrubber and [`Store::verify_all`] have read and checked.
    pub scrub_objects: u64,
    /// Bytes they have read.
    pub scrub_bytes: u64,
    /// Damaged versions they found (and dropped); also counted in `corrupt_*`.
    pub scrub_damage: u64,
    /// Complete scrubber passes over every tier since open.
    pub scrub_passes: u64,
    /// When the last complete scrubber pass ended, Unix seconds; 0 before the first.
    pub scrub_last_pass_secs: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) hits_mem: AtomicU64,
    pub(crate) hits_disk: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) evictions_mem: AtomicU64,
    pub(crate) evictions_disk: AtomicU64,
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

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fingerprint of a key for the policies' ghost queues.
fn fingerprint(key: &[u8]) -> u64 {
    xxh3_64(key)
}

#[derive(Debug)]
pub(crate) struct Policies {
    pub(crate) mem: S3Fifo,
    pub(crate) disk: S3Fifo,
}

impl Policies {
    pub(crate) fn of(&mut self, kind: Kind) -> &mut S3Fifo {
        match kind {
            Kind::Memory => &mut self.mem,
            Kind::Disk => &mut self.disk,
        }
    }

    /// Tracks a (re)published entry under slot `id`.
    fn admit(&mut self, kind: Kind, id: u32, e: &Entry, replaced: bool) {
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
    pub(crate) disk: Tier,
    pub(crate) mem: Tier,
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
    pub(crate) jobs: Mutex<Jobs>,
    pub(crate) jobs_cv: Condvar,
    /// Serializes flushes and promotions: two copies of one version must
    /// never be installed at once (they share a staging name, and the loser
    /// would unlink the winner's published file).
    pub(crate) moves: Mutex<()>,
    /// The active bans.
    pub(crate) bans: Bans,
    /// The last stamp handed out (commits and bans): see [`Inner::stamp`].
    pub(crate) clock: AtomicU64,
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

    pub(crate) fn tier(&self, kind: Kind) -> &Tier {
        match kind {
            Kind::Memory => &self.mem,
            Kind::Disk => &self.disk,
        }
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
        let mut j = self.disk.journal.lock();
        if v <= self.reserved_upto.load(Ordering::Acquire) {
            return Ok(v);
        }
        self.check_writable()?;
        let upto = v.checked_add(RESERVE_STEP).ok_or_else(|| StoreError::Io {
            context: "version space exhausted".into(),
            source: io::Error::other("u64 versions exhausted"),
        })?;
        j.append(RecordRef::Reserve { upto }, &self.poison)?;
        self.disk
            .sync(&self.cfg, &self.poison, "fdatasync journal", || j.sync_io())?;
        self.reserved_upto.fetch_max(upto, Ordering::AcqRel);
        Ok(v)
    }

    /// A read or a move could not open a version's file: a missing file the index
    /// still names, or a size that is not the recorded one, drops the version
    /// ([`Inner::drop_damaged`]); the caller looks the key up again. Other errors are
    /// returned.
    pub(crate) fn open_failed(
        &self,
        kind: Kind,
        key: &[u8],
        version: u64,
        size: u64,
        fail: OpenFail,
    ) -> Result<(), StoreError> {
        match fail {
            OpenFail::Missing => {
                // A replace, delete, eviction or move takes the version out of the index
                // before unlinking its file: if the index still names it, it is lost.
                let still = self.tier(kind).index.read().get(key).map(Entry::version);
                if still == Some(version) {
                    self.drop_damaged(kind, key, version, Damage::Missing, "no such file");
                }
                Ok(())
            }
            OpenFail::Size(found) => {
                self.drop_damaged(
                    kind,
                    key,
                    version,
                    Damage::Size,
                    &format!("the file holds {found} bytes, the record says {size}"),
                );
                Ok(())
            }
            OpenFail::Io(e) => Err(io_ctx(format!(
                "opening {} tier object file",
                self.tier(kind).name()
            ))(e)),
        }
    }

    /// A version's file is damaged (wrong size, wrong checksum, gone): it is logged,
    /// counted and dropped from its tier like a delete of that version (the DEL record
    /// is fsynced on disk, so it does not come back), and its file is moved to
    /// `lost+found/`. Reads then
    /// find the other tier's copy if there is one.
    ///
    /// - A damaged disk copy whose clean memory copy (same version) is intact: the memory
    ///   copy becomes dirty and is written behind again.
    /// - A damaged dirty memory copy was the newest version: older disk versions of the
    ///   key go too, so a lost write never brings back what it replaced.
    ///
    /// Returns false, doing nothing, if the tier no longer names that version.
    pub(crate) fn drop_damaged(
        &self,
        kind: Kind,
        key: &[u8],
        version: u64,
        damage: Damage,
        detail: &str,
    ) -> bool {
        let tier = self.tier(kind);
        let Some(flags) = tier
            .index
            .read()
            .get_with_flags(key)
            .filter(|(e, _)| e.version() == version)
            .map(|(e, f)| if e.ephemeral() { 0 } else { f })
        else {
            return false;
        };
        bump(match damage {
            Damage::Size => &self.counters.corrupt_size,
            Damage::Checksum => &self.counters.corrupt_checksum,
            Damage::Missing => &self.counters.corrupt_missing,
        });
        tracing::error!(
            key = %key.escape_ascii(),
            version,
            tier = tier.name(),
            path = %tier.object_path(key, version).display(),
            reason = damage.name(),
            detail,
            "damaged object file: this version is dropped and never served"
        );
        if let Err(e) = self.check_writable() {
            tracing::warn!(error = %e, "cannot drop the damaged object's index entry; reads keep refusing it");
            return true;
        }
        let mut unlink = vec![(kind, version)];
        let mut reflush = false;
        {
            let _c = self.catalog.lock();
            let r = tier.remove(
                &self.cfg,
                &self.poison,
                key,
                Some(version),
                kind == Kind::Disk,
                self.reserve_upto(),
            );
            match r {
                Ok(Some((id, _))) => self.policy.lock().of(kind).remove(id as u64),
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!(error = %display_chain(&e), "could not drop the damaged object's index entry");
                    return true;
                }
            };
            match kind {
                Kind::Disk => {
                    // An intact clean memory copy of the version is now the only one.
                    reflush = self.mem.set_flags_if(key, version, SLOT_DIRTY);
                }
                Kind::Memory if flags & SLOT_DIRTY != 0 => {
                    let older = self
                        .disk
                        .index
                        .read()
                        .get(key)
                        .map(Entry::version)
                        .filter(|&d| d < version);
                    if let Some(d) = older {
                        match self.disk.remove(
                            &self.cfg,
                            &self.poison,
                            key,
                            Some(d),
                            true,
                            self.reserve_upto(),
                        ) {
                            Ok(Some((id, _))) => {
                                self.policy.lock().disk.remove(id as u64);
                                unlink.push((Kind::Disk, d));
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %display_chain(&e), "could not drop the older disk version of a lost object")
                            }
                        }
                    }
                }
                Kind::Memory => {}
            }
        }
        for (k, v) in unlink {
            if (k, v) == (kind, version) && damage != Damage::Missing {
                self.tier(k).quarantine_object(key, v);
            } else {
                self.tier(k).unlink_object(key, v);
            }
        }
        if reflush {
            tracing::warn!(key = %key.escape_ascii(), version, "the memory tier's copy is intact: writing it to disk again");
            self.enqueue(Job::Flush(key.into(), version));
        }
        true
    }

    /// A memory-tier install failed with an I/O error (its directory was removed or
    /// damaged: logged once at error level, then at debug) or found its filesystem full
    /// (logged at warn); counted either way.
    fn mem_write_failed(&self, e: &StoreError) {
        let n = self
            .counters
            .mem_write_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        if matches!(e, StoreError::NoSpace(_)) {
            tracing::warn!(error = %display_chain(e), "the memory tier's filesystem is full; this PUT goes to the disk tier");
        } else if n == 0 {
            tracing::error!(dir = %self.mem.dirs.path.display(), error = %display_chain(e), "cannot write to the memory tier; PUTs go to the disk tier (ephemeral PUTs fail) until the memory tier is restored by a restart");
        } else {
            tracing::debug!(error = %display_chain(e), "memory tier write failed; writing to disk");
        }
    }

    fn no_space(&self, msg: String) -> StoreError {
        bump(&self.counters.no_space);
        StoreError::NoSpace(msg)
    }

    /// Evicts from `kind` until an object of `incoming` bytes fits.
    pub(crate) fn make_room(&self, kind: Kind, incoming: u64) -> Result<(), StoreError> {
        let (cap_bytes, _) = self.capacity(kind);
        let name = self.tier(kind).name();
        if incoming > cap_bytes {
            return Err(self.no_space(format!(
                "an object of {incoming} bytes does not fit the {name} tier's capacity of {cap_bytes} bytes"
            )));
        }
        // Each round evicts one object; the policy holds at most this many.
        let mut rounds = self.tier(kind).len() + 16;
        loop {
            let victim = {
                let mut p = self.policy.lock();
                let pol = p.of(kind);
                if !pol.needs_eviction(incoming) {
                    return Ok(());
                }
                pol.evict()
            };
            let Some(id) = victim else {
                let (objects, bytes) = (
                    self.tier(kind).len(),
                    self.tier(kind).bytes.load(Ordering::Relaxed),
                );
                return Err(self.no_space(format!(
                    "the {name} tier is full ({objects} objects, {bytes} bytes) and nothing in it can be evicted (pinned)"
                )));
            };
            if let Err(e) = self.evict(kind, id as u32) {
                // Put the victim back so it stays accounted for.
                if let Some(e2) = self.tier(kind).index.read().by_id(id as u32) {
                    let mut p = self.policy.lock();
                    if !p.of(kind).contains(id) {
                        p.admit(kind, id as u32, e2, false);
                    }
                }
                return Err(self.no_space(format!(
                    "could not make room in the {name} tier: {}",
                    display_chain(&e)
                )));
            }
            rounds = rounds.saturating_sub(1);
            if rounds == 0 {
                return Err(self.no_space(format!(
                    "could not make room in the {name} tier for {incoming} bytes"
                )));
            }
        }
    }

    /// Evicts the object in slot `id` of `kind`. A dirty memory object is
    /// written to disk first (demotion); an ephemeral one is simply gone.
    fn evict(&self, kind: Kind, id: u32) -> Result<(), StoreError> {
        let tier = self.tier(kind);
        let found = {
            let idx = tier.index.read();
            idx.by_id(id).map(|e| {
                (
                    Box::<[u8]>::from(e.key()),
                    e.version(),
                    idx.flags(id) & SLOT_DIRTY != 0,
                    e.ephemeral(),
                )
            })
        };
        let Some((key, version, dirty, ephemeral)) = found else {
            return Ok(());
        };
        if kind == Kind::Memory && dirty && !ephemeral {
            self.flush(&key, version)?;
        }
        let (removed, also_mem) = {
            let _c = self.catalog.lock();
            let removed = tier.remove(
                &self.cfg,
                &self.poison,
                &key,
                Some(version),
                false,
                self.reserve_upto(),
            )?;
            // Without its disk copy, a clean memory copy of the same version
            // would be neither evictable-by-flush nor durable: it leaves too.
            let also_mem = if kind == Kind::Disk && removed.is_some() {
                let clean_same = self
                    .mem
                    .index
                    .read()
                    .get_with_flags(&key)
                    .is_some_and(|(e, f)| e.version() == version && f & SLOT_DIRTY == 0);
                if clean_same {
                    self.mem.remove(
                        &self.cfg,
                        &self.poison,
                        &key,
                        Some(version),
                        false,
                        self.reserve_upto(),
                    )?
                } else {
                    None
                }
            } else {
                None
            };
            let mut p = self.policy.lock();
            if let Some((id, _)) = &removed {
                p.of(kind).remove(*id as u64);
            }
            if let Some((mid, _)) = &also_mem {
                p.mem.remove(*mid as u64);
            }
            (removed, also_mem)
        };
        if removed.is_some() {
            tier.unlink_object(&key, version);
            bump(match kind {
                Kind::Memory => &self.counters.evictions_mem,
                Kind::Disk => &self.counters.evictions_disk,
            });
            tracing::debug!(key = %key.escape_ascii(), version, tier = tier.name(), "evicted");
        }
        if also_mem.is_some() {
            self.mem.unlink_object(&key, version);
        }
        Ok(())
    }

    /// Writes a dirty memory object to disk and marks it clean. Returns
    /// false if there was nothing to do (no longer current or not dirty).
    pub(crate) fn flush(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        let _moving = self.moves.lock();
        let entry = match self.mem.index.read().get_with_flags(key) {
            Some((e, f)) if e.version() == version && f & SLOT_DIRTY != 0 && !e.ephemeral() => {
                e.clone()
            }
            _ => return Ok(false),
        };
        self.check_writable()?;
        let size = entry.size();
        let src = match self.mem.open_checked(key, version, size) {
            Ok(f) => f,
            Err(fail) => {
                self.open_failed(Kind::Memory, key, version, size, fail)?;
                return Ok(false);
            }
        };
        let r = self.disk.install_copy(
            &self.cfg,
            &self.poison,
            Source::File(&src),
            key,
            version,
            size,
            false,
            entry.payload(),
        );
        let want = entry.meta().checksum;
        if let Some(sum) = r.as_ref().ok().copied().filter(|&sum| sum != want) {
            // The bytes were hashed as they were read from the memory copy: it is the
            // damaged one. It is dropped; there is nothing to retry.
            self.disk.unlink_object(key, version);
            let detail =
                format!("xxh3 {sum:016x}, the record says {want:016x} (while writing it to disk)");
            self.drop_damaged(Kind::Memory, key, version, Damage::Checksum, &detail);
            return Ok(false);
        }
        let r = r.and_then(|_| {
            self.make_room(Kind::Disk, size).inspect_err(|_| {
                self.disk.unlink_object(key, version);
            })
        });
        if let Err(e) = r {
            bump(&self.counters.flush_errors);
            tracing::warn!(key = %key.escape_ascii(), version, error = %display_chain(&e), "writing a memory object to disk failed; it stays in memory");
            return Err(e);
        }
        let old = {
            let _c = self.catalog.lock();
            let still = self
                .mem
                .index
                .read()
                .get_with_flags(key)
                .is_some_and(|(e, f)| e.version() == version && f & SLOT_DIRTY != 0);
            if !still {
                None
            } else {
                let (id, old) = self.disk.publish(
                    &self.cfg,
                    &self.poison,
                    entry.clone(),
                    0,
                    false,
                    self.reserve_upto(),
                )?;
                self.mem.set_flags_if(key, version, 0);
                self.policy
                    .lock()
                    .admit(Kind::Disk, id, &entry, old.is_some());
                Some(old)
            }
        };
        match old {
            None => {
                // Replaced or deleted meanwhile: the copy is garbage (unless
                // the disk tier holds this very version).
                if self.disk.index.read().get(key).map(Entry::version) != Some(version) {
                    self.disk.unlink_object(key, version);
                }
                Ok(false)
            }
            Some(old) => {
                if let Some(o) = old.filter(|o| o.version() != version) {
                    self.disk.unlink_object(key, o.version());
                }
                bump(&self.counters.flushes);
                Ok(true)
            }
        }
    }

    /// Copies a disk object into the memory tier (clean).
    pub(crate) fn promote(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        if !self.mem_enabled() || self.mem.index.read().get(key).is_some() {
            return Ok(false);
        }
        let size = match self.disk.index.read().get(key) {
            Some(e) if e.version() == version => e.size(),
            _ => return Ok(false),
        };
        if size > self.live.direct_to_disk_threshold() || size > self.live.mem_capacity_bytes() {
            return Ok(false);
        }
        self.check_writable()?;
        // Room first, without holding `moves`: evicting a dirty object
        // flushes it, which takes `moves` itself.
        self.make_room(Kind::Memory, size)?;
        let _moving = self.moves.lock();
        let entry = match self.disk.index.read().get(key) {
            Some(e) if e.version() == version => e.clone(),
            _ => return Ok(false),
        };
        if self.mem.index.read().get(key).is_some() {
            return Ok(false);
        }
        let src = match self.disk.open_checked(key, version, size) {
            Ok(f) => f,
            Err(fail) => {
                self.open_failed(Kind::Disk, key, version, size, fail)?;
                return Ok(false);
            }
        };
        let sum = self.mem.install_copy(
            &self.cfg,
            &self.poison,
            Source::File(&src),
            key,
            version,
            size,
            false,
            entry.payload(),
        )?;
        let want = entry.meta().checksum;
        if sum != want {
            self.mem.unlink_object(key, version);
            self.drop_damaged(
                Kind::Disk,
                key,
                version,
                Damage::Checksum,
                &format!("xxh3 {sum:016x}, the record says {want:016x} (while promoting it)"),
            );
            return Ok(false);
        }
        let published = {
            let _c = self.catalog.lock();
            let ok = self.mem.index.read().get(key).is_none()
                && self.disk.index.read().get(key).map(Entry::version) == Some(version);
            if ok {
                let (id, _) = self.mem.publish(
                    &self.cfg,
                    &self.poison,
                    entry.clone(),
                    0,
                    false,
                    self.reserve_upto(),
                )?;
                self.policy.lock().admit(Kind::Memory, id, &entry, false);
            }
            ok
        };
        if !published {
            if self.mem.index.read().get(key).map(Entry::version) != Some(version) {
                self.mem.unlink_object(key, version);
            }
            return Ok(false);
        }
        bump(&self.counters.promotions);
        Ok(true)
    }

    /// Publishes a new version: the copy is already installed in `kind`.
    fn publish_new(
        &self,
        kind: Kind,
        meta: &mut ObjectMeta,
        durable: bool,
        condition: crate::meta::Condition,
    ) -> Result<(), StoreError> {
        let flags = if kind == Kind::Memory && !meta.ephemeral {
            SLOT_DIRTY
        } else {
            0
        };
        let (old_same, old_other) = {
            let _c = self.catalog.lock();
            condition
                .check(self.current_version(&meta.key))
                .map_err(StoreError::PreconditionFailed)?;
            // The commit stamp, under the catalog lock (see `stamp`).
            meta.mtime_ns = self.stamp();
            let entry = Entry::new(meta).map_err(|e| StoreError::Io {
                context: "packing index entry".into(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
            let tier = self.tier(kind);
            let (id, old) = tier.publish(
                &self.cfg,
                &self.poison,
                entry.clone(),
                flags,
                durable,
                self.reserve_upto(),
            )?;
            // Versions the new one supersedes in the other tier go: disk
            // never outranks memory, and an ephemeral PUT must not leave an
            // older persistent version behind to resurface.
            let other = match kind {
                Kind::Disk => Some(Kind::Memory),
                Kind::Memory if meta.ephemeral => Some(Kind::Disk),
                Kind::Memory => None,
            };
            let removed_other = match other {
                Some(o) => self.tier(o).remove(
                    &self.cfg,
                    &self.poison,
                    &meta.key,
                    None,
                    durable,
                    self.reserve_upto(),
                )?,
                None => None,
            };
            let mut p = self.policy.lock();
            p.admit(kind, id, &entry, old.is_some());
            if let (Some(o), Some((oid, _))) = (other, &removed_other) {
                p.of(o).remove(*oid as u64);
            }
            (old, other.zip(removed_other))
        };
        if let Some(o) = old_same {
            self.tier(kind).unlink_object(&meta.key, o.version());
        }
        if let Some((o, (_, e))) = old_other {
            self.tier(o).unlink_object(&meta.key, e.version());
        }
        Ok(())
    }

    /// The commit protocol after the staged bytes are sealed and checked.
    pub(crate) fn commit(
        &self,
        key: &[u8],
        src: Source<'_>,
        size: u64,
        pm: PutMeta,
        opts: PutOptions,
        checksum_hint: Option<u64>,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        let _ = checksum_hint;
        if opts.durable && opts.ephemeral {
            return Err(CommitError::InvalidOptions(
                "an object cannot be both durable (fsynced to disk) and ephemeral (never on disk)",
            ));
        }
        let to_mem = self.mem_enabled()
            && (opts.ephemeral
                || (!opts.durable
                    && size <= self.live.direct_to_disk_threshold()
                    && size <= self.live.mem_capacity_bytes()));
        if opts.ephemeral && !to_mem {
            return Err(self
                .no_space("ephemeral objects need the memory tier, which is disabled".into())
                .into());
        }
        let mut kind = if to_mem { Kind::Memory } else { Kind::Disk };
        // Make room first, so a full tier fails before any copying. A
        // persistent object that finds the memory tier full of pinned
        // objects goes to disk instead; only ephemeral ones need memory.
        if let Err(e) = self.make_room(kind, size) {
            if kind == Kind::Memory && !opts.ephemeral {
                tracing::debug!(error = %display_chain(&e), "memory tier full; writing to disk");
                kind = Kind::Disk;
                self.make_room(kind, size)?;
            } else {
                return Err(e.into());
            }
        }
        let durable_here = opts.durable && kind == Kind::Disk;
        let version = self.alloc_version()?;
        let mut meta = ObjectMeta {
            key: key.into(),
            version,
            size,
            // Set at publishing, under the catalog lock.
            mtime_ns: 0,
            // Known once the bytes are copied.
            checksum: 0,
            content_type: pm.content_type.map(String::into_boxed_str),
            custom: pm
                .custom
                .into_iter()
                .map(|(n, v)| (n.into_boxed_str(), v.into_boxed_slice()))
                .collect(),
            expires_at: pm.expires_at,
            pinned: opts.pinned,
            ephemeral: opts.ephemeral,
            tier: Placement::Memory,
            dirty: false,
        };
        // The file's label (label.rs): its record, the checksum filled in as written.
        let mut label = Vec::new();
        crate::journal::encode_put_payload(&meta, &mut label).map_err(|e| match e {
            crate::journal::EncodeError::MetaTooLarge(size) => CommitError::MetaTooLarge {
                size,
                max: crate::MAX_META_LEN,
            },
            crate::journal::EncodeError::InvalidKey(len) => StoreError::InvalidKey { len }.into(),
        })?;
        meta.checksum = match self.tier(kind).install_copy(
            &self.cfg,
            &self.poison,
            src,
            key,
            version,
            size,
            durable_here,
            &label,
        ) {
            Ok(sum) => sum,
            // The memory tier's directory cannot take the file (removed or damaged
            // behind the store's back): a persistent PUT goes to disk, as one the memory
            // tier has no room for does.
            // So does one whose tmpfs is full (the file's write failed with ENOSPC).
            Err(e @ (StoreError::Io { .. } | StoreError::NoSpace(_)))
                if kind == Kind::Memory && !opts.ephemeral =>
            {
                self.mem_write_failed(&e);
                kind = Kind::Disk;
                self.make_room(kind, size)?;
                self.disk.install_copy(
                    &self.cfg,
                    &self.poison,
                    src,
                    key,
                    version,
                    size,
                    false,
                    &label,
                )?
            }
            Err(e) => return Err(e.into()),
        };
        let tier = self.tier(kind);
        meta.tier = match kind {
            Kind::Memory => Placement::Memory,
            Kind::Disk => Placement::Disk,
        };
        meta.dirty = kind == Kind::Memory && !opts.ephemeral;
        match self.publish_new(kind, &mut meta, durable_here, opts.condition) {
            Ok(()) => {}
            // The memory tier's journal append found its tmpfs full: nothing was
            // published there, so the object goes to disk instead.
            Err(e @ StoreError::NoSpace(_)) if kind == Kind::Memory && !opts.ephemeral => {
                tier.unlink_object(key, version);
                self.mem_write_failed(&e);
                kind = Kind::Disk;
                self.make_room(kind, size)?;
                self.disk.install_copy(
                    &self.cfg,
                    &self.poison,
                    src,
                    key,
                    version,
                    size,
                    false,
                    &label,
                )?;
                meta.tier = Placement::Disk;
                meta.dirty = false;
                if let Err(e) = self.publish_new(kind, &mut meta, false, opts.condition) {
                    self.disk.unlink_object(key, version);
                    return Err(e.into());
                }
            }
            Err(e) => {
                tier.unlink_object(key, version);
                return Err(e.into());
            }
        }
        bump(&self.counters.puts);
        if meta.dirty {
            self.enqueue_flush(meta.key.clone(), version);
        } else if opts.durable && self.mem_enabled() && size <= self.live.direct_to_disk_threshold()
        {
            // Freshly written objects are likely to be read: keep a clean
            // copy in memory too.
            self.enqueue(Job::Promote(meta.key.clone(), version));
        }
        Ok(Arc::new(meta))
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
        for tier in [&self.mem, &self.disk] {
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
        if let Some((id, mut m, flags)) = lookup(&self.mem, key, read_at) {
            m.dirty = flags & SLOT_DIRTY != 0 && !m.ephemeral;
            m.tier = if m.dirty || m.ephemeral {
                Placement::Memory
            } else {
                Placement::Both
            };
            return Some((Kind::Memory, id, m));
        }
        lookup(&self.disk, key, read_at).map(|(id, mut m, _)| {
            m.tier = Placement::Disk;
            (Kind::Disk, id, m)
        })
    }

    /// Removes `key` at `version` (expired) from whichever tiers hold that version.
    pub(crate) fn expire(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        let removed = self.remove_version(key, version)?;
        if removed {
            bump(&self.counters.expirations);
        }
        Ok(removed)
    }

    /// Removes `key` at `version` from whichever tiers hold that version; never a newer one.
    fn remove_version(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        self.check_writable()?;
        let removed = {
            let _c = self.catalog.lock();
            let mut removed = Vec::new();
            for kind in [Kind::Memory, Kind::Disk] {
                let r = self.tier(kind).remove(
                    &self.cfg,
                    &self.poison,
                    key,
                    Some(version),
                    false,
                    self.reserve_upto(),
                )?;
                if let Some((id, _)) = r {
                    self.policy.lock().of(kind).remove(id as u64);
                    removed.push(kind);
                }
            }
            removed
        };
        for kind in &removed {
            self.tier(*kind).unlink_object(key, version);
        }
        Ok(!removed.is_empty())
    }

    /// Removes every expired object; returns how many.
    pub(crate) fn sweep_expired(&self) -> usize {
        let now = now_secs();
        let mut expired: Vec<(Box<[u8]>, u64)> = Vec::new();
        for tier in [&self.mem, &self.disk] {
            expired.extend(
                tier.index
                    .read()
                    .iter()
                    .filter(|e| e.is_expired_at(now))
                    .map(|e| (Box::from(e.key()), e.version())),
            );
        }
        let mut n = 0;
        for (key, version) in expired {
            match self.expire(&key, version) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %display_chain(&e), "removing an expired object failed");
                    break;
                }
            }
        }
        n
    }

    /// (key, version) of every memory object not yet on disk.
    fn dirty_objects(&self) -> Vec<(Box<[u8]>, u64)> {
        self.mem
            .index
            .read()
            .iter_ids()
            .filter(|(_, e, f)| f & SLOT_DIRTY != 0 && !e.ephemeral())
            .map(|(_, e, _)| (Box::from(e.key()), e.version()))
            .collect()
    }

    /// Writes every dirty memory object to disk (at close).
    fn flush_all(&self) {
        for (key, version) in self.dirty_objects() {
            if let Err(e) = self.flush(&key, version) {
                tracing::error!(key = %key.escape_ascii(), error = %display_chain(&e), "object not written to disk at shutdown; it stays in the memory tier");
            }
        }
    }

    fn run_job(&self, job: &Job) -> Result<(), StoreError> {
        match job {
            Job::Flush(k, v) => self.flush(k, *v).map(drop),
            Job::Promote(k, v) => self.promote(k, *v).map(drop),
            Job::Expire(k, v) => self.expire(k, *v).map(drop),
            Job::Banned(k, v) => self.remove_banned(k, *v).map(drop),
        }
    }

    /// The background thread: write-behind, promotions, expiry sweeps.
    fn background(&self) {
        let mut last_sweep = Instant::now();
        loop {
            let job = {
                let mut j = self.jobs.lock();
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let now = Instant::now();
                    if let Some(pos) = j.retry.iter().position(|(t, _, _)| *t <= now) {
                        let (_, job, backoff) = j.retry.swap_remove(pos);
                        break Some((job, backoff));
                    }
                    if let Some(job) = j.queue.pop_front() {
                        j.queued.remove(&job);
                        break Some((job, Duration::from_secs(1) / 2));
                    }
                    if let Some(job) = j.pop_due_flush(now) {
                        break Some((job, Duration::from_secs(1) / 2));
                    }
                    if j.delayed.is_empty() {
                        j.hurry = false;
                    }
                    if now.duration_since(last_sweep) >= self.cfg.expiry_sweep_interval {
                        break None;
                    }
                    let mut nap = Duration::from_millis(200);
                    if let Some((t, _)) = j.delayed.front() {
                        // Wake when the oldest delayed flush is due, but not more often
                        // than every 10 ms: each wake-up then writes a batch, instead of
                        // one wake-up per PUT.
                        nap = nap
                            .min(t.saturating_duration_since(now))
                            .max(WRITE_BEHIND_TICK);
                    }
                    self.jobs_cv.wait_for(&mut j, nap);
                }
            };
            match job {
                None => {
                    last_sweep = Instant::now();
                    let n = self.sweep_expired();
                    if n > 0 {
                        tracing::debug!(removed = n, "expiry sweep");
                    }
                }
                Some((job, backoff)) => {
                    if let Err(e) = self.run_job(&job) {
                        if matches!(job, Job::Flush(..)) && !self.poison.is_set() {
                            let next = (backoff * 2).min(MAX_FLUSH_BACKOFF);
                            self.jobs
                                .lock()
                                .retry
                                .push((Instant::now() + backoff, job, next));
                        } else {
                            tracing::debug!(error = %display_chain(&e), "background job failed");
                        }
                    }
                }
            }
        }
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

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the data dir and the memory tier dir,
    /// takes an exclusive flock on each (a second opener gets
    /// [`OpenError::Locked`]), runs recovery, and returns only when the
    /// index is complete.
    ///
    /// A background thread then writes dirty memory objects to disk,
    /// promotes hot disk objects and removes expired ones; unless
    /// [`StoreConfig::sweep_orphans_on_open`] is false, another deletes
    /// orphaned object files. The store is fully usable meanwhile. Unless
    /// [`StoreConfig::scrub_rate_bytes`] is 0, a scrubber re-verifies every object in the
    /// background (see [`Store::verify_all`]).
    pub fn open(cfg: StoreConfig) -> Result<Store, OpenError> {
        let sweep = cfg.sweep_orphans_on_open;
        let inner = Arc::new(open_inner(cfg)?);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| OpenError::Io {
                    context: format!("spawning the {name} thread"),
                    source: e,
                })
        };
        let mut threads = Vec::new();
        let bg = inner.clone();
        threads.push(spawn("objmapper-bg", Box::new(move || bg.background()))?);
        let lurker = inner.clone();
        threads.push(spawn(
            "objmapper-lurker",
            Box::new(move || lurker.lurker()),
        )?);
        if inner.cfg.scrub_rate_bytes > 0 {
            let scrub = inner.clone();
            threads.push(spawn(
                "objmapper-scrub",
                Box::new(move || scrub.scrubber()),
            )?);
        }
        if sweep {
            let bg = inner.clone();
            threads.push(spawn(
                "objmapper-sweep",
                Box::new(move || {
                    for tier in [&bg.disk, &bg.mem] {
                        match tier.sweep_orphans(&bg.stop, &bg.moves) {
                            Ok(0) => {}
                            Ok(n) => {
                                bg.counters
                                    .orphans_swept
                                    .fetch_add(n as u64, Ordering::Relaxed);
                                tracing::info!(
                                    removed = n,
                                    tier = tier.name(),
                                    "orphan sweep finished"
                                )
                            }
                            Err(e) => {
                                tracing::warn!(error = %display_chain(&e), "orphan sweep failed")
                            }
                        }
                    }
                }),
            )?);
        }
        Ok(Store { inner, threads })
    }

    /// Looks up `key` and opens a fresh read-only file description
    /// (`O_RDONLY|O_CLOEXEC`, its own file offset) on the current version.
    /// Expired objects are not served.
    pub fn get(&self, key: &[u8]) -> Result<Option<Object>, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        bump(&inner.counters.gets);
        let now = now_secs();
        for _ in 0..GET_ATTEMPTS {
            let Some((kind, id, meta)) = inner.find(key, Some(now)) else {
                break;
            };
            if meta.is_expired_at(now) {
                inner.enqueue(Job::Expire(meta.key.clone(), meta.version));
                break;
            }
            match inner.tier(kind).open_checked(key, meta.version, meta.size) {
                Ok(file) => {
                    self.record_hit(kind, id, &meta);
                    return Ok(Some(Object {
                        file,
                        meta: Arc::new(meta),
                    }));
                }
                // Raced a replace/delete/eviction that unlinked it, or the file is
                // damaged or lost (then the version is dropped): look again, which
                // finds the other tier's copy if there is one.
                Err(fail) => inner.open_failed(kind, key, meta.version, meta.size, fail)?,
            }
        }
        bump(&inner.counters.misses);
        Ok(None)
    }

    /// Like [`Store::get`], but hands out a cached read-only file of the
    /// version, opened once and shared: every caller gets the same file
    /// description, so clients share its file offset and status flags (they
    /// must read with `pread`, `sendfile` with an offset, or `mmap`). Saves an
    /// `open` and a `close` per read. At most [`StoreConfig::open_files_max`] files are
    /// cached per tier; a version's file leaves the cache when the version is
    /// replaced, deleted, evicted or moved, so the cache never holds a dead
    /// version's space (a caller still holding the `Arc` keeps it, as with
    /// any open file).
    pub fn get_shared(&self, key: &[u8]) -> Result<Option<SharedObject>, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        bump(&inner.counters.gets);
        let now = now_secs();
        for _ in 0..GET_ATTEMPTS {
            let Some((kind, id, meta)) = inner.find(key, Some(now)) else {
                break;
            };
            if meta.is_expired_at(now) {
                inner.enqueue(Job::Expire(meta.key.clone(), meta.version));
                break;
            }
            let cached = match inner.tier(kind).open_shared(
                key,
                meta.version,
                meta.size,
                inner.cfg.open_files_max,
            ) {
                Ok(c) => c,
                Err(fail) => {
                    inner.open_failed(kind, key, meta.version, meta.size, fail)?;
                    continue;
                }
            };
            self.record_hit(kind, id, &meta);
            return Ok(Some(SharedObject {
                file: cached.file,
                meta: Arc::new(meta),
                kind,
                verified: cached.verified,
            }));
        }
        bump(&inner.counters.misses);
        Ok(None)
    }

    /// A private read-only description (its own offset and flags) of the version a
    /// [`Store::get_shared`] found, for handing to another process. `Ok(None)` if the
    /// version's file has been unlinked since (replaced, deleted, evicted or moved): look
    /// the key up again.
    pub fn reopen(&self, obj: &SharedObject) -> Result<Option<File>, StoreError> {
        if self.inner.bans.covers_meta(&obj.meta) {
            return Ok(None);
        }
        let m = &obj.meta;
        match self
            .inner
            .tier(obj.kind)
            .open_checked(&m.key, m.version, m.size)
        {
            Ok(f) => Ok(Some(f)),
            Err(fail) => {
                self.inner
                    .open_failed(obj.kind, &m.key, m.version, m.size, fail)?;
                Ok(None)
            }
        }
    }

    /// Like [`Store::get_shared`], but the bytes of the file handed out have matched the
    /// record's xxh3-64 since the store opened it ([`Store::verify`]): a version that
    /// does not is dropped (logged, counted, like a delete) and the key looked up again,
    /// which finds the other tier's intact copy if there is one. For readers that copy
    /// the bytes anyway. The first read of a file reads it whole; later ones cost an
    /// atomic load.
    pub fn get_verified(&self, key: &[u8]) -> Result<Option<SharedObject>, StoreError> {
        for _ in 0..GET_ATTEMPTS {
            let Some(obj) = self.get_shared(key)? else {
                return Ok(None);
            };
            if self.verify(&obj)? {
                return Ok(Some(obj));
            }
        }
        Ok(None)
    }

    /// Checks a shared file's bytes against the record's xxh3-64, once per file the store
    /// opens (later calls cost an atomic load). `Ok(false)`: they do not match (or the
    /// file is shorter than recorded); the version has been dropped from its tier,
    /// logged and counted (docs/STORAGE.md, "Faults"): look the key up again.
    pub fn verify(&self, obj: &SharedObject) -> Result<bool, StoreError> {
        if obj.verified() {
            return Ok(true);
        }
        let m = &obj.meta;
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        let mut buf = vec![0u8; (m.size.min(256 * 1024) as usize).max(1)];
        let mut off = 0u64;
        while off < m.size {
            let want = buf.len().min((m.size - off) as usize);
            match std::os::unix::fs::FileExt::read_at(&*obj.file, &mut buf[..want], off) {
                Ok(0) => {
                    self.inner.drop_damaged(
                        obj.kind,
                        &m.key,
                        m.version,
                        Damage::Size,
                        &format!("the file ended at {off} bytes, the record says {}", m.size),
                    );
                    return Ok(false);
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_ctx("reading an object to verify it")(e)),
            }
        }
        Ok(self.check_streamed(obj, hasher.digest()))
    }

    /// For a reader that hashed a shared file's bytes itself while sending them (all of
    /// them, offset 0 to size): `sum` is their xxh3-64. True if it matches the record (the
    /// file is then marked verified); false if not, and the version has been dropped as in
    /// [`Store::verify`]: the reader must not complete its reply.
    pub fn check_streamed(&self, obj: &SharedObject, sum: u64) -> bool {
        let m = &obj.meta;
        if sum == m.checksum {
            obj.verified.store(true, Ordering::Release);
            return true;
        }
        self.inner.drop_damaged(
            obj.kind,
            &m.key,
            m.version,
            Damage::Checksum,
            &format!("xxh3 {sum:016x}, the record says {:016x}", m.checksum),
        );
        false
    }

    fn record_hit(&self, kind: Kind, id: u32, meta: &ObjectMeta) {
        let inner = &*self.inner;
        match kind {
            Kind::Memory => {
                bump(&inner.counters.hits_mem);
                let disk_id = inner.disk.index.read().id(&meta.key);
                let mut p = inner.policy.lock();
                p.mem.touch(id as u64);
                if let Some(d) = disk_id {
                    p.disk.touch(d as u64);
                }
            }
            Kind::Disk => {
                bump(&inner.counters.hits_disk);
                let promote = {
                    let mut p = inner.policy.lock();
                    p.disk.touch(id as u64);
                    inner.mem_enabled()
                        && meta.size <= inner.live.direct_to_disk_threshold()
                        && (p.disk.frequency(id as u64).unwrap_or(0)
                            >= inner.live.promote_after_hits()
                            || p.mem.was_recently_evicted(fingerprint(&meta.key)))
                };
                if promote {
                    inner.enqueue(Job::Promote(meta.key.clone(), meta.version));
                }
            }
        }
    }

    /// Metadata of the current version of `key`, if any (and not expired).
    pub fn head(&self, key: &[u8]) -> Option<Arc<ObjectMeta>> {
        let (_, _, meta) = self.inner.find(key, None)?;
        if meta.is_expired_at(now_secs()) {
            self.inner
                .enqueue(Job::Expire(meta.key.clone(), meta.version));
            return None;
        }
        Some(Arc::new(meta))
    }

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
    /// Nothing is visible until [`BufferedPut::commit`].
    pub fn begin_put_buffered(
        &self,
        key: &[u8],
        capacity: usize,
    ) -> Result<BufferedPut, StoreError> {
        validate_key(key)?;
        self.inner.check_writable()?;
        Ok(BufferedPut::new(self.inner.clone(), key, capacity))
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
        validate_key(key)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        let banned;
        let removed = {
            let _c = inner.catalog.lock();
            inner.check_writable()?;
            condition
                .check(inner.current_version(key))
                .map_err(StoreError::PreconditionFailed)?;
            // A banned object is absent: removing it is not a delete to report.
            banned = !inner.bans.is_empty()
                && [&inner.mem, &inner.disk]
                    .iter()
                    .find_map(|t| t.index.read().get(key).map(|e| inner.banned_entry(e)))
                    .unwrap_or(false);
            let mut removed = Vec::new();
            for kind in [Kind::Memory, Kind::Disk] {
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
        for kind in [Kind::Memory, Kind::Disk] {
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
        crate::recovery::rewrite_unlinked_journals(&self.inner)?;
        self.inner
            .disk
            .checkpoint(&self.inner.cfg, &self.inner.poison, false)
    }

    /// Compacts both journals now, regardless of the garbage ratio.
    pub fn compact(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _c = inner.catalog.lock();
        for tier in [&inner.disk, &inner.mem] {
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
        for tier in [&inner.disk, &inner.mem] {
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

    /// Live objects (each key once).
    pub fn len(&self) -> usize {
        let inner = &*self.inner;
        let mem = inner.mem.index.read();
        let disk = inner.disk.index.read();
        disk.len() + mem.iter().filter(|e| disk.get(e.key()).is_none()).count()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total size of live objects in bytes (each key once).
    pub fn bytes(&self) -> u64 {
        let inner = &*self.inner;
        let mem = inner.mem.index.read();
        let disk = inner.disk.index.read();
        let mut b: u64 = disk.iter().map(Entry::size).sum();
        for e in mem.iter() {
            match disk.get(e.key()) {
                Some(d) => b = b - d.size() + e.size(),
                None => b += e.size(),
            }
        }
        b
    }

    /// Whether a failed sync poisoned the store (writes refused, reads work).
    pub fn is_poisoned(&self) -> bool {
        self.inner.poison.is_set()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.disk.dirs.path
    }

    /// The memory tier directory.
    pub fn mem_dir(&self) -> &Path {
        &self.inner.mem.dirs.path
    }

    /// Path of the disk-tier file holding `version` of `key` (for
    /// diagnostics; the file exists only while that version is on disk or
    /// held by readers).
    pub fn object_path(&self, key: &[u8], version: u64) -> PathBuf {
        self.inner
            .disk
            .dirs
            .path
            .join(layout::OBJECTS)
            .join(object_rel_path(key_hash(key), version))
    }

    /// Like [`Store::object_path`], in the memory tier.
    pub fn mem_object_path(&self, key: &[u8], version: u64) -> PathBuf {
        self.inner
            .mem
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
        let p = inner.policy.lock();
        let r = Ordering::Relaxed;
        let l = &inner.live;
        Tuning {
            mem_capacity_bytes: l.mem_capacity_bytes.load(r),
            mem_max_objects: l.mem_max_objects.load(r),
            disk_capacity_bytes: l.disk_capacity_bytes.load(r),
            disk_max_objects: l.disk_max_objects.load(r),
            direct_to_disk_threshold: l.direct_to_disk_threshold.load(r),
            promote_after_hits: l.promote_after_hits.load(r),
            mem_eviction: p.mem.config(),
            disk_eviction: p.disk.config(),
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
        p.mem.set_config(t.mem_eviction);
        p.mem.set_capacity(t.mem_capacity_bytes, t.mem_max_objects);
        p.disk.set_config(t.disk_eviction);
        p.disk
            .set_capacity(t.disk_capacity_bytes, t.disk_max_objects);
        Ok(())
    }

    /// Whether the disk tier's last write failed because its filesystem was full and no
    /// commit to it has succeeded since (cheap: one atomic load).
    pub fn disk_full(&self) -> bool {
        self.inner.disk.full.load(Ordering::Relaxed)
    }

    /// Snapshot of counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let (journal_bytes, journal_live_bytes) = {
            let j = inner.disk.journal.lock();
            (j.len, j.live_bytes)
        };
        let dirty = inner
            .mem
            .index
            .read()
            .iter_ids()
            .filter(|(_, e, f)| f & SLOT_DIRTY != 0 && !e.ephemeral())
            .count() as u64;
        let (mem_cap, disk_cap) = {
            let p = inner.policy.lock();
            (p.mem.capacity(), p.disk.capacity())
        };
        let tier_stats = |t: &Tier, cap: (u64, u64), hits: u64, ev: u64| TierStats {
            objects: t.len() as u64,
            bytes: t.bytes.load(Ordering::Relaxed),
            capacity_bytes: cap.0,
            capacity_objects: cap.1,
            hits,
            evictions: ev,
            full_errors: t.full_errors.load(Ordering::Relaxed),
            full: t.full.load(Ordering::Relaxed),
            unlabelled: t.unlabelled.load(Ordering::Relaxed),
            journal_damage: t.journal_damage,
            readmitted: t.readmitted,
        };
        let hits = load(&c.hits_mem) + load(&c.hits_disk);
        StoreStats {
            objects: self.len() as u64,
            bytes: self.bytes(),
            memory: tier_stats(
                &inner.mem,
                mem_cap,
                load(&c.hits_mem),
                load(&c.evictions_mem),
            ),
            disk: tier_stats(
                &inner.disk,
                disk_cap,
                load(&c.hits_disk),
                load(&c.evictions_disk),
            ),
            gets: load(&c.gets),
            hits,
            misses: load(&c.misses),
            puts: load(&c.puts),
            deletes: load(&c.deletes),
            promotions: load(&c.promotions),
            flushes: load(&c.flushes),
            flush_errors: load(&c.flush_errors),
            dirty,
            expirations: load(&c.expirations),
            no_space: load(&c.no_space),
            journal_bytes,
            journal_live_bytes,
            compactions: load(&inner.disk.compactions),
            orphans_swept: load(&c.orphans_swept),
            recovery_dropped: load(&c.recovery_dropped),
            poisoned: self.is_poisoned(),
            bans_active: inner.bans.len() as u64,
            bans_added: load(&inner.bans.added),
            ban_removals: load(&inner.bans.removed),
            corrupt_size: load(&c.corrupt_size),
            corrupt_checksum: load(&c.corrupt_checksum),
            corrupt_missing: load(&c.corrupt_missing),
            mem_write_fallbacks: load(&c.mem_write_fallbacks),
            scrub_objects: load(&c.scrub_objects),
            scrub_bytes: load(&c.scrub_bytes),
            scrub_damage: load(&c.scrub_damage),
            scrub_passes: load(&c.scrub_passes),
            scrub_last_pass_secs: load(&c.scrub_last_pass),
        }
    }

    /// Clean shutdown: write dirty memory objects to disk, checkpoint both
    /// tiers, write their `CLEAN` markers, release the locks. Dropping a
    /// `Store` without `close` is treated as an unclean shutdown by the next
    /// open (objects committed after the last checkpoint are re-verified,
    /// and dirty memory objects are written to disk after the restart if the
    /// memory tier survived).
    ///
    /// Outstanding [`Staging`]s can no longer commit afterwards.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_threads();
        let inner = &*self.inner;
        if !inner.poison.is_set() {
            inner.flush_all();
        }
        {
            let _c = inner.catalog.lock();
            inner.closed.store(true, Ordering::Release);
        }
        let mut r = Ok(());
        for tier in [&inner.mem, &inner.disk] {
            if tier.kind == Kind::Memory && tier.dir_gone() {
                // Nothing to checkpoint: the next open starts an empty memory tier.
                tracing::warn!(dir = %tier.dirs.path.display(), "the memory tier's directory was removed while running; the next open starts an empty one");
                tier.lock_fd.lock().take();
                continue;
            }
            // A full filesystem skips the checkpoint and the CLEAN marker (the journal
            // holds everything acknowledged; the next open re-verifies what came after
            // the last checkpoint), and the close still succeeds.
            let t = tier
                .checkpoint(&inner.cfg, &inner.poison, false)
                .map(|()| true)
                .or_else(|e| skipped_for_space(tier, "the checkpoint at shutdown", Err(e)))
                .and_then(|done| {
                    if done {
                        let r = tier.mark_clean(&inner.poison);
                        skipped_for_space(tier, "the CLEAN marker", r).map(drop)
                    } else {
                        Ok(())
                    }
                });
            if r.is_ok() {
                r = t;
            }
            tier.lock_fd.lock().take();
        }
        r
    }

    fn stop_threads(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.jobs_cv.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }

    #[cfg(test)]
    pub(crate) fn poison_for_test(&self) {
        self.inner
            .poison
            .set("test-induced sync", io::Error::other("injected"));
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The result of an optional write (a checkpoint, the CLEAN marker, a compaction):
/// `Ok(true)` if it was done, `Ok(false)` with a warning if the tier's filesystem was
/// full (it is retried later: checkpoints and compactions run periodically), the error
/// otherwise.
fn skipped_for_space(
    tier: &Tier,
    what: &str,
    r: Result<(), StoreError>,
) -> Result<bool, StoreError> {
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Io { context, source }) if crate::tier::is_full(&source) => {
            tier.full_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                tier = tier.name(),
                dir = %tier.dirs.path.display(),
                "skipped {what}: the filesystem is full ({context}: {source}); reads and \
                 deletes work, and it is retried once there is space"
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Recovery of both tiers and their reconciliation.
fn open_inner(cfg: StoreConfig) -> Result<Inner, OpenError> {
    let poison = Poison::default();
    let disk = crate::recovery::open_tier(Kind::Disk, &cfg.data_dir, &poison)?;
    let (store_id, disk_had_id) = crate::tier::disk_identity(&disk.tier, &poison)?;
    let disk_new = disk.max_version == 0 && disk.max_reserve == 0;
    let mem_dir = cfg.resolved_mem_dir();
    if cfg.mem_dir.is_none() && !mem_dir.starts_with("/dev/shm") {
        tracing::warn!(dir = %mem_dir.display(), "no /dev/shm: the memory tier is on the data directory's file system, not in RAM");
    }
    // Another store's memory tier is never imported (docs/STORAGE.md, "Tier identity").
    crate::tier::admit_mem_dir(&mem_dir, store_id, disk_had_id, disk_new)?;
    let mem = crate::recovery::open_tier(Kind::Memory, &mem_dir, &poison)?;
    crate::tier::stamp_mem_identity(&mem.tier, store_id, &poison)?;
    let next_version = disk
        .max_version
        .max(disk.max_reserve)
        .max(mem.max_version)
        .max(mem.max_reserve)
        + 1;
    let to_verify = disk.to_verify;
    let (mut disk_tier, mut mem_tier) = (disk.tier, mem.tier);
    disk_tier.first_version = next_version;
    mem_tier.first_version = next_version;
    let tuning = Tuning::from_config(&cfg);
    let policy = Policies {
        mem: S3Fifo::with_config(
            tuning.mem_capacity_bytes,
            tuning.mem_max_objects,
            tuning.mem_eviction,
        ),
        disk: S3Fifo::with_config(
            tuning.disk_capacity_bytes,
            tuning.disk_max_objects,
            tuning.disk_eviction,
        ),
    };
    let inner = Inner {
        cfg,
        live: Live::new(&tuning),
        disk: disk_tier,
        mem: mem_tier,
        catalog: Mutex::new(()),
        policy: Mutex::new(policy),
        next_version: AtomicU64::new(next_version),
        // Nothing may be handed out before a new RESERVE is durable.
        reserved_upto: AtomicU64::new(next_version - 1),
        poison,
        closed: AtomicBool::new(false),
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        jobs: Mutex::new(Jobs::default()),
        jobs_cv: Condvar::new(),
        moves: Mutex::new(()),
        bans: Bans::default(),
        clock: AtomicU64::new(0),
    };
    // Bans first: nothing is served before they are in force.
    inner.load_bans()?;

    // Disk objects written after the last checkpoint of an unclean run.
    for (key, version) in crate::recovery::failed_verification(&inner.disk, &to_verify) {
        if let Some((_, _)) = inner.disk.remove(
            &inner.cfg,
            &inner.poison,
            &key,
            Some(version),
            false,
            inner.reserve_upto(),
        )? {
            inner.disk.unlink_object(&key, version);
            bump(&inner.counters.recovery_dropped);
        }
    }

    // Reconcile: the memory tier may hold newer (dirty) versions, the same
    // versions (clean copies) or stale ones left behind by a crash.
    let mem_entries: Vec<(Box<[u8]>, u64, bool)> = inner
        .mem
        .index
        .read()
        .iter()
        .map(|e| (Box::from(e.key()), e.version(), e.ephemeral()))
        .collect();
    let mut dirty = Vec::new();
    for (key, version, ephemeral) in mem_entries {
        let disk_version = inner.disk.index.read().get(&key).map(Entry::version);
        match disk_version {
            Some(d) if d > version => {
                // Stale memory copy.
                inner.mem.remove(
                    &inner.cfg,
                    &inner.poison,
                    &key,
                    Some(version),
                    false,
                    inner.reserve_upto(),
                )?;
                inner.mem.unlink_object(&key, version);
            }
            Some(d) if d == version => {}
            _ => {
                if !ephemeral {
                    let mut idx = inner.mem.index.write();
                    if let Some(id) = idx.id(&key) {
                        idx.set_flags(id, SLOT_DIRTY);
                    }
                    dirty.push((key, version));
                }
            }
        }
    }
    // The clock resumes above every recovered object's stamp (and every ban's).
    for tier in [&inner.disk, &inner.mem] {
        let max = tier.index.read().iter().map(Entry::mtime_ns).max();
        inner.clock.fetch_max(max.unwrap_or(0), Ordering::AcqRel);
    }
    {
        let mut p = inner.policy.lock();
        for kind in [Kind::Disk, Kind::Memory] {
            let idx = inner.tier(kind).index.read();
            let mut ids: Vec<(u32, &Entry)> = idx.iter_ids().map(|(id, e, _)| (id, e)).collect();
            ids.sort_unstable_by_key(|(_, e)| e.version());
            for (id, e) in ids {
                p.admit(kind, id, e, false);
            }
        }
    }
    if !dirty.is_empty() {
        tracing::info!(
            objects = dirty.len(),
            "memory tier holds objects not yet on disk; writing them behind"
        );
    }
    for (key, version) in dirty {
        inner.enqueue(Job::Flush(key, version));
    }

    // Compact if a journal is mostly garbage, then make everything recovered
    // durable and record checkpoints matching these journals.
    // Both are optional on a full filesystem: the store opens for reads and deletes.
    for tier in [&inner.disk, &inner.mem] {
        let mut j = tier.journal.lock();
        if j.needs_compaction(inner.cfg.compact_min_journal_bytes) {
            let r = tier.compact_locked(&inner.poison, &mut j, inner.reserve_upto());
            skipped_for_space(tier, "compacting the journal at open", r)?;
        }
    }
    for tier in [&inner.disk, &inner.mem] {
        let r = tier.checkpoint(&inner.cfg, &inner.poison, true);
        if !skipped_for_space(tier, "the checkpoint at open", r)? {
            // The old checkpoint may name an offset of the journal before recovery
            // changed it: without it (offset 0) an unclean next open re-verifies
            // every object, which is slow but never trusts an unsynced record.
            layout::unlink_if_exists(&tier.dirs.data, layout::CHECKPOINT)
                .map_err(io_ctx("removing a stale checkpoint"))?;
            inner
                .poison
                .sync("fsync data directory", rustix::fs::fsync(&tier.dirs.data))?;
        }
        // After the checkpoint, which matters more on a nearly full filesystem.
        tier.ensure_reserve();
    }
    Ok(inner)
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
            Err(crate::CommitError::Poisoned)
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
