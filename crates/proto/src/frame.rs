//! Request and response frames: fixed 40-byte headers followed by variable sections.
//!
//! All integers are little-endian. The layouts are normative in docs/PROTOCOL.md.

use crate::types::{req_flags, resp_flags, Mode, Op, Status};
use crate::{MAX_KEY_LEN, MAX_MESSAGE_LEN, MAX_META_LEN};

/// Size of every request header.
pub const REQUEST_HEADER_LEN: usize = 40;
/// Size of every response header.
pub const RESPONSE_HEADER_LEN: usize = 40;

/// First byte of a V1 request frame.
pub const MAGIC_REQ_V1: u8 = 0xA1;
/// First byte of a V2 request frame (HELLO always starts with it).
pub const MAGIC_REQ_V2: u8 = 0xA2;
/// First byte of a response to a V1 frame.
pub const MAGIC_RESP_V1: u8 = 0xB1;
/// First byte of a response to a V2 frame.
pub const MAGIC_RESP_V2: u8 = 0xB2;

/// Which protocol generation a frame belongs to, read from its magic byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Ordered, one request at a time, no handshake.
    V1,
    /// Opened by HELLO; pipelining and out-of-order replies when negotiated.
    V2,
}

impl Version {
    /// The request magic byte for this version.
    pub fn request_magic(self) -> u8 {
        match self {
            Version::V1 => MAGIC_REQ_V1,
            Version::V2 => MAGIC_REQ_V2,
        }
    }
    /// The response magic byte for this version.
    pub fn response_magic(self) -> u8 {
        match self {
            Version::V1 => MAGIC_RESP_V1,
            Version::V2 => MAGIC_RESP_V2,
        }
    }
}

/// The result of decoding from a buffer that may not yet hold a whole frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole frame: the value and how many bytes of the buffer it used.
    Complete(T, usize),
    /// Not enough bytes yet: the buffer must hold at least this many in total.
    Incomplete(usize),
}

/// Why bytes could not be decoded as a frame.
///
/// Only [`FrameError::KeyTooLong`] leaves the stream in sync: the header declared every
/// length, so the receiver can skip [`FrameError::skip`] bytes and read the next frame.
/// Every other variant means the stream can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The first byte is not a magic byte for this direction.
    BadMagic(u8),
    /// The op byte names no operation.
    UnknownOp(u8),
    /// The mode byte names no mode.
    UnknownMode(u8),
    /// The status byte names no status.
    UnknownStatus(u8),
    /// A reserved field is not zero.
    ReservedNotZero,
    /// Response flags carry bits this version does not define.
    UnknownResponseFlags(u16),
    /// The metadata section is longer than MAX_META_LEN.
    MetaTooLarge(u32),
    /// The error message is longer than MAX_MESSAGE_LEN.
    MessageTooLong(u16),
    /// The key is longer than MAX_KEY_LEN; the frame (and any body) spans `skip` bytes.
    KeyTooLong {
        /// Declared key length.
        len: u16,
        /// Total bytes of this frame, body included, that the receiver must discard.
        skip: u64,
    },
}

