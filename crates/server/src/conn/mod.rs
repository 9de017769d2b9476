//! One client connection: an input state machine, request dispatch, reply ordering, and an
//! output queue.
//!
//! A connection is driven by its worker whenever epoll reports it ready (edge-triggered)
//! and whenever a blocking job it submitted has finished. It never blocks on the socket:
//! partial frames wait in `pending`, and output that the socket will not take yet waits in
//! `out`. While output is backed up, or while it may not start another request (ordering,
//! pipeline depth), it reads no more requests, so one client cannot make the server buffer
//! without bound.
//!
//! **Ordering** (`sequencer.rs`). Every request takes the next sequence number and a
//! slot in the connection's [`Sequencer`] when it is dispatched. Most requests fill their slot at once; the slow ones (DURABLE
//! commits and deletes, whose fsyncs take milliseconds, and commits of more than
//! [`INLINE_COMMIT_MAX`] bytes) run on the blocking pool and fill it when the job is done. The
//! sequencer releases filled slots to `out`: strictly in sequence order (V1, or V2 without OUT_OF_ORDER), or
//! as soon as they are ready (OUT_OF_ORDER), except that an ORDERED request goes out only
//! after every earlier one and nothing later goes out before it.
//!
//! Dispatch follows the same rule, so a request also *runs* after those it is ordered
//! behind: in order mode a request starts only when every earlier one has finished (it
//! sees their effects, as V1 always has); with OUT_OF_ORDER up to `depth` requests run at
//! once, and an ORDERED one waits for all earlier ones and runs alone.
//!
//! **Modes.** GET in fd mode passes the object's fd; in copy mode the bytes go through a
//! buffer (small objects) or are streamed in chunks; in splice mode the header is sent and
//! then `sendfile(2)` moves the bytes file -> socket in the kernel. A splice-mode PUT body
//! moves socket -> pipe -> staging memfd with `splice(2)` (the few body bytes that arrived
//! in the same read as the frame are written from the read buffer).

use crate::access::Perms;
use crate::limits::Reserved;
use crate::metrics::Shard;
use crate::remote::RemoteTier;
use crate::shared::{Done, Shared, WorkerIo};
use crate::sys::{self, SpliceIn};
use crate::tls::{TlsStream, Token};

mod output;
mod put;
mod reply;
mod sequencer;
mod session;
mod stream;

use crate::ops::{self, Attached, Outcome, Reply};
use crate::wire::*;
use objmapper_proto::{
    self as proto, decode_request, encode_response, hello, req_flags, resp_flags, Decoded, Hello,
    Mode, Op, Request, RequestHeader, ResponseHeader, Status, Version,
};
use objmapper_store::{
    Condition, ObjectHasher, PutMeta, PutOptions, SharedObject, Staging, Store, Superseded,
};
use output::*;
use put::*;
use sequencer::Sequencer;
use session::*;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
pub(crate) use stream::Stream;

/// Copy mode: content up to this size is read straight into the response buffer.
const INLINE_READ_MAX: u64 = 256 * 1024;
/// Byte frames sent per sendmsg at most (pipelined replies leave together).
const SEND_BATCH_MAX: usize = 64;
/// Copy mode: chunk size for streaming larger content.
const FILE_CHUNK: usize = 256 * 1024;
/// Splice mode: most bytes one sendfile call is asked for (the socket buffer bounds what
/// it actually moves).
const SENDFILE_CHUNK: usize = 4 << 20;
/// Stop turning requests into responses once this much output is queued.
const OUT_HIGH_WATER: usize = 512 * 1024;
/// A copy or splice PUT body is held against `max_staged_bytes_total` in steps of this
/// many bytes as it arrives, not by its declared length at once.
const BODY_RESERVE_STEP: u64 = 1 << 20;
/// A non-durable commit of at most this many bytes runs on the event loop: it costs about
/// what handing it to the blocking pool and back would. Larger or DURABLE ones go to the pool.
const INLINE_COMMIT_MAX: u64 = 256 * 1024;

