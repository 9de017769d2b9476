//! One client connection: an input state machine, request dispatch, and an output queue.
//!
//! A connection is driven by its worker whenever epoll reports it ready (edge-triggered).
//! It never blocks on the socket: partial frames wait in `pending`, and output that the
//! socket will not take yet waits in `out`. While output is backed up it reads no more
//! requests, so one slow reader cannot make the server buffer without bound.

use crate::sys;
use crate::worker::Shared;
use objmapper_proto::{
    self as proto, decode_request, encode_response, hello, req_flags, resp_flags, validate_request,
    Decoded, Hello, Metadata, Mode, Op, Request, ResponseHeader, Status, Version,
};
use objmapper_store::{CommitError, ObjectMeta, PutMeta, PutOptions, Staging, StoreError};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Objects up to this size are read straight into the copy-mode response buffer.
const INLINE_READ_MAX: u64 = 256 * 1024;
/// Chunk size for streaming larger copy-mode bodies.
const FILE_CHUNK: usize = 256 * 1024;
/// Stop turning requests into responses once this much output is queued.
const OUT_HIGH_WATER: usize = 512 * 1024;

pub(crate) enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

enum Out {
    Bytes {
        buf: Vec<u8>,
        pos: usize,
        fd: Option<OwnedFd>,
    },
    File {
        file: File,
        offset: u64,
        remaining: u64,
    },
}

enum Input {
    Frames,
    /// Receiving a copy-mode PUT body into a staging memfd.
    Body(Box<BodyState>),
    /// Skipping the rest of a rejected frame (and its body).
    Discard(u64),
}

struct BodyState {
    staging: Staging,
    remaining: u64,
    length: u64,
    request_id: u32,
    version: Version,
    meta: PutMeta,
    opts: PutOptions,
}

/// An fd-mode PUT waiting for its COMMIT: the staging file, the PUT's metadata and the
/// PUT's request flags (or-ed with the COMMIT's).
struct StagedPut {
    staging: Staging,
    meta: PutMeta,
    flags: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Session {
    /// Nothing received yet: the first byte decides V1 or V2.
    New,
    V1,
    V2 {
        fd_passing: bool,
    },
}

/// Why processing stopped.
#[derive(PartialEq, Eq)]
enum Stop {
    NeedMore,
    Backpressure,
    Close,
}

pub(crate) struct Conn {
    stream: Stream,
    fd_capable: bool,
    /// Received bytes not yet consumed (a partial frame, or input held back by backpressure).
    pending: Vec<u8>,
    /// `pending` was fully examined and needs more bytes before it can make progress.
    pending_needs_more: bool,
    input: Input,
    out: VecDeque<Out>,
    out_bytes: usize,
    staged: HashMap<u64, StagedPut>,
    next_handle: u64,
    session: Session,
    close_after_flush: bool,
    eof: bool,
    /// When the current incomplete frame started waiting, for the stall timeout.
    waiting_since: Option<Instant>,
    /// Whether the socket is registered for WRITABLE too. Only while output is backed
    /// up: otherwise every time the client drains its socket the worker would wake.
    pub(crate) registered_writable: bool,
}

impl Conn {
    pub(crate) fn new(stream: Stream) -> Conn {
        let fd_capable = matches!(stream, Stream::Unix(_));
        Conn {
            stream,
            fd_capable,
            pending: Vec::new(),
            pending_needs_more: false,
            input: Input::Frames,
            out: VecDeque::new(),
            out_bytes: 0,
            staged: HashMap::new(),
            next_handle: 1,
            session: Session::New,
            close_after_flush: false,
            eof: false,
            waiting_since: None,
            registered_writable: false,
        }
    }

    /// Output is waiting for socket space.
    pub(crate) fn wants_writable(&self) -> bool {
        !self.out.is_empty()
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        self.stream.source()
    }

    /// Idle: nothing half-received and nothing left to send. Safe to close at shutdown.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && matches!(self.input, Input::Frames) && self.out.is_empty()
    }

