//! Collecting data objects that no pointer names.
//!
//! A multipart version is two objects: its data object (`d/<sha256 of key>/<stamp>`)
//! and the pointer at the key's name (`o/<sha256 of key>`) that names it. The pointer
//! is written after the data object, and a replaced pointer's data object is deleted
//! after the replacement. A crash, a lost answer or a failed delete in between leaves
//! a data object that nothing names and nothing reads: the sweep finds those and
//! deletes them, once they are older than any upload still in progress could be.
//! One host sweeps per round, the one that wins the claim (a conditional write of
//! `swept`), so a fleet does not list the bucket once per host.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{etag_of, now_ns, update, Current, Remote};
use crate::error::{is_absent, Error, ErrorKind, Result};
use crate::format::Body;

/// The claim object: `<time_ns> <host>\n` of the last sweep's start, in ASCII.
const SWEPT: &str = "swept";

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

    /// Claims this round's sweep for this host: true when no host claimed one within
    /// `every` (a claim stamped more than `every` in the future, from a clock far
    /// ahead, counts as old), and this host's claim then won the conditional write.
    /// Hosts that call this every `every` sweep about once per `every` between them.
    pub async fn claim_sweep(&self, every: Duration) -> Result<bool> {
        let path = self.path(SWEPT);
        let now = now_ns();
        let every_ns = every.as_nanos() as u64;
        self.bounded("sweep", self.cfg.timeout, async {
            let mode = match self.store.get(&path).await {
                Ok(r) => {
                    let etag = etag_of(&r.meta, "sweep")?;
                    let body = r.bytes().await.map_err(|e| Error::store("sweep", e))?;
                    let last = std::str::from_utf8(&body)
                        .ok()
                        .and_then(|s| s.split(' ').next())
                        .and_then(|t| t.parse::<u64>().ok());
                    if let Some(t) = last {
                        if t.saturating_add(every_ns) > now && t < now.saturating_add(every_ns) {
                            return Ok(false);
                        }
                    }
                    update(etag)
                }
                Err(e) if is_absent(&e) => PutMode::Create,
                Err(e) => return Err(Error::store("sweep", e)),
            };
            let claim = format!("{now} {}\n", self.cfg.host);
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(claim.into_bytes()), opts)
                .await
            {
                Ok(_) => Ok(true),
                // Another host claimed it in between.
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(Error::store("sweep", e)),
            }
        })
        .await
    }

    /// Deletes the data objects older than `grace` that the pointer at their key's
    /// name does not name (absent, a tombstone, an inline version, or a pointer to
    /// another data object). A name whose object is damaged or of a newer format is
    /// left alone, with its data objects. Bounded by
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
