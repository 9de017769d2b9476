//! What the remote tier counts: the state `/v1/stats`, `/metrics` and `objmapper stats`
//! show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use objmapper_remote::{ErrorKind, RemoteStats};

/// Upper bounds of the read-through latency histogram, in seconds.
pub(crate) const READ_THROUGH_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The error kinds counted, in [`Counters::errors`] order.
pub(crate) const ERROR_KINDS: [ErrorKind; 9] = [
    ErrorKind::Timeout,
    ErrorKind::Unavailable,
    ErrorKind::Denied,
    ErrorKind::Corrupt,
    ErrorKind::Precondition,
    ErrorKind::Config,
    ErrorKind::Invalid,
    ErrorKind::Io,
    ErrorKind::Unguarded,
];

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) errors: [AtomicU64; ERROR_KINDS.len()],
    pub(crate) uploads_failed: AtomicU64,
    pub(crate) uploads_skipped: AtomicU64,
    pub(crate) purges_received: AtomicU64,
    pub(crate) deletes_received: AtomicU64,
    pub(crate) bans_local: AtomicU64,
    pub(crate) fills: AtomicU64,
    /// Versions found on the tier that the store refused to take (a ban, a delete or
    /// the fill floor here covers them, or they do not fit), before or after their
    /// bytes were downloaded.
    pub(crate) fills_refused: AtomicU64,
    /// Misses answered at once because every fetch slot was taken.
    pub(crate) fetches_refused: AtomicU64,
    /// Data objects no pointer named, deleted by this host's sweeps, and their bytes.
    pub(crate) orphans: AtomicU64,
    pub(crate) orphan_bytes: AtomicU64,
    /// Expired or purged versions this host's sweeps replaced by tombstones, and their
    /// bytes.
    pub(crate) reclaimed: AtomicU64,
    pub(crate) reclaimed_bytes: AtomicU64,
    /// Purges this host's sweeps retired from the purge set.
    pub(crate) purges_retired: AtomicU64,
    /// Read-throughs by latency bucket (the last counts the slower ones).
    pub(crate) read_through: [AtomicU64; 11],
    pub(crate) read_through_ns: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CounterValues {
    pub(crate) errors: [u64; ERROR_KINDS.len()],
    pub(crate) uploads_failed: u64,
    pub(crate) uploads_skipped: u64,
    pub(crate) purges_received: u64,
    pub(crate) deletes_received: u64,
    pub(crate) bans_local: u64,
    pub(crate) fills: u64,
    pub(crate) fills_refused: u64,
    pub(crate) fetches_refused: u64,
    pub(crate) orphans: u64,
    pub(crate) orphan_bytes: u64,
    pub(crate) reclaimed: u64,
    pub(crate) reclaimed_bytes: u64,
    pub(crate) purges_retired: u64,
    pub(crate) read_through: [u64; 11],
    pub(crate) read_through_seconds: f64,
}

impl Counters {
    pub(crate) fn error(&self, kind: ErrorKind) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn read_through(&self, took: Duration, filled: bool) {
        let s = took.as_secs_f64();
        let b = READ_THROUGH_BUCKETS
            .iter()
            .position(|le| s <= *le)
            .unwrap_or(READ_THROUGH_BUCKETS.len());
        self.read_through[b].fetch_add(1, Ordering::Relaxed);
        self.read_through_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if filled {
            self.fills.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> CounterValues {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterValues {
            errors: std::array::from_fn(|i| g(&self.errors[i])),
            uploads_failed: g(&self.uploads_failed),
            uploads_skipped: g(&self.uploads_skipped),
            purges_received: g(&self.purges_received),
            deletes_received: g(&self.deletes_received),
            bans_local: g(&self.bans_local),
            fills: g(&self.fills),
            fills_refused: g(&self.fills_refused),
            fetches_refused: g(&self.fetches_refused),
            orphans: g(&self.orphans),
            orphan_bytes: g(&self.orphan_bytes),
            reclaimed: g(&self.reclaimed),
            reclaimed_bytes: g(&self.reclaimed_bytes),
            purges_retired: g(&self.purges_retired),
            read_through: std::array::from_fn(|i| g(&self.read_through[i])),
            read_through_seconds: g(&self.read_through_ns) as f64 / 1e9,
        }
    }
}

/// The remote tier's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteState {
    /// `s3://bucket/prefix` (and the endpoint): never a credential.
    pub(crate) name: String,
    pub(crate) host: String,
    /// How the endpoint answers, and the last error that said otherwise.
    pub(crate) health: super::Health,
    pub(crate) last_error: Option<String>,
    pub(crate) queue_objects: u64,
    pub(crate) queue_bytes: u64,
    pub(crate) queue_oldest_seconds: f64,
    pub(crate) uploads_running: u64,
    /// Read-throughs running (distinct keys being fetched).
    pub(crate) fetches_running: u64,
    pub(crate) uploads_dropped: u64,
    pub(crate) invalidations_pending: u64,
    pub(crate) last_poll_ns: u64,
    pub(crate) client: RemoteStats,
    pub(crate) counters: CounterValues,
}

impl RemoteState {
    /// Whether the endpoint answers (it may still refuse: see [`RemoteState::health`]).
    pub(crate) fn reachable(&self) -> bool {
        self.health != super::Health::Unreachable
    }
}
