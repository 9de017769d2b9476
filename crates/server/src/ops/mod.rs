//! The ops layer: executes a decoded request against the store and returns a [`Reply`]
//! value. Every transport calls it: a stream connection (`conn/`) turns the reply into
//! output queue entries, the UDP thread (`udp.rs`) into a datagram. What a transport can
//! do comes in as its [`Policy`] (which transfer modes, whether fds can travel, the
//! largest reply, the auto-mode threshold), so the rules of a request (its checks, HEAD,
//! ranges, modes, the error texts) are written once, here.
//!
//! Nothing here touches a socket, and nothing here holds connection state: the session,
//! permissions, staged PUTs and reply ordering stay with the stream connection.
//! Request counters are counted by the transports from [`Reply::status`].

mod get;
mod reply;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use objmapper_proto::{validate_request, Metadata, Mode, Op, Request, Status, RESPONSE_HEADER_LEN};
use objmapper_store::{BanInfo, CommitError, Condition, ObjectMeta, Store, StoreError, Superseded};

use crate::limits::RuntimeLimits;
use crate::wire::{commit_status, store_status, wire_meta};

pub(crate) use get::get;
pub(crate) use reply::{Attached, Body, Reply, Rest};

/// What the transport a request came over can do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) transport: Transport,
    /// fd-mode GETs pass the store's cached, shared description instead of a private
    /// one: a V2 session whose client promised POSITIONAL_READS.
    pub(crate) share_fds: bool,
    /// An auto-mode GET of at least this many bytes passes the fd, when fds can travel.
    pub(crate) auto_fd_threshold: u64,
    /// The largest whole reply frame (header, metadata and body) the transport can
    /// carry; `None`: no limit (the bytes are streamed).
    pub(crate) max_reply: Option<usize>,
    /// A copy-mode body of at most this many bytes is read into the reply frame, checked
    /// against the record first; a larger one is streamed (hashed on the way when it is
    /// the whole object).
    pub(crate) inline_max: u64,
}

/// Which kind of transport, as far as transfer modes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A Unix stream socket; `fd_passing`: fds can travel on this session (V1, or a V2
    /// session that negotiated FD_PASSING).
    Unix { fd_passing: bool },
    /// TCP, plain or TLS: no fds.
    Tcp,
    /// UDP datagrams: the bytes travel inline (auto is served as copy).
    Udp,
}

impl Transport {
    fn fd_ok(self) -> bool {
        self == Transport::Unix { fd_passing: true }
    }
}

/// Whether `mode` can work for `op` over this transport; the MODE_UNSUPPORTED message if
/// not.
#[inline]
pub(crate) fn check_mode(op: Op, mode: Mode, p: &Policy) -> Result<(), Cow<'static, str>> {
    let refused = match (mode, p.transport) {
        (Mode::Fd, Transport::Unix { fd_passing: true }) | (Mode::Copy, _) => false,
        (Mode::Auto, _) => op == Op::Put,
        (_, t) => t == Transport::Udp || mode == Mode::Fd,
    };
    if refused {
        return Err(mode_refused(op, mode, p));
    }
    Ok(())
}

/// MODE_UNSUPPORTED's message for a mode [`check_mode`] refuses.
#[cold]
fn mode_refused(op: Op, mode: Mode, p: &Policy) -> Cow<'static, str> {
    match (p.transport, mode) {
        (_, Mode::Auto) if op == Op::Put => {
            "auto mode applies to GET; a PUT names its mode (copy, splice or fd)".into()
        }
        (Transport::Udp, m) => format!(
            "{m} mode is not available over UDP: the bytes travel inline in the reply; use \
             copy (auto is served as copy)"
        )
        .into(),
        (Transport::Tcp, _) => "fd mode needs a Unix socket: file descriptors cannot cross \
                                TCP; use copy or splice mode"
            .into(),
        _ => "fd mode needs the FD_PASSING capability, which HELLO did not negotiate".into(),
    }
}

/// The checks every request passes before it is executed: a well-formed frame
/// ([`validate_request`]), and the server's key and metadata limits.
#[inline]
pub(crate) fn admit(req: &Request<'_>, limits: &RuntimeLimits) -> Result<(), Reply> {
    validate_request(req).map_err(|(status, msg)| Reply::error(status, msg))?;
    // A BAN's key field is an expression, bounded by the protocol's 4096 bytes alone.
    if req.header.op != Op::Ban {
        if let Some(msg) = limits.key_too_long(req.key.len()) {
            return Err(Reply::error(Status::KeyTooLong, msg));
        }
    }
    if req.meta.len() > limits.max_meta_len {
        let msg = format!(
            "metadata section of {} bytes exceeds this server's limit of {}",
            req.meta.len(),
            limits.max_meta_len
        );
        return Err(Reply::error(Status::MetadataTooLarge, msg));
    }
    Ok(())
}

/// Executes a read, what every transport serves: GET, HEAD or PING. Other ops are the
/// stream connection's (they change the store or the session).
#[inline]
pub(crate) fn read(store: &Store, req: &Request<'_>, p: &Policy) -> Reply {
    match req.header.op {
        Op::Ping => Reply::ok(),
        Op::Head => head(store, req.key, p),
        Op::Get => get(store, req, p),
        op => Reply::error(
            Status::OpUnsupported,
            format!("{op} is not a read: GET, HEAD and PING are"),
        ),
    }
}

