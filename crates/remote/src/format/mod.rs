//! The remote object format (docs/STORAGE.md, "The remote tier"): object names, the
//! header every remote object starts with, the record it carries, and the events of
//! the invalidation log. Pure encode/decode, no I/O.

use std::cmp::Ordering;
use std::fmt;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

/// The longest key (as the store's `MAX_KEY_LEN`).
pub const MAX_KEY_LEN: usize = 4096;
/// The largest metadata section: content type and custom pairs (as the store's
/// `MAX_META_LEN`).
pub const MAX_META_LEN: usize = 64 * 1024;
/// The longest host id.
pub const MAX_HOST_LEN: usize = 64;
/// No header is longer: fixed fields, host id, body reference, the record at its
/// largest and the checksum, rounded up.
pub const MAX_HEADER_LEN: usize = 80 * 1024;

/// First bytes of every remote object.
pub const MAGIC: [u8; 8] = *b"OBJMREMT";
/// First bytes of every event of the invalidation log.
pub const EVENT_MAGIC: [u8; 8] = *b"OBJMREVT";
/// The format version this code writes and reads.
pub const FORMAT: u16 = 1;
/// Bytes before the variable part of a header.
pub const FIXED_LEN: usize = 24;
const FLAG_PINNED: u8 = 0x01;
const FLAG_EPHEMERAL: u8 = 0x02;
const CT_ABSENT: u16 = 0xFFFF;

/// Which host wrote something: 1..=64 bytes of `[A-Za-z0-9._-]`, so that it can
/// appear in object names and S3 metadata as it is.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(String);

impl HostId {
    /// Checks and wraps a host id.
    pub fn new(id: impl Into<String>) -> Result<Self, String> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_HOST_LEN {
            return Err(format!(
                "a host id has 1 to {MAX_HOST_LEN} bytes, not {}",
                id.len()
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "a host id may hold only letters, digits, '.', '_' and '-', not {c:?}"
            ));
        }
        Ok(HostId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When and where a version, delete or purge happened. Stamps are totally ordered:
/// by time, then by host id (bytewise). **The larger stamp wins**: a version replaces
/// the remote copy only if its stamp is larger than the copy's (or the tombstone's),
/// and a purge covers the objects whose stamps are smaller than its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch (the commit time, on the writing host's clock).
    pub time_ns: u64,
    /// The writing host.
    pub host: HostId,
}

impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time_ns, self.host.as_str().as_bytes())
            .cmp(&(other.time_ns, other.host.as_str().as_bytes()))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.time_ns, self.host)
    }
}

