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
//! **Ordering.** Every request takes the next sequence number and a slot in `inflight`
//! when it is dispatched. Most requests fill their slot at once; the slow ones (DURABLE
//! commits and deletes, whose fsyncs take milliseconds, and commits of more than
//! [`INLINE_COMMIT_MAX`] bytes) run on the blocking pool and fill it when the job is done. [`Conn::release`] moves
//! filled slots to `out`: strictly in sequence order (V1, or V2 without OUT_OF_ORDER), or
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
use crate::sys::{self, SpliceIn};
use crate::tls::{TlsStream, Token};
use crate::worker::{Done, Shared, WorkerIo};
use objmapper_proto::{
    self as proto, decode_request, encode_response, hello, req_flags, resp_flags, validate_request,
    Decoded, Hello, Metadata, Mode, Op, Request, RequestHeader, ResponseHeader, Status, Version,
};
use objmapper_store::{
    BufferedPut, CommitError, Condition, ObjectHasher, ObjectMeta, PutMeta, PutOptions,
    SharedObject, Staging, Store, StoreError,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

pub(crate) enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The socket, for calls that move bytes in the kernel (sendmsg with an fd, sendfile,
    /// splice). Never used on TLS, whose bytes must pass through rustls.
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
            Stream::Tls(s) => s.socket_ref().as_fd(),
        }
    }
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.socket(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
    /// Bytes can go to the socket by the kernel's zero-copy paths (sendfile, splice).
    fn kernel_io(&self) -> bool {
        !matches!(self, Stream::Tls(_))
    }
    /// TLS output that rustls holds for lack of socket space.
    fn tls_pending(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.wants_write())
    }
    /// Sends what TLS holds; false while the socket is full.
    fn push_tls(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(s) => s.push(),
            _ => Ok(true),
        }
    }
    /// The peer's address, for TCP (plain or TLS).
    fn tcp_peer(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Tls(s) => s.socket_ref().peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
    /// A TLS handshake not finished yet.
    fn handshaking(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.handshaking())
    }
}

/// An fd that rides on a reply: our own, or a shared cached file.
enum Attached {
    Owned(OwnedFd),
    Shared(std::sync::Arc<File>),
}

impl AsFd for Attached {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Attached::Owned(f) => f.as_fd(),
            Attached::Shared(f) => f.as_fd(),
        }
    }
}

/// One item of output.
enum Out {
    /// Bytes, with at most one fd riding on the first of them.
    Bytes {
        buf: Vec<u8>,
        pos: usize,
        fd: Option<Attached>,
        /// More follows at once (a header before a sendfile body): MSG_MORE.
        more: bool,
    },
    /// Copy mode: a file range streamed through user space in chunks.
    File {
        file: Arc<File>,
        offset: u64,
        remaining: u64,
        /// The whole object, not yet verified: hashed on the way, and the last chunk is
        /// sent only if the sum matches the record (else the connection is closed).
        check: Option<Box<StreamCheck>>,
    },
    /// Splice mode: a file range moved to the socket by sendfile(2), inside the kernel.
    Sendfile {
        file: Arc<File>,
        offset: u64,
        remaining: u64,
    },
}

/// A streamed body's checksum on the way (see `Out::File`).
struct StreamCheck {
    hasher: ObjectHasher,
    obj: SharedObject,
    store: Arc<Store>,
}

impl Out {
    fn bytes(buf: Vec<u8>) -> Out {
        Out::Bytes {
            buf,
            pos: 0,
            fd: None,
            more: false,
        }
    }

    /// Streams a file: the queue holds only a handle, so it must not grow behind one.
    fn streams(&self) -> bool {
        matches!(self, Out::File { .. } | Out::Sendfile { .. })
    }
}

enum Input {
    Frames,
    /// Receiving a copy- or splice-mode PUT body into a staging memfd.
    Body(Box<BodyState>),
    /// Skipping the rest of a rejected frame (and its body).
    Discard(u64),
}

struct BodyState {
    staging: PutBody,
    remaining: u64,
    length: u64,
    seq: u64,
    request_id: u32,
    meta: PutMeta,
    opts: PutOptions,
    /// Splice mode: once the read buffer is used up, move the rest with splice(2).
    splice: bool,
    /// Held against `max_staged_bytes_total`: the bytes received so far, rounded up to
    /// the next `BODY_RESERVE_STEP` (never past the declared length). A body declared
    /// large but never sent holds no more than its first step.
    reserved: Reserved,
}

impl BodyState {
    /// Bytes of the body received so far.
    fn received(&self) -> u64 {
        self.length - self.remaining
    }

    /// How many more body bytes may be taken in now: extends the reservation by a step
    /// when the received bytes reach it, within `max_staged_bytes_total` (read only
    /// then). Err(limit): the server-wide budget is spent.
    fn room(&mut self, sh: &Shared) -> Result<u64, u64> {
        let received = self.received();
        if self.reserved.held() <= received {
            let next = received.saturating_add(BODY_RESERVE_STEP).min(self.length);
            let limit = sh.limits.get().max_staged_bytes_total;
            if !self.reserved.grow_to(next, limit) {
                return Err(limit);
            }
        }
        Ok(self.reserved.held() - received)
    }
}

/// Where a copy- or splice-mode PUT body goes: small copy-mode bodies are buffered in
/// memory (no memfd to create, seal and read back); splice mode and large bodies go to a
/// staging memfd.
enum PutBody {
    Buffer(BufferedPut),
    Memfd(Staging),
}

impl PutBody {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            PutBody::Buffer(b) => b.write_all(buf),
            PutBody::Memfd(s) => s.write_all(buf),
        }
    }

    fn commit(
        self,
        length: u64,
        meta: PutMeta,
        opts: PutOptions,
    ) -> Result<Arc<ObjectMeta>, CommitError> {
        match self {
            PutBody::Buffer(b) => b.commit(length, meta, opts),
            PutBody::Memfd(s) => s.commit(length, meta, opts),
        }
    }
}

