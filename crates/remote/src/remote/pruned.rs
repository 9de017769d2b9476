//! The mark of what pruning took from the event log: `P/events-pruned`, the newest
//! append time of an event any host has pruned.
//!
//! A host keeps its local copies by reading every event appended after its place in
//! the log. Each host prunes with its own retention, and polls at its own interval: a
//! host given a longer retention than another's, or polling less often than another
//! prunes, would find events gone that it never read, and go on serving what they
//! deleted, overwrote or purged (found from outside: neither was checked, and the
//! docs' "give every host the same value" was enforced nowhere). So a host raises the
//! mark before it deletes, and every poll reads it after its listing: a mark past
//! what the host had read before (every event appended up to its start, then up to
//! each poll's start less the lookback) says events it never read are gone, and it
//! drops what they may have covered ([`EventCursor::missed`]). Deleting after the
//! mark, and reading it after the list, means that a listing that missed a pruned
//! event always sees a mark that says so.
//!
//! ```text
//! 8  magic "OBJMPRND"
//! 2  format u16 = 1
//! 2  reserved, 0
//! 8  up_to_ns u64: the newest append time (by its name) of an event pruned
//! 8  xxh3-64 of all the bytes before
//! ```
//!
//! A damaged mark is read as absent, with a WARN: the retention each host checks
//! against its own place still holds.

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use xxhash_rust::xxh3::xxh3_64;

use super::{etag_of, update, EventCursor, Remote, MAX_ATTEMPTS};
use crate::error::{is_absent, Error, Result};

/// The mark's name, relative to the prefix.
pub(crate) const NAME: &str = "events-pruned";
const MAGIC: [u8; 8] = *b"OBJMPRND";
const FORMAT: u16 = 1;
const LEN: usize = 28;

fn encode(up_to_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&up_to_ns.to_le_bytes());
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode(b: &[u8]) -> std::result::Result<u64, &'static str> {
    if b.len() != LEN || b[..8] != MAGIC {
        return Err("not a mark of the pruned log (bad magic or length)");
    }
    if xxh3_64(&b[..20]) != u64::from_le_bytes(b[20..].try_into().expect("8 bytes")) {
        return Err("checksum mismatch");
    }
    if u16::from_le_bytes([b[8], b[9]]) != FORMAT {
        return Err("a format this version does not know");
    }
    Ok(u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")))
}

impl Remote {
    /// The mark and how to replace it: (up_to_ns, 0 when absent or damaged; the
    /// conditional write that replaces exactly what was read).
    async fn read_pruned_mark(&self, op: &'static str) -> Result<(u64, PutMode)> {
        match self.store.get(&self.path(NAME)).await {
            Ok(r) => {
                let etag = etag_of(&r.meta, op)?;
                let body = crate::capped::collect(r, 4096, op).await?;
                let up_to = decode(&body).unwrap_or_else(|why| {
                    tracing::warn!(
                        why,
                        "remote tier: the mark of the pruned event log is damaged; read as absent"
                    );
                    0
                });
                Ok((up_to, update(etag)))
            }
            Err(e) if is_absent(&e) => Ok((0, PutMode::Create)),
            Err(e) => Err(Error::store(op, e)),
        }
    }

    /// Raises the mark to `up_to_ns` (never lowers it): before pruning the events
    /// appended up to then.
    pub(super) async fn raise_pruned_mark(&self, up_to_ns: u64) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let (now, mode) = self.read_pruned_mark("prune").await?;
            if now >= up_to_ns {
                return Ok(());
            }
            let body = PutPayload::from(Bytes::from(encode(up_to_ns)));
            match self
                .store
                .put_opts(&self.path(NAME), body, PutOptions::from(mode))
                .await
            {
                Ok(_) => return Ok(()),
                // Another host wrote the mark in between: read it again.
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(Error::store("prune", e)),
            }
        }
        Err(Error::Precondition {
            op: "prune",
            name: self.cfg.full_name(NAME),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// After a poll's listing, for a cursor that had read every event appended up to
    /// `read_to_ns`: whether events appended after that were pruned first, noted in
    /// `cursor`. (Compared with where the listing began instead, a quiet log's last
    /// event, read long before, counted as missed once it was pruned.)
    pub(super) async fn check_pruned_mark(
        &self,
        cursor: &mut EventCursor,
        read_to_ns: u64,
    ) -> Result<()> {
        let (up_to, _) = self.read_pruned_mark("poll").await?;
        if up_to > read_to_ns {
            cursor.missed = Some(cursor.missed.unwrap_or(0).max(up_to));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_round_trips_and_refuses_damage() {
        let b = encode(1_234_567_890_123);
        assert_eq!(decode(&b), Ok(1_234_567_890_123));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(decode(&d).is_err(), "byte {i}");
        }
        assert!(decode(&b[..20]).is_err());
    }
}
