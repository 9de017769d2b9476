//! What happens to a damaged or vanished object file: logged, counted, dropped durably,
//! moved to `lost+found/`; and a memory tier that cannot take a write.

use super::*;

impl Inner {
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
                    reflush = self
                        .tier(Kind::Memory)
                        .set_flags_if(key, version, SLOT_DIRTY);
                }
                Kind::Memory if flags & SLOT_DIRTY != 0 => {
                    let older = self
                        .tier(Kind::Disk)
                        .index
                        .read()
                        .get(key)
                        .map(Entry::version)
                        .filter(|&d| d < version);
                    if let Some(d) = older {
                        match self.tier(Kind::Disk).remove(
                            &self.cfg,
                            &self.poison,
                            key,
                            Some(d),
                            true,
                            self.reserve_upto(),
                        ) {
                            Ok(Some((id, _))) => {
                                self.policy.lock().of(Kind::Disk).remove(id as u64);
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
    pub(super) fn mem_write_failed(&self, e: &StoreError) {
        let n = self
            .counters
            .mem_write_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        if matches!(e, StoreError::NoSpace(_)) {
            tracing::warn!(error = %display_chain(e), "the memory tier's filesystem is full; this PUT goes to the disk tier");
        } else if n == 0 {
            tracing::error!(dir = %self.tier(Kind::Memory).dirs.path.display(), error = %display_chain(e), "cannot write to the memory tier; PUTs go to the disk tier (ephemeral PUTs fail) until the memory tier is restored by a restart");
        } else {
            tracing::debug!(error = %display_chain(e), "memory tier write failed; writing to disk");
        }
    }

    pub(super) fn no_space(&self, msg: String) -> StoreError {
        bump(&self.counters.no_space);
        StoreError::NoSpace(msg)
    }
}
