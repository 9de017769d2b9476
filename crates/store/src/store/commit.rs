//! The commit protocol after the staged bytes are sealed and checked: placement, the
//! object file with its label, the journal record and the index swap.

use super::*;

impl Inner {
    /// Publishes a new version: the copy is already installed in `kind`. Returns the
    /// versions it superseded, whose files the caller unlinks (see [`Superseded`]).
    pub(super) fn publish_new(
        &self,
        kind: Kind,
        meta: &mut ObjectMeta,
        durable: bool,
        condition: crate::meta::Condition,
        fill: Option<FillFrom<'_>>,
    ) -> Result<Leftovers, StoreError> {
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
            match fill {
                // The commit stamp, under the catalog lock (see `stamp`). A write here
                // voids the fills of the key being fetched (one landing after it
                // would be the older version, once this one is gone).
                None => {
                    meta.mtime_ns = self.stamp();
                    self.fences.void_key(&meta.key, VOID_ALL);
                    // An ephemeral version never reaches the cold tier, which may hold an
                    // older one: remembered like another host's delete at its stamp, so
                    // that once it expires no fill brings the older one back here (within
                    // the bound on those, the oldest forgotten first).
                    if meta.ephemeral && self.cold.get().is_some() {
                        self.tombstones
                            .lock()
                            .record_remote(&meta.key, meta.mtime_ns);
                    }
                }
                // A fill keeps its original stamp, and must not bring back what a
                // delete or a ban here has killed since it was written, nor what was
                // deleted, written, purged or banned here while it was fetched. The
                // retired bans seen before the commit began were matched then, outside
                // the lock; here only those retired since.
                Some(f) => self.fill_refusal(meta, f.fence, f.bans_seen)?,
            }
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
        let mut left = Leftovers::new(&meta.key);
        if let Some(o) = old_same {
            left.push(kind, o.version());
        }
        if let Some((o, (_, e))) = old_other {
            left.push(o, e.version());
        }
        Ok(left)
    }

    /// Whether a fill of `meta` (`meta.mtime_ns` being the version's stamp on the cold
    /// tier) is refused, and why: it has expired, it is older than the fill floor, a
    /// retired ban kept for fills covers it (of those retired after `retired_after` only:
    /// the caller matched the older ones), its fence was voided, a delete remembered here
    /// is newer, or an active ban covers it. Only looks. The one list of these refusals:
    /// the commit asks it before making room and again under the catalog lock,
    /// [`Store::check_fill`](crate::Store::check_fill) before a fill's bytes are
    /// fetched.
    pub(crate) fn fill_refusal(
        &self,
        meta: &ObjectMeta,
        fence: Option<&FenceState>,
        retired_after: u64,
    ) -> Result<(), StoreError> {
        let stamp = meta.mtime_ns;
        let refused = |why: &str| Err(StoreError::PreconditionFailed(why.into()));
        if meta.is_expired_at(now_secs()) {
            return refused("that version has expired");
        }
        if stamp < self.fill_floor.load(Ordering::Acquire) {
            return refused("that version is older than a ban here that has been retired");
        }
        if self.fill_bans.covers_meta_after(meta, retired_after) {
            return refused("a ban here that has been retired covers that version");
        }
        if fence.is_some_and(|f| f.refuses(stamp)) {
            return refused(
                "the key was deleted, written, purged or banned here while that version was \
                 fetched",
            );
        }
        if self
            .tombstones
            .lock()
            .get(&meta.key)
            .is_some_and(|t| t >= stamp)
        {
            return refused("the key was deleted here after that version was written");
        }
        if self.bans.covers_meta(meta) {
            return refused("a ban here covers that version");
        }
        Ok(())
    }

    /// The tier a commit of `size` bytes with `opts` tries first: memory for an
    /// ephemeral object, and for one neither durable nor larger than
    /// `direct_to_disk_threshold` or the memory tier; disk for the others.
    pub(crate) fn first_tier(&self, size: u64, opts: &PutOptions) -> Kind {
        let to_mem = self.mem_enabled()
            && (opts.ephemeral
                || (!opts.durable
                    && size <= self.live.direct_to_disk_threshold()
                    && size <= self.live.mem_capacity_bytes()));
        if to_mem {
            Kind::Memory
        } else {
            Kind::Disk
        }
    }

