//! `Store::stats` and the counters and gauges it returns.

use super::*;

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
    /// The filesystem the tier's directory is on (`tmpfs`, `ext4`, ..., or `unknown`).
    pub filesystem: &'static str,
    /// Whether that filesystem keeps its files in RAM (tmpfs, ramfs, hugetlbfs).
    pub in_ram: bool,
    /// For a filesystem in RAM, when its files get huge (2 MiB) pages: a tmpfs's
    /// `huge=` mount option (`never`, `always`, `within_size`, `advise`; the system's
    /// `shmem_enabled` `deny` or `force` overrides it), `always` on hugetlbfs, `never`
    /// on ramfs; `None` on a disk filesystem. Objects of several MiB are written and
    /// read several times faster on huge pages (docs/ADMIN.md).
    pub huge_pages: Option<&'static str>,
    /// Small objects whose bytes the tier keeps in the daemon's memory
    /// ([`StoreConfig::body_cache_bytes`](crate::StoreConfig::body_cache_bytes)).
    pub body_cache_objects: u64,
    /// Their bytes.
    pub body_cache_bytes: u64,
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
    /// Local bans retired with a cold tier attached, kept to refuse the fills they
    /// cover (at most [`crate::ban::MAX_FILL_BANS`]).
    pub bans_kept_for_fills: u64,
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

impl Store {
    /// Snapshot of counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let (journal_bytes, journal_live_bytes) = {
            let j = inner.tier(Kind::Disk).journal.lock();
            (j.len, j.live_bytes)
        };
        let dirty = inner
            .tier(Kind::Memory)
            .index
            .read()
            .iter_ids()
            .filter(|(_, e, f)| f & SLOT_DIRTY != 0 && !e.ephemeral())
            .count() as u64;
        let (mem_cap, disk_cap) = {
            let mut p = inner.policy.lock();
            (p.of(Kind::Memory).capacity(), p.of(Kind::Disk).capacity())
        };
        let tier_stats = |t: &Tier, cap: (u64, u64), hits: u64, ev: u64| {
            let (body_objects, body_bytes) = t.body_cache_usage();
            TierStats {
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
                filesystem: t.filesystem.name,
                in_ram: t.filesystem.in_ram,
                huge_pages: t.filesystem.huge_pages,
                body_cache_objects: body_objects as u64,
                body_cache_bytes: body_bytes,
            }
        };
        let hits = inner.tiers().iter().map(|t| load(&t.hits)).sum();
        StoreStats {
            objects: self.len() as u64,
            bytes: self.bytes(),
            memory: tier_stats(
                inner.tier(Kind::Memory),
                mem_cap,
                load(&inner.tier(Kind::Memory).hits),
                load(&inner.tier(Kind::Memory).evictions),
            ),
            disk: tier_stats(
                inner.tier(Kind::Disk),
                disk_cap,
                load(&inner.tier(Kind::Disk).hits),
                load(&inner.tier(Kind::Disk).evictions),
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
            compactions: load(&inner.tier(Kind::Disk).compactions),
            orphans_swept: load(&c.orphans_swept),
            recovery_dropped: load(&c.recovery_dropped),
            poisoned: self.is_poisoned(),
            bans_active: inner.bans.len() as u64,
            bans_added: load(&inner.bans.added),
            bans_kept_for_fills: inner.fill_bans.len() as u64,
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

    /// Live objects (each key once).
    pub fn len(&self) -> usize {
        let inner = &*self.inner;
        let mem = inner.tier(Kind::Memory).index.read();
        let disk = inner.tier(Kind::Disk).index.read();
        disk.len() + mem.iter().filter(|e| disk.get(e.key()).is_none()).count()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total size of live objects in bytes (each key once).
    pub fn bytes(&self) -> u64 {
        let inner = &*self.inner;
        let mem = inner.tier(Kind::Memory).index.read();
        let disk = inner.tier(Kind::Disk).index.read();
        let mut b: u64 = disk.iter().map(Entry::size).sum();
        for e in mem.iter() {
            match disk.get(e.key()) {
                Some(d) => b = b - d.size() + e.size(),
                None => b += e.size(),
            }
        }
        b
    }

    /// Whether the disk tier's last write failed because its filesystem was full and no
    /// commit to it has succeeded since (cheap: one atomic load).
    pub fn disk_full(&self) -> bool {
        self.inner.tier(Kind::Disk).full.load(Ordering::Relaxed)
    }

    /// Whether a failed sync poisoned the store (writes refused, reads work).
    pub fn is_poisoned(&self) -> bool {
        self.inner.poison.is_set()
    }
}
