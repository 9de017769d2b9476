//! The upload tasks: `upload_concurrency` of them send the pending deletes and purges
//! first, then the queued uploads, each read back from the store. Work that fails
//! waits out its backoff where it is queued, and while the tier as a whole fails one
//! request goes per backoff ([`backoff`]); a task never sleeps holding work.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use objmapper_remote::{ErrorKind, Outcome, Stamp};
use objmapper_store::Tier;

use super::backoff::Ticket;
use super::journal::Inval;
use super::queue::Upload;
use super::{record_of, store_of, Core};

/// Whether work that failed with `e` stays queued and is tried again after a backoff:
/// transient failures, and the tier refusing this host as a whole (a person fixing the
/// credentials, the policy or the bucket makes the same request succeed; dropping the
/// work would lose uploads for good and let other hosts serve what was deleted here).
fn retry_later(e: &objmapper_remote::Error) -> bool {
    e.is_transient() || e.is_tier_wide()
}

/// Whether `e` says the tier as a whole fails (rather than one object, one lost race
/// or a local read): it then backs off for every task ([`backoff::Tier`]).
fn tier_fails(e: &objmapper_remote::Error) -> bool {
    e.is_tier_wide()
        || matches!(
            e.kind(),
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Denied
        )
}

/// What a task does next.
enum Work {
    Invals(Vec<Inval>, Ticket),
    Upload(Upload, Ticket),
    /// Nothing to send before this time (or a wake).
    Wait(Option<Instant>),
}

/// The longest an idle task waits without looking again (in case a wake was missed).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// The next work due at `now`, if the tier lets a request go.
fn next_work(core: &Core, now: Instant) -> Work {
    // Held while claiming: while the tier fails, one task takes the one request a
    // backoff lets through.
    let mut tier = core.tier.lock();
    if let Err(until) = tier.ready(now) {
        return Work::Wait(Some(until));
    }
    let (claimed, invals_due) = {
        let mut v = core.invals.lock();
        (v.claim(now), v.next_due())
    };
    if !claimed.is_empty() {
        return Work::Invals(claimed, tier.sending(now));
    }
    let (taken, uploads_due) = {
        let mut q = core.queue.lock();
        (q.take(now), q.next_due())
    };
    match taken {
        Some(u) => Work::Upload(u, tier.sending(now)),
        None => Work::Wait(invals_due.into_iter().chain(uploads_due).min()),
    }
}

/// Sends deletes and purges first, then uploads, until stopped.
pub(super) async fn upload_loop(core: Arc<Core>) {
    while !core.stop.load(Ordering::Acquire) {
        if !core.gate.open() {
            core.gate.opened().await;
            continue;
        }
        match next_work(&core, Instant::now()) {
            Work::Wait(until) => {
                // Woken by new work, a flush or the stop; else when the first backoff
                // ends (never spinning), else after a while.
                let wait = until.map_or(IDLE_LOOK, |t| {
                    t.saturating_duration_since(Instant::now())
                        .clamp(Duration::from_millis(5), IDLE_LOOK)
                });
                let _ = tokio::time::timeout(wait, core.wake.notified()).await;
            }
            Work::Invals(claimed, ticket) => send_invals(&core, claimed, ticket).await,
            Work::Upload(u, ticket) => send_upload(&core, u, ticket).await,
        }
    }
}

/// Tells the tier's backoff how a request it let through fared, and the state whether
/// a write over an existing object was taken since (conditional writes refused at every
/// attempt are then no longer the state).
fn tier_outcome<T>(core: &Core, ticket: Ticket, r: &Result<T, objmapper_remote::Error>) {
    if r.is_ok() {
        core.health.replaced(core.remote.stats().replaced);
    }
    let mut tier = core.tier.lock();
    match r {
        Err(e) if tier_fails(e) => tier.failed(ticket, Instant::now()),
        // Answered (a lost race, a refusal of one object is an answer too): the tasks
        // waiting for the tier go at once.
        _ => {
            if tier.answered() {
                core.wake.notify_waiters();
            }
        }
    }
}

async fn send_invals(core: &Arc<Core>, claimed: Vec<Inval>, ticket: Ticket) {
    let r = match &claimed[0] {
        Inval::Delete(s, k) => {
            let stamp = Stamp {
                time_ns: *s,
                host: core.host.clone(),
            };
            core.remote.delete(k, &stamp).await
        }
        Inval::Purge(..) => {
            let purges: Vec<_> = claimed
                .iter()
                .filter_map(|i| match i {
                    Inval::Purge(s, p) => Some((
                        p.to_vec(),
                        Stamp {
                            time_ns: *s,
                            host: core.host.clone(),
                        },
                    )),
                    Inval::Delete(..) => None,
                })
                .collect();
            core.remote
                .purge_prefixes(&purges)
                .await
                .map(|()| Outcome::Stored)
        }
    };
    core.note_purges("delete or purge", &r);
    tier_outcome(core, ticket, &r);
    match r {
        Ok(_) => {
            for i in &claimed {
                core.invals.lock().settled(i);
                let _ = core.journal.lock().settled(i);
                if let (Inval::Delete(s, k), Some(store)) = (i, store_of(core)) {
                    store.settle_tombstone(k, *s);
                }
            }
            core.progressed();
        }
        Err(e) if retry_later(&e) => {
            tracing::debug!(error = %e, "remote tier: invalidation failed; retrying after a backoff");
            let now = Instant::now();
            let mut v = core.invals.lock();
            for i in &claimed {
                v.failed(i, now);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, count = claimed.len(), "remote tier: giving up on an invalidation");
            for i in &claimed {
                core.invals.lock().settled(i);
                let _ = core.journal.lock().settled(i);
            }
            core.progressed();
        }
    }
}