/// An object's record: the fields of the store's label and journal `PUT` record,
/// encoded exactly as that record's payload (docs/STORAGE.md, "`PUT` (type 1)").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The object's key (opaque bytes, 1..=4096).
    pub key: Vec<u8>,
    /// The writing store's version number (meaningful on that host only; a reader
    /// assigns its own).
    pub version: u64,
    /// The object's length in bytes.
    pub size: u64,
    /// When the object's file was written, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// xxh3-64 of the object's bytes.
    pub checksum: u64,
    /// Expiry in unix seconds: from then on the object is never served.
    pub expires_at: Option<u64>,
    /// Never evicted.
    pub pinned: bool,
    /// Memory only (the remote tier never holds such objects; the flag travels as is).
    pub ephemeral: bool,
    /// The MIME type, if any.
    pub content_type: Option<String>,
    /// Custom metadata pairs, in order.
    pub custom: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// Whether the object has expired at `now` (unix seconds).
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    fn meta_len(&self) -> usize {
        let ct = self.content_type.as_deref().map_or(0, str::len);
        let custom: usize = self
            .custom
            .iter()
            .map(|(n, v)| 2 + n.len() + 4 + v.len())
            .sum();
        2 + ct + 2 + custom
    }

    /// Checks the limits the encoding needs.
    pub fn validate(&self) -> Result<(), String> {
        check_key(&self.key)?;
        if self.version == 0 {
            return Err("a record's version is at least 1".into());
        }
        let ml = self.meta_len();
        if ml > MAX_META_LEN {
            return Err(format!(
                "metadata of {ml} bytes exceeds the {MAX_META_LEN}-byte limit"
            ));
        }
        if self
            .content_type
            .as_deref()
            .is_some_and(|c| c.len() >= CT_ABSENT as usize)
        {
            return Err("content type too long".into());
        }
        if self.custom.len() > u16::MAX as usize
            || self.custom.iter().any(|(n, _)| n.len() > u16::MAX as usize)
        {
            return Err("too many or too long custom metadata names".into());
        }
        Ok(())
    }

    /// Appends the record's encoding (the journal `PUT` payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        self.validate()?;
        for v in [
            self.version,
            self.size,
            self.mtime_ns,
            self.checksum,
            self.expires_at.unwrap_or(0),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut flags = 0;
        if self.pinned {
            flags |= FLAG_PINNED;
        }
        if self.ephemeral {
            flags |= FLAG_EPHEMERAL;
        }
        out.push(flags);
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.key);
        match &self.content_type {
            None => out.extend_from_slice(&CT_ABSENT.to_le_bytes()),
            Some(ct) => {
                out.extend_from_slice(&(ct.len() as u16).to_le_bytes());
                out.extend_from_slice(ct.as_bytes());
            }
        }
        out.extend_from_slice(&(self.custom.len() as u16).to_le_bytes());
        for (name, val) in &self.custom {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(val.len() as u32).to_le_bytes());
            out.extend_from_slice(val);
        }
        Ok(())
    }

    /// Decodes a record; every length, the UTF-8, the limits and trailing bytes are
    /// checked.
    pub fn decode(buf: &[u8]) -> Result<Record, &'static str> {
        let mut r = Reader(buf);
        let version = r.u64()?;
        let size = r.u64()?;
        let mtime_ns = r.u64()?;
        let checksum = r.u64()?;
        let expires = r.u64()?;
        let flags = r.u8()?;
        if flags & !(FLAG_PINNED | FLAG_EPHEMERAL) != 0 {
            return Err("unknown flags");
        }
        let key_len = r.u16()? as usize;
        let key = r.bytes(key_len)?.to_vec();
        check_key(&key).map_err(|_| "bad key length")?;
        let meta_start = r.0.len();
        let ct_len = r.u16()?;
        let content_type = if ct_len == CT_ABSENT {
            None
        } else {
            Some(r.string(ct_len as usize)?)
        };
        let n = r.u16()? as usize;
        let mut custom = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let nl = r.u16()? as usize;
            let name = r.string(nl)?;
            let vl = r.u32()? as usize;
            custom.push((name, r.bytes(vl)?.to_vec()));
        }
        if meta_start - r.0.len() > MAX_META_LEN {
            return Err("metadata too large");
        }
        if version == 0 {
            return Err("version 0");
        }
        if !r.0.is_empty() {
            return Err("trailing bytes in the record");
        }
        Ok(Record {
            key,
            version,
            size,
            mtime_ns,
            checksum,
            expires_at: (expires != 0).then_some(expires),
            pinned: flags & FLAG_PINNED != 0,
            ephemeral: flags & FLAG_EPHEMERAL != 0,
            content_type,
            custom,
        })
    }
}

fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "a key has 1 to {MAX_KEY_LEN} bytes, not {}",
            key.len()
        ));
    }
    Ok(())
}

/// What a remote object at a key's name is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The object's bytes follow the header.
    Inline(Record),
    /// The object's bytes are in another remote object (named relative to the
    /// prefix, always [`data_name`] of the key and the stamp), written first, whose own header is an `Inline` one with the same
    /// record and stamp. Used for objects uploaded in multipart, which cannot be
    /// written conditionally.
    Pointer(Record, String),
    /// The key was deleted at the stamp.
    Tombstone(Vec<u8>),
}

impl Body {
    /// The key.
    pub fn key(&self) -> &[u8] {
        match self {
            Body::Inline(r) | Body::Pointer(r, _) => &r.key,
            Body::Tombstone(k) => k,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Body::Inline(_) => 1,
            Body::Pointer(..) => 2,
            Body::Tombstone(_) => 3,
        }
    }
}

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// When and where it was committed.
    pub stamp: Stamp,
    /// What it is.
    pub body: Body,
}

