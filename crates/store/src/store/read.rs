//! Reads: one lookup of a key's current version ([`Store::lookup`], a [`Found`]) that is
//! then opened as the caller decides, shared (the cached description) or private (a fresh
//! one); `get` and `get_shared` on top of it; verification of the bytes against the
//! record; and the hit accounting.

use super::*;

/// The current version of a key as one read found it in the index ([`Store::lookup`]),
/// before any file is opened: the caller looks at its metadata (size, range, transfer
/// mode) and then opens it once, shared ([`Store::open_shared`]) or private
/// ([`Store::open_private`]). The read is counted when it is opened (a hit, or a miss if
/// the version vanished and no other was found); a `Found` dropped unopened counts
/// nothing.
#[derive(Debug)]
pub struct Found {
    kind: Kind,
    id: u32,
    meta: Arc<ObjectMeta>,
}

impl Found {
    /// Metadata of the version found.
    pub fn meta(&self) -> &Arc<ObjectMeta> {
        &self.meta
    }
}

impl Store {
    /// Looks up the current live version of `key` (expired and banned versions are
    /// absent, and their removal is queued) without opening anything. `Ok(None)` counts
    /// as a read that missed.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Found>, StoreError> {
        validate_key(key)?;
        let found = self.find_live(key);
        if found.is_none() {
            let c = &self.inner.counters;
            bump(&c.gets);
            bump(&c.misses);
        }
        Ok(found)
    }

    /// Opens the version `found` names through the tier's cache of open files: see
    /// [`Store::get_shared`]. If its file is gone (replaced, deleted, evicted or moved
    /// since the lookup) or damaged (then the version is dropped), the key is looked up
    /// afresh, which finds the newer version or the other tier's copy: the object
    /// returned may be another version than `found`'s. Counted once, hit or miss.
    #[inline]
    pub fn open_shared(&self, found: Found) -> Result<Option<SharedObject>, StoreError> {
        let max = self.inner.cfg.open_files_max;
        self.open_found(found, |tier, m| {
            tier.open_shared(&m.key, m.version, m.size, max)
        })
        .map(|o| {
            o.map(|(c, f)| SharedObject {
                file: c.file,
                meta: f.meta,
                kind: f.kind,
                verified: c.verified,
            })
        })
    }

    /// Opens a fresh read-only description (`O_RDONLY|O_CLOEXEC`, its own file offset)
    /// of the version `found` names, for handing to another process. A vanished or
    /// damaged file is handled as in [`Store::open_shared`]. Counted once, hit or miss.
    #[inline]
    pub fn open_private(&self, found: Found) -> Result<Option<Object>, StoreError> {
        let max = self.inner.cfg.open_files_max;
        self.open_found(found, |tier, m| {
            tier.open_private(&m.key, m.version, m.size, max)
        })
        .map(|o| o.map(|(file, f)| Object { file, meta: f.meta }))
    }

    /// Looks up `key` and opens a fresh read-only file description
    /// (`O_RDONLY|O_CLOEXEC`, its own file offset) on the current version.
    /// Expired objects are not served.
    pub fn get(&self, key: &[u8]) -> Result<Option<Object>, StoreError> {
        match self.lookup(key)? {
            Some(found) => self.open_private(found),
            None => Ok(None),
        }
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
        match self.lookup(key)? {
            Some(found) => self.open_shared(found),
            None => Ok(None),
        }
    }

    /// The current live version of `key` in the index, stamped as read now.
    fn find_live(&self, key: &[u8]) -> Option<Found> {
        let inner = &*self.inner;
        let now = now_secs();
        let (kind, id, meta) = inner.find(key, Some(now))?;
        if meta.is_expired_at(now) {
            inner.enqueue(Job::Expire(meta.key.clone(), meta.version));
            return None;
        }
        Some(Found {
            kind,
            id,
            meta: Arc::new(meta),
        })
    }

    /// Opens `found` with `open`; a file that vanished or is damaged sends the key back
    /// to the index, [`GET_ATTEMPTS`] lookups in all. Counts the read once.
    fn open_found<T>(
        &self,
        mut found: Found,
        open: impl Fn(&Tier, &ObjectMeta) -> Result<T, OpenFail>,
    ) -> Result<Option<(T, Found)>, StoreError> {
        let inner = &*self.inner;
        bump(&inner.counters.gets);
        for attempt in 1..=GET_ATTEMPTS {
            let m = &found.meta;
            match open(inner.tier(found.kind), m) {
                Ok(t) => {
                    self.record_hit(found.kind, found.id, m);
                    return Ok(Some((t, found)));
                }
                // Raced a replace/delete/eviction that unlinked it, or the file is
                // damaged or lost (then the version is dropped): look again, which
                // finds the other tier's copy if there is one.
                Err(fail) => inner.open_failed(found.kind, &m.key, m.version, m.size, fail)?,
            }
            if attempt == GET_ATTEMPTS {
                break;
            }
            match self.find_live(&found.meta.key) {
                Some(f) => found = f,
                None => break,
            }
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
            if !self.read_full(obj, &mut buf[..want], off)? {
                return Ok(false);
            }
            hasher.update(&buf[..want]);
            off += want as u64;
        }
        Ok(self.check_streamed(obj, hasher.digest()))
    }

    /// The bytes of the small version `found` names if its tier kept them from an
    /// earlier [`Store::read_body`]: a hit, counted like an open, with nothing opened or
    /// read (the bytes matched the record when they were read, and a version's file
    /// never changes). `None` (nothing counted): open it and read it.
    #[inline]
    pub fn cached_body(&self, found: &Found) -> Option<Arc<[u8]>> {
        if found.meta.size > SMALL_BODY_MAX {
            return None;
        }
        let body = self
            .inner
            .tier(found.kind)
            .bodies
            .lock()
            .get(found.meta.version)?;
        bump(&self.inner.counters.gets);
        self.record_hit(found.kind, found.id, &found.meta);
        Some(body)
    }

    /// Reads all of a shared file into memory, checks it against the record's xxh3-64
    /// as [`Store::verify`] does, and keeps the bytes in its tier's body cache
    /// ([`StoreConfig::body_cache_bytes`]) for [`Store::cached_body`] if the object is
    /// small (at most [`SMALL_BODY_MAX`] bytes; meant for those). `Ok(None)`: the bytes do not match (or the file is
    /// short); the version has been dropped as by `verify`: look the key up again.
    pub fn read_body(&self, obj: &SharedObject) -> Result<Option<Arc<[u8]>>, StoreError> {
        let m = &obj.meta;
        let mut buf = vec![0u8; m.size as usize];
        if !self.read_full(obj, &mut buf, 0)? {
            return Ok(None);
        }
        if !obj.verified() && !self.check_streamed(obj, xxhash_rust::xxh3::xxh3_64(&buf)) {
            return Ok(None);
        }
        let body = Arc::<[u8]>::from(buf);
        self.inner.tier(obj.kind).keep_body(
            m.version,
            body.clone(),
            self.inner.cfg.body_cache_bytes,
        );
        Ok(Some(body))
    }

    /// Fills `buf` from a shared file at `at`. `Ok(false)`: the file ended first, before
    /// its recorded size; the version has been dropped as damaged.
    fn read_full(&self, obj: &SharedObject, buf: &mut [u8], at: u64) -> Result<bool, StoreError> {
        let mut done = 0;
        while done < buf.len() {
            let off = at + done as u64;
            match std::os::unix::fs::FileExt::read_at(&*obj.file, &mut buf[done..], off) {
                Ok(0) => {
                    self.short_file(obj, off);
                    return Ok(false);
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_ctx("reading an object to check it")(e)),
            }
        }
        Ok(true)
    }

    /// Drops a shared file's version that ended at `off` bytes, before its recorded size.
    fn short_file(&self, obj: &SharedObject, off: u64) {
        let m = &obj.meta;
        self.inner.drop_damaged(
            obj.kind,
            &m.key,
            m.version,
            Damage::Size,
            &format!("the file ended at {off} bytes, the record says {}", m.size),
        );
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

    pub(super) fn record_hit(&self, kind: Kind, id: u32, meta: &ObjectMeta) {
        let inner = &*self.inner;
        match kind {
            Kind::Memory => {
                bump(&inner.tier(Kind::Memory).hits);
                let disk_id = inner.tier(Kind::Disk).index.read().id(&meta.key);
                let mut p = inner.policy.lock();
                p.of(Kind::Memory).touch(id as u64);
                if let Some(d) = disk_id {
                    p.of(Kind::Disk).touch(d as u64);
                }
            }
            Kind::Disk => {
                bump(&inner.tier(Kind::Disk).hits);
                let promote = {
                    let mut p = inner.policy.lock();
                    p.of(Kind::Disk).touch(id as u64);
                    inner.mem_enabled()
                        && meta.size <= inner.live.direct_to_disk_threshold()
                        && (p.of(Kind::Disk).frequency(id as u64).unwrap_or(0)
                            >= inner.live.promote_after_hits()
                            || p.of(Kind::Memory)
                                .was_recently_evicted(fingerprint(&meta.key)))
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
}