impl FrameError {
    /// True when the stream is out of sync and the connection must be closed.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::KeyTooLong { .. })
    }

    /// Bytes to discard to reach the next frame (non-fatal errors only).
    pub fn skip(&self) -> Option<u64> {
        match self {
            FrameError::KeyTooLong { skip, .. } => Some(*skip),
            _ => None,
        }
    }

    /// The status a server answers this error with.
    pub fn status(&self) -> Status {
        match self {
            FrameError::KeyTooLong { .. } => Status::KeyTooLong,
            FrameError::MetaTooLarge(_) => Status::MetadataTooLarge,
            _ => Status::ProtocolError,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadMagic(b) => {
                write!(f, "bad magic byte 0x{b:02x}: not an objmapper frame")
            }
            FrameError::UnknownOp(b) => write!(f, "unknown op 0x{b:02x}"),
            FrameError::UnknownMode(b) => write!(f, "unknown transfer mode 0x{b:02x}"),
            FrameError::UnknownStatus(b) => write!(f, "unknown status 0x{b:02x}"),
            FrameError::ReservedNotZero => f.write_str("a reserved header field is not zero"),
            FrameError::UnknownResponseFlags(b) => write!(f, "unknown response flags 0x{b:04x}"),
            FrameError::MetaTooLarge(n) => {
                write!(
                    f,
                    "metadata section of {n} bytes exceeds the limit of {MAX_META_LEN}"
                )
            }
            FrameError::MessageTooLong(n) => {
                write!(
                    f,
                    "error message of {n} bytes exceeds the limit of {MAX_MESSAGE_LEN}"
                )
            }
            FrameError::KeyTooLong { len, .. } => {
                write!(f, "key of {len} bytes exceeds the limit of {MAX_KEY_LEN}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The fixed part of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// V1 or V2, from the magic byte.
    pub version: Version,
    /// The operation.
    pub op: Op,
    /// The transfer mode.
    pub mode: Mode,
    /// Request flags, see [`req_flags`].
    pub flags: u16,
    /// Key length in bytes.
    pub key_len: u16,
    /// Echoed in the response.
    pub request_id: u32,
    /// Metadata section length in bytes.
    pub meta_len: u32,
    /// Op-specific: PUT copy = body bytes that follow; PUT fd = size hint; COMMIT = final
    /// object length; GET = range length (0 = to the end).
    pub length: u64,
    /// Op-specific: GET = range start; PUT/COMMIT/DELETE with IF_VERSION = the version
    /// the key must currently have.
    pub offset: u64,
    /// COMMIT/ABORT: the staging handle from the PUT response.
    pub handle: u64,
}

impl RequestHeader {
    /// A header for `op` with every other field zero / none.
    pub fn new(version: Version, op: Op, request_id: u32) -> Self {
        RequestHeader {
            version,
            op,
            mode: Mode::None,
            flags: 0,
            key_len: 0,
            request_id,
            meta_len: 0,
            length: 0,
            offset: 0,
            handle: 0,
        }
    }

    /// Bytes of inline body that follow the metadata section.
    pub fn body_len(&self) -> u64 {
        match (self.op, self.mode) {
            (Op::Put, Mode::Copy | Mode::Splice) => self.length,
            (Op::Hello, _) => self.length,
            _ => 0,
        }
    }

    /// Header + key + metadata: what must be buffered to decode the frame.
    pub fn frame_len(&self) -> usize {
        REQUEST_HEADER_LEN + self.key_len as usize + self.meta_len as usize
    }

    /// Whether a flag bit is set.
    pub fn has_flag(&self, bit: u16) -> bool {
        self.flags & bit != 0
    }

    /// Writes the 40 header bytes.
    pub fn encode(&self, out: &mut [u8; REQUEST_HEADER_LEN]) {
        out[0] = self.version.request_magic();
        out[1] = self.op.as_u8();
        out[2] = self.mode.as_u8();
        out[3] = 0;
        out[4..6].copy_from_slice(&self.flags.to_le_bytes());
        out[6..8].copy_from_slice(&self.key_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.request_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.meta_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.length.to_le_bytes());
        out[24..32].copy_from_slice(&self.offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.handle.to_le_bytes());
    }

    /// Decodes the 40 header bytes, validating everything the header alone can tell.
    pub fn decode(buf: &[u8]) -> Result<Decoded<RequestHeader>, FrameError> {
        if let Some(&m) = buf.first() {
            if m != MAGIC_REQ_V1 && m != MAGIC_REQ_V2 {
                return Err(FrameError::BadMagic(m));
            }
        }
        if buf.len() < REQUEST_HEADER_LEN {
            return Ok(Decoded::Incomplete(REQUEST_HEADER_LEN));
        }
        let version = if buf[0] == MAGIC_REQ_V1 {
            Version::V1
        } else {
            Version::V2
        };
        let op = Op::from_u8(buf[1]).ok_or(FrameError::UnknownOp(buf[1]))?;
        let mode = Mode::from_u8(buf[2]).ok_or(FrameError::UnknownMode(buf[2]))?;
        if buf[3] != 0 {
            return Err(FrameError::ReservedNotZero);
        }
        let h = RequestHeader {
            version,
            op,
            mode,
            flags: u16_at(buf, 4),
            key_len: u16_at(buf, 6),
            request_id: u32_at(buf, 8),
            meta_len: u32_at(buf, 12),
            length: u64_at(buf, 16),
            offset: u64_at(buf, 24),
            handle: u64_at(buf, 32),
        };
        if h.meta_len as usize > MAX_META_LEN {
            return Err(FrameError::MetaTooLarge(h.meta_len));
        }
        if h.key_len as usize > MAX_KEY_LEN {
            let skip = (h.frame_len() as u64).saturating_add(h.body_len());
            return Err(FrameError::KeyTooLong {
                len: h.key_len,
                skip,
            });
        }
        Ok(Decoded::Complete(h, REQUEST_HEADER_LEN))
    }
}

/// A decoded request: header plus borrowed key and raw metadata section.
///
/// The inline body (PUT in copy mode, HELLO's payload) is not part of it: it follows
/// `consumed` bytes into the buffer and is `header.body_len()` long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The fixed header.
    pub header: RequestHeader,
    /// The key, opaque bytes.
    pub key: &'a [u8],
    /// The raw metadata section; parse it with [`crate::Metadata::decode`].
    pub meta: &'a [u8],
}

/// Decodes one request (header, key, metadata) from the front of `buf`.
pub fn decode_request(buf: &[u8]) -> Result<Decoded<Request<'_>>, FrameError> {
    let header = match RequestHeader::decode(buf)? {
        Decoded::Complete(h, _) => h,
        Decoded::Incomplete(n) => return Ok(Decoded::Incomplete(n)),
    };
    let total = header.frame_len();
    if buf.len() < total {
        return Ok(Decoded::Incomplete(total));
    }
    let key_end = REQUEST_HEADER_LEN + header.key_len as usize;
    Ok(Decoded::Complete(
        Request {
            header,
            key: &buf[REQUEST_HEADER_LEN..key_end],
            meta: &buf[key_end..total],
        },
        total,
    ))
}

/// Appends a request frame (header, key, metadata) to `out`. `key_len` and `meta_len` in
/// `header` are overwritten from the slices. The caller appends any inline body.
///
/// Panics if `key` or `meta` exceed the wire's field widths (u16 / the meta limit);
/// callers validate user input against MAX_KEY_LEN first.
pub fn encode_request(header: &RequestHeader, key: &[u8], meta: &[u8], out: &mut Vec<u8>) {
    let mut h = *header;
    h.key_len = u16::try_from(key.len()).expect("key longer than u16::MAX");
    h.meta_len = u32::try_from(meta.len()).expect("metadata longer than u32::MAX");
    let mut head = [0u8; REQUEST_HEADER_LEN];
    h.encode(&mut head);
    out.reserve(REQUEST_HEADER_LEN + key.len() + meta.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(key);
    out.extend_from_slice(meta);
}

/// The fixed part of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Matches the request's version.
    pub version: Version,
    /// The outcome.
    pub status: Status,
    /// The mode the server used to deliver content (`None` when no content).
    pub mode: Mode,
    /// Response flags, see [`resp_flags`].
    pub flags: u16,
    /// Length of the UTF-8 error message that follows the header.
    pub msg_len: u16,
    /// The request's id.
    pub request_id: u32,
    /// Metadata section length.
    pub meta_len: u32,
    /// Content length: the inline body's length when BODY is set; with an fd, how many
    /// bytes of the fd the client should read, starting at `offset`.
    pub length: u64,
    /// Where in the fd the content starts (fd mode).
    pub offset: u64,
    /// PUT in fd mode: the staging handle to name in COMMIT or ABORT.
    pub handle: u64,
}

impl ResponseHeader {
    /// A header with `status` and every other field zero / none.
    pub fn new(version: Version, status: Status, request_id: u32) -> Self {
        ResponseHeader {
            version,
            status,
            mode: Mode::None,
            flags: 0,
            msg_len: 0,
            request_id,
            meta_len: 0,
            length: 0,
            offset: 0,
            handle: 0,
        }
    }

    /// Whether an fd travels with this header. The only way to know: never infer it.
    pub fn fd_attached(&self) -> bool {
        self.flags & resp_flags::FD_ATTACHED != 0
    }

    /// Whether `length` bytes of content follow inline.
    pub fn has_body(&self) -> bool {
        self.flags & resp_flags::BODY != 0
    }

    /// Bytes of inline body that follow the metadata section.
    pub fn body_len(&self) -> u64 {
        if self.has_body() {
            self.length
        } else {
            0
        }
    }

    /// Header + message + metadata.
    pub fn frame_len(&self) -> usize {
        RESPONSE_HEADER_LEN + self.msg_len as usize + self.meta_len as usize
    }

    /// Writes the 40 header bytes.
    pub fn encode(&self, out: &mut [u8; RESPONSE_HEADER_LEN]) {
        out[0] = self.version.response_magic();
        out[1] = self.status.as_u8();
        out[2] = self.mode.as_u8();
        out[3] = 0;
        out[4..6].copy_from_slice(&self.flags.to_le_bytes());
        out[6..8].copy_from_slice(&self.msg_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.request_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.meta_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.length.to_le_bytes());
        out[24..32].copy_from_slice(&self.offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.handle.to_le_bytes());
    }

    /// Decodes the 40 header bytes.
    pub fn decode(buf: &[u8]) -> Result<Decoded<ResponseHeader>, FrameError> {
        if let Some(&m) = buf.first() {
            if m != MAGIC_RESP_V1 && m != MAGIC_RESP_V2 {
                return Err(FrameError::BadMagic(m));
            }
        }
        if buf.len() < RESPONSE_HEADER_LEN {
            return Ok(Decoded::Incomplete(RESPONSE_HEADER_LEN));
        }
        let version = if buf[0] == MAGIC_RESP_V1 {
            Version::V1
        } else {
            Version::V2
        };
        let status = Status::from_u8(buf[1]).ok_or(FrameError::UnknownStatus(buf[1]))?;
        let mode = Mode::from_u8(buf[2]).ok_or(FrameError::UnknownMode(buf[2]))?;
        if buf[3] != 0 {
            return Err(FrameError::ReservedNotZero);
        }
        let h = ResponseHeader {
            version,
            status,
            mode,
            flags: u16_at(buf, 4),
            msg_len: u16_at(buf, 6),
            request_id: u32_at(buf, 8),
            meta_len: u32_at(buf, 12),
            length: u64_at(buf, 16),
            offset: u64_at(buf, 24),
            handle: u64_at(buf, 32),
        };
        if h.flags & !resp_flags::KNOWN != 0 {
            return Err(FrameError::UnknownResponseFlags(h.flags));
        }
        if h.msg_len as usize > MAX_MESSAGE_LEN {
            return Err(FrameError::MessageTooLong(h.msg_len));
        }
        if h.meta_len as usize > MAX_META_LEN {
            return Err(FrameError::MetaTooLarge(h.meta_len));
        }
        Ok(Decoded::Complete(h, RESPONSE_HEADER_LEN))
    }
}

/// A decoded response: header plus borrowed message and raw metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The fixed header.
    pub header: ResponseHeader,
    /// The error message (empty on success). Invalid UTF-8 is kept as raw bytes.
    pub message: &'a [u8],
    /// The raw metadata section.
    pub meta: &'a [u8],
}

