//! The store: index, journal and object files tied together.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use rustix::fs::{Mode, OFlags};

use crate::catalog::Journal;
use crate::config::StoreConfig;
use crate::error::{display_chain, io_ctx, OpenError, StoreError};
use crate::index::{Entry, Index};
use crate::journal::RecordRef;
use crate::layout::{self, key_hash, object_rel_path, Dirs};
use crate::meta::{Object, ObjectMeta};
use crate::staging::Staging;
use crate::sync::Poison;
use crate::validate_key;

/// Versions reserved per RESERVE record.
pub(crate) const RESERVE_STEP: u64 = 65536;

/// How often `get` re-reads the index after the file it found was unlinked
/// by a concurrent replace/delete.
const GET_ATTEMPTS: usize = 4;

/// A persistent object store. See the crate documentation.
///
/// `Store` is `Send + Sync`; share it between threads as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    sweeper: Option<JoinHandle<()>>,
}

/// Counters and gauges, as returned by [`Store::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Live objects.
    pub objects: u64,
    /// Bytes of live objects.
    pub bytes: u64,
    /// `get` calls with a valid key.
    pub gets: u64,
    /// `get` calls that returned an object.
    pub hits: u64,
    /// `get` calls that returned `None`.
    pub misses: u64,
    /// Successful commits.
    pub puts: u64,
    /// Deletes that removed an object.
    pub deletes: u64,
    /// Current journal size in bytes.
    pub journal_bytes: u64,
    /// Bytes of journal records needed to rebuild the index.
    pub journal_live_bytes: u64,
    /// Journal compactions since open (including one at open).
    pub compactions: u64,
    /// Orphaned object files deleted since open.
    pub orphans_swept: u64,
    /// Objects dropped by recovery at open because their data failed verification.
    pub recovery_dropped: u64,
    /// Whether the store is poisoned.
    pub poisoned: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) orphans_swept: AtomicU64,
    pub(crate) recovery_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Shared state. Lock order: `journal` → `index` → `ckpt`.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: StoreConfig,
    pub(crate) dirs: Dirs,
    /// The flock'd `LOCK` file; dropping it releases the lock.
    pub(crate) lock_fd: Mutex<Option<OwnedFd>>,
    pub(crate) index: RwLock<Index>,
    /// Orders journal appends and index updates (always taken first).
    pub(crate) journal: Mutex<Journal>,
    pub(crate) next_version: AtomicU64,
    /// Versions up to and including this are covered by a durable RESERVE.
    pub(crate) reserved_upto: AtomicU64,
    /// First version this run can hand out; object files with smaller
    /// versions that are not in the index are orphans.
    pub(crate) first_version: u64,
    pub(crate) poison: Poison,
    pub(crate) closed: AtomicBool,
    /// (journal generation, offset) of the last checkpoint written.
    pub(crate) ckpt: Mutex<(u64, u64)>,
    pub(crate) bytes: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) sweeper_stop: AtomicBool,
}

