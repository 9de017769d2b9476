//! Store configuration.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Configuration for [`Store::open`](crate::Store::open).
///
/// Construct it with [`StoreConfig::new`] and adjust fields as needed; the
/// struct is `#[non_exhaustive]` so that new options can be added later.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Data directory (the disk tier). Created (with parents) if it does not
    /// exist. No default: it is the argument of [`StoreConfig::new`].
    pub data_dir: PathBuf,
    /// Memory tier directory. It should be on tmpfs: objects there live in
    /// RAM and survive a daemon restart (not a reboot).
    /// Default = None: `/dev/shm/objmapper-<hash of the data dir>`, or
    /// `<data_dir>/mem` (with a warning) when `/dev/shm` does not exist.
    pub mem_dir: Option<PathBuf>,
    /// Largest object size accepted by a commit, in bytes.
    /// Default = 1 GiB (`1 << 30`).
    pub max_object_size: u64,
    /// Memory tier capacity in bytes. 0 disables the memory tier (every
    /// PUT goes to disk; ephemeral PUTs get NoSpace).
    /// Default = 256 MiB.
    pub mem_capacity_bytes: u64,
    /// Memory tier capacity in objects. Default = 1,000,000.
    pub mem_max_objects: u64,
    /// Disk tier capacity in bytes. Default = 64 GiB.
    pub disk_capacity_bytes: u64,
    /// Disk tier capacity in objects. Default = 10,000,000.
    pub disk_max_objects: u64,
    /// Objects larger than this skip the memory tier and are written
    /// straight to disk. Default = 16 MiB.
    pub direct_to_disk_threshold: u64,
    /// An object read from disk is promoted into memory once the disk
    /// tier's policy has counted this many hits on it since it was admitted
    /// (or at once if the memory tier evicted it recently).
    /// Default = 1 (the second read).
    pub promote_after_hits: u8,
    /// How often the background thread looks for expired objects.
    /// Default = 5 s.
    pub expiry_sweep_interval: Duration,
    /// How long a dirty memory object waits before it is written behind to disk. A key
    /// rewritten within the delay is written once, not once per version, and a burst of
    /// PUTs is not doubled by disk writes while it lasts. The cost: a reboot (not a
    /// daemon crash: the memory tier survives that) can lose up to this much more of the
    /// most recent default-durability writes, on top of the checkpoint interval (see
    /// docs/STORAGE.md). 0 writes behind at once. Default = 1 s.
    pub write_behind_delay: Duration,
    /// How often the ban lurker looks at the active bans: each pass walks the indexes,
    /// removes the objects the bans cover and retires them (see docs/STORAGE.md, "Bans").
    /// Default = 1 s.
    pub ban_lurker_interval: Duration,
    /// Bytes per second the background scrubber reads to re-verify every object of every
    /// tier against its recorded size and xxh3-64 (docs/STORAGE.md, "The scrubber"); a
    /// damaged version is dropped as a read would drop it. 0 turns the scrubber off
    /// ([`Store::verify_all`](crate::Store::verify_all) still works on demand).
    /// Default = 16 MiB/s ([`StoreConfig::DEFAULT_SCRUB_RATE_BYTES`]).
    pub scrub_rate_bytes: u64,
    /// How long after open the scrubber's first pass starts, so that a restart's warm-up
    /// (and a test's damage done by hand) does not race it. Default = 60 s.
    pub scrub_start_delay: Duration,
    /// Most active bans; [`Store::ban`](crate::Store::ban) refuses more until the lurker
    /// has retired some. Each ban rewrites the ban file, so a ban costs O(active bans).
    /// Default = 10 000 ([`crate::MAX_BANS`]).
    pub max_bans: usize,
    /// Open object files each tier keeps cached for reads
    /// ([`Store::get_shared`](crate::Store::get_shared)): one fd each. A server sizes it
    /// to its RLIMIT_NOFILE. Default = 4096 ([`crate::SHARED_FDS_MAX`]).
    pub open_files_max: usize,
    /// Bytes each tier keeps of small objects' contents (at most
    /// [`SMALL_BODY_MAX`](crate::SMALL_BODY_MAX) each) after their first read
    /// ([`Store::read_body`](crate::Store::read_body)), so later inline reads of them
    /// open and read nothing. 0 keeps none. Default = 16 MiB
    /// ([`StoreConfig::DEFAULT_BODY_CACHE_BYTES`]).
    pub body_cache_bytes: u64,
    /// Journal compaction only runs once the journal is at least this large
    /// (and more than twice the size of its live records).
    /// Default = 4 MiB (`4 << 20`).
    pub compact_min_journal_bytes: u64,
    /// Whether [`Store::open`](crate::Store::open) starts a background thread
    /// that deletes unreferenced object files left by an earlier run (see
    /// [`Store::sweep_orphans`](crate::Store::sweep_orphans)).
    /// Default = `true`.
    pub sweep_orphans_on_open: bool,
    /// Fault injection for tests: consulted before disk-tier writes and
    /// syncs. Default = None.
    pub faults: Option<Arc<dyn FaultInjector>>,
}

