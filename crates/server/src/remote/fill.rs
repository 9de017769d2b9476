//! Read-through: one remote fetch of a key into a local fill, and the fills the store
//! refuses.
//!
//! A fill the store would refuse (a ban, a retired ban kept for fills or the fill floor
//! covers the version, a delete remembered here is newer, it cannot fit) is refused
//! from the version's header, before its bytes are fetched
//! ([`Store::check_fill`](objmapper_store::Store::check_fill));
//! the commit may still refuse one whose store changed during the download, or that
//! found no room. Either way the refusal is counted (`fills_refused`), logged at INFO
//! (rate-limited) and remembered like a miss for `miss_ttl`, so that a storm of GETs of
//! the key does not download it again and again only to throw it away.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use objmapper_store::{CommitError, Origin, PutMeta, Staging, StoreError};
use parking_lot::Mutex;

use super::{store_of, Core};

/// A fill of at most this many bytes is committed on the fetching task's thread
/// (`block_in_place`) rather than on the blocking pool.
const INLINE_COMMIT: u64 = 64 << 10;

/// At most one refused fill is logged at INFO in this long; the others at DEBUG,
/// counted in the next INFO line (a ban covering many keys read at once is one line a
/// second, not one a key).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// What a fetch came to.
enum Fetched {
    /// Published locally.
    Filled,
    /// The tier has no live version (or the miss was remembered).
    Missed,
    /// The store refused the version: `why`, and whether its bytes were downloaded.
    Refused { why: String, downloaded: bool },
}

/// The INFO lines about refused fills, rate-limited ([`REFUSAL_LOG_EVERY`]).
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// When the last INFO line was written, and the refusals logged at DEBUG since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn log(&self, key: &[u8], why: &str, downloaded: bool, miss_ttl: Duration) {
        let quiet = {
            let mut s = self.state.lock();
            match s.0 {
                Some(t) if t.elapsed() < REFUSAL_LOG_EVERY => {
                    s.1 += 1;
                    None
                }
                _ => {
                    s.0 = Some(Instant::now());
                    Some(std::mem::take(&mut s.1))
                }
            }
        };
        match quiet {
            Some(more) => tracing::info!(
                key = %key.escape_ascii(),
                reason = why,
                downloaded,
                remembered_for = ?miss_ttl,
                refused_since_last_line = more,
                "remote tier: this host refused the tier's version of a key (counted in \
                 fills_refused): it is not read through, and not asked for again within \
                 remote_miss_ttl_ms"
            ),
            None => tracing::debug!(
                key = %key.escape_ascii(),
                reason = why,
                downloaded,
                "remote tier: a fill was refused here"
            ),
        }
    }
}

/// One remote fetch into a local fill; wakes every waiter for the key at the end.
pub(super) async fn fetch(core: Arc<Core>, key: Box<[u8]>) {
    let started = Instant::now();
    let remembered = core.remote.remembers_miss(&key);
    let r = fetch_into_store(&core, &key, remembered).await;
    // A miss answered from the remembered ones made no request: not a read-through.
    if !(remembered && matches!(r, Ok(Fetched::Missed))) {
        core.counters
            .read_through(started.elapsed(), matches!(r, Ok(Fetched::Filled)));
    }
    match &r {
        Err(e) => {
            tracing::debug!(key = %key.escape_ascii(), error = %e, "remote tier: read-through failed");
        }
        Ok(Fetched::Refused { why, downloaded }) => {
            core.counters.fills_refused.fetch_add(1, Ordering::Relaxed);
            // One declined from its header is remembered by the client already.
            if *downloaded {
                core.remote.remember_miss(&key);
            }
            let ttl = core.settings.client.miss_ttl;
            core.refusals.log(&key, why, *downloaded, ttl);
        }
        Ok(Fetched::Filled | Fetched::Missed) => {}
    }
    let waiters = core.fetching.lock().remove(&key).unwrap_or_default();
    for w in waiters {
        w();
    }
}

