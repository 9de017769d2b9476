//! Collecting what the bucket holds for nothing: data objects that no pointer names,
//! and versions no host may read any more (expired, or under a purge).
//!
//! A multipart version is two objects: its data object (`d/<sha256 of key>/<stamp>`)
//! and the pointer at the key's name (`o/<sha256 of key>`) that names it. The pointer
//! is written after the data object, and a replaced pointer's data object is deleted
//! after the replacement. A crash, a lost answer or a failed delete in between leaves
//! a data object that nothing names and nothing reads: [`Remote::sweep_orphans`]
//! deletes those once they are older than any upload still in progress could be.
//!
//! An expired version, or one a purge covers, stays in the bucket until its key is
//! written again, which for most keys of a cache is never: [`Remote::reclaim`] replaces
//! such versions with tombstones (a conditional write, so a newer version written
//! meanwhile wins), a slice of the names per round.
//!
//! One host sweeps per round, the one that wins the claim (a conditional write of
//! `swept`, which also keeps where the last round's reclaim stopped), so a fleet does
//! not list the bucket once per host.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::guard::PROBE_DIR;
use super::{etag_of, now_ns, update, Current, Outcome, PayloadKind, Remote};
use crate::error::{is_absent, Error, ErrorKind, Result};
use crate::format::{Body, Header, Stamp};

/// The claim object: `<time_ns> <host> <cursor> <pass_started_ns>\n`, in ASCII: the
/// last sweep's start, its host, the name hash the next reclaim goes on after (empty:
/// from the first), and when the pass over every name that cursor is in started (0:
/// unknown; a claim written before there was one has three fields).
const SWEPT: &str = "swept";

/// A won claim: where this round's reclaim starts, and the claim's time, to record
/// where it stopped ([`Remote::finish_sweep`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepClaim {
    /// The name hash (64 hex digits) the reclaim goes on after; empty for the first.
    pub cursor: String,
    /// When the reclaim pass this round is part of started (this round's time when it
    /// starts one; 0 when unknown): what [`Remote::retire_purges`] takes when the pass
    /// ends with this round.
    pub pass_started_ns: u64,
    time_ns: u64,
}

/// What [`Remote::reclaim_one`] did with one name.
enum One {
    /// Nothing to read (absent, damaged, of a newer format).
    Skipped,
    /// Read; nothing to reclaim.
    Read,
    /// Read and replaced by a tombstone; the version's size.
    Reclaimed(u64),
}

/// What one [`Remote::reclaim`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reclaim {
    /// Name objects read.
    pub read: u64,
    /// Versions replaced by a tombstone (expired, or covered by a purge).
    pub reclaimed: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Where the next round goes on (the last name hash read), or empty when this
    /// round reached the end of the names.
    pub cursor: String,
}

/// What one [`Remote::sweep_orphans`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sweep {
    /// Data objects listed.
    pub listed: u64,
    /// Of those, old enough and named by no pointer: deleted.
    pub deleted: u64,
    /// The bytes those held.
    pub bytes: u64,
}

impl Remote {
    /// The grace before a data object no pointer names counts as orphaned: an upload
    /// writes its pointer within [`Config::transfer_timeout`](crate::Config) of its
    /// data object, twice that for a retry, plus the clock skew the event log allows
    /// ([`Config::event_lookback`](crate::Config)).
    pub fn sweep_grace(&self) -> Duration {
        self.cfg.transfer_timeout * 2 + self.cfg.event_lookback
    }

    /// Claims this round's sweep for this host: `Some` when no host claimed one within
    /// `every` (a claim stamped more than `every` in the future, from a clock far
    /// ahead, counts as old), and this host's claim then won the conditional write.
    /// Hosts that call this every `every` sweep about once per `every` between them.
    pub async fn claim_sweep(&self, every: Duration) -> Result<Option<SweepClaim>> {
        let path = self.path(SWEPT);
        let now = now_ns();
        let every_ns = every.as_nanos() as u64;
        self.bounded("sweep", self.cfg.timeout, async {
            let (mode, cursor, pass) = match self.store.get(&path).await {
                Ok(r) => {
                    let etag = etag_of(&r.meta, "sweep")?;
                    let body = crate::capped::collect(r, 4096, "sweep").await?;
                    let text = std::str::from_utf8(&body).unwrap_or("");
                    let mut fields = text.trim_end_matches('\n').split(' ');
                    let last = fields.next().and_then(|t| t.parse::<u64>().ok());
                    if let Some(t) = last {
                        if t.saturating_add(every_ns) > now && t < now.saturating_add(every_ns) {
                            return Ok(None);
                        }
                    }
                    let cursor = fields
                        .nth(1)
                        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                        .unwrap_or("")
                        .to_owned();
                    let pass = fields.next().and_then(|t| t.parse::<u64>().ok());
                    (update(etag), cursor, pass.unwrap_or(0))
                }
                Err(e) if is_absent(&e) => (PutMode::Create, String::new(), 0),
                Err(e) => return Err(Error::store("sweep", e)),
            };
            // A round from the first name starts a pass.
            let pass_started_ns = if cursor.is_empty() { now } else { pass };
            let won = self
                .write_claim(&path, mode, now, &cursor, pass_started_ns)
                .await?;
            Ok(won.then_some(SweepClaim {
                cursor,
                pass_started_ns,
                time_ns: now,
            }))
        })
        .await
    }

