//! GET: one lookup, then the version opened as the transfer mode needs it (the store's
//! shared description, or a private one for fd mode), the range, and the checksum check
//! of bytes the server sends itself.

use super::*;
use crate::wire::resolve_range;
use objmapper_proto::RequestHeader;
use objmapper_store::SMALL_BODY_MAX;
use std::os::fd::OwnedFd;

/// Times a GET looks a key up again after the version it found failed its checksum
/// (the store dropped it; another tier may hold an intact copy).
const DAMAGED_RETRIES: usize = 3;

/// What a GET will deliver of the version it found.
struct Plan {
    /// The version planned for (to notice that the store opened another).
    version: u64,
    /// Its wire metadata.
    wire: Vec<u8>,
    mode: Mode,
    offset: u64,
    length: u64,
    /// The object's size.
    size: u64,
}

impl Plan {
    /// The range and the mode (`mode`, or the request's resolved) for `meta`; an error
    /// reply if the range cannot be served or the reply would not fit the transport.
    #[inline]
    fn new(
        h: &RequestHeader,
        meta: &ObjectMeta,
        p: &Policy,
        mode: Option<Mode>,
    ) -> Result<Plan, Reply> {
        let (offset, length) = resolve_range(h.offset, h.length, meta.size)
            .map_err(|msg| Reply::error(Status::RangeNotSatisfiable, msg))?;
        let mode = mode.unwrap_or(match h.mode {
            Mode::Auto if p.transport.fd_ok() && length >= p.auto_fd_threshold => Mode::Fd,
            Mode::Auto => Mode::Copy,
            m => m,
        });
        let wire = wire_meta(meta);
        fits(p, wire.len(), if mode == Mode::Fd { 0 } else { length })?;
        Ok(Plan {
            version: meta.version,
            wire,
            mode,
            offset,
            length,
            size: meta.size,
        })
    }

    /// Plans again if the store opened another version than the one planned for (the
    /// planned one vanished and the key was looked up afresh); the mode stays.
    #[inline]
    fn opened(&mut self, h: &RequestHeader, opened: &ObjectMeta, p: &Policy) -> Result<(), Reply> {
        if opened.version != self.version {
            *self = Plan::new(h, opened, p, Some(self.mode))?;
        }
        Ok(())
    }

    /// Whether the bytes travel inline in the reply frame and the whole object is small
    /// enough for the store's body cache ([`objmapper_store::SMALL_BODY_MAX`]).
    #[inline]
    fn small(&self, p: &Policy) -> bool {
        self.mode == Mode::Copy && self.length <= p.inline_max && self.size <= SMALL_BODY_MAX
    }

    #[inline]
    fn reply(self, body: Body) -> Reply {
        Reply {
            status: Status::Ok,
            message: Cow::Borrowed(""),
            meta: self.wire,
            mode: self.mode,
            offset: self.offset,
            length: self.length,
            handle: 0,
            body,
        }
    }
}

/// GET in any mode the transport allows. One index lookup decides the range and the
/// mode; the version is then opened once, as that mode needs it, and counted once.
#[inline]
pub(crate) fn get(store: &Store, req: &Request<'_>, p: &Policy) -> Reply {
    let h = &req.header;
    if let Err(msg) = check_mode(h.op, h.mode, p) {
        return Reply::error(Status::ModeUnsupported, msg);
    }
    let mut damaged = 0;
    loop {
        let found = match store.lookup(req.key) {
            Ok(Some(f)) => f,
            Ok(None) => return Reply::not_found(),
            Err(e) => return Reply::store_error(&e),
        };
        let mut plan = match Plan::new(h, found.meta(), p, None) {
            Ok(plan) => plan,
            Err(r) => return r,
        };
        if plan.mode == Mode::Fd && !p.share_fds {
            // A fresh private description (its own offset and status flags) of the
            // version found, for this request.
            let obj = match store.open_private(found) {
                Ok(Some(o)) => o,
                Ok(None) => return Reply::not_found(),
                Err(e) => return Reply::store_error(&e),
            };
            if let Err(r) = plan.opened(h, &obj.meta, p) {
                return r;
            }
            return plan.reply(Body::Fd(Attached::Owned(OwnedFd::from(obj.file))));
        }
        // A small object's bytes sent inline come from the store's body cache when it
        // kept them: nothing to open or read.
        if plan.small(p) {
            if let Some(bytes) = store.cached_body(&found) {
                return plan.reply(Body::Bytes(bytes));
            }
        }
        // Every other GET reads through the store's cached open file of the version: no
        // open or close per request. Its description is shared, which is invisible while
        // the bytes travel inline, and handed out only to a client that promised
        // POSITIONAL_READS (`Policy::share_fds`).
        let obj = match store.open_shared(found) {
            Ok(Some(o)) => o,
            Ok(None) => return Reply::not_found(),
            Err(e) => return Reply::store_error(&e),
        };
        if let Err(r) = plan.opened(h, &obj.meta, p) {
            return r;
        }
        if plan.mode == Mode::Fd {
            return plan.reply(Body::Fd(Attached::Shared(obj.file)));
        }
        // Bytes the server sends itself are checked against the record's checksum
        // (docs/STORAGE.md, "Faults"): before the reply (a small object's are read
        // whole, checked and kept for the next GET), or on the way for a whole object
        // too large to read first.
        if plan.small(p) {
            match store.read_body(&obj) {
                Ok(Some(bytes)) => return plan.reply(Body::Bytes(bytes)),
                Ok(None) if damaged < DAMAGED_RETRIES => {
                    damaged += 1;
                    continue;
                }
                Ok(None) => return Reply::not_found(),
                Err(e) => return Reply::store_error(&e),
            }
        }
        let whole = plan.offset == 0 && plan.length == obj.meta.size;
        let check = if obj.verified() {
            None
        } else if whole && plan.length > p.inline_max {
            Some(Box::new(obj.clone()))
        } else {
            match store.verify(&obj) {
                Ok(true) => None,
                // Damaged: dropped by the store; the next lookup finds the other tier's
                // copy, if there is one.
                Ok(false) if damaged < DAMAGED_RETRIES => {
                    damaged += 1;
                    continue;
                }
                Ok(false) => return Reply::not_found(),
                Err(e) => return Reply::store_error(&e),
            }
        };
        let body = if plan.mode == Mode::Copy && plan.length <= p.inline_max {
            Body::Inline(obj.file)
        } else {
            Body::Stream {
                file: obj.file,
                check,
            }
        };
        return plan.reply(body);
    }
}
