//! One framed connection: sends request frames, reads response frames and the fds that
//! travel with them, and keeps track of which requests are outstanding. Knows the wire
//! (V1 or V2 frames, in-order or out-of-order replies), not the ops.
//!
//! Three things make pipelining safe here:
//!
//! - **Sending never deadlocks against unread replies.** A request is written with
//!   `MSG_DONTWAIT`; when the socket is full, the connection polls for both directions and
//!   reads (and queues) whatever replies arrive meanwhile. A server that stops reading
//!   while its own output is backed up (as objmapper's does) therefore always makes
//!   progress.
//! - **Replies are validated against what is outstanding**: in-order sessions must answer
//!   the oldest request; out-of-order sessions may answer any outstanding id, but never
//!   overtake a request flagged ORDERED, nor answer one before its predecessors.
//! - **fds are matched to frames in stream order.** Each FD_ATTACHED frame takes the
//!   oldest received fd that no frame has claimed yet. An fd arrives with the first byte
//!   of its header, so it is always there when its header is parsed. More unclaimed fds
//!   than outstanding requests means a stray fd: the stream is broken.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use objmapper_proto::{
    decode_response, encode_request, req_flags, Decoded, Metadata, RequestHeader, ResponseHeader,
    Status, Version,
};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendFlags,
};

use crate::{Error, Transport};

/// Read buffer size: a whole header plus a small object's body in one `recvmsg`.
const READ_BUF: usize = 64 * 1024;
/// At most this many bytes of requests wait in a corked connection ([`Conn::set_cork`]);
/// a request that would go past it is written at once, after those before it.
const CORK_MAX: usize = 64 * 1024;
/// First allocation for a large inline body; it doubles from there as bytes arrive, so a
/// bogus `length` cannot make us allocate much more than the server actually sends.
const BODY_FIRST_CHUNK: usize = 16 * 1024 * 1024;
/// Room for this many fds per `recvmsg`. One is legal; more are detected and closed.
const MAX_FDS_PER_READ: usize = 4;

/// The socket under a connection.
#[derive(Debug)]
pub(crate) enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsSock>),
}

impl Sock {
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Sock::Unix(_) => Transport::Unix,
            Sock::Tcp(_) => Transport::Tcp,
            #[cfg(feature = "tls")]
            Sock::Tls(_) => Transport::Tcp,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Unix(s) => s.as_fd(),
            Sock::Tcp(s) => s.as_fd(),
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.fd(),
        }
    }

    /// Received bytes held above the socket (decrypted TLS records).
    fn has_buffered(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.has_buffered(),
            _ => false,
        }
    }
}

/// A decoded response frame with everything that came with it.
#[derive(Debug)]
pub(crate) struct Frame {
    pub header: ResponseHeader,
    pub message: String,
    pub meta: Metadata,
    pub fd: Option<OwnedFd>,
    pub body: Option<Vec<u8>>,
}

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Sent {
    id: u32,
    ordered: bool,
}

/// A frame whose header has been parsed and whose inline body is still arriving.
#[derive(Debug)]
struct PartialBody {
    frame: Frame,
    body: Vec<u8>,
    filled: usize,
    len: usize,
}

/// Why a send failed, and for which request.
#[derive(Debug)]
pub(crate) struct SendError {
    pub id: u32,
    pub error: Error,
}

