//! Retiring purges from the purge set, so that it does not only grow.
//!
//! An entry of the purge set (prefix, stamp) is needed while the bucket may hold a
//! version it covers, or may still receive one: a host's pending upload of a version
//! committed before the purge. Neither can last: the sweep's reclaim replaces covered
//! versions with tombstones, and a host either reads the purge's event (and drops its
//! covered versions, pending uploads included) or, away for longer than the event
//! retention, drops everything committed before the horizon. So an entry added at
//! `a` is retired once a reclaim pass over every name that started after
//! `a + `[`Remote::retire_horizon`] has ended, every round of which read the purge set
//! first (docs/STORAGE.md, "The purge set").
//!
//! When an entry was added is not in the purge set (whose format old hosts read too);
//! the sweeping hosts record when they first saw each entry, an upper bound on it, in
//! a second object, `P/purges-seen`:
//!
//! ```text
//! 8  magic "OBJMPSEN"
//! 2  format u16 = 1
//! 2  reserved, 0
//! 4  count u32
//! count x { 16 entry id u128, 8 first_seen_ns u64 }   (sorted by id, each id once)
//! 8  xxh3-64 of all the bytes before
//! ```
//!
//! An entry's id is the xxh3-128 of its stamp's time (u64), its host's length (u8)
//! and bytes, and its prefix, little endian. A record lost or damaged only delays a
//! retirement: an entry without one is recorded as first seen now.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::{etag_of, now_ns, update, Remote, MAX_ATTEMPTS};
use crate::error::{is_absent, Error, Result};
use crate::format::Stamp;
use crate::purges;

/// The record of first sightings, relative to the prefix.
const SEEN: &str = "purges-seen";
const MAGIC: [u8; 8] = *b"OBJMPSEN";
const FORMAT: u16 = 1;

/// The id of a purge set entry.
fn entry_id(prefix: &[u8], stamp: &Stamp) -> u128 {
    let host = stamp.host.as_str().as_bytes();
    let mut b = Vec::with_capacity(9 + host.len() + prefix.len());
    b.extend_from_slice(&stamp.time_ns.to_le_bytes());
    b.push(host.len() as u8);
    b.extend_from_slice(host);
    b.extend_from_slice(prefix);
    xxh3_128(&b)
}

fn encode(seen: &BTreeMap<u128, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + seen.len() * 24);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(seen.len() as u32).to_le_bytes());
    for (id, t) in seen {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&t.to_le_bytes());
    }
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode(buf: &[u8]) -> Result<BTreeMap<u128, u64>, &'static str> {
    if buf.len() < 24 || buf[..8] != MAGIC {
        return Err("bad magic");
    }
    let (body, sum) = buf.split_at(buf.len() - 8);
    if xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err("checksum mismatch");
    }
    if u16::from_le_bytes([body[8], body[9]]) != FORMAT || body[10..12] != [0, 0] {
        return Err("unknown format");
    }
    let count = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
    let rest = &body[16..];
    if rest.len() != count * 24 {
        return Err("length does not match the count");
    }
    let mut seen = BTreeMap::new();
    for e in rest.chunks_exact(24) {
        let id = u128::from_le_bytes(e[..16].try_into().expect("16 bytes"));
        let t = u64::from_le_bytes(e[16..].try_into().expect("8 bytes"));
        if seen.insert(id, t).is_some() {
            return Err("an id twice");
        }
    }
    Ok(seen)
}

impl Remote {
    /// How long after an entry is added to the purge set a reclaim pass must start
    /// for the entry to be retired at its end: the event retention (every host has
    /// read the purge's event by then, or dropped what it covered), twice the transfer
    /// timeout (an upload begun before that lands within it), the event lookback
    /// (clock skew), and [`Config::retire_slack`](crate::Config::retire_slack) (5
    /// minutes: a host cut off drops what crossed the retention once a minute).
    pub fn retire_horizon(&self) -> Duration {
        self.cfg.event_retention
            + self.cfg.transfer_timeout * 2
            + self.cfg.event_lookback
            + self.cfg.retire_slack
    }

    /// The record of first sightings and the mode to replace it with; empty when
    /// absent or damaged (a damaged one is replaced).
    async fn read_seen(&self) -> Result<(BTreeMap<u128, u64>, PutMode)> {
        match self.store.get(&self.path(SEEN)).await {
            Ok(r) => {
                let etag = etag_of(&r.meta, "sweep")?;
                let body = crate::capped::collect(r, purges::MAX_LEN, "sweep").await?;
                let seen = decode(&body).unwrap_or_else(|why| {
                    tracing::warn!(
                        why,
                        "remote tier: the record of purges seen is damaged; starting it again"
                    );
                    BTreeMap::new()
                });
                Ok((seen, update(etag)))
            }
            Err(e) if is_absent(&e) => Ok((BTreeMap::new(), PutMode::Create)),
            Err(e) => Err(Error::store("sweep", e)),
        }
    }

