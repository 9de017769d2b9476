//! Sweeping the bucket, on a host (docs/STORAGE.md, "Sweeping the bucket"): the round
//! one host per interval runs from the event-pruning loop, and the sweep an operator
//! asks for (`POST /v1/remote/sweep`, `objmapper remote sweep`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use objmapper_remote::{Reclaim, Sweep};

use super::{Core, RemoteTier};

/// Names of the bucket whose versions one round reads, at most (a range read each,
/// `upload_concurrency` at once: 1.3 to 25 s at 1 to 20 ms a request and 32 at once).
/// The next round goes on from where it stopped.
const RECLAIM_PER_ROUND: usize = 40_000;

/// What one sweep did: the orphaned data objects deleted, then the reclaim of a slice
/// of the names.
#[derive(Debug)]
pub(crate) struct SweepReport {
    pub(crate) orphans: Sweep,
    pub(crate) reclaim: Reclaim,
}

/// If this host wins the round's claim (one host per `every` across the fleet): deletes
/// the data objects no pointer names, then reclaims the expired and purged versions of
/// the next slice of names, and records where it stopped.
pub(super) async fn round(core: &Core, every: Duration) {
    if !core.gate.open() {
        return;
    }
    let claimed = core.remote.claim_sweep(every).await;
    core.note("claiming the sweep", &claimed);
    let Ok(Some(claim)) = claimed else {
        return;
    };
    // Every purge made so far, whatever this host missed, before any name is read: a
    // pass whose every round knew a purge may end it (docs/STORAGE.md, "The purge set").
    let tracked = core.remote.track_purges().await;
    core.note_purges("reading the purge set", &tracked);
    if tracked.is_err() {
        return;
    }
    match once(core, true, &claim.cursor, RECLAIM_PER_ROUND).await {
        Ok(done) => {
            if done.reclaim.cursor.is_empty() {
                // The pass reached the last name.
                let r = core.remote.retire_purges(claim.pass_started_ns).await;
                core.note_purges("retiring purges", &r);
                if let Ok(n) = r {
                    core.counters.purges_retired.fetch_add(n, Ordering::Relaxed);
                }
            }
            let r = core.remote.finish_sweep(&claim, &done.reclaim.cursor).await;
            core.note("recording the sweep", &r);
        }
        Err(e) => tracing::debug!(error = %e, "remote tier: the sweep failed"),
    }
}

/// One sweep: the orphans (if `orphans`), then up to `names` names after `after`.
/// Counts and logs what it did.
async fn once(
    core: &Core,
    orphans: bool,
    after: &str,
    names: usize,
) -> Result<SweepReport, objmapper_remote::Error> {
    let orphans = if orphans {
        let r = core.remote.sweep_orphans(core.remote.sweep_grace()).await;
        core.note("sweeping orphaned data objects", &r);
        r?
    } else {
        Sweep::default()
    };
    let c = &core.counters;
    if orphans.deleted > 0 {
        c.orphans.fetch_add(orphans.deleted, Ordering::Relaxed);
        c.orphan_bytes.fetch_add(orphans.bytes, Ordering::Relaxed);
        tracing::info!(
            deleted = orphans.deleted,
            bytes = orphans.bytes,
            listed = orphans.listed,
            "remote tier: deleted data objects no pointer names"
        );
    }
    let r = core.remote.reclaim(after, names).await;
    core.note("reclaiming expired and purged versions", &r);
    let reclaim = r?;
    if reclaim.reclaimed > 0 {
        c.reclaimed.fetch_add(reclaim.reclaimed, Ordering::Relaxed);
        c.reclaimed_bytes
            .fetch_add(reclaim.bytes, Ordering::Relaxed);
        tracing::info!(
            reclaimed = reclaim.reclaimed,
            bytes = reclaim.bytes,
            read = reclaim.read,
            "remote tier: replaced expired and purged versions with tombstones"
        );
    }
    Ok(SweepReport { orphans, reclaim })
}

impl RemoteTier {
    /// Sweeps the bucket now, whatever the round's claim: the orphaned data objects
    /// (if `orphans`), then the expired and purged versions of up to `names` names
    /// after `after` (a name hash; empty: from the first). Blocks the calling thread
    /// (not a worker's).
    pub(crate) fn sweep_now(
        &self,
        orphans: bool,
        after: &str,
        names: usize,
    ) -> Result<SweepReport, String> {
        let Some(rt) = &self.rt else {
            return Ok(SweepReport {
                orphans: Sweep::default(),
                reclaim: Reclaim::default(),
            });
        };
        let core = &self.core;
        rt.block_on(async {
            if !core.gate.open_within(core.settings.client.timeout).await {
                return Err(core.gate.unguarded_error().unwrap_or_else(|| {
                    "the store has not yet shown that it honours conditional writes (it \
                     does not answer): nothing is written to it until it has"
                        .into()
                }));
            }
            once(core, orphans, after, names)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
