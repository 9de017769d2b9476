//! Journal record codec: pure functions over byte buffers.
//!
//! A journal (format 3) starts with a 24-byte file header
//!
//! ```text
//! [magic "OBJMJRN3"][salt u64 LE][xxh3-64 of the 16 bytes before, LE]
//! ```
//!
//! followed by records, each framed as
//!
//! ```text
//! [sync "\xa5JR3"][check u32 LE][len u32 LE][type u8][payload]
//! ```
//!
//! where `len` counts the bytes after the 12-byte header (`type` + `payload`)
//! and `check` is the low 32 bits of xxh3-64, seeded with the journal's salt,
//! over `len` and the body (bytes 8.. of the record). The sync marker lets
//! replay find the next record after a damaged one; the salted check means a
//! record embedded in a metadata value (client-chosen bytes) can never be
//! mistaken for a real one. Payload layouts are documented on [`TYPE_PUT`],
//! [`TYPE_DEL`] and [`TYPE_RESERVE`] and, normatively, in `docs/STORAGE.md`.
//!
//! Journals written before format 3 ([`Framing::Legacy`]) have no file header and
//! frame records as `[len u32][crc u32][type][payload]` (crc: low 32 bits of the
//! unseeded xxh3-64 of the body); they are still read, and rewritten at open.
//!
//! Decoding never panics and never allocates more than the (capped) record
//! length, whatever the input.

use std::fmt;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::meta::ObjectMeta;
use crate::{MAX_KEY_LEN, MAX_META_LEN};

/// Size of the record header (`sync` + `check` + `len`).
pub const HEADER_LEN: usize = 12;
/// Size of a legacy (format 2) record header (`len` + `crc`).
pub const LEGACY_HEADER_LEN: usize = 8;
/// The sync marker every record starts with.
pub const RECORD_SYNC: [u8; 4] = *b"\xa5JR3";
/// The journal file's magic.
pub const FILE_MAGIC: [u8; 8] = *b"OBJMJRN3";
/// Size of the journal file header (magic, salt, checksum); records follow it.
pub const FILE_HEADER_LEN: usize = 24;

/// PUT record type. Payload:
///
/// ```text
/// version  u64 LE
/// size     u64 LE
/// mtime_ns u64 LE
/// checksum u64 LE      xxh3-64 of the object bytes
/// expires  u64 LE      expiry in unix seconds; 0 = never
/// flags    u8          bit 0 pinned, bit 1 ephemeral, bit 2 filled; other bits 0
/// key_len  u16 LE      1..=4096
/// key      [key_len]
/// -- metadata section (at most MAX_META_LEN bytes) --
/// ct_len   u16 LE      0xFFFF = no content type
/// ct       [ct_len]    UTF-8
/// n_custom u16 LE
/// n_custom times:
///   name_len u16 LE, name [name_len] (UTF-8), val_len u32 LE, val [val_len]
/// ```
pub const TYPE_PUT: u8 = 1;
/// DEL record type. Payload: `version u64 LE, key_len u16 LE, key [key_len]`.
/// Removes the key's entry if (and only if) it has that version.
pub const TYPE_DEL: u8 = 2;
/// RESERVE record type. Payload: `upto u64 LE`: versions up to and including
/// `upto` may have been handed out.
pub const TYPE_RESERVE: u8 = 3;

/// Fixed-size part of a PUT payload (five u64, flags, key_len).
pub(crate) const PUT_FIXED_LEN: usize = 8 * 5 + 1 + 2;
/// PUT flag: the object is pinned (never evicted).
pub(crate) const FLAG_PINNED: u8 = 0x01;
/// PUT flag: the object lives in the memory tier only.
pub(crate) const FLAG_EPHEMERAL: u8 = 0x02;
/// PUT flag: a copy of the cold tier's version (a fill), not a write made here.
pub(crate) const FLAG_FILLED: u8 = 0x04;
/// Largest acceptable value of the `len` header field.
pub const MAX_BODY_LEN: usize = 1 + PUT_FIXED_LEN + MAX_KEY_LEN + MAX_META_LEN;
/// Largest encoded record (header included).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_BODY_LEN;
/// Encoded length of a RESERVE record.
pub const RESERVE_RECORD_LEN: usize = HEADER_LEN + 1 + 8;
/// `ct_len` value meaning "no content type".
const CT_ABSENT: u16 = 0xFFFF;