async fn send_upload(core: &Arc<Core>, u: Upload, ticket: Ticket) {
    let r = upload(core, &u).await;
    if matches!(r, Ok(None)) {
        core.tier.lock().unused(ticket);
    } else {
        tier_outcome(core, ticket, &r);
    }
    match r {
        Ok(_) => {
            core.queue.lock().done(&u);
            core.progressed();
        }
        Err(e) if retry_later(&e) => {
            tracing::debug!(key = %u.key.escape_ascii(), error = %e, "remote tier: upload failed; retrying after a backoff");
            // Back in the queue, not taken before its backoff (unless a newer version
            // came, which is sent instead).
            let mut q = core.queue.lock();
            q.done(&u);
            q.retry(u, Instant::now());
        }
        Err(e) => {
            core.queue.lock().done(&u);
            core.progressed();
            core.counters.uploads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %u.key.escape_ascii(), error = %e, "remote tier: upload refused; not retried");
        }
    }
}

/// Uploads one local version, if it is still the current one: what the tier said, or
/// `None` when nothing was sent.
async fn upload(core: &Arc<Core>, u: &Upload) -> Result<Option<Outcome>, objmapper_remote::Error> {
    let Some(store) = store_of(core) else {
        return Ok(None);
    };
    let obj = match store.open_for_cold(&u.key, u.version) {
        Ok(Some(o)) => o,
        // Superseded (its successor was queued), deleted or evicted: nothing to send.
        _ => {
            core.counters
                .uploads_skipped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
    };
    let record = record_of(&obj.meta);
    let mtime_ns = obj.meta.mtime_ns;
    let stamp = Stamp {
        time_ns: obj.meta.mtime_ns,
        host: core.host.clone(),
    };
    let r = if obj.meta.size <= core.settings.client.multipart_threshold {
        // One PUT: the bytes go up in one buffer anyway, so read them in one go, once
        // the upload's share of the memory is free.
        let load = async move { read_small(obj).await.map(Into::into) };
        core.remote.put_loaded(&record, &stamp, load).await
    } else {
        let file = tokio::fs::File::from_std(obj.file);
        core.remote.put(&record, &stamp, file).await
    };
    core.note_purges("upload", &r);
    if let Ok(Outcome::Superseded(newer)) = &r {
        if newer.time_ns > mtime_ns {
            // The tier holds a newer version of the key (another host's, or a delete
            // or purge): this copy lost, so it goes here too, and the next GET reads
            // the newer one through: every host converges on the tier's version. (As
            // a delete of what came before the newer one: a nanosecond earlier, since
            // a fill must be newer than a delete applied here.)
            let gone =
                tokio::task::block_in_place(|| store.apply_cold_delete(&u.key, newer.time_ns - 1));
            if let Err(e) = gone {
                tracing::warn!(key = %u.key.escape_ascii(), error = %e, "remote tier: cannot drop a superseded local version");
            }
        }
    }
    r.map(Some)
}

/// The bytes of a version small enough for one PUT (at most `multipart_threshold`),
/// read at once (two `read`s: the bytes, then the end of the file). A version of at
/// most [`INLINE_READ`] bytes in the memory tier is read right here: its file is on
/// tmpfs, so the read is a copy out of memory and never waits for a device. Larger
/// ones, and any only on disk, are read on a blocking thread. (Through `tokio::fs`
/// each read was two hand-offs to the blocking pool and a copy through its buffer:
/// 0.15 to 0.2 ms a 64 KiB upload on a loaded 2-core host, against 0.04 ms read here.)
async fn read_small(obj: objmapper_store::Object) -> Result<Vec<u8>, objmapper_remote::Error> {
    fn read(obj: &objmapper_store::Object) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        // One byte more than the size, so that a longer file is seen (and refused by
        // the client's check against the record).
        let mut v = Vec::with_capacity(obj.meta.size as usize + 1);
        (&obj.file).take(obj.meta.size + 1).read_to_end(&mut v)?;
        Ok(v)
    }
    let r = if obj.meta.tier == Tier::Disk || obj.meta.size > INLINE_READ {
        tokio::task::spawn_blocking(move || read(&obj))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        read(&obj)
    };
    r.map_err(|source| objmapper_remote::Error::Io {
        op: "put",
        what: "reading the object's bytes".into(),
        source,
    })
}

/// An upload of at most this many bytes from the memory tier is read on the upload's
/// task (a copy out of tmpfs of at most about 0.1 ms); a larger one on a blocking
/// thread, so that reading up to `multipart_threshold` bytes never holds a runtime
/// thread for milliseconds.
const INLINE_READ: u64 = 1 << 20;
