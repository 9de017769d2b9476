//! Whether the store honours the conditional writes that everything else relies on.
//!
//! "The larger stamp wins" is enforced by the store, not by the hosts: a PUT with
//! `If-None-Match: *` must be refused over an existing name, and one with
//! `If-Match: <etag>` over a name whose ETag changed. A store that passes over either
//! header in silence (some S3 gateways and proxies do) answers every such PUT with
//! success, and then an older upload replaces a newer version, or a tombstone: a
//! delete made on one host is undone by another's pending upload, and hosts read
//! through what was deleted. Nothing in the answers shows it. So a host asks, with an
//! object of its own, before it reads or writes anything through the tier
//! ([`Remote::check_conditional_writes`]).

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult};

use super::{rand_u64, update, Remote};
use crate::error::{is_absent, Error, Result};

/// Where the check's objects go, under the prefix: `probe/<host>-<nonce, 16 hex>`.
/// One lives for the few requests of a check; a host that dies during one leaves it,
/// and the bucket sweep deletes it ([`Remote::sweep_orphans`]).
pub(super) const PROBE_DIR: &str = "probe";

/// What a check object holds (anything would do).
const PROBE_BODY: &[u8] = b"objmapper: a check that this store honours conditional writes\n";

impl Remote {
    /// Checks, with a read and four writes of an object of this host's own, that the store
    /// refuses a second `If-None-Match: *` create and an `If-Match` with a stale ETag,
    /// and takes an `If-Match` with the current one; then deletes the object.
    ///
    /// Fails with [`Error::Unguarded`] when the store accepts what it must refuse, or
    /// answers either header as not implemented, or refuses its own ETag; with the
    /// usual errors (unreachable, refused, no bucket) when it could not tell.
    pub async fn check_conditional_writes(&self) -> Result<()> {
        let name = format!("{PROBE_DIR}/{}-{:016x}", self.cfg.host, rand_u64());
        let path = self.path(&name);
        let put = |mode: PutMode| {
            self.store.put_opts(
                &path,
                PutPayload::from_static(PROBE_BODY),
                PutOptions::from(mode),
            )
        };
        let steps = async {
            // A read first: a missing bucket is named as such (some stores create a
            // bucket on a PUT, which would hide a mistyped name).
            match self.store.get(&path).await {
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(Error::store("check", e)),
                Ok(_) => {}
            }
            let before = super::now_ns();
            let first = put(PutMode::Create)
                .await
                .map_err(|e| refusal("If-None-Match: *", e))?;
            let after = super::now_ns();
            let etag = etag(&first)?;
            // The store's clock, from when it says it made the object.
            let meta = self
                .store
                .head(&path)
                .await
                .map_err(|e| Error::store("check", e))?;
            // Writes over an object carry the ETag a read of it reports (`If-Match`):
            // that is the one checked last, not the PUT's. A gateway that rewrites the
            // ETags of reads passed the check, then made every such write lose.
            let read_etag = meta.e_tag.clone().unwrap_or_else(|| etag.clone());
            let modified = meta.last_modified;
            if let Some(ns) = modified
                .timestamp_nanos_opt()
                .and_then(|n| u64::try_from(n).ok())
            {
                self.note_clock_offset(super::clock::offset_of(before, after, ns));
            }
            match put(PutMode::Create).await {
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Ok(_) => {
                    return Err(ignored(
                        "a second PUT with If-None-Match: * over the same name was \
                         accepted (it must be refused with 412)",
                    ))
                }
                Err(e) => return Err(refusal("If-None-Match: *", e)),
            }
            match put(update("\"objmapper-stale-etag\"".into())).await {
                Err(object_store::Error::Precondition { .. }) => {}
                Ok(_) => {
                    return Err(ignored(
                        "a PUT with If-Match naming another ETag was accepted (it must be \
                         refused with 412)",
                    ))
                }
                Err(e) => return Err(refusal("If-Match", e)),
            }
            match put(update(read_etag)).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::Precondition { .. }) => Err(ignored(
                    "a PUT with If-Match naming the object's own ETag, as a HEAD of it \
                     reports it, was refused (the store, or a gateway on the way, compares \
                     ETags otherwise than it hands them out: every write over an existing \
                     object would lose)",
                )),
                Err(e) => Err(refusal("If-Match", e)),
            }
        };
        let r = self.bounded("check", self.cfg.timeout * 4, steps).await;
        // Whatever the answers, the object goes (the sweep takes it if this fails).
        let gone = self
            .bounded("check", self.cfg.timeout, async {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Error::store("check", e)),
                }
            })
            .await;
        if let Err(e) = gone {
            tracing::debug!(name = %path, error = %e, "remote tier: cannot delete the check's object");
        }
        r
    }
}

fn ignored(why: &str) -> Error {
    Error::Unguarded { why: why.into() }
}

fn etag(r: &PutResult) -> Result<String> {
    r.e_tag.clone().ok_or_else(|| Error::Unguarded {
        why: "a PUT was answered without an ETag, so no write can be made conditional".into(),
    })
}

/// What a failed conditional PUT means: the header refused as not implemented (S3's
/// `NotImplemented`, HTTP 501) is [`Error::Unguarded`]; anything else is the usual
/// error (the store unreachable, this host refused, no bucket).
fn refusal(header: &str, e: object_store::Error) -> Error {
    let not_implemented =
        matches!(
            e,
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }
        ) || crate::error::chain_contains(&e, &["NotImplemented", "501 Not Implemented"]);
    if not_implemented {
        return Error::Unguarded {
            why: format!("a PUT with {header} was answered as not implemented: {e}"),
        };
    }
    Error::store("check", e)
}