impl Header {
    /// Encodes the header (every byte before the object's bytes).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.push(self.body.kind());
        out.push(0);
        out.extend_from_slice(&[0; 4]); // header_len, below
        out.extend_from_slice(&self.stamp.time_ns.to_le_bytes());
        let host = self.stamp.host.as_str().as_bytes();
        out.push(host.len() as u8);
        out.extend_from_slice(host);
        let body_ref: &[u8] = match &self.body {
            Body::Pointer(_, name) => name.as_bytes(),
            _ => &[],
        };
        if body_ref.len() > 1024 {
            return Err("body reference too long".into());
        }
        out.extend_from_slice(&(body_ref.len() as u16).to_le_bytes());
        out.extend_from_slice(body_ref);
        let mut rec = Vec::new();
        match &self.body {
            Body::Inline(r) | Body::Pointer(r, _) => r.encode(&mut rec)?,
            Body::Tombstone(key) => {
                check_key(key)?;
                rec.extend_from_slice(&(key.len() as u16).to_le_bytes());
                rec.extend_from_slice(key);
            }
        }
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&rec);
        let len = out.len() + 8;
        out[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// The header's length as its first 16 bytes say, checked against the bounds;
    /// `buf` holds at least [`FIXED_LEN`] bytes.
    pub fn peek_len(buf: &[u8]) -> Result<usize, &'static str> {
        if buf.len() < 16 || buf[..8] != MAGIC {
            return Err("not a remote object of objmapper (bad magic)");
        }
        let format = u16::from_le_bytes([buf[8], buf[9]]);
        if format != FORMAT {
            return Err("unknown format version");
        }
        let len = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
        if !(FIXED_LEN + 1 + 2 + 4 + 8..=MAX_HEADER_LEN).contains(&len) {
            return Err("header length out of range");
        }
        Ok(len)
    }

    /// Decodes a whole header (exactly `peek_len` bytes) and checks its checksum.
    pub fn decode(buf: &[u8]) -> Result<Header, &'static str> {
        let len = Header::peek_len(buf)?;
        if buf.len() != len {
            return Err("header truncated");
        }
        let sum = u64::from_le_bytes(buf[len - 8..].try_into().expect("8 bytes"));
        if xxh3_64(&buf[..len - 8]) != sum {
            return Err("header checksum mismatch");
        }
        let kind = buf[10];
        if buf[11] != 0 {
            return Err("reserved byte is not 0");
        }
        let mut r = Reader(&buf[16..len - 8]);
        let time_ns = r.u64()?;
        let host_len = r.u8()? as usize;
        let host = HostId::new(r.string(host_len)?).map_err(|_| "bad host id")?;
        let ref_len = r.u16()? as usize;
        let body_ref = r.string(ref_len)?;
        let rec_len = r.u32()? as usize;
        let rec = r.bytes(rec_len)?;
        if !r.0.is_empty() {
            return Err("trailing bytes in the header");
        }
        let body = match kind {
            1 | 2 => {
                let record = Record::decode(rec)?;
                if kind == 1 {
                    if !body_ref.is_empty() {
                        return Err("an inline object has a body reference");
                    }
                    Body::Inline(record)
                } else {
                    // The data object's name follows from the key and the stamp; a
                    // pointer naming anything else is not followed.
                    let stamp = Stamp {
                        time_ns,
                        host: host.clone(),
                    };
                    if body_ref != data_name(&record.key, &stamp) {
                        return Err("a pointer names another data object than its own");
                    }
                    Body::Pointer(record, body_ref)
                }
            }
            3 => {
                let mut r = Reader(rec);
                let kl = r.u16()? as usize;
                let key = r.bytes(kl)?.to_vec();
                check_key(&key).map_err(|_| "bad key length")?;
                if !r.0.is_empty() || !body_ref.is_empty() {
                    return Err("trailing bytes in a tombstone");
                }
                Body::Tombstone(key)
            }
            _ => return Err("unknown object kind"),
        };
        Ok(Header {
            stamp: Stamp { time_ns, host },
            body,
        })
    }
}

/// The name (relative to the prefix) of the remote object for `key`: `o/` and the
/// SHA-256 of the key in 64 lowercase hex digits. A cryptographic hash, so nobody can
/// make two keys share a name; and the key in the header is compared on every read.
pub fn object_name(key: &[u8]) -> String {
    format!("o/{}", hex(&Sha256::digest(key)))
}