/// A record to encode, borrowing its data.
#[derive(Clone, Copy, Debug)]
pub enum RecordRef<'a> {
    /// A committed object version.
    Put(&'a ObjectMeta),
    /// Deletion of `key` at `version`.
    Del {
        /// Key being deleted.
        key: &'a [u8],
        /// Version being deleted.
        version: u64,
    },
    /// Version reservation.
    Reserve {
        /// Versions up to and including this may have been handed out.
        upto: u64,
    },
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A committed object version.
    Put(ObjectMeta),
    /// Deletion of `key` at `version`.
    Del {
        /// Deleted key.
        key: Box<[u8]>,
        /// Deleted version.
        version: u64,
    },
    /// Version reservation.
    Reserve {
        /// Versions up to and including this may have been handed out.
        upto: u64,
    },
}

/// Result of [`decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete, valid record occupying the first `len` bytes of the input.
    Record {
        /// The record.
        record: Record,
        /// Number of input bytes it occupies (header included).
        len: usize,
    },
    /// The input ends before the record does (a torn tail, or more input is needed).
    Incomplete,
    /// The input does not start with a valid record.
    Corrupt(Corruption),
}

/// Why a record is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The length field is 0 or larger than [`MAX_BODY_LEN`].
    BadLength(u32),
    /// The crc does not match.
    ChecksumMismatch,
    /// Unknown record type.
    UnknownType(u8),
    /// The crc matched but the payload is malformed.
    BadPayload(&'static str),
    /// The record does not start with [`RECORD_SYNC`].
    NoSync,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadLength(n) => write!(f, "invalid record length {n}"),
            Corruption::ChecksumMismatch => f.write_str("record checksum mismatch"),
            Corruption::UnknownType(t) => write!(f, "unknown record type {t}"),
            Corruption::BadPayload(what) => write!(f, "malformed record payload: {what}"),
            Corruption::NoSync => f.write_str("no record sync marker"),
        }
    }
}

/// Why a record cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Key empty or longer than [`MAX_KEY_LEN`].
    #[error("invalid key length {0}")]
    InvalidKey(usize),
    /// Encoded metadata longer than [`MAX_META_LEN`].
    #[error("metadata of {0} bytes exceeds {max}", max = MAX_META_LEN)]
    MetaTooLarge(usize),
}

/// Encoded size of a metadata section holding `content_type` and `custom`.
pub fn meta_len<'a>(
    content_type: Option<&str>,
    custom: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> usize {
    let ct = content_type.map_or(0, str::len);
    let custom: usize = custom
        .into_iter()
        .map(|(n, v)| 2 + n.len() + 4 + v.len())
        .sum();
    2 + ct + 2 + custom
}

fn object_meta_len(m: &ObjectMeta) -> usize {
    meta_len(
        m.content_type.as_deref(),
        m.custom.iter().map(|(n, v)| (&**n, &**v)),
    )
}

/// Encoded length (header included) of the PUT record for `m`.
pub fn put_record_len(m: &ObjectMeta) -> usize {
    HEADER_LEN + 1 + PUT_FIXED_LEN + m.key.len() + object_meta_len(m)
}

/// Appends the encoding of `rec` (format 3, checked with `salt`) to `out` and
/// returns its length. On error `out` is left unchanged.
pub fn encode(rec: RecordRef<'_>, salt: u64, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let start = out.len();
    match rec {
        RecordRef::Put(m) => {
            out.reserve(put_record_len(m));
            out.extend_from_slice(&[0; HEADER_LEN]);
            out.push(TYPE_PUT);
            if let Err(e) = encode_put_payload(m, out) {
                out.truncate(start);
                return Err(e);
            }
        }
        RecordRef::Del { key, version } => {
            check_key(key)?;
            out.extend_from_slice(&[0; HEADER_LEN]);
            out.push(TYPE_DEL);
            out.extend_from_slice(&version.to_le_bytes());
            put_u16(out, key.len());
            out.extend_from_slice(key);
        }
        RecordRef::Reserve { upto } => {
            out.extend_from_slice(&[0; HEADER_LEN]);
            out.push(TYPE_RESERVE);
            out.extend_from_slice(&upto.to_le_bytes());
        }
    }
    finish_header(out, start, salt);
    Ok(out.len() - start)
}