impl Response<'_> {
    /// The message as text, with invalid UTF-8 replaced.
    pub fn message_text(&self) -> String {
        String::from_utf8_lossy(self.message).into_owned()
    }
}

/// Decodes one response (header, message, metadata) from the front of `buf`.
pub fn decode_response(buf: &[u8]) -> Result<Decoded<Response<'_>>, FrameError> {
    let header = match ResponseHeader::decode(buf)? {
        Decoded::Complete(h, _) => h,
        Decoded::Incomplete(n) => return Ok(Decoded::Incomplete(n)),
    };
    let total = header.frame_len();
    if buf.len() < total {
        return Ok(Decoded::Incomplete(total));
    }
    let msg_end = RESPONSE_HEADER_LEN + header.msg_len as usize;
    Ok(Decoded::Complete(
        Response {
            header,
            message: &buf[RESPONSE_HEADER_LEN..msg_end],
            meta: &buf[msg_end..total],
        },
        total,
    ))
}

/// Appends a response frame (header, message, metadata) to `out`. `msg_len` and
/// `meta_len` are set from the slices; a message over MAX_MESSAGE_LEN is cut at a
/// character boundary. The caller appends any inline body.
pub fn encode_response(header: &ResponseHeader, message: &str, meta: &[u8], out: &mut Vec<u8>) {
    let message = truncate_utf8(message, MAX_MESSAGE_LEN);
    let mut h = *header;
    h.msg_len = message.len() as u16;
    h.meta_len = u32::try_from(meta.len()).expect("metadata longer than u32::MAX");
    let mut head = [0u8; RESPONSE_HEADER_LEN];
    h.encode(&mut head);
    out.reserve(RESPONSE_HEADER_LEN + message.len() + meta.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(meta);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks the parts of a request that the header alone cannot: the key, the flags, and
/// which fields apply to the op. Returns the status and a message for the client.
pub fn validate_request(req: &Request<'_>) -> Result<(), (Status, String)> {
    let h = &req.header;
    let bad = |m: String| Err((Status::BadRequest, m));
    if h.flags & !req_flags::KNOWN != 0 {
        return bad(format!(
            "unknown request flags 0x{:04x}",
            h.flags & !req_flags::KNOWN
        ));
    }
    let allowed = match h.op {
        Op::Put | Op::Commit => req_flags::PUT_FLAGS,
        Op::Delete => req_flags::DELETE_FLAGS,
        _ => req_flags::OTHER_FLAGS,
    };
    if h.flags & !allowed != 0 {
        return bad(format!(
            "request flags 0x{:04x} do not apply to {}",
            h.flags & !allowed,
            h.op
        ));
    }
    if h.has_flag(req_flags::DURABLE) && h.has_flag(req_flags::EPHEMERAL) {
        return bad(
            "DURABLE and EPHEMERAL contradict each other: an ephemeral object is never \
             written to disk"
                .into(),
        );
    }
    if h.has_flag(req_flags::IF_VERSION) && h.has_flag(req_flags::IF_ABSENT) {
        return bad("IF_VERSION and IF_ABSENT contradict each other".into());
    }
    if h.has_flag(req_flags::ORDERED) && h.version == Version::V1 {
        return bad("ORDERED is a V2 flag; V1 replies are always in order".into());
    }
    let needs_key = matches!(
        h.op,
        Op::Get | Op::Head | Op::Put | Op::Delete | Op::Pin | Op::Unpin | Op::Ban
    );
    if needs_key && req.key.is_empty() {
        return bad(if h.op == Op::Ban {
            "BAN needs a ban expression in the key field".into()
        } else {
            format!("{} needs a non-empty key", h.op)
        });
    }
    if !needs_key && !req.key.is_empty() {
        return bad(format!("{} takes no key", h.op));
    }
    let moves_bytes = matches!(h.op, Op::Get | Op::Put);
    if moves_bytes && h.mode == Mode::None {
        return bad(if h.op == Op::Get {
            "GET needs a transfer mode (fd, copy, splice or auto)".to_string()
        } else {
            "PUT needs a transfer mode (fd, copy or splice)".to_string()
        });
    }
    if !moves_bytes && h.mode != Mode::None {
        return bad(format!("{} moves no bytes; its mode must be none", h.op));
    }
    if matches!(h.op, Op::Commit | Op::Abort) == (h.handle == 0) {
        return bad(if h.handle == 0 {
            format!("{} needs the handle from the PUT response", h.op)
        } else {
            format!("{} takes no handle", h.op)
        });
    }
    let takes_meta = matches!(h.op, Op::Put | Op::Commit);
    if !takes_meta && !req.meta.is_empty() {
        return bad(format!("{} takes no metadata", h.op));
    }
    let hello_max = (crate::hello::HELLO_LEN + crate::hello::HELLO_TOKEN_MAX) as u64;
    if h.op == Op::Hello && !(crate::hello::HELLO_LEN as u64..=hello_max).contains(&h.length) {
        return bad(format!(
            "HELLO's length must be {} (its fixed body) plus at most {} token bytes",
            crate::hello::HELLO_LEN,
            crate::hello::HELLO_TOKEN_MAX
        ));
    }
    if !matches!(h.op, Op::Get | Op::Put | Op::Commit | Op::Hello) && h.length != 0 {
        return bad(format!("{} takes no length", h.op));
    }
    let takes_offset = h.op == Op::Get
        || (matches!(h.op, Op::Put | Op::Commit | Op::Delete) && h.has_flag(req_flags::IF_VERSION));
    if !takes_offset && h.offset != 0 {
        return bad(format!("{} takes no offset", h.op));
    }
    Ok(())
}
