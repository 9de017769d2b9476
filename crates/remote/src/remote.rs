//! The client: reads, conditional writes, tombstones and the invalidation log.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::capped::collect;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
    UpdateVersion, WriteMultipart,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{Config, CredentialSource, Credentials};
use crate::creds::FileCredentials;
use crate::error::{is_absent, Error, Result};
use crate::format::{self, Body, Event, EventKind, Header, Record, Stamp};
use crate::purges::{self, Purges};

mod appended;
mod clock;
mod guard;
mod pruned;
mod retire;
mod sweep;
pub use sweep::{Reclaim, Sweep, SweepClaim};

/// A fill's bytes go to its file in writes of about this many bytes.
const WRITE_BATCH: u64 = 1 << 20;
/// A fill of at most this many bytes that arrived whole is written on the task's own
/// thread (its destination is in memory: a staging file or a memfd).
const INLINE_WRITE: u64 = 64 << 10;
/// How many times a conditional write re-reads and retries after losing a race.
const MAX_ATTEMPTS: u32 = 16;
/// The first range read of a header: enough for every header without large metadata.
const HEADER_PROBE: u64 = 8 * 1024;
/// Most misses remembered at once.
const MISS_CACHE_MAX: usize = 65_536;

/// What a remote object holds: its record and when and where it was committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The object's record (key, size, checksum, expiry, metadata, ...).
    pub record: Record,
    /// Its commit stamp: the version's place in the "larger stamp wins" order.
    pub stamp: Stamp,
}

/// What a write (put or delete) did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The remote tier now holds this version (or tombstone).
    Stored,
    /// The remote tier already holds exactly this stamp; nothing was written.
    AlreadyThere,
    /// Something newer wins: a version, a tombstone or a purge with a larger stamp.
    /// Nothing was written (the caller drops its pending upload).
    Superseded(Stamp),
}

/// Where [`Remote::poll_events`] goes on from. Keep one per host and pass it to
/// every poll.
#[derive(Clone, Debug)]
pub struct EventCursor {
    /// The largest event time seen (nanoseconds since the Unix epoch).
    watermark_ns: u64,
    /// Events seen within the lookback behind the watermark, by name.
    seen: HashSet<String>,
    /// Every event appended up to this time has been read (the start, then each poll's
    /// start less the lookback): what pruning takes up to here was read first.
    read_to_ns: u64,
    /// Events appended up to this time were pruned before a poll could read them.
    missed: Option<u64>,
}

impl EventCursor {
    /// A cursor that returns the events stamped from `since_ns` on (and those up to
    /// the lookback before it).
    pub fn since(since_ns: u64) -> Self {
        EventCursor {
            watermark_ns: since_ns,
            seen: HashSet::new(),
            read_to_ns: since_ns,
            missed: None,
        }
    }

    /// A cursor starting now.
    pub fn now() -> Self {
        Self::since(now_ns())
    }

    /// The largest event time seen so far.
    pub fn watermark_ns(&self) -> u64 {
        self.watermark_ns
    }

    /// Takes every event appended before `ns` as read: for a host that dropped what any
    /// of them could have covered (away longer than the log is kept), so that what was
    /// pruned before then is no loss ([`EventCursor::missed`]).
    pub fn skip_to(&mut self, ns: u64) {
        self.watermark_ns = self.watermark_ns.max(ns);
        self.read_to_ns = self.read_to_ns.max(ns);
    }

    /// Reads the log again from `by_ns` earlier on: for a place taken by a clock found
    /// since to run that far ahead of the store's ([`Remote::clock_offset_ns`]). Events
    /// read twice are applied twice, which changes nothing.
    pub fn rewind(&mut self, by_ns: u64) {
        self.watermark_ns = self.watermark_ns.saturating_sub(by_ns);
        self.read_to_ns = self.read_to_ns.saturating_sub(by_ns);
    }

    /// Whether events this cursor never returned were pruned from the log (by a host
    /// with a shorter retention, or while this one polled too seldom): the newest
    /// append time among them, once. A delete, overwrite or purge among them covers
    /// versions stamped before it, which the caller drops from its local copies.
    pub fn missed(&mut self) -> Option<u64> {
        self.missed.take()
    }
}

/// Counters since the client was made, for metrics (read with [`Remote::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Gets and heads that found a live version.
    pub hits: u64,
    /// Gets and heads that found none (absent, tombstone, expired, purged), the
    /// remembered misses included.
    pub misses: u64,
    /// Of those, answered from the miss cache without a request.
    pub cached_misses: u64,
    /// Remote objects refused by a check (damaged, wrong key, wrong bytes).
    pub corrupt: u64,
    /// Conditional writes that lost a race and read again.
    pub conflicts: u64,
    /// Puts and deletes that found something newer and wrote nothing.
    pub superseded: u64,
    /// Versions and tombstones written.
    pub stored: u64,
    /// Of those, written over an existing object (a conditional write with `If-Match`
    /// that the store took): the store honours the ETags it hands out.
    pub replaced: u64,
    /// Object bytes uploaded (headers not counted).
    pub bytes_up: u64,
    /// Object bytes received into local files.
    pub bytes_down: u64,
    /// Gets whose version the caller declined once its header was read
    /// ([`Remote::get_with`]): none of its bytes read, remembered like a miss, counted
    /// neither as a hit nor as a miss.
    pub declined: u64,
    /// Events returned by polls.
    pub events: u64,
    /// Events stamped with this client's host id that it did not append, appended
    /// after it started: another process uses the same host id (docs/STORAGE.md,
    /// "Host ids").
    pub same_host_id: u64,
    /// Prefixes this client knows to be purged (the purge set, and purges polled or
    /// made since): what its reads and uploads check.
    pub purges_known: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    cached_misses: AtomicU64,
    corrupt: AtomicU64,
    conflicts: AtomicU64,
    superseded: AtomicU64,
    stored: AtomicU64,
    replaced: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    declined: AtomicU64,
    events: AtomicU64,
    same_host_id: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The remote tier's client. Cheap to share (`Arc<Remote>`); every call is bounded in
/// time (see [`Config::timeout`] and [`Config::transfer_timeout`]).
pub struct Remote {
    cfg: Config,
    store: Arc<dyn ObjectStore>,
    uploads: Semaphore,
    /// The memory the uploads in flight hold, in KiB ([`Config::upload_memory`]).
    upload_memory: Semaphore,
    /// The events this client appended (names relative to the prefix, with when):
    /// a poll knows them by name, not by the host id in their stamps, which another
    /// process may share. Kept as long as a poll may list them.
    own_events: Mutex<HashMap<String, u64>>,
    /// The events this client appended, by content: each is appended once, however
    /// often the work that appends it is tried ([`appended`]).
    appended: Mutex<appended::Appended>,
    /// When this client was made (ns): an event with its host id appended earlier may
    /// be a previous run's.
    started_ns: u64,
    /// This host's clock less the store's (ns), as the last check of conditional writes
    /// measured it; 0 until then, or when within [`CLOCK_NOISE_NS`].
    clock_offset_ns: std::sync::atomic::AtomicI64,
    misses: Mutex<HashMap<String, Instant>>,
    /// Every purge this client knows: the purge set as read at the first read or
    /// upload, and each purge polled or made since.
    purges: RwLock<Purges>,
    /// Set once the purge set was read: no read or upload happens before.
    purges_read: tokio::sync::OnceCell<()>,
    counters: Counters,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("config", &self.cfg).finish()
    }
}