/// Appends the payload of the PUT record for `m` (everything after the type
/// byte). This is also the packed form of an index entry.
pub(crate) fn encode_put_payload(m: &ObjectMeta, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    check_key(&m.key)?;
    let ml = object_meta_len(m);
    if ml > MAX_META_LEN {
        return Err(EncodeError::MetaTooLarge(ml));
    }
    // One allocation, not a growth step per field.
    out.reserve(PUT_FIXED_LEN + m.key.len() + ml);
    for v in [
        m.version,
        m.size,
        m.mtime_ns,
        m.checksum,
        m.expires_at.unwrap_or(0),
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut flags = 0;
    if m.pinned {
        flags |= FLAG_PINNED;
    }
    if m.ephemeral {
        flags |= FLAG_EPHEMERAL;
    }
    if m.filled {
        flags |= FLAG_FILLED;
    }
    out.push(flags);
    put_u16(out, m.key.len());
    out.extend_from_slice(&m.key);
    match &m.content_type {
        None => out.extend_from_slice(&CT_ABSENT.to_le_bytes()),
        Some(ct) => {
            put_u16(out, ct.len());
            out.extend_from_slice(ct.as_bytes());
        }
    }
    put_u16(out, m.custom.len());
    for (name, val) in &m.custom {
        put_u16(out, name.len());
        out.extend_from_slice(name.as_bytes());
        // Bounded by MAX_META_LEN, checked above.
        out.extend_from_slice(&(val.len() as u32).to_le_bytes());
        out.extend_from_slice(val);
    }
    Ok(())
}

/// Appends a PUT record whose payload was produced by [`encode_put_payload`].
pub(crate) fn encode_put_raw(payload: &[u8], salt: u64, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(TYPE_PUT);
    out.extend_from_slice(payload);
    finish_header(out, start, salt);
    out.len() - start
}

/// Fills in `sync`, `check` and `len` of the record starting at `start`.
fn finish_header(out: &mut [u8], start: usize, salt: u64) {
    let body_len = (out.len() - start - HEADER_LEN) as u32;
    out[start..start + 4].copy_from_slice(&RECORD_SYNC);
    out[start + 8..start + 12].copy_from_slice(&body_len.to_le_bytes());
    let check = xxh3_64_with_seed(&out[start + 8..], salt) as u32;
    out[start + 4..start + 8].copy_from_slice(&check.to_le_bytes());
}

/// The journal file header for `salt`.
pub fn encode_file_header(salt: u64) -> [u8; FILE_HEADER_LEN] {
    let mut b = [0; FILE_HEADER_LEN];
    b[..8].copy_from_slice(&FILE_MAGIC);
    b[8..16].copy_from_slice(&salt.to_le_bytes());
    let sum = xxh3_64(&b[..16]);
    b[16..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// The salt of a valid journal file header at the start of `buf`.
pub fn decode_file_header(buf: &[u8]) -> Option<u64> {
    let b = buf.get(..FILE_HEADER_LEN)?;
    let salt = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let sum = u64::from_le_bytes(b[16..24].try_into().ok()?);
    (b[..8] == FILE_MAGIC && xxh3_64(&b[..16]) == sum).then_some(salt)
}

/// How a journal's records are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Format 3: sync marker, salted check, length.
    V3 {
        /// The journal's salt (from its file header).
        salt: u64,
    },
    /// Format 2 (no file header): length, unseeded crc.
    Legacy,
}

impl Framing {
    /// Offset of the first record in a journal of this framing.
    pub fn first_record(self) -> usize {
        match self {
            Framing::V3 { .. } => FILE_HEADER_LEN,
            Framing::Legacy => 0,
        }
    }

    /// Position in `buf` of the first place a record could start, if any:
    /// the next sync marker (format 3), or any offset (legacy).
    pub fn next_candidate(self, buf: &[u8]) -> Option<usize> {
        match self {
            Framing::V3 { .. } => buf
                .windows(RECORD_SYNC.len())
                .position(|w| w == RECORD_SYNC),
            Framing::Legacy => (!buf.is_empty()).then_some(0),
        }
    }

    /// Decodes the record at the start of `buf`.
    pub fn decode(self, buf: &[u8]) -> Decoded {
        to_decoded(self.decode_raw(buf))
    }

    pub(crate) fn decode_raw(
        self,
        buf: &[u8],
    ) -> Result<Option<(RawRecord<'_>, usize)>, Corruption> {
        match self {
            Framing::V3 { salt } => decode_raw(buf, salt),
            Framing::Legacy => decode_raw_legacy(buf),
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), EncodeError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        Err(EncodeError::InvalidKey(key.len()))
    } else {
        Ok(())
    }
}

/// Only called with values checked to fit (key ≤ 4096, meta ≤ 64 KiB).
fn put_u16(out: &mut Vec<u8>, v: usize) {
    debug_assert!(v <= u16::MAX as usize);
    out.extend_from_slice(&(v as u16).to_le_bytes());
}

/// Decodes the format-3 record at the start of `buf`, checked with `salt`.
pub fn decode(buf: &[u8], salt: u64) -> Decoded {
    to_decoded(decode_raw(buf, salt))
}

fn to_decoded(r: Result<Option<(RawRecord<'_>, usize)>, Corruption>) -> Decoded {
    match r {
        Ok(None) => Decoded::Incomplete,
        Err(c) => Decoded::Corrupt(c),
        Ok(Some((rec, len))) => {
            let record = match rec {
                RawRecord::Put(payload, _) => match decode_put_payload(payload) {
                    Ok(m) => Record::Put(m),
                    Err(c) => return Decoded::Corrupt(c),
                },
                RawRecord::Del { key, version } => Record::Del {
                    key: Box::from(key),
                    version,
                },
                RawRecord::Reserve { upto } => Record::Reserve { upto },
            };
            Decoded::Record { record, len }
        }
    }
}

/// A validated PUT payload, borrowing the record bytes (no allocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PutView<'a> {
    pub(crate) version: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: u64,
    pub(crate) checksum: u64,
    pub(crate) expires: u64,
    pub(crate) flags: u8,
    pub(crate) key: &'a [u8],
    pub(crate) content_type: Option<&'a str>,
    n_custom: usize,
    /// The custom pairs, already validated.
    custom: &'a [u8],
}

/// Validates a PUT payload (as produced by [`encode_put_payload`]) without
/// allocating: every length, the UTF-8 of names and the content type, the
/// metadata limit and trailing bytes are checked.
pub(crate) fn view_put_payload(payload: &[u8]) -> Result<PutView<'_>, Corruption> {
    let mut r = Reader(payload);
    let version = r.u64()?;
    let size = r.u64()?;
    let mtime_ns = r.u64()?;
    let checksum = r.u64()?;
    let expires = r.u64()?;
    let flags = r.array::<1>()?[0];
    if flags & !(FLAG_PINNED | FLAG_EPHEMERAL | FLAG_FILLED) != 0 {
        return Err(Corruption::BadPayload("unknown flags"));
    }
    let key = r.key_ref()?;
    let meta_start = r.0.len();
    let ct_len = r.u16()?;
    let content_type = if ct_len == CT_ABSENT {
        None
    } else {
        Some(r.str_ref(ct_len as usize)?)
    };
    let n_custom = r.u16()? as usize;
    let custom = r.0;
    for _ in 0..n_custom {
        let name_len = r.u16()? as usize;
        r.str_ref(name_len)?;
        let val_len = r.u32()? as usize;
        r.bytes(val_len)?;
    }
    let custom = &custom[..custom.len() - r.0.len()];
    if meta_start - r.0.len() > MAX_META_LEN {
        return Err(Corruption::BadPayload("metadata too large"));
    }
    if version == 0 {
        return Err(Corruption::BadPayload("version 0"));
    }
    if !r.0.is_empty() {
        return Err(Corruption::BadPayload("trailing bytes"));
    }
    Ok(PutView {
        version,
        size,
        mtime_ns,
        checksum,
        expires,
        flags,
        key,
        content_type,
        n_custom,
        custom,
    })
}

/// Decodes a PUT payload (as produced by [`encode_put_payload`]).
pub(crate) fn decode_put_payload(payload: &[u8]) -> Result<ObjectMeta, Corruption> {
    let v = view_put_payload(payload)?;
    let mut r = Reader(v.custom);
    let mut custom = Vec::with_capacity(v.n_custom);
    for _ in 0..v.n_custom {
        // Validated by `view_put_payload`.
        let name_len = r.u16()? as usize;
        let name = r.str_ref(name_len)?;
        let val_len = r.u32()? as usize;
        custom.push((Box::from(name), Box::from(r.bytes(val_len)?)));
    }
    Ok(ObjectMeta {
        key: Box::from(v.key),
        version: v.version,
        size: v.size,
        mtime_ns: v.mtime_ns,
        checksum: v.checksum,
        content_type: v.content_type.map(Box::from),
        custom,
        expires_at: (v.expires != 0).then_some(v.expires),
        pinned: v.flags & FLAG_PINNED != 0,
        ephemeral: v.flags & FLAG_EPHEMERAL != 0,
        filled: v.flags & FLAG_FILLED != 0,
        ..ObjectMeta::default()
    })
}

/// A validated record borrowing the input, for replay without allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RawRecord<'a> {
    /// A PUT: its whole payload (the packed index entry) and its parts.
    Put(&'a [u8], PutView<'a>),
    /// A DEL.
    Del { key: &'a [u8], version: u64 },
    /// A RESERVE.
    Reserve { upto: u64 },
}

/// Like [`decode`], borrowing: `Ok(None)` = incomplete.
pub(crate) fn decode_raw(
    buf: &[u8],
    salt: u64,
) -> Result<Option<(RawRecord<'_>, usize)>, Corruption> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return match buf.len().min(RECORD_SYNC.len()) {
            n if buf[..n] == RECORD_SYNC[..n] => Ok(None),
            _ => Err(Corruption::NoSync),
        };
    };
    if header[..4] != RECORD_SYNC {
        return Err(Corruption::NoSync);
    }
    let check = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len == 0 || len as usize > MAX_BODY_LEN {
        return Err(Corruption::BadLength(len));
    }
    let total = HEADER_LEN + len as usize;
    let Some(checked) = buf.get(8..total) else {
        return Ok(None);
    };
    if xxh3_64_with_seed(checked, salt) as u32 != check {
        return Err(Corruption::ChecksumMismatch);
    }
    parse_body(&buf[HEADER_LEN..total]).map(|rec| Some((rec, total)))
}

