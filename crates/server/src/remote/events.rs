//! The shared invalidation log, on a host: reading it (other hosts' deletes, writes
//! over a version and purges, applied here), pruning it past `event_retention`, what a
//! host does when it was away for longer than that (docs/STORAGE.md, "The invalidation
//! log"); the pruning loop then runs the round's sweep of the bucket (`sweep.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use objmapper_remote::{Config as RemoteConfig, EventCursor, EventKind};
use objmapper_store::Store;

use super::{store_of, Core};

/// Reads the shared invalidation log every `poll_interval` and applies other hosts'
/// deletes and purges here: every event the client returns, whatever the host id in its
/// stamp (the client leaves out this process's own events by their names; one with
/// this host's id is another process's, a previous run's or a host given the same id,
/// and applying it again changes nothing).
pub(super) async fn event_loop(core: Arc<Core>, from_ns: u64) {
    let mut cursor = EventCursor::since(from_ns);
    let every = core.settings.client.poll_interval;
    // Before the first cold miss needs it (a failure is tried again by that miss).
    let r = core.remote.know_purges().await;
    core.note_purges("reading the purge set", &r);
    let lookback = nanos(core.settings.client.event_lookback);
    // When the log was last read whole (start checked the time before this run).
    let mut last_read = core.remote.log_now();
    // How far ahead of the store's the clock was that the cursor's place was taken by
    // (measured by the check of conditional writes, at start and hourly).
    let mut rewound: i64 = 0;
    // Recorded at the first poll that succeeds, then at most once a minute.
    let mut recorded = 0;
    let mut last_forget: Option<std::time::Instant> = None;
    // Events of this host's id from another process: counted by the client, logged
    // here at most every 10 minutes.
    let mut same_id = 0;
    let mut same_id_logged: Option<std::time::Instant> = None;
    while !core.stop.load(Ordering::Acquire) {
        let ahead = core.remote.clock_offset_ns();
        if ahead > rewound {
            cursor.rewind((ahead - rewound) as u64);
            rewound = ahead;
        }
        let started = core.remote.log_now();
        let tick = tokio::time::Instant::now();
        // Cut off (the tier unreachable) for longer than the log is kept: what crosses
        // the horizon is dropped, by a scan of the store at most once a minute.
        let due = last_forget.is_none_or(|t| t.elapsed() >= FORGET_EVERY);
        if let (true, Some(store)) = (due, store_of(&core)) {
            match forget_if_stale(&store, &core.settings.client, last_read) {
                Ok(Some(caught_up)) => {
                    last_read = caught_up;
                    cursor.skip_to(caught_up);
                    last_forget = Some(std::time::Instant::now());
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "remote tier: {e}"),
            }
        }
        match core.remote.poll_events(&mut cursor).await {
            Ok(events) => {
                last_read = started;
                core.health.answered(super::health::POLL);
                core.last_poll
                    .store(objmapper_remote::now_ns(), Ordering::Relaxed);
                let Some(store) = store_of(&core) else { return };
                let now_same = core.remote.stats().same_host_id;
                if now_same > same_id
                    && same_id_logged.is_none_or(|t| t.elapsed() >= SAME_ID_LOG_EVERY)
                {
                    same_id_logged = Some(std::time::Instant::now());
                    tracing::warn!(
                        host = %core.host,
                        events = now_same,
                        "remote tier: another process writes to the shared tier with this \
                         host's id: give every host its own --host-id (its deletes and purges \
                         are applied here; two versions written in the same nanosecond by the \
                         two would count as one)"
                    );
                }
                same_id = now_same;
                for e in events {
                    let r = match &e.kind {
                        EventKind::Delete(k) => {
                            core.counters
                                .deletes_received
                                .fetch_add(1, Ordering::Relaxed);
                            store.apply_cold_delete(k, e.stamp.time_ns).map(drop)
                        }
                        EventKind::Purge(p) => {
                            core.counters
                                .purges_received
                                .fetch_add(1, Ordering::Relaxed);
                            apply_purge(&store, p, e.stamp.time_ns)
                        }
                    };
                    if let Err(err) = r {
                        tracing::warn!(error = %err, event = ?e.kind, "remote tier: cannot apply another host's invalidation");
                    }
                }
                if let Some(up_to) = cursor.missed() {
                    forget_pruned(&store, up_to.saturating_add(lookback));
                }
                // How far the log was read: its newest event, or this poll's start
                // less the lookback when that is later (a quiet log still counts as
                // read), recorded at most once a minute unless an event came.
                let read_to = cursor.watermark_ns().max(started.saturating_sub(lookback));
                if cursor.watermark_ns() > recorded || read_to >= recorded + 60_000_000_000 {
                    recorded = read_to;
                    let _ = core.journal.lock().events(read_to);
                }
            }
            Err(e) => {
                core.counters.error(e.kind());
                core.health.failed(super::health::POLL, &e);
            }
        }
        // From the start of one poll to the start of the next: a purge made just after
        // a poll began is read within `every` plus one poll, whatever the poll took.
        tokio::time::sleep_until(tick + every).await;
    }
}

