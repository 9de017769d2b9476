//! The reply value and its one encoding as a response frame.

use std::borrow::Cow;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use objmapper_proto::{
    encode_response, resp_flags, Mode, ResponseHeader, Status, Version, RESPONSE_HEADER_LEN,
};
use objmapper_store::SharedObject;

/// What a request's reply is, before a transport encodes it: the status and message,
/// the object's wire metadata, the range, and where the body comes from.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: Status,
    /// The error message (empty on OK).
    pub(crate) message: Cow<'static, str>,
    /// The metadata section, wire-encoded.
    pub(crate) meta: Vec<u8>,
    /// How the body is delivered (`Mode::None` without one).
    pub(crate) mode: Mode,
    /// Where the delivered bytes start in the object (a GET's range).
    pub(crate) offset: u64,
    /// How many bytes are delivered (a GET), or the object's size (HEAD, COMMIT).
    pub(crate) length: u64,
    /// An fd-mode PUT's staging handle (0: none).
    pub(crate) handle: u64,
    pub(crate) body: Body,
}

/// Where a reply's body comes from.
#[derive(Debug)]
pub(crate) enum Body {
    None,
    /// `length` bytes at `offset` of this file, read into the reply frame itself. Checked
    /// against the record already.
    Inline(Arc<File>),
    /// The whole object's bytes, checked against the record already (the store's body
    /// cache): `length` of them at `offset` go into the reply frame itself.
    Bytes(Arc<[u8]>),
    /// `length` bytes at `offset` of this file, sent after the frame: streamed in chunks
    /// through user space, or by sendfile(2) in splice mode. `check`: the whole object,
    /// not yet checked against the record: it is hashed on the way, and the reply is not
    /// completed if the sum is wrong.
    Stream {
        file: Arc<File>,
        check: Option<Box<SharedObject>>,
    },
    /// A descriptor passed with the frame (fd mode).
    Fd(Attached),
}

/// A descriptor that rides on a reply frame.
#[derive(Debug)]
pub(crate) enum Attached {
    /// A private description (its own offset and flags), or a PUT's staging memfd.
    Owned(OwnedFd),
    /// The store's cached description of the version, shared with other readers.
    Shared(Arc<File>),
}

impl AsFd for Attached {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Attached::Owned(f) => f.as_fd(),
            Attached::Shared(f) => f.as_fd(),
        }
    }
}

/// What is left to send after a reply's frame.
pub(crate) enum Rest {
    None,
    /// A file range to stream (see [`Body::Stream`]).
    Stream {
        file: Arc<File>,
        offset: u64,
        length: u64,
        check: Option<Box<SharedObject>>,
    },
    /// The fd that rides on the frame's first byte.
    Fd(Attached),
    /// `bytes[start..end]`, sent from where they are after the frame
    /// ([`Reply::encode_head`]).
    Bytes {
        bytes: Arc<[u8]>,
        start: usize,
        end: usize,
    },
}

impl Reply {
    /// OK, with nothing else.
    #[inline]
    pub(crate) fn ok() -> Reply {
        Reply::error(Status::Ok, "")
    }

