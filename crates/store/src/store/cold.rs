//! The store's side of the cold-tier seam (`crate::cold`): attaching one, fills, and
//! the deletes other hosts made.

use super::*;
use crate::ban::BanInfo;
use crate::cold::FillFence;

impl Store {
    /// Attaches the cold tier behind the local ones. From then on it hears of every
    /// persistent commit, every delete and every ban ([`ColdTier`]), and local deletes
    /// are remembered until it has recorded them ([`Store::settle_tombstone`]). Only one
    /// can be attached; a second call returns false and changes nothing.
    pub fn attach_cold(&self, cold: Arc<dyn ColdTier>) -> bool {
        self.inner.cold.set(cold).is_ok()
    }

    /// Starts a fill: stages the bytes of a version fetched from the cold tier, to be
    /// published with [`Staging::commit_fill`]. Its fd ([`Staging::fd`]) is for the
    /// daemon's own writes only: never hand it to a client. With a memory tier the
    /// bytes are staged in a file in its `staging/`, so a fill placed in memory is
    /// renamed into place rather than copied; else in a memfd, like an fd-mode PUT.
    pub fn begin_fill(&self, key: &[u8]) -> Result<Staging, StoreError> {
        validate_key(key)?;
        self.inner.check_writable()?;
        Staging::fill(self.inner.clone(), self.fence_fill(key)?.state, None)
    }

    /// Puts up a fence for a fill of `key` ([`FillFence`]): from now on a delete, a
    /// write, a purge or a ban here that concerns the key voids the fill staged with
    /// [`Store::begin_fill_fenced`], whose commit is then refused. Put it up before
    /// asking the cold tier for the version.
    pub fn fence_fill(&self, key: &[u8]) -> Result<FillFence, StoreError> {
        validate_key(key)?;
        Ok(self.inner.fences.add(key))
    }

    /// [`Store::begin_fill_sized`] of the key `fence` guards, void from when the fence
    /// went up (not only from now).
    pub fn begin_fill_fenced(&self, fence: &FillFence, size: u64) -> Result<Staging, StoreError> {
        self.inner.check_writable()?;
        Staging::fill(self.inner.clone(), fence.state.clone(), Some(size))
    }

    /// [`Store::begin_fill`] of a version whose size is known (from the cold tier's
    /// record, before its bytes): staged where the commit will likely place it, so
    /// that the commit is a rename. One for memory as `begin_fill` stages it; one
    /// larger than `direct_to_disk_threshold` (or than the memory tier) in a file in
    /// the disk tier's `staging/`, not in memory, and renamed into the disk tier. A
    /// memfd only when neither tier's filesystem has room for `size`.
    pub fn begin_fill_sized(&self, key: &[u8], size: u64) -> Result<Staging, StoreError> {
        validate_key(key)?;
        self.inner.check_writable()?;
        Staging::fill(self.inner.clone(), self.fence_fill(key)?.state, Some(size))
    }

    /// Whether a fill of the version `origin` names, `size` bytes with metadata `meta`,
    /// of the key `fence` guards, would be refused now: the reasons
    /// [`Staging::commit_fill`] gives that the version's record alone decides (it has
    /// expired, it is older than the fill floor, a retired ban kept for fills or an
    /// active ban covers it, a delete remembered here is newer, the fence was voided:
    /// [`StoreError::PreconditionFailed`]), and a size larger than the tier it would go
    /// to ([`StoreError::NoSpace`]). Only looks: nothing is counted, evicted or
    /// staged. Ask once the cold tier's record is known, before fetching the version's
    /// bytes; `Ok` does not promise the commit (the store may change meanwhile).
    pub fn check_fill(
        &self,
        fence: &FillFence,
        meta: &PutMeta,
        origin: Origin,
        size: u64,
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let kind = inner.first_tier(size, &PutOptions::default());
        let (cap, _) = inner.capacity(kind);
        if size > cap {
            return Err(StoreError::NoSpace(format!(
                "a version of {size} bytes does not fit the {} tier's capacity of {cap} bytes",
                inner.tier(kind).name()
            )));
        }
        let probe = ObjectMeta {
            key: fence.key().into(),
            version: 0,
            size,
            mtime_ns: origin.stamp_ns,
            checksum: origin.checksum,
            content_type: meta.content_type.as_deref().map(Into::into),
            custom: meta
                .custom
                .iter()
                .map(|(n, v)| (n.as_str().into(), v.as_slice().into()))
                .collect(),
            expires_at: meta.expires_at,
            pinned: false,
            ephemeral: false,
            filled: true,
            tier: Placement::Memory,
            dirty: false,
        };
        inner.fill_refusal(&probe, Some(&fence.state), 0)
    }

