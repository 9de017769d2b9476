//! The background thread: write-behind flushes, expiry, promotions, and the jobs the
//! request path leaves it.

use super::*;

impl Inner {
    /// Removes `key` at `version` (expired) from whichever tiers hold that version.
    pub(crate) fn expire(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        let removed = self.remove_version(key, version)?;
        if removed {
            bump(&self.counters.expirations);
        }
        Ok(removed)
    }

    /// Removes `key` at `version` from whichever tiers hold that version; never a newer one.
    pub(super) fn remove_version(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        self.check_writable()?;
        let removed = {
            let _c = self.catalog.lock();
            let mut removed = Vec::new();
            for kind in Kind::ALL {
                let r = self.tier(kind).remove(
                    &self.cfg,
                    &self.poison,
                    key,
                    Some(version),
                    false,
                    self.reserve_upto(),
                )?;
                if let Some((id, _)) = r {
                    self.policy.lock().of(kind).remove(id as u64);
                    removed.push(kind);
                }
            }
            removed
        };
        for kind in &removed {
            self.tier(*kind).unlink_object(key, version);
        }
        Ok(!removed.is_empty())
    }

    /// Removes every expired object; returns how many.
    pub(crate) fn sweep_expired(&self) -> usize {
        let now = now_secs();
        let mut expired: Vec<(Box<[u8]>, u64)> = Vec::new();
        for tier in self.tiers() {
            expired.extend(
                tier.index
                    .read()
                    .iter()
                    .filter(|e| e.is_expired_at(now))
                    .map(|e| (Box::from(e.key()), e.version())),
            );
        }
        let mut n = 0;
        for (key, version) in expired {
            match self.expire(&key, version) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %display_chain(&e), "removing an expired object failed");
                    break;
                }
            }
        }
        n
    }

    pub(super) fn run_job(&self, job: &Job) -> Result<(), StoreError> {
        match job {
            Job::Flush(k, v) => self.flush(k, *v).map(drop),
            Job::Promote(k, v) => self.promote(k, *v).map(drop),
            Job::Expire(k, v) => self.expire(k, *v).map(drop),
            Job::Banned(k, v) => self.remove_banned(k, *v).map(drop),
        }
    }

    /// The background thread: write-behind, promotions, expiry sweeps.
    pub(crate) fn background(&self) {
        let mut last_sweep = Instant::now();
        loop {
            let job = {
                let mut j = self.jobs.lock();
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let now = Instant::now();
                    if let Some(pos) = j.retry.iter().position(|(t, _, _)| *t <= now) {
                        let (_, job, backoff) = j.retry.swap_remove(pos);
                        break Some((job, backoff));
                    }
                    if let Some(job) = j.queue.pop_front() {
                        j.queued.remove(&job);
                        break Some((job, Duration::from_secs(1) / 2));
                    }
                    if let Some(job) = j.pop_due_flush(now) {
                        break Some((job, Duration::from_secs(1) / 2));
                    }
                    if j.delayed.is_empty() {
                        j.hurry = false;
                    }
                    if now.duration_since(last_sweep) >= self.cfg.expiry_sweep_interval {
                        break None;
                    }
                    let mut nap = Duration::from_millis(200);
                    if let Some((t, _)) = j.delayed.front() {
                        // Wake when the oldest delayed flush is due, but not more often
                        // than every 10 ms: each wake-up then writes a batch, instead of
                        // one wake-up per PUT.
                        nap = nap
                            .min(t.saturating_duration_since(now))
                            .max(WRITE_BEHIND_TICK);
                    }
                    self.jobs_cv.wait_for(&mut j, nap);
                }
            };
            match job {
                None => {
                    last_sweep = Instant::now();
                    let n = self.sweep_expired();
                    if n > 0 {
                        tracing::debug!(removed = n, "expiry sweep");
                    }
                }
                Some((job, backoff)) => {
                    if let Err(e) = self.run_job(&job) {
                        if matches!(job, Job::Flush(..)) && !self.poison.is_set() {
                            let next = (backoff * 2).min(MAX_FLUSH_BACKOFF);
                            self.jobs
                                .lock()
                                .retry
                                .push((Instant::now() + backoff, job, next));
                        } else {
                            tracing::debug!(error = %display_chain(&e), "background job failed");
                        }
                    }
                }
            }
        }
    }
}