    /// A reply with `status` and `message` and nothing else.
    #[inline]
    pub(crate) fn error(status: Status, message: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            status,
            message: message.into(),
            meta: Vec::new(),
            mode: Mode::None,
            offset: 0,
            length: 0,
            handle: 0,
            body: Body::None,
        }
    }

    /// The response header of this reply to request `id`.
    #[inline]
    pub(crate) fn header(&self, v: Version, id: u32) -> ResponseHeader {
        let mut h = ResponseHeader::new(v, self.status, id);
        h.mode = self.mode;
        h.offset = self.offset;
        h.length = self.length;
        h.handle = self.handle;
        h.flags = match self.body {
            Body::None => 0,
            Body::Inline(_) | Body::Bytes(_) | Body::Stream { .. } => resp_flags::BODY,
            Body::Fd(_) => resp_flags::FD_ATTACHED,
        };
        h
    }

    /// Bytes of the encoded frame: header, message, metadata and an inline body.
    #[inline]
    pub(crate) fn frame_len(&self) -> usize {
        let inline = match self.body {
            Body::Inline(_) | Body::Bytes(_) => self.length as usize,
            _ => 0,
        };
        RESPONSE_HEADER_LEN + self.message.len() + self.meta.len() + inline
    }

    /// Appends the frame to `out`, reading an inline body into it. Returns the status
    /// the frame carries and what is left to send after it (the body is taken out of the
    /// reply). An inline body that cannot be read makes the frame an IO_ERROR instead
    /// (nothing of it has been sent).
    #[inline]
    pub(crate) fn encode(&mut self, v: Version, id: u32, out: &mut Vec<u8>) -> (Status, Rest) {
        self.encode_with(v, id, out, false)
    }

    /// [`Reply::encode`], but bytes from the store's body cache (at least
    /// [`SHARE_BYTES_MIN`] of them) are not copied into `out`: they come back as
    /// [`Rest::Bytes`], for a stream to send from where they are.
    pub(crate) fn encode_head(&mut self, v: Version, id: u32, out: &mut Vec<u8>) -> (Status, Rest) {
        self.encode_with(v, id, out, true)
    }

    fn encode_with(
        &mut self,
        v: Version,
        id: u32,
        out: &mut Vec<u8>,
        share: bool,
    ) -> (Status, Rest) {
        if self.status != Status::Ok {
            tracing::debug!(status = %self.status, "request failed: {}", self.message);
        }
        let start = out.len();
        encode_response(&self.header(v, id), &self.message, &self.meta, out);
        let rest = match std::mem::replace(&mut self.body, Body::None) {
            Body::None => Rest::None,
            Body::Inline(file) => {
                let at = out.len();
                out.resize(at + self.length as usize, 0);
                if let Err(e) = file.read_exact_at(&mut out[at..], self.offset) {
                    out.truncate(start);
                    return (read_failed(v, id, &e, out), Rest::None);
                }
                Rest::None
            }
            Body::Bytes(bytes) => {
                let at = self.offset as usize;
                match at
                    .checked_add(self.length as usize)
                    .and_then(|end| bytes.get(at..end))
                {
                    Some([]) => {}
                    Some(b) if share && b.len() >= SHARE_BYTES_MIN => {
                        let (start, end) = (at, at + self.length as usize);
                        return (self.status, Rest::Bytes { bytes, start, end });
                    }
                    Some(b) => out.extend_from_slice(b),
                    None => {
                        out.truncate(start);
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the range ends past the object's {} bytes", bytes.len()),
                        );
                        return (read_failed(v, id, &e, out), Rest::None);
                    }
                }
                Rest::None
            }
            Body::Stream { file, check } => Rest::Stream {
                file,
                offset: self.offset,
                length: self.length,
                check,
            },
            Body::Fd(fd) => Rest::Fd(fd),
        };
        (self.status, rest)
    }
}

/// Body-cache bytes from this many on are sent from the cache ([`Reply::encode_head`]);
/// fewer are copied into the frame, which costs less than a second queue entry (user
/// instructions per GET, `scripts/request-cost`: 1 KiB +131 sent from the cache, 4 KiB
/// −179).
const SHARE_BYTES_MIN: usize = 2048;

/// Encodes the IO_ERROR reply for an inline body that could not be read.
#[cold]
fn read_failed(v: Version, id: u32, e: &std::io::Error, out: &mut Vec<u8>) -> Status {
    let msg = format!("reading the object failed: {e}");
    tracing::debug!(status = %Status::IoError, "request failed: {msg}");
    encode_response(&ResponseHeader::new(v, Status::IoError, id), &msg, &[], out);
    Status::IoError
}
