//! Object metadata types.

use std::fs::File;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Metadata supplied by the client when committing a PUT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutMeta {
    /// MIME type of the object, if known.
    pub content_type: Option<String>,
    /// Arbitrary named values stored with the object (e.g. cache headers).
    pub custom: Vec<(String, Vec<u8>)>,
    /// Expiry in unix seconds: from then on the object is never served.
    pub expires_at: Option<u64>,
}

/// Where a PUT lands and how it is acknowledged. Default = memory tier,
/// written behind to disk, acknowledged once in memory, not pinned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Acknowledge only once the object is fsynced on disk.
    pub durable: bool,
    /// Keep the object in the memory tier only; it is never written to disk.
    pub ephemeral: bool,
    /// Never evict the object (until unpinned).
    pub pinned: bool,
    /// Publish only if this holds at commit time (compare-and-swap).
    pub condition: Condition,
}

/// A precondition on the key's current state, checked atomically with the
/// write it guards. Expired objects count as absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// No condition.
    #[default]
    Always,
    /// The key's current version must be exactly this.
    IfVersion(u64),
    /// The key must have no live object.
    IfAbsent,
}

impl Condition {
    /// Checks the condition against the current version (`None` = absent).
    /// Returns a message for the client when it does not hold.
    pub fn check(self, current: Option<u64>) -> Result<(), String> {
        match (self, current) {
            (Condition::Always, _) => Ok(()),
            (Condition::IfVersion(want), Some(have)) if want == have => Ok(()),
            (Condition::IfVersion(want), Some(have)) => {
                Err(format!("the current version is {have}, not {want}"))
            }
            (Condition::IfVersion(want), None) => {
                Err(format!("there is no object (expected version {want})"))
            }
            (Condition::IfAbsent, None) => Ok(()),
            (Condition::IfAbsent, Some(have)) => {
                Err(format!("an object already exists (version {have})"))
            }
        }
    }
}

/// Which tier(s) hold an object's current version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Only the memory tier (dirty, or ephemeral).
    Memory,
    /// Only the disk tier.
    #[default]
    Disk,
    /// Both: a clean copy in memory backed by the same version on disk.
    Both,
}

/// Metadata of a committed object version. Immutable once committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: Box<[u8]>,
    /// Store-global version number; unique, never reused (usable as an ETag).
    pub version: u64,
    /// Object size in bytes.
    pub size: u64,
    /// Commit time in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// xxh3-64 of the object bytes.
    pub checksum: u64,
    /// MIME type, if one was supplied.
    pub content_type: Option<Box<str>>,
    /// Custom metadata pairs, in the order they were supplied.
    pub custom: Vec<(Box<str>, Box<[u8]>)>,
    /// Expiry in unix seconds; the object is not served from then on.
    pub expires_at: Option<u64>,
    /// Pinned objects are never evicted.
    pub pinned: bool,
    /// Ephemeral objects live in the memory tier only.
    pub ephemeral: bool,
    /// A copy of the cold tier's version (a fill: another host's write), not a write
    /// made here: never uploaded (docs/STORAGE.md, "`PUT` (type 1)").
    pub filled: bool,
    /// Where the version lives right now (not persisted).
    pub tier: Tier,
    /// In memory and not yet written to disk (not persisted).
    pub dirty: bool,
}

impl ObjectMeta {
    /// Whether the object has expired at `now` (unix seconds).
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Returns the value of the first custom pair named `name`.
    pub fn custom_value(&self, name: &str) -> Option<&[u8]> {
        self.custom
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }
}

/// An open, committed object version: a fresh read-only file description
/// (`O_RDONLY|O_CLOEXEC`, own file offset starting at 0) plus its metadata.
///
/// The file holds exactly the object bytes (offset 0..size), so it can be
/// passed to `sendfile`/`mmap` or sent to another process. The bytes stay
/// readable through this file even if the object is replaced or deleted.
#[derive(Debug)]
pub struct Object {
    /// Read-only file containing exactly the object bytes.
    pub file: File,
    /// Metadata of the version that `file` refers to.
    pub meta: Arc<ObjectMeta>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
