//! Per-call options: PUT/COMMIT, GET, DELETE, and the V2 handshake.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use objmapper_proto::{hello::caps, req_flags, Metadata, Mode};

use crate::Error;

/// Options for PUT and COMMIT.
///
/// By default the server places a new object in its memory tier and writes it to disk in
/// the background (objects over its direct-to-disk threshold go straight to disk).
/// `durable` and `ephemeral` contradict each other, and so do `if_version` and
/// `if_absent`; the server refuses either pair (and so does this client, before sending,
/// with [`Error::InvalidArgument`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Acknowledge only once the object is fsynced to disk. Default = false.
    pub durable: bool,
    /// Keep the object in the memory tier only: never written to disk, lost on eviction
    /// or reboot (not on a server restart). Default = false.
    pub ephemeral: bool,
    /// Publish the object pinned: it is never evicted (see
    /// [`Client::unpin`](crate::Client::unpin)). Default = false.
    pub pinned: bool,
    /// Absolute expiry in Unix seconds; from then on the object answers NOT_FOUND. Must
    /// lie in the future (the server answers BAD_REQUEST otherwise). Default = none
    /// (never expires). See [`PutOptions::with_ttl`].
    pub expires_at: Option<u64>,
    /// Content type, at most 255 bytes. Default = none.
    pub content_type: Option<String>,
    /// Custom name/value pairs (names 1..=255 bytes of UTF-8). Default = none.
    pub custom: Vec<(String, Vec<u8>)>,
    /// Compare-and-swap: publish only if the key's current object has exactly this
    /// VERSION (flag IF_VERSION; the version travels in the header's `offset` field).
    /// Otherwise the server answers PRECONDITION_FAILED
    /// ([`Error::is_precondition_failed`]) and nothing is published. Default = none.
    pub if_version: Option<u64>,
    /// Publish only if the key holds no live object (flag IF_ABSENT); otherwise
    /// PRECONDITION_FAILED. Default = false.
    pub if_absent: bool,
}

impl PutOptions {
    /// Sets `expires_at` to now + `ttl`, rounded up to the next whole second (so the
    /// object lives at least `ttl`).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let at = now.saturating_add(ttl);
        let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
        self.expires_at = Some(secs);
        self
    }

    /// The request flags these options ask for, and the header's `offset` field (the
    /// expected version with `if_version`, else 0).
    pub(crate) fn header_bits(&self) -> Result<(u16, u64), Error> {
        if self.durable && self.ephemeral {
            return Err(Error::InvalidArgument(
                "durable and ephemeral contradict each other: an ephemeral object is never \
                 written to disk"
                    .into(),
            ));
        }
        if self.if_version.is_some() && self.if_absent {
            return Err(Error::InvalidArgument(
                "if_version and if_absent contradict each other: an absent key has no version"
                    .into(),
            ));
        }
        let bit = |on: bool, b: u16| if on { b } else { 0 };
        let flags = bit(self.durable, req_flags::DURABLE)
            | bit(self.ephemeral, req_flags::EPHEMERAL)
            | bit(self.pinned, req_flags::PIN)
            | bit(self.if_version.is_some(), req_flags::IF_VERSION)
            | bit(self.if_absent, req_flags::IF_ABSENT);
        Ok((flags, self.if_version.unwrap_or(0)))
    }

    /// Only the flags and conditions, no metadata: what `put_fd` sends with its COMMIT
    /// (an empty COMMIT metadata section keeps the PUT's).
    pub fn flags_only(&self) -> PutOptions {
        PutOptions {
            durable: self.durable,
            ephemeral: self.ephemeral,
            pinned: self.pinned,
            if_version: self.if_version,
            if_absent: self.if_absent,
            ..PutOptions::default()
        }
    }

    /// The encoded metadata section, checked against the protocol's limits.
    pub(crate) fn meta_bytes(&self) -> Result<Vec<u8>, Error> {
        let m = Metadata {
            content_type: self.content_type.clone(),
            custom: self.custom.clone(),
            expires_at: self.expires_at,
            ..Metadata::default()
        };
        m.to_bytes()
            .map_err(|e| Error::InvalidArgument(format!("metadata: {e}")))
    }
}