    /// What a sweep round does first: reads the purge set again (so that its reclaim
    /// knows every purge made so far, whatever this host missed), records when each
    /// entry without a record was first seen (now), and forgets the records of
    /// entries no longer in the set. A record not written (another host wrote the
    /// object in between) is written by a later round.
    pub async fn track_purges(&self) -> Result<()> {
        // Whether or not it was read before.
        let set = self.learn_purge_set().await?;
        let _ = self.purges_read.set(());
        self.bounded("sweep", self.cfg.timeout, async {
            let (mut seen, mode) = self.read_seen().await?;
            let ids: BTreeSet<u128> = set.entries().map(|(p, s)| entry_id(p, s)).collect();
            let before = seen.len();
            seen.retain(|id, _| ids.contains(id));
            let mut changed = seen.len() != before;
            let now = now_ns();
            for id in ids {
                seen.entry(id).or_insert_with(|| {
                    changed = true;
                    now
                });
            }
            if !changed {
                return Ok(());
            }
            let body = PutPayload::from(Bytes::from(encode(&seen)));
            match self
                .store
                .put_opts(&self.path(SEEN), body, PutOptions::from(mode))
                .await
            {
                Ok(_)
                | Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(()),
                Err(e) => Err(Error::store("sweep", e)),
            }
        })
        .await
    }

    /// What a sweep round does when its reclaim reached the end of the names: removes
    /// from the purge set the entries first seen more than [`Remote::retire_horizon`]
    /// before `pass_started_ns`, the start of the pass that just ended (0: unknown,
    /// nothing is retired). Returns how many went. The write is conditional on the
    /// set read, so a purge added meanwhile is kept.
    pub async fn retire_purges(&self, pass_started_ns: u64) -> Result<u64> {
        let horizon = u64::try_from(self.retire_horizon().as_nanos()).unwrap_or(u64::MAX);
        let Some(before) = pass_started_ns.checked_sub(horizon) else {
            return Ok(0);
        };
        self.bounded("sweep", self.cfg.transfer_timeout, async {
            let (seen, _) = self.read_seen().await?;
            for _ in 0..MAX_ATTEMPTS {
                let Some((mut set, etag)) = self.read_purge_set().await? else {
                    return Ok(0);
                };
                let old: Vec<(Vec<u8>, Stamp)> = set
                    .entries()
                    .filter(|(p, s)| seen.get(&entry_id(p, s)).is_some_and(|t| *t < before))
                    .map(|(p, s)| (p.to_vec(), s.clone()))
                    .collect();
                if old.is_empty() {
                    return Ok(0);
                }
                for (p, s) in &old {
                    set.remove(p, s);
                }
                let body = PutPayload::from(Bytes::from(set.encode()));
                match self
                    .store
                    .put_opts(
                        &self.path(purges::NAME),
                        body,
                        PutOptions::from(update(etag)),
                    )
                    .await
                {
                    Ok(_) => {
                        for (p, s) in &old {
                            tracing::info!(
                                prefix = %p.escape_ascii(),
                                stamp = %s,
                                "remote tier: retired a purge from the purge set: the bucket \
                                 holds nothing it covers, and no host can upload any"
                            );
                        }
                        return Ok(old.len() as u64);
                    }
                    Err(object_store::Error::Precondition { .. })
                    | Err(object_store::Error::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(Error::store("sweep", e)),
                }
            }
            Ok(0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::HostId;

    #[test]
    fn the_record_round_trips_and_refuses_damage() {
        let st = |t, h| Stamp {
            time_ns: t,
            host: HostId::new(h).unwrap(),
        };
        let mut seen = BTreeMap::new();
        seen.insert(entry_id(b"img/", &st(10, "a")), 100);
        seen.insert(entry_id(b"", &st(10, "a")), 200);
        seen.insert(entry_id(b"img/", &st(11, "a")), 300);
        assert_eq!(seen.len(), 3, "prefix and stamp both make the id");
        assert_ne!(entry_id(b"a", &st(1, "hb")), entry_id(b"ba", &st(1, "h")));
        let bytes = encode(&seen);
        assert_eq!(decode(&bytes).unwrap(), seen);
        assert_eq!(decode(&encode(&BTreeMap::new())).unwrap().len(), 0);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "a flipped byte {i} is seen");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