impl SendError {
    /// The peer stopped reading (EPIPE, ECONNRESET): it may have answered first.
    pub(crate) fn refused(&self) -> bool {
        match &self.error {
            Error::Io(e) => matches!(
                Errno::from_io_error(e),
                Some(Errno::PIPE | Errno::CONNRESET)
            ),
            Error::Closed => true,
            _ => false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Conn {
    sock: Sock,
    /// Frame generation of this session: V1 until a HELLO is granted.
    version: Version,
    /// Replies may come in any order (V2 with OUT_OF_ORDER).
    out_of_order: bool,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// Received fds that no frame has claimed yet, oldest first.
    fds: VecDeque<OwnedFd>,
    partial: Option<PartialBody>,
    /// Frames received ahead of being asked for (while sending, or while waiting for
    /// another id), in arrival order.
    ready: VecDeque<Frame>,
    /// Requests sent and not yet answered, in sending order.
    sent: VecDeque<Sent>,
    wbuf: Vec<u8>,
    /// Gather requests in `corked` instead of writing each ([`Conn::set_cork`]).
    cork: bool,
    /// Requests sent (outstanding) but not yet written to the socket.
    corked: Vec<u8>,
    next_id: u32,
    /// Whether any request has been sent (HELLO must be the first).
    used: bool,
    timeout: Option<Duration>,
}

impl Conn {
    pub(crate) fn new(sock: Sock) -> Conn {
        Conn {
            sock,
            version: Version::V1,
            out_of_order: false,
            rbuf: vec![0; READ_BUF],
            rstart: 0,
            rend: 0,
            fds: VecDeque::new(),
            partial: None,
            ready: VecDeque::new(),
            sent: VecDeque::new(),
            wbuf: Vec::with_capacity(256),
            cork: false,
            corked: Vec::new(),
            next_id: 1,
            used: false,
            timeout: None,
        }
    }

    pub(crate) fn sock(&self) -> &Sock {
        &self.sock
    }

    /// Whether received bytes (a whole reply or part of one) wait in this connection's
    /// buffers, where poll(2) on the socket cannot see them.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.ready.is_empty() || self.rend > self.rstart || self.sock.has_buffered()
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// Switches to V2 frames after a granted HELLO.
    pub(crate) fn set_session(&mut self, version: Version, out_of_order: bool) {
        self.version = version;
        self.out_of_order = out_of_order;
    }

    /// Applies `timeout` to every blocking read, write and poll.
    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match &self.sock {
            Sock::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)?;
            }
            Sock::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)?;
            }
            #[cfg(feature = "tls")]
            Sock::Tls(s) => {
                s.tcp.set_read_timeout(timeout)?;
                s.tcp.set_write_timeout(timeout)?;
            }
        }
        self.timeout = timeout;
        Ok(())
    }

    /// Whether any request has been sent on this connection.
    pub(crate) fn used(&self) -> bool {
        self.used
    }

    fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            // Only after 2^32 requests can an id still be in use; skip it then.
            let busy = self.sent.iter().any(|s| s.id == id)
                || self.ready.iter().any(|f| f.header.request_id == id);
            if !busy {
                return id;
            }
        }
    }

    /// Sends one request frame (header, key, metadata, then `body`) without waiting for
    /// its reply; returns the request id it was given. `ordered` sets the ORDERED flag
    /// (V2 only; ignored on V1, whose replies are always in order).
    ///
    /// While the socket will not take more, replies that arrive are read and queued.
    pub(crate) fn send(
        &mut self,
        mut header: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
        ordered: bool,
    ) -> Result<u32, SendError> {
        let id = self.alloc_id();
        self.used = true;
        header.version = self.version;
        header.request_id = id;
        let ordered = ordered && self.version == Version::V2;
        if ordered {
            header.flags |= req_flags::ORDERED;
        }
        self.wbuf.clear();
        encode_request(&header, key, meta, &mut self.wbuf);
        // Outstanding before the first byte goes out: its reply may arrive mid-send.
        self.sent.push_back(Sent { id, ordered });
        let head = std::mem::take(&mut self.wbuf);
        let r = if self.cork && self.corked.len() + head.len() + body.len() <= CORK_MAX {
            self.corked.extend_from_slice(&head);
            self.corked.extend_from_slice(body);
            Ok(())
        } else {
            self.flush().and_then(|()| self.write_duplex(&head, body))
        };
        self.wbuf = head;
        r.map(|()| id).map_err(|error| SendError { id, error })
    }

    /// While `on`, [`Conn::send`] gathers requests (up to [`CORK_MAX`] bytes) and writes
    /// them in one go before the next read from the socket, on [`Conn::flush`], or when
    /// switched off. They count as outstanding from the moment they are sent.
    pub(crate) fn set_cork(&mut self, on: bool) -> Result<(), Error> {
        self.cork = on;
        if on {
            Ok(())
        } else {
            self.flush()
        }
    }

    /// Writes the gathered requests, if any.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        if self.corked.is_empty() {
            return Ok(());
        }
        // Taken while it is written: a read that happens meanwhile (the socket full)
        // finds nothing to flush.
        let out = std::mem::take(&mut self.corked);
        let r = self.write_duplex(&out, &[]);
        self.corked = out;
        self.corked.clear();
        r
    }

    /// One round trip: sends, then waits for this request's reply.
    ///
    /// If the server closes its side while we are still sending a body (it refused the
    /// request, e.g. OBJECT_TOO_LARGE), the reply it sent first is returned.
    pub(crate) fn call(
        &mut self,
        header: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<Frame, Error> {
        match self.send(header, key, meta, body, false) {
            Ok(id) => self.recv_for(id),
            Err(e) => self.refusal(e),
        }
    }

    /// After a failed send: the server's own reply to that request if it sent one before
    /// closing (so the caller sees the server's reason), else the send error.
    pub(crate) fn refusal(&mut self, e: SendError) -> Result<Frame, Error> {
        if let Some(i) = self.ready.iter().position(|f| f.header.request_id == e.id) {
            return Ok(self.ready.remove(i).expect("index from position"));
        }
        if e.refused() {
            if let Ok(f) = self.recv_for(e.id) {
                return Ok(f);
            }
        }
        Err(e.error)
    }

    /// A reply received ahead of being asked for, oldest first.
    pub(crate) fn pop_ready(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// The reply to request `id` if it was received ahead of being asked for.
    pub(crate) fn take_ready(&mut self, id: u32) -> Option<Frame> {
        let i = self.ready.iter().position(|f| f.header.request_id == id)?;
        self.ready.remove(i)
    }

    /// The next reply, whichever request it answers: a queued one first, else the next
    /// from the socket (blocking).
    pub(crate) fn recv_any(&mut self) -> Result<Frame, Error> {
        if let Some(f) = self.ready.pop_front() {
            return Ok(f);
        }
        self.read_frame(true)
            .map(|f| f.expect("a blocking read returns a frame"))
    }

    /// The next reply like [`Conn::recv_any`], without blocking: `Ok(None)` when no
    /// whole reply is there yet (what arrived stays buffered for the next call).
    pub(crate) fn try_recv_any(&mut self) -> Result<Option<Frame>, Error> {
        if let Some(f) = self.ready.pop_front() {
            return Ok(Some(f));
        }
        self.read_frame(false)
    }

    /// The reply to request `id`, queueing replies to other requests that come first.
    pub(crate) fn recv_for(&mut self, id: u32) -> Result<Frame, Error> {
        if let Some(i) = self.ready.iter().position(|f| f.header.request_id == id) {
            return Ok(self.ready.remove(i).expect("index from position"));
        }
        loop {
            let f = self
                .read_frame(true)?
                .expect("a blocking read returns a frame");
            if f.header.request_id == id {
                return Ok(f);
            }
            self.ready.push_back(f);
        }
    }

    /// Blocks until fewer than `depth` requests are outstanding, queueing the replies
    /// that arrive.
    pub(crate) fn wait_in_flight_below(&mut self, depth: usize) -> Result<(), Error> {
        while self.sent.len() >= depth.max(1) {
            let f = self
                .read_frame(true)?
                .expect("a blocking read returns a frame");
            self.ready.push_back(f);
        }
        Ok(())
    }

    /// Reads one frame. With `wait == false`, returns `Ok(None)` instead of blocking
    /// (whatever arrived so far stays buffered).
    fn read_frame(&mut self, wait: bool) -> Result<Option<Frame>, Error> {
        if self.sent.is_empty() {
            return Err(Error::Protocol(
                "internal: waiting for a reply with no request outstanding".into(),
            ));
        }
        // A reply can only come to a request that went out.
        self.flush()?;
        loop {
            if self.partial.is_some() {
                return match self.read_body(wait)? {
                    Some(f) => self.finish(f).map(Some),
                    None => Ok(None),
                };
            }
            let need = match ResponseHeader::decode(self.buffered()) {
                Ok(Decoded::Complete(h, _)) => h.frame_len(),
                Ok(Decoded::Incomplete(n)) => n,
                Err(e) => return Err(Error::Protocol(format!("bad response header: {e}"))),
            };
            if self.rend - self.rstart >= need {
                let frame = self.parse_frame()?;
                if frame.header.has_body() {
                    let len = usize::try_from(frame.header.length)
                        .ok()
                        .filter(|&l| l <= isize::MAX as usize)
                        .ok_or_else(|| {
                            Error::Protocol(format!(
                                "body of {} bytes cannot fit in memory",
                                frame.header.length
                            ))
                        })?;
                    let first = len.min(BODY_FIRST_CHUNK.max(self.rend - self.rstart));
                    self.partial = Some(PartialBody {
                        frame,
                        body: Vec::with_capacity(first),
                        filled: 0,
                        len,
                    });
                    continue;
                }
                return self.finish(frame).map(Some);
            }
            if !self.fill(need, wait)? {
                return Ok(None);
            }
        }
    }

    /// Decodes the buffered header, message and metadata, matches the frame to an
    /// outstanding request and claims its fd.
    fn parse_frame(&mut self) -> Result<Frame, Error> {
        let (header, message, meta_bytes, used) = match decode_response(self.buffered()) {
            Ok(Decoded::Complete(r, used)) => (r.header, r.message_text(), r.meta, used),
            Ok(Decoded::Incomplete(_)) => {
                return Err(Error::Protocol("response frame length changed".into()))
            }
            Err(e) => return Err(Error::Protocol(format!("bad response: {e}"))),
        };
        let meta = Metadata::decode(meta_bytes)
            .map_err(|e| Error::Protocol(format!("bad metadata in response: {e}")))?;
        self.rstart += used;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        // A server that cannot parse a frame may answer its error in the other
        // generation (an old server refusing HELLO): show its message rather than ours.
        if header.version != self.version && header.status == Status::Ok {
            return Err(Error::Protocol(format!(
                "{:?} response to a {:?} request",
                header.version, self.version
            )));
        }
        self.match_request(header.request_id)?;
        let fd = if header.fd_attached() {
            Some(self.fds.pop_front().ok_or_else(|| {
                Error::Protocol("response says FD_ATTACHED but no fd arrived".into())
            })?)
        } else {
            None
        };
        Ok(Frame {
            header,
            message,
            meta,
            fd,
            body: None,
        })
    }

    /// Removes `id` from the outstanding requests, checking the reply order rules.
    fn match_request(&mut self, id: u32) -> Result<(), Error> {
        let front = self.sent.front().map(|s| s.id);
        if !self.out_of_order {
            if front != Some(id) {
                return Err(Error::Protocol(format!(
                    "response carries request id {id} while waiting for {}",
                    front.map_or("none".into(), |f| f.to_string())
                )));
            }
            self.sent.pop_front();
            return Ok(());
        }
        let Some(pos) = self.sent.iter().position(|s| s.id == id) else {
            return Err(Error::Protocol(format!(
                "response carries request id {id}, which is not outstanding"
            )));
        };
        if pos > 0 {
            if self.sent[pos].ordered {
                return Err(Error::Protocol(format!(
                    "ORDERED request {id} was answered before earlier request {}",
                    self.sent[0].id
                )));
            }
            if let Some(o) = self.sent.iter().take(pos).find(|s| s.ordered) {
                return Err(Error::Protocol(format!(
                    "request {id} was answered before the earlier ORDERED request {}",
                    o.id
                )));
            }
        }
        self.sent.remove(pos);
        Ok(())
    }

    /// Checks a complete frame against the fds still unclaimed.
    fn finish(&mut self, frame: Frame) -> Result<Frame, Error> {
        // Every unclaimed fd must belong to a reply still to come, one fd each at most.
        if self.fds.len() > self.sent.len() {
            self.fds.clear();
            return Err(Error::Protocol(
                "an fd arrived with a response that does not say FD_ATTACHED".into(),
            ));
        }
        Ok(frame)
    }

    /// Continues an inline body: first what is buffered, then straight from the socket
    /// into the body.
    fn read_body(&mut self, wait: bool) -> Result<Option<Frame>, Error> {
        let p = self.partial.as_mut().expect("a partial body");
        let from_buf = (p.len - p.filled).min(self.rend - self.rstart);
        // Bytes past `filled` are only zero padding for the next recv.
        p.body.truncate(p.filled);
        p.body
            .extend_from_slice(&self.rbuf[self.rstart..self.rstart + from_buf]);
        p.filled += from_buf;
        self.rstart += from_buf;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        while p.filled < p.len {
            if p.body.len() == p.filled {
                let grow = p.filled.max(BODY_FIRST_CHUNK).min(p.len - p.filled);
                p.body.resize(p.filled + grow, 0);
            }
            let mut fds = Vec::new();
            let got = recv_some(
                &mut self.sock,
                &mut p.body[p.filled..],
                &mut fds,
                wait,
                self.timeout,
            );
            // An fd may arrive with body bytes: it rides on the first segment of the
            // server's sendmsg, which may start with this body's tail and end with the
            // header of the reply that owns the fd. `finish` catches any that no reply
            // can claim.
            self.fds.extend(fds);
            match got? {
                None => {
                    return Ok(None);
                }
                Some(0) => {
                    return Err(Error::Protocol(format!(
                        "connection closed after {} of {} body bytes",
                        p.filled, p.len
                    )))
                }
                Some(n) => p.filled += n,
            }
        }
        let PartialBody {
            mut frame,
            mut body,
            len,
            ..
        } = self.partial.take().expect("a partial body");
        body.truncate(len);
        frame.body = Some(body);
        Ok(Some(frame))
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rstart..self.rend]
    }

    /// One read towards having `n` bytes buffered. Returns false if it would block (only
    /// when `wait` is false).
    fn fill(&mut self, n: usize, wait: bool) -> Result<bool, Error> {
        if self.rbuf.len() - self.rstart < n {
            // Not enough room after rstart: move the buffered bytes to the front, and
            // grow if the frame is larger than the buffer.
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
            if self.rbuf.len() < n {
                self.rbuf.resize(n, 0);
            }
        }
        let mut fds = Vec::new();
        let got = recv_some(
            &mut self.sock,
            &mut self.rbuf[self.rend..],
            &mut fds,
            wait,
            self.timeout,
        );
        self.fds.extend(fds);
        match got? {
            None => Ok(false),
            Some(0) => Err(if self.rend == self.rstart && self.fds.is_empty() {
                Error::Closed
            } else {
                Error::Protocol("connection closed in the middle of a response".into())
            }),
            Some(got) => {
                self.rend += got;
                Ok(true)
            }
        }
    }

    /// Writes `head` then `body` with as few syscalls as possible, without SIGPIPE. While
    /// the socket is full, reads and queues the replies that arrive.
    fn write_duplex(&mut self, head: &[u8], body: &[u8]) -> Result<(), Error> {
        #[cfg(feature = "tls")]
        if matches!(self.sock, Sock::Tls(_)) {
            return self.write_tls(head, body);
        }
        let total = head.len() + body.len();
        let mut done = 0;
        while done < total {
            let iov: [IoSlice<'_>; 2] = if done < head.len() {
                [IoSlice::new(&head[done..]), IoSlice::new(body)]
            } else {
                [IoSlice::new(&body[done - head.len()..]), IoSlice::new(&[])]
            };
            let mut control = SendAncillaryBuffer::default();
            match sendmsg(
                self.sock.fd(),
                &iov,
                &mut control,
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            ) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => self.wait_writable()?,
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
        Ok(())
    }

    /// write_duplex over TLS: plaintext goes to rustls, ciphertext to the socket; while
    /// the socket is full, replies are read as on a plain socket.
    #[cfg(feature = "tls")]
    fn write_tls(&mut self, head: &[u8], body: &[u8]) -> Result<(), Error> {
        for part in [head, body] {
            let mut done = 0;
            while done < part.len() {
                let Sock::Tls(s) = &mut self.sock else {
                    unreachable!("write_tls is only called on TLS")
                };
                done += s.write(&part[done..])?;
                if !s.push(false)? {
                    self.wait_writable()?;
                }
            }
        }
        loop {
            let Sock::Tls(s) = &mut self.sock else {
                unreachable!("write_tls is only called on TLS")
            };
            if s.push(false)? {
                return Ok(());
            }
            self.wait_writable()?;
        }
    }

    /// Waits until the socket takes more bytes, reading the replies that arrive meanwhile.
    fn wait_writable(&mut self) -> Result<(), Error> {
        loop {
            let timeout = self.timeout.map(|t| Timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(t.subsec_nanos()),
            });
            // With nothing outstanding there is no reply to read: wait for room only.
            let want = if self.sent.is_empty() {
                PollFlags::OUT
            } else {
                PollFlags::IN | PollFlags::OUT
            };
            let rev = {
                let mut pfd = [PollFd::new(&self.sock, want)];
                match rustix::event::poll(&mut pfd, timeout.as_ref()) {
                    Err(Errno::INTR) => continue,
                    Ok(0) => return Err(timed_out("take the request", self.timeout)),
                    Ok(_) => pfd[0].revents(),
                    Err(e) => return Err(Error::Io(e.into())),
                }
            };
            if want.contains(PollFlags::IN) && rev.contains(PollFlags::IN) {
                // Read everything that is there; keep complete replies for later.
                while let Some(f) = self.read_frame(false)? {
                    self.ready.push_back(f);
                    if self.sent.is_empty() {
                        break;
                    }
                }
                continue;
            }
            // Writable, or an error/hangup that the next send reports.
            return Ok(());
        }
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

/// The error of a wait for the server that took longer than `timeout` (the connection's
/// [`Conn::set_timeout`]): [`Error::Io`] of kind `TimedOut`, saying how long it waited.
pub(crate) fn timed_out(what: &str, timeout: Option<Duration>) -> Error {
    let within = timeout.map_or_else(String::new, |t| format!(" within {}", show_duration(t)));
    Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the server did not {what}{within} (timed out)"),
    ))
}

