//! The metadata section: a list of tag-length-value entries.
//!
//! Entry: `tag u16 LE | len u16 LE | value[len]`. See docs/PROTOCOL.md for the tags.

use crate::MAX_META_LEN;

/// Object size in bytes, u64 (responses only).
pub const TAG_SIZE: u16 = 0x0001;
/// Version, u64, unique per committed object and never reused; use it as the ETag (responses only).
pub const TAG_VERSION: u16 = 0x0002;
/// Commit time, u64 nanoseconds since the Unix epoch (responses only).
pub const TAG_MTIME: u16 = 0x0003;
/// xxh3-64 of the object bytes, u64 (responses only).
pub const TAG_CHECKSUM: u16 = 0x0004;
/// Content type, UTF-8, at most 255 bytes.
pub const TAG_CONTENT_TYPE: u16 = 0x0005;
/// Absolute expiry, u64 Unix seconds (requests: PUT/COMMIT; and responses).
pub const TAG_EXPIRES: u16 = 0x0006;
/// Where the object lives, u8: 1 memory, 2 disk, 3 both (responses only). See [`Tier`].
pub const TAG_TIER: u16 = 0x0007;
/// The object's state, a u8 bit set (responses only). See [`ObjectState`].
pub const TAG_STATE: u16 = 0x0008;
/// One custom pair: `name_len u8 | name (UTF-8, 1..=255) | value (the rest)`.
pub const TAG_CUSTOM: u16 = 0x0010;

/// Longest content type accepted.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Which storage tier holds an object (the TIER tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tier {
    /// Only in the memory tier (not yet written to disk, or ephemeral).
    Memory = 1,
    /// Only in the disk tier.
    Disk = 2,
    /// In both tiers: a memory copy of an object that is also on disk.
    Both = 3,
}

impl Tier {
    /// Decodes the wire byte; `None` for a value this version does not define.
    pub fn from_u8(v: u8) -> Option<Tier> {
        match v {
            1 => Some(Tier::Memory),
            2 => Some(Tier::Disk),
            3 => Some(Tier::Both),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// `memory`, `disk` or `both`, as shown by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Both => "both",
        }
    }

    /// Whether the memory tier holds a copy.
    pub fn in_memory(self) -> bool {
        matches!(self, Tier::Memory | Tier::Both)
    }

    /// Whether the disk tier holds a copy.
    pub fn on_disk(self) -> bool {
        matches!(self, Tier::Disk | Tier::Both)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An object's state bits (the STATE tag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectState(u8);

impl ObjectState {
    /// Pinned: never evicted.
    pub const PINNED: u8 = 0x01;
    /// Ephemeral: kept in the memory tier only, never written to disk.
    pub const EPHEMERAL: u8 = 0x02;
    /// Dirty: in memory, not yet written to disk.
    pub const DIRTY: u8 = 0x04;
    /// Every bit this version defines.
    pub const KNOWN: u8 = Self::PINNED | Self::EPHEMERAL | Self::DIRTY;

    /// The state with exactly these bits; `None` if `bits` has a bit this version does
    /// not define.
    pub fn from_bits(bits: u8) -> Option<ObjectState> {
        (bits & !Self::KNOWN == 0).then_some(ObjectState(bits))
    }

    /// The state made of the three booleans.
    pub fn new(pinned: bool, ephemeral: bool, dirty: bool) -> ObjectState {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        ObjectState(
            bit(pinned, Self::PINNED) | bit(ephemeral, Self::EPHEMERAL) | bit(dirty, Self::DIRTY),
        )
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Never evicted.
    pub fn pinned(self) -> bool {
        self.0 & Self::PINNED != 0
    }

    /// Memory tier only.
    pub fn ephemeral(self) -> bool {
        self.0 & Self::EPHEMERAL != 0
    }

    /// In memory and not yet written to disk.
    pub fn dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }
}

/// Object metadata as it travels on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Object size in bytes.
    pub size: Option<u64>,
    /// Version (ETag).
    pub version: Option<u64>,
    /// Commit time in nanoseconds since the Unix epoch.
    pub mtime_ns: Option<u64>,
    /// xxh3-64 of the bytes.
    pub checksum: Option<u64>,
    /// Content type.
    pub content_type: Option<String>,
    /// Absolute expiry in Unix seconds: the object is gone once the clock reaches it.
    pub expires_at: Option<u64>,
    /// Where the object lives (responses only).
    pub tier: Option<Tier>,
    /// Pinned / ephemeral / dirty (responses only).
    pub state: Option<ObjectState>,
    /// Custom name/value pairs, in order.
    pub custom: Vec<(String, Vec<u8>)>,
}

/// Why a metadata section is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaError {
    /// An entry runs past the end of the section.
    Truncated,
    /// The tag is not defined by this version.
    UnknownTag(u16),
    /// A fixed-size value has the wrong length.
    BadLength {
        /// The tag.
        tag: u16,
        /// Its length on the wire.
        len: u16,
    },
    /// A value outside the range its tag defines (an unknown TIER, unknown STATE bits).
    BadValue {
        /// The tag.
        tag: u16,
        /// The value on the wire.
        value: u64,
    },
    /// A single-valued tag appears twice.
    Duplicate(u16),
    /// Text that must be UTF-8 is not.
    NotUtf8(u16),
    /// A custom entry has an empty name.
    EmptyName,
    /// The content type is longer than 255 bytes.
    ContentTypeTooLong(usize),
    /// The encoded section would exceed MAX_META_LEN.
    TooLarge(usize),
    /// A value too long for its u16 length field.
    ValueTooLong(usize),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::Truncated => f.write_str("metadata entry runs past the end of the section"),
            MetaError::UnknownTag(t) => write!(f, "unknown metadata tag 0x{t:04x}"),
            MetaError::BadLength { tag, len } => {
                write!(f, "metadata tag 0x{tag:04x} has bad length {len}")
            }
            MetaError::BadValue { tag, value } => {
                write!(f, "metadata tag 0x{tag:04x} has undefined value {value}")
            }
            MetaError::Duplicate(t) => write!(f, "metadata tag 0x{t:04x} appears twice"),
            MetaError::NotUtf8(t) => write!(f, "metadata tag 0x{t:04x} is not valid UTF-8"),
            MetaError::EmptyName => f.write_str("custom metadata entry has an empty name"),
            MetaError::ContentTypeTooLong(n) => write!(
                f,
                "content type of {n} bytes exceeds the limit of {MAX_CONTENT_TYPE_LEN}"
            ),
            MetaError::TooLarge(n) => write!(
                f,
                "metadata of {n} bytes exceeds the limit of {MAX_META_LEN}"
            ),
            MetaError::ValueTooLong(n) => {
                write!(f, "metadata value of {n} bytes does not fit one entry")
            }
        }
    }
}