/// Decodes a legacy (format 2) record: `[len u32][crc u32][body]`.
pub(crate) fn decode_raw_legacy(buf: &[u8]) -> Result<Option<(RawRecord<'_>, usize)>, Corruption> {
    let Some(header) = buf.get(..LEGACY_HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len as usize > MAX_BODY_LEN {
        return Err(Corruption::BadLength(len));
    }
    let total = LEGACY_HEADER_LEN + len as usize;
    let Some(body) = buf.get(LEGACY_HEADER_LEN..total) else {
        return Ok(None);
    };
    if xxh3_64(body) as u32 != crc {
        return Err(Corruption::ChecksumMismatch);
    }
    parse_body(body).map(|rec| Some((rec, total)))
}

/// Parses a record body (`type` + payload) whose check already matched.
fn parse_body(body: &[u8]) -> Result<RawRecord<'_>, Corruption> {
    let payload = &body[1..];
    let rec = match body[0] {
        TYPE_PUT => RawRecord::Put(payload, view_put_payload(payload)?),
        TYPE_DEL => {
            let mut r = Reader(payload);
            let version = r.u64()?;
            let key = r.key_ref()?;
            if !r.0.is_empty() {
                return Err(Corruption::BadPayload("trailing bytes"));
            }
            RawRecord::Del { key, version }
        }
        TYPE_RESERVE => {
            let mut r = Reader(payload);
            let upto = r.u64()?;
            if !r.0.is_empty() {
                return Err(Corruption::BadPayload("trailing bytes"));
            }
            RawRecord::Reserve { upto }
        }
        other => return Err(Corruption::UnknownType(other)),
    };
    Ok(rec)
}

/// Bounds-checked little-endian reader over a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        if self.0.len() < n {
            return Err(Corruption::BadPayload("truncated payload"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corruption> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, Corruption> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, Corruption> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, Corruption> {
        self.array().map(u64::from_le_bytes)
    }
    fn key_ref(&mut self) -> Result<&'a [u8], Corruption> {
        let len = self.u16()? as usize;
        if len == 0 || len > MAX_KEY_LEN {
            return Err(Corruption::BadPayload("invalid key length"));
        }
        self.bytes(len)
    }
    fn str_ref(&mut self, n: usize) -> Result<&'a str, Corruption> {
        std::str::from_utf8(self.bytes(n)?).map_err(|_| Corruption::BadPayload("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests;