/// A point in the disk tier's I/O where a [`FaultInjector`] may fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultPoint {
    /// Writing object bytes into a disk-tier file.
    ObjectWrite,
    /// Appending a record to the disk tier's journal.
    JournalAppend,
    /// fsync/fdatasync/syncfs of disk-tier files.
    Sync,
}

/// Injects I/O errors into the disk tier (the redb-style crash and fault
/// tests use it). Return `Err` to make the operation at `point` fail with
/// that error instead of running.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// Called before the operation at `point`.
    fn check(&self, point: FaultPoint) -> io::Result<()>;
}

impl StoreConfig {
    /// Default for [`StoreConfig::max_object_size`]: 1 GiB.
    pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1 << 30;
    /// Default for [`StoreConfig::scrub_rate_bytes`]: 16 MiB/s.
    pub const DEFAULT_SCRUB_RATE_BYTES: u64 = 16 << 20;
    /// Default for [`StoreConfig::body_cache_bytes`]: 16 MiB per tier.
    pub const DEFAULT_BODY_CACHE_BYTES: u64 = 16 << 20;
    /// Default for [`StoreConfig::compact_min_journal_bytes`]: 4 MiB.
    pub const DEFAULT_COMPACT_MIN_JOURNAL_BYTES: u64 = 4 << 20;
    /// Default for [`StoreConfig::mem_capacity_bytes`]: 256 MiB.
    pub const DEFAULT_MEM_CAPACITY_BYTES: u64 = 256 << 20;
    /// Default for [`StoreConfig::mem_max_objects`].
    pub const DEFAULT_MEM_MAX_OBJECTS: u64 = 1_000_000;
    /// Default for [`StoreConfig::disk_capacity_bytes`]: 64 GiB.
    pub const DEFAULT_DISK_CAPACITY_BYTES: u64 = 64 << 30;
    /// Default for [`StoreConfig::disk_max_objects`].
    pub const DEFAULT_DISK_MAX_OBJECTS: u64 = 10_000_000;
    /// Default for [`StoreConfig::direct_to_disk_threshold`]: 16 MiB.
    pub const DEFAULT_DIRECT_TO_DISK_THRESHOLD: u64 = 16 << 20;

    /// A configuration for `data_dir` with every other field at its default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            mem_dir: None,
            max_object_size: Self::DEFAULT_MAX_OBJECT_SIZE,
            mem_capacity_bytes: Self::DEFAULT_MEM_CAPACITY_BYTES,
            mem_max_objects: Self::DEFAULT_MEM_MAX_OBJECTS,
            disk_capacity_bytes: Self::DEFAULT_DISK_CAPACITY_BYTES,
            disk_max_objects: Self::DEFAULT_DISK_MAX_OBJECTS,
            direct_to_disk_threshold: Self::DEFAULT_DIRECT_TO_DISK_THRESHOLD,
            promote_after_hits: 1,
            expiry_sweep_interval: Duration::from_secs(5),
            write_behind_delay: Duration::from_secs(1),
            ban_lurker_interval: Duration::from_secs(1),
            scrub_rate_bytes: Self::DEFAULT_SCRUB_RATE_BYTES,
            scrub_start_delay: Duration::from_secs(60),
            max_bans: crate::MAX_BANS,
            open_files_max: crate::SHARED_FDS_MAX,
            body_cache_bytes: Self::DEFAULT_BODY_CACHE_BYTES,
            compact_min_journal_bytes: Self::DEFAULT_COMPACT_MIN_JOURNAL_BYTES,
            sweep_orphans_on_open: true,
            faults: None,
        }
    }

    /// Puts the memory tier in `<data_dir>/mem`, so one directory holds
    /// everything (tests, and deployments whose data directory is on
    /// tmpfs). It is only in RAM if the data directory is.
    pub fn with_mem_dir_inside(mut self) -> Self {
        self.mem_dir = Some(self.data_dir.join("mem"));
        self
    }

    /// Disables the memory tier: every PUT is written to disk, and
    /// ephemeral PUTs are refused with NoSpace.
    pub fn without_memory_tier(mut self) -> Self {
        self.mem_capacity_bytes = 0;
        self.mem_max_objects = 0;
        self
    }

    /// The memory tier directory this configuration resolves to.
    pub fn resolved_mem_dir(&self) -> PathBuf {
        if let Some(d) = &self.mem_dir {
            return d.clone();
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let canon =
                std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
            let h = xxhash_rust::xxh3::xxh3_64(canon.as_os_str().as_encoded_bytes());
            shm.join(format!("objmapper-{h:016x}"))
        } else {
            self.data_dir.join("mem")
        }
    }

    pub(crate) fn fault(&self, point: FaultPoint) -> io::Result<()> {
        match &self.faults {
            Some(f) => f.check(point),
            None => Ok(()),
        }
    }
}
