//! The remote tier: the store's cold tier on S3-compatible storage shared by many hosts
//! (crates/remote), run on its own tokio runtime next to the workers.
//!
//! - **Write-behind**: the store reports each persistent commit ([`ColdTier`]); the
//!   upload is queued ([`queue`]) and sent by `upload_concurrency` tasks, which read the
//!   version back from the store and skip it if it is no longer current. A PUT never
//!   waits. Deletes and purges are journaled ([`journal`]) and sent first.
//! - **Read-through**: a GET or HEAD that misses both local tiers asks
//!   [`RemoteTier::read_through`]; one fetch per key runs at a time, into a fill that the
//!   store publishes as a local object (`Staging::commit_fill`), and the request is
//!   answered again from the local store, within `remote_timeout` in any case.
//! - **Invalidation**: every `poll_interval` the shared event log is read and other
//!   hosts' deletes and purges are applied to the local tiers with their stamps.
//!
//! The tier failing never blocks a request: a fetch is bounded, uploads back off
//! ([`backoff`]; sent by [`uploads`]) and the queue drops its oldest entries when full.

mod backoff;
mod check;
mod events;
mod fill;
mod gate;
mod health;
mod invals;
mod journal;
mod queue;
mod resume;
mod stats;
mod sweep;
mod uploads;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use objmapper_remote::{Config as RemoteConfig, HostId, Record, Remote, Stamp};
use objmapper_store::{BanInfo, ColdTier, ObjectMeta, Store};
use parking_lot::Mutex;

pub(crate) use health::Health;
use health::Tracker;
use invals::Invals;
use journal::{Inval, Journal};
use queue::{Queue, Upload};
pub(crate) use resume::refuse_to_run_detached;
use stats::Counters;
pub(crate) use stats::{RemoteState, ERROR_KINDS, READ_THROUGH_BUCKETS};

/// The remote tier's settings beyond the client's own.
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    /// The S3 client's configuration (bucket, prefix, endpoint, credentials, timeouts).
    pub client: RemoteConfig,
    /// Most uploads waiting at once. Default = 100 000.
    pub queue_max_objects: usize,
    /// Most bytes of uploads waiting at once. Default = 1 GiB.
    pub queue_max_bytes: u64,
    /// Most read-throughs (remote fetches of distinct keys) running at once; a miss
    /// beyond them answers NOT_FOUND at once, without a fetch. Default = 64.
    pub max_fetches: usize,
}

impl RemoteSettings {
    /// Settings for `url` (`s3://bucket/prefix`) with every other value at its default.
    pub fn for_url(url: &str) -> Result<RemoteSettings, String> {
        let client = RemoteConfig::from_url(url).map_err(|e| e.to_string())?;
        Ok(RemoteSettings {
            client,
            queue_max_objects: 100_000,
            queue_max_bytes: 1 << 30,
            max_fetches: 64,
        })
    }

    /// Checks what each setting alone cannot: the event retention against the poll
    /// interval and the lookback. Done again by the server at start; a configuration
    /// checks it first, before any store is opened.
    pub fn check(&self) -> Result<(), String> {
        let c = &self.client;
        let least = 2 * (c.poll_interval + c.event_lookback);
        if c.event_retention < least {
            return Err(format!(
                "event_retention {:?} is shorter than twice the sum of the poll interval \
                 and the event lookback ({least:?}): hosts would prune events before the others \
                 read them; give at least {least:?} (--remote-event-retention), or a \
                 shorter poll interval",
                c.event_retention
            ));
        }
        Ok(())
    }

    /// The defaults (for a placeholder bucket): what `--help` and the README show.
    pub fn defaults() -> RemoteSettings {
        RemoteSettings::for_url("s3://bucket").expect("a valid URL")
    }
}

/// Longest a flush waits without looking at the queue again.
const FLUSH_NUDGE: Duration = Duration::from_millis(100);

/// The remote tier, attached to the store.
pub(crate) struct RemoteTier {
    core: Arc<Core>,
    rt: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for RemoteTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTier")
            .field("core", &self.core)
            .finish()
    }
}

/// Who waits for a fetch: called once when it ends (or its wait timed out).
type Waiter = Box<dyn FnOnce() + Send>;

