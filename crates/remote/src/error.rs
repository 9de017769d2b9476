//! The one error type of the remote tier.

use std::fmt;
use std::time::Duration;

/// What went wrong, coarsely: what a caller (the store, a metric label) decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The remote store did not answer within the bound.
    Timeout,
    /// The remote store could not be reached or answered with a server error.
    Unavailable,
    /// The remote store refused the credentials or the operation.
    Denied,
    /// A remote object is damaged, of another format, or is not the object asked for
    /// (its key differs); it was not returned as data.
    Corrupt,
    /// A conditional write kept failing: others kept writing the same name, or the
    /// store hands out ETags on GET that `If-Match` does not take.
    Precondition,
    /// The configuration is invalid (bad URL, unreadable or unsafe credentials file).
    Config,
    /// The input is out of range (key too long, metadata too large, size mismatch).
    Invalid,
    /// Local I/O failed (reading the source file, writing the destination file).
    Io,
    /// The store does not honour the conditional writes the tier relies on.
    Unguarded,
}

impl ErrorKind {
    /// A short stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Denied => "denied",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Precondition => "precondition",
            ErrorKind::Config => "config",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Io => "io",
            ErrorKind::Unguarded => "unguarded",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the remote tier: one [`ErrorKind`], a message a human can act on, and
/// the underlying error where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation did not finish within its bound.
    #[error("remote {op} timed out after {after:?}")]
    Timeout {
        /// The operation (`get`, `put`, ...).
        op: &'static str,
        /// The bound that expired.
        after: Duration,
    },
    /// The remote store could not be reached or failed.
    #[error("remote {op} failed: the object store is unavailable: {source}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// What the client library reported.
        #[source]
        source: Source,
    },
    /// The remote store refused the request.
    #[error("remote {op} was refused (check the credentials and the bucket's policy): {source}")]
    Denied {
        /// The operation.
        op: &'static str,
        /// What the client library reported.
        #[source]
        source: Source,
    },
    /// A remote object failed a check and was not used.
    #[error("remote object {name} refused: {why}")]
    Corrupt {
        /// The remote object's name.
        name: String,
        /// Which check failed.
        why: String,
    },
    /// The purge set (docs/STORAGE.md, "The purge set") is damaged: no client may read
    /// or upload without knowing every purge, so every read and upload fails until a
    /// person repairs it.
    #[error(
        "the remote tier's purge set {name} is damaged ({why}): no host reads through or \
         uploads until it is repaired; restore it, or delete it and purge again what was \
         purged (or purge everything)"
    )]
    PurgeSetDamaged {
        /// The purge set's name.
        name: String,
        /// Which check failed.
        why: String,
    },
    /// Conditional writes kept losing races: other hosts kept writing the name, or the
    /// store (or a gateway in front of it) hands out ETags on GET that `If-Match` does
    /// not take, so that every write over an existing object is refused.
    #[error(
        "remote {op} of {name} gave up after {attempts} conditional writes refused with \
         412 Precondition Failed: other hosts kept writing it, or, if this persists, the \
         store or a gateway in front of it answers GETs with ETags that If-Match does \
         not accept (point the host at the store itself, or fix the gateway)"
    )]
    Precondition {
        /// The operation.
        op: &'static str,
        /// The remote object's name.
        name: String,
        /// How many conditional writes were tried.
        attempts: u32,
    },
    /// The configuration is invalid.
    #[error("remote tier configuration: {0}")]
    Config(String),
    /// The bucket does not exist at the endpoint (S3's `NoSuchBucket`): a wrong
    /// `s3://BUCKET/...`, or a bucket not created yet.
    #[error(
        "remote {op} failed: the bucket does not exist at this endpoint (NoSuchBucket): \
         create it, or correct the bucket in --remote"
    )]
    NoBucket {
        /// The operation.
        op: &'static str,
    },
    /// The store does not honour conditional writes (`If-None-Match: *`, `If-Match`):
    /// it accepts what it must refuse, or answers them as not implemented. On such a
    /// store an older upload can replace a newer version or a tombstone unseen, so a
    /// host neither reads through nor writes until a check passes
    /// ([`Remote::check_conditional_writes`](crate::Remote::check_conditional_writes)).
    #[error(
        "the object store does not honour conditional writes: {why}. Hosts sharing it \
         could undo each other's deletes and replace newer versions with older ones, so \
         the remote tier reads and writes nothing until it does: use a store that \
         honours If-None-Match and If-Match on PUT (AWS S3, Cloudflare R2, MinIO, Ceph \
         RGW and SeaweedFS do), or a newer version of this one, or turn the remote tier \
         off"
    )]
    Unguarded {
        /// What the store did.
        why: String,
    },
    /// The input is out of range.
    #[error("remote tier: {0}")]
    Invalid(String),
    /// A remote version is larger than this host takes ([`Config::max_object_size`]);
    /// none of its bytes were read.
    ///
    /// [`Config::max_object_size`]: crate::Config::max_object_size
    #[error(
        "remote object {name} has {size} bytes, more than the {max} this host takes \
         (max_object_size): not fetched"
    )]
    TooLarge {
        /// The remote object's name.
        name: String,
        /// The version's size.
        size: u64,
        /// This host's limit.
        max: u64,
    },
    /// Local I/O failed.
    #[error("remote {op}: {what}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Denied { .. } => ErrorKind::Denied,
            Error::Corrupt { .. } | Error::PurgeSetDamaged { .. } => ErrorKind::Corrupt,
            Error::Precondition { .. } => ErrorKind::Precondition,
            Error::Config(_) | Error::NoBucket { .. } => ErrorKind::Config,
            Error::Invalid(_) | Error::TooLarge { .. } => ErrorKind::Invalid,
            Error::Io { .. } => ErrorKind::Io,
            Error::Unguarded { .. } => ErrorKind::Unguarded,
        }
    }

    /// Whether trying again later may succeed (an upload queue backs off and retries
    /// these; the others need a person or a newer version).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Precondition | ErrorKind::Io
        )
    }

    /// Whether the tier as a whole refuses this host (the credentials, the bucket's
    /// policy, a missing bucket, a damaged purge set): every request fails the same way until a person
    /// fixes it, and then the same request succeeds. An upload queue keeps such work
    /// and retries it, as it does transient failures; it does not give it up.
    pub fn is_tier_wide(&self) -> bool {
        matches!(
            self,
            Error::Denied { .. }
                | Error::NoBucket { .. }
                | Error::PurgeSetDamaged { .. }
                | Error::Unguarded { .. }
        )
    }

    pub(crate) fn corrupt(name: &str, why: impl Into<String>) -> Self {
        Error::Corrupt {
            name: name.to_owned(),
            why: why.into(),
        }
    }

    pub(crate) fn io(op: &'static str, what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            what: what.into(),
            source,
        }
    }

    /// Maps a client library error (other than the not-found and precondition
    /// outcomes, which callers handle first).
    pub(crate) fn store(op: &'static str, e: object_store::Error) -> Self {
        use object_store::Error as E;
        if no_such_bucket(&e) {
            return Error::NoBucket { op };
        }
        match e {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::Denied {
                op,
                source: Box::new(e),
            },
            // The client library reports a 401 or 403 on some requests (a list) as a
            // generic error; it is the same refusal as on the others.
            _ if chain_contains(&e, REFUSALS) => Error::Denied {
                op,
                source: Box::new(e),
            },
            E::NotSupported { .. } | E::NotImplemented { .. } => Error::Denied {
                op,
                source: Box::new(e),
            },
            _ => Error::Unavailable {
                op,
                source: Box::new(e),
            },
        }
    }
}