/// `30 s`, `1.5 s` or `250 ms`, for messages.
pub(crate) fn show_duration(t: Duration) -> String {
    if t < Duration::from_secs(1) {
        format!("{} ms", t.as_millis())
    } else if t.subsec_millis() == 0 {
        format!("{} s", t.as_secs())
    } else {
        format!("{:.1} s", t.as_secs_f64())
    }
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC` (and `MSG_DONTWAIT` unless `wait`). Every
/// received fd is owned (so closed on drop) before this returns. `Ok(None)`: nothing to
/// read without blocking. `timeout` is the socket's receive timeout, for the message.
fn recv_some(
    sock: &mut Sock,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    wait: bool,
    timeout: Option<Duration>,
) -> Result<Option<usize>, Error> {
    #[cfg(feature = "tls")]
    if let Sock::Tls(s) = sock {
        return s.recv(buf, wait);
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let flags = if wait {
        RecvFlags::CMSG_CLOEXEC
    } else {
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
    };
    let msg = loop {
        match recvmsg(sock.fd(), &mut iov, &mut cmsg, flags) {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if !wait => return Ok(None),
            Err(Errno::AGAIN) => return Err(timed_out("answer", timeout)),
            r => break r.map_err(io::Error::from)?,
        }
    };
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(Error::Protocol(
            "control message truncated: the server sent more fds than a response may carry".into(),
        ));
    }
    Ok(Some(msg.bytes))
}