impl Inner {
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        self.poison.check()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Hands out a fresh version, extending the durable reservation first if needed.
    pub(crate) fn alloc_version(&self) -> Result<u64, StoreError> {
        let v = self.next_version.fetch_add(1, Ordering::AcqRel);
        if v <= self.reserved_upto.load(Ordering::Acquire) {
            return Ok(v);
        }
        let mut j = self.journal.lock();
        if v <= self.reserved_upto.load(Ordering::Acquire) {
            return Ok(v);
        }
        self.check_writable()?;
        let upto = v.checked_add(RESERVE_STEP).ok_or_else(|| StoreError::Io {
            context: "version space exhausted".into(),
            source: io::Error::other("u64 versions exhausted"),
        })?;
        j.append(RecordRef::Reserve { upto }, &self.poison)?;
        j.sync(&self.poison)?;
        self.reserved_upto.fetch_max(upto, Ordering::AcqRel);
        Ok(v)
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Option<Arc<ObjectMeta>> {
        self.index.read().get(key).map(|e| Arc::new(e.meta()))
    }

    pub(crate) fn lookup_version(&self, key: &[u8]) -> Option<u64> {
        self.index.read().get(key).map(Entry::version)
    }

    /// Appends the PUT record and swaps the index entry, under the journal lock.
    /// Returns the superseded version, whose file the caller unlinks.
    pub(crate) fn publish(
        &self,
        meta: &ObjectMeta,
        durable: bool,
    ) -> Result<Option<u64>, StoreError> {
        let entry = Entry::new(meta).map_err(|e| StoreError::Io {
            context: "packing index entry".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let mut j = self.journal.lock();
        self.check_writable()?;
        j.append_put(&entry, &self.poison)?;
        if durable {
            j.sync(&self.poison)?;
        }
        j.live_bytes += entry.record_len();
        let old = self.index.write().replace(entry);
        self.bytes.fetch_add(meta.size, Ordering::Relaxed);
        let old_version = old.map(|o| {
            j.live_bytes = j.live_bytes.saturating_sub(o.record_len());
            self.bytes.fetch_sub(o.size(), Ordering::Relaxed);
            o.version()
        });
        self.maybe_compact(&mut j);
        Ok(old_version)
    }

    /// Removes `key` (only if its version is `only_version`, when given):
    /// appends a DEL record and updates the index. Caller holds the journal
    /// lock. Returns the removed version, whose file the caller unlinks.
    pub(crate) fn remove_locked(
        &self,
        j: &mut Journal,
        key: &[u8],
        only_version: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(version) = self.lookup_version(key) else {
            return Ok(None);
        };
        if only_version.is_some_and(|v| v != version) {
            return Ok(None);
        }
        j.append(RecordRef::Del { key, version }, &self.poison)?;
        if let Some(old) = self.index.write().take(key) {
            j.live_bytes = j.live_bytes.saturating_sub(old.record_len());
            self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
        }
        self.maybe_compact(j);
        Ok(Some(version))
    }

    /// Unlinks an object version's file. Open fds keep their bytes.
    pub(crate) fn unlink_object(&self, key: &[u8], version: u64) {
        let rel = object_rel_path(key_hash(key), version);
        if let Err(e) = layout::unlink_if_exists(&self.dirs.objects, &rel) {
            tracing::warn!(error = %e, file = %rel, "could not unlink superseded object file; the orphan sweep at next open will remove it");
        }
    }

    fn maybe_compact(&self, j: &mut Journal) {
        if j.needs_compaction(self.cfg.compact_min_journal_bytes) {
            if let Err(e) = self.compact_locked(j) {
                tracing::warn!(error = %display_chain(&e), "journal compaction failed");
            }
        }
    }

    /// Compacts the journal and records the new checkpoint. Caller holds the journal lock.
    pub(crate) fn compact_locked(&self, j: &mut Journal) -> Result<(), StoreError> {
        self.poison.check()?;
        let before = j.len;
        let upto = self
            .reserved_upto
            .load(Ordering::Acquire)
            .max(self.next_version.load(Ordering::Acquire).saturating_sub(1));
        let new_len = {
            let idx = self.index.read();
            j.compact(&self.dirs, idx.iter(), upto, &self.poison)?
        };
        // The old checkpoint offset is meaningless for the new file: record
        // the new one, or stop writing altogether.
        if let Err(e) = self.store_checkpoint(j.generation, new_len, true) {
            if !self.poison.is_set() {
                self.poison.set(
                    "recording the checkpoint after journal compaction",
                    io::Error::other(display_chain(&e)),
                );
            }
            return Err(e);
        }
        bump(&self.counters.compactions);
        tracing::info!(before, after = new_len, "compacted journal");
        Ok(())
    }

    /// Writes the checkpoint file unless a newer one was already written.
    pub(crate) fn store_checkpoint(
        &self,
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
            &self.poison,
        )?;
        *ck = (generation, off);
        Ok(())
    }

    /// syncfs, then record the journal length read before it as durable.
    pub(crate) fn checkpoint(&self, force: bool) -> Result<(), StoreError> {
        self.poison.check()?;
        let (generation, off) = {
            let j = self.journal.lock();
            (j.generation, j.len)
        };
        self.poison
            .sync("syncfs data directory", rustix::fs::syncfs(&self.dirs.data))?;
        self.store_checkpoint(generation, off, force)
    }

    /// Deletes object files that no index entry refers to and whose version
    /// predates this run. Stops early when `stop` is set.
    pub(crate) fn sweep_orphans(&self, stop: &AtomicBool) -> Result<usize, StoreError> {
        // Snapshot of live (version, key hash) pairs. Versions below
        // `first_version` can only leave the index, never enter it, so
        // anything not in the snapshot is garbage. The hash guards against
        // files that carry a live version number under another name.
        let mut live: Vec<(u64, u128)> = self
            .index
            .read()
            .iter()
            .filter(|e| e.version() < self.first_version)
            .map(|e| (e.version(), key_hash(e.key())))
            .collect();
        live.sort_unstable();
        let objects = self.dirs.path.join(layout::OBJECTS);
        let mut removed = 0;
        for sub in 0..=255u8 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let sub = format!("{sub:02x}");
            let rd = match std::fs::read_dir(objects.join(&sub)) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_ctx(format!("listing objects/{sub}"))(e)),
            };
            for ent in rd {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ent = ent.map_err(io_ctx(format!("listing objects/{sub}")))?;
                let name = ent.file_name();
                let Some((hash, version)) = name.to_str().and_then(layout::parse_object_name)
                else {
                    tracing::debug!(file = ?ent.path(), "ignoring unknown file in objects/");
                    continue;
                };
                let misplaced = layout::subdir_name(hash) != sub;
                if version >= self.first_version
                    || (!misplaced && live.binary_search(&(version, hash)).is_ok())
                {
                    continue;
                }
                let rel = format!("{sub}/{}", name.to_string_lossy());
                match layout::unlink_if_exists(&self.dirs.objects, &rel) {
                    Ok(true) => {
                        tracing::debug!(file = %rel, "removed orphaned object file");
                        removed += 1;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, file = %rel, "could not remove orphaned object file")
                    }
                }
            }
        }
        self.counters
            .orphans_swept
            .fetch_add(removed as u64, Ordering::Relaxed);
        Ok(removed)
    }

    /// A get found the index pointing at a missing file: drop the entry so
    /// `head` and `get` agree again.
    fn drop_missing(&self, key: &[u8], version: u64) {
        tracing::warn!(
            key = %key.escape_ascii(),
            version,
            "object file is missing; dropping index entry"
        );
        if self.check_writable().is_err() {
            return;
        }
        let mut j = self.journal.lock();
        if let Err(e) = self.remove_locked(&mut j, key, Some(version)) {
            tracing::warn!(error = %display_chain(&e), "could not drop entry of missing object");
        }
    }
}