/// Whose permissions a connection has: looked up again when the allowlist changes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grantee {
    /// A Unix-socket peer, by its credentials at connect time.
    Unix(crate::access::Peer),
    /// A Unix-socket peer whose credentials could not be read: never any permission.
    Unknown,
    /// A TCP peer (plain or TLS): the TCP grant.
    Tcp,
}

/// A connection the acceptor admitted, with what it may do.
pub(crate) struct Accepted {
    pub(crate) stream: Stream,
    /// What the peer may do (allowlist or TCP grant).
    pub(crate) perms: Perms,
    /// Whose permissions those are.
    pub(crate) grantee: Grantee,
    /// The allowlist generation `perms` were read at.
    pub(crate) access_gen: u64,
    /// Answer the first request with this status and close (no permission, or over the
    /// connection limit).
    pub(crate) refuse: Option<(Status, String)>,
    /// Every request but a HELLO carrying this token is refused (TCP listeners that
    /// require a token).
    pub(crate) token: Option<Arc<Token>>,
}

/// What a worker's periodic sweep must do with a connection.
pub(crate) enum Timeout {
    None,
    /// It got a PROTOCOL_ERROR reply and closes once that is sent: drive it.
    Answered,
    /// Close it now, without a reply.
    Close,
}

enum Input {
    Frames,
    /// Receiving a copy- or splice-mode PUT body into a staging memfd.
    Body(Box<BodyState>),
    /// Skipping the rest of a rejected frame (and its body).
    Discard(u64),
}

/// Why processing stopped.
#[derive(PartialEq, Eq)]
enum Stop {
    NeedMore,
    Backpressure,
    /// The next request must wait for earlier ones (ordering or pipeline depth).
    Blocked,
    Close,
}

pub(crate) struct Conn {
    stream: Stream,
    /// The worker's token for this connection: where blocking jobs send their replies.
    token: usize,
    fd_capable: bool,
    is_tcp: bool,
    /// Received bytes not yet consumed (a partial frame, or input held back).
    pending: Vec<u8>,
    /// `pending` was fully examined and needs more bytes before it can make progress.
    pending_needs_more: bool,
    input: Input,
    out: VecDeque<Out>,
    out_bytes: usize,
    staged: HashMap<u64, StagedPut>,
    next_handle: u64,
    session: Session,
    /// Dispatched requests not yet released to `out`, and their order.
    inflight: Sequencer<Items>,
    /// A decoded request waits in `pending` until an earlier one completes.
    blocked: bool,
    /// Take no more requests; close once every reply has been sent.
    closing: bool,
    eof: bool,
    /// epoll reported the peer's FIN: read on to EOF, no new edge will come.
    peer_closed: bool,
    /// When the current incomplete frame or body started waiting, for the stall timeout
    /// (restarts whenever bytes arrive).
    waiting_since: Option<Instant>,
    /// When the first byte of the current incomplete frame header arrived (does not
    /// restart as more bytes trickle in: the header timeout).
    header_since: Option<Instant>,
    /// When bytes last arrived (or the connection was accepted), for the idle timeout.
    last_active: Instant,
    /// What the peer may do.
    perms: Perms,
    /// Whose permissions those are, and the allowlist generation they were read at.
    grantee: Grantee,
    access_gen: u64,
    /// Answer the first request with this and close.
    refuse: Option<(Status, String)>,
    /// Not authenticated yet: only a HELLO with this token is accepted.
    token_needed: Option<Arc<Token>>,
    /// When the connection was accepted (the TLS handshake must end within the header
    /// timeout).
    accepted_at: Instant,
    /// Whether the socket is registered for WRITABLE too. Only while output is backed
    /// up: otherwise every time the client drains its socket the worker would wake.
    pub(crate) registered_writable: bool,
    /// This worker's request counters.
    metrics: Arc<Shard>,
    /// What this connection's transport can do, for the ops layer: set at accept and
    /// whenever the session changes (`Conn::set_session`).
    policy: ops::Policy,
    /// The store, for checksums of bodies hashed as they are streamed.
    store: Arc<Store>,
    /// splice-mode bodies may go by sendfile(2) (`KernelIo::sendfile_ok`).
    sendfile_ok: bool,
    /// Superseded versions' files, unlinked once the output queue is empty (the PUTs'
    /// replies have been sent) or when the connection goes.
    after_send: Vec<Superseded>,
}