/// Whether a client library error is S3's `NoSuchBucket` (the client library reports
/// it as a generic 404, or as not found; the code is in the response body it quotes).
pub(crate) fn no_such_bucket(e: &object_store::Error) -> bool {
    chain_contains(e, &["NoSuchBucket"])
}

/// What a refusal of the request (rather than a failure to answer it) looks like in
/// the text of an error the client library did not classify: the HTTP status it
/// quotes, or one of S3's error codes for bad credentials and denied access.
const REFUSALS: &[&str] = &[
    "403 Forbidden",
    "401 Unauthorized",
    "<Code>AccessDenied</Code>",
    "<Code>InvalidAccessKeyId</Code>",
    "<Code>SignatureDoesNotMatch</Code>",
    "<Code>ExpiredToken</Code>",
];

/// Whether the text of `e` or of any error under it contains one of `needles`. (The
/// client library's HTTP error type is private to it: its text is all there is.)
pub(crate) fn chain_contains(e: &object_store::Error, needles: &[&str]) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        let text = x.to_string();
        if needles.iter().any(|n| text.contains(n)) {
            return true;
        }
        cur = x.source();
    }
    false
}

/// Whether a client library error means the object is absent: not found, in a bucket
/// that exists.
pub(crate) fn is_absent(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) && !no_such_bucket(e)
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