/// What the tasks share.
pub(crate) struct Core {
    remote: Remote,
    store: OnceLock<Weak<Store>>,
    host: HostId,
    settings: RemoteSettings,
    queue: Mutex<Queue>,
    /// Deletes and purges made here that the tier does not have yet.
    invals: Mutex<Invals>,
    /// Whether the tier as a whole fails, and when the upload tasks may send again.
    tier: Mutex<backoff::Tier>,
    journal: Mutex<Journal>,
    wake: tokio::sync::Notify,
    /// Bumped, with `progress_cv` notified, whenever an upload or an invalidation
    /// finishes: what [`RemoteTier::flush`] waits on.
    progress: Mutex<u64>,
    progress_cv: parking_lot::Condvar,
    /// Fetches running, with who waits for each.
    fetching: Mutex<HashMap<Box<[u8]>, Vec<Waiter>>>,
    counters: Counters,
    refusals: fill::RefusalLog,
    stop: AtomicBool,
    /// How the endpoint answers: set by every request's outcome.
    health: Tracker,
    /// Time of the last successful poll of the event log (ns), 0 before the first.
    last_poll: AtomicU64,
    /// Shut until the store has shown that it honours conditional writes.
    gate: gate::Gate,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("remote::Core")
            .field("remote", &self.remote)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// `s3://bucket/prefix at endpoint`: what logs and the admin API name (no credential).
fn describe(c: &RemoteConfig) -> String {
    let at = c.endpoint.as_deref().unwrap_or("AWS");
    format!("s3://{}/{} at {at}", c.bucket, c.prefix)
}

fn store_of(core: &Core) -> Option<Arc<Store>> {
    core.store.get().and_then(Weak::upgrade)
}

/// The remote form of a local version's record.
fn record_of(m: &ObjectMeta) -> Record {
    Record {
        key: m.key.to_vec(),
        version: m.version,
        size: m.size,
        mtime_ns: m.mtime_ns,
        checksum: m.checksum,
        expires_at: m.expires_at,
        pinned: false,
        ephemeral: false,
        content_type: m.content_type.as_deref().map(str::to_string),
        custom: m
            .custom
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
    }
}

impl RemoteTier {
    /// Starts the remote tier for `store`: replays its journal (in the data directory),
    /// requeues what was not uploaded, attaches it to the store and starts its tasks.
    /// Makes no request to the endpoint (a tier that is down is not an error at start).
    pub(crate) fn start(
        settings: RemoteSettings,
        host: &str,
        store: &Arc<Store>,
    ) -> Result<RemoteTier, crate::ServerError> {
        use crate::ServerError;
        let config = |e: String| ServerError::Config(format!("remote tier: {e}"));
        let host = HostId::new(host).map_err(|e| ServerError::Config(format!("host_id: {e}")))?;
        settings.check().map_err(|e| config(e.to_string()))?;
        let client = settings.client.clone().with_host(host.clone());
        let remote = Remote::new(client).map_err(|e| config(e.to_string()))?;
        // The data directory failing is not a configuration error: a restart may help.
        let journal_path = PathBuf::from(store.data_dir()).join(journal::FILE);
        let io = |e: std::io::Error| {
            ServerError::io(
                format!(
                    "remote tier: cannot open or write {}",
                    journal_path.display()
                ),
                e,
            )
        };
        let (mut journal, replayed) = Journal::open(store.data_dir()).map_err(io)?;
        let resume::Resumed {
            queue: q,
            invals,
            events_from,
        } = resume::resume(store, &settings, &mut journal, replayed).map_err(|e| match e {
            resume::Error::Journal(e) => io(e),
            resume::Error::Store(e) => config(e),
        })?;
        let health = Tracker::new(&settings.client.credentials);
        let core = Arc::new(Core {
            remote,
            store: OnceLock::new(),
            host,
            settings,
            queue: Mutex::new(q),
            invals: Mutex::new(Invals::new(invals)),
            tier: Mutex::new(backoff::Tier::default()),
            journal: Mutex::new(journal),
            wake: tokio::sync::Notify::new(),
            progress: Mutex::new(0),
            progress_cv: parking_lot::Condvar::new(),
            fetching: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            refusals: fill::RefusalLog::default(),
            stop: AtomicBool::new(false),
            health,
            last_poll: AtomicU64::new(0),
            gate: gate::Gate::default(),
        });
        let _ = core.store.set(Arc::downgrade(store));
        for i in core.invals.lock().iter() {
            if let Inval::Purge(stamp, prefix) = i {
                core.know_pending_purge(prefix, *stamp);
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("objm-remote")
            .enable_all()
            .build()
            .map_err(|e| ServerError::io("remote tier: starting its runtime".into(), e))?;
        if !store.attach_cold(core.clone()) {
            return Err(config("the store already has a cold tier".into()));
        }
        rt.spawn(gate::check_loop(core.clone()));
        for _ in 0..core.settings.client.upload_concurrency.max(1) {
            rt.spawn(uploads::upload_loop(core.clone()));
        }
        rt.spawn(events::event_loop(core.clone(), events_from));
        rt.spawn(events::prune_loop(core.clone()));
        rt.spawn(watermark_loop(core.clone()));
        tracing::info!(remote = %describe(&core.settings.client), "remote tier attached");
        Ok(RemoteTier { core, rt: Some(rt) })
    }

    /// Fetches `key` from the remote tier into the local store if it is there, then
    /// calls `done` (on another thread): after the fill is published, when the remote
    /// tier has no such object or fails, or after the configured timeout, whichever
    /// comes first. Concurrent calls for one key share one fetch. When
    /// [`RemoteSettings::max_fetches`] fetches of other keys are running, `done` is
    /// called at once, on this thread, without a fetch. The caller looks the key up
    /// locally again in `done`.
    pub(crate) fn read_through(&self, key: &[u8], done: Waiter) {
        let Some(rt) = &self.rt else { return done() };
        if self.core.gate.unguarded() {
            // The store breaks the rules between hosts: nothing is read from it.
            return done();
        }
        let once = Arc::new(Mutex::new(Some(done)));
        let waiter: Waiter = {
            let once = once.clone();
            Box::new(move || {
                if let Some(f) = once.lock().take() {
                    f();
                }
            })
        };
        let joined = {
            let mut f = self.core.fetching.lock();
            let full = f.len() >= self.core.settings.max_fetches.max(1);
            if let Some(w) = f.get_mut(key) {
                w.push(waiter);
                Ok(false)
            } else if full {
                // Every fetch slot taken: a storm of misses on distinct keys does not
                // become as many remote requests, staged files and sockets.
                Err(waiter)
            } else {
                f.insert(key.into(), vec![waiter]);
                Ok(true)
            }
        };
        match joined {
            Err(waiter) => {
                self.core
                    .counters
                    .fetches_refused
                    .fetch_add(1, Ordering::Relaxed);
                return waiter();
            }
            Ok(true) => {
                rt.spawn(fill::fetch(self.core.clone(), key.into()));
            }
            Ok(false) => {}
        }
        let timeout = self.core.settings.client.timeout;
        rt.spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(f) = once.lock().take() {
                f();
            }
        });
    }