    /// Records where the round's reclaim stopped, in the claim this host won (if
    /// another host claimed a round since, nothing is written).
    pub async fn finish_sweep(&self, claim: &SweepClaim, cursor: &str) -> Result<()> {
        let path = self.path(SWEPT);
        let ours = format!("{} {} ", claim.time_ns, self.cfg.host);
        self.bounded("sweep", self.cfg.timeout, async {
            // Read, not the ETag the claim's write answered: some stores answer none.
            let r = match self.store.get(&path).await {
                Ok(r) => r,
                Err(e) if is_absent(&e) => return Ok(()),
                Err(e) => return Err(Error::store("sweep", e)),
            };
            let etag = etag_of(&r.meta, "sweep")?;
            let body = crate::capped::collect(r, 4096, "sweep").await?;
            if !body.starts_with(ours.as_bytes()) {
                return Ok(());
            }
            self.write_claim(
                &path,
                update(etag),
                claim.time_ns,
                cursor,
                claim.pass_started_ns,
            )
            .await
            .map(|_| ())
        })
        .await
    }

    /// Writes the claim; false if the condition failed (another host wrote it).
    async fn write_claim(
        &self,
        path: &Path,
        mode: PutMode,
        time_ns: u64,
        cursor: &str,
        pass_started_ns: u64,
    ) -> Result<bool> {
        let claim = format!("{time_ns} {} {cursor} {pass_started_ns}\n", self.cfg.host);
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(claim.into_bytes()), opts)
            .await
        {
            Ok(_) => Ok(true),
            // Another host claimed it in between.
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(Error::store("sweep", e)),
        }
    }

    /// Reads up to `budget` name objects after `cursor` (a name hash; empty: from the
    /// first) and replaces each version no host may read any more with a tombstone: one
    /// expired for longer than [`Config::event_lookback`](crate::Config) (the clock
    /// skew allowed), stamped a nanosecond after it; one under a purge this client
    /// knows, stamped as the purge. The write is conditional on what was read, like
    /// every write of a name ("the larger stamp wins"), so a newer version written
    /// meanwhile stays, and an older pending upload loses to the tombstone as it would
    /// have to the version. A pointer's data object goes with it. Names whose object is
    /// damaged or of a newer format are skipped.
    pub async fn reclaim(&self, cursor: &str, budget: usize) -> Result<Reclaim> {
        self.know_purges().await?;
        let dir = self.path("o");
        let offset = self.path(&format!("o/{cursor}"));
        let pre = self.cfg.full_name("o/");
        let skew = self.cfg.event_lookback.as_secs();
        self.bounded("sweep", self.cfg.transfer_timeout, async {
            let mut names = Vec::new();
            {
                let mut list = if cursor.is_empty() {
                    self.store.list(Some(&dir))
                } else {
                    self.store.list_with_offset(Some(&dir), &offset)
                };
                while let Some(m) = list.next().await {
                    let m = m.map_err(|e| Error::store("sweep", e))?;
                    let full = m.location.to_string();
                    if let Some(hash) = full.strip_prefix(&pre) {
                        names.push(hash.to_owned());
                    }
                    if names.len() >= budget {
                        break;
                    }
                }
            }
            let mut done = Reclaim {
                cursor: if names.len() >= budget {
                    names.last().cloned().unwrap_or_default()
                } else {
                    String::new()
                },
                ..Reclaim::default()
            };
            // A few names at once (as many as uploads): each is a range read, and a
            // write for the few that are reclaimed.
            let mut each = futures_util::stream::iter(names)
                .map(|hash| self.reclaim_one(hash, skew))
                .buffer_unordered(self.cfg.upload_concurrency.max(1));
            while let Some(r) = each.next().await {
                match r? {
                    One::Skipped => {}
                    One::Read => done.read += 1,
                    One::Reclaimed(size) => {
                        done.read += 1;
                        done.reclaimed += 1;
                        done.bytes += size;
                    }
                }
            }
            Ok(done)
        })
        .await
    }

    /// One name of [`Remote::reclaim`]: its header read and, if no host may read its
    /// version (expired for longer than `skew` seconds, or purged), a tombstone.
    async fn reclaim_one(&self, hash: String, skew: u64) -> Result<One> {
        let name = format!("o/{hash}");
        let h = match self.read_current(&name).await {
            Ok(Current::Valid(h, _)) => h,
            Ok(_) => return Ok(One::Skipped),
            Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(One::Skipped),
            Err(e) => return Err(e),
        };
        let record = match &h.body {
            Body::Inline(r) | Body::Pointer(r, _) => r,
            Body::Tombstone(_) => return Ok(One::Read),
        };
        let now_s = now_ns() / 1_000_000_000;
        let at = if record.is_expired_at(now_s.saturating_sub(skew)) {
            Stamp {
                time_ns: h.stamp.time_ns + 1,
                host: h.stamp.host.clone(),
            }
        } else if let Some(p) = self.purged(&record.key, &h.stamp) {
            p
        } else {
            return Ok(One::Read);
        };
        let tomb = Header {
            stamp: at.clone(),
            body: Body::Tombstone(record.key.clone()),
        }
        .encode()
        .map_err(Error::Invalid)?;
        let (outcome, _) = self
            .publish(
                &name,
                &record.key,
                &at,
                PutPayload::from(tomb),
                PayloadKind::Tombstone,
            )
            .await?;
        if outcome != Outcome::Stored {
            return Ok(One::Read);
        }
        tracing::debug!(
            name,
            "remote tier: replaced a version no host may read with a tombstone"
        );
        Ok(One::Reclaimed(record.size))
    }

    /// Deletes the objects that checks of conditional writes left behind (their host
    /// stopped during one) last modified before `cutoff_s`.
    async fn sweep_probes(&self, cutoff_s: i64) -> Result<()> {
        let mut list = self.store.list(Some(&self.path(PROBE_DIR)));
        let mut stale = Vec::new();
        while let Some(m) = list.next().await {
            let m = m.map_err(|e| Error::store("sweep", e))?;
            if m.last_modified.timestamp() < cutoff_s {
                stale.push(m.location);
            }
        }
        drop(list);
        for path in stale {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("sweep", e)),
            }
            tracing::debug!(name = %path, "remote tier: deleted a check's leftover object");
        }
        Ok(())
    }

    /// Deletes the data objects older than `grace` that the pointer at their key's
    /// name does not name (absent, a tombstone, an inline version, or a pointer to
    /// another data object). A name whose object is damaged or of a newer format is
    /// left alone, with its data objects. Objects a check of conditional writes left
    /// (`probe/`, its host stopped during the check) older than `grace` go too,
    /// uncounted. Bounded by
    /// [`Config::transfer_timeout`](crate::Config) as a whole; a sweep cut short
    /// deletes the rest next time.
    pub async fn sweep_orphans(&self, grace: Duration) -> Result<Sweep> {
        let dir = self.path("d");
        let pre = self.cfg.full_name("");
        let cutoff_s = (now_ns() / 1_000_000_000).saturating_sub(grace.as_secs()) as i64;
        self.bounded("sweep", self.cfg.transfer_timeout, async {
            let mut done = Sweep::default();
            // By the key's hash: one look at the pointer for all its data objects.
            let mut old: BTreeMap<String, Vec<(Path, String, u64)>> = BTreeMap::new();
            let mut list = self.store.list(Some(&dir));
            while let Some(m) = list.next().await {
                let m = m.map_err(|e| Error::store("sweep", e))?;
                done.listed += 1;
                if m.last_modified.timestamp() >= cutoff_s {
                    continue;
                }
                let full = m.location.to_string();
                let rel = full.strip_prefix(&pre).unwrap_or(&full).to_owned();
                let Some((hash, _)) = rel.strip_prefix("d/").and_then(|r| r.split_once('/'))
                else {
                    continue;
                };
                old.entry(hash.to_owned())
                    .or_default()
                    .push((m.location, rel, m.size));
            }
            drop(list);
            self.sweep_probes(cutoff_s).await?;
            for (hash, datas) in old {
                let current = match self.read_current(&format!("o/{hash}")).await {
                    Ok(c) => c,
                    Err(e) if e.kind() == ErrorKind::Corrupt => continue,
                    Err(e) => return Err(e),
                };
                let named = match current {
                    Current::Absent => None,
                    Current::Valid(h, _) => match h.body {
                        Body::Pointer(_, data) => Some(data),
                        Body::Inline(_) | Body::Tombstone(_) => None,
                    },
                    Current::Damaged(..) => continue,
                };
                for (path, rel, size) in datas {
                    if named.as_deref() == Some(rel.as_str()) {
                        continue;
                    }
                    match self.store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(Error::store("sweep", e)),
                    }
                    tracing::debug!(name = %path, "remote tier: deleted a data object no pointer names");
                    done.deleted += 1;
                    done.bytes += size;
                }
            }
            Ok(done)
        })
        .await
    }
}