impl Conn {
    pub(crate) fn new(accepted: Accepted, token: usize, metrics: Arc<Shard>, sh: &Shared) -> Conn {
        let Accepted {
            stream,
            perms,
            grantee,
            access_gen,
            refuse,
            token: auth_token,
        } = accepted;
        let fd_capable = matches!(stream, Stream::Unix(_));
        let is_tcp = !fd_capable;
        Conn {
            stream,
            token,
            fd_capable,
            is_tcp,
            pending: Vec::new(),
            pending_needs_more: false,
            input: Input::Frames,
            out: VecDeque::new(),
            out_bytes: 0,
            staged: HashMap::new(),
            next_handle: 1,
            session: Session::New,
            inflight: Sequencer::default(),
            blocked: false,
            closing: false,
            eof: false,
            peer_closed: false,
            waiting_since: None,
            header_since: None,
            last_active: Instant::now(),
            perms,
            grantee,
            access_gen,
            refuse,
            token_needed: auth_token,
            accepted_at: Instant::now(),
            registered_writable: false,
            metrics,
            policy: reply::policy(fd_capable, fd_capable, sh),
            store: sh.store.clone(),
            sendfile_ok: sh.kio.sendfile_ok,
            after_send: Vec::new(),
        }
    }

    /// Output is waiting for socket space.
    pub(crate) fn wants_writable(&self) -> bool {
        !self.out.is_empty() || self.stream.tls_pending()
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        self.stream.source()
    }