    /// The tier's state for `/v1/stats`, `/metrics` and `objmapper stats`.
    pub(crate) fn state(&self) -> RemoteState {
        self.core.state()
    }

    /// Whether `key`'s local version `version` is not on the tier yet: its upload
    /// waits, or is being sent (and may still fail and be retried). What every answer
    /// of "uploaded or not" asks (`objmapper stat`, the object JSON, `remote check`).
    pub(crate) fn upload_pending(&self, key: &[u8], version: u64) -> bool {
        let q = self.core.queue.lock();
        q.is_pending(key, version) || q.is_running(key, version)
    }

    /// Uploads everything pending now, waiting at most `timeout`; returns whether the
    /// queue drained. Returns as soon as the last upload or invalidation finishes: the
    /// upload tasks signal every one that ends.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let core = &self.core;
        let deadline = Instant::now() + timeout;
        loop {
            // Read the count before looking, so that an upload ending after the look
            // changes it and the wait below does not start (or ends at once).
            let seen = *core.progress.lock();
            core.wake.notify_waiters();
            if core.drained() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Look again at least every FLUSH_NUDGE, to wake idle upload tasks again
            // (in case work came without a wake) even when nothing finishes.
            let until = deadline.min(now + FLUSH_NUDGE);
            let mut n = core.progress.lock();
            while *n == seen && !core.progress_cv.wait_until(&mut n, until).timed_out() {}
        }
    }
}