impl Store {
    /// Opens (creating if needed) the data dir, takes an exclusive flock on
    /// `DATA_DIR/LOCK` (a second opener gets [`OpenError::Locked`]), runs
    /// recovery, and returns only when the index is complete.
    ///
    /// Unless [`StoreConfig::sweep_orphans_on_open`] is false, a background
    /// thread then deletes orphaned object files; the store is fully usable
    /// meanwhile.
    pub fn open(cfg: StoreConfig) -> Result<Store, OpenError> {
        let sweep = cfg.sweep_orphans_on_open;
        let inner = Arc::new(crate::recovery::open(cfg)?);
        let sweeper = if sweep {
            let bg = inner.clone();
            let handle = std::thread::Builder::new()
                .name("objmapper-sweep".into())
                .spawn(move || match bg.sweep_orphans(&bg.sweeper_stop) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "orphan sweep finished"),
                    Err(e) => tracing::warn!(error = %display_chain(&e), "orphan sweep failed"),
                })
                .map_err(|e| OpenError::Io {
                    context: "spawning the orphan sweep thread".into(),
                    source: e,
                })?;
            Some(handle)
        } else {
            None
        };
        Ok(Store { inner, sweeper })
    }

    /// Looks up `key` and opens a fresh read-only file description
    /// (`O_RDONLY|O_CLOEXEC`, its own file offset) on the current version.
    pub fn get(&self, key: &[u8]) -> Result<Option<Object>, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        bump(&inner.counters.gets);
        let hash = key_hash(key);
        let mut missing = None;
        for _ in 0..GET_ATTEMPTS {
            let Some(meta) = inner.lookup(key) else {
                missing = None;
                break;
            };
            match rustix::fs::openat(
                &inner.dirs.objects,
                object_rel_path(hash, meta.version),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    bump(&inner.counters.hits);
                    return Ok(Some(Object {
                        file: File::from(fd),
                        meta,
                    }));
                }
                // Raced a replace/delete that unlinked it: look again.
                Err(rustix::io::Errno::NOENT) => missing = Some(meta),
                Err(e) => return Err(io_ctx("opening object file")(e)),
            }
        }
        if let Some(meta) = missing {
            if inner.lookup_version(key) == Some(meta.version) {
                inner.drop_missing(key, meta.version);
            }
        }
        bump(&inner.counters.misses);
        Ok(None)
    }

    /// Metadata of the current version of `key`, if any.
    pub fn head(&self, key: &[u8]) -> Option<Arc<ObjectMeta>> {
        self.inner.lookup(key)
    }

    /// Starts a PUT: creates a staging memfd (`MFD_CLOEXEC|MFD_ALLOW_SEALING`).
    /// Nothing is visible until [`Staging::commit`].
    pub fn begin_put(&self, key: &[u8]) -> Result<Staging, StoreError> {
        validate_key(key)?;
        self.inner.check_writable()?;
        Staging::new(self.inner.clone(), key)
    }

    /// Deletes `key`. Returns true if something was deleted. Readers holding
    /// an fd to the deleted version keep their bytes.
    ///
    /// The DEL record is not synced: after a power loss (not after a process
    /// crash) a delete issued after the last checkpoint may be undone.
    pub fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        let removed = {
            let mut j = inner.journal.lock();
            inner.check_writable()?;
            inner.remove_locked(&mut j, key, None)?
        };
        match removed {
            Some(version) => {
                inner.unlink_object(key, version);
                bump(&inner.counters.deletes);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `syncfs()` the data dir, then atomically record the journal offset up
    /// to which all data is durable. Everything committed before the call is
    /// durable when it returns, and recovery after an unclean shutdown only
    /// verifies objects committed after the last checkpoint.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.checkpoint(false)
    }

    /// Rewrites the journal keeping only live records (normally automatic
    /// when garbage dominates; see [`StoreConfig::compact_min_journal_bytes`]).
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut j = self.inner.journal.lock();
        self.inner.check_writable()?;
        self.inner.compact_locked(&mut j)
    }

    /// Deletes object files not referenced by the index whose version
    /// predates this run (left by crashes between rename and journal append,
    /// or by failed unlinks). Returns how many files were removed. `open`
    /// already runs this in a background thread.
    pub fn sweep_orphans(&self) -> Result<usize, StoreError> {
        self.inner.sweep_orphans(&AtomicBool::new(false))
    }

    /// Number of live objects.
    pub fn len(&self) -> usize {
        self.inner.index.read().len()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total size of live objects in bytes.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Whether a failed sync poisoned the store (writes refused, reads work).
    pub fn is_poisoned(&self) -> bool {
        self.inner.poison.is_set()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.dirs.path
    }

    /// Path of the file holding `version` of `key` (for diagnostics; the file
    /// exists only while that version is current or held by readers).
    pub fn object_path(&self, key: &[u8], version: u64) -> PathBuf {
        self.inner
            .dirs
            .path
            .join(layout::OBJECTS)
            .join(object_rel_path(key_hash(key), version))
    }

    /// Snapshot of counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (journal_bytes, journal_live_bytes) = {
            let j = inner.journal.lock();
            (j.len, j.live_bytes)
        };
        StoreStats {
            objects: self.len() as u64,
            bytes: self.bytes(),
            gets: ld(&c.gets),
            hits: ld(&c.hits),
            misses: ld(&c.misses),
            puts: ld(&c.puts),
            deletes: ld(&c.deletes),
            journal_bytes,
            journal_live_bytes,
            compactions: ld(&c.compactions),
            orphans_swept: ld(&c.orphans_swept),
            recovery_dropped: ld(&c.recovery_dropped),
            poisoned: self.is_poisoned(),
        }
    }

    /// Clean shutdown: checkpoint, write the `CLEAN` marker, release the
    /// lock. Dropping a `Store` without `close` is treated as an unclean
    /// shutdown by the next open (objects committed after the last
    /// checkpoint are re-verified).
    ///
    /// Outstanding [`Staging`]s can no longer commit afterwards.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_sweeper();
        let inner = &*self.inner;
        {
            let _j = inner.journal.lock();
            inner.closed.store(true, Ordering::Release);
        }
        let r = inner.checkpoint(false).and_then(|()| {
            let fd = rustix::fs::openat(
                &inner.dirs.data,
                layout::CLEAN,
                OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(io_ctx("creating CLEAN marker"))?;
            drop(fd);
            inner
                .poison
                .sync("fsync data directory", rustix::fs::fsync(&inner.dirs.data))
        });
        inner.lock_fd.lock().take();
        r
    }

    fn stop_sweeper(&mut self) {
        self.inner.sweeper_stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.sweeper.take() {
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
        self.stop_sweeper();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PutMeta;

    #[test]
    fn poisoned_store_refuses_writes_but_serves_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("d"))).unwrap();
        let mut p = store.begin_put(b"k").unwrap();
        p.write_all(b"v1").unwrap();
        p.commit(2, PutMeta::default(), true).unwrap();
        let mut pending = store.begin_put(b"k").unwrap();
        pending.write_all(b"v2").unwrap();

        store.poison_for_test();
        assert!(store.is_poisoned());
        assert!(store.stats().poisoned);
        assert!(matches!(store.begin_put(b"x"), Err(StoreError::Poisoned)));
        assert!(matches!(store.delete(b"k"), Err(StoreError::Poisoned)));
        assert!(matches!(store.checkpoint(), Err(StoreError::Poisoned)));
        assert!(matches!(
            pending.commit(2, PutMeta::default(), false),
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
