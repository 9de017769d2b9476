//! One framed connection: sends request frames, reads response frames and the fds that
//! travel with them. Knows the wire, not the ops.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use objmapper_proto::{
    decode_response, encode_request, Decoded, Metadata, RequestHeader, ResponseHeader, Version,
    RESPONSE_HEADER_LEN,
};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendFlags,
};

use crate::{Error, Transport};

/// Read buffer size: a whole header plus a small object's body in one `recvmsg`.
const READ_BUF: usize = 64 * 1024;
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
}

impl Sock {
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Sock::Unix(_) => Transport::Unix,
            Sock::Tcp(_) => Transport::Tcp,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Unix(s) => s.as_fd(),
            Sock::Tcp(s) => s.as_fd(),
        }
    }
}

/// A decoded response with everything that came with it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub header: ResponseHeader,
    pub message: String,
    pub meta: Metadata,
    pub fd: Option<OwnedFd>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Conn {
    sock: Sock,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    next_id: u32,
}

impl Conn {
    pub(crate) fn new(sock: Sock) -> Conn {
        Conn {
            sock,
            rbuf: vec![0; READ_BUF],
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(256),
            next_id: 1,
        }
    }

    pub(crate) fn sock(&self) -> &Sock {
        &self.sock
    }

    /// Sends one request frame (header, key, metadata, then `body`) and reads its reply.
    ///
    /// If the server closes its side while we are still sending a body (it refused the
    /// request, e.g. OBJECT_TOO_LARGE), the reply it sent first is returned.
    pub(crate) fn call(
        &mut self,
        mut header: RequestHeader,
        key: &[u8],
        meta: &[u8],
        body: &[u8],
    ) -> Result<Reply, Error> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        header.version = Version::V1;
        header.request_id = id;
        self.wbuf.clear();
        encode_request(&header, key, meta, &mut self.wbuf);
        let head = std::mem::take(&mut self.wbuf);
        let sent = send_all(self.sock.fd(), &head, body);
        self.wbuf = head;
        if let Err(e) = sent {
            let refused = matches!(
                Errno::from_io_error(&e),
                Some(Errno::PIPE | Errno::CONNRESET)
            );
            if refused {
                // The server may have answered before closing: prefer its reason.
                if let Ok(reply) = self.read_reply(id) {
                    return Ok(reply);
                }
            }
            return Err(Error::Io(e));
        }
        self.read_reply(id)
    }

    fn read_reply(&mut self, id: u32) -> Result<Reply, Error> {
        let mut fds: Vec<OwnedFd> = Vec::new();
        self.ensure(RESPONSE_HEADER_LEN, &mut fds)?;
        let need = match ResponseHeader::decode(self.buffered()) {
            Ok(Decoded::Complete(h, _)) => h.frame_len(),
            Ok(Decoded::Incomplete(n)) => n,
            Err(e) => return Err(Error::Protocol(format!("bad response header: {e}"))),
        };
        self.ensure(need, &mut fds)?;
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

        if header.version != Version::V1 {
            return Err(Error::Protocol("V2 response to a V1 request".into()));
        }
        if header.request_id != id {
            return Err(Error::Protocol(format!(
                "response carries request id {} while waiting for {id}",
                header.request_id
            )));
        }
        if fds.len() > 1 {
            return Err(Error::Protocol(format!(
                "{} fds arrived with one response (at most 1 allowed)",
                fds.len()
            )));
        }
        let fd = fds.pop();
        match (header.fd_attached(), &fd) {
            (true, None) => {
                return Err(Error::Protocol(
                    "response says FD_ATTACHED but no fd arrived".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::Protocol(
                    "an fd arrived with a response that does not say FD_ATTACHED".into(),
                ))
            }
            _ => {}
        }
        let body = if header.has_body() {
            Some(self.read_body(header.length)?)
        } else {
            None
        };
        Ok(Reply {
            header,
            message,
            meta,
            fd,
            body,
        })
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rstart..self.rend]
    }

    /// Reads until at least `n` bytes are buffered, collecting any fds that arrive.
    fn ensure(&mut self, n: usize, fds: &mut Vec<OwnedFd>) -> Result<(), Error> {
        while self.rend - self.rstart < n {
            if self.rbuf.len() - self.rstart < n {
                // Not enough room after rstart: move the buffered bytes to the front,
                // and grow if the frame is larger than the buffer.
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
                if self.rbuf.len() < n {
                    self.rbuf.resize(n, 0);
                }
            }
            let got = recv_some(&self.sock, &mut self.rbuf[self.rend..], fds)?;
            if got == 0 {
                return Err(if self.rend == self.rstart && fds.is_empty() {
                    Error::Closed
                } else {
                    Error::Protocol("connection closed in the middle of a response".into())
                });
            }
            self.rend += got;
        }
        Ok(())
    }

    /// Reads an inline body of `len` bytes: first what is buffered, then straight from the
    /// socket into the result.
    fn read_body(&mut self, len: u64) -> Result<Vec<u8>, Error> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or_else(|| Error::Protocol(format!("body of {len} bytes cannot fit in memory")))?;
        let from_buf = len.min(self.rend - self.rstart);
        let mut body = Vec::with_capacity(len.min(BODY_FIRST_CHUNK.max(from_buf)));
        body.extend_from_slice(&self.rbuf[self.rstart..self.rstart + from_buf]);
        self.rstart += from_buf;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        let mut filled = from_buf;
        let mut fds = Vec::new();
        while filled < len {
            if body.len() == filled {
                let grow = filled.max(BODY_FIRST_CHUNK).min(len - filled);
                body.resize(filled + grow, 0);
            }
            let got = recv_some(&self.sock, &mut body[filled..], &mut fds)?;
            if !fds.is_empty() {
                return Err(Error::Protocol(
                    "an fd arrived in the middle of a response body".into(),
                ));
            }
            if got == 0 {
                return Err(Error::Protocol(format!(
                    "connection closed after {filled} of {len} body bytes"
                )));
            }
            filled += got;
        }
        Ok(body)
    }
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC`. Every received fd is owned (so closed on drop)
/// before this returns.
fn recv_some(sock: &Sock, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, Error> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg(sock.fd(), &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for the server",
                )))
            }
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
    Ok(msg.bytes)
}

/// Writes `head` then `body` with as few syscalls as possible, without SIGPIPE.
fn send_all(fd: BorrowedFd<'_>, head: &[u8], body: &[u8]) -> io::Result<()> {
    let total = head.len() + body.len();
    let mut done = 0;
    while done < total {
        let iov: [IoSlice<'_>; 2] = if done < head.len() {
            [IoSlice::new(&head[done..]), IoSlice::new(body)]
        } else {
            [IoSlice::new(&body[done - head.len()..]), IoSlice::new(&[])]
        };
        let mut control = SendAncillaryBuffer::default();
        match sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out sending to the server",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