impl Drop for RemoteTier {
    fn drop(&mut self) {
        self.core.stop.store(true, Ordering::Release);
        self.core.wake.notify_waiters();
        if let Some(rt) = self.rt.take() {
            // Record how far the uploads got; what is left resumes at the next start.
            let w = self.core.queue.lock().watermark();
            let _ = self.core.journal.lock().watermark(w);
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl ColdTier for Core {
    fn committed(&self, meta: &Arc<ObjectMeta>) {
        let dropped = self.queue.lock().push(Upload {
            key: meta.key.clone(),
            version: meta.version,
            stamp: meta.mtime_ns,
            size: meta.size,
            since: Instant::now(),
            failures: 0,
        });
        for d in &dropped {
            tracing::warn!(
                key = %d.key.escape_ascii(),
                version = d.version,
                "remote tier: upload queue full (remote_queue_max_objects or \
                 remote_queue_max_bytes): dropped the oldest pending upload"
            );
            // Kept across a restart: evicted later, it becomes a delete.
            let r = self.journal.lock().dropped(&d.key, d.version);
            r.unwrap_or_else(|e| tracing::warn!(error = %e, "remote tier: cannot journal it"));
        }
        self.wake.notify_one();
    }

    fn deleted(&self, key: &[u8], stamp_ns: u64) {
        self.invalidate(Inval::Delete(stamp_ns, key.into()));
    }

    fn banned(&self, ban: &BanInfo) {
        // Bans other than a purge by prefix have no remote form: they stay local.
        self.counters.bans_local.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            expr = %ban.expr.escape_ascii(),
            "remote tier: a ban applies to this host only (purge by prefix reaches every host)"
        );
    }

    fn purged(&self, prefix: &[u8], stamp_ns: u64) {
        self.invalidate(Inval::Purge(stamp_ns, prefix.into()));
    }

    fn unsent(&self, key: &[u8], version: u64) -> bool {
        // One being sent may fail and find it gone at its retry; a dropped one never went.
        let q = self.queue.lock();
        q.is_pending(key, version) || q.is_running(key, version) || q.was_dropped(key, version)
    }

    fn lost_before_upload(&self, key: &[u8], stamp_ns: u64) {
        tracing::warn!(key = %key.escape_ascii(), "remote tier: a version was evicted before \
            its upload: sent as a delete at its stamp, so no host serves what it replaced");
        self.invalidate(Inval::Delete(stamp_ns, key.into()));
    }
}

impl Core {
    fn invalidate(&self, i: Inval) {
        if let Inval::Purge(stamp, prefix) = &i {
            self.know_pending_purge(prefix, *stamp);
        }
        if let Err(e) = self.journal.lock().pending(&i) {
            tracing::error!(error = %e, "remote tier: cannot journal a delete or purge; it reaches the other hosts only if this process keeps running");
        }
        self.invals.lock().push(i);
        self.wake.notify_one();
    }

    /// Tells the client of a purge made here before the tier has it (at the purge, and
    /// for the pending ones at start): its reads refuse what it covers meanwhile.
    fn know_pending_purge(&self, prefix: &[u8], stamp: u64) {
        let stamp = Stamp {
            time_ns: stamp,
            host: self.host.clone(),
        };
        self.remote.know_purge(prefix, &stamp);
    }

    /// Nothing queued, running or pending: every upload and invalidation so far is done.
    fn drained(&self) -> bool {
        let q = self.queue.lock();
        q.len() == 0 && q.running() == 0 && self.invals.lock().is_empty()
    }

    /// An upload or invalidation finished: wakes [`RemoteTier::flush`].
    fn progressed(&self) {
        *self.progress.lock() += 1;
        self.progress_cv.notify_all();
    }

    fn state(&self) -> RemoteState {
        let (health, last_error) = match self.gate.unguarded_error() {
            Some(e) => (Health::Unguarded, Some(e)),
            None => self.health.get(),
        };
        let (objects, bytes, age, dropped, running) = {
            let mut q = self.queue.lock();
            (q.len(), q.bytes(), q.oldest_age(), q.dropped, q.running())
        };
        RemoteState {
            name: describe(&self.settings.client),
            host: self.host.as_str().to_string(),
            health,
            last_error,
            queue_objects: objects as u64,
            queue_bytes: bytes,
            queue_oldest_seconds: age.map_or(0.0, |a| a.as_secs_f64()),
            uploads_running: running as u64,
            fetches_running: self.fetching.lock().len() as u64,
            uploads_dropped: dropped,
            invalidations_pending: self.invals.lock().len() as u64,
            last_poll_ns: self.last_poll.load(Ordering::Relaxed),
            client: self.remote.stats(),
            counters: self.counters.snapshot(),
        }
    }

    /// Counts and tracks the outcome of a request of the kind `what` (named in the
    /// log; the state is kept per kind, `health/`).
    fn note<T>(&self, what: &'static str, r: &Result<T, objmapper_remote::Error>) {
        match r {
            Ok(_) => self.health.answered(what),
            Err(e) => {
                self.counters.error(e.kind());
                self.health.failed(what, e);
            }
        }
    }

    /// [`Core::note`] of a request that needed the purge set: its success also clears
    /// a damaged purge set from the state.
    fn note_purges<T>(&self, what: &'static str, r: &Result<T, objmapper_remote::Error>) {
        match r {
            Ok(_) => self.health.answered_with_purges(what),
            Err(_) => self.note(what, r),
        }
    }
}

/// Records the upload watermark every second.
async fn watermark_loop(core: Arc<Core>) {
    while !core.stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let w = core.queue.lock().watermark();
        if let Err(e) = core.journal.lock().watermark(w) {
            tracing::warn!(error = %e, "remote tier: cannot record the upload watermark");
        }
    }
}