/// Options for GET ([`Client::get_with`](crate::Client::get_with),
/// [`Pipeline::submit_get`](crate::Pipeline::submit_get)).
///
/// ```
/// use objmapper_client::{GetOptions, Mode};
/// // Bytes 100..=199, inline.
/// let o = GetOptions::default().mode(Mode::Copy).range(100, 100);
/// assert_eq!(o.range, Some((100, 100)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// How the bytes travel. `None` = [`Client::best_mode`](crate::Client::best_mode)
    /// (fd on a Unix socket that can pass fds, copy elsewhere). Default = none.
    pub mode: Option<Mode>,
    /// `(offset, length)`: only `length` bytes from `offset`; `length` 0 reads to the end.
    /// An offset past the end gets RANGE_NOT_SATISFIABLE. `None` = the whole object.
    pub range: Option<(u64, u64)>,
}

impl GetOptions {
    /// These options with `mode`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// These options with a range: `length` bytes from `offset` (0 = to the end).
    pub fn range(mut self, offset: u64, length: u64) -> Self {
        self.range = Some((offset, length));
        self
    }
}

/// Options for DELETE ([`Client::delete_with`](crate::Client::delete_with)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Return only once the removal is on disk. Default = false.
    pub durable: bool,
    /// Compare-and-swap: remove only if the current object has exactly this VERSION;
    /// otherwise PRECONDITION_FAILED and nothing is removed. Default = none.
    pub if_version: Option<u64>,
}

impl DeleteOptions {
    pub(crate) fn header_bits(&self) -> (u16, u64) {
        let mut flags = 0;
        if self.durable {
            flags |= req_flags::DURABLE;
        }
        if self.if_version.is_some() {
            flags |= req_flags::IF_VERSION;
        }
        (flags, self.if_version.unwrap_or(0))
    }
}

/// What a client asks for in the V2 handshake
/// ([`Client::connect_v2`](crate::Client::connect_v2)). The server grants the
/// intersection with what it offers and the smaller depth; read the grant back with
/// [`Client::capabilities`](crate::Client::capabilities) and
/// [`Client::depth`](crate::Client::depth).
///
/// The default asks for every feature: a depth of 64, out-of-order replies and fd
/// passing. It makes no promise: `positional_reads` is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V2Options {
    /// Requests that may be outstanding at once (≥ 1). Above 1, PIPELINE is requested.
    pub pipeline_depth: u16,
    /// Ask for OUT_OF_ORDER: replies in any order, matched by request id.
    pub out_of_order: bool,
    /// Ask for FD_PASSING (only ever requested on a Unix socket). Without it, fd mode is
    /// refused locally on this connection.
    pub fd_passing: bool,
    /// Promise POSITIONAL_READS (only ever made together with FD_PASSING): every
    /// [`FdObject`](crate::FdObject) this connection receives is used only positionally
    /// ([`FdObject::read_all`](crate::FdObject::read_all) and `read_into`, `pread`,
    /// `sendfile`/`splice`/`copy_file_range` with an explicit offset, `mmap`, `fstat`),
    /// never with `read`, `readv`, `write`, `lseek` or `fcntl(F_SETFL)`. In return the
    /// server may hand out one cached description per version, shared with every other
    /// client that made the promise, and save an `open` and a `close` per GET. Break the
    /// promise and you move the offset (or the status flags) that other processes share:
    /// their `read()`s would go wrong, and yours too. Off by default, because the fd is
    /// yours to hand to any code; turn it on only if everything that touches it reads
    /// positionally. See docs/PROTOCOL.md, "Shared descriptions".
    pub positional_reads: bool,
}

impl Default for V2Options {
    fn default() -> Self {
        V2Options {
            pipeline_depth: 64,
            out_of_order: true,
            fd_passing: true,
            positional_reads: false,
        }
    }
}

impl V2Options {
    /// The capability bits to request over a transport that can (or cannot) pass fds.
    pub(crate) fn capabilities(&self, fd_capable: bool) -> u32 {
        let mut c = 0;
        if self.pipeline_depth > 1 {
            c |= caps::PIPELINE;
        }
        if self.out_of_order {
            c |= caps::OUT_OF_ORDER;
        }
        if self.fd_passing && fd_capable {
            c |= caps::FD_PASSING;
            if self.positional_reads {
                c |= caps::POSITIONAL_READS;
            }
        }
        c
    }
}
