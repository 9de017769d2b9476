//! Closing the store (opening belongs to recovery, in `recovery/open.rs`).

use super::*;
use crate::tier::skipped_for_space;

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl Store {
    /// Clean shutdown: write dirty memory objects to disk, checkpoint both
    /// tiers, write their `CLEAN` markers, release the locks. Dropping a
    /// `Store` without `close` is treated as an unclean shutdown by the next
    /// open (objects committed after the last checkpoint are re-verified,
    /// and dirty memory objects are written to disk after the restart if the
    /// memory tier survived).
    ///
    /// Outstanding [`Staging`]s can no longer commit afterwards.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_threads();
        let inner = &*self.inner;
        if !inner.poison.is_set() {
            inner.flush_all();
        }
        {
            let _c = inner.catalog.lock();
            inner.closed.store(true, Ordering::Release);
        }
        let mut r = Ok(());
        for tier in inner.tiers() {
            if tier.kind == Kind::Memory && tier.dir_gone() {
                // Nothing to checkpoint: the next open starts an empty memory tier.
                tracing::warn!(dir = %tier.dirs.path.display(), "the memory tier's directory was removed while running; the next open starts an empty one");
                tier.lock_fd.lock().take();
                continue;
            }
            // A full filesystem skips the checkpoint and the CLEAN marker (the journal
            // holds everything acknowledged; the next open re-verifies what came after
            // the last checkpoint), and the close still succeeds.
            let t = tier
                .checkpoint(&inner.cfg, &inner.poison, false)
                .map(|()| true)
                .or_else(|e| skipped_for_space(tier, "the checkpoint at shutdown", Err(e)))
                .and_then(|done| {
                    if done {
                        let r = tier.mark_clean(&inner.poison);
                        skipped_for_space(tier, "the CLEAN marker", r).map(drop)
                    } else {
                        Ok(())
                    }
                });
            if r.is_ok() {
                r = t;
            }
            tier.lock_fd.lock().take();
        }
        r
    }

    pub(super) fn stop_threads(&mut self) {
        {
            // Under the nap lock: a thread between its check of `stop` and its wait
            // cannot miss the wake-up.
            let _g = self.inner.stop_lock.lock();
            self.inner.stop.store(true, Ordering::Release);
            self.inner.stop_cv.notify_all();
        }
        self.inner.jobs_cv.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
