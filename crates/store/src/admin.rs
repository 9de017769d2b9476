//! What the management API needs from the store beyond the object path: listing with
//! cursor pagination, one object's full record, and explicit moves between tiers.
//!
//! Listing walks the tiers' index slots (memory, then disk), holding the index read
//! locks for at most [`LIST_SCAN_CHUNK`] slots at a time, so a listing never keeps
//! writers out for long however big the store is.

use crate::index::LIST_SCAN_CHUNK;
use crate::index::SLOT_DIRTY;
use crate::meta::{ObjectMeta, Tier as Placement};
use crate::store::{now_secs, Store};
use crate::tier::Kind;
use crate::{validate_key, StoreError};

/// Where a listing resumes: a tier and a slot in its index. Opaque to users; the server
/// renders it as text ([`ListCursor::encode`], [`ListCursor::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    disk: bool,
    slot: u32,
}

impl ListCursor {
    /// The text form: `m:<slot>` or `d:<slot>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", if self.disk { 'd' } else { 'm' }, self.slot)
    }

    /// Parses [`ListCursor::encode`]'s output; `None` for anything else.
    pub fn decode(s: &str) -> Option<ListCursor> {
        let (t, n) = s.split_once(':')?;
        let disk = match t {
            "m" => false,
            "d" => true,
            _ => return None,
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ListCursor {
            disk,
            slot: n.parse().ok()?,
        })
    }
}

/// One object as the management API shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The current version's metadata; `tier` and `dirty` say where it lives.
    pub meta: ObjectMeta,
    /// Unix seconds of the last GET since the store was opened (not persisted).
    pub last_access: Option<u64>,
    /// Whether the current version has a copy on disk.
    pub on_disk: bool,
}

/// A page of [`Store::list`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ListPage {
    /// The objects, in index order.
    pub objects: Vec<ObjectInfo>,
    /// Where to resume; `None` once every slot has been examined.
    pub next: Option<ListCursor>,
}

/// What [`Store::demote`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Demoted {
    /// The memory copy was dropped (after writing it to disk if it was dirty).
    Done,
    /// The object had no memory copy.
    NotInMemory,
    /// The object is ephemeral: it has nowhere else to go, so it stays.
    Ephemeral,
    /// No such object.
    Missing,
}

impl Store {
    /// Lists up to `limit` live (unexpired) objects whose key starts with `prefix`,
    /// resuming at `cursor` (`None` = from the start). Objects present throughout a
    /// whole listing are returned exactly once; objects added, replaced or removed
    /// meanwhile may be missed or (if they move between tiers) seen twice.
    pub fn list(&self, prefix: &[u8], cursor: Option<ListCursor>, limit: usize) -> ListPage {
        let inner = &*self.inner;
        let now = now_secs();
        let limit = limit.max(1);
        let mut cur = cursor.unwrap_or(ListCursor {
            disk: false,
            slot: 0,
        });
        let mut objects = Vec::new();
        loop {
            // One chunk under both read locks (memory, then disk: the order `len` uses).
            let mem = inner.tier(Kind::Memory).index.read();
            let disk = inner.tier(Kind::Disk).index.read();
            let (idx, other) = if cur.disk {
                (&disk, &mem)
            } else {
                (&mem, &disk)
            };
            let end = idx.slot_count();
            let stop = (cur.slot as usize).saturating_add(LIST_SCAN_CHUNK).min(end);
            let mut slot = cur.slot as usize;
            while slot < stop && objects.len() < limit {
                let id = slot as u32;
                slot += 1;
                let Some(e) = idx.by_id(id) else { continue };
                if !e.key().starts_with(prefix) || e.is_expired_at(now) {
                    continue;
                }
                let info = if cur.disk {
                    // Listed with the memory tier already.
                    if other.get(e.key()).is_some() {
                        continue;
                    }
                    let mut m = e.meta();
                    m.tier = Placement::Disk;
                    ObjectInfo {
                        meta: m,
                        last_access: idx.last_access(id),
                        on_disk: true,
                    }
                } else {
                    let flags = idx.flags(id);
                    let mut m = e.meta();
                    let disk_copy = other.get_with_flags(e.key());
                    mem_placement(&mut m, flags);
                    let on_disk = disk_copy.is_some_and(|(d, _)| d.version() == m.version);
                    let last_access = max_opt(
                        idx.last_access(id),
                        other.id(e.key()).and_then(|d| other.last_access(d)),
                    );
                    ObjectInfo {
                        meta: m,
                        last_access,
                        on_disk,
                    }
                };
                if inner.bans.covers_meta(&info.meta) {
                    continue;
                }
                objects.push(info);
            }
            cur.slot = slot as u32;
            let tier_done = slot >= end;
            drop((mem, disk));
            if tier_done {
                if cur.disk {
                    return ListPage {
                        objects,
                        next: None,
                    };
                }
                cur = ListCursor {
                    disk: true,
                    slot: 0,
                };
            }
            if objects.len() >= limit {
                return ListPage {
                    objects,
                    next: Some(cur),
                };
            }
        }
    }