/// An fd-mode PUT waiting for its COMMIT: the staging file, the PUT's metadata, its
/// request flags (or-ed with the COMMIT's) and its condition (used unless the COMMIT
/// carries its own).
struct StagedPut {
    staging: Staging,
    meta: PutMeta,
    flags: u16,
    condition: Condition,
    /// This PUT's slot in `max_staged_puts_total`.
    _slot: Reserved,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Session {
    /// Nothing received yet: the first byte decides V1 or V2.
    New,
    V1,
    V2 {
        fd_passing: bool,
        out_of_order: bool,
        /// Requests that may be in flight at once (OUT_OF_ORDER only).
        depth: usize,
    },
}

/// A dispatched request whose reply has not gone to `out` yet.
struct Slot {
    /// Answered only after every earlier request, and before every later one.
    ordered: bool,
    /// The reply, once the request is done.
    reply: Option<Vec<Out>>,
    /// The request's wire op byte (0 if unreadable) and when it was decoded, for the
    /// request counters.
    op: u8,
    started: Instant,
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
    /// Dispatched requests not yet released to `out`, by sequence number.
    inflight: BTreeMap<u64, Slot>,
    next_seq: u64,
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
}

impl Conn {
    pub(crate) fn new(accepted: Accepted, token: usize, metrics: Arc<Shard>) -> Conn {
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
            inflight: BTreeMap::new(),
            next_seq: 0,
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

    /// A blocking job finished: its reply fills slot `seq`, and requests waiting behind it
    /// may go on (the worker calls [`Conn::on_ready`] next).
    pub(crate) fn complete(&mut self, seq: u64, reply: Vec<u8>) {
        self.blocked = false;
        self.finish(seq, vec![Out::bytes(reply)]);
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

    fn flush(&mut self) -> io::Result<()> {
        if !self.stream.push_tls()? {
            return Ok(());
        }
        while let Some(front) = self.out.front_mut() {
            let sock = self.stream.fd();
            match front {
                Out::Bytes { .. } => match self.send_batch() {
                    Ok(n) => self.consume_sent(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                },
                Out::File {
                    file,
                    offset,
                    remaining,
                    check,
                } => {
                    let n = (*remaining).min(FILE_CHUNK as u64) as usize;
                    let mut chunk = vec![0u8; n];
                    file.read_exact_at(&mut chunk, *offset)?;
                    *offset += n as u64;
                    *remaining -= n as u64;
                    if let Some(c) = check {
                        c.hasher.update(&chunk);
                        if *remaining == 0 && !c.store.check_streamed(&c.obj, c.hasher.digest()) {
                            // The header announced bytes that are not the object's: the
                            // reply is never completed (the store dropped the version).
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "object failed its checksum while being sent; reply not completed",
                            ));
                        }
                    }
                    if *remaining == 0 {
                        self.out.pop_front();
                    }
                    self.out_bytes += n;
                    self.out.push_front(Out::bytes(chunk));
                }
                Out::Sendfile {
                    file,
                    offset,
                    remaining,
                } => {
                    let n = (*remaining).min(SENDFILE_CHUNK as u64) as usize;
                    match sys::sendfile(sock, file.as_fd(), offset, n) {
                        Ok(0) => {
                            // The header promised more bytes than the file holds: the
                            // stream cannot be completed.
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "object file ended before the announced length",
                            ));
                        }
                        Ok(k) => {
                            *remaining -= k as u64;
                            if *remaining == 0 {
                                self.out.pop_front();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the queued byte frames at the front of `out` in one sendmsg: pipelined replies
    /// leave in one system call, not one each. A frame carrying an fd may only start a batch
    /// (the kernel attaches the fd to the first byte of the call), and a batch ends before
    /// the next one, and at the first file body.
    fn send_batch(&mut self) -> io::Result<usize> {
        let mut iov: [IoSlice<'_>; SEND_BATCH_MAX] = [IoSlice::new(&[]); SEND_BATCH_MAX];
        let mut n = 0;
        let mut first_fd = None;
        let mut more = false;
        for (i, item) in self.out.iter().enumerate() {
            let Out::Bytes {
                buf,
                pos,
                fd,
                more: m,
            } = item
            else {
                break;
            };
            if i > 0 && fd.is_some() {
                break;
            }
            if i == 0 {
                first_fd = fd.as_ref().map(AsFd::as_fd);
            }
            iov[n] = IoSlice::new(&buf[*pos..]);
            n += 1;
            more = *m;
            if n == SEND_BATCH_MAX {
                break;
            }
        }
        match &mut self.stream {
            Stream::Tls(s) => s.write_vectored(&iov[..n]),
            stream => sys::send_vectored(stream.fd(), &iov[..n], first_fd, more),
        }
    }

    /// Advances `out` past `n` sent bytes of byte frames. The first frame's fd, if any, rode
    /// on the first byte sent, so our copy is dropped.
    fn consume_sent(&mut self, mut n: usize) {
        self.out_bytes -= n;
        while let Some(Out::Bytes { buf, pos, fd, .. }) = self.out.front_mut() {
            *fd = None;
            let left = buf.len() - *pos;
            if n < left {
                *pos += n;
                return;
            }
            n -= left;
            self.out.pop_front();
            if n == 0 {
                return;
            }
        }
    }

    fn version(&self) -> Version {
        match self.session {
            Session::V2 { .. } => Version::V2,
            _ => Version::V1,
        }
    }

    fn out_of_order(&self) -> bool {
        matches!(
            self.session,
            Session::V2 {
                out_of_order: true,
                ..
            }
        )
    }

    /// Whether fds can travel on this connection: a Unix socket, and on V2 a session that
    /// negotiated FD_PASSING.
    fn fd_ok(&self) -> bool {
        match self.session {
            Session::V2 { fd_passing, .. } => fd_passing,
            _ => self.fd_capable,
        }
    }

    /// Whether a request (ORDERED or not) may start now.
    fn may_dispatch(&self, ordered: bool) -> bool {
        match self.session {
            Session::V2 {
                out_of_order: true,
                depth,
                ..
            } => {
                if ordered {
                    self.inflight.is_empty()
                } else {
                    self.inflight.len() < depth && !self.inflight.values().any(|s| s.ordered)
                }
            }
            _ => self.inflight.is_empty(),
        }
    }

    /// Gives the next request its sequence number and an empty slot.
    /// `op` is the wire op byte (0 if unreadable), for the request counters.
    fn begin(&mut self, ordered: bool, op: u8) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight.insert(
            seq,
            Slot {
                ordered,
                reply: None,
                op,
                started: Instant::now(),
            },
        );
        seq
    }

    /// Fills slot `seq` and releases whatever may go out now. Every reply passes here
    /// once: this is where the request counters count it.
    fn finish(&mut self, seq: u64, reply: Vec<Out>) {
        let record = |metrics: &Shard, slot: &Slot, reply: &[Out]| {
            if let Some(Out::Bytes { buf, .. }) = reply.first() {
                // Byte 1 of every response header is its status.
                let status = buf.get(1).copied().unwrap_or(Status::Internal.as_u8());
                metrics.record(slot.op, status, slot.started);
            }
        };
        // The common case (V1, or a pipeline answered in order): the oldest request is
        // done, and nothing can be ahead of it. Out it goes, without a scan.
        if self.inflight.first_key_value().map(|(&s, _)| s) == Some(seq) {
            if let Some(slot) = self.inflight.remove(&seq) {
                record(&self.metrics, &slot, &reply);
            }
            self.push_out(reply);
            if !self.inflight.is_empty() {
                self.release();
            }
            return;
        }
        if let Some(slot) = self.inflight.get_mut(&seq) {
            record(&self.metrics, slot, &reply);
            slot.reply = Some(reply);
        }
        self.release();
    }

    fn push_out(&mut self, items: Vec<Out>) {
        for item in items {
            if let Out::Bytes { buf, .. } = &item {
                self.out_bytes += buf.len();
            }
            self.out.push_back(item);
        }
    }

    fn finish_bytes(&mut self, seq: u64, buf: Vec<u8>) {
        self.finish(seq, vec![Out::bytes(buf)]);
    }

    fn finish_error(&mut self, seq: u64, id: u32, status: Status, message: impl AsRef<str>) {
        tracing::debug!(status = %status, "request failed: {}", message.as_ref());
        let buf = error_frame(self.version(), id, status, message.as_ref());
        self.finish_bytes(seq, buf);
    }

    fn finish_ok(&mut self, seq: u64, id: u32, meta: Option<&ObjectMeta>) {
        let buf = ok_frame(self.version(), id, meta);
        self.finish_bytes(seq, buf);
    }

    /// Moves every reply that may go out now, in sequence order, to `out`. In order mode
    /// every slot is treated as ORDERED.
    fn release(&mut self) {
        let strict = !self.out_of_order();
        let mut ready = Vec::new();
        // An earlier request is still running: nothing ordered may pass it.
        let mut gap = false;
        for (&seq, slot) in &self.inflight {
            if strict || slot.ordered {
                if gap || slot.reply.is_none() {
                    break;
                }
                ready.push(seq);
            } else if slot.reply.is_some() {
                ready.push(seq);
            } else {
                gap = true;
            }
        }
        for seq in ready {
            let Some(Slot {
                reply: Some(items), ..
            }) = self.inflight.remove(&seq)
            else {
                continue;
            };
            self.push_out(items);
        }
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
            self.inflight.remove(&b.seq);
            self.release();
        }
    }

    /// Runs a store mutation: on the blocking pool if it may be `slow` (its reply fills
    /// slot `seq` when it is done), otherwise here and now.
    fn mutate(
        &mut self,
        sh: &Shared,
        io: &WorkerIo,
        seq: u64,
        slow: bool,
        job: impl FnOnce(&Store) -> Vec<u8> + Send + 'static,
    ) {
        if !slow {
            let reply = job(&sh.store);
            return self.finish_bytes(seq, reply);
        }
        let store = sh.store.clone();
        let done = io.done_tx.clone();
        let waker = io.waker.clone();
        let token = self.token;
        sh.pool.submit(move || {
            let reply = job(&store);
            drop(store);
            // The worker may be gone (shutdown): then nobody waits for this reply.
            if done.send(Done { token, seq, reply }).is_ok() {
                let _ = waker.wake();
            }
        });
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

    /// A splice-mode PUT body is being received and the read buffer holds none of it.
    fn splicing(&self) -> bool {
        matches!(&self.input, Input::Body(b) if b.splice && b.remaining > 0)
    }

    /// Moves the next part of a splice-mode PUT body socket -> pipe -> staging memfd.
    /// Ok(true): progress (bytes moved, the body finished, or EOF seen); Ok(false): the
    /// socket is empty; Err: the connection is broken.
    fn splice_body(&mut self, sh: &Shared, io: &mut WorkerIo) -> Result<bool, ()> {
        let Input::Body(body) = &mut self.input else {
            return Ok(true);
        };
        let pipe = match io.pipes.take(&sh.kio.pipes_created) {
            Ok(p) => p,
            Err(e) => {
                // No pipe (fd limit): skip the body through the read buffer instead.
                let (seq, id, left) = (body.seq, body.request_id, body.remaining);
                self.input = Input::Discard(left);
                self.finish_error(
                    seq,
                    id,
                    Status::IoError,
                    format!("creating a pipe for splice failed: {e}"),
                );
                return Ok(true);
            }
        };
        let room = match body.room(sh) {
            Ok(room) => room,
            Err(limit) => {
                io.pipes.put(pipe);
                let (seq, id, left) = (body.seq, body.request_id, body.remaining);
                self.input = Input::Discard(left);
                self.finish_error(seq, id, Status::Busy, body_budget_spent(sh, limit));
                return Ok(true);
            }
        };
        let PutBody::Memfd(staging) = &body.staging else {
            unreachable!("splice-mode PUTs stage in a memfd");
        };
        match sys::splice_into(self.stream.fd(), &pipe, staging.fd(), room) {
            Ok(SpliceIn::Moved(n)) => {
                io.pipes.put(pipe);
                body.remaining -= n as u64;
                if body.remaining == 0 {
                    self.finish_body(sh, io);
                }
                Ok(true)
            }
            Ok(SpliceIn::WouldBlock) => {
                io.pipes.put(pipe);
                Ok(false)
            }
            Ok(SpliceIn::Eof) => {
                io.pipes.put(pipe);
                self.eof = true;
                Ok(true)
            }
            Err(sys::SpliceError::Socket(e)) => {
                io.pipes.discard(pipe);
                tracing::debug!("splice from the socket failed: {e}");
                Err(())
            }
            Err(sys::SpliceError::File { taken, error }) => {
                // The bytes taken off the socket are lost with the pipe, but we know how
                // many: the stream stays in sync, the rest of the body is skipped.
                io.pipes.discard(pipe);
                let (seq, id) = (body.seq, body.request_id);
                let left = body.remaining - taken as u64;
                self.input = Input::Discard(left);
                self.finish_error(
                    seq,
                    id,
                    Status::IoError,
                    format!("staging the PUT body failed: {error}"),
                );
                Ok(true)
            }
        }
    }

    /// The whole body of a copy- or splice-mode PUT is staged: commit it on the pool.
    fn finish_body(&mut self, sh: &Shared, io: &WorkerIo) {
        let Input::Body(body) = std::mem::replace(&mut self.input, Input::Frames) else {
            return;
        };
        let BodyState {
            staging,
            length,
            seq,
            request_id,
            meta,
            opts,
            reserved,
            ..
        } = *body;
        let v = self.version();
        let slow = opts.durable || length > INLINE_COMMIT_MAX;
        self.mutate(sh, io, seq, slow, move |_| {
            let reply = commit_frame(v, request_id, staging.commit(length, meta, opts));
            drop(reserved); // the staged bytes are gone only once the commit is done
            reply
        });
    }

    /// Handles one decoded request. `body` is whatever input follows its frame; returns
    /// how much of it was consumed (only HELLO consumes here; PUT bodies go via Input::Body).
    fn handle(&mut self, req: &Request<'_>, body: &[u8], sh: &Shared, io: &WorkerIo) -> usize {
        let h = &req.header;
        let id = h.request_id;
        // Session: the first frame decides; versions never mix on one connection.
        match (self.session, h.version, h.op) {
            (Session::New, Version::V1, _) => self.session = Session::V1,
            (Session::New, Version::V2, op) => {
                // Answer in V2 from here on, even a HELLO that fails.
                self.session = Session::V2 {
                    fd_passing: false,
                    out_of_order: false,
                    depth: 1,
                };
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
            self.reject(seq, h, Status::Forbidden, msg, sh);
            return 0;
        }
        if let Err((status, msg)) = validate_request(req) {
            self.reject(seq, h, status, msg, sh);
            return 0;
        }
        let limits = sh.limits.get();
        // A BAN's key field is an expression, bounded by the protocol's 4096 bytes alone.
        let key_limit = (h.op != Op::Ban)
            .then(|| limits.key_too_long(req.key.len()))
            .flatten();
        if let Some(msg) = key_limit {
            self.reject(seq, h, Status::KeyTooLong, msg, sh);
            return 0;
        }
        if req.meta.len() > limits.max_meta_len {
            let msg = format!(
                "metadata section of {} bytes exceeds this server's limit of {}",
                req.meta.len(),
                limits.max_meta_len
            );
            self.reject(seq, h, Status::MetadataTooLarge, msg, sh);
            return 0;
        }
        let v = self.version();
        match h.op {
            Op::Hello => return self.hello(seq, id, req, body, sh),
            Op::Ping => self.finish_ok(seq, id, None),
            Op::Get => self.get(seq, req, sh),
            Op::Head => match sh.store.head(req.key) {
                Some(m) => self.finish_ok(seq, id, Some(&m)),
                None => self.finish_error(seq, id, Status::NotFound, "no object under that key"),
            },
            Op::Put => self.put(seq, req, sh),
            Op::Commit => self.commit(seq, req, sh, io),
            Op::Abort => {
                if self.staged.remove(&h.handle).is_some() {
                    self.finish_ok(seq, id, None);
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
                self.mutate(sh, io, seq, durable, move |store| {
                    // An expired object not yet swept away is removed too, but it was not
                    // live, so the answer is NOT_FOUND, as for GET and HEAD.
                    let live = store.head(&key).is_some();
                    match store.delete_if(&key, condition, durable) {
                        Ok(removed) if removed && live => ok_frame(v, id, None),
                        Ok(_) => error_frame(v, id, Status::NotFound, "no object under that key"),
                        Err(e) => {
                            let (st, msg) = store_status(&e);
                            error_frame(v, id, st, &msg)
                        }
                    }
                });
            }
            Op::Ban => {
                let expr = req.key.to_vec();
                // The ban file is fsynced: off the event loop.
                self.mutate(sh, io, seq, true, move |store| {
                    ban_frame(v, id, store.ban(&expr))
                });
            }
            Op::Pin | Op::Unpin => {
                let key = req.key.to_vec();
                let pin = h.op == Op::Pin;
                self.mutate(sh, io, seq, false, move |store| {
                    match store.set_pinned(&key, pin) {
                        Ok(true) => ok_frame(v, id, None),
                        Ok(false) => {
                            error_frame(v, id, Status::NotFound, "no object under that key")
                        }
                        Err(e) => {
                            let (st, msg) = store_status(&e);
                            error_frame(v, id, st, &msg)
                        }
                    }
                });
            }
        }
        0
    }

    /// COMMIT of an fd-mode PUT: flags are the PUT's or-ed with the COMMIT's; non-empty
    /// COMMIT metadata replaces the PUT's; the COMMIT's condition (IF_VERSION / IF_ABSENT)
    /// replaces the PUT's if it has one. The handle is consumed whatever the outcome.
    fn commit(&mut self, seq: u64, req: &Request<'_>, sh: &Shared, io: &WorkerIo) {
        let h = &req.header;
        let id = h.request_id;
        let Some(staged) = self.staged.remove(&h.handle) else {
            return self.finish_error(
                seq,
                id,
                Status::UnknownHandle,
                format!("no staged PUT with handle {} on this connection", h.handle),
            );
        };
        let mut opts = match put_options(staged.flags | h.flags) {
            Ok(o) => o,
            Err(msg) => return self.finish_error(seq, id, Status::BadRequest, msg),
        };
        opts.condition = if h.flags & (req_flags::IF_VERSION | req_flags::IF_ABSENT) != 0 {
            condition_of(h)
        } else {
            staged.condition
        };
        let meta = if req.meta.is_empty() {
            // The PUT's expiry was checked when the PUT arrived; time has passed since.
            if let Err(msg) = check_expiry(staged.meta.expires_at) {
                return self.finish_error(seq, id, Status::BadRequest, msg);
            }
            staged.meta
        } else {
            match put_meta_of(req.meta) {
                Ok(m) => m,
                Err(msg) => return self.finish_error(seq, id, Status::BadRequest, msg),
            }
        };
        let v = self.version();
        let length = h.length;
        let staging = staged.staging;
        let slow = opts.durable || length > INLINE_COMMIT_MAX;
        self.mutate(sh, io, seq, slow, move |_| {
            commit_frame(v, id, staging.commit(length, meta, opts))
        });
    }

    /// Rejects a well-framed request. A PUT's announced body must still be skipped.
    fn reject(&mut self, seq: u64, h: &RequestHeader, status: Status, msg: String, sh: &Shared) {
        self.finish_error(seq, h.request_id, status, msg);
        if h.op == Op::Hello {
            self.closing = true;
        } else {
            self.skip_body(h.body_len(), sh);
        }
    }

    fn hello(&mut self, seq: u64, id: u32, req: &Request<'_>, body: &[u8], sh: &Shared) -> usize {
        // `process` waits until the whole body is buffered: the fixed part, then the
        // token if any.
        let len = req.header.body_len() as usize;
        let fail = |c: &mut Conn, status, msg: String| {
            c.finish_error(seq, id, status, msg);
            c.closing = true;
            len
        };
        let presented = &body[hello::HELLO_LEN..len];
        if let Some(token) = self.token_needed.take() {
            if !token.matches(presented) {
                let why = if presented.is_empty() {
                    "sent a HELLO without the token this listener requires"
                } else {
                    "sent a HELLO with a wrong token"
                };
                self.deny(sh, why);
                let msg = format!("authentication failed: {why}; closing");
                return fail(self, Status::Forbidden, msg);
            }
        }
        let asked = match Hello::decode(&body[..hello::HELLO_LEN]) {
            Ok(h) => h,
            Err(e) => {
                let msg = format!("{e}; closing the connection");
                return fail(self, Status::ProtocolError, msg);
            }
        };
        if asked.version < 2 {
            let msg = format!(
                "HELLO asked for version {}; this server speaks version 2",
                asked.version
            );
            return fail(self, Status::VersionUnsupported, msg);
        }
        let mut offered = hello::caps::PIPELINE | hello::caps::OUT_OF_ORDER;
        if self.fd_capable {
            offered |= hello::caps::FD_PASSING;
        }
        let capabilities = asked.capabilities & offered;
        let depth = if capabilities & hello::caps::PIPELINE != 0 {
            asked.depth.min(sh.limits.get().max_pipeline_depth).max(1)
        } else {
            1
        };
        let granted = Hello {
            version: 2,
            capabilities,
            depth,
        };
        self.session = Session::V2 {
            fd_passing: capabilities & hello::caps::FD_PASSING != 0,
            out_of_order: capabilities & hello::caps::OUT_OF_ORDER != 0,
            depth: depth as usize,
        };
        let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN + hello::HELLO_LEN);
        let mut rh = ResponseHeader::new(Version::V2, Status::Ok, id);
        rh.flags = resp_flags::BODY;
        rh.length = hello::HELLO_LEN as u64;
        encode_response(&rh, "", &[], &mut buf);
        buf.extend_from_slice(&granted.encode());
        self.finish_bytes(seq, buf);
        len
    }

    /// Looks the peer's permissions up again if the allowlist changed since they were
    /// read. Some(message): it has none left (revoked): the caller answers FORBIDDEN and
    /// closes.
    fn refresh_perms(&mut self, sh: &Shared) -> Option<String> {
        let generation = sh.access.generation();
        if generation == self.access_gen {
            return None;
        }
        self.access_gen = generation;
        let (now, who) = match self.grantee {
            Grantee::Unix(p) => (
                sh.access.perms_of(p.uid, p.gid),
                format!("pid {} uid {} gid {}", p.pid, p.uid, p.gid),
            ),
            Grantee::Tcp => (sh.access.tcp(), "a TCP peer".to_string()),
            Grantee::Unknown => (Perms::NONE, "a peer with unknown credentials".to_string()),
        };
        if now == self.perms {
            return None;
        }
        tracing::info!(
            "the allowlist changed: {who} now has {now} on its open connection (had {})",
            self.perms
        );
        self.perms = now;
        if !now.is_empty() {
            return None;
        }
        sh.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("closing the connection of {who}: its permissions were revoked");
        Some(format!(
            "{who} no longer has any permission on this server (the allowlist changed); \
             closing"
        ))
    }

    /// Counts and logs (at debug: port scanners fail too) a TLS handshake that failed.
    fn tls_failed(&self, sh: &Shared, why: &str) {
        sh.tls_failures.fetch_add(1, Ordering::Relaxed);
        let who = self.stream.tcp_peer();
        let who = who.map_or("a TCP peer".to_string(), |a| a.to_string());
        tracing::debug!("TLS handshake with {who} failed: {why}");
    }

    /// Counts and logs a peer that failed to authenticate.
    fn deny(&self, sh: &Shared, why: &str) {
        sh.denied.fetch_add(1, Ordering::Relaxed);
        let who = self
            .stream
            .tcp_peer()
            .map_or("a TCP peer".to_string(), |a| format!("TCP peer {a}"));
        tracing::warn!("refused {who}: it {why}");
    }

    /// Checks that `mode` can work for `op` here; answers MODE_UNSUPPORTED otherwise.
    fn check_mode(&mut self, seq: u64, id: u32, op: Op, mode: Mode) -> bool {
        let msg = match mode {
            Mode::Fd if !self.fd_capable => {
                "fd mode needs a Unix socket: file descriptors cannot cross TCP; use copy or \
                 splice mode"
            }
            Mode::Fd if !self.fd_ok() => {
                "fd mode needs the FD_PASSING capability, which HELLO did not negotiate"
            }
            Mode::Auto if op == Op::Put => {
                "auto mode applies to GET; a PUT names its mode (copy, splice or fd)"
            }
            _ => return true,
        };
        self.finish_error(seq, id, Status::ModeUnsupported, msg);
        false
    }

    fn get(&mut self, seq: u64, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        if !self.check_mode(seq, h.request_id, h.op, h.mode) {
            return;
        }
        if h.mode == Mode::Fd && !sh.cfg.share_fds {
            return self.get_private_fd(seq, req, sh);
        }
        self.get_shared(seq, req, sh, 0);
    }

    /// A GET through the store's cached file. Bytes the server sends itself (copy,
    /// splice) are checked against the record's checksum (docs/STORAGE.md, "Faults"):
    /// before the header, or on the way for a whole object too large to read first.
    /// `attempt`: lookups so far that found a damaged version (dropped by the store).
    fn get_shared(&mut self, seq: u64, req: &Request<'_>, sh: &Shared, attempt: usize) {
        let h = &req.header;
        let id = h.request_id;
        // Every other GET reads through the store's cached open file of the version: no
        // open or close per request. Its description is shared, which is invisible while
        // the bytes travel inline, and handed out only with `share_fds`.
        let obj = match sh.store.get_shared(req.key) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return self.finish_error(seq, id, Status::NotFound, "no object under that key")
            }
            Err(e) => {
                let (st, msg) = store_status(&e);
                return self.finish_error(seq, id, st, msg);
            }
        };
        let (offset, length) = match resolve_range(h.offset, h.length, obj.meta.size) {
            Ok(r) => r,
            Err(msg) => return self.finish_error(seq, id, Status::RangeNotSatisfiable, msg),
        };
        let mode = match h.mode {
            Mode::Auto if self.fd_ok() && length >= sh.cfg.auto_fd_threshold => Mode::Fd,
            Mode::Auto => Mode::Copy,
            m => m,
        };
        if mode == Mode::Fd {
            let fd = if sh.cfg.share_fds {
                Attached::Shared(obj.file)
            } else {
                match sh.store.reopen(&obj) {
                    Ok(Some(f)) => Attached::Owned(OwnedFd::from(f)),
                    // Replaced or moved since the lookup: look it up afresh.
                    Ok(None) => return self.get_private_fd(seq, req, sh),
                    Err(e) => {
                        let (st, msg) = store_status(&e);
                        return self.finish_error(seq, id, st, msg);
                    }
                }
            };
            return self.finish_fd(seq, id, &obj.meta, (offset, length), fd);
        }
        let whole = offset == 0 && length == obj.meta.size;
        let check = if obj.verified() {
            None
        } else if whole && length > INLINE_READ_MAX {
            // Too large to read before replying: hashed while it is streamed.
            Some(Box::new(StreamCheck {
                hasher: ObjectHasher::new(),
                obj: obj.clone(),
                store: sh.store.clone(),
            }))
        } else {
            match sh.store.verify(&obj) {
                Ok(true) => None,
                // Damaged: dropped by the store; the next lookup finds the other
                // tier's copy, if there is one.
                Ok(false) if attempt < 3 => return self.get_shared(seq, req, sh, attempt + 1),
                Ok(false) => {
                    return self.finish_error(seq, id, Status::NotFound, "no object under that key")
                }
                Err(e) => {
                    let (st, msg) = store_status(&e);
                    return self.finish_error(seq, id, st, msg);
                }
            }
        };
        self.send_body(
            seq,
            id,
            &obj.meta,
            obj.file,
            mode,
            (offset, length),
            sh,
            check,
        );
    }

    /// fd-mode GET: a fresh private description (its own offset and status flags) of the
    /// current version, opened for this request.
    fn get_private_fd(&mut self, seq: u64, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        let id = h.request_id;
        let obj = match sh.store.get(req.key) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return self.finish_error(seq, id, Status::NotFound, "no object under that key")
            }
            Err(e) => {
                let (st, msg) = store_status(&e);
                return self.finish_error(seq, id, st, msg);
            }
        };
        let range = match resolve_range(h.offset, h.length, obj.meta.size) {
            Ok(r) => r,
            Err(msg) => return self.finish_error(seq, id, Status::RangeNotSatisfiable, msg),
        };
        let fd = Attached::Owned(OwnedFd::from(obj.file));
        self.finish_fd(seq, id, &obj.meta, range, fd);
    }

    /// Replies to a GET with the object's fd; `offset` and `length` say what to read (the
    /// fd covers the whole object).
    fn finish_fd(
        &mut self,
        seq: u64,
        id: u32,
        meta: &ObjectMeta,
        (offset, length): (u64, u64),
        fd: Attached,
    ) {
        let meta_bytes = wire_meta(meta);
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = Mode::Fd;
        rh.offset = offset;
        rh.length = length;
        rh.flags = resp_flags::FD_ATTACHED;
        let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN + meta_bytes.len());
        encode_response(&rh, "", &meta_bytes, &mut buf);
        let reply = Out::Bytes {
            buf,
            pos: 0,
            fd: Some(fd),
            more: false,
        };
        self.finish(seq, vec![reply]);
    }

    /// Replies to a copy or splice GET: the header, then the bytes inline (small content
    /// read straight into the reply), streamed in chunks, or sendfile'd.
    #[allow(clippy::too_many_arguments)]
    fn send_body(
        &mut self,
        seq: u64,
        id: u32,
        meta: &ObjectMeta,
        file: Arc<File>,
        mode: Mode,
        (offset, length): (u64, u64),
        sh: &Shared,
        check: Option<Box<StreamCheck>>,
    ) {
        let meta_bytes = wire_meta(meta);
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = mode;
        rh.offset = offset;
        rh.length = length;
        rh.flags = resp_flags::BODY;
        let inline = mode == Mode::Copy && length <= INLINE_READ_MAX;
        let mut buf = Vec::with_capacity(
            proto::RESPONSE_HEADER_LEN
                + meta_bytes.len()
                + if inline { length as usize } else { 0 },
        );
        encode_response(&rh, "", &meta_bytes, &mut buf);
        if inline {
            let start = buf.len();
            buf.resize(start + length as usize, 0);
            if let Err(e) = file.read_exact_at(&mut buf[start..], offset) {
                // Nothing has been sent for this request yet, so an error reply is still possible.
                let msg = format!("reading the object failed: {e}");
                return self.finish_error(seq, id, Status::IoError, msg);
            }
            return self.finish_bytes(seq, buf);
        }
        let remaining = length;
        let body = if remaining == 0 {
            None
        } else if mode == Mode::Splice
            && check.is_none()
            && sh.kio.sendfile_ok
            && self.stream.kernel_io()
        {
            Some(Out::Sendfile {
                file,
                offset,
                remaining,
            })
        } else {
            // Also splice mode's first read of a file not yet verified: its bytes pass
            // through here once to be hashed; later reads sendfile them.
            Some(Out::File {
                file,
                offset,
                remaining,
                check,
            })
        };
        let head = Out::Bytes {
            buf,
            pos: 0,
            fd: None,
            more: self.is_tcp && body.is_some(),
        };
        self.finish(seq, std::iter::once(head).chain(body).collect());
    }

    fn put(&mut self, seq: u64, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        let id = h.request_id;
        if !self.check_mode(seq, id, h.op, h.mode) {
            self.skip_body(h.body_len(), sh);
            return;
        }
        let max = sh.cfg.store.max_object_size;
        if h.length > max {
            let msg = format!(
                "object of {} bytes exceeds the maximum object size of {max} bytes",
                h.length
            );
            self.finish_error(seq, id, Status::ObjectTooLarge, msg);
            if h.body_len() > 0 {
                // We will not read an announced body this large: close after the reply.
                self.closing = true;
            }
            return;
        }
        let meta = match put_meta_of(req.meta) {
            Ok(m) => m,
            Err(msg) => {
                self.finish_error(seq, id, Status::BadRequest, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        let limits = sh.limits.get();
        if h.mode == Mode::Fd && self.staged.len() >= limits.max_staged_puts {
            let msg = format!(
                "this connection already holds {} staged PUTs (max_staged_puts); COMMIT or \
                 ABORT one first",
                self.staged.len()
            );
            return self.finish_error(seq, id, Status::TooManyRequests, msg);
        }
        // Bytes this connection has staged: its fd-mode staging files as they are now,
        // plus this PUT's declared body.
        let held: u64 = self
            .staged
            .values()
            .map(|p| p.staging.len().unwrap_or(0))
            .sum();
        let this = if h.mode == Mode::Fd { 0 } else { h.length };
        if held.saturating_add(this) > limits.max_staged_bytes_per_conn {
            let msg = format!(
                "this connection would hold {} staged bytes, over max_staged_bytes_per_conn \
                 ({}); COMMIT or ABORT its staged PUTs first",
                held.saturating_add(this),
                limits.max_staged_bytes_per_conn
            );
            self.finish_error(seq, id, Status::TooManyRequests, msg);
            self.skip_body(h.body_len(), sh);
            return;
        }
        let reserved = if h.mode == Mode::Fd {
            sh.staged_puts
                .try_reserve(1, sh.cfg.max_staged_puts_total as u64)
                .ok_or_else(|| {
                    format!(
                        "the server holds {} staged PUTs (max_staged_puts_total); retry later",
                        sh.staged_puts.used()
                    )
                })
        } else {
            // The first step now; the rest as the body arrives (`BodyState::room`).
            let first = h.length.min(BODY_RESERVE_STEP);
            sh.staged_bytes
                .try_reserve(first, limits.max_staged_bytes_total)
                .ok_or_else(|| {
                    format!(
                        "the server is receiving {} bytes of PUT bodies; {first} more would \
                         exceed max_staged_bytes_total ({}); retry later",
                        sh.staged_bytes.used(),
                        limits.max_staged_bytes_total
                    )
                })
        };
        let reserved = match reserved {
            Ok(r) => r,
            Err(msg) => {
                self.finish_error(seq, id, Status::Busy, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        let buffered = h.mode == Mode::Copy && h.length <= INLINE_COMMIT_MAX;
        let staging = if buffered {
            sh.store
                .begin_put_buffered(req.key, h.length as usize)
                .map(PutBody::Buffer)
        } else {
            sh.store.begin_put(req.key).map(PutBody::Memfd)
        };
        let staging = match staging {
            Ok(s) => s,
            Err(e) => {
                let (st, msg) = store_status(&e);
                self.finish_error(seq, id, st, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        if matches!(h.mode, Mode::Copy | Mode::Splice) {
            // validate_request has refused DURABLE|EPHEMERAL already.
            let mut opts = put_options(h.flags).unwrap_or_default();
            opts.condition = condition_of(h);
            self.input = Input::Body(Box::new(BodyState {
                staging,
                remaining: h.length,
                length: h.length,
                seq,
                request_id: id,
                meta,
                opts,
                // Over TLS the bytes must pass through rustls: splice mode is served by
                // copying, with the same result for the client.
                splice: h.mode == Mode::Splice && self.stream.kernel_io(),
                reserved,
            }));
            return;
        }
        // fd mode: hand out the writable staging memfd and remember it under a handle.
        let PutBody::Memfd(staging) = staging else {
            unreachable!("only copy-mode PUTs are buffered");
        };
        let fd = match staging.fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                let msg = format!("duplicating the staging fd failed: {e}");
                return self.finish_error(seq, id, Status::IoError, msg);
            }
        };
        let handle = self.next_handle;
        self.next_handle += 1;
        self.staged.insert(
            handle,
            StagedPut {
                staging,
                meta,
                flags: h.flags,
                condition: condition_of(h),
                _slot: reserved,
            },
        );
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = Mode::Fd;
        rh.flags = resp_flags::FD_ATTACHED;
        rh.handle = handle;
        let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN);
        encode_response(&rh, "", &[], &mut buf);
        let reply = Out::Bytes {
            buf,
            pos: 0,
            fd: Some(Attached::Owned(fd)),
            more: false,
        };
        self.finish(seq, vec![reply]);
    }

    fn skip_body(&mut self, len: u64, sh: &Shared) {
        if len == 0 {
            return;
        }
        if len > sh.discard_limit() {
            self.closing = true;
        } else {
            self.input = Input::Discard(len);
        }
    }
}

/// ORDERED (a V2 flag; validate_request refuses it on V1).
fn is_ordered(h: &RequestHeader) -> bool {
    h.version == Version::V2 && h.has_flag(req_flags::ORDERED)
}

/// ORDERED read from raw header bytes (a frame that failed to decode past its header).
fn raw_ordered(b: &[u8]) -> bool {
    b.len() >= 6
        && b[0] == proto::MAGIC_REQ_V2
        && u16::from_le_bytes([b[4], b[5]]) & req_flags::ORDERED != 0
}

/// Best-effort request id from a frame that failed to decode (0 if unreadable).
fn request_id_of(b: &[u8]) -> u32 {
    b.get(8..12)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// The range a GET delivers, with HTTP Range semantics (the same on every transport): a
/// range that runs past the end is cut at the end; one that starts at or past the end is
/// unsatisfiable, except at offset 0 (the whole, possibly empty, object). Length 0 means
/// "to the end".
pub(crate) fn resolve_range(offset: u64, length: u64, size: u64) -> Result<(u64, u64), String> {
    if offset > 0 && offset >= size {
        return Err(format!(
            "range starts at byte {offset}, at or past the end of the object of {size} bytes"
        ));
    }
    let rest = size - offset;
    Ok((offset, if length == 0 { rest } else { length.min(rest) }))
}

/// The compare-and-swap condition a PUT, COMMIT or DELETE carries.
fn condition_of(h: &RequestHeader) -> Condition {
    if h.has_flag(req_flags::IF_VERSION) {
        Condition::IfVersion(h.offset)
    } else if h.has_flag(req_flags::IF_ABSENT) {
        Condition::IfAbsent
    } else {
        Condition::Always
    }
}

/// BUSY's message when a PUT body would take the server past `max_staged_bytes_total`.
fn body_budget_spent(sh: &Shared, limit: u64) -> String {
    format!(
        "the server holds {} bytes of PUT bodies being received, max_staged_bytes_total is \
         {limit}: the rest of this body is skipped; retry later",
        sh.staged_bytes.used()
    )
}

fn error_frame(v: Version, id: u32, status: Status, message: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN + message.len());
    encode_response(&ResponseHeader::new(v, status, id), message, &[], &mut buf);
    buf
}

fn ok_frame(v: Version, id: u32, meta: Option<&ObjectMeta>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    let mut h = ResponseHeader::new(v, Status::Ok, id);
    let meta_bytes = meta.map(wire_meta).unwrap_or_default();
    if let Some(m) = meta {
        h.length = m.size;
    }
    encode_response(&h, "", &meta_bytes, &mut buf);
    buf
}

/// BAN's reply: OK with the ban's stamp as the metadata's VERSION (and MTIME).
fn ban_frame(v: Version, id: u32, r: Result<objmapper_store::BanInfo, StoreError>) -> Vec<u8> {
    match r {
        Ok(info) => {
            let md = Metadata {
                version: Some(info.stamp),
                mtime_ns: Some(info.stamp),
                ..Default::default()
            };
            let mut meta = Vec::new();
            if md.encode(&mut meta).is_err() {
                meta.clear();
            }
            let mut buf = Vec::with_capacity(64);
            encode_response(&ResponseHeader::new(v, Status::Ok, id), "", &meta, &mut buf);
            buf
        }
        Err(e) => {
            let (st, msg) = store_status(&e);
            error_frame(v, id, st, &msg)
        }
    }
}

fn commit_frame(v: Version, id: u32, r: Result<Arc<ObjectMeta>, CommitError>) -> Vec<u8> {
    let e = match r {
        Ok(meta) => return ok_frame(v, id, Some(&meta)),
        Err(e) => e,
    };
    let status = match &e {
        CommitError::PreconditionFailed(_) => {
            tracing::debug!("conditional write refused: {e}");
            return error_frame(v, id, Status::PreconditionFailed, &e.to_string());
        }
        CommitError::LengthMismatch { .. } => Status::LengthMismatch,
        CommitError::TooLarge { .. } => Status::ObjectTooLarge,
        CommitError::WritableMapping => Status::BadRequest,
        CommitError::Poisoned => Status::ReadOnly,
        CommitError::NoSpace(_) => Status::NoSpace,
        CommitError::InvalidOptions(_) => Status::BadRequest,
        _ => Status::IoError,
    };
    let msg = format!("commit failed, nothing was published: {e}");
    tracing::debug!(status = %status, "request failed: {msg}");
    error_frame(v, id, status, &msg)
}

/// Seconds since the Unix epoch, the unit of EXPIRES.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An EXPIRES must lie in the future: at or before now the object would never be served.
fn check_expiry(expires_at: Option<u64>) -> Result<(), String> {
    match expires_at {
        Some(t) if t <= unix_now() => Err(format!(
            "EXPIRES {t} is not in the future (server time {}): the object would never be \
             served",
            unix_now()
        )),
        _ => Ok(()),
    }
}

/// The store's placement options for a PUT/COMMIT's request flags (no condition).
fn put_options(flags: u16) -> Result<PutOptions, String> {
    let durable = flags & req_flags::DURABLE != 0;
    let ephemeral = flags & req_flags::EPHEMERAL != 0;
    if durable && ephemeral {
        return Err(
            "DURABLE and EPHEMERAL contradict each other (the PUT and its COMMIT together set \
             both): an ephemeral object is never written to disk"
                .into(),
        );
    }
    Ok(PutOptions {
        durable,
        ephemeral,
        pinned: flags & req_flags::PIN != 0,
        ..PutOptions::default()
    })
}

fn put_meta_of(raw: &[u8]) -> Result<PutMeta, String> {
    let m = Metadata::decode(raw).map_err(|e| format!("invalid metadata: {e}"))?;
    if m.has_server_fields() {
        return Err(
            "invalid metadata: SIZE, VERSION, MTIME, CHECKSUM, TIER and STATE are set by the \
             server"
                .into(),
        );
    }
    check_expiry(m.expires_at)?;
    Ok(PutMeta {
        content_type: m.content_type,
        custom: m.custom,
        expires_at: m.expires_at,
    })
}

fn wire_tier(t: objmapper_store::Tier) -> proto::Tier {
    match t {
        objmapper_store::Tier::Memory => proto::Tier::Memory,
        objmapper_store::Tier::Disk => proto::Tier::Disk,
        objmapper_store::Tier::Both => proto::Tier::Both,
    }
}

pub(crate) fn wire_meta(m: &ObjectMeta) -> Vec<u8> {
    let md = Metadata {
        size: Some(m.size),
        version: Some(m.version),
        mtime_ns: Some(m.mtime_ns),
        checksum: Some(m.checksum),
        content_type: m.content_type.as_deref().map(str::to_owned),
        expires_at: m.expires_at,
        tier: Some(wire_tier(m.tier)),
        state: Some(proto::ObjectState::new(m.pinned, m.ephemeral, m.dirty)),
        custom: m
            .custom
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
    };
    let mut out = Vec::with_capacity(64);
    if let Err(e) = md.encode(&mut out) {
        // Stored metadata was validated on the way in, so this is a bug; fall back to the
        // fixed fields rather than failing the read.
        tracing::error!("stored metadata does not encode: {e}");
        out.clear();
        let fixed = Metadata {
            size: md.size,
            version: md.version,
            mtime_ns: md.mtime_ns,
            checksum: md.checksum,
            expires_at: md.expires_at,
            tier: md.tier,
            state: md.state,
            ..Default::default()
        };
        let _ = fixed.encode(&mut out);
    }
    out
}

pub(crate) fn store_status(e: &StoreError) -> (Status, String) {
    let st = match e {
        StoreError::Poisoned => Status::ReadOnly,
        StoreError::InvalidKey { .. } => Status::BadRequest,
        StoreError::NoSpace(_) => Status::NoSpace,
        StoreError::PreconditionFailed(_) => Status::PreconditionFailed,
        StoreError::InvalidBan(_) => Status::BadRequest,
        StoreError::TooManyBans { .. } => Status::Busy,
        _ => Status::IoError,
    };
    (st, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::resolve_range;

    #[test]
    fn ranges_follow_http_semantics() {
        assert_eq!(resolve_range(0, 0, 10), Ok((0, 10)));
        assert_eq!(resolve_range(3, 0, 10), Ok((3, 7)));
        assert_eq!(resolve_range(3, 4, 10), Ok((3, 4)));
        assert_eq!(resolve_range(9, 1, 10), Ok((9, 1)));
        // Past the end: cut at the end.
        assert_eq!(resolve_range(3, 8, 10), Ok((3, 7)));
        assert_eq!(resolve_range(5, u64::MAX, 10), Ok((5, 5)));
        // The whole of an empty object.
        assert_eq!(resolve_range(0, 0, 0), Ok((0, 0)));
        assert_eq!(resolve_range(0, 1, 0), Ok((0, 0)));
        // Starting at or past the end: unsatisfiable.
        for (o, l, s) in [(10, 0, 10), (10, 1, 10), (11, 0, 10), (1, 0, 0)] {
            let e = resolve_range(o, l, s).unwrap_err();
            assert!(e.contains(&format!("{s} bytes")), "{e}");
        }
        assert!(resolve_range(u64::MAX, u64::MAX, 10).is_err());
    }
}