    /// The commit protocol after the staged bytes are sealed and checked. The
    /// superseded versions' files are left for the caller to unlink.
    pub(crate) fn commit(
        &self,
        key: &[u8],
        src: Source<'_>,
        size: u64,
        pm: PutMeta,
        opts: PutOptions,
        fill: Option<FillFrom<'_>>,
    ) -> Result<(Arc<ObjectMeta>, Leftovers), CommitError> {
        let origin = fill.map(|f| f.origin);
        if let Some(o) = origin {
            // A write here after this fill is later than the version it brings.
            self.observe_stamp(o.stamp_ns, false);
        }
        if opts.durable && opts.ephemeral {
            return Err(CommitError::InvalidOptions(
                "an object cannot be both durable (fsynced to disk) and ephemeral (never on disk)",
            ));
        }
        let to_mem = self.first_tier(size, &opts) == Kind::Memory;
        if opts.ephemeral && !to_mem {
            return Err(self
                .no_space("ephemeral objects need the memory tier, which is disabled".into())
                .into());
        }
        let mut meta = ObjectMeta {
            key: key.into(),
            // Allocated once there is room.
            version: 0,
            size,
            // The label's (the time the file is written); publishing replaces it with
            // the commit stamp, taken under the catalog lock. A fill's is its origin's.
            mtime_ns: origin.map_or_else(super::now_ns, |o| o.stamp_ns),
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
            filled: origin.is_some(),
            tier: Placement::Memory,
            dirty: false,
        };
        // A fill that would be refused is refused before it evicts anything to make room
        // and before its bytes are copied; the retired bans may be many, and are matched
        // here, outside the catalog lock.
        let fill = match fill {
            Some(f) => {
                let seen = self.fill_bans.newest();
                self.fill_refusal(&meta, f.fence, 0)?;
                Some(FillFrom {
                    bans_seen: seen,
                    ..f
                })
            }
            None => None,
        };
        // A fill is optional: one that finds no room is refused without counting as a
        // PUT refused (`no_space`), and its failing for want of space on the filesystem
        // does not mark the tier full (a PUT of the usual size may well fit).
        let optional = fill.is_some();
        let room = |kind: Kind| {
            if optional {
                self.make_room_quietly(kind, size)
            } else {
                self.make_room(kind, size)
            }
        };
        let mut kind = if to_mem { Kind::Memory } else { Kind::Disk };
        // Make room first, so a full tier fails before any copying. A
        // persistent object that finds the memory tier full of pinned
        // objects goes to disk instead; only ephemeral ones need memory.
        if let Err(e) = room(kind) {
            if kind == Kind::Memory && !opts.ephemeral {
                tracing::debug!(error = %display_chain(&e), "memory tier full; writing to disk");
                kind = Kind::Disk;
                room(kind)?;
            } else {
                return Err(e.into());
            }
        }
        let durable_here = opts.durable && kind == Kind::Disk;
        let version = self.alloc_version()?;
        meta.version = version;
        // The file's label (label.rs): its record, the checksum filled in as written.
        let mut label = Vec::new();
        crate::journal::encode_put_payload(&meta, &mut label).map_err(|e| match e {
            crate::journal::EncodeError::MetaTooLarge(size) => CommitError::MetaTooLarge {
                size,
                max: crate::MAX_META_LEN,
            },
            crate::journal::EncodeError::InvalidKey(len) => StoreError::InvalidKey { len }.into(),
        })?;
        // A persistent PUT the memory tier could not take goes to disk: room, then the file.
        let install = Install {
            src,
            key,
            version,
            size,
            durable: durable_here,
            label: &label,
            optional,
        };
        let to_disk = || -> Result<u64, StoreError> {
            room(Kind::Disk)?;
            let install = Install {
                durable: false,
                ..install
            };
            self.tier(Kind::Disk)
                .install_copy(&self.cfg, &self.poison, install)
        };
        meta.checksum = match self
            .tier(kind)
            .install_copy(&self.cfg, &self.poison, install)
        {
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
                to_disk()?
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(o) = origin.filter(|o| o.checksum != meta.checksum) {
            self.tier(kind).unlink_object(key, version);
            return Err(CommitError::ChecksumMismatch {
                expected: o.checksum,
                actual: meta.checksum,
            });
        }
        let tier = self.tier(kind);
        meta.tier = match kind {
            Kind::Memory => Placement::Memory,
            Kind::Disk => Placement::Disk,
        };
        meta.dirty = kind == Kind::Memory && !opts.ephemeral;
        let left = match self.publish_new(kind, &mut meta, durable_here, opts.condition, fill) {
            Ok(left) => left,
            // The memory tier's journal append found its tmpfs full: nothing was
            // published there, so the object goes to disk instead.
            Err(e @ StoreError::NoSpace(_)) if kind == Kind::Memory && !opts.ephemeral => {
                tier.unlink_object(key, version);
                self.mem_write_failed(&e);
                kind = Kind::Disk;
                to_disk()?;
                meta.tier = Placement::Disk;
                meta.dirty = false;
                match self.publish_new(kind, &mut meta, false, opts.condition, fill) {
                    Ok(left) => left,
                    Err(e) => {
                        self.tier(Kind::Disk).unlink_object(key, version);
                        return Err(e.into());
                    }
                }
            }
            Err(e) => {
                tier.unlink_object(key, version);
                return Err(e.into());
            }
        };
        bump(&self.counters.puts);
        if meta.dirty {
            self.enqueue_flush(meta.key.clone(), version);
        } else if opts.durable && self.mem_enabled() && size <= self.live.direct_to_disk_threshold()
        {
            // Freshly written objects are likely to be read: keep a clean
            // copy in memory too.
            self.enqueue(Job::Promote(meta.key.clone(), version));
        }
        let meta = Arc::new(meta);
        if origin.is_none() && !meta.ephemeral {
            if let Some(cold) = self.cold.get() {
                cold.committed(&meta);
            }
        }
        Ok((meta, left))
    }
}

/// Where a fill's version came from, and its fence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FillFrom<'a> {
    pub(crate) origin: Origin,
    pub(crate) fence: Option<&'a FenceState>,
    /// The newest retired ban kept for fills that the commit matched the version
    /// against before taking the catalog lock (0: none yet).
    pub(crate) bans_seen: u64,
}

