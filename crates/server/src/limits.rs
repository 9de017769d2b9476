//! Server-wide resource accounting: counters that limited resources are reserved from,
//! and released to when the reservation is dropped (whatever path the request takes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// File descriptors the configured limits may need: one per connection (and per
/// connection being refused), one per staged PUT, plus a margin for the store (journal,
/// directories, the open-file cache), pipes, epoll instances and wakers.
pub(crate) fn fds_needed(cfg: &crate::ServerConfig) -> u64 {
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
}
