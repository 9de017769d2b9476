//! One tier: a directory with a journal, object files and an index.
//!
//! The disk tier lives in the data directory; the memory tier is the same
//! structure rooted on tmpfs. Both use the same file layout (docs/STORAGE.md),
//! so one set of code writes, replays and compacts them. Which tier holds
//! which version of a key, and moving objects between tiers, is the store's
//! business (`store/`: `commit.rs` places, `moves.rs` moves); a tier only keeps
//! its own files and index consistent.

use rustc_hash::FxHashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::catalog::Journal;
use crate::config::{FaultPoint, StoreConfig};
use crate::copy::Source;
use crate::error::{display_chain, io_ctx, StoreError};
use crate::index::{Entry, Index};
use crate::journal::RecordRef;
use crate::layout::{self, key_hash, object_rel_path, Dirs};
use crate::sync::Poison;

mod bodies;
mod identity;
mod install;
pub use bodies::SMALL_BODY_MAX;
pub(crate) use install::Install;

pub(crate) use crate::kind::Kind;
pub(crate) use identity::{admit_mem_dir, disk_identity, stamp_mem_identity};

#[derive(Debug)]
pub(crate) struct Tier {
    pub(crate) kind: Kind,
    pub(crate) dirs: Dirs,
    /// The flock'd `LOCK` file; dropping it releases the lock.
    pub(crate) lock_fd: Mutex<Option<OwnedFd>>,
    pub(crate) index: RwLock<Index>,
    /// Orders journal appends and index updates (taken before `index`).
    pub(crate) journal: Mutex<Journal>,
    /// (journal generation, offset) of the last checkpoint written.
    pub(crate) ckpt: Mutex<(u64, u64)>,
    pub(crate) bytes: AtomicU64,
    /// Object files with smaller versions that are not in the index are orphans.
    pub(crate) first_version: u64,
    /// Journal compactions since open.
    pub(crate) compactions: AtomicU64,
    /// [`Tier::open_shared`]'s open files by version (versions are never reused, so an
    /// entry can never stand for another object). Bounded by `StoreConfig::open_files_max`; an entry
    /// leaves when its file is unlinked, so it never holds a dead version's space.
    pub(crate) open_files: Mutex<FxHashMap<u64, Cached>>,
    /// Small versions' bytes read through `open_files`, by version ([`bodies`]); an
    /// entry leaves with its file, like `open_files`'s. Taken after `open_files`.
    pub(crate) bodies: Mutex<bodies::Bodies>,
    /// Reads answered from this tier.
    pub(crate) hits: AtomicU64,
    /// Objects evicted from this tier to make room.
    pub(crate) evictions: AtomicU64,
    /// Writes refused because the tier's filesystem was full (ENOSPC/EDQUOT).
    pub(crate) full_errors: AtomicU64,
    /// The last write failed for space and no commit to this tier has succeeded since.
    pub(crate) full: AtomicBool,
    /// The filesystem its directory is on (read at open).
    pub(crate) filesystem: layout::Filesystem,
    /// `SPACE_RESERVE` is smaller than [`SPACE_RESERVE_BYTES`] (released for a delete,
    /// or there was no room to make it).
    pub(crate) reserve_short: AtomicBool,
    /// Object files the filesystem would not label with their record (`label.rs`).
    pub(crate) unlabelled: AtomicU64,
    /// Damaged journal regions recovery found at open (each cost at most its records).
    pub(crate) journal_damage: u64,
    /// Objects recovery re-admitted from their files' labels at open.
    pub(crate) readmitted: u64,
}