impl std::error::Error for MetaError {}

fn put_entry(out: &mut Vec<u8>, tag: u16, value: &[&[u8]]) -> Result<(), MetaError> {
    let len: usize = value.iter().map(|v| v.len()).sum();
    let len16 = u16::try_from(len).map_err(|_| MetaError::ValueTooLong(len))?;
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&len16.to_le_bytes());
    for v in value {
        out.extend_from_slice(v);
    }
    Ok(())
}

/// An entry of one `u64` value, in one append (on every GET's reply).
#[inline]
fn put_u64(out: &mut Vec<u8>, tag: u16, v: u64) {
    let mut e = [0u8; 12];
    e[..2].copy_from_slice(&tag.to_le_bytes());
    e[2] = 8;
    e[4..].copy_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&e);
}

/// An entry of one byte, in one append.
#[inline]
fn put_u8(out: &mut Vec<u8>, tag: u16, v: u8) {
    let [t0, t1] = tag.to_le_bytes();
    out.extend_from_slice(&[t0, t1, 1, 0, v]);
}

/// The value of a one-byte tag; `seen` = the tag appeared before.
fn byte(tag: u16, len: u16, value: &[u8], seen: bool) -> Result<u8, MetaError> {
    let [v] = value else {
        return Err(MetaError::BadLength { tag, len });
    };
    if seen {
        return Err(MetaError::Duplicate(tag));
    }
    Ok(*v)
}

/// The fields of a metadata section, borrowed from wherever the sender keeps them: what
/// [`Metadata::encode`] writes, without building a [`Metadata`] (and allocating its
/// strings) first. `custom` yields the custom pairs in order, as (name, value).
#[derive(Clone, Debug)]
pub struct MetaFields<'a, C> {
    /// Object size in bytes.
    pub size: Option<u64>,
    /// Version (ETag).
    pub version: Option<u64>,
    /// Commit time in nanoseconds since the Unix epoch.
    pub mtime_ns: Option<u64>,
    /// xxh3-64 of the bytes.
    pub checksum: Option<u64>,
    /// Content type.
    pub content_type: Option<&'a str>,
    /// Absolute expiry in Unix seconds.
    pub expires_at: Option<u64>,
    /// Where the object lives (responses only).
    pub tier: Option<Tier>,
    /// Pinned / ephemeral / dirty (responses only).
    pub state: Option<ObjectState>,
    /// Custom name/value pairs, in order.
    pub custom: C,
}

