//! Server-wide resource accounting: counters that limited resources are reserved from,
//! and released to when the reservation is dropped (whatever path the request takes);
//! and the limits a running server can change ([`RuntimeLimits`]).

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ServerConfig;

/// The limits [`crate::Server::set_limits`] changes in a running server; each field is
/// the [`ServerConfig`] field of the same name (its default is documented there).
///
/// A change applies from the next time the limit is checked: a key or metadata length at
/// the next request, the staged-PUT limits at the next PUT, the timeouts at the next
/// sweep (once a second), the pipeline depth at the next HELLO (an open V2 session keeps
/// the depth it was granted). `max_connections` and `max_staged_puts_total` are not here:
/// they size `RLIMIT_NOFILE` at start, so they change only with a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeLimits {
    /// See [`ServerConfig::max_pipeline_depth`]; at least 1.
    pub max_pipeline_depth: u16,
    /// See [`ServerConfig::max_staged_puts`].
    pub max_staged_puts: usize,
    /// See [`ServerConfig::max_staged_bytes_per_conn`].
    pub max_staged_bytes_per_conn: u64,
    /// See [`ServerConfig::max_staged_bytes_total`].
    pub max_staged_bytes_total: u64,
    /// See [`ServerConfig::max_key_len`]; 1 to `objmapper_proto::MAX_KEY_LEN`.
    pub max_key_len: usize,
    /// See [`ServerConfig::max_meta_len`]; at most `objmapper_proto::MAX_META_LEN`.
    pub max_meta_len: usize,
    /// See [`ServerConfig::header_timeout`]; more than 0.
    pub header_timeout: Duration,
    /// See [`ServerConfig::frame_timeout`]; more than 0.
    pub frame_timeout: Duration,
    /// See [`ServerConfig::idle_timeout`].
    pub idle_timeout: Option<Duration>,
}

impl RuntimeLimits {
    /// The limits `cfg` starts a server with.
    pub fn of(cfg: &ServerConfig) -> RuntimeLimits {
        RuntimeLimits {
            max_pipeline_depth: cfg.max_pipeline_depth,
            max_staged_puts: cfg.max_staged_puts,
            max_staged_bytes_per_conn: cfg.max_staged_bytes_per_conn,
            max_staged_bytes_total: cfg.max_staged_bytes_total,
            max_key_len: cfg.max_key_len,
            max_meta_len: cfg.max_meta_len,
            header_timeout: cfg.header_timeout,
            frame_timeout: cfg.frame_timeout,
            idle_timeout: cfg.idle_timeout,
        }
    }

    /// KEY_TOO_LONG's message for a key of `len` bytes, if it is over `max_key_len`.
    pub(crate) fn key_too_long(&self, len: usize) -> Option<String> {
        (len > self.max_key_len).then(|| {
            format!(
                "key of {len} bytes exceeds this server's limit of {}",
                self.max_key_len
            )
        })
    }

    /// Why these limits are unusable, if they are.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_pipeline_depth == 0 {
            return Err("max_pipeline_depth must be at least 1".into());
        }
        if self.max_key_len == 0 || self.max_key_len > objmapper_proto::MAX_KEY_LEN {
            return Err(format!(
                "max_key_len {} must be 1..={}",
                self.max_key_len,
                objmapper_proto::MAX_KEY_LEN
            ));
        }
        if self.max_meta_len > objmapper_proto::MAX_META_LEN {
            return Err(format!(
                "max_meta_len {} must be at most {}",
                self.max_meta_len,
                objmapper_proto::MAX_META_LEN
            ));
        }
        if self.header_timeout.is_zero() || self.frame_timeout.is_zero() {
            return Err("header_timeout and frame_timeout must be more than 0".into());
        }
        Ok(())
    }
}