/// The process's `/proc/self/fd`, opened once: reopening `/proc/self/fd/N` gives a new
/// description of descriptor N's file ([`Tier::open_private`]). `None` if there is no
/// procfs there (a chroot or container without `/proc`).
fn proc_fds() -> Option<BorrowedFd<'static>> {
    /// procfs's `f_type` (`PROC_SUPER_MAGIC`, linux/magic.h).
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    static FDS: OnceLock<Option<OwnedFd>> = OnceLock::new();
    FDS.get_or_init(|| {
        let fd = rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        // Something else mounted there would hand out other files.
        let procfs = rustix::fs::fstatfs(&fd).ok()?.f_type as i64 == PROC_SUPER_MAGIC;
        procfs.then_some(fd)
    })
    .as_ref()
    .map(|fd| fd.as_fd())
}

/// Bytes `SPACE_RESERVE` holds for deletes' journal records on a full filesystem.
pub(crate) const SPACE_RESERVE_BYTES: u64 = 1 << 20;

/// One entry of [`Tier::open_files`]: the shared file and whether its bytes were checked
/// against the record's checksum since it was opened ([`crate::Store::verify`]).
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) file: Arc<File>,
    pub(crate) verified: Arc<AtomicBool>,
}

/// Why an object file could not be opened for reading.
#[derive(Debug)]
pub(crate) enum OpenFail {
    /// No file under the version's name (unlinked by a concurrent change, or lost).
    Missing,
    /// The file's size is not the recorded size (`found` bytes): corruption.
    Size(u64),
    /// Any other error.
    Io(Errno),
}