    /// Idle: nothing half-received, nothing in flight and nothing left to send. Safe to
    /// close at shutdown.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && matches!(self.input, Input::Frames)
            && self.out.is_empty()
            && self.inflight.is_empty()
    }

    /// Applies the header, body-stall, refusal and idle timeouts.
    pub(crate) fn check_timeouts(&mut self, now: Instant, sh: &Shared) -> Timeout {
        let cfg = sh.limits.get();
        let over = |since: Option<Instant>, limit| since.is_some_and(|t| now >= t + limit);
        if self.closing {
            return Timeout::None;
        }
        if self.refuse.is_some() && now >= self.last_active + cfg.header_timeout {
            return Timeout::Close; // refused, and it sent no request to answer
        }
        if self.stream.handshaking() && now >= self.accepted_at + cfg.header_timeout {
            self.tls_failed(sh, "the handshake did not finish within the header timeout");
            return Timeout::Close;
        }
        let msg = if over(self.header_since, cfg.header_timeout) {
            format!(
                "incomplete frame header: not received whole within {:.0} s, closing",
                cfg.header_timeout.as_secs_f64()
            )
        } else if over(self.waiting_since, cfg.frame_timeout) {
            format!(
                "incomplete frame: no progress for {:.0} s, closing",
                cfg.frame_timeout.as_secs_f64()
            )
        } else {
            if let Some(idle) = cfg.idle_timeout {
                if self.is_idle() && now >= self.last_active + idle {
                    tracing::debug!("closing a connection idle for {idle:?}");
                    return Timeout::Close;
                }
            }
            return Timeout::None;
        };
        self.abandon_input();
        self.fatal(Status::ProtocolError, msg);
        self.pending.clear();
        self.waiting_since = None;
        self.header_since = None;
        Timeout::Answered
    }

    /// A blocking job finished: its reply to request `id` fills slot `seq`, and requests
    /// waiting behind it may go on (the worker calls [`Conn::on_ready`] next).
    pub(crate) fn complete(&mut self, seq: u64, id: u32, reply: Reply) {
        self.blocked = false;
        self.deliver(seq, id, reply);
    }

    /// Does all the work the socket allows. Returns false when the connection should close.
    /// `read_closed`: epoll reported the peer's FIN (EPOLLRDHUP) with this event.
    pub(crate) fn on_ready(
        &mut self,
        sh: &Shared,
        rbuf: &mut [u8],
        io: &mut WorkerIo,
        read_closed: bool,
    ) -> bool {
        // A short read means the socket was empty at that moment; epoll (edge-triggered)
        // reports any later data, so there is no need to read again until EAGAIN. A FIN
        // that arrived with the data raises no new edge, so then we read on to the EOF.
        self.peer_closed |= read_closed;
        let mut drained = false;
        loop {
            if self.flush().is_err() {
                return false;
            }
            if !self.out.is_empty() || self.stream.tls_pending() {
                return true; // socket full: wait for writable
            }
            // The replies are out: now the superseded files go.
            self.after_send.clear();
            if self.closing {
                // Close once the replies still being worked on have gone out.
                return !self.inflight.is_empty();
            }
            if self.blocked {
                return true; // a completion resumes us
            }
            if !self.pending.is_empty() && !self.pending_needs_more {
                let pending = std::mem::take(&mut self.pending);
                let (used, stop) = self.process(&pending, sh, io);
                self.pending = pending;
                self.pending.drain(..used);
                self.pending_needs_more = stop == Stop::NeedMore;
                self.track_wait(false, used > 0);
                continue;
            }
            if self.eof {
                if !self.pending.is_empty() || !matches!(self.input, Input::Frames) {
                    self.abandon_input();
                    self.fatal(
                        Status::ProtocolError,
                        "truncated frame: the connection ended in the middle of a request"
                            .to_string(),
                    );
                    self.pending.clear();
                    continue;
                }
                return !self.inflight.is_empty();
            }
            if drained {
                return true;
            }
            if self.pending.is_empty() && self.splicing() {
                match self.splice_body(sh, io) {
                    Ok(true) => {
                        self.track_wait(true, true);
                        continue;
                    }
                    Ok(false) => return true, // the socket is empty
                    Err(()) => return false,
                }
            }
            match self.stream.read(rbuf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    // A short read from TLS says nothing about the socket: read on.
                    drained = n < rbuf.len() && !self.peer_closed && self.stream.kernel_io();
                    self.pending_needs_more = false;
                    let mut consumed = false;
                    if self.pending.is_empty() {
                        let (used, stop) = self.process(&rbuf[..n], sh, io);
                        self.pending.extend_from_slice(&rbuf[used..n]);
                        self.pending_needs_more = stop == Stop::NeedMore;
                        consumed = used > 0;
                    } else {
                        self.pending.extend_from_slice(&rbuf[..n]);
                    }
                    self.track_wait(true, consumed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.stream.handshaking() {
                        self.tls_failed(sh, &e.to_string());
                    }
                    return false;
                }
            }
        }
    }

    /// Starts, restarts or clears the timers. `progress`: bytes arrived; `consumed`: input
    /// was used up (a frame completed, or body bytes were staged).
    fn track_wait(&mut self, progress: bool, consumed: bool) {
        let now = Instant::now();
        if progress {
            self.last_active = now;
        }
        let in_body = matches!(self.input, Input::Body(_) | Input::Discard(_));
        let in_header = !in_body && !self.pending.is_empty() && self.pending_needs_more;
        self.header_since = match self.header_since {
            Some(t) if in_header && !consumed => Some(t),
            _ if in_header => Some(now),
            _ => None,
        };
        if !in_body && !in_header {
            self.waiting_since = None;
        } else if progress || self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// Whether a request (ORDERED or not) may start now.
    fn may_dispatch(&self, ordered: bool) -> bool {
        let window = match self.session {
            Session::V2 {
                out_of_order: true,
                depth,
                ..
            } => Some(depth),
            _ => None,
        };
        self.inflight.may_start(ordered, window)
    }

    /// Gives the next request its sequence number and an empty slot.
    /// `op` is the wire op byte (0 if unreadable), for the request counters.
    fn begin(&mut self, ordered: bool, op: u8) -> u64 {
        self.inflight.begin(ordered, op)
    }

    /// Fills slot `seq` with a reply of `status` and releases whatever may go out now.
    /// Every reply passes here once: this is where the request counters count it.
    fn finish(&mut self, seq: u64, status: Status, reply: Items) {
        let strict = !self.out_of_order();
        let (out, out_bytes) = (&mut self.out, &mut self.out_bytes);
        let done = self
            .inflight
            .complete(seq, reply, strict, |items| push_out(out, out_bytes, items));
        if let Some(d) = done {
            self.metrics.record(d.op, status.as_u8(), d.started);
        }
    }

    fn finish_error(
        &mut self,
        seq: u64,
        id: u32,
        status: Status,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        self.deliver(seq, id, Reply::error(status, message));
    }

    /// Sends an error (after every earlier reply) and closes once it is out: the stream
    /// can no longer be trusted.
    fn fatal(&mut self, status: Status, message: String) {
        let seq = self.begin(true, 0);
        self.finish_error(seq, 0, status, message);
        self.closing = true;
    }

    /// Gives up on a half-received request (EOF, timeout): its slot gets no reply.
    fn abandon_input(&mut self) {
        if let Input::Body(b) = std::mem::replace(&mut self.input, Input::Frames) {
            let strict = !self.out_of_order();
            let (out, out_bytes) = (&mut self.out, &mut self.out_bytes);
            self.inflight
                .abandon(b.seq, strict, |items| push_out(out, out_bytes, items));
        }
    }

    /// Runs a store mutation: on the blocking pool if it may be `slow` (its reply fills
    /// slot `seq` when it is done), otherwise here and now.
    fn mutate<O: Into<Outcome>>(
        &mut self,
        sh: &Shared,
        io: &WorkerIo,
        seq: u64,
        id: u32,
        slow: bool,
        job: impl FnOnce(&Store) -> O + Send + 'static,
    ) {
        if !slow {
            let Outcome { reply, after } = job(&sh.store).into();
            self.after_send.extend(after);
            return self.deliver(seq, id, reply);
        }
        let finish = self.later(sh, io, seq, id, job);
        sh.pool.submit(finish);
    }

    /// A job that fills slot `seq` when it runs, from whatever thread runs it: it calls
    /// `job` with the store and hands the reply to this connection's worker.
    fn later<O: Into<Outcome>>(
        &self,
        sh: &Shared,
        io: &WorkerIo,
        seq: u64,
        id: u32,
        job: impl FnOnce(&Store) -> O + Send + 'static,
    ) -> impl FnOnce() + Send + 'static {
        let store = sh.store.clone();
        let done = io.done_tx.clone();
        let waker = io.waker.clone();
        let token = self.token;
        move || {
            // `after` is dropped (its files unlinked) on this thread once the worker has
            // been handed the reply.
            let Outcome {
                reply,
                after: _after,
            } = job(&store).into();
            drop(store);
            // The worker may be gone (shutdown): then nobody waits for this reply.
            if done
                .send(Done {
                    token,
                    seq,
                    id,
                    reply,
                })
                .is_ok()
            {
                let _ = waker.wake();
            }
        }
    }

    /// A GET or HEAD that missed both local tiers: asks the remote tier, and answers once
    /// it has filled the object locally, has none, or has taken its timeout, with what a
    /// local lookup then finds (a fill is served as a local hit, in any mode).
    fn read_through(
        &mut self,
        remote: &RemoteTier,
        sh: &Shared,
        io: &WorkerIo,
        seq: u64,
        req: &Request<'_>,
    ) {
        let header = req.header;
        let key = req.key.to_vec();
        let meta = req.meta.to_vec();
        let policy = self.policy;
        let finish = self.later(sh, io, seq, header.request_id, move |store| {
            let req = Request {
                header,
                key: &key,
                meta: &meta,
            };
            ops::read(store, &req, &policy)
        });
        remote.read_through(req.key, Box::new(finish));
    }

    /// Consumes what it can of `data`. Returns bytes used and why it stopped.
    fn process(&mut self, data: &[u8], sh: &Shared, io: &WorkerIo) -> (usize, Stop) {
        let mut used = 0;
        loop {
            if self.closing {
                return (data.len(), Stop::Close);
            }
            if self.out_bytes >= OUT_HIGH_WATER || self.out.iter().any(Out::streams) {
                return (used, Stop::Backpressure);
            }
            let rest = &data[used..];
            match &mut self.input {
                Input::Discard(remaining) => {
                    let n = (*remaining).min(rest.len() as u64);
                    *remaining -= n;
                    used += n as usize;
                    if *remaining > 0 {
                        return (used, Stop::NeedMore);
                    }
                    self.input = Input::Frames;
                }
                Input::Body(body) => {
                    let mut n = body.remaining.min(rest.len() as u64) as usize;
                    if n > 0 {
                        let room = match body.room(sh) {
                            Ok(room) => room,
                            Err(limit) => {
                                let (seq, id, left) = (body.seq, body.request_id, body.remaining);
                                self.input = Input::Discard(left);
                                let msg = body_budget_spent(sh, limit);
                                self.finish_error(seq, id, Status::Busy, msg);
                                continue;
                            }
                        };
                        n = n.min(usize::try_from(room).unwrap_or(usize::MAX));
                        if let Err(e) = body.staging.write_all(&rest[..n]) {
                            let (seq, id) = (body.seq, body.request_id);
                            self.input = Input::Discard(body.remaining - n as u64);
                            used += n;
                            self.finish_error(
                                seq,
                                id,
                                Status::IoError,
                                format!("staging the PUT body failed: {e}"),
                            );
                            continue;
                        }
                    }
                    body.remaining -= n as u64;
                    used += n;
                    if body.remaining > 0 {
                        if used < data.len() {
                            continue; // stopped at the reservation: extend it
                        }
                        return (used, Stop::NeedMore);
                    }
                    self.finish_body(sh, io);
                }
                Input::Frames => {
                    if rest.is_empty() {
                        return (used, Stop::NeedMore);
                    }
                    match decode_request(rest) {
                        Ok(Decoded::Incomplete(_)) => return (used, Stop::NeedMore),
                        Ok(Decoded::Complete(req, n)) => {
                            // Wait for a HELLO's whole body, unless its length is bad
                            // (then `handle` refuses it without reading a body).
                            let hello_max = hello::HELLO_LEN + hello::HELLO_TOKEN_MAX;
                            if req.header.op == Op::Hello
                                && req.header.length <= hello_max as u64
                                && rest.len() < n + req.header.length as usize
                            {
                                return (used, Stop::NeedMore);
                            }
                            if !self.may_dispatch(is_ordered(&req.header)) {
                                self.blocked = true;
                                return (used, Stop::Blocked);
                            }
                            used += n;
                            let body_avail = &data[used..];
                            used += self.handle(&req, body_avail, sh, io);
                        }
                        Err(e) if !e.is_fatal() => {
                            if !self.may_dispatch(raw_ordered(rest)) {
                                self.blocked = true;
                                return (used, Stop::Blocked);
                            }
                            let skip = e.skip().unwrap_or(0);
                            let id = request_id_of(rest);
                            let seq =
                                self.begin(raw_ordered(rest), rest.get(1).copied().unwrap_or(0));
                            self.finish_error(seq, id, e.status(), e.to_string());
                            if skip > sh.discard_limit() {
                                self.closing = true;
                            } else {
                                self.input = Input::Discard(skip);
                            }
                        }
                        Err(e) => {
                            let st = e.status();
                            self.fatal(st, format!("{e}; closing the connection"));
                        }
                    }
                }
            }
        }
    }

    /// Handles one decoded request. `body` is whatever input follows its frame; returns
    /// how much of it was consumed (only HELLO consumes here; PUT bodies go via Input::Body).
    fn handle(&mut self, req: &Request<'_>, body: &[u8], sh: &Shared, io: &WorkerIo) -> usize {
        let h = &req.header;
        let id = h.request_id;
        // Session: the first frame decides; versions never mix on one connection.
        match (self.session, h.version, h.op) {
            (Session::New, Version::V1, _) => self.set_session(Session::V1),
            (Session::New, Version::V2, op) => {
                // Answer in V2 from here on, even a HELLO that fails.
                self.set_session(Session::V2 {
                    fd_passing: false,
                    out_of_order: false,
                    shared_descriptions: false,
                    depth: 1,
                });
                if op != Op::Hello {
                    self.fatal(
                        Status::ProtocolError,
                        "a V2 connection must open with HELLO".into(),
                    );
                    return 0;
                }
            }
            (Session::V1, Version::V1, op) | (Session::V2 { .. }, Version::V2, op)
                if op != Op::Hello => {}
            (_, _, Op::Hello) => {
                self.fatal(
                    Status::ProtocolError,
                    "HELLO must be the first frame of a connection".into(),
                );
                return 0;
            }
            _ => {
                self.fatal(
                    Status::ProtocolError,
                    "V1 and V2 frames cannot be mixed on one connection".into(),
                );
                return 0;
            }
        }
        let seq = self.begin(is_ordered(h), h.op.as_u8());
        if let Some((status, msg)) = self.refuse.take() {
            self.finish_error(seq, id, status, msg);
            self.closing = true;
            return 0;
        }
        if self.token_needed.is_some() && h.op != Op::Hello {
            self.deny(sh, "sent a request before authenticating");
            let msg = "this TCP listener requires authentication: open a V2 session with a \
                       HELLO that carries the shared token; closing";
            self.finish_error(seq, id, Status::Forbidden, msg);
            self.closing = true;
            return 0;
        }
        if let Some(msg) = self.refresh_perms(sh) {
            self.finish_error(seq, id, Status::Forbidden, msg);
            self.closing = true;
            return 0;
        }
        let need = Perms::needed_for(h.op);
        if !self.perms.contains(need) {
            let msg = format!(
                "{} needs the {need} permission; this peer has {}",
                h.op.name(),
                self.perms
            );
            self.reject(seq, h, Reply::error(Status::Forbidden, msg), sh);
            return 0;
        }
        if let Err(r) = ops::admit(req, &sh.limits.get()) {
            self.reject(seq, h, r, sh);
            return 0;
        }
        match h.op {
            Op::Hello => return self.hello(seq, id, req, body, sh),
            Op::Ping | Op::Get | Op::Head => {
                let reply = ops::read(&sh.store, req, &self.policy);
                match &sh.remote {
                    Some(remote) if reply.status == Status::NotFound && h.op != Op::Ping => {
                        self.read_through(remote, sh, io, seq, req);
                    }
                    _ => self.deliver(seq, id, reply),
                }
            }
            Op::Put => self.put(seq, req, sh),
            Op::Commit => self.commit(seq, req, sh, io),
            Op::Abort => {
                if self.staged.remove(&h.handle).is_some() {
                    self.deliver(seq, id, Reply::ok());
                } else {
                    self.finish_error(
                        seq,
                        id,
                        Status::UnknownHandle,
                        format!("no staged PUT with handle {} on this connection", h.handle),
                    );
                }
            }
            Op::Delete => {
                let key = req.key.to_vec();
                let condition = condition_of(h);
                let durable = h.has_flag(req_flags::DURABLE);
                self.mutate(sh, io, seq, id, durable, move |store| {
                    ops::delete(store, &key, condition, durable)
                });
            }
            Op::Ban => {
                let expr = req.key.to_vec();
                // The ban file is fsynced: off the event loop.
                self.mutate(sh, io, seq, id, true, move |store| ops::ban(store, &expr));
            }
            Op::Pin | Op::Unpin => {
                let key = req.key.to_vec();
                let pin = h.op == Op::Pin;
                self.mutate(sh, io, seq, id, false, move |store| {
                    ops::pin(store, &key, pin)
                });
            }
        }
        0
    }
}
