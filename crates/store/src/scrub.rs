//! The scrubber: re-reads every object of every tier and checks it against its record
//! (size and xxh3-64), like a ZFS scrub, so that bit rot in an object only ever read
//! through fds (whose bytes the store never sees) is found within one pass.
//!
//! A background thread walks both tiers at [`StoreConfig::scrub_rate_bytes`]
//! (docs/STORAGE.md, "The scrubber"); [`Store::verify_all`] does one pass now, at full
//! speed. A damaged version goes down the path every read uses
//! ([`Inner::drop_damaged`]). Neither holds the catalog, policy or an index lock while it
//! reads (an index read lock is held only to copy a chunk of entries), and neither touches
//! the eviction policies, so scrubbing never promotes, evicts or reorders anything.
//!
//! [`StoreConfig::scrub_rate_bytes`]: crate::StoreConfig::scrub_rate_bytes

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{display_chain, io_ctx, StoreError};
use crate::store::{now_secs, Damage, Inner, Store};
use crate::tier::{Kind, OpenFail};

/// Index slots copied per read-lock hold.
const CHUNK_SLOTS: u32 = 256;
/// Bytes read per `pread`; the pacing sleeps between reads.
const READ_BYTES: usize = 256 * 1024;
/// The shortest time between the starts of two background passes (an empty or tiny
/// store is not re-read in a loop).
const MIN_PASS_INTERVAL: Duration = Duration::from_secs(1);

/// One damaged version found by [`Store::verify_all`] (it has been dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedObject {
    /// The key.
    pub key: Box<[u8]>,
    /// The dropped version.
    pub version: u64,
    /// The tier that held the damaged copy: `"memory"` or `"disk"`.
    pub tier: &'static str,
    /// `"size"`, `"checksum"` or `"missing"`, as in `objmapper_corrupt_objects_total`.
    pub reason: &'static str,
}

/// What [`Store::verify_all`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Versions read and checked (a copy in each tier counts once per tier).
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The damaged versions, each dropped from its tier (logged, counted, moved to
    /// `lost+found/`); a read now finds the other tier's copy if there is one.
    pub damaged: Vec<DamagedObject>,
}

/// Paces reads at a rate in bytes per second (`None`: full speed).
struct Pacer {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    /// Accounts `n` bytes read and sleeps until the rate allows more. False if the store
    /// is stopping.
    fn spend(&mut self, inner: &Inner, n: u64) -> bool {
        self.bytes += n;
        let due = self.start + Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        loop {
            if inner.stop.load(Ordering::Acquire) {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            if !inner.nap(due - now) {
                return false;
            }
        }
    }
}

/// The outcome of checking one version.
enum Checked {
    /// Its bytes match the record.
    Intact(u64),
    /// It was damaged and has been dropped.
    Damaged(Damage),
    /// It left the index meanwhile (replaced, deleted, evicted, moved): nothing to say.
    Gone,
    /// The store is stopping.
    Stopped,
}

impl Inner {
    /// One pass over every object of both tiers (disk first), keys under `prefix` only if
    /// given. `pace`: bytes per second, or `None` for full speed.
    fn scrub_pass(
        &self,
        prefix: Option<&[u8]>,
        pace: Option<u64>,
    ) -> Result<(VerifyReport, bool), StoreError> {
        let mut report = VerifyReport::default();
        let mut pacer = pace.map(|rate| Pacer {
            rate: rate.max(1),
            start: Instant::now(),
            bytes: 0,
        });
        for kind in [Kind::Disk, Kind::Memory] {
            let tier = self.tier(kind);
            let mut next = 0u32;
            loop {
                // Copy a chunk of entries under the read lock, then read with no lock held.
                let chunk: Vec<(Box<[u8]>, u64, u64, u64)> = {
                    let idx = tier.index.read();
                    let end = (idx.slot_count() as u64).min(u32::MAX as u64) as u32;
                    if next >= end {
                        break;
                    }
                    let stop = next.saturating_add(CHUNK_SLOTS).min(end);
                    let c = (next..stop)
                        .filter_map(|id| idx.by_id(id))
                        .filter(|e| prefix.is_none_or(|p| e.key().starts_with(p)))
                        .map(|e| {
                            let m = e.meta();
                            (m.key, m.version, m.size, m.checksum)
                        })
                        .collect();
                    next = stop;
                    c
                };
                for (key, version, size, checksum) in chunk {
                    if self.stop.load(Ordering::Acquire) {
                        return Ok((report, false));
                    }
                    match self.scrub_one(kind, &key, version, size, checksum, pacer.as_mut())? {
                        Checked::Intact(n) => {
                            report.objects += 1;
                            report.bytes += n;
                        }
                        Checked::Damaged(d) => {
                            report.objects += 1;
                            self.counters.scrub_damage.fetch_add(1, Ordering::Relaxed);
                            report.damaged.push(DamagedObject {
                                key,
                                version,
                                tier: tier.name(),
                                reason: d.name(),
                            });
                        }
                        Checked::Gone => {}
                        Checked::Stopped => return Ok((report, false)),
                    }
                }
            }
        }
        Ok((report, true))
    }

