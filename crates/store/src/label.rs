//! The label each object file carries: its own journal record, in an extended
//! attribute, so that an index can be rebuilt from the files alone after the journal
//! lost the record (recovery's `account_for_files` re-admits labelled files;
//! docs/STORAGE.md, "Object labels").
//!
//! The attribute is `user.objmapper`; its value is
//! `"OML1"`, the xxh3-64 of the rest (little endian), then the PUT record's payload
//! exactly as the journal stores it (version, size, mtime, checksum, expiry, flags,
//! key, content type, custom metadata). Writing it is best effort: a filesystem
//! without user extended attributes, or metadata larger than the filesystem allows
//! in one attribute, leaves the file unlabelled (counted), and such a file cannot be
//! restored from `lost+found/`. Nothing ever reads the label on the request path.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::XattrFlags;
use rustix::io::Errno;
use xxhash_rust::xxh3::xxh3_64;

use crate::journal;
use crate::meta::ObjectMeta;

/// The extended attribute's name.
pub(crate) const NAME: &str = "user.objmapper";

/// The value's first bytes (format 1).
const MAGIC: &[u8; 4] = b"OML1";

/// Where the checksum sits in a PUT payload (after version, size and mtime).
const CHECKSUM_AT: usize = 24;

/// The label's value for a file whose PUT payload is `payload`, with the
/// payload's checksum field set to `checksum` (the checksum of the bytes just
/// written, which the caller may not have known when it encoded the payload).
pub(crate) fn value(payload: &[u8], checksum: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + payload.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(payload);
    if let Some(sum) = v.get_mut(12 + CHECKSUM_AT..12 + CHECKSUM_AT + 8) {
        sum.copy_from_slice(&checksum.to_le_bytes());
    }
    let check = xxh3_64(&v[12..]);
    v[4..12].copy_from_slice(&check.to_le_bytes());
    v
}

/// Labels `file`. Returns false (and logs once per process) if the filesystem
/// refused; the object is stored all the same.
pub(crate) fn write(file: &File, value: &[u8], tier: &str) -> bool {
    match rustix::fs::fsetxattr(file, NAME, value, XattrFlags::empty()) {
        Ok(()) => true,
        Err(e) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    tier,
                    error = %e,
                    bytes = value.len(),
                    "could not label an object file with its record (extended attribute {NAME}); \
                     such files cannot be restored from lost+found/ if the journal loses their \
                     record (objmapper_unlabelled_total counts them; logged once)"
                );
            }
            false
        }
    }
}

/// Why a file's label could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LabelError {
    /// The file has no label (written by an older version, or unlabelled).
    Missing,
    /// The label is there but damaged or of an unknown format.
    Damaged(&'static str),
    /// Reading the attribute failed.
    Io(Errno),
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelError::Missing => write!(f, "the file has no {NAME} label"),
            LabelError::Damaged(why) => write!(f, "its {NAME} label is damaged: {why}"),
            LabelError::Io(e) => write!(f, "reading its {NAME} label failed: {e}"),
        }
    }
}

/// Reads and checks the label of `file`.
pub(crate) fn read(file: &File) -> Result<ObjectMeta, LabelError> {
    // A label holds at most a key, the metadata limit and the fixed fields.
    let mut buf = vec![0u8; 12 + 64 + crate::MAX_KEY_LEN + crate::MAX_META_LEN + 8];
    let n = match rustix::fs::fgetxattr(file, NAME, &mut buf) {
        Ok(n) => n,
        Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Err(LabelError::Missing),
        Err(Errno::RANGE) => return Err(LabelError::Damaged("larger than any label")),
        Err(e) => return Err(LabelError::Io(e)),
    };
    parse(&buf[..n])
}

/// Checks and decodes a label's value.
pub(crate) fn parse(v: &[u8]) -> Result<ObjectMeta, LabelError> {
    if v.len() < 12 || &v[..4] != MAGIC {
        return Err(LabelError::Damaged("unknown format"));
    }
    let check = u64::from_le_bytes(v[4..12].try_into().expect("8 bytes"));
    if xxh3_64(&v[12..]) != check {
        return Err(LabelError::Damaged("checksum mismatch"));
    }
    journal::decode_put_payload(&v[12..]).map_err(|_| LabelError::Damaged("bad record"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            key: (*b"some key").into(),
            version: 7,
            size: 5,
            checksum: 0,
            content_type: Some("text/plain".into()),
            custom: vec![("h:ETag".into(), (*b"\"x\"").into())],
            expires_at: Some(2_000_000_000),
            pinned: true,
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn round_trip_sets_the_checksum() {
        let m = meta();
        let mut payload = Vec::new();
        journal::encode_put_payload(&m, &mut payload).unwrap();
        let v = value(&payload, 0xdead_beef);
        let back = parse(&v).unwrap();
        assert_eq!(back.checksum, 0xdead_beef);
        assert_eq!(back.key, m.key);
        assert_eq!(back.version, 7);
        assert_eq!(back.custom, m.custom);
        assert_eq!(back.content_type, m.content_type);
        assert_eq!(back.expires_at, m.expires_at);
        assert!(back.pinned && !back.ephemeral);
    }

    #[test]
    fn damage_is_detected() {
        let mut payload = Vec::new();
        journal::encode_put_payload(&meta(), &mut payload).unwrap();
        let v = value(&payload, 1);
        for i in [0, 5, 12, 20, v.len() - 1] {
            let mut bad = v.clone();
            bad[i] ^= 0x40;
            assert!(
                matches!(parse(&bad), Err(LabelError::Damaged(_))),
                "flip at {i}"
            );
        }
        assert!(parse(&v[..v.len() - 1]).is_err());
        assert!(parse(b"OML").is_err());
    }

    #[test]
    fn files_carry_labels_on_this_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        let mut payload = Vec::new();
        journal::encode_put_payload(&meta(), &mut payload).unwrap();
        if !write(&f, &value(&payload, 9), "disk") {
            eprintln!("SKIPPED: no user extended attributes on the temp dir's filesystem");
            return;
        }
        let back = read(&f).unwrap();
        assert_eq!(back.checksum, 9);
        let g = File::create(dir.path().join("g")).unwrap();
        assert_eq!(read(&g), Err(LabelError::Missing));
    }
}