/// The [`RuntimeLimits`] in force, read by the workers without a lock. A change stores
/// each field on its own: a reader may see some fields old and some new for a moment,
/// which is harmless since each limit is checked on its own.
pub(crate) struct LiveLimits {
    max_pipeline_depth: AtomicU16,
    max_staged_puts: AtomicUsize,
    max_staged_bytes_per_conn: AtomicU64,
    max_staged_bytes_total: AtomicU64,
    max_key_len: AtomicUsize,
    max_meta_len: AtomicUsize,
    /// Durations in nanoseconds; `NEVER` for no idle timeout.
    header_timeout: AtomicU64,
    frame_timeout: AtomicU64,
    idle_timeout: AtomicU64,
}

const NEVER: u64 = u64::MAX;

/// A duration in nanoseconds, below `NEVER` (584 years is as good as forever).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER).min(NEVER - 1)
}

impl LiveLimits {
    pub(crate) fn new(l: &RuntimeLimits) -> LiveLimits {
        let live = LiveLimits {
            max_pipeline_depth: AtomicU16::new(0),
            max_staged_puts: AtomicUsize::new(0),
            max_staged_bytes_per_conn: AtomicU64::new(0),
            max_staged_bytes_total: AtomicU64::new(0),
            max_key_len: AtomicUsize::new(0),
            max_meta_len: AtomicUsize::new(0),
            header_timeout: AtomicU64::new(0),
            frame_timeout: AtomicU64::new(0),
            idle_timeout: AtomicU64::new(0),
        };
        live.set(l);
        live
    }

    /// The limits now.
    pub(crate) fn get(&self) -> RuntimeLimits {
        let r = Ordering::Relaxed;
        RuntimeLimits {
            max_pipeline_depth: self.max_pipeline_depth.load(r),
            max_staged_puts: self.max_staged_puts.load(r),
            max_staged_bytes_per_conn: self.max_staged_bytes_per_conn.load(r),
            max_staged_bytes_total: self.max_staged_bytes_total.load(r),
            max_key_len: self.max_key_len.load(r),
            max_meta_len: self.max_meta_len.load(r),
            header_timeout: Duration::from_nanos(self.header_timeout.load(r)),
            frame_timeout: Duration::from_nanos(self.frame_timeout.load(r)),
            idle_timeout: match self.idle_timeout.load(r) {
                NEVER => None,
                n => Some(Duration::from_nanos(n)),
            },
        }
    }

    /// Replaces the limits (checked by the caller).
    pub(crate) fn set(&self, l: &RuntimeLimits) {
        let r = Ordering::Relaxed;
        self.max_pipeline_depth.store(l.max_pipeline_depth, r);
        self.max_staged_puts.store(l.max_staged_puts, r);
        self.max_staged_bytes_per_conn
            .store(l.max_staged_bytes_per_conn, r);
        self.max_staged_bytes_total
            .store(l.max_staged_bytes_total, r);
        self.max_key_len.store(l.max_key_len, r);
        self.max_meta_len.store(l.max_meta_len, r);
        self.header_timeout.store(nanos(l.header_timeout), r);
        self.frame_timeout.store(nanos(l.frame_timeout), r);
        self.idle_timeout
            .store(l.idle_timeout.map_or(NEVER, nanos), r);
    }
}

/// A shared counter with a limit.
#[derive(Clone, Default)]
pub(crate) struct Budget(Arc<AtomicU64>);