    /// Reads one version's file and checks its size and xxh3-64 against the record.
    fn scrub_one(
        &self,
        kind: Kind,
        key: &[u8],
        version: u64,
        size: u64,
        checksum: u64,
        mut pacer: Option<&mut Pacer>,
    ) -> Result<Checked, StoreError> {
        let tier = self.tier(kind);
        let still = || tier.index.read().get(key).map(|e| e.version()) == Some(version);
        let dropped = |d: Damage, detail: &str| {
            if self.drop_damaged(kind, key, version, d, detail) {
                Checked::Damaged(d)
            } else {
                Checked::Gone
            }
        };
        let file = match tier.open_checked(key, version, size) {
            Ok(f) => f,
            // Unlinked by a replace, delete, eviction or move, unless the index still
            // names it: then it was lost.
            Err(OpenFail::Missing) if !still() => return Ok(Checked::Gone),
            Err(OpenFail::Missing) => return Ok(dropped(Damage::Missing, "no such file")),
            Err(OpenFail::Size(found)) => {
                return Ok(dropped(
                    Damage::Size,
                    &format!("the file holds {found} bytes, the record says {size}"),
                ))
            }
            Err(OpenFail::Io(e)) => {
                return Err(io_ctx(format!(
                    "opening {} tier object file to scrub it",
                    tier.name()
                ))(e))
            }
        };
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        let mut buf = vec![0u8; (size.min(READ_BYTES as u64) as usize).max(1)];
        let mut off = 0u64;
        while off < size {
            let want = buf.len().min((size - off) as usize);
            match file.read_at(&mut buf[..want], off) {
                Ok(0) => {
                    return Ok(dropped(
                        Damage::Size,
                        &format!("the file ended at {off} bytes, the record says {size}"),
                    ))
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    off += n as u64;
                    self.counters
                        .scrub_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(p) = pacer.as_deref_mut() {
                        if !p.spend(self, n as u64) {
                            return Ok(Checked::Stopped);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_ctx("reading an object file to scrub it")(e)),
            }
        }
        self.counters.scrub_objects.fetch_add(1, Ordering::Relaxed);
        let sum = hasher.digest();
        if sum != checksum {
            return Ok(dropped(
                Damage::Checksum,
                &format!("xxh3 {sum:016x}, the record says {checksum:016x}"),
            ));
        }
        Ok(Checked::Intact(size))
    }

    /// The scrubber thread: after [`crate::StoreConfig::scrub_start_delay`], passes over
    /// both tiers at [`crate::StoreConfig::scrub_rate_bytes`], one starting at most every
    /// [`MIN_PASS_INTERVAL`], until the store stops.
    pub(crate) fn scrubber(&self) {
        let rate = self.cfg.scrub_rate_bytes;
        let first = Instant::now() + self.cfg.scrub_start_delay;
        while let Some(left) = first.checked_duration_since(Instant::now()) {
            if left.is_zero() || !self.nap(left) {
                break;
            }
        }
        loop {
            let started = Instant::now();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if !self.poison.is_set() && !self.closed.load(Ordering::Acquire) {
                match self.scrub_pass(None, Some(rate)) {
                    Ok((r, true)) => {
                        self.counters.scrub_passes.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .scrub_last_pass
                            .store(now_secs(), Ordering::Relaxed);
                        tracing::debug!(
                            objects = r.objects,
                            bytes = r.bytes,
                            damaged = r.damaged.len(),
                            "scrub pass finished"
                        );
                    }
                    Ok((_, false)) => return,
                    Err(e) => {
                        tracing::warn!(error = %display_chain(&e), "scrub pass failed; the next one starts over")
                    }
                }
            }
            while let Some(left) = MIN_PASS_INTERVAL.checked_sub(started.elapsed()) {
                if left.is_zero() || !self.nap(left) {
                    break;
                }
            }
        }
    }
}

impl Store {
    /// Reads every object of every tier (keys starting with `prefix` only, if given) now,
    /// at full speed, and checks each against its record's size and xxh3-64, as the
    /// background scrubber does at [`crate::StoreConfig::scrub_rate_bytes`]. Each damaged
    /// version is dropped as a read would drop it (logged, counted in
    /// `corrupt_*` and `scrub_damage`, moved to `lost+found/`) and listed in the report.
    /// Takes no lock while it reads and does not touch the eviction policies.
    pub fn verify_all(&self, prefix: Option<&[u8]>) -> Result<VerifyReport, StoreError> {
        self.inner.check_writable()?;
        Ok(self.inner.scrub_pass(prefix, None)?.0)
    }
}