/// Applies another host's (or a pending) purge of `prefix` at `stamp` here: a ban
/// stamped as the purge, or, when the ban list is full, a delete at `stamp` of each
/// local key under the prefix (what the ban would have hidden: versions committed
/// before it; a fill of an older one is refused by the client, which knows the purge).
pub(super) fn apply_purge(
    store: &Store,
    prefix: &[u8],
    stamp: u64,
) -> Result<(), objmapper_store::StoreError> {
    match store.apply_cold_purge(prefix, stamp) {
        Err(objmapper_store::StoreError::TooManyBans { active, max }) => {
            let mut cursor = None;
            let mut dropped = 0u64;
            loop {
                let page = store.list(prefix, cursor, 4096);
                for o in page.objects {
                    if o.meta.mtime_ns < stamp && store.apply_cold_delete(&o.meta.key, stamp)? {
                        dropped += 1;
                    }
                }
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            tracing::warn!(
                prefix = %prefix.escape_ascii(),
                active,
                max,
                dropped,
                "remote tier: the ban list is full, so a purge from the shared tier was \
                 applied key by key instead"
            );
            Ok(())
        }
        r => r.map(drop),
    }
}

/// How often a host logs that another process uses its host id, at most.
const SAME_ID_LOG_EVERY: Duration = Duration::from_secs(600);

/// How often a host cut off from the tier for longer than the retention scans its
/// store for what has crossed the horizon since (at most a minute late).
const FORGET_EVERY: Duration = Duration::from_secs(60);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// If this host last read the whole event log (at `last_read_ns`) before the oldest
/// time the log still surely holds (now less the retention, plus the lookback for
/// clocks), events it never read may have been pruned: a delete, an overwrite or a
/// purge of something it holds. It then drops its local objects committed before that
/// time (a later GET reads those still current through again), uploads still pending
/// among them too: they are older than the retention, in a cache, and which of them
/// were written here rather than read through cannot be told apart. Returns the time
/// it is caught up to, if it was stale.
pub(super) fn forget_if_stale(
    store: &Store,
    c: &RemoteConfig,
    last_read_ns: u64,
) -> Result<Option<u64>, String> {
    let now = objmapper_remote::now_ns();
    let kept_from = now.saturating_sub(nanos(c.event_retention)) + nanos(c.event_lookback);
    if last_read_ns >= kept_from {
        return Ok(None);
    }
    let n = store.forget_committed_before(kept_from).map_err(|e| {
        format!("cannot drop the local objects a pruned invalidation may have covered: {e}")
    })?;
    tracing::warn!(
        away_seconds = (now - last_read_ns.min(now)) / 1_000_000_000,
        retention = ?c.event_retention,
        dropped = n,
        "remote tier: this host had not read the shared invalidation log for longer than \
         it is kept (--remote-event-retention), so deletes and purges made elsewhere \
         meanwhile may be gone from it: dropped the local objects committed before then \
         (read-through brings back those still current)"
    );
    Ok(Some(kept_from))
}

/// Events appended up to `before_ns` (less the lookback) were pruned before this host
/// read them (another host keeps the log for less time, or this one polls too seldom):
/// any of them may have deleted, overwritten or purged a local copy stamped before
/// then, which is dropped (neither remembered nor reported; read through again).
fn forget_pruned(store: &Store, before_ns: u64) {
    match store.forget_committed_before(before_ns) {
        Ok(n) => tracing::warn!(
            dropped = n,
            "remote tier: events this host had not read yet were pruned from the shared \
             invalidation log (another host keeps it for less time, or this one polls less \
             often than it is pruned: give every host the same --remote-event-retention, \
             at least twice the longest poll interval): dropped the local objects they may \
             have covered (read-through brings back those still current)"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "remote tier: cannot drop the local objects pruned invalidations may have covered"
        ),
    }
}

/// Prunes the shared invalidation log of events older than `event_retention`, every
/// quarter of it (at most hourly). Every host does it: deleting what another host
/// deleted already is a no-op.
pub(super) async fn prune_loop(core: Arc<Core>) {
    let retention = core.settings.client.event_retention;
    let every = (retention / 4).min(Duration::from_secs(3600));
    while !core.stop.load(Ordering::Acquire) {
        tokio::time::sleep(every).await;
        let before = core.remote.log_now().saturating_sub(nanos(retention));
        let r = core.remote.prune_events(before).await;
        core.note("pruning the event log", &r);
        match r {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "remote tier: pruned the invalidation log"),
            Err(e) => tracing::debug!(error = %e, "remote tier: pruning the event log failed"),
        }
        super::sweep::round(&core, every).await;
    }
}