impl Budget {
    /// Reserves `n` if the total stays within `limit`.
    pub(crate) fn try_reserve(&self, n: u64, limit: u64) -> Option<Reserved> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(n).filter(|t| *t <= limit)
            })
            .ok()?;
        Some(Reserved {
            budget: self.0.clone(),
            n,
        })
    }

    /// What is reserved now.
    pub(crate) fn used(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A reservation: returned to its budget when dropped.
pub(crate) struct Reserved {
    budget: Arc<AtomicU64>,
    n: u64,
}

impl Reserved {
    /// How much this reservation holds.
    pub(crate) fn held(&self) -> u64 {
        self.n
    }

    /// Grows this reservation to `total` if its budget's total stays within `limit`.
    pub(crate) fn grow_to(&mut self, total: u64, limit: u64) -> bool {
        let Some(more) = total.checked_sub(self.n).filter(|m| *m > 0) else {
            return true;
        };
        let ok = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(more).filter(|t| *t <= limit)
            })
            .is_ok();
        if ok {
            self.n = total;
        }
        ok
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// File descriptors the configured limits may need: one per connection (and per
/// connection being refused), one per staged PUT, plus a margin for the store (journal,
/// directories, the open-file cache), pipes, epoll instances and wakers.
pub(crate) fn fds_needed(cfg: &ServerConfig) -> u64 {
    (cfg.max_connections as u64)
        .saturating_add(REFUSING_MAX as u64)
        .saturating_add(cfg.max_staged_puts_total as u64)
        .saturating_add(FD_MARGIN)
}

/// Connections over `max_connections` held open just long enough to be answered BUSY;
/// beyond these, new connections are closed on accept without a reply.
pub(crate) const REFUSING_MAX: usize = 64;
/// fds beyond connections and staged PUTs (store, pipes, epoll, wakers, logs).
const FD_MARGIN: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_grows_only_within_the_limit() {
        let b = Budget::default();
        let mut a = b.try_reserve(2, 10).unwrap();
        assert!(a.grow_to(7, 10));
        assert_eq!((a.held(), b.used()), (7, 7));
        assert!(a.grow_to(5, 10), "shrinking is a no-op");
        assert_eq!(b.used(), 7);
        let other = b.try_reserve(2, 10).unwrap();
        assert!(!a.grow_to(9, 10));
        assert_eq!((a.held(), b.used()), (7, 9));
        drop(other);
        drop(a);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn reservations_stay_within_the_limit_and_return_on_drop() {
        let b = Budget::default();
        let a = b.try_reserve(6, 10).unwrap();
        assert!(b.try_reserve(5, 10).is_none());
        let c = b.try_reserve(4, 10).unwrap();
        assert_eq!(b.used(), 10);
        drop(a);
        assert_eq!(b.used(), 4);
        assert!(
            b.try_reserve(u64::MAX, u64::MAX).is_none(),
            "overflow is refused"
        );
        drop(c);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn live_limits_read_back_what_was_set() {
        let mut l = RuntimeLimits::of(&ServerConfig::new("/s", "/d"));
        let live = LiveLimits::new(&l);
        assert_eq!(live.get(), l);
        l.max_key_len = 10;
        l.header_timeout = Duration::from_millis(1500);
        l.idle_timeout = Some(Duration::from_secs(60));
        live.set(&l);
        assert_eq!(live.get(), l);
        l.idle_timeout = None;
        l.frame_timeout = Duration::MAX;
        live.set(&l);
        let got = live.get();
        assert_eq!(got.idle_timeout, None);
        assert!(got.frame_timeout > Duration::from_secs(500 * 365 * 86_400));
    }

    #[test]
    fn unusable_limits_are_refused() {
        let ok = RuntimeLimits::of(&ServerConfig::new("/s", "/d"));
        assert!(ok.check().is_ok());
        let bad = [
            RuntimeLimits {
                max_pipeline_depth: 0,
                ..ok
            },
            RuntimeLimits {
                max_key_len: 0,
                ..ok
            },
            RuntimeLimits {
                max_key_len: objmapper_proto::MAX_KEY_LEN + 1,
                ..ok
            },
            RuntimeLimits {
                max_meta_len: objmapper_proto::MAX_META_LEN + 1,
                ..ok
            },
            RuntimeLimits {
                header_timeout: Duration::ZERO,
                ..ok
            },
            RuntimeLimits {
                frame_timeout: Duration::ZERO,
                ..ok
            },
        ];
        for l in bad {
            assert!(l.check().is_err(), "{l:?}");
        }
    }
}