impl Tier {
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::Memory => "memory",
            Kind::Disk => "disk",
        }
    }

    /// Turns an I/O error that says the filesystem is full (`ENOSPC`, `EDQUOT`) into
    /// [`StoreError::NoSpace`] naming the tier, its directory, the bytes free and what to
    /// do; counts it and marks the tier full. Other errors pass through.
    pub(crate) fn full(&self, e: StoreError) -> StoreError {
        if matches!(&e, StoreError::Io { source, .. } if is_full(source)) {
            self.full.store(true, Ordering::Relaxed);
        }
        self.out_of_space(e)
    }

    /// [`Tier::full`] without marking the tier full: for a write the store can do
    /// without (a fill), whose failing says nothing of whether a PUT would fit.
    pub(crate) fn out_of_space(&self, e: StoreError) -> StoreError {
        let StoreError::Io { context, source } = &e else {
            return e;
        };
        if !is_full(source) {
            return e;
        }
        self.full_errors.fetch_add(1, Ordering::Relaxed);
        let dir = self.dirs.path.display();
        let free = match rustix::fs::fstatvfs(&self.dirs.data) {
            Ok(v) => format!("{} bytes free", v.f_bavail.saturating_mul(v.f_frsize)),
            Err(_) => "bytes free unknown".into(),
        };
        let knob = match self.kind {
            Kind::Memory => "mem_capacity_bytes",
            Kind::Disk => "disk_capacity_bytes",
        };
        StoreError::NoSpace(format!(
            "the {} tier's filesystem is full ({context} in {dir}: {source}; {free}): free \
             space on the filesystem holding {dir}, or lower {knob}",
            self.name()
        ))
    }

    /// A commit to this tier succeeded: it is no longer full.
    pub(crate) fn not_full(&self) {
        if self.full.load(Ordering::Relaxed) {
            self.full.store(false, Ordering::Relaxed);
        }
    }

    /// Consults the fault injector (disk tier only).
    pub(crate) fn fault(&self, cfg: &StoreConfig, point: FaultPoint) -> io::Result<()> {
        match self.kind {
            Kind::Disk => cfg.fault(point),
            Kind::Memory => Ok(()),
        }
    }

    /// A sync that a fault injector may fail; failures poison the store.
    pub(crate) fn sync(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        what: &str,
        op: impl FnOnce() -> io::Result<()>,
    ) -> Result<(), StoreError> {
        poison.sync(what, self.fault(cfg, FaultPoint::Sync).and_then(|()| op()))
    }

    pub(crate) fn len(&self) -> usize {
        self.index.read().len()
    }

    /// Opens a fresh read-only description of an object file.
    pub(crate) fn open_object(&self, key: &[u8], version: u64) -> Result<File, rustix::io::Errno> {
        rustix::fs::openat(
            &self.dirs.objects,
            object_rel_path(key_hash(key), version).as_cstr(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
    }

    /// [`Tier::open_object`], then `fstat`: a file whose size is not the recorded `size`
    /// is never handed out (a short file under a longer SIZE, or a longer one).
    pub(crate) fn open_checked(
        &self,
        key: &[u8],
        version: u64,
        size: u64,
    ) -> Result<File, OpenFail> {
        let f = match self.open_object(key, version) {
            Ok(f) => f,
            Err(Errno::NOENT) => return Err(OpenFail::Missing),
            Err(e) => return Err(OpenFail::Io(e)),
        };
        let found = rustix::fs::fstat(&f).map_err(OpenFail::Io)?.st_size as u64;
        if found != size {
            return Err(OpenFail::Size(found));
        }
        Ok(f)
    }

    /// A private read-only description (`O_RDONLY|O_CLOEXEC`, its own file offset and
    /// status flags) of a version, for handing to another process. Reopened through
    /// `/proc/self/fd` from the tier's cached shared file ([`Tier::open_shared`], whose
    /// size was checked when it was opened), so a hot object costs one `openat` without a
    /// path walk or an `fstat`; by path ([`Tier::open_checked`]) where there is no procfs.
    /// The reopened description is of the same inode as the cached one, so it can never
    /// be of another version, even if something outside replaced the file's name.
    pub(crate) fn open_private(
        &self,
        key: &[u8],
        version: u64,
        size: u64,
        max: usize,
    ) -> Result<File, OpenFail> {
        let Some(fds) = proc_fds() else {
            return self.open_checked(key, version, size);
        };
        let c = self.open_shared(key, version, size, max)?;
        match rustix::fs::openat(
            fds,
            rustix::path::DecInt::from_fd(&*c.file).as_c_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(File::from(fd)),
            // Out of descriptors, or procfs refused: the path still works, or says why.
            Err(_) => self.open_checked(key, version, size),
        }
    }

    /// Whether this tier's directory has been removed behind the store's back (a lost
    /// memory tier): its open directory has no links left.
    pub(crate) fn dir_gone(&self) -> bool {
        rustix::fs::fstat(&self.dirs.data).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Path of a version's file (for log lines).
    pub(crate) fn object_path(&self, key: &[u8], version: u64) -> std::path::PathBuf {
        self.dirs
            .path
            .join(layout::OBJECTS)
            .join(object_rel_path(key_hash(key), version))
    }

    /// A cached read-only file of a version, opened on first use and shared by every
    /// caller (one file description: callers read with pread or sendfile at an offset).
    /// Saves the `open` and `close` of [`Tier::open_object`] on hot objects. Its size is
    /// checked against `size` when it is opened ([`Tier::open_checked`]).
    ///
    /// Race-free against [`Tier::unlink_object`], which unlinks and then drops the entry:
    /// the open happens under the cache lock, so it either precedes the unlink (and the
    /// entry is dropped after it) or fails with ENOENT.
    pub(crate) fn open_shared(
        &self,
        key: &[u8],
        version: u64,
        size: u64,
        max: usize,
    ) -> Result<Cached, OpenFail> {
        let mut files = self.open_files.lock();
        if let Some(c) = files.get(&version) {
            return Ok(c.clone());
        }
        let c = Cached {
            file: Arc::new(self.open_checked(key, version, size)?),
            verified: Arc::new(AtomicBool::new(false)),
        };
        if files.len() >= max.max(1) {
            if let Some(&old) = files.keys().next() {
                files.remove(&old);
            }
        }
        files.insert(version, c.clone());
        Ok(c)
    }

    /// Appends the PUT record and inserts or replaces the index entry.
    /// Returns the slot id and the superseded entry (whose file the caller
    /// unlinks). Callers hold the store's catalog lock.
    pub(crate) fn publish(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        entry: Entry,
        flags: u8,
        durable: bool,
        reserve_upto: u64,
    ) -> Result<(u32, Option<Entry>), StoreError> {
        let attempt = || -> Result<(u32, Option<Entry>), StoreError> {
            let mut j = self.journal.lock();
            self.append_record(cfg, poison, &mut j, durable, |j| {
                j.append_put(&entry, poison)
            })?;
            j.live_bytes += entry.record_len();
            let size = entry.size();
            let (id, old) = self.index.write().replace(entry, flags);
            self.bytes.fetch_add(size, Ordering::Relaxed);
            if let Some(o) = &old {
                j.live_bytes = j.live_bytes.saturating_sub(o.record_len());
                self.bytes.fetch_sub(o.size(), Ordering::Relaxed);
            }
            self.maybe_compact(cfg, poison, &mut j, reserve_upto);
            Ok((id, old))
        };
        match attempt() {
            Ok(v) => {
                self.not_full();
                self.refill_reserve();
                Ok(v)
            }
            Err(e) => Err(self.full(e)),
        }
    }

    /// Appends one journal record (`append` writes it), after the poison check and
    /// the journal-append fault point, and syncs the journal when `durable`.
    fn append_record(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        j: &mut Journal,
        durable: bool,
        append: impl FnOnce(&mut Journal) -> Result<u64, StoreError>,
    ) -> Result<(), StoreError> {
        poison.check()?;
        self.fault(cfg, FaultPoint::JournalAppend)
            .map_err(io_ctx("appending to the journal"))?;
        append(j)?;
        if durable {
            // A durable record must not go into a journal unlinked by hand: it would be
            // gone at the next open. Appends only check once a second; this one checks.
            j.check_linked();
            self.sync(cfg, poison, "fdatasync journal", || j.sync_io())?;
        }
        Ok(())
    }

    /// Removes `key` (only if its version is `only_version`, when given):
    /// appends a DEL record and updates the index. Returns the slot id and
    /// removed entry, whose file the caller unlinks.
    pub(crate) fn remove(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        key: &[u8],
        only_version: Option<u64>,
        durable: bool,
        reserve_upto: u64,
    ) -> Result<Option<(u32, Entry)>, StoreError> {
        let attempt = || -> Result<Option<(u32, Entry)>, StoreError> {
            let mut j = self.journal.lock();
            let Some(version) = self.index.read().get(key).map(Entry::version) else {
                return Ok(None);
            };
            if only_version.is_some_and(|v| v != version) {
                return Ok(None);
            }
            self.append_record(cfg, poison, &mut j, durable, |j| {
                j.append(RecordRef::Del { key, version }, poison)
            })?;
            let removed = self.index.write().take(key);
            if let Some((_, old)) = &removed {
                j.live_bytes = j.live_bytes.saturating_sub(old.record_len());
                self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
            }
            self.maybe_compact(cfg, poison, &mut j, reserve_upto);
            Ok(removed)
        };
        match attempt() {
            // The filesystem is full: give the DEL record the reserved space, once.
            Err(StoreError::Io { ref source, .. }) if is_full(source) && self.release_reserve() => {
                tracing::warn!(tier = self.name(), dir = %self.dirs.path.display(), "the filesystem is full: released SPACE_RESERVE for a delete");
                attempt().map_err(|e| self.full(e))
            }
            r => r.map_err(|e| self.full(e)),
        }
    }

    /// Grows `SPACE_RESERVE` toward [`SPACE_RESERVE_BYTES`] with as much as `fallocate`
    /// can get (in halving chunks). Failures are only noted: the reserve is best effort.
    pub(crate) fn ensure_reserve(&self) {
        let r = (|| -> io::Result<bool> {
            let fd = rustix::fs::openat(
                &self.dirs.data,
                layout::SPACE_RESERVE,
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut off = rustix::fs::fstat(&fd)?.st_size as u64;
            let mut chunk = SPACE_RESERVE_BYTES.saturating_sub(off);
            while off < SPACE_RESERVE_BYTES && chunk >= 4096 {
                let len = chunk.min(SPACE_RESERVE_BYTES - off);
                match rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), off, len) {
                    Ok(()) => off += len,
                    Err(Errno::NOSPC | Errno::DQUOT) => chunk /= 2,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(off >= SPACE_RESERVE_BYTES)
        })();
        match r {
            Ok(full_size) => self.reserve_short.store(!full_size, Ordering::Relaxed),
            Err(e) => {
                // Unsupported (EOPNOTSUPP) or another error: no reserve, no retries.
                self.reserve_short.store(false, Ordering::Relaxed);
                tracing::debug!(tier = self.name(), error = %e, "cannot make SPACE_RESERVE");
            }
        }
    }

    /// Empties `SPACE_RESERVE`; whether it held anything.
    fn release_reserve(&self) -> bool {
        let Ok(fd) = rustix::fs::openat(
            &self.dirs.data,
            layout::SPACE_RESERVE,
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return false;
        };
        let had = rustix::fs::fstat(&fd).is_ok_and(|st| st.st_blocks > 0);
        self.reserve_short.store(true, Ordering::Relaxed);
        had && rustix::fs::ftruncate(&fd, 0).is_ok()
    }

    /// After a delete or a commit: refills `SPACE_RESERVE` if a delete took it.
    pub(crate) fn refill_reserve(&self) {
        if self.reserve_short.load(Ordering::Relaxed) {
            self.ensure_reserve();
        }
    }

    /// Clears or sets slot flags of `key` if it still has `version`.
    pub(crate) fn set_flags_if(&self, key: &[u8], version: u64, flags: u8) -> bool {
        let mut idx = self.index.write();
        match idx.id(key) {
            Some(id) if idx.by_id(id).map(Entry::version) == Some(version) => {
                idx.set_flags(id, flags);
                true
            }
            _ => false,
        }
    }

    /// Unlinks an object version's file. Open fds keep their bytes.
    pub(crate) fn unlink_object(&self, key: &[u8], version: u64) {
        self.unlink_hashed(key_hash(key), version);
    }

    /// [`Tier::unlink_object`] for a key whose hash is known.
    pub(crate) fn unlink_hashed(&self, hash: u128, version: u64) {
        let rel = object_rel_path(hash, version);
        if let Err(e) = layout::unlink_if_exists(&self.dirs.objects, rel.as_cstr()) {
            tracing::warn!(error = %e, file = %rel, tier = self.name(), "could not unlink object file; the orphan sweep at next open will remove it");
        }
        self.forget_open(version);
    }

    /// Drops `version`'s cached open file and body (its file was unlinked or moved, or
    /// another tier's copy serves its reads now).
    pub(crate) fn forget_open(&self, version: u64) {
        self.open_files.lock().remove(&version);
        self.bodies.lock().remove(version);
    }

    /// Keeps `body` as `version`'s in the body cache, within `budget` bytes, if the
    /// version's file is still cached open: [`Tier::forget_open`] drops the open file
    /// before the body, so a body is never kept for a version already forgotten.
    pub(crate) fn keep_body(&self, version: u64, body: Arc<[u8]>, budget: u64) {
        let files = self.open_files.lock();
        if files.contains_key(&version) {
            self.bodies.lock().insert(version, body, budget);
        }
    }

    /// Bodies in the body cache, and their bytes.
    pub(crate) fn body_cache_usage(&self) -> (usize, u64) {
        self.bodies.lock().usage()
    }

    /// Moves a damaged version's file to `lost+found/` (same name) for a person to look
    /// at, like recovery does with files it cannot account for; unlinks it if that
    /// fails. Open fds keep their bytes; the cached file is dropped.
    pub(crate) fn quarantine_object(&self, key: &[u8], version: u64) {
        let rel = object_rel_path(key_hash(key), version);
        let lf = crate::layout::LOST_FOUND;
        let name = rel
            .as_str()
            .split_once('/')
            .map_or(rel.as_str(), |(_, n)| n);
        let moved = layout::mkdir_if_missing(&self.dirs.data, lf).is_ok()
            && rustix::fs::renameat(
                &self.dirs.objects,
                rel.as_cstr(),
                &self.dirs.data,
                format!("{lf}/{name}").as_str(),
            )
            .is_ok();
        if moved {
            tracing::warn!(file = %format!("{lf}/{name}"), tier = self.name(), "damaged object file moved to lost+found/");
            self.forget_open(version);
        } else {
            self.unlink_object(key, version);
        }
    }

    fn maybe_compact(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        j: &mut Journal,
        reserve_upto: u64,
    ) {
        if j.needs_compaction(cfg.compact_min_journal_bytes) {
            if let Err(e) = self.compact_locked(poison, j, reserve_upto) {
                tracing::warn!(error = %display_chain(&e), tier = self.name(), "journal compaction failed");
            }
        }
    }

    /// Compacts the journal and records the new checkpoint. Caller holds the journal lock.
    pub(crate) fn compact_locked(
        &self,
        poison: &Poison,
        j: &mut Journal,
        reserve_upto: u64,
    ) -> Result<(), StoreError> {
        poison.check()?;
        let before = j.len;
        let new_len = {
            let idx = self.index.read();
            j.compact(&self.dirs.data, idx.iter(), reserve_upto, poison)?
        };
        // The old checkpoint offset is meaningless for the new file: record
        // the new one, or stop writing altogether.
        if let Err(e) = self.store_checkpoint(poison, j.generation, new_len, true) {
            // A full filesystem: no checkpoint at all (offset 0) is as safe as the new
            // one, only slower to recover from; removing the old one needs no space.
            if let StoreError::Io { source, .. } = &e {
                if is_full(source)
                    && layout::unlink_if_exists(&self.dirs.data, layout::CHECKPOINT).is_ok()
                    && poison
                        .sync("fsync data directory", rustix::fs::fsync(&self.dirs.data))
                        .is_ok()
                {
                    *self.ckpt.lock() = (j.generation, 0);
                    tracing::warn!(tier = self.name(), error = %display_chain(&e), "no room for the checkpoint after journal compaction: removed the old one (the next unclean open re-verifies every object)");
                    self.compactions.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
            if !poison.is_set() {
                poison.set(
                    "recording the checkpoint after journal compaction",
                    io::Error::other(display_chain(&e)),
                );
            }
            return Err(e);
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            before,
            after = new_len,
            tier = self.name(),
            "compacted journal"
        );
        Ok(())
    }

    /// Writes the checkpoint file unless a newer one was already written.
    pub(crate) fn store_checkpoint(
        &self,
        poison: &Poison,
        generation: u64,
        off: u64,
        force: bool,
    ) -> Result<(), StoreError> {
        let mut ck = self.ckpt.lock();
        if !force && (generation, off) <= *ck {
            return Ok(());
        }
        layout::write_file_atomic(
            &self.dirs.data,
            layout::CHECKPOINT_TMP,
            layout::CHECKPOINT,
            &layout::encode_checkpoint(off),
            poison,
        )?;
        *ck = (generation, off);
        Ok(())
    }

    /// syncfs, then record the journal length read before it as durable.
    pub(crate) fn checkpoint(
        &self,
        cfg: &StoreConfig,
        poison: &Poison,
        force: bool,
    ) -> Result<(), StoreError> {
        poison.check()?;
        let (generation, off) = {
            let j = self.journal.lock();
            (j.generation, j.len)
        };
        self.sync(cfg, poison, "syncfs data directory", || {
            Ok(rustix::fs::syncfs(&self.dirs.data)?)
        })?;
        self.store_checkpoint(poison, generation, off, force)
    }

    /// Writes the CLEAN marker (after a final checkpoint).
    pub(crate) fn mark_clean(&self, poison: &Poison) -> Result<(), StoreError> {
        let fd = rustix::fs::openat(
            &self.dirs.data,
            layout::CLEAN,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(io_ctx("creating CLEAN marker"))?;
        drop(fd);
        poison.sync("fsync data directory", rustix::fs::fsync(&self.dirs.data))
    }

    /// Deletes object files that no index entry refers to and whose version
    /// predates this run. Stops early when `stop` is set.
    /// `moves` is the store's lock that flushes and promotions hold while
    /// installing a copy: a file checked under it is either published or an
    /// orphan, never half-way.
    pub(crate) fn sweep_orphans(
        &self,
        stop: &AtomicBool,
        moves: &Mutex<()>,
    ) -> Result<usize, StoreError> {
        // 1. Candidates: files whose (version, hash) is below this run's
        //    first version and not in a snapshot of the index. Versions
        //    below `first_version` only leave the index, except that flushes
        //    and promotions publish old versions into a tier; step 2 re-checks.
        let mut live: Vec<(u128, u64)> = {
            let idx = self.index.read();
            let mut v = Vec::with_capacity(idx.len());
            v.extend(
                idx.iter()
                    .filter(|e| e.version() < self.first_version)
                    .map(|e| (key_hash(e.key()), e.version())),
            );
            v
        };
        // Sorted by hash first: one subdirectory's lookups stay together.
        live.sort_unstable();
        let objects = self.dirs.path.join(layout::OBJECTS);
        let mut candidates: Vec<(String, u128, u64, bool)> = Vec::new();
        for sub in 0..=255u8 {
            if stop.load(Ordering::Relaxed) {
                return Ok(0);
            }
            let sub = format!("{sub:02x}");
            let rd = match std::fs::read_dir(objects.join(&sub)) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_ctx(format!("listing objects/{sub}"))(e)),
            };
            for ent in rd {
                let ent = ent.map_err(io_ctx(format!("listing objects/{sub}")))?;
                let name = ent.file_name();
                let Some((hash, version)) = name.to_str().and_then(layout::parse_object_name)
                else {
                    continue;
                };
                let misplaced = layout::subdir_name(hash) != sub;
                if version >= self.first_version
                    || (!misplaced && live.binary_search(&(hash, version)).is_ok())
                {
                    continue;
                }
                let rel = format!("{sub}/{}", name.to_string_lossy());
                candidates.push((rel, hash, version, misplaced));
            }
        }
        drop(live);
        if candidates.is_empty() {
            return Ok(0);
        }
        // 2. Under the lock flushes and promotions hold while installing, one
        //    pass over the index finds candidates that were published since.
        let _moving = moves.lock();
        let versions: std::collections::HashSet<u64> = candidates.iter().map(|c| c.2).collect();
        let published: std::collections::HashSet<(u128, u64)> = self
            .index
            .read()
            .iter()
            .filter(|e| versions.contains(&e.version()))
            .map(|e| (key_hash(e.key()), e.version()))
            .collect();
        let mut removed = 0;
        for (rel, hash, version, misplaced) in candidates {
            if !misplaced && published.contains(&(hash, version)) {
                continue;
            }
            match layout::unlink_if_exists(&self.dirs.objects, rel.as_str()) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, file = %rel, "could not remove orphaned object file")
                }
            }
        }
        Ok(removed)
    }
}

/// Whether an I/O error says the filesystem (or the quota) is full.
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == Errno::NOSPC.raw_os_error() || c == Errno::DQUOT.raw_os_error()
    )
}
/// The result of an optional write (a checkpoint, the CLEAN marker, a compaction):
/// `Ok(true)` if it was done, `Ok(false)` with a warning if the tier's filesystem was
/// full (it is retried later: checkpoints and compactions run periodically), the error
/// otherwise.
pub(crate) fn skipped_for_space(
    tier: &Tier,
    what: &str,
    r: Result<(), StoreError>,
) -> Result<bool, StoreError> {
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Io { context, source }) if is_full(&source) => {
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