    /// Since when this connection has sat on an incomplete frame without receiving a byte.
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.waiting_since
    }

    /// Answers a stalled connection and marks it for closing.
    pub(crate) fn time_out(&mut self, sh: &Shared) {
        let secs = sh.cfg.frame_timeout.as_secs_f64();
        self.fatal(
            Status::ProtocolError,
            format!("incomplete frame: no progress for {secs:.0} s, closing"),
        );
        self.pending.clear();
        self.input = Input::Frames;
        self.waiting_since = None;
    }

    /// Does all the work the socket allows. Returns false when the connection should close.
    /// `read_closed`: epoll reported the peer's FIN (EPOLLRDHUP) with this event.
    pub(crate) fn on_ready(&mut self, sh: &Shared, rbuf: &mut [u8], read_closed: bool) -> bool {
        // A short read means the socket was empty at that moment; epoll (edge-triggered)
        // reports any later data, so there is no need to read again until EAGAIN. A FIN
        // that arrived with the data raises no new edge, so then we read on to the EOF.
        let mut drained = false;
        loop {
            if self.flush().is_err() {
                return false;
            }
            if !self.out.is_empty() {
                return true; // socket full: wait for writable
            }
            if self.close_after_flush {
                return false;
            }
            if !self.pending.is_empty() && !self.pending_needs_more {
                let pending = std::mem::take(&mut self.pending);
                let (used, stop) = self.process(&pending, sh);
                self.pending = pending;
                self.pending.drain(..used);
                self.pending_needs_more = stop == Stop::NeedMore;
                self.track_wait(false);
                continue;
            }
            if self.eof {
                if !self.pending.is_empty() || !matches!(self.input, Input::Frames) {
                    self.fatal(
                        Status::ProtocolError,
                        "truncated frame: the connection ended in the middle of a request"
                            .to_string(),
                    );
                    self.pending.clear();
                    self.input = Input::Frames;
                    continue;
                }
                return false;
            }
            if drained {
                return true;
            }
            match self.stream.read(rbuf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    drained = n < rbuf.len() && !read_closed;
                    self.pending_needs_more = false;
                    if self.pending.is_empty() {
                        let (used, stop) = self.process(&rbuf[..n], sh);
                        self.pending.extend_from_slice(&rbuf[used..n]);
                        self.pending_needs_more = stop == Stop::NeedMore;
                    } else {
                        self.pending.extend_from_slice(&rbuf[..n]);
                    }
                    self.track_wait(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Starts, restarts (on progress: bytes arrived) or clears the stall timer.
    fn track_wait(&mut self, progress: bool) {
        let partial = !self.pending.is_empty() && self.pending_needs_more
            || matches!(self.input, Input::Body(_) | Input::Discard(_));
        if !partial {
            self.waiting_since = None;
        } else if progress || self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
    }

    /// Writes queued output until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(front) = self.out.front_mut() {
            match front {
                Out::Bytes { buf, pos, fd } => {
                    let sock = self.stream.fd();
                    let r = match fd {
                        Some(f) => sys::send_with_fd(sock, &buf[*pos..], f.as_fd()),
                        None => sys::send(sock, &buf[*pos..]),
                    };
                    match r {
                        Ok(n) => {
                            // The fd rode on the first byte that was sent; drop our copy.
                            *fd = None;
                            *pos += n;
                            self.out_bytes -= n;
                            if *pos == buf.len() {
                                self.out.pop_front();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Out::File {
                    file,
                    offset,
                    remaining,
                } => {
                    let n = (*remaining).min(FILE_CHUNK as u64) as usize;
                    let mut chunk = vec![0u8; n];
                    file.read_exact_at(&mut chunk, *offset)?;
                    *offset += n as u64;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.out.pop_front();
                    }
                    self.out.push_front(Out::Bytes {
                        buf: chunk,
                        pos: 0,
                        fd: None,
                    });
                    self.out_bytes += n;
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, buf: Vec<u8>, fd: Option<OwnedFd>) {
        self.out_bytes += buf.len();
        self.out.push_back(Out::Bytes { buf, pos: 0, fd });
    }

    fn version(&self) -> Version {
        match self.session {
            Session::V2 { .. } => Version::V2,
            _ => Version::V1,
        }
    }

    fn reply_error(&mut self, id: u32, status: Status, message: impl AsRef<str>) {
        let mut buf = Vec::with_capacity(64);
        let h = ResponseHeader::new(self.version(), status, id);
        encode_response(&h, message.as_ref(), &[], &mut buf);
        tracing::debug!(status = %status, "request failed: {}", message.as_ref());
        self.push(buf, None);
    }

    /// Sends an error and closes once it is out: the stream can no longer be trusted.
    fn fatal(&mut self, status: Status, message: String) {
        self.reply_error(0, status, message);
        self.close_after_flush = true;
    }

    fn reply_ok(&mut self, id: u32, meta: Option<&ObjectMeta>) {
        let mut buf = Vec::with_capacity(128);
        let mut h = ResponseHeader::new(self.version(), Status::Ok, id);
        let meta_bytes = meta.map(wire_meta).unwrap_or_default();
        if let Some(m) = meta {
            h.length = m.size;
        }
        encode_response(&h, "", &meta_bytes, &mut buf);
        self.push(buf, None);
    }

    /// Consumes what it can of `data`. Returns bytes used and why it stopped.
    fn process(&mut self, data: &[u8], sh: &Shared) -> (usize, Stop) {
        let mut used = 0;
        loop {
            if self.close_after_flush {
                return (data.len(), Stop::Close);
            }
            if self.out_bytes >= OUT_HIGH_WATER
                || self.out.iter().any(|o| matches!(o, Out::File { .. }))
            {
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
                    let n = body.remaining.min(rest.len() as u64) as usize;
                    if let Err(e) = body.staging.write_all(&rest[..n]) {
                        let id = body.request_id;
                        self.input = Input::Discard(body.remaining - n as u64);
                        used += n;
                        self.reply_error(
                            id,
                            Status::IoError,
                            format!("staging the PUT body failed: {e}"),
                        );
                        continue;
                    }
                    body.remaining -= n as u64;
                    used += n;
                    if body.remaining > 0 {
                        return (used, Stop::NeedMore);
                    }
                    let Input::Body(body) = std::mem::replace(&mut self.input, Input::Frames)
                    else {
                        unreachable!()
                    };
                    let BodyState {
                        staging,
                        length,
                        request_id,
                        version,
                        meta,
                        opts,
                        ..
                    } = *body;
                    debug_assert_eq!(version, self.version());
                    let r = staging.commit(length, meta, opts);
                    self.finish_commit(request_id, r);
                }
                Input::Frames => {
                    if rest.is_empty() {
                        return (used, Stop::NeedMore);
                    }
                    match decode_request(rest) {
                        Ok(Decoded::Incomplete(_)) => return (used, Stop::NeedMore),
                        Ok(Decoded::Complete(req, n)) => {
                            if req.header.op == Op::Hello && rest.len() < n + hello::HELLO_LEN {
                                return (used, Stop::NeedMore);
                            }
                            used += n;
                            let body_avail = &data[used..];
                            used += self.handle(&req, body_avail, sh);
                        }
                        Err(e) if !e.is_fatal() => {
                            let skip = e.skip().unwrap_or(0);
                            let id = request_id_of(rest);
                            if skip > sh.discard_limit() {
                                self.reply_error(id, e.status(), e.to_string());
                                self.close_after_flush = true;
                            } else {
                                self.reply_error(id, e.status(), e.to_string());
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
    fn handle(&mut self, req: &Request<'_>, body: &[u8], sh: &Shared) -> usize {
        let h = &req.header;
        let id = h.request_id;
        // Session: the first frame decides; versions never mix on one connection.
        match (self.session, h.version, h.op) {
            (Session::New, Version::V1, _) => self.session = Session::V1,
            (Session::New, Version::V2, Op::Hello) => {}
            (Session::New, Version::V2, _) => {
                self.fatal(
                    Status::ProtocolError,
                    "a V2 connection must open with HELLO".into(),
                );
                return 0;
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
        if let Err((status, msg)) = validate_request(req) {
            self.reject(h, status, msg, sh);
            return 0;
        }
        match h.op {
            Op::Hello => return self.hello(id, body),
            Op::Ping => self.reply_ok(id, None),
            Op::Get => self.get(req, sh),
            Op::Head => match sh.store.head(req.key) {
                Some(m) => self.reply_ok(id, Some(&m)),
                None => self.reply_error(id, Status::NotFound, "no object under that key"),
            },
            Op::Put => self.put(req, sh),
            Op::Commit => self.commit(req),
            Op::Abort => {
                if self.staged.remove(&h.handle).is_some() {
                    self.reply_ok(id, None);
                } else {
                    self.reply_error(
                        id,
                        Status::UnknownHandle,
                        format!("no staged PUT with handle {} on this connection", h.handle),
                    );
                }
            }
            Op::Delete => {
                // An expired object not yet swept away is removed too, but it was not
                // live, so the answer is NOT_FOUND, as for GET and HEAD.
                let live = sh.store.head(req.key).is_some();
                let r = if h.has_flag(req_flags::DURABLE) {
                    sh.store.delete_durable(req.key)
                } else {
                    sh.store.delete(req.key)
                };
                match r.map(|removed| removed && live) {
                    Ok(true) => self.reply_ok(id, None),
                    Ok(false) => self.reply_error(id, Status::NotFound, "no object under that key"),
                    Err(e) => {
                        let (st, msg) = store_status(&e);
                        self.reply_error(id, st, msg);
                    }
                }
            }
            Op::Pin | Op::Unpin => match sh.store.set_pinned(req.key, h.op == Op::Pin) {
                Ok(true) => self.reply_ok(id, None),
                Ok(false) => self.reply_error(id, Status::NotFound, "no object under that key"),
                Err(e) => {
                    let (st, msg) = store_status(&e);
                    self.reply_error(id, st, msg);
                }
            },
        }
        0
    }

    /// COMMIT of an fd-mode PUT: flags are the PUT's or-ed with the COMMIT's; non-empty
    /// COMMIT metadata replaces the PUT's. The handle is consumed whatever the outcome.
    fn commit(&mut self, req: &Request<'_>) {
        let h = &req.header;
        let id = h.request_id;
        let Some(staged) = self.staged.remove(&h.handle) else {
            self.reply_error(
                id,
                Status::UnknownHandle,
                format!("no staged PUT with handle {} on this connection", h.handle),
            );
            return;
        };
        let flags = staged.flags | h.flags;
        let opts = match put_options(flags) {
            Ok(o) => o,
            Err(msg) => return self.reply_error(id, Status::BadRequest, msg),
        };
        let meta = if req.meta.is_empty() {
            // The PUT's expiry was checked when the PUT arrived; time has passed since.
            if let Err(msg) = check_expiry(staged.meta.expires_at) {
                return self.reply_error(id, Status::BadRequest, msg);
            }
            staged.meta
        } else {
            match put_meta_of(req.meta) {
                Ok(m) => m,
                Err(msg) => return self.reply_error(id, Status::BadRequest, msg),
            }
        };
        let r = staged.staging.commit(h.length, meta, opts);
        self.finish_commit(id, r);
    }

    /// Rejects a well-framed request. A PUT's announced body must still be skipped.
    fn reject(&mut self, h: &proto::RequestHeader, status: Status, msg: String, sh: &Shared) {
        self.reply_error(h.request_id, status, msg);
        let body = h.body_len();
        if body > 0 && h.op != Op::Hello {
            if body > sh.discard_limit() {
                self.close_after_flush = true;
            } else {
                self.input = Input::Discard(body);
            }
        } else if h.op == Op::Hello {
            self.close_after_flush = true;
        }
    }

    fn hello(&mut self, id: u32, body: &[u8]) -> usize {
        // `process` waits until the whole 16-byte body is buffered.
        let asked = match Hello::decode(&body[..hello::HELLO_LEN]) {
            Ok(h) => h,
            Err(e) => {
                self.session = Session::V2 { fd_passing: false };
                self.fatal(
                    Status::ProtocolError,
                    format!("{e}; closing the connection"),
                );
                return hello::HELLO_LEN;
            }
        };
        self.session = Session::V2 { fd_passing: false };
        if asked.version < 2 {
            self.fatal(
                Status::VersionUnsupported,
                format!(
                    "HELLO asked for version {}; this server speaks version 2",
                    asked.version
                ),
            );
            return hello::HELLO_LEN;
        }
        let offered = if self.fd_capable {
            hello::caps::FD_PASSING
        } else {
            0
        };
        let granted = Hello {
            version: 2,
            capabilities: asked.capabilities & offered,
            depth: 1,
        };
        self.session = Session::V2 {
            fd_passing: granted.capabilities & hello::caps::FD_PASSING != 0,
        };
        let mut buf = Vec::with_capacity(64);
        let mut rh = ResponseHeader::new(Version::V2, Status::Ok, id);
        rh.flags = resp_flags::BODY;
        rh.length = hello::HELLO_LEN as u64;
        encode_response(&rh, "", &[], &mut buf);
        buf.extend_from_slice(&granted.encode());
        self.push(buf, None);
        hello::HELLO_LEN
    }

    /// Checks that `mode` can work here; answers MODE_UNSUPPORTED otherwise.
    fn check_mode(&mut self, id: u32, mode: Mode) -> bool {
        let fd_ok = match self.session {
            Session::V2 { fd_passing } => fd_passing,
            _ => self.fd_capable,
        };
        let msg = match mode {
            Mode::Fd if !self.fd_capable => {
                "fd mode needs a Unix socket: file descriptors cannot cross TCP; use copy mode"
            }
            Mode::Fd if !fd_ok => {
                "fd mode needs the FD_PASSING capability, which HELLO did not negotiate"
            }
            Mode::Splice | Mode::Auto => {
                "splice and auto modes are not implemented by this server yet; use fd or copy"
            }
            _ => return true,
        };
        self.reply_error(id, Status::ModeUnsupported, msg);
        false
    }

    fn get(&mut self, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        let id = h.request_id;
        if h.length != 0 || h.offset != 0 {
            self.reply_error(
                id,
                Status::BadRequest,
                "range reads are not implemented yet; offset and length must be 0",
            );
            return;
        }
        if !self.check_mode(id, h.mode) {
            return;
        }
        let obj = match sh.store.get(req.key) {
            Ok(Some(o)) => o,
            Ok(None) => return self.reply_error(id, Status::NotFound, "no object under that key"),
            Err(e) => {
                let (st, msg) = store_status(&e);
                return self.reply_error(id, st, msg);
            }
        };
        let meta_bytes = wire_meta(&obj.meta);
        let size = obj.meta.size;
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = h.mode;
        rh.length = size;
        let mut buf = Vec::with_capacity(
            proto::RESPONSE_HEADER_LEN
                + meta_bytes.len()
                + if size <= INLINE_READ_MAX {
                    size as usize
                } else {
                    0
                },
        );
        if h.mode == Mode::Fd {
            rh.flags = resp_flags::FD_ATTACHED;
            encode_response(&rh, "", &meta_bytes, &mut buf);
            self.push(buf, Some(OwnedFd::from(obj.file)));
            return;
        }
        rh.flags = resp_flags::BODY;
        encode_response(&rh, "", &meta_bytes, &mut buf);
        if size <= INLINE_READ_MAX {
            let start = buf.len();
            buf.resize(start + size as usize, 0);
            if let Err(e) = obj.file.read_exact_at(&mut buf[start..], 0) {
                // Nothing has been sent for this request yet, so an error reply is still possible.
                return self.reply_error(
                    id,
                    Status::IoError,
                    format!("reading the object failed: {e}"),
                );
            }
            self.push(buf, None);
        } else {
            self.push(buf, None);
            self.out.push_back(Out::File {
                file: obj.file,
                offset: 0,
                remaining: size,
            });
        }
    }

    fn put(&mut self, req: &Request<'_>, sh: &Shared) {
        let h = &req.header;
        let id = h.request_id;
        if !self.check_mode(id, h.mode) {
            if h.body_len() > 0 {
                self.skip_body(h.body_len(), sh);
            }
            return;
        }
        let max = sh.cfg.store.max_object_size;
        if h.length > max {
            let msg = format!(
                "object of {} bytes exceeds the maximum object size of {max} bytes",
                h.length
            );
            self.reply_error(id, Status::ObjectTooLarge, msg);
            if h.body_len() > 0 {
                // We will not read an announced body this large: close after the reply.
                self.close_after_flush = true;
            }
            return;
        }
        let meta = match put_meta_of(req.meta) {
            Ok(m) => m,
            Err(msg) => {
                self.reply_error(id, Status::BadRequest, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        if h.mode == Mode::Fd && self.staged.len() >= sh.cfg.max_staged_puts {
            let msg = format!(
                "this connection already holds {} staged PUTs; COMMIT or ABORT one first",
                self.staged.len()
            );
            return self.reply_error(id, Status::Busy, msg);
        }
        let staging = match sh.store.begin_put(req.key) {
            Ok(s) => s,
            Err(e) => {
                let (st, msg) = store_status(&e);
                self.reply_error(id, st, msg);
                self.skip_body(h.body_len(), sh);
                return;
            }
        };
        if h.mode == Mode::Copy {
            self.input = Input::Body(Box::new(BodyState {
                staging,
                remaining: h.length,
                length: h.length,
                request_id: id,
                version: self.version(),
                meta,
                // validate_request has refused DURABLE|EPHEMERAL already.
                opts: put_options(h.flags).unwrap_or_default(),
            }));
            return;
        }
        // fd mode: hand out the writable staging memfd and remember it under a handle.
        let fd = match staging.fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                return self.reply_error(
                    id,
                    Status::IoError,
                    format!("duplicating the staging fd failed: {e}"),
                )
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
            },
        );
        let mut rh = ResponseHeader::new(self.version(), Status::Ok, id);
        rh.mode = Mode::Fd;
        rh.flags = resp_flags::FD_ATTACHED;
        rh.handle = handle;
        let mut buf = Vec::with_capacity(proto::RESPONSE_HEADER_LEN);
        encode_response(&rh, "", &[], &mut buf);
        self.push(buf, Some(fd));
    }

    fn skip_body(&mut self, len: u64, sh: &Shared) {
        if len == 0 {
            return;
        }
        if len > sh.discard_limit() {
            self.close_after_flush = true;
        } else {
            self.input = Input::Discard(len);
        }
    }

    fn finish_commit(&mut self, id: u32, r: Result<std::sync::Arc<ObjectMeta>, CommitError>) {
        match r {
            Ok(meta) => self.reply_ok(id, Some(&meta)),
            Err(e) => {
                let status = match &e {
                    CommitError::LengthMismatch { .. } => Status::LengthMismatch,
                    CommitError::TooLarge { .. } => Status::ObjectTooLarge,
                    CommitError::WritableMapping => Status::BadRequest,
                    CommitError::Poisoned => Status::ReadOnly,
                    CommitError::NoSpace(_) => Status::NoSpace,
                    CommitError::InvalidOptions(_) => Status::BadRequest,
                    _ => Status::IoError,
                };
                self.reply_error(
                    id,
                    status,
                    format!("commit failed, nothing was published: {e}"),
                );
            }
        }
    }
}

/// Best-effort request id from a frame that failed to decode (0 if unreadable).
fn request_id_of(b: &[u8]) -> u32 {
    b.get(8..12)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
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

/// The store's placement options for a PUT/COMMIT's request flags.
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

fn wire_meta(m: &ObjectMeta) -> Vec<u8> {
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

fn store_status(e: &StoreError) -> (Status, String) {
    let st = match e {
        StoreError::Poisoned => Status::ReadOnly,
        StoreError::InvalidKey { .. } => Status::BadRequest,
        StoreError::NoSpace(_) => Status::NoSpace,
        _ => Status::IoError,
    };
    (st, e.to_string())
}