/// The encoded header of a version whose bytes follow it (an inline object, or the data
/// object of a multipart upload).
fn inline_header(record: &Record, stamp: &Stamp) -> Result<Vec<u8>> {
    Header {
        stamp: stamp.clone(),
        body: Body::Inline(record.clone()),
    }
    .encode()
    .map_err(Error::Invalid)
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn now_secs() -> u64 {
    now_ns() / 1_000_000_000
}

enum Current {
    Absent,
    /// A header that checks, with the object's ETag.
    Valid(Header, String),
    /// Something at the name that is not a valid header (damaged, foreign): any
    /// write replaces it.
    Damaged(String, String),
}

impl Remote {
    /// Connects (lazily: no request is made here) to the S3-compatible store
    /// `cfg` names. Fails on an invalid configuration or missing credentials.
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.check_endpoint()?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_virtual_hosted_style_request(false)
            // Requests are signed, bodies are not hashed into the signature: every
            // remote object carries its own xxh3 and header, checked on every read,
            // and off loopback the connection is TLS. That saves a SHA-256 pass over
            // every byte uploaded (about 37 us per 64 KiB, 5 ms per 8 MiB part here).
            .with_unsigned_payload(true)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(cfg.allow_http)
                    .with_connect_timeout(cfg.timeout)
                    .with_timeout(cfg.transfer_timeout),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: cfg.timeout,
                ..RetryConfig::default()
            })
            // Answers bounded (a lying Content-Length used to abort the process).
            .with_http_connector(crate::capped::CappedConnector);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        let with_key = |b: AmazonS3Builder, c: &Credentials| {
            let b = b
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(c.secret_access_key.expose());
            match &c.session_token {
                Some(t) => b.with_token(t.expose()),
                None => b,
            }
        };
        let env = |k: &str| std::env::var(k).ok();
        b = match &cfg.credentials {
            // Read again whenever the file changes: a rotated key needs no restart.
            CredentialSource::File(p) => b.with_credentials(Arc::new(FileCredentials::open(p)?)),
            CredentialSource::Static(c) => with_key(b, c),
            CredentialSource::Env => match Credentials::from_env() {
                Some(c) => with_key(b, &c),
                None => {
                    let ambient = crate::creds::ambient(env);
                    if ambient.is_empty() {
                        return Err(Config::no_credentials());
                    }
                    ambient.into_iter().fold(b, |b, (k, v)| b.with_config(k, v))
                }
            },
            // No key given: the builder falls back to the instance metadata service.
            CredentialSource::Instance => crate::creds::instance(env)
                .into_iter()
                .fold(b, |b, (k, v)| b.with_config(k, v)),
            CredentialSource::Anonymous => b.with_skip_signature(true),
        };
        // The builder's errors name the bad setting, never a secret.
        let store = b
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the S3 client: {e}")))?;
        Ok(Self::with_store(cfg, Arc::new(store)))
    }

    /// A client over any [`ObjectStore`] (tests use the in-memory one).
    pub fn with_store(cfg: Config, store: Arc<dyn ObjectStore>) -> Self {
        Remote {
            uploads: Semaphore::new(cfg.upload_concurrency.max(1)),
            upload_memory: Semaphore::new(memory_kib(cfg.upload_memory) as usize),
            own_events: Mutex::new(HashMap::new()),
            appended: Mutex::new(appended::Appended::default()),
            started_ns: now_ns(),
            clock_offset_ns: std::sync::atomic::AtomicI64::new(0),
            cfg,
            store,
            misses: Mutex::new(HashMap::new()),
            purges: RwLock::new(Purges::default()),
            purges_read: tokio::sync::OnceCell::new(),
            counters: Counters::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            hits: g(&c.hits),
            misses: g(&c.misses),
            cached_misses: g(&c.cached_misses),
            corrupt: g(&c.corrupt),
            conflicts: g(&c.conflicts),
            superseded: g(&c.superseded),
            stored: g(&c.stored),
            replaced: g(&c.replaced),
            bytes_up: g(&c.bytes_up),
            bytes_down: g(&c.bytes_down),
            declined: g(&c.declined),
            events: g(&c.events),
            same_host_id: g(&c.same_host_id),
            purges_known: self.purges.read().expect("not poisoned").len() as u64,
        }
    }

    /// Counts the outcome of a read.
    fn count_read<T>(&self, r: &Result<Option<T>>) {
        let c = &self.counters;
        match r {
            Ok(Some(_)) => bump(&c.hits, 1),
            Ok(None) => bump(&c.misses, 1),
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                bump(&c.corrupt, 1);
                tracing::warn!(error = %e, "refused a remote object");
            }
            // At most once per key and miss_ttl: the refusal is remembered as a miss.
            Err(e @ Error::TooLarge { .. }) => tracing::warn!(
                error = %e,
                "a host sharing the remote tier takes larger objects than this one: \
                 raise max_object_size here, or lower it there"
            ),
            Err(_) => {}
        }
    }

    /// Counts the outcome of a write.
    fn count_write(&self, r: &Result<Outcome>) {
        let c = &self.counters;
        match r {
            Ok(Outcome::Stored) => bump(&c.stored, 1),
            Ok(Outcome::Superseded(_)) => bump(&c.superseded, 1),
            _ => {}
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The full name of the remote object for `key` (`prefix/o/<sha256 hex>`): for
    /// operators looking in the bucket.
    pub fn name_of(&self, key: &[u8]) -> String {
        self.cfg.full_name(&format::object_name(key))
    }

    fn path(&self, name: &str) -> Path {
        Path::from(self.cfg.full_name(name))
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        bound: Duration,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(bound, f).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout { op, after: bound }),
        }
    }

    // ---- reading ----------------------------------------------------------------

    /// The record and stamp of `key`'s current remote version, or `None` if there is
    /// none: absent, deleted, expired, or covered by a purge this client knows of.
    /// Fails on a damaged object or one whose header names another key.
    pub async fn head(&self, key: &[u8]) -> Result<Option<Found>> {
        let r = self.head_inner(key).await;
        self.count_read(&r);
        r
    }

    async fn head_inner(&self, key: &[u8]) -> Result<Option<Found>> {
        self.know_purges().await?;
        let name = format::object_name(key);
        if self.recent_miss(&name) {
            bump(&self.counters.cached_misses, 1);
            return Ok(None);
        }
        let cur = self
            .bounded("head", self.cfg.timeout, self.read_current(&name))
            .await?;
        let found = match cur {
            Current::Absent => None,
            Current::Damaged(why, _) => {
                return Err(Error::corrupt(&self.cfg.full_name(&name), why));
            }
            Current::Valid(h, _) => self.live(&name, key, h)?,
        };
        if found.is_none() {
            self.note_miss(name);
        }
        Ok(found)
    }

    /// Checks that a header is for `key`; returns what a reader may use.
    fn live(&self, name: &str, key: &[u8], h: Header) -> Result<Option<Found>> {
        if h.body.key() != key {
            return Err(Error::corrupt(
                &self.cfg.full_name(name),
                "its header names another key",
            ));
        }
        let record = match h.body {
            Body::Tombstone(_) => return Ok(None),
            Body::Inline(r) | Body::Pointer(r, _) => r,
        };
        if record.is_expired_at(now_secs()) || self.purged(key, &h.stamp).is_some() {
            return Ok(None);
        }
        Ok(Some(Found {
            record,
            stamp: h.stamp,
        }))
    }

    /// Fetches `key` into `dest` (truncated first; its bytes are the object's from
    /// offset 0 when this returns `Ok(Some)`). The key in the remote header is
    /// compared with `key` and the bytes' length and xxh3-64 with the record before
    /// this returns: a mismatch is an [`ErrorKind::Corrupt`](crate::ErrorKind) error,
    /// and `dest` then holds no usable data. `None`: no live remote version.
    ///
    /// Bounds: [`Config::timeout`] for the answer and for each pause in the bytes,
    /// [`Config::transfer_timeout`] for the whole call.
    pub async fn get(&self, key: &[u8], dest: &std::fs::File) -> Result<Option<Found>> {
        self.get_with(key, |_| dest.try_clone().map(Some)).await
    }

    /// [`Remote::get`] into a file chosen once the version's record and stamp are
    /// known (its size decides where a host stages it), before any of its bytes are
    /// read: `dest` is called with them and returns the file to write (called again,
    /// for a new file, if the version changes under the read and it starts over). An
    /// error from `dest` fails the call ([`ErrorKind::Io`](crate::ErrorKind)).
    ///
    /// `dest` may also decline the version (`Ok(None)`: the caller would refuse it, a
    /// ban or a delete of its own covering it, say): none of its bytes are read, and
    /// the call returns `Ok(None)` and remembers the key like a miss
    /// ([`Config::miss_ttl`]), so that a storm of reads of it makes no more requests.
    /// Counted in [`RemoteStats::declined`], neither a hit nor a miss.
    pub async fn get_with<D>(&self, key: &[u8], mut dest: D) -> Result<Option<Found>>
    where
        D: FnMut(&Found) -> std::io::Result<Option<std::fs::File>> + Send,
    {
        let r = match self.get_inner(key, &mut dest).await {
            Ok(Got::Declined) => {
                bump(&self.counters.declined, 1);
                return Ok(None);
            }
            Ok(Got::Found(f)) => Ok(Some(f)),
            Ok(Got::None) => Ok(None),
            Err(e) => Err(e),
        };
        self.count_read(&r);
        if let Ok(Some(f)) = &r {
            bump(&self.counters.bytes_down, f.record.size);
        }
        r
    }

    async fn get_inner(&self, key: &[u8], dest: &mut Dest<'_>) -> Result<Got> {
        self.know_purges().await?;
        let name = format::object_name(key);
        if self.recent_miss(&name) {
            bump(&self.counters.cached_misses, 1);
            return Ok(Got::None);
        }
        let r = self
            .bounded("get", self.cfg.transfer_timeout, async {
                // A pointer's data object can vanish between the two reads when a newer
                // version replaces it; read the name again then (once is almost always
                // enough).
                let mut last = None;
                for _ in 0..3 {
                    match self.get_once(&name, key, dest).await {
                        Err(Retry::Again(e)) => last = Some(e),
                        Err(Retry::Fail(e)) => return Err(e),
                        Err(Retry::Declined) => return Ok(Got::Declined),
                        Ok(Some(f)) => return Ok(Got::Found(f)),
                        Ok(None) => return Ok(Got::None),
                    }
                }
                Err(last.expect("set"))
            })
            .await;
        // A version too large for this host, or declined, is remembered like a miss: a
        // storm of GETs for it does not become a storm of header reads.
        if matches!(
            r,
            Ok(Got::None | Got::Declined) | Err(Error::TooLarge { .. })
        ) {
            self.note_miss(name);
        }
        r
    }

    async fn get_once(
        &self,
        name: &str,
        key: &[u8],
        dest: &mut Dest<'_>,
    ) -> Result<Option<Found>, Retry> {
        let full = self.cfg.full_name(name);
        let Some(mut s) = self.open_stream("get", name).await? else {
            return Ok(None);
        };
        let h = match s.header().await {
            Ok(h) => h,
            Err(StreamErr::Bad(why)) => return Err(Retry::Fail(Error::corrupt(&full, why))),
            Err(StreamErr::Err(e)) => return Err(Retry::Fail(e)),
        };
        let data_ref = match &h.body {
            Body::Pointer(_, r) => Some(r.clone()),
            _ => None,
        };
        let stamp = h.stamp.clone();
        let Some(found) = self.live(name, key, h).map_err(Retry::Fail)? else {
            return Ok(None);
        };
        if found.record.size > self.cfg.max_object_size {
            return Err(Retry::Fail(Error::TooLarge {
                name: full.clone(),
                size: found.record.size,
                max: self.cfg.max_object_size,
            }));
        }
        // Asked before the bytes, and before a multipart version's data object is opened:
        // a version declined costs its header only.
        let file = dest(&found)
            .map_err(|e| Retry::Fail(Error::io("get", "opening the file to fetch into", e)))?;
        let Some(file) = file else {
            return Err(Retry::Declined);
        };
        // The object whose bytes are read: named in a refusal of them.
        let mut bytes_of = full.clone();
        if let Some(data) = data_ref {
            drop(s);
            let dfull = self.cfg.full_name(&data);
            let Some(mut d) = self.open_stream("get", &data).await? else {
                return Err(Retry::Again(Error::corrupt(
                    &dfull,
                    "the data object of a multipart upload is missing",
                )));
            };
            let dh = match d.header().await {
                Ok(h) => h,
                Err(StreamErr::Bad(why)) => {
                    return Err(Retry::Fail(Error::corrupt(&dfull, why)));
                }
                Err(StreamErr::Err(e)) => return Err(Retry::Fail(e)),
            };
            if dh.stamp != stamp || dh.body != Body::Inline(found.record.clone()) {
                return Err(Retry::Again(Error::corrupt(
                    &dfull,
                    "the data object's header differs from its pointer's",
                )));
            }
            s = d;
            bytes_of = dfull;
        }
        s.copy_into(&found.record, &file)
            .await
            .map_err(|e| match e {
                StreamErr::Bad(why) => Retry::Fail(Error::corrupt(&bytes_of, why)),
                StreamErr::Err(e) => Retry::Fail(e),
            })?;
        Ok(Some(found))
    }

    async fn open_stream(&self, op: &'static str, name: &str) -> Result<Option<BodyStream>> {
        let path = self.path(name);
        let r = self
            .bounded(op, self.cfg.timeout, async {
                match self.store.get_opts(&path, GetOptions::default()).await {
                    Ok(r) => Ok(Some(r)),
                    Err(e) if is_absent(&e) => Ok(None),
                    Err(e) => Err(Error::store(op, e)),
                }
            })
            .await?;
        Ok(r.map(|r| BodyStream {
            total: r.meta.size,
            stream: r.into_stream(),
            buf: Vec::new(),
            timeout: self.cfg.timeout,
        }))
    }

    /// The header at `name`, with the object's ETag: a range read of the first
    /// bytes, and a second one if the header is longer.
    async fn read_current(&self, name: &str) -> Result<Current> {
        let path = self.path(name);
        let first = match self
            .store
            .get_opts(
                &path,
                GetOptions::default().with_range(Some(GetRange::Bounded(0..HEADER_PROBE))),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if is_absent(&e) => return Ok(Current::Absent),
            Err(e) => return Err(Error::store("read", e)),
        };
        let etag = etag_of(&first.meta, "read")?;
        let mut buf = collect(first, HEADER_PROBE, "read").await?.to_vec();
        if buf.len() >= 10 && buf[..8] == format::MAGIC {
            let f = u16::from_le_bytes([buf[8], buf[9]]);
            if f > format::FORMAT {
                // Written by a newer objmapper: neither read nor replaced by this one.
                return Err(Error::corrupt(
                    path.as_ref(),
                    format!(
                        "remote format {f} is newer than this client's {}",
                        format::FORMAT
                    ),
                ));
            }
        }
        let len = match Header::peek_len(&buf) {
            Ok(l) => l,
            Err(why) => return Ok(Current::Damaged(why.into(), etag)),
        };
        if len > buf.len() {
            let rest = self
                .store
                .get_opts(
                    &path,
                    GetOptions::default()
                        .with_range(Some(GetRange::Bounded(buf.len() as u64..len as u64)))
                        .with_if_match(Some(etag.clone())),
                )
                .await;
            match rest {
                Ok(r) => {
                    buf.extend_from_slice(&collect(r, (len - buf.len()) as u64, "read").await?)
                }
                // Replaced in between: the caller's conditional write will fail and
                // read again.
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::NotFound { .. }) => {
                    return Ok(Current::Damaged("changed while being read".into(), etag));
                }
                Err(e) => return Err(Error::store("read", e)),
            }
        }
        buf.truncate(len);
        match Header::decode(&buf) {
            Ok(h) => Ok(Current::Valid(h, etag)),
            Err(why) => Ok(Current::Damaged(why.into(), etag)),
        }
    }

    // ---- writing ----------------------------------------------------------------

    /// Uploads `key`'s version committed at `stamp`: `record` describes it and `src`
    /// yields exactly `record.size` bytes whose xxh3-64 is `record.checksum` (checked
    /// while uploading; a mismatch fails with [`ErrorKind::Invalid`](crate::ErrorKind)
    /// and nothing is published).
    ///
    /// The version is published only if its stamp is larger than that of what the
    /// remote tier holds for the key (a version or a tombstone) and of every purge
    /// this client knows that covers the key; otherwise nothing is written and the
    /// result is [`Outcome::Superseded`]. Objects up to
    /// [`Config::multipart_threshold`] go up in one conditional PUT; larger ones in
    /// multipart to a data object first, then a small conditional PUT publishes them.
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        record: &Record,
        stamp: &Stamp,
        src: R,
    ) -> Result<Outcome> {
        self.put_from(record, stamp, Source::Read(src)).await
    }

    /// [`Remote::put`] of bytes already in memory: an object up to
    /// [`Config::multipart_threshold`] goes up as they are, behind its header, without
    /// being copied into a request buffer first.
    pub async fn put_bytes(&self, record: &Record, stamp: &Stamp, bytes: Bytes) -> Result<Outcome> {
        self.put_loaded(record, stamp, async { Ok(bytes) }).await
    }

    /// [`Remote::put`] of the bytes `load` reads whole, which it awaits once this
    /// upload's share of [`Config::upload_memory`] is free (a future does nothing
    /// until awaited), so the bytes are never held while the upload waits.
    pub async fn put_loaded(
        &self,
        record: &Record,
        stamp: &Stamp,
        load: impl Future<Output = Result<Bytes>> + Send,
    ) -> Result<Outcome> {
        self.put_from(record, stamp, Source::<&[u8]>::Load(Box::pin(load)))
            .await
    }

    async fn put_from<R: AsyncRead + Unpin + Send>(
        &self,
        record: &Record,
        stamp: &Stamp,
        src: Source<'_, R>,
    ) -> Result<Outcome> {
        record.validate().map_err(Error::Invalid)?;
        let name = format::object_name(&record.key);
        self.know_purges().await?;
        if let Some(p) = self.purged(&record.key, stamp) {
            self.count_write(&Ok(Outcome::Superseded(p.clone())));
            return Ok(Outcome::Superseded(p));
        }
        let r = self
            .bounded("put", self.cfg.transfer_timeout, async {
                // At most `upload_concurrency` uploads at once; the wait counts
                // against the bound.
                let _permit = self
                    .uploads
                    .acquire()
                    .await
                    .map_err(|_| Error::Invalid("the upload limiter is closed".into()))?;
                let header = inline_header(record, stamp)?;
                let whole = matches!(src, Source::Load(_));
                let plan = self.plan(record.size, header.len() as u64, whole);
                // Then its share of the memory, before it reads a byte.
                let _memory = self
                    .upload_memory
                    .acquire_many(plan.share_kib)
                    .await
                    .map_err(|_| Error::Invalid("the upload limiter is closed".into()))?;
                if record.size <= self.cfg.multipart_threshold {
                    // One request for a key the tier does not have yet: the body goes
                    // up with the conditional create, and only a conflict reads.
                    let bytes = match src {
                        Source::Load(load) => load.await?,
                        Source::Read(r) => read_whole(record, r).await?,
                    };
                    return self.put_small(&name, record, stamp, header, bytes).await;
                }
                // A large upload first checks that nothing newer is already there.
                if let Current::Valid(h, _) = self
                    .bounded("put", self.cfg.timeout, self.read_current(&name))
                    .await?
                {
                    if h.stamp >= *stamp && h.body.key() == &record.key[..] {
                        return Ok(if h.stamp == *stamp {
                            Outcome::AlreadyThere
                        } else {
                            Outcome::Superseded(h.stamp)
                        });
                    }
                }
                let large = Large {
                    name: &name,
                    record,
                    stamp,
                    header,
                    plan,
                };
                match src {
                    Source::Load(load) => {
                        let b = load.await?;
                        self.put_large(large, &b[..]).await
                    }
                    Source::Read(r) => self.put_large(large, r).await,
                }
            })
            .await;
        if matches!(r, Ok(Outcome::Stored)) {
            self.forget_miss(&name);
            bump(&self.counters.bytes_up, record.size);
        }
        self.count_write(&r);
        r
    }

    /// How an upload of a version of `size` bytes behind a header of `header_len` is
    /// sent, and its share of [`Config::upload_memory`]; `whole` when its bytes are
    /// loaded whole before they are sent.
    fn plan(&self, size: u64, header_len: u64, whole: bool) -> Plan {
        let limit = self.cfg.upload_memory;
        let len = header_len + size;
        let (parts, part, held) = if size <= self.cfg.multipart_threshold {
            (0, 0, len)
        } else {
            // The parts in flight, the one being filled and the read buffer: as many
            // in flight as fit the limit, at least one.
            let part = part_size(len, self.cfg.part_size);
            let extra = if whole { len } else { READ_BUF as u64 };
            let held = |n: u64| ((n + 1) * part).min(len) + extra;
            let mut n = parts_in_flight(self.cfg.upload_concurrency);
            while n > 1 && held(n as u64) > limit {
                n -= 1;
            }
            (n, part, held(n as u64))
        };
        Plan {
            parts_in_flight: parts,
            part,
            // One upload that needs more than the whole limit takes all of it.
            share_kib: memory_kib(held.min(limit)),
        }
    }

    /// One conditional PUT of the header then `bytes`, two buffers of one request.
    async fn put_small(
        &self,
        name: &str,
        record: &Record,
        stamp: &Stamp,
        header: Vec<u8>,
        bytes: Bytes,
    ) -> Result<Outcome> {
        check_source(
            record,
            bytes.len() as u64,
            xxhash_rust::xxh3::xxh3_64(&bytes),
        )?;
        let payload = PutPayload::from_iter([Bytes::from(header), bytes]);
        let r = self
            .publish(name, &record.key, stamp, payload, PayloadKind::Version)
            .await?;
        Ok(r.0)
    }

    async fn put_large<R: AsyncRead + Unpin>(
        &self,
        large: Large<'_>,
        mut src: R,
    ) -> Result<Outcome> {
        let Large {
            name,
            record,
            stamp,
            header,
            plan,
        } = large;
        let data = format::data_name(&record.key, stamp);
        let part = plan.part as usize;
        let upload = self
            .bounded("put", self.cfg.timeout, async {
                self.store
                    .put_multipart_opts(&self.path(&data), self.multipart_options(stamp))
                    .await
                    .map_err(|e| Error::store("put", e))
            })
            .await?;
        let concurrency = plan.parts_in_flight;
        // Waiting for a free slot means waiting for a part to go up.
        let part_bound = self.body_bound(part * concurrency);
        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
        w.write(&header);
        let mut hasher = Xxh3::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; READ_BUF];
        let res: Result<()> = async {
            loop {
                let k = src
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::io("put", "reading the object's bytes", e))?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                if n > record.size {
                    break;
                }
                hasher.update(&buf[..k]);
                self.bounded("put", part_bound, async {
                    w.wait_for_capacity(concurrency)
                        .await
                        .map_err(|e| Error::store("put", e))
                })
                .await?;
                w.write(&buf[..k]);
            }
            check_source(record, n, hasher.digest())
        }
        .await;
        if let Err(e) = res {
            let _ = w.abort().await;
            return Err(e);
        }
        self.bounded("put", part_bound, async {
            w.finish().await.map_err(|e| Error::store("put", e))
        })
        .await?;
        let pointer = Header {
            stamp: stamp.clone(),
            body: Body::Pointer(record.clone(), data.clone()),
        }
        .encode()
        .map_err(Error::Invalid)?;
        let r = self
            .publish(
                name,
                &record.key,
                stamp,
                PutPayload::from(Bytes::from(pointer)),
                PayloadKind::Version,
            )
            .await;
        if let Ok((Outcome::Superseded(_), _)) = r {
            // Lost: our data object is garbage (best effort). Not after an error: the
            // pointer may have been written all the same; nor when the same stamp is
            // already there, since its pointer names this very data object.
            let _ = self.store.delete(&self.path(&data)).await;
        }
        Ok(r?.0)
    }

    /// The bound on one request carrying `len` bytes: [`Config::timeout`] plus one
    /// second per MiB, at most [`Config::transfer_timeout`].
    fn body_bound(&self, len: usize) -> Duration {
        let per_mib = Duration::from_secs(1).mul_f64(len as f64 / (1 << 20) as f64);
        (self.cfg.timeout + per_mib).min(self.cfg.transfer_timeout)
    }

    fn put_options(&self, mode: PutMode, stamp: &Stamp) -> PutOptions {
        PutOptions {
            mode,
            attributes: self.attributes(stamp),
            ..PutOptions::default()
        }
    }

    fn multipart_options(&self, stamp: &Stamp) -> PutMultipartOptions {
        PutMultipartOptions {
            attributes: self.attributes(stamp),
            ..PutMultipartOptions::default()
        }
    }

    /// S3 user metadata: only `objm-stamp: <time_ns>-<host>`, for people looking in
    /// the bucket. Nothing reads it; the header is the truth.
    fn attributes(&self, stamp: &Stamp) -> Attributes {
        let mut a = Attributes::new();
        a.insert(
            Attribute::Metadata("objm-stamp".into()),
            AttributeValue::from(format!("{}-{}", stamp.time_ns, stamp.host)),
        );
        a
    }

    /// Writes `payload` at `name` if `stamp` beats what is there: create if absent,
    /// else replace only the exact version read (If-Match on its ETag), re-reading
    /// after every lost race. Returns the outcome and what was replaced.
    async fn publish(
        &self,
        name: &str,
        key: &[u8],
        stamp: &Stamp,
        payload: PutPayload,
        payload_kind: PayloadKind,
    ) -> Result<(Outcome, Option<Header>)> {
        let path = self.path(name);
        for attempt in 0..MAX_ATTEMPTS {
            // First, optimistically, a create (`If-None-Match: *`) without a read: most
            // uploads are of keys the tier does not hold. If something is there, the
            // create fails and the loop reads it and decides.
            let current = if attempt == 0 {
                Current::Absent
            } else {
                self.bounded("put", self.cfg.timeout, self.read_current(name))
                    .await?
            };
            let (mode, old) = match current {
                Current::Absent => (PutMode::Create, None),
                Current::Valid(h, etag) => {
                    let live = !matches!(h.body, Body::Tombstone(_));
                    if h.body.key() != key {
                        // A valid header for another key at this key's name: only a
                        // hand-made object can do that (names are SHA-256). Replace it.
                        tracing::warn!(
                            name = %path,
                            "remote object names another key; replacing it"
                        );
                    } else if h.stamp == *stamp {
                        return Ok((Outcome::AlreadyThere, None));
                    } else if h.stamp > *stamp {
                        return Ok((Outcome::Superseded(h.stamp), None));
                    } else if live && !matches!(payload_kind, PayloadKind::Tombstone) {
                        // A newer version replaces a live one: other hosts may hold
                        // copies of the old one (read through, or their own write).
                        // Say so in the log before replacing it, so that they drop
                        // them and every host converges on this version (once: the
                        // next attempts, and the retries of the whole upload, find it
                        // appended). A delete of the versions before this one: stamped
                        // a nanosecond earlier, since a host refuses to fill a version
                        // that is not newer than a delete it applied.
                        self.append_event(&Event {
                            stamp: Stamp {
                                time_ns: stamp.time_ns - 1,
                                host: stamp.host.clone(),
                            },
                            kind: EventKind::Delete(key.to_vec()),
                        })
                        .await?;
                    }
                    (update(etag), Some(h))
                }
                Current::Damaged(why, etag) => {
                    tracing::warn!(name = %path, why, "replacing a damaged remote object");
                    (update(etag), None)
                }
            };
            let replacing = !matches!(mode, PutMode::Create);
            let bound = self.body_bound(payload.content_length());
            let put = self.bounded("put", bound, async {
                Ok(self
                    .store
                    .put_opts(&path, payload.clone(), self.put_options(mode, stamp))
                    .await)
            });
            match put.await? {
                Ok(_) => {
                    if let Some(Header {
                        body: Body::Pointer(_, data),
                        ..
                    }) = &old
                    {
                        // The replaced version's bytes (best effort: a reader that
                        // just read the old pointer reads the name again).
                        let _ = self.store.delete(&self.path(data)).await;
                    }
                    if replacing {
                        bump(&self.counters.replaced, 1);
                    }
                    return Ok((Outcome::Stored, old));
                }
                Err(object_store::Error::AlreadyExists { .. }) if attempt == 0 => continue,
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    bump(&self.counters.conflicts, 1);
                    continue;
                }
                Err(e) => return Err(Error::store("put", e)),
            }
        }
        Err(Error::Precondition {
            op: "put",
            name: path.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Deletes `key` as of `stamp`: writes a tombstone that wins over every version
    /// with a smaller stamp (so an older pending upload from any host loses to it),
    /// and appends a delete event to the invalidation log so that other hosts drop
    /// their local copies older than `stamp`. Tried again after a failure, it appends
    /// that event once.
    pub async fn delete(&self, key: &[u8], stamp: &Stamp) -> Result<Outcome> {
        let name = format::object_name(key);
        let tomb = Header {
            stamp: stamp.clone(),
            body: Body::Tombstone(key.to_vec()),
        }
        .encode()
        .map_err(Error::Invalid)?;
        let r = self
            .bounded("delete", self.cfg.transfer_timeout, async {
                let (outcome, _) = self
                    .publish(
                        &name,
                        key,
                        stamp,
                        PutPayload::from(Bytes::from(tomb)),
                        PayloadKind::Tombstone,
                    )
                    .await?;
                self.append_event(&Event {
                    stamp: stamp.clone(),
                    kind: EventKind::Delete(key.to_vec()),
                })
                .await?;
                Ok(outcome)
            })
            .await;
        self.count_write(&r);
        match &r {
            Ok(Outcome::Superseded(_)) => self.forget_miss(&name),
            Ok(_) => self.note_miss(name),
            Err(_) => {}
        }
        r
    }

    /// Purges every key starting with `prefix` as of `stamp`: appends a purge event
    /// to the invalidation log. Every client that has seen it (this one at once,
    /// others at their next [`poll_events`](Self::poll_events)) treats remote versions
    /// with smaller stamps under the prefix as absent and refuses to upload them.
    pub async fn purge_prefix(&self, prefix: &[u8], stamp: &Stamp) -> Result<()> {
        self.purge_prefixes(&[(prefix.to_vec(), stamp.clone())])
            .await
    }

    /// [`Remote::purge_prefix`] of several purges at once: one write of the purge set
    /// for all of them (a burst of purges does not rewrite it once each), then an
    /// event each. If it fails, all of them may be tried again: what was done is then a
    /// no-op (an event this client appended already is not appended again).
    pub async fn purge_prefixes(&self, purges: &[(Vec<u8>, Stamp)]) -> Result<()> {
        let events: Vec<Event> = purges
            .iter()
            .map(|(prefix, stamp)| Event {
                stamp: stamp.clone(),
                kind: EventKind::Purge(prefix.clone()),
            })
            .collect();
        // The encoding checks each prefix's length before anything is written.
        for ev in &events {
            ev.encode().map_err(Error::Invalid)?;
        }
        // The set first: once a purge is in it, every client that starts knows it;
        // then the events, for the clients already polling.
        self.add_to_purge_set(purges).await?;
        for ev in &events {
            self.bounded("purge", self.cfg.timeout, self.append_event(ev))
                .await?;
        }
        self.learn(&events);
        Ok(())
    }

    /// Reads the purge set now unless it was read already: what every read and upload
    /// does first (a host calls it at start, so that its first cold miss does not wait
    /// for it). A purge made before this client started still covers the versions it
    /// purged, which stay in the bucket. Retried at the next call if it failed.
    pub async fn know_purges(&self) -> Result<()> {
        self.purges_read
            .get_or_try_init(|| async { self.learn_purge_set().await.map(drop) })
            .await
            .map(|_| ())
    }

    /// Reads the purge set now and learns what is new in it; returns it (empty when
    /// no purge was ever made).
    async fn learn_purge_set(&self) -> Result<Purges> {
        let set = self
            .bounded("purges", self.cfg.timeout, self.read_purge_set())
            .await?
            .map(|(set, _)| set)
            .unwrap_or_default();
        self.purges.write().expect("not poisoned").merge(&set);
        Ok(set)
    }

    /// The purge set and its ETag, or `None` if no purge was ever made.
    async fn read_purge_set(&self) -> Result<Option<(Purges, String)>> {
        let path = self.path(purges::NAME);
        let r = match self.store.get_opts(&path, GetOptions::default()).await {
            Ok(r) => r,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(Error::store("purges", e)),
        };
        let etag = etag_of(&r.meta, "purges")?;
        let bytes = collect(r, purges::MAX_LEN, "purges").await?;
        let set = Purges::decode(&bytes).map_err(|why| Error::PurgeSetDamaged {
            name: self.cfg.full_name(purges::NAME),
            why: why.into(),
        })?;
        Ok(Some((set, etag)))
    }

    /// Adds `purges` (prefix, stamp) to the purge set, with a conditional write
    /// (retried when another host changed the set in between).
    async fn add_to_purge_set(&self, purges: &[(Vec<u8>, Stamp)]) -> Result<()> {
        let path = self.path(purges::NAME);
        for _ in 0..MAX_ATTEMPTS {
            let (mut set, mode) = match self
                .bounded("purge", self.cfg.timeout, self.read_purge_set())
                .await?
            {
                Some((set, etag)) => (set, update(etag)),
                None => (Purges::default(), PutMode::Create),
            };
            self.purges.write().expect("not poisoned").merge(&set);
            let mut changed = false;
            for (prefix, stamp) in purges {
                changed |= set.add(prefix, stamp);
            }
            if !changed {
                return Ok(());
            }
            let body = PutPayload::from(Bytes::from(set.encode()));
            let put = self.bounded("purge", self.body_bound(body.content_length()), async {
                Ok(self
                    .store
                    .put_opts(&path, body, PutOptions::from(mode))
                    .await)
            });
            match put.await? {
                Ok(_) => return Ok(()),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    bump(&self.counters.conflicts, 1);
                }
                Err(e) => return Err(Error::store("purge", e)),
            }
        }
        Err(Error::Precondition {
            op: "purge",
            name: path.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Appends `ev` to the invalidation log, unless this client appended it already.
    async fn append_event(&self, ev: &Event) -> Result<()> {
        let body = ev.encode().map_err(Error::Invalid)?;
        let id = appended::id(&body);
        if self.appended.lock().expect("not poisoned").contains(&id) {
            return Ok(());
        }
        let appended = self.log_now();
        let name = ev.name(appended, rand_u64());
        let path = self.path(&name);
        // Known as ours before it can be listed.
        {
            let mut own = self.own_events.lock().expect("not poisoned");
            if own.len() >= MAX_OWN_EVENTS {
                // A client that appends and never polls (polls prune): keep the
                // recent ones.
                let lookback = self.cfg.event_lookback.as_nanos() as u64;
                own.retain(|_, t| *t >= appended.saturating_sub(2 * lookback));
            }
            own.insert(name, appended);
        }
        self.bounded("event", self.cfg.timeout, async {
            self.store
                .put_opts(
                    &path,
                    PutPayload::from(Bytes::from(body)),
                    PutOptions::from(PutMode::Create),
                )
                .await
                .map_err(|e| Error::store("event", e))
        })
        .await?;
        self.appended.lock().expect("not poisoned").insert(id);
        Ok(())
    }

    /// The events (deletes and purges, from every host) appended since `cursor`,
    /// oldest first; advances the cursor. A host calls this every few seconds
    /// (default 4 s) and applies each event to its local tiers: drop the covered
    /// keys whose local copies have smaller stamps ([`Event::covers`]). Events are
    /// named by when they were appended, whatever their stamps (an event stamped long
    /// ago and appended now is found); ones named up to [`Config::event_lookback`]
    /// before the newest seen are still found (the appending host's clock lagging);
    /// none is returned twice for one cursor within that window. The cursor never
    /// moves past this host's clock (an event named by a clock ahead is returned, and
    /// does not hide the others).
    pub async fn poll_events(&self, cursor: &mut EventCursor) -> Result<Vec<Event>> {
        let lookback = self.cfg.event_lookback.as_nanos() as u64;
        let started = self.log_now();
        let from = cursor.watermark_ns.saturating_sub(lookback);
        let dir = self.path("events");
        let offset = self.path(&format!("events/{from:020}"));
        let names: Vec<String> = self
            .bounded("poll", self.cfg.timeout, async {
                let mut out = Vec::new();
                let mut list = self.store.list_with_offset(Some(&dir), &offset);
                while let Some(m) = list.next().await {
                    let m = m.map_err(|e| Error::store("poll", e))?;
                    out.push(m.location.to_string());
                }
                Ok(out)
            })
            .await?;
        // After the listing: a mark at or past `from` says it may have missed events.
        // After the listing: a mark past what was read before says it may have missed
        // events.
        let read_to = cursor.read_to_ns;
        self.bounded(
            "poll",
            self.cfg.timeout,
            self.check_pruned_mark(cursor, read_to),
        )
        .await?;
        let pre = self.cfg.full_name("");
        let mut events = Vec::new();
        for full in names {
            let rel = full.strip_prefix(&pre).unwrap_or(&full).to_owned();
            if cursor.seen.contains(&rel) {
                continue;
            }
            let appended = Event::time_of_name(&rel);
            // Never past this host's own clock: one event named by a clock far
            // ahead would otherwise move the cursor past every other host's events.
            let read = |cursor: &mut EventCursor, rel: String| {
                if let Some(t) = appended {
                    cursor.watermark_ns = cursor.watermark_ns.max(t.min(started));
                }
                cursor.seen.insert(rel);
            };
            if self
                .own_events
                .lock()
                .expect("not poisoned")
                .contains_key(&rel)
            {
                // Applied here when it was made: not even read.
                read(cursor, rel);
                continue;
            }
            let body = self
                .bounded("poll", self.cfg.timeout, async {
                    match self.store.get(&Path::from(full.as_str())).await {
                        Ok(r) => collect(r, Event::MAX_LEN, "poll").await.map(Some),
                        Err(e) if is_absent(&e) => Ok(None),
                        Err(e) => Err(Error::store("poll", e)),
                    }
                })
                .await?;
            let Some(body) = body else { continue };
            match Event::decode(&body) {
                Ok(ev) => {
                    if ev.stamp.host == self.cfg.host
                        && appended.is_some_and(|t| t >= self.started_ns)
                    {
                        bump(&self.counters.same_host_id, 1);
                    }
                    events.push(ev);
                }
                Err(why) => tracing::warn!(name = %full, why, "skipping a damaged remote event"),
            }
            read(cursor, rel);
        }
        cursor.read_to_ns = cursor
            .read_to_ns
            .max(cursor.watermark_ns)
            .max(started.saturating_sub(lookback));
        let keep_from = cursor.watermark_ns.saturating_sub(lookback);
        cursor
            .seen
            .retain(|n| Event::time_of_name(n).is_none_or(|t| t >= keep_from));
        self.own_events
            .lock()
            .expect("not poisoned")
            .retain(|_, t| *t >= keep_from);
        events.sort_by(|a, b| a.stamp.cmp(&b.stamp));
        self.learn(&events);
        bump(&self.counters.events, events.len() as u64);
        Ok(events)
    }

    /// Deletes the events older than `before_ns` (run by one host now and then; a
    /// host that has not polled since then misses them, and learns so from the mark
    /// raised first: [`EventCursor::missed`]).
    pub async fn prune_events(&self, before_ns: u64) -> Result<usize> {
        let dir = self.path("events");
        let pre = self.cfg.full_name("");
        self.bounded("prune", self.cfg.transfer_timeout, async {
            let mut list = self.store.list(Some(&dir));
            let mut old = Vec::new();
            let mut newest = 0;
            while let Some(m) = list.next().await {
                let m = m.map_err(|e| Error::store("prune", e))?;
                let full = m.location.to_string();
                let rel = full.strip_prefix(&pre).unwrap_or(&full);
                if let Some(t) = Event::time_of_name(rel).filter(|t| *t < before_ns) {
                    newest = newest.max(t);
                    old.push(m.location);
                }
            }
            if !old.is_empty() {
                self.raise_pruned_mark(newest).await?;
            }
            for p in &old {
                match self.store.delete(p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(Error::store("prune", e)),
                }
            }
            Ok(old.len())
        })
        .await
    }

    // ---- what this client knows -------------------------------------------------

    fn learn(&self, events: &[Event]) {
        let mut p = self.purges.write().expect("not poisoned");
        for ev in events {
            if let EventKind::Purge(prefix) = &ev.kind {
                p.add(prefix, &ev.stamp);
            }
        }
        // Remembered misses stay: an invalidation only removes objects, and a newer
        // write made here forgets its miss in `put`.
        drop(p);
    }

    /// Makes this client know a purge made on its host that the tier does not hold yet
    /// (it is sent later, with [`Remote::purge_prefix`]): from now on its reads refuse the
    /// versions the purge covers and its uploads skip them, as after the send. The host's
    /// own ban of the prefix is retired once nothing local is under it; a fill in the
    /// meantime must not bring a covered version back.
    pub fn know_purge(&self, prefix: &[u8], stamp: &Stamp) {
        self.purges
            .write()
            .expect("not poisoned")
            .add(prefix, stamp);
    }

    /// The stamp of a known purge that covers `key` committed at `at`.
    fn purged(&self, key: &[u8], at: &Stamp) -> Option<Stamp> {
        let p = self.purges.read().expect("not poisoned");
        p.covering(key, at).cloned()
    }

    /// Remembers `key` like a miss for [`Config::miss_ttl`], as a read that found no
    /// version does: for a caller that refused the version a read returned (after its
    /// bytes came), so that the next reads within the bound make no request and
    /// download nothing. A write of the key made through this client forgets it.
    pub fn remember_miss(&self, key: &[u8]) {
        self.note_miss(format::object_name(key));
    }

    /// Whether a read of `key` now would be answered from the remembered misses,
    /// without a request ([`Config::miss_ttl`]).
    pub fn remembers_miss(&self, key: &[u8]) -> bool {
        self.recent_miss(&format::object_name(key))
    }

    fn recent_miss(&self, name: &str) -> bool {
        if self.cfg.miss_ttl.is_zero() {
            return false;
        }
        let m = self.misses.lock().expect("not poisoned");
        m.get(name).is_some_and(|t| t.elapsed() < self.cfg.miss_ttl)
    }

    fn note_miss(&self, name: String) {
        if self.cfg.miss_ttl.is_zero() {
            return;
        }
        let mut m = self.misses.lock().expect("not poisoned");
        if m.len() >= MISS_CACHE_MAX {
            let ttl = self.cfg.miss_ttl;
            m.retain(|_, t| t.elapsed() < ttl);
            if m.len() >= MISS_CACHE_MAX {
                m.clear();
            }
        }
        m.insert(name, Instant::now());
    }

    fn forget_miss(&self, name: &str) {
        self.misses.lock().expect("not poisoned").remove(name);
    }
}

/// What a name object write carries: a version (inline or a pointer), or a tombstone
/// (whose delete event its caller appends).
#[derive(Clone, Copy)]
enum PayloadKind {
    Version,
    Tombstone,
}

/// An object's ETag, which every conditional write needs.
fn etag_of(meta: &object_store::ObjectMeta, op: &'static str) -> Result<String> {
    meta.e_tag.clone().ok_or_else(|| Error::Denied {
        op,
        source: "the object store returns no ETag, so conditional writes are impossible".into(),
    })
}

fn update(etag: String) -> PutMode {
    PutMode::Update(UpdateVersion {
        e_tag: Some(etag),
        version: None,
    })
}

fn check_source(record: &Record, n: u64, sum: u64) -> Result<()> {
    if n != record.size {
        return Err(Error::Invalid(format!(
            "the source has {}{n} bytes, the record says {}",
            if n > record.size { "more than " } else { "" },
            record.size
        )));
    }
    if sum != record.checksum {
        return Err(Error::Invalid(format!(
            "the source's xxh3-64 is {sum:#018x}, the record says {:#018x}",
            record.checksum
        )));
    }
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns());
    h.finish()
}

enum Retry {
    /// Worth reading the name again.
    Again(Error),
    /// Final.
    Fail(Error),
    /// The caller declined the version once its header was read.
    Declined,
}

/// What a read of a key's current version came to.
enum Got {
    Found(Found),
    /// No live version (or a miss remembered).
    None,
    /// A live version the caller declined before its bytes were read.
    Declined,
}

impl From<Error> for Retry {
    fn from(e: Error) -> Self {
        Retry::Fail(e)
    }
}

enum StreamErr {
    /// The object failed a check.
    Bad(String),
    /// Transport or local I/O.
    Err(Error),
}

/// A remote object's body being received.
struct BodyStream {
    total: u64,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    /// Received but not consumed.
    buf: Vec<u8>,
    timeout: Duration,
}

impl BodyStream {
    /// The next chunk, each wait bounded.
    async fn next(&mut self) -> Result<Option<Bytes>, StreamErr> {
        match tokio::time::timeout(self.timeout, self.stream.next()).await {
            Err(_) => Err(StreamErr::Err(Error::Timeout {
                op: "get",
                after: self.timeout,
            })),
            Ok(None) => Ok(None),
            Ok(Some(Ok(b))) => Ok(Some(b)),
            Ok(Some(Err(e))) => Err(StreamErr::Err(Error::store("get", e))),
        }
    }

    async fn fill(&mut self, n: usize) -> Result<(), StreamErr> {
        while self.buf.len() < n {
            match self.next().await? {
                Some(b) => self.buf.extend_from_slice(&b),
                None => return Err(StreamErr::Bad("truncated header".into())),
            }
        }
        Ok(())
    }

    async fn header(&mut self) -> Result<Header, StreamErr> {
        self.fill(16).await?;
        let len = Header::peek_len(&self.buf).map_err(|w| StreamErr::Bad(w.into()))?;
        self.fill(len).await?;
        let h = Header::decode(&self.buf[..len]).map_err(|w| StreamErr::Bad(w.into()))?;
        self.buf.drain(..len);
        let want = match &h.body {
            Body::Inline(r) => len as u64 + r.size,
            _ => len as u64,
        };
        if self.total != want {
            return Err(StreamErr::Bad(format!(
                "the object has {} bytes, its header says {want}",
                self.total
            )));
        }
        Ok(h)
    }

    /// Streams the rest into `dest` from offset 0, checking length and checksum.
    async fn copy_into(mut self, record: &Record, dest: &std::fs::File) -> Result<(), StreamErr> {
        let io = |what: &str, e| StreamErr::Err(Error::io("get", what.to_owned(), e));
        let file = Arc::new(
            dest.try_clone()
                .map_err(|e| io("duplicating the destination's descriptor", e))?,
        );
        file.set_len(0)
            .map_err(|e| io("truncating the destination", e))?;
        // The body arrives in chunks of a few KiB to a few hundred. Each is hashed here
        // and copied once, into the file. A destination in RAM (a memory tier's file, a
        // memfd) takes each chunk as it comes, on this thread, while it is still in the
        // CPU's cache: such a write costs what the page allocation and the copy cost,
        // no more than the chunk's own buffer did. A destination on a disk may block
        // its writer, and this runtime's threads never wait for one: its chunks go,
        // uncopied, in batches of about 1 MiB to a blocking thread that writes each
        // batch with positional vectored writes while the next one arrives (a whole
        // object of at most INLINE_WRITE bytes is written in place). Handing the RAM
        // destination's chunks over too cost a 16 MiB fill 10-20% (docs/BENCHMARKS.md).
        let in_ram = in_ram(&file);
        let mut hasher = Xxh3::new();
        let mut n = 0u64;
        let mut batch = Vec::new();
        let mut batch_start = 0u64;
        let mut writing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
        let mut chunk = Bytes::from(std::mem::take(&mut self.buf));
        let streamed = async {
            loop {
                if !chunk.is_empty() {
                    if n + chunk.len() as u64 > record.size {
                        return Err(StreamErr::Bad("more bytes than the record says".into()));
                    }
                    hasher.update(&chunk);
                    if in_ram {
                        write_all_at(&file, std::slice::from_ref(&chunk), n)
                            .map_err(|e| io("writing the destination", e))?;
                        n += chunk.len() as u64;
                        batch_start = n;
                    } else {
                        n += chunk.len() as u64;
                        batch.push(chunk);
                    }
                }
                let next = self.next().await?;
                if n - batch_start >= WRITE_BATCH || (next.is_none() && !batch.is_empty()) {
                    if let Some(w) = writing.take() {
                        finish_write(w)
                            .await
                            .map_err(|e| io("writing the destination", e))?;
                    }
                    let (f, b, at) = (file.clone(), std::mem::take(&mut batch), batch_start);
                    if next.is_none() && writing.is_none() && n - at <= INLINE_WRITE {
                        // A small object, all of it here: handing it to another
                        // thread would cost more than writing it.
                        write_all_at(&f, &b, at).map_err(|e| io("writing the destination", e))?;
                    } else {
                        writing = Some(tokio::task::spawn_blocking(move || {
                            write_all_at(&f, &b, at)
                        }));
                    }
                    batch_start = n;
                }
                match next {
                    Some(b) => chunk = b,
                    None => return Ok(()),
                }
            }
        }
        .await;
        // Every return waits for the batch in flight, so no write outlives the call.
        let written = match writing.take() {
            Some(w) => finish_write(w)
                .await
                .map_err(|e| io("writing the destination", e)),
            None => Ok(()),
        };
        streamed?;
        written?;
        if n != record.size {
            return Err(StreamErr::Bad(format!(
                "{n} bytes received, the record says {}",
                record.size
            )));
        }
        let sum = hasher.digest();
        if sum != record.checksum {
            return Err(StreamErr::Bad(format!(
                "content checksum {sum:#018x} differs from the record's {:#018x}",
                record.checksum
            )));
        }
        Ok(())
    }
}

/// Where [`Remote::get_with`] writes: a file chosen from the version's record and
/// stamp, or none (declined).
type Dest<'a> = dyn FnMut(&Found) -> std::io::Result<Option<std::fs::File>> + Send + 'a;

/// Where the bytes of an upload come from.
enum Source<'a, R> {
    Read(R),
    /// Read whole once awaited.
    Load(Pin<Box<dyn Future<Output = Result<Bytes>> + Send + 'a>>),
}

/// Reads `record.size` bytes of `src` into one buffer, and one more if there is one
/// (so that a longer source is seen and refused by the check against the record).
async fn read_whole<R: AsyncRead + Unpin>(record: &Record, src: R) -> Result<Bytes> {
    let mut body = Vec::with_capacity(record.size as usize + 1);
    src.take(record.size + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| Error::io("put", "reading the object's bytes", e))?;
    Ok(Bytes::from(body))
}

/// Own event names a client keeps before it drops the older ones unpolled.
const MAX_OWN_EVENTS: usize = 100_000;

/// An upload's plan: how it is sent and the memory it holds.
struct Plan {
    /// Parts of a multipart upload in flight at once (0: one PUT).
    parts_in_flight: usize,
    /// A multipart upload's part size (0: one PUT).
    part: u64,
    /// Its share of [`Config::upload_memory`], in KiB.
    share_kib: u32,
}

/// A multipart upload about to be sent.
struct Large<'a> {
    name: &'a str,
    record: &'a Record,
    stamp: &'a Stamp,
    header: Vec<u8>,
    plan: Plan,
}

/// The buffer a multipart upload reads its source with.
const READ_BUF: usize = 1 << 20;

/// `bytes` in whole KiB, rounded up, as the memory limiter counts them.
fn memory_kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Most parts of one multipart upload in flight at once, whatever
/// `upload_concurrency`: what the uploads hold in memory grows with the number of
/// uploads, never with its square (docs/STORAGE.md, "Memory an upload holds").
const MAX_PARTS_IN_FLIGHT: usize = 4;

/// The parts one multipart upload sends at once: `upload_concurrency`, at least 1
/// and at most [`MAX_PARTS_IN_FLIGHT`].
fn parts_in_flight(upload_concurrency: usize) -> usize {
    upload_concurrency.clamp(1, MAX_PARTS_IN_FLIGHT)
}

/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a multipart upload of `len` bytes: `base`, or more when that
/// would take more than [`MAX_PARTS`] parts (then the smallest whole number of MiB
/// that fits).
fn part_size(len: u64, base: u64) -> u64 {
    let fits = len.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    base.max(fits)
}

/// Whether `file` lives in RAM (tmpfs, which memfds are on too, or hugetlbfs): a write
/// there allocates pages and copies, and never waits for a device.
fn in_ram(file: &std::fs::File) -> bool {
    // The magic numbers of linux/magic.h.
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
    rustix::fs::fstatfs(file)
        .is_ok_and(|s| matches!(s.f_type as u64, TMPFS_MAGIC | HUGETLBFS_MAGIC))
}

/// Waits for one batch's write.
async fn finish_write(w: tokio::task::JoinHandle<std::io::Result<()>>) -> std::io::Result<()> {
    w.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Writes `chunks` one after the other into `file` from offset `at`, with as few
/// positional vectored writes as the kernel allows.
fn write_all_at(file: &std::fs::File, mut chunks: &[Bytes], mut at: u64) -> std::io::Result<()> {
    // Bytes of `chunks[0]` already written.
    let mut skip = 0;
    while !chunks.is_empty() {
        let iov: Vec<std::io::IoSlice<'_>> = chunks
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, c)| std::io::IoSlice::new(if i == 0 { &c[skip..] } else { c }))
            .collect();
        let mut wrote = match rustix::io::pwritev(file, &iov, at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(w) => w,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        at += wrote as u64;
        while wrote > 0 {
            let left = chunks[0].len() - skip;
            if wrote >= left {
                wrote -= left;
                chunks = &chunks[1..];
                skip = 0;
            } else {
                skip += wrote;
                wrote = 0;
            }
        }
    }
    Ok(())
}

/// At most this many buffers in one vectored write (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn write_all_at_writes_more_chunks_than_one_call_takes_in_order() {
        // Chunks of uneven sizes, more of them than IOV_MAX, from an offset.
        let chunks: Vec<Bytes> = (0..IOV_MAX * 2 + 7)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1 + i % 13]))
            .collect();
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(b"head", 0).unwrap();
        write_all_at(&f, &chunks, 4).unwrap();
        let mut got = vec![0; 4 + want.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &want[..]);
        assert_eq!(f.metadata().unwrap().len(), 4 + want.len() as u64);
    }

    #[test]
    fn a_multipart_upload_never_needs_more_than_ten_thousand_parts() {
        let t = 8 << 20;
        assert_eq!(part_size(64 << 20, t), t, "the threshold when it fits");
        assert_eq!(part_size(MAX_PARTS * t, t), t, "exactly 10,000 parts");
        // One byte more: the next whole MiB.
        assert_eq!(part_size(MAX_PARTS * t + 1, t), 9 << 20);
        for len in [100u64 << 30, (5 << 40) - 1, 1 << 40, 123_456_789_012] {
            let p = part_size(len, t);
            assert!(len.div_ceil(p) <= MAX_PARTS, "{len} in parts of {p}");
            assert!(p >= t && p.is_multiple_of(1 << 20), "{p}");
            // The smallest such size: one MiB less would need more parts.
            assert!(
                len.div_ceil(p - (1 << 20)) > MAX_PARTS || p == t,
                "{len}: {p}"
            );
        }
    }

    #[test]
    fn a_memfd_is_in_ram_and_a_file_on_a_disk_is_not() {
        let memfd = rustix::fs::memfd_create("objm-test", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        assert!(in_ram(&std::fs::File::from(memfd)));
        // The crate's own directory is on whatever holds the checkout: a disk here,
        // unless someone builds from a tmpfs (then there is nothing to check).
        let dir = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f_type = rustix::fs::fstatfs(&dir).unwrap().f_type as u64;
        if f_type != 0x0102_1994 {
            assert!(!in_ram(&dir));
        }
    }

    #[test]
    fn write_all_at_reports_a_failed_write() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = write_all_at(&f, &[Bytes::from_static(b"x")], 0).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::BADF.raw_os_error())
        );
    }
}