impl<'a, C> MetaFields<'a, C>
where
    C: Iterator<Item = (&'a str, &'a [u8])>,
{
    /// Appends the encoded section to `out`; nothing is appended on error (a field too
    /// long, an empty custom name, or a section over [`MAX_META_LEN`]).
    pub fn encode(self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        let start = out.len();
        let r = self.encode_inner(out);
        let len = out.len() - start;
        if r.is_err() || len > MAX_META_LEN {
            out.truncate(start);
            return r.and(Err(MetaError::TooLarge(len)));
        }
        Ok(())
    }

    fn encode_inner(self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        // The fixed entries of a response take 70 bytes: one allocation for them all.
        out.reserve(70);
        for (tag, v) in [
            (TAG_SIZE, self.size),
            (TAG_VERSION, self.version),
            (TAG_MTIME, self.mtime_ns),
            (TAG_CHECKSUM, self.checksum),
        ] {
            if let Some(v) = v {
                put_u64(out, tag, v);
            }
        }
        if let Some(ct) = self.content_type {
            if ct.len() > MAX_CONTENT_TYPE_LEN {
                return Err(MetaError::ContentTypeTooLong(ct.len()));
            }
            put_entry(out, TAG_CONTENT_TYPE, &[ct.as_bytes()])?;
        }
        if let Some(t) = self.expires_at {
            put_u64(out, TAG_EXPIRES, t);
        }
        if let Some(t) = self.tier {
            put_u8(out, TAG_TIER, t.as_u8());
        }
        if let Some(s) = self.state {
            put_u8(out, TAG_STATE, s.bits());
        }
        for (name, value) in self.custom {
            if name.is_empty() {
                return Err(MetaError::EmptyName);
            }
            let n = u8::try_from(name.len()).map_err(|_| MetaError::ValueTooLong(name.len()))?;
            put_entry(out, TAG_CUSTOM, &[&[n], name.as_bytes(), value])?;
        }
        Ok(())
    }
}

impl Metadata {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Metadata::default()
    }

    /// Whether any response-only field (size, version, mtime, checksum, tier, state) is
    /// set. EXPIRES is not one: a client may send it.
    pub fn has_server_fields(&self) -> bool {
        self.size.is_some()
            || self.version.is_some()
            || self.mtime_ns.is_some()
            || self.checksum.is_some()
            || self.tier.is_some()
            || self.state.is_some()
    }

    /// Appends the encoded section to `out`; nothing is appended on error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        MetaFields {
            size: self.size,
            version: self.version,
            mtime_ns: self.mtime_ns,
            checksum: self.checksum,
            content_type: self.content_type.as_deref(),
            expires_at: self.expires_at,
            tier: self.tier,
            state: self.state,
            custom: self.custom.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        }
        .encode(out)
    }

    /// The encoded section as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MetaError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes a whole section. Allocates at most about `buf.len()` bytes.
    pub fn decode(buf: &[u8]) -> Result<Metadata, MetaError> {
        if buf.len() > MAX_META_LEN {
            return Err(MetaError::TooLarge(buf.len()));
        }
        let mut m = Metadata::default();
        let mut rest = buf;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(MetaError::Truncated);
            }
            let tag = u16::from_le_bytes([rest[0], rest[1]]);
            let len = u16::from_le_bytes([rest[2], rest[3]]);
            let end = 4 + len as usize;
            if rest.len() < end {
                return Err(MetaError::Truncated);
            }
            let value = &rest[4..end];
            rest = &rest[end..];
            let fixed = |slot: &mut Option<u64>| -> Result<(), MetaError> {
                let arr: [u8; 8] = value
                    .try_into()
                    .map_err(|_| MetaError::BadLength { tag, len })?;
                if slot.replace(u64::from_le_bytes(arr)).is_some() {
                    return Err(MetaError::Duplicate(tag));
                }
                Ok(())
            };
            match tag {
                TAG_SIZE => fixed(&mut m.size)?,
                TAG_VERSION => fixed(&mut m.version)?,
                TAG_MTIME => fixed(&mut m.mtime_ns)?,
                TAG_CHECKSUM => fixed(&mut m.checksum)?,
                TAG_EXPIRES => fixed(&mut m.expires_at)?,
                TAG_TIER => {
                    let v = byte(tag, len, value, m.tier.is_some())?;
                    let t = Tier::from_u8(v).ok_or(MetaError::BadValue {
                        tag,
                        value: v.into(),
                    })?;
                    m.tier = Some(t);
                }
                TAG_STATE => {
                    let v = byte(tag, len, value, m.state.is_some())?;
                    let s = ObjectState::from_bits(v).ok_or(MetaError::BadValue {
                        tag,
                        value: v.into(),
                    })?;
                    m.state = Some(s);
                }
                TAG_CONTENT_TYPE => {
                    if value.len() > MAX_CONTENT_TYPE_LEN {
                        return Err(MetaError::ContentTypeTooLong(value.len()));
                    }
                    let s = std::str::from_utf8(value).map_err(|_| MetaError::NotUtf8(tag))?;
                    if m.content_type.replace(s.to_owned()).is_some() {
                        return Err(MetaError::Duplicate(tag));
                    }
                }
                TAG_CUSTOM => {
                    let (&n, tail) = value
                        .split_first()
                        .ok_or(MetaError::BadLength { tag, len })?;
                    if n == 0 {
                        return Err(MetaError::EmptyName);
                    }
                    if tail.len() < n as usize {
                        return Err(MetaError::BadLength { tag, len });
                    }
                    let (name, val) = tail.split_at(n as usize);
                    let name = std::str::from_utf8(name).map_err(|_| MetaError::NotUtf8(tag))?;
                    m.custom.push((name.to_owned(), val.to_vec()));
                }
                other => return Err(MetaError::UnknownTag(other)),
            }
        }
        Ok(m)
    }
}