/// The versions of one key a commit superseded: their files are still on their tiers
/// (nothing names them any more) until [`Leftovers::unlink`].
#[derive(Debug)]
pub(crate) struct Leftovers {
    hash: u128,
    versions: [(Kind, u64); 2],
    len: usize,
}

impl Leftovers {
    fn new(key: &[u8]) -> Leftovers {
        Leftovers {
            hash: crate::layout::key_hash(key),
            versions: [(Kind::Memory, 0); 2],
            len: 0,
        }
    }

    fn push(&mut self, kind: Kind, version: u64) {
        self.versions[self.len] = (kind, version);
        self.len += 1;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn unlink(&self, inner: &Inner) {
        for &(kind, version) in &self.versions[..self.len] {
            inner.tier(kind).unlink_hashed(self.hash, version);
        }
    }
}

/// The files of the versions a commit superseded, unlinked when this is dropped
/// ([`Staging::commit_then`](crate::Staging::commit_then)). Until then they take their
/// space on their tier, and a reader that opened one before the commit point can still
/// open it again; no lookup finds them. A crash before the drop leaves them to the
/// orphan sweep at the next open (docs/STORAGE.md, "Commit protocol", step 7).
#[must_use = "dropping it unlinks the superseded files at once; keep it until the reply is sent"]
pub struct Superseded {
    inner: Option<Arc<Inner>>,
    left: Leftovers,
}

impl Superseded {
    pub(super) fn new(inner: &Arc<Inner>, left: Leftovers) -> Superseded {
        Superseded {
            inner: (!left.is_empty()).then(|| inner.clone()),
            left,
        }
    }

    /// Whether dropping this unlinks anything.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }
}

impl std::fmt::Debug for Superseded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Superseded")
            .field("versions", &&self.left.versions[..self.left.len])
            .finish()
    }
}

impl Drop for Superseded {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            self.left.unlink(inner);
        }
    }
}