    /// The current (unexpired) version of `key` with everything the management API shows.
    pub fn info(&self, key: &[u8]) -> Result<Option<ObjectInfo>, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        let mem = inner.tier(Kind::Memory).index.read();
        let disk = inner.tier(Kind::Disk).index.read();
        let now = now_secs();
        let disk_id = disk.id(key);
        let disk_last = disk_id.and_then(|d| disk.last_access(d));
        let info = if let Some(id) = mem.id(key) {
            let e = mem.by_id(id).expect("id from the table");
            let mut m = e.meta();
            mem_placement(&mut m, mem.flags(id));
            let on_disk = disk_id
                .and_then(|d| disk.by_id(d))
                .is_some_and(|d| d.version() == m.version);
            ObjectInfo {
                meta: m,
                last_access: max_opt(mem.last_access(id), disk_last),
                on_disk,
            }
        } else if let Some(d) = disk_id {
            let mut m = disk.by_id(d).expect("id from the table").meta();
            m.tier = Placement::Disk;
            ObjectInfo {
                meta: m,
                last_access: disk_last,
                on_disk: true,
            }
        } else {
            return Ok(None);
        };
        let banned = inner.bans.covers_meta(&info.meta);
        Ok((!info.meta.is_expired_at(now) && !banned).then_some(info))
    }

    /// Copies `key`'s disk version into the memory tier (a clean copy), making room
    /// there first. Returns false if there was nothing to do: no such object, already
    /// in memory, no memory tier, or too large for it (over the direct-to-disk
    /// threshold or the memory capacity).
    pub fn promote(&self, key: &[u8]) -> Result<bool, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        let Some(version) = inner
            .tier(Kind::Disk)
            .index
            .read()
            .get(key)
            .map(|e| e.version())
        else {
            return Ok(false);
        };
        inner.promote(key, version)
    }

    /// Drops `key`'s memory copy, writing it to disk first if it is dirty. Ephemeral
    /// objects stay (they have no other tier). Not counted as an eviction.
    pub fn demote(&self, key: &[u8]) -> Result<Demoted, StoreError> {
        validate_key(key)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        // A concurrent PUT may replace the version between the flush and the removal:
        // try a few times, as the object path's GET does.
        for _ in 0..4 {
            let found = {
                let mem = inner.tier(Kind::Memory).index.read();
                mem.id(key).map(|id| {
                    let e = mem.by_id(id).expect("id from the table");
                    (e.version(), mem.flags(id) & SLOT_DIRTY != 0, e.ephemeral())
                })
            };
            let Some((version, dirty, ephemeral)) = found else {
                return Ok(if inner.tier(Kind::Disk).index.read().get(key).is_some() {
                    Demoted::NotInMemory
                } else {
                    Demoted::Missing
                });
            };
            if ephemeral {
                return Ok(Demoted::Ephemeral);
            }
            if dirty {
                inner.flush(key, version)?;
            }
            let removed = {
                let _c = inner.catalog.lock();
                // Only a clean copy whose version is on disk may go.
                let on_disk = inner
                    .tier(Kind::Disk)
                    .index
                    .read()
                    .get(key)
                    .is_some_and(|d| d.version() == version);
                let clean = inner
                    .tier(Kind::Memory)
                    .index
                    .read()
                    .get_with_flags(key)
                    .is_some_and(|(e, f)| e.version() == version && f & SLOT_DIRTY == 0);
                if !(on_disk && clean) {
                    None
                } else {
                    let r = inner.tier(Kind::Memory).remove(
                        &inner.cfg,
                        &inner.poison,
                        key,
                        Some(version),
                        false,
                        inner.reserve_upto(),
                    )?;
                    if let Some((id, _)) = &r {
                        inner.policy.lock().of(Kind::Memory).remove(*id as u64);
                    }
                    r
                }
            };
            if removed.is_some() {
                inner.tier(Kind::Memory).unlink_object(key, version);
                return Ok(Demoted::Done);
            }
        }
        Err(StoreError::Io {
            context: "demoting kept racing concurrent writes to the key; try again".into(),
            source: std::io::Error::other("concurrent writes"),
        })
    }

    /// Whether the memory tier is enabled (it cannot change at runtime).
    pub fn memory_tier_enabled(&self) -> bool {
        self.inner.mem_enabled()
    }
}

/// Sets `tier` and `dirty` of a memory-tier entry's metadata, as `find` does.
fn mem_placement(m: &mut ObjectMeta, flags: u8) {
    m.dirty = flags & SLOT_DIRTY != 0 && !m.ephemeral;
    m.tier = if m.dirty || m.ephemeral {
        Placement::Memory
    } else {
        Placement::Both
    };
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for c in [
            ListCursor {
                disk: false,
                slot: 0,
            },
            ListCursor {
                disk: true,
                slot: u32::MAX,
            },
        ] {
            assert_eq!(ListCursor::decode(&c.encode()), Some(c));
        }
        for bad in [
            "",
            "m",
            "m:",
            "x:1",
            "d:-1",
            "d:+1",
            "d:99999999999",
            "m:1:2",
            "m: 1",
        ] {
            assert_eq!(ListCursor::decode(bad), None, "{bad:?}");
        }
    }
}
