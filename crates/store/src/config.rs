//! Store configuration.

use std::path::PathBuf;

/// Configuration for [`Store::open`](crate::Store::open).
///
/// Construct it with [`StoreConfig::new`] and adjust fields as needed; the
/// struct is `#[non_exhaustive]` so that new options can be added later.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Data directory. Created (with parents) if it does not exist.
    /// No default: it is the argument of [`StoreConfig::new`].
    pub data_dir: PathBuf,
    /// Largest object size accepted by a commit, in bytes.
    /// Default = 1 GiB (`1 << 30`).
    pub max_object_size: u64,
    /// Journal compaction only runs once the journal is at least this large
    /// (and more than twice the size of its live records).
    /// Default = 4 MiB (`4 << 20`).
    pub compact_min_journal_bytes: u64,
    /// Whether [`Store::open`](crate::Store::open) starts a background thread
    /// that deletes unreferenced object files left by an earlier run (see
    /// [`Store::sweep_orphans`](crate::Store::sweep_orphans)).
    /// Default = `true`.
    pub sweep_orphans_on_open: bool,
}

impl StoreConfig {
    /// Default for [`StoreConfig::max_object_size`]: 1 GiB.
    pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1 << 30;
    /// Default for [`StoreConfig::compact_min_journal_bytes`]: 4 MiB.
    pub const DEFAULT_COMPACT_MIN_JOURNAL_BYTES: u64 = 4 << 20;

    /// A configuration for `data_dir` with every other field at its default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            max_object_size: Self::DEFAULT_MAX_OBJECT_SIZE,
            compact_min_journal_bytes: Self::DEFAULT_COMPACT_MIN_JOURNAL_BYTES,
            sweep_orphans_on_open: true,
        }
    }
}