/// Why the store refuses a fill, if that is what `e` says: a precondition (a ban, a
/// delete, the fill floor, a live local version, ...) or no room. Other failures are
/// failures, not refusals.
fn refusal(e: &StoreError) -> Option<String> {
    match e {
        StoreError::PreconditionFailed(m) | StoreError::NoSpace(m) => Some(m.clone()),
        _ => None,
    }
}

/// Fetches `key` and publishes it locally. `remembered`: a miss is remembered for it
/// (then an absent answer made no request).
async fn fetch_into_store(
    core: &Arc<Core>,
    key: &[u8],
    remembered: bool,
) -> Result<Fetched, String> {
    let Some(store) = store_of(core) else {
        return Ok(Fetched::Missed);
    };
    if !core.gate.open_within(core.settings.client.timeout).await {
        return Ok(Fetched::Missed);
    }
    // Up before the tier is asked: a delete, write, purge or ban of the key here from
    // now on voids the fill (what the store remembers of them may be gone by its end).
    let fence = store.fence_fill(key).map_err(|e| e.to_string())?;
    // Staged once the record says how large the version is: where the commit will
    // place it (a large one on disk, not in memory), so that the commit is a rename.
    let mut staged: Option<Staging> = None;
    let mut declined: Option<String> = None;
    let found = core
        .remote
        .get_with(key, |found| {
            let rec = &found.record;
            // What the store would refuse at the commit, from the header alone: the
            // bytes are not fetched.
            let meta = PutMeta {
                content_type: rec.content_type.clone(),
                custom: rec.custom.clone(),
                expires_at: rec.expires_at,
            };
            let origin = Origin {
                stamp_ns: found.stamp.time_ns,
                checksum: rec.checksum,
            };
            if let Err(e) = store.check_fill(&fence, &meta, origin, rec.size) {
                declined = Some(e.to_string());
                return Ok(None);
            }
            let s = store
                .begin_fill_fenced(&fence, rec.size)
                .map_err(std::io::Error::other)?;
            let fd = s
                .fd()
                .ok_or_else(|| std::io::Error::other("a fill has a file"))?
                .try_clone_to_owned()?;
            staged = Some(s);
            Ok(Some(File::from(fd)))
        })
        .await;
    // A remembered miss is no answer of the tier's: it would clear a failing state.
    if !(remembered && matches!(found, Ok(None))) {
        core.note_purges("read-through", &found);
    }
    let found = match found {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Ok(match declined {
                Some(why) => Fetched::Refused {
                    why,
                    downloaded: false,
                },
                None => Fetched::Missed,
            })
        }
        Err(e) => return Err(e.to_string()),
    };
    let staging = staged.ok_or("a fetched version without a staged file")?;
    let rec = found.record;
    let meta = PutMeta {
        content_type: rec.content_type,
        custom: rec.custom,
        expires_at: rec.expires_at,
    };
    let origin = Origin {
        stamp_ns: found.stamp.time_ns,
        checksum: rec.checksum,
    };
    let size = rec.size;
    let r = commit(staging, size, meta, origin).await?;
    let e = match r {
        Ok(()) => return Ok(Fetched::Filled),
        Err(e) => e,
    };
    match &e {
        CommitError::Store(s) => match refusal(s) {
            Some(why) => Ok(Fetched::Refused {
                why,
                downloaded: true,
            }),
            None => Err(format!("the fill was not published: {e}")),
        },
        _ => Err(format!("the fill was not published: {e}")),
    }
}

/// Publishes a fill. The commit may copy into a tier's file, or make room by writing a
/// memory object to disk: work that can block, kept off the runtime's threads. A small
/// fill's is usually a rename and a journal record, cheaper than a hop to another
/// thread: it runs here, with the worker's other tasks handed to another thread
/// meanwhile. (The client checked the bytes' xxh3 against the record as it wrote them.)
async fn commit(
    staging: Staging,
    size: u64,
    meta: PutMeta,
    origin: Origin,
) -> Result<Result<(), CommitError>, String> {
    let commit = move || staging.commit_fill_hashed(size, meta, origin).map(|_| ());
    if size <= INLINE_COMMIT {
        Ok(tokio::task::block_in_place(commit))
    } else {
        tokio::task::spawn_blocking(commit)
            .await
            .map_err(|e| format!("fill task: {e}"))
    }
}
