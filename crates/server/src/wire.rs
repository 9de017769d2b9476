//! The wire side of a request, shared by every transport: the store's objects and
//! errors as wire metadata and statuses, the request fields that become store
//! options, and the range rule.

use std::time::{SystemTime, UNIX_EPOCH};

use objmapper_proto::{self as proto, req_flags, Metadata, RequestHeader, Status, Version};
use objmapper_store::{CommitError, Condition, ObjectMeta, PutMeta, PutOptions, StoreError};

/// ORDERED (a V2 flag; validate_request refuses it on V1).
pub(crate) fn is_ordered(h: &RequestHeader) -> bool {
    h.version == Version::V2 && h.has_flag(req_flags::ORDERED)
}

/// ORDERED read from raw header bytes (a frame that failed to decode past its header).
pub(crate) fn raw_ordered(b: &[u8]) -> bool {
    b.len() >= 6
        && b[0] == proto::MAGIC_REQ_V2
        && u16::from_le_bytes([b[4], b[5]]) & req_flags::ORDERED != 0
}

/// Best-effort request id from a frame that failed to decode (0 if unreadable).
pub(crate) fn request_id_of(b: &[u8]) -> u32 {
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
pub(crate) fn condition_of(h: &RequestHeader) -> Condition {
    if h.has_flag(req_flags::IF_VERSION) {
        Condition::IfVersion(h.offset)
    } else if h.has_flag(req_flags::IF_ABSENT) {
        Condition::IfAbsent
    } else {
        Condition::Always
    }
}

/// Seconds since the Unix epoch, the unit of EXPIRES.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An EXPIRES must lie in the future: at or before now the object would never be served.
pub(crate) fn check_expiry(expires_at: Option<u64>) -> Result<(), String> {
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
pub(crate) fn put_options(flags: u16) -> Result<PutOptions, String> {
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

pub(crate) fn put_meta_of(raw: &[u8]) -> Result<PutMeta, String> {
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

pub(crate) fn wire_tier(t: objmapper_store::Tier) -> proto::Tier {
    match t {
        objmapper_store::Tier::Memory => proto::Tier::Memory,
        objmapper_store::Tier::Disk => proto::Tier::Disk,
        objmapper_store::Tier::Both => proto::Tier::Both,
    }
}

pub(crate) fn wire_meta(m: &ObjectMeta) -> Vec<u8> {
    let fields = |custom: bool| proto::MetaFields {
        size: Some(m.size),
        version: Some(m.version),
        mtime_ns: Some(m.mtime_ns),
        checksum: Some(m.checksum),
        content_type: m.content_type.as_deref().filter(|_| custom),
        expires_at: m.expires_at,
        tier: Some(wire_tier(m.tier)),
        state: Some(proto::ObjectState::new(m.pinned, m.ephemeral, m.dirty)),
        custom: m
            .custom
            .iter()
            .take(if custom { usize::MAX } else { 0 })
            .map(|(k, v)| (&**k, &**v)),
    };
    // The seven fixed entries take 70 bytes.
    let mut out = Vec::with_capacity(96);
    if let Err(e) = fields(true).encode(&mut out) {
        // Stored metadata was validated on the way in, so this is a bug; fall back to the
        // fixed fields rather than failing the read.
        tracing::error!("stored metadata does not encode: {e}");
        let _ = fields(false).encode(&mut out);
    }
    out
}

/// The wire status of a store error: the one map from [`StoreError`] to a status. Every
/// transport's replies use it ([`store_status`], [`commit_status`]), and the admin API
/// derives its HTTP statuses from it (`admin::reply::store_err`).
pub(crate) fn store_error_status(e: &StoreError) -> Status {
    match e {
        StoreError::Poisoned => Status::ReadOnly,
        StoreError::InvalidKey { .. } => Status::BadRequest,
        StoreError::NoSpace(_) => Status::NoSpace,
        StoreError::PreconditionFailed(_) => Status::PreconditionFailed,
        StoreError::InvalidBan(_) => Status::BadRequest,
        StoreError::TooManyBans { .. } => Status::Busy,
        StoreError::Io { .. } | StoreError::Closed => Status::IoError,
        // StoreError is non_exhaustive: a new variant is an I/O error until mapped here.
        _ => Status::IoError,
    }
}

/// A store error as its wire status and message.
pub(crate) fn store_status(e: &StoreError) -> (Status, String) {
    (store_error_status(e), e.to_string())
}

/// The wire status of a failed commit: a store error's by [`store_error_status`], the
/// commit's own errors beside it.
pub(crate) fn commit_status(e: &CommitError) -> Status {
    match e {
        CommitError::Store(e) => store_error_status(e),
        CommitError::LengthMismatch { .. } => Status::LengthMismatch,
        CommitError::TooLarge { .. } => Status::ObjectTooLarge,
        CommitError::WritableMapping => Status::BadRequest,
        CommitError::InvalidOptions(_) => Status::BadRequest,
        CommitError::MetaTooLarge { .. } => Status::MetadataTooLarge,
        _ => Status::IoError,
    }
}

/// `b` as lower-case hex (keys and prefixes in the admin API and the REMOTE journal).
pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{x:02x}"));
    }
    s
}

/// The bytes `s` spells in hex (either case), or None if it is not hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every store and commit error's wire status, pinned: the admin API's HTTP statuses
    /// follow from these (admin::reply).
    #[test]
    fn every_store_and_commit_error_has_its_status() {
        let io = || StoreError::Io {
            context: "x".into(),
            source: std::io::Error::other("y"),
        };
        let ban = objmapper_store::BanExpr::parse(b"").unwrap_err();
        let store = [
            (io(), Status::IoError),
            (StoreError::Poisoned, Status::ReadOnly),
            (StoreError::InvalidKey { len: 0 }, Status::BadRequest),
            (StoreError::Closed, Status::IoError),
            (StoreError::NoSpace("full".into()), Status::NoSpace),
            (
                StoreError::PreconditionFailed("v".into()),
                Status::PreconditionFailed,
            ),
            (StoreError::InvalidBan(ban.clone()), Status::BadRequest),
            (StoreError::TooManyBans { active: 1, max: 1 }, Status::Busy),
        ];
        for (e, st) in store {
            assert_eq!(store_error_status(&e), st, "{e:?}");
            assert_eq!(store_status(&e), (st, e.to_string()), "{e:?}");
        }
        let commit = [
            (
                CommitError::LengthMismatch {
                    expected: 1,
                    actual: 2,
                },
                Status::LengthMismatch,
            ),
            (
                CommitError::TooLarge { size: 2, max: 1 },
                Status::ObjectTooLarge,
            ),
            (
                CommitError::MetaTooLarge { size: 2, max: 1 },
                Status::MetadataTooLarge,
            ),
            (CommitError::WritableMapping, Status::BadRequest),
            (CommitError::InvalidOptions("x"), Status::BadRequest),
            (CommitError::Store(io()), Status::IoError),
            (CommitError::Store(StoreError::Poisoned), Status::ReadOnly),
            (
                CommitError::Store(StoreError::InvalidKey { len: 0 }),
                Status::BadRequest,
            ),
            (CommitError::Store(StoreError::Closed), Status::IoError),
            (
                CommitError::Store(StoreError::NoSpace("full".into())),
                Status::NoSpace,
            ),
            (
                CommitError::Store(StoreError::PreconditionFailed("v".into())),
                Status::PreconditionFailed,
            ),
            (
                CommitError::Store(StoreError::InvalidBan(ban)),
                Status::BadRequest,
            ),
            (
                CommitError::Store(StoreError::TooManyBans { active: 1, max: 1 }),
                Status::Busy,
            ),
        ];
        for (e, st) in commit {
            assert_eq!(commit_status(&e), st, "{e:?}");
        }
    }

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
