//! Opening the store: both tiers recovered (`super::open_tier`), reconciled, and the
//! background threads started. The store itself never calls recovery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::ban::Bans;
use crate::config::StoreConfig;
use crate::error::{display_chain, io_ctx, OpenError};
use crate::index::{Entry, SLOT_DIRTY};
use crate::layout;
use crate::policy::S3Fifo;
use crate::store::*;
use crate::sync::Poison;
use crate::tier::{skipped_for_space, Kind};
use crate::tuning::{Live, Tuning};

/// Recovery of both tiers and their reconciliation.
fn open_inner(cfg: StoreConfig) -> Result<Inner, OpenError> {
    let poison = Poison::default();
    let disk = super::open_tier(Kind::Disk, &cfg.data_dir, &poison)?;
    let (store_id, disk_had_id) = crate::tier::disk_identity(&disk.tier, &poison)?;
    let disk_new = disk.max_version == 0 && disk.max_reserve == 0;
    let mem_dir = cfg.resolved_mem_dir();
    // Another store's memory tier is never imported (docs/STORAGE.md, "Tier identity").
    crate::tier::admit_mem_dir(&mem_dir, store_id, disk_had_id, disk_new)?;
    let mem = super::open_tier(Kind::Memory, &mem_dir, &poison)?;
    let fs = mem.tier.filesystem;
    if !fs.in_ram && cfg.mem_capacity_bytes > 0 && cfg.mem_max_objects > 0 {
        tracing::warn!(
            dir = %mem_dir.display(),
            filesystem = fs.name,
            "the memory tier is not in RAM: its directory is on {}, so every object it holds \
             is written to that disk and PUTs are several times slower; point --mem-dir at \
             a tmpfs (such as /dev/shm)",
            fs.name
        );
    } else if fs.huge_pages == Some("never") && cfg.mem_capacity_bytes > 0 {
        tracing::info!(
            dir = %mem_dir.display(),
            "the memory tier's tmpfs has no huge pages (huge=never, the default): objects \
             of several MiB are written and read several times slower than on a tmpfs \
             mounted with huge=within_size (docs/ADMIN.md, \"Huge pages for the memory tier\")"
        );
    }
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
    let policy = Policies([
        S3Fifo::with_config(
            tuning.mem_capacity_bytes,
            tuning.mem_max_objects,
            tuning.mem_eviction,
        ),
        S3Fifo::with_config(
            tuning.disk_capacity_bytes,
            tuning.disk_max_objects,
            tuning.disk_eviction,
        ),
    ]);
    let inner = Inner {
        cfg,
        live: Live::new(&tuning),
        tiers: [mem_tier, disk_tier],
        catalog: Mutex::new(()),
        policy: Mutex::new(policy),
        next_version: AtomicU64::new(next_version),
        // Nothing may be handed out before a new RESERVE is durable.
        reserved_upto: AtomicU64::new(next_version - 1),
        poison,
        closed: AtomicBool::new(false),
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        stop_lock: Mutex::new(()),
        stop_cv: Condvar::new(),
        jobs: Mutex::new(Jobs::default()),
        jobs_cv: Condvar::new(),
        moves: Mutex::new(()),
        bans: Bans::default(),
        fill_bans: Default::default(),
        fill_floor: Default::default(),
        clock: AtomicU64::new(0),
        cold: std::sync::OnceLock::new(),
        tombstones: Mutex::new(Default::default()),
        fences: Default::default(),
    };
    // Bans first: nothing is served before they are in force.
    inner.load_bans()?;

    // Disk objects written after the last checkpoint of an unclean run.
    for (key, version) in super::failed_verification(inner.tier(Kind::Disk), &to_verify) {
        if inner.remove_from_tier(Kind::Disk, &key, version)?.is_some() {
            inner.tier(Kind::Disk).unlink_object(&key, version);
            inner
                .counters
                .recovery_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    // Reconcile: the memory tier may hold newer (dirty) versions, the same
    // versions (clean copies) or stale ones left behind by a crash.
    let mem_entries: Vec<(Box<[u8]>, u64, bool)> = inner
        .tier(Kind::Memory)
        .index
        .read()
        .iter()
        .map(|e| (Box::from(e.key()), e.version(), e.ephemeral()))
        .collect();
    let mut dirty = Vec::new();
    for (key, version, ephemeral) in mem_entries {
        let disk_version = inner
            .tier(Kind::Disk)
            .index
            .read()
            .get(&key)
            .map(Entry::version);
        match disk_version {
            Some(d) if d > version => {
                // Stale memory copy.
                inner.remove_from_tier(Kind::Memory, &key, version)?;
                inner.tier(Kind::Memory).unlink_object(&key, version);
            }
            Some(d) if d == version => {}
            _ => {
                if !ephemeral {
                    let mut idx = inner.tier(Kind::Memory).index.write();
                    if let Some(id) = idx.id(&key) {
                        idx.set_flags(id, SLOT_DIRTY);
                    }
                    dirty.push((key, version));
                }
            }
        }
    }
    // The clock resumes above every recovered object's stamp (and every ban's).
    for tier in inner.tiers().iter().rev() {
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
    for tier in inner.tiers().iter().rev() {
        let mut j = tier.journal.lock();
        if j.needs_compaction(inner.cfg.compact_min_journal_bytes) {
            let r = tier.compact_locked(&inner.poison, &mut j, inner.reserve_upto());
            skipped_for_space(tier, "compacting the journal at open", r)?;
        }
    }
    for tier in inner.tiers().iter().rev() {
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
                    for tier in bg.tiers().iter().rev() {
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
}
