//! Objects moving between the tiers: making room (eviction), the write-behind flush of a
//! memory object to disk, and the promotion of a disk object to memory.

use super::*;

impl Inner {
    /// Evicts from `kind` until an object of `incoming` bytes fits; a refusal is
    /// counted in `no_space` (PUTs refused for want of room).
    pub(crate) fn make_room(&self, kind: Kind, incoming: u64) -> Result<(), StoreError> {
        self.make_room_quietly(kind, incoming).inspect_err(|e| {
            if matches!(e, StoreError::NoSpace(_)) {
                bump(&self.counters.no_space);
            }
        })
    }

    /// [`Inner::make_room`] without counting a refusal: for a fill, which is optional
    /// (a fill refused is the cold tier's to count).
    pub(crate) fn make_room_quietly(&self, kind: Kind, incoming: u64) -> Result<(), StoreError> {
        let no_space = StoreError::NoSpace;
        let (cap_bytes, _) = self.capacity(kind);
        let name = self.tier(kind).name();
        if incoming > cap_bytes {
            return Err(no_space(format!(
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
                return Err(no_space(format!(
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
                return Err(no_space(format!(
                    "could not make room in the {name} tier: {}",
                    display_chain(&e)
                )));
            }
            rounds = rounds.saturating_sub(1);
            if rounds == 0 {
                return Err(no_space(format!(
                    "could not make room in the {name} tier for {incoming} bytes"
                )));
            }
        }
    }

    /// Takes `version` of `key` out of `kind`'s index with a DEL record, without
    /// syncing the journal; the caller unlinks the file. Returns the slot id and the
    /// entry, if the index held that version.
    pub(crate) fn remove_from_tier(
        &self,
        kind: Kind,
        key: &[u8],
        version: u64,
    ) -> Result<Option<(u32, Entry)>, StoreError> {
        let upto = self.reserve_upto();
        self.tier(kind)
            .remove(&self.cfg, &self.poison, key, Some(version), false, upto)
    }

    /// Evicts the object in slot `id` of `kind`. A dirty memory object is
    /// written to disk first (demotion); an ephemeral one is simply gone.
    pub(super) fn evict(&self, kind: Kind, id: u32) -> Result<(), StoreError> {
        let tier = self.tier(kind);
        let found = {
            let idx = tier.index.read();
            idx.by_id(id).map(|e| {
                (
                    Box::<[u8]>::from(e.key()),
                    e.version(),
                    idx.flags(id) & SLOT_DIRTY != 0,
                    e.ephemeral(),
                    e.mtime_ns(),
                )
            })
        };
        let Some((key, version, dirty, ephemeral, stamp)) = found else {
            return Ok(());
        };
        let mut lost_pending = false;
        if kind == Kind::Memory && dirty && !ephemeral {
            self.flush(&key, version)?;
        }
        let (removed, also_mem) = {
            let _c = self.catalog.lock();
            let removed = self.remove_from_tier(kind, &key, version)?;
            // Without its disk copy, a clean memory copy of the same version
            // would be neither evictable-by-flush nor durable: it leaves too.
            let also_mem = if kind == Kind::Disk && removed.is_some() {
                let clean_same = self
                    .tier(Kind::Memory)
                    .index
                    .read()
                    .get_with_flags(&key)
                    .is_some_and(|(e, f)| e.version() == version && f & SLOT_DIRTY == 0);
                if clean_same {
                    self.remove_from_tier(Kind::Memory, &key, version)?
                } else {
                    None
                }
            } else {
                None
            };
            // The version's last copy is gone: if its upload had not happened, the tier
            // and the other hosts still hold what it replaced. Remembered as a delete at
            // its stamp (no fill brings that back here), which the cold tier sends.
            if kind == Kind::Disk && removed.is_some() {
                if let Some(cold) = self.cold.get() {
                    if cold.unsent(&key, version) {
                        self.tombstones.lock().record_here(&key, stamp);
                        self.fences.void_key(&key, VOID_ALL);
                        lost_pending = true;
                    }
                }
            }
            let mut p = self.policy.lock();
            if let Some((id, _)) = &removed {
                p.of(kind).remove(*id as u64);
            }
            if let Some((mid, _)) = &also_mem {
                p.of(Kind::Memory).remove(*mid as u64);
            }
            (removed, also_mem)
        };
        if removed.is_some() {
            tier.unlink_object(&key, version);
            bump(&tier.evictions);
            tracing::debug!(key = %key.escape_ascii(), version, tier = tier.name(), "evicted");
        }
        if also_mem.is_some() {
            self.tier(Kind::Memory).unlink_object(&key, version);
        }
        if lost_pending {
            if let Some(cold) = self.cold.get() {
                cold.lost_before_upload(&key, stamp);
            }
        }
        Ok(())
    }

    /// Opens `kind`'s file of a version to copy it to the other tier. A file that
    /// cannot be opened is handled by [`open_failed`](Inner::open_failed): `Ok(None)`
    /// when it was missing or damaged, and the move does not happen.
    fn open_or_drop(
        &self,
        kind: Kind,
        key: &[u8],
        version: u64,
        size: u64,
    ) -> Result<Option<File>, StoreError> {
        match self.tier(kind).open_checked(key, version, size) {
            Ok(f) => Ok(Some(f)),
            Err(fail) => {
                self.open_failed(kind, key, version, size, fail)?;
                Ok(None)
            }
        }
    }

    /// Publishes a copy of `entry` just installed in `kind`'s tier, clean and not
    /// synced. Returns the slot id and the entry it replaced there. Callers hold the
    /// catalog lock.
    fn publish_copy(&self, kind: Kind, entry: &Entry) -> Result<(u32, Option<Entry>), StoreError> {
        self.tier(kind).publish(
            &self.cfg,
            &self.poison,
            entry.clone(),
            0,
            false,
            self.reserve_upto(),
        )
    }

    /// Writes a dirty memory object to disk and marks it clean. Returns
    /// false if there was nothing to do (no longer current or not dirty).
    pub(crate) fn flush(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        let _moving = self.moves.lock();
        let entry = match self.tier(Kind::Memory).index.read().get_with_flags(key) {
            Some((e, f)) if e.version() == version && f & SLOT_DIRTY != 0 && !e.ephemeral() => {
                e.clone()
            }
            _ => return Ok(false),
        };
        self.check_writable()?;
        let size = entry.size();
        let Some(src) = self.open_or_drop(Kind::Memory, key, version, size)? else {
            return Ok(false);
        };
        let r = self.tier(Kind::Disk).install_copy(
            &self.cfg,
            &self.poison,
            Install::copy_of(&src, key, &entry),
        );
        let want = entry.meta().checksum;
        if let Some(sum) = r.as_ref().ok().copied().filter(|&sum| sum != want) {
            // The bytes were hashed as they were read from the memory copy: it is the
            // damaged one. It is dropped; there is nothing to retry.
            self.tier(Kind::Disk).unlink_object(key, version);
            let detail =
                format!("xxh3 {sum:016x}, the record says {want:016x} (while writing it to disk)");
            self.drop_damaged(Kind::Memory, key, version, Damage::Checksum, &detail);
            return Ok(false);
        }
        let r = r.and_then(|_| {
            self.make_room(Kind::Disk, size).inspect_err(|_| {
                self.tier(Kind::Disk).unlink_object(key, version);
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
                .tier(Kind::Memory)
                .index
                .read()
                .get_with_flags(key)
                .is_some_and(|(e, f)| e.version() == version && f & SLOT_DIRTY != 0);
            if !still {
                None
            } else {
                let (id, old) = self.publish_copy(Kind::Disk, &entry)?;
                self.tier(Kind::Memory).set_flags_if(key, version, 0);
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
                if self
                    .tier(Kind::Disk)
                    .index
                    .read()
                    .get(key)
                    .map(Entry::version)
                    != Some(version)
                {
                    self.tier(Kind::Disk).unlink_object(key, version);
                }
                Ok(false)
            }
            Some(old) => {
                if let Some(o) = old.filter(|o| o.version() != version) {
                    self.tier(Kind::Disk).unlink_object(key, o.version());
                }
                bump(&self.counters.flushes);
                Ok(true)
            }
        }
    }

    /// Copies a disk object into the memory tier (clean).
    pub(crate) fn promote(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        if !self.mem_enabled() || self.tier(Kind::Memory).index.read().get(key).is_some() {
            return Ok(false);
        }
        let size = match self.tier(Kind::Disk).index.read().get(key) {
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
        let entry = match self.tier(Kind::Disk).index.read().get(key) {
            Some(e) if e.version() == version => e.clone(),
            _ => return Ok(false),
        };
        if self.tier(Kind::Memory).index.read().get(key).is_some() {
            return Ok(false);
        }
        let Some(src) = self.open_or_drop(Kind::Disk, key, version, size)? else {
            return Ok(false);
        };
        let sum = self.tier(Kind::Memory).install_copy(
            &self.cfg,
            &self.poison,
            Install::copy_of(&src, key, &entry),
        )?;
        let want = entry.meta().checksum;
        if sum != want {
            self.tier(Kind::Memory).unlink_object(key, version);
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
            let ok = self.tier(Kind::Memory).index.read().get(key).is_none()
                && self
                    .tier(Kind::Disk)
                    .index
                    .read()
                    .get(key)
                    .map(Entry::version)
                    == Some(version);
            if ok {
                let (id, _) = self.publish_copy(Kind::Memory, &entry)?;
                self.policy.lock().admit(Kind::Memory, id, &entry, false);
            }
            ok
        };
        if !published {
            if self
                .tier(Kind::Memory)
                .index
                .read()
                .get(key)
                .map(Entry::version)
                != Some(version)
            {
                self.tier(Kind::Memory).unlink_object(key, version);
            }
            return Ok(false);
        }
        // Reads find the memory copy from now on: the disk copy's cached open file and
        // body would only hold a descriptor and memory until the memory copy leaves.
        self.tier(Kind::Disk).forget_open(version);
        bump(&self.counters.promotions);
        Ok(true)
    }

    /// (key, version) of every memory object not yet on disk.
    pub(super) fn dirty_objects(&self) -> Vec<(Box<[u8]>, u64)> {
        self.tier(Kind::Memory)
            .index
            .read()
            .iter_ids()
            .filter(|(_, e, f)| f & SLOT_DIRTY != 0 && !e.ephemeral())
            .map(|(_, e, _)| (Box::from(e.key()), e.version()))
            .collect()
    }

    /// Writes every dirty memory object to disk (at close).
    pub(super) fn flush_all(&self) {
        for (key, version) in self.dirty_objects() {
            if let Err(e) = self.flush(&key, version) {
                tracing::error!(key = %key.escape_ascii(), error = %display_chain(&e), "object not written to disk at shutdown; it stays in the memory tier");
            }
        }
    }
}
