//! Taking up at start what the last run left (docs/STORAGE.md, "The upload queue on
//! disk" and "Where a host reads the event log from"): the journal's place in the event
//! log, its upload watermark and its pending deletes and purges, checked against the
//! tier they were written for and against the store they describe.
//!
//! A place in the log is what lets a host keep its local copies across a restart: it
//! applies every event after it. When the journal cannot say where that place is (the
//! file lost, emptied or damaged) or says it of another bucket or prefix, events made
//! while the host was away are unknown, and a local copy may be of something deleted,
//! overwritten or purged elsewhere. The host then keeps only what it can prove:
//!
//! - the copies it read through (fills) are dropped, and read through again on demand;
//! - every version written here is uploaded again: the tier's conditional write keeps
//!   what is current there and refuses the rest, which the host then drops
//!   (`Outcome::Superseded`), so nothing deleted or replaced elsewhere stays served;
//!   on a new bucket or prefix this is also what puts them there.

use std::sync::Arc;
use std::time::Instant;

use objmapper_store::Store;

use super::events;
use super::journal::{Inval, Journal, Replayed};
use super::queue::{Queue, Upload};
use super::RemoteSettings;

/// What the host takes up: its upload queue, its pending deletes and purges, and where
/// it reads the event log from.
pub(super) struct Resumed {
    pub(super) queue: Queue,
    pub(super) invals: Vec<Inval>,
    pub(super) events_from: u64,
}

/// The tier as the journal names it: bucket and prefix. The endpoint is not part of it:
/// the same bucket reached by another name, or over TLS, is the same tier.
/// Refuses to serve a data directory that was a host of a remote tier without one: the
/// deletes and purges made meanwhile would never reach the tier, and once it was on
/// again the versions they removed would be read back from it. Leaving the tier is
/// removing its journal (docs/ADMIN.md): the next start with a tier then takes the
/// store as a new host's.
pub(crate) fn refuse_to_run_detached(store: &Store) -> Result<(), crate::ServerError> {
    let dir = store.data_dir();
    let journal = super::journal::peek(dir).map_err(|e| {
        crate::ServerError::io(
            format!("reading {}", dir.join(super::journal::FILE).display()),
            e,
        )
    })?;
    let Some(tier) = journal else { return Ok(()) };
    let tier = tier.map_or_else(|| "a remote tier".to_string(), |t| format!("s3://{t}"));
    Err(crate::ServerError::Config(format!(
        "{} belongs to a host of {tier} (its journal {} says so), and no remote tier is \
         configured: the deletes and purges made here would never reach the tier, and its \
         older versions would be read back once it is on again. Start with the same \
         --remote, or, to leave the tier for good, remove that journal (and FILLBANS and \
         FILLFLOOR beside it)",
        dir.display(),
        dir.join(super::journal::FILE).display()
    )))
}

/// Why the host cannot take up where it was.
#[derive(Debug)]
pub(super) enum Error {
    /// Writing the journal failed.
    Journal(std::io::Error),
    /// The store refused what was asked of it.
    Store(String),
}

pub(super) fn tier_name(s: &RemoteSettings) -> String {
    format!("{}/{}", s.client.bucket, s.client.prefix)
}

pub(super) fn resume(
    store: &Arc<Store>,
    settings: &RemoteSettings,
    journal: &mut Journal,
    mut replayed: Replayed,
) -> Result<Resumed, Error> {
    let tier = tier_name(settings);
    // What this host stamped or read in earlier runs stays behind what it stamps now,
    // even with its clock set back since (a write after its own delete, then re-read
    // from the log, lost to it: found from outside).
    store.resume_clock(replayed.events.max(replayed.watermark));
    let now = objmapper_remote::now_ns();
    let other_tier = replayed.tier.as_ref().filter(|t| **t != tier);
    let place_known = replayed.events > 0 && other_tier.is_none();
    if let Some(was) = other_tier {
        tracing::warn!(
            was = %was,
            now = %tier,
            "remote tier: this data directory was a host of another bucket or prefix: its \
             place in that event log says nothing of this one. Copies read through from \
             there are dropped, and every version written here is uploaded to this tier \
             (which keeps what is current)"
        );
        replayed.watermark = 0;
    } else if !place_known && !store.is_empty() {
        tracing::warn!(
            "remote tier: the journal (REMOTE in the data directory) does not say where \
             this host last read the shared event log (it is new, lost, emptied or \
             damaged), while the store holds objects: copies read through from the tier \
             are dropped, and every version written here is uploaded again, so that \
             nothing deleted, replaced or purged elsewhere meanwhile stays served"
        );
        replayed.watermark = 0;
    }
    // Never later than now (a clock set back since): reading goes on from there.
    let mut events_from = if place_known {
        replayed.events.min(now)
    } else {
        now
    };
    if place_known {
        // A host that has not read the event log for longer than it is kept may have
        // missed deletes, overwrites and purges that were pruned since.
        // What was dropped cannot be covered by what was pruned before then.
        if let Some(caught_up) =
            events::forget_if_stale(store, &settings.client, events_from).map_err(Error::Store)?
        {
            events_from = events_from.max(caught_up);
        }
    } else if !store.is_empty() {
        let n = store
            .forget_fills()
            .map_err(|e| Error::Store(format!("cannot drop the copies read through: {e}")))?;
        tracing::info!(dropped = n, "remote tier: dropped the copies read through");
    }
    // The file now says which tier it is about and where reading starts, so that a
    // restart before the first poll takes up from here, not from its own start.
    journal
        .belong_to(&tier, replayed.watermark, events_from)
        .map_err(Error::Journal)?;

    let mut queue = Queue::new(
        settings.queue_max_objects,
        settings.queue_max_bytes,
        replayed.watermark.saturating_sub(1),
    );
    for (key, version) in &replayed.dropped {
        queue.remember_dropped(key.clone(), *version);
    }
    // Rebuild the uploads: every persistent object written here (not a copy of the
    // tier's, a fill) committed at or after the watermark.
    let mut requeued = 0u64;
    let mut cursor = None;
    loop {
        let page = store.list(b"", cursor, 4096);
        for o in page.objects {
            let m = &o.meta;
            if !m.ephemeral && !m.filled && m.mtime_ns >= replayed.watermark {
                queue.push(Upload {
                    key: m.key.clone(),
                    version: m.version,
                    stamp: m.mtime_ns,
                    size: m.size,
                    since: Instant::now(),
                    failures: 0,
                });
                requeued += 1;
            }
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let invals: Vec<Inval> = replayed.pending.iter().cloned().collect();
    for i in &invals {
        match i {
            Inval::Delete(s, k) => store.remember_delete(k, *s),
            Inval::Purge(s, p) => {
                events::apply_purge(store, p, *s)
                    .map_err(|e| Error::Store(format!("re-applying a pending purge: {e}")))?;
            }
        }
    }
    if requeued > 0 || !invals.is_empty() {
        tracing::info!(
            uploads = requeued,
            invalidations = invals.len(),
            "remote tier: resuming the write-behind left from the last run"
        );
    }
    Ok(Resumed {
        queue,
        invals,
        events_from,
    })
}
