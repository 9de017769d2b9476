//! Error types.

use std::io;
use std::path::PathBuf;

/// Error returned by [`Store::open`](crate::Store::open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another `Store` (in this or another process) holds the data directory's lock.
    #[error("data directory is locked by another store instance (lock file {path})")]
    Locked {
        /// Path of the lock file (`DATA_DIR/LOCK`).
        path: PathBuf,
    },
    /// An I/O operation failed while opening or recovering the store.
    #[error("{context}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The data directory holds a different or unknown on-disk format.
    #[error("unsupported data directory format in {path}: {detail}")]
    Format {
        /// Path of the offending file.
        path: PathBuf,
        /// What was found / what is wrong.
        detail: String,
    },
    /// The memory tier directory carries another store's identity (`STORE_ID`) and may
    /// hold that store's only copy of objects (it was not shut down cleanly): it is
    /// neither imported nor discarded.
    #[error("memory tier directory {path} belongs to another store: {detail}")]
    ForeignTier {
        /// The memory tier directory.
        path: PathBuf,
        /// The two identities and what to do.
        detail: String,
    },
}

/// Error returned by store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{context}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier fsync/fdatasync/syncfs failed; the store refuses writes
    /// until it is reopened. Reads keep working.
    #[error("store is poisoned by an earlier failed sync; writes are refused until it is reopened (reads still work)")]
    Poisoned,
    /// The key is empty or longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("invalid key of {len} bytes: keys must be 1..={max} bytes", max = crate::MAX_KEY_LEN)]
    InvalidKey {
        /// Length of the rejected key.
        len: usize,
    },
    /// The store has been closed with [`Store::close`](crate::Store::close).
    #[error("store is closed")]
    Closed,
    /// No tier can make room (everything pinned, or the object is larger
    /// than a whole tier).
    #[error("no space: {0}")]
    NoSpace(String),
    /// A conditional write's precondition did not hold; nothing changed.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A ban expression did not parse (or compile).
    #[error("invalid ban expression: {0}")]
    InvalidBan(#[from] BanError),
    /// The ban list is full ([`MAX_BANS`](crate::MAX_BANS) active bans); retry once the
    /// ban lurker has retired some.
    #[error("too many active bans ({active}, the limit is {max}); retry once the ban lurker has retired some")]
    TooManyBans {
        /// Bans active now.
        active: usize,
        /// The limit.
        max: usize,
    },
}

/// Error returned by [`Staging::commit`](crate::Staging::commit). Nothing is
/// published when a commit fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The staged data does not have the announced length.
    #[error("object length mismatch: expected {expected} bytes, staging file holds {actual}")]
    LengthMismatch {
        /// Length announced by the client.
        expected: u64,
        /// Length actually staged.
        actual: u64,
    },
    /// The object is larger than [`StoreConfig::max_object_size`](crate::StoreConfig::max_object_size).
    #[error("object of {size} bytes exceeds the maximum object size of {max} bytes")]
    TooLarge {
        /// Staged size.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The encoded metadata exceeds [`MAX_META_LEN`](crate::MAX_META_LEN).
    #[error(
        "object metadata of {size} bytes as stored exceeds the limit of {max} bytes (stored, \
         each custom pair takes 6 bytes besides its name and value, the content type 2, \
         and their count 2)"
    )]
    MetaTooLarge {
        /// Encoded metadata size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Sealing the staging memfd failed with `EBUSY`: a writable shared
    /// mapping of it still exists.
    #[error("staging file is still mapped writable (shared mmap); munmap it before COMMIT")]
    WritableMapping,
    /// The options contradict each other.
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
    /// A fill's bytes do not match the checksum its origin recorded
    /// ([`Staging::commit_fill`](crate::Staging::commit_fill)); nothing was published.
    #[error("the fetched bytes' checksum is {actual:#018x}, not the recorded {expected:#018x}: not published")]
    ChecksumMismatch {
        /// The checksum recorded with the version.
        expected: u64,
        /// The checksum of the bytes staged.
        actual: u64,
    },
    /// A store error (I/O, poisoned, closed, no space, precondition failed, ...), with the
    /// store's own message.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { context, source } => OpenError::Io { context, source },
            other => OpenError::Io {
                context: "recovery failed".into(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// Builds a closure that wraps an error with a context message. The message becomes a
/// `String` only when there is an error: a `&'static str` context costs nothing on the
/// success path (a `format!` argument is built by the caller, so hot paths that need
/// one wrap the call in a closure instead).
pub(crate) fn io_ctx<E: Into<io::Error>, C: Into<String>>(
    context: C,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Io {
        context: context.into(),
        source: e.into(),
    }
}

/// Formats an error and its `source()` chain as "a: b: c" for logging.
pub(crate) fn display_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Why a ban expression was refused: what and where (a byte offset into the expression).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanError {
    /// Byte offset in the expression where the problem is.
    pub pos: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for BanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.pos, self.message)
    }
}

impl std::error::Error for BanError {}