/// HEAD: the current version's metadata, with its size as the reply's length.
pub(crate) fn head(store: &Store, key: &[u8], p: &Policy) -> Reply {
    let Some(meta) = store.head(key) else {
        return Reply::not_found();
    };
    let reply = Reply::with_meta(&meta);
    match fits(p, reply.meta.len(), 0) {
        Ok(()) => reply,
        Err(too_large) => too_large,
    }
}

/// RESPONSE_TOO_LARGE unless a frame with `meta_len` bytes of metadata and `body` bytes
/// inline fits the transport's largest reply.
fn fits(p: &Policy, meta_len: usize, body: u64) -> Result<(), Reply> {
    let Some(max) = p.max_reply else {
        return Ok(());
    };
    // In u64: `body` can be anything up to the object size.
    let len = (RESPONSE_HEADER_LEN + meta_len) as u64 + body;
    if len <= max as u64 {
        return Ok(());
    }
    let msg = format!(
        "the response would be {len} bytes, over the UDP limit of {max} bytes \
         (udp_max_response); use the Unix socket or TCP, or read a range"
    );
    Err(Reply::error(Status::ResponseTooLarge, msg))
}

/// DELETE (of the version `condition` allows). An expired object not yet swept away is
/// removed too, but it was not live, so the answer is NOT_FOUND, as for GET and HEAD.
pub(crate) fn delete(store: &Store, key: &[u8], condition: Condition, durable: bool) -> Reply {
    let live = store.head(key).is_some();
    match store.delete_if(key, condition, durable) {
        Ok(removed) if removed && live => Reply::ok(),
        Ok(_) => Reply::not_found(),
        Err(e) => Reply::store_error(&e),
    }
}

/// PIN or UNPIN.
pub(crate) fn pin(store: &Store, key: &[u8], pin: bool) -> Reply {
    match store.set_pinned(key, pin) {
        Ok(true) => Reply::ok(),
        Ok(false) => Reply::not_found(),
        Err(e) => Reply::store_error(&e),
    }
}

/// BAN: OK with the ban's stamp as the metadata's VERSION (and MTIME).
pub(crate) fn ban(store: &Store, expr: &[u8]) -> Reply {
    banned(store.ban(expr))
}

fn banned(r: Result<BanInfo, StoreError>) -> Reply {
    let info = match r {
        Ok(info) => info,
        Err(e) => return Reply::store_error(&e),
    };
    let md = Metadata {
        version: Some(info.stamp),
        mtime_ns: Some(info.stamp),
        ..Default::default()
    };
    let mut meta = Vec::new();
    if md.encode(&mut meta).is_err() {
        meta.clear();
    }
    Reply {
        meta,
        ..Reply::ok()
    }
}

/// A COMMIT's outcome (or a copy/splice PUT's, whose commit follows its body): OK with
/// the new version's metadata, or why nothing was published.
/// A mutation's reply, and what may wait until it has been sent.
pub(crate) struct Outcome {
    pub(crate) reply: Reply,
    /// The files of the versions a PUT superseded: dropping this unlinks them. The
    /// connection keeps it until the reply is out, so the `unlinkat` is not on the
    /// request's path.
    pub(crate) after: Option<Superseded>,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome { reply, after: None }
    }
}

/// [`committed`] of a [`Staging::commit_then`](objmapper_store::Staging::commit_then).
pub(crate) fn committed_then(r: Result<(Arc<ObjectMeta>, Superseded), CommitError>) -> Outcome {
    match r {
        Ok((meta, after)) => Outcome {
            reply: Reply::with_meta(&meta),
            after: (!after.is_empty()).then_some(after),
        },
        Err(e) => committed(Err(e)).into(),
    }
}

pub(crate) fn committed(r: Result<Arc<ObjectMeta>, CommitError>) -> Reply {
    let e = match r {
        Ok(meta) => return Reply::with_meta(&meta),
        Err(e) => e,
    };
    if let CommitError::Store(StoreError::PreconditionFailed(_)) = &e {
        tracing::debug!("conditional write refused: {e}");
        return Reply::error(Status::PreconditionFailed, e.to_string());
    }
    let msg = format!("commit failed, nothing was published: {e}");
    Reply::error(commit_status(&e), msg)
}

impl Reply {
    /// A store error as its wire status and message ([`store_status`]).
    pub(crate) fn store_error(e: &StoreError) -> Reply {
        let (status, msg) = store_status(e);
        Reply::error(status, msg)
    }

    /// NOT_FOUND, the one text for every op.
    #[inline]
    pub(crate) fn not_found() -> Reply {
        Reply::error(Status::NotFound, "no object under that key")
    }

    /// OK with an object's metadata, its size as the length (HEAD, COMMIT).
    pub(crate) fn with_meta(meta: &ObjectMeta) -> Reply {
        Reply {
            length: meta.size,
            meta: wire_meta(meta),
            ..Reply::ok()
        }
    }
}