    /// Applies a delete another host made at `stamp` (from the cold tier's invalidation
    /// log): removes the local versions of `key` committed before it and remembers the
    /// delete, so no fill of an older version brings one back. A version committed here
    /// after `stamp` stays (it is newer than the delete). Not reported back to the cold
    /// tier. Returns whether a local version was removed.
    pub fn apply_cold_delete(&self, key: &[u8], stamp: u64) -> Result<bool, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        // A fill of the key being fetched may have read a version the delete covers
        // (stamped at or before it): that must not land after it (the delete is
        // remembered only so long). A newer version, the write that replaced the one
        // deleted, does.
        inner.fences.void_key(key, stamp.saturating_add(1));
        // A write here from now on is later than the delete.
        inner.observe_stamp(stamp, false);
        let mut removed = Vec::new();
        {
            let _c = inner.catalog.lock();
            inner.check_writable()?;
            inner.tombstones.lock().record_remote(key, stamp);
            for kind in Kind::ALL {
                let tier = inner.tier(kind);
                let old = tier
                    .index
                    .read()
                    .get(key)
                    .map(|e| (e.version(), e.mtime_ns()));
                let Some((version, mtime)) = old else {
                    continue;
                };
                if mtime >= stamp {
                    continue;
                }
                let r = tier.remove(
                    &inner.cfg,
                    &inner.poison,
                    key,
                    Some(version),
                    false,
                    inner.reserve_upto(),
                )?;
                if let Some((id, e)) = r {
                    inner.policy.lock().of(kind).remove(id as u64);
                    removed.push((kind, e.version()));
                }
            }
        }
        for (kind, version) in &removed {
            inner.tier(*kind).unlink_object(key, *version);
            inner.tier(*kind).refill_reserve();
        }
        Ok(!removed.is_empty())
    }

    /// Applies a purge by prefix another host made at `stamp`: the ban `key ^ "prefix"`
    /// with that stamp ([`Store::apply_cold_ban`]).
    pub fn apply_cold_purge(&self, prefix: &[u8], stamp: u64) -> Result<BanInfo, StoreError> {
        self.apply_cold_ban(&prefix_ban(prefix), stamp)
    }

    /// A cold tier's journal says this store's clock reached `stamp_ns` in an earlier
    /// run (its place in an invalidation log, its upload watermark): later stamps are
    /// larger, whatever the wall clock says now (set back since, a write after a
    /// delete here would lose to it).
    pub fn resume_clock(&self, stamp_ns: u64) {
        self.inner.observe_stamp(stamp_ns, true);
    }

    /// Remembers a delete of `key` at `stamp` that the cold tier has not recorded yet
    /// (its upload queue, replayed after a restart): no fill of an older version comes
    /// back meanwhile.
    pub fn remember_delete(&self, key: &[u8], stamp: u64) {
        self.inner.observe_stamp(stamp, true);
        self.inner.tombstones.lock().record_here(key, stamp);
    }

    /// Opens `version` of `key` for an upload to the cold tier, if it is still the
    /// current, live version: `None` if it was superseded, deleted, banned, expired or
    /// evicted. Unlike [`Store::get`] it counts no GET and marks no access, so uploads
    /// leave hit ratios and eviction order alone.
    pub fn open_for_cold(&self, key: &[u8], version: u64) -> Result<Option<Object>, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        // A move between the lookup and the open (a flush, an eviction from memory)
        // leaves the version in the other tier: look again.
        for _ in 0..GET_ATTEMPTS {
            let Some((kind, _, meta)) = inner.find(key, None) else {
                return Ok(None);
            };
            if meta.version != version || meta.is_expired_at(now_secs()) {
                return Ok(None);
            }
            if let Ok(file) = inner.tier(kind).open_checked(key, meta.version, meta.size) {
                let meta = Arc::new(meta);
                return Ok(Some(Object { file, meta }));
            }
        }
        Ok(None)
    }

    /// The cold tier has recorded the delete of `key` at `stamp` (its own tombstone now
    /// refuses older versions): the store stops remembering it. A later delete of the
    /// key stays remembered.
    pub fn settle_tombstone(&self, key: &[u8], stamp: u64) {
        self.inner.tombstones.lock().settle(key, stamp);
    }

    /// Removes every local object committed before `before_ns`, neither remembered nor
    /// reported to the cold tier: for a host that missed part of the cold tier's
    /// invalidation log (pruned while it was away), so any of them may have been
    /// deleted or replaced elsewhere. A later GET reads those still current through
    /// again. An object replaced meanwhile is left. Returns how many were removed.
    pub fn forget_committed_before(&self, before_ns: u64) -> Result<u64, StoreError> {
        self.forget_where(before_ns, |m| m.mtime_ns < before_ns)
    }

    /// Removes every local copy read through from the cold tier (a fill), neither
    /// remembered nor reported: for a host that cannot tell which of the tier's deletes,
    /// overwrites and purges it has applied (its place in the tier's invalidation log is
    /// lost). A later GET reads those still current through again. Returns how many
    /// were removed.
    pub fn forget_fills(&self) -> Result<u64, StoreError> {
        self.forget_where(VOID_ALL, |m| m.filled)
    }

    /// Removes the objects `which` says; fills being fetched of versions stamped below
    /// `void_below` may be as stale, and are voided (refetched after).
    fn forget_where(
        &self,
        void_below: u64,
        which: impl Fn(&ObjectMeta) -> bool,
    ) -> Result<u64, StoreError> {
        self.inner.fences.void_where(void_below, |_| true);
        let mut removed = 0;
        let mut cursor = None;
        loop {
            let page = self.list(b"", cursor, 4096);
            for o in page.objects {
                let m = &o.meta;
                if !which(m) {
                    continue;
                }
                let only_this = crate::meta::Condition::IfVersion(m.version);
                match self.delete_inner(&m.key, only_this, false, false) {
                    Ok(true) => removed += 1,
                    Ok(false) | Err(StoreError::PreconditionFailed(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => return Ok(removed),
            }
        }
    }

    /// Deletes remembered for the cold tier (not yet settled), and how many were
    /// forgotten because more than [`crate::cold`]'s bound were pending.
    pub fn tombstones(&self) -> (usize, u64) {
        let t = self.inner.tombstones.lock();
        (t.unsettled(), t.dropped)
    }

    /// Deletes every object whose key starts with `prefix`; returns how many. With a
    /// cold tier attached, the purge is first made a ban `key ^ "prefix"` stamped now
    /// (so no fill of an older version under the prefix comes back, here or through
    /// the cold tier) and reported once with [`ColdTier::purged`], not once per key.
    pub fn purge_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list(prefix, cursor, 1024);
            keys.extend(page.objects.into_iter().map(|o| o.meta.key));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let cold = self.inner.cold.get();
        if let Some(cold) = cold {
            let stamp = {
                let _c = self.inner.catalog.lock();
                self.inner.stamp()
            };
            self.apply_cold_ban(&prefix_ban(prefix), stamp)?;
            cold.purged(prefix, stamp);
        }
        let mut n = 0;
        for k in &keys {
            let always = crate::meta::Condition::Always;
            // Under the ban, a removed key reports false (a banned object is absent):
            // each listed key was live until the ban.
            if self.delete_inner(k, always, false, cold.is_none())? || cold.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The ban expression `key ^ "prefix"` (docs/STORAGE.md, "Bans": bytes outside printable
/// ASCII, `\` and `"` escaped as `\xHH`).
pub(crate) fn prefix_ban(prefix: &[u8]) -> Vec<u8> {
    let mut e = b"key ^ \"".to_vec();
    for &b in prefix {
        if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"' {
            e.push(b);
        } else {
            e.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    e.push(b'"');
    e
}

/// How far ahead of this host's clock another host's stamp is followed (15 minutes:
/// S3 refuses a request signed by a clock further off).
pub(crate) const MAX_LEAD_NS: u64 = 15 * 60 * 1_000_000_000;

impl Inner {
    /// Makes every later stamp larger than `stamp`, one another host or an earlier run
    /// made (a delete, a ban, a fill's version): a write here after the store heard of
    /// them then wins over them, whatever the clocks say (a Lamport clock). Another
    /// host's stamp is followed at most [`MAX_LEAD_NS`] ahead of this clock (S3 refuses
    /// requests from clocks further off, so no host in step with the store is);
    /// `own` ones (this store's, from its journals) all the way.
    pub(crate) fn observe_stamp(&self, stamp: u64, own: bool) {
        let stamp = if own {
            stamp
        } else {
            stamp.min(now_ns().saturating_add(MAX_LEAD_NS))
        };
        self.clock.fetch_max(stamp, Ordering::AcqRel);
    }
}