/// The name of the data object of a multipart upload of `key` at `stamp`:
/// `d/<sha256 of key>/<time_ns, 20 digits>-<host>`.
pub fn data_name(key: &[u8], stamp: &Stamp) -> String {
    format!(
        "d/{}/{:020}-{}",
        hex(&Sha256::digest(key)),
        stamp.time_ns,
        stamp.host
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What an event of the invalidation log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was deleted.
    Delete(Vec<u8>),
    /// Every key starting with these bytes was purged (an empty prefix purges all).
    Purge(Vec<u8>),
}

/// An event of the invalidation log: a delete or a purge on some host. A host that
/// applies it drops its local copies of the keys it covers whose stamps are smaller
/// than the event's (objects committed later are not affected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When and where it happened.
    pub stamp: Stamp,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// Whether the event covers `key` as committed at `at`.
    pub fn covers(&self, key: &[u8], at: &Stamp) -> bool {
        let hit = match &self.kind {
            EventKind::Delete(k) => k == key,
            EventKind::Purge(p) => key.starts_with(p),
        };
        hit && *at < self.stamp
    }

    /// The event's name (relative to the prefix) when appended at `appended_ns`:
    /// `events/<appended_ns, 20 digits>-<host>-<nonce, 16 hex digits>`, so that names
    /// sort by when they were appended. Not by the stamp: an event can be appended
    /// long after it was stamped (its host cut off from the store, or its upload
    /// queue behind), and a host reading the log from where it last read must still
    /// find it.
    pub fn name(&self, appended_ns: u64, nonce: u64) -> String {
        format!("events/{appended_ns:020}-{}-{nonce:016x}", self.stamp.host)
    }

    /// The time an event name carries, when it was appended (for listing from a point
    /// in time).
    pub fn time_of_name(name: &str) -> Option<u64> {
        name.strip_prefix("events/")?.get(..20)?.parse().ok()
    }

    /// The longest event, with room to spare: 24 fixed bytes, a host id of at most 64
    /// bytes, a subject of at most 4096, the checksum.
    pub const MAX_LEN: u64 = 8 << 10;

    /// Encodes the event.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let (kind, subject) = match &self.kind {
            EventKind::Delete(k) => {
                check_key(k)?;
                (1u8, k)
            }
            EventKind::Purge(p) => {
                if p.len() > MAX_KEY_LEN {
                    return Err("purge prefix longer than a key".into());
                }
                (2u8, p)
            }
        };
        let mut out = Vec::with_capacity(48 + subject.len());
        out.extend_from_slice(&EVENT_MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&self.stamp.time_ns.to_le_bytes());
        let host = self.stamp.host.as_str().as_bytes();
        out.push(host.len() as u8);
        out.extend_from_slice(host);
        out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
        out.extend_from_slice(subject);
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Decodes and checks an event.
    pub fn decode(buf: &[u8]) -> Result<Event, &'static str> {
        if buf.len() < 12 + 8 || buf[..8] != EVENT_MAGIC {
            return Err("not an event of objmapper (bad magic)");
        }
        let (body, sum) = buf.split_at(buf.len() - 8);
        if xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err("event checksum mismatch");
        }
        if u16::from_le_bytes([body[8], body[9]]) != FORMAT {
            return Err("unknown event format version");
        }
        let kind = body[10];
        if body[11] != 0 {
            return Err("reserved byte is not 0");
        }
        let mut r = Reader(&body[12..]);
        let time_ns = r.u64()?;
        let hl = r.u8()? as usize;
        let host = HostId::new(r.string(hl)?).map_err(|_| "bad host id")?;
        let sl = r.u16()? as usize;
        let subject = r.bytes(sl)?.to_vec();
        if !r.0.is_empty() {
            return Err("trailing bytes in the event");
        }
        let kind = match kind {
            1 => {
                check_key(&subject).map_err(|_| "bad key length")?;
                EventKind::Delete(subject)
            }
            2 => EventKind::Purge(subject),
            _ => return Err("unknown event kind"),
        };
        Ok(Event {
            stamp: Stamp { time_ns, host },
            kind,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
    fn string(&mut self, n: usize) -> Result<String, &'static str> {
        std::str::from_utf8(self.bytes(n)?)
            .map(str::to_owned)
            .map_err(|_| "invalid UTF-8")
    }
}

#[cfg(test)]
mod tests;
