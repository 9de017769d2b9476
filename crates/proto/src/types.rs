//! The enumerations that appear in frame headers: ops, modes, statuses, flags.

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $text:expr ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name { $( $(#[$vmeta])* $variant = $value ),+ }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Decodes the wire byte; `None` for a value this version does not define.
            pub fn from_u8(v: u8) -> Option<Self> {
                match v { $( $value => Some($name::$variant), )+ _ => None }
            }

            /// The wire byte.
            pub fn as_u8(self) -> u8 { self as u8 }

            /// The name used in docs/PROTOCOL.md, logs and the CLI.
            pub fn name(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_enum! {
    /// The operation a request names. There is no implicit op: the server never guesses.
    pub enum Op {
        /// Opens a V2 session (capability negotiation).
        Hello = 1 => "HELLO",
        /// Liveness check; no key.
        Ping = 2 => "PING",
        /// Fetch an object (bytes inline or as an fd, per the mode).
        Get = 3 => "GET",
        /// Fetch an object's metadata only.
        Head = 4 => "HEAD",
        /// Store an object: inline bytes (copy) or a staging fd (fd mode).
        Put = 5 => "PUT",
        /// Publish a staged fd-mode PUT.
        Commit = 6 => "COMMIT",
        /// Discard a staged fd-mode PUT.
        Abort = 7 => "ABORT",
        /// Remove an object.
        Delete = 8 => "DELETE",
        /// Pin an object: it is never evicted from the tier it is in.
        Pin = 9 => "PIN",
        /// Unpin an object: it may be evicted again.
        Unpin = 10 => "UNPIN",
        /// Add a ban: the key field carries a ban expression; every object committed
        /// before it that the expression matches is gone from then on.
        Ban = 11 => "BAN",
    }
}

wire_enum! {
    /// How object bytes move between server and client.
    pub enum Mode {
        /// The op moves no object bytes (PING, HEAD, DELETE, COMMIT, ABORT, HELLO).
        None = 0 => "none",
        /// The bytes stay in the server's file; an fd travels by SCM_RIGHTS (Unix sockets only).
        Fd = 1 => "fd",
        /// The bytes travel inline on the socket.
        Copy = 2 => "copy",
        /// Inline, but the server moves them file -> pipe -> socket inside the kernel.
        Splice = 3 => "splice",
        /// The server chooses per object; the response says which mode it used.
        Auto = 4 => "auto",
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .iter()
            .copied()
            .find(|m| *m != Mode::None && m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown mode {s:?}: expected fd, copy, splice or auto"))
    }
}

wire_enum! {
    /// The outcome of a request. Every non-OK status comes with a human-readable message.
    pub enum Status {
        /// Success.
        Ok = 0 => "OK",
        /// No live object under that key.
        NotFound = 1 => "NOT_FOUND",
        /// The byte stream cannot be parsed; the server closes the connection after this reply.
        ProtocolError = 2 => "PROTOCOL_ERROR",
        /// The key is longer than MAX_KEY_LEN bytes.
        KeyTooLong = 3 => "KEY_TOO_LONG",
        /// Well framed but invalid: empty key, unknown flag, malformed metadata, a field that does not apply.
        BadRequest = 4 => "BAD_REQUEST",
        /// The mode cannot work on this transport or for this op (fd mode without fd passing).
        ModeUnsupported = 5 => "MODE_UNSUPPORTED",
        /// COMMIT or ABORT named a handle this connection does not hold.
        UnknownHandle = 6 => "UNKNOWN_HANDLE",
        /// COMMIT's length differs from the bytes written to the staging fd.
        LengthMismatch = 7 => "LENGTH_MISMATCH",
        /// The object exceeds the server's maximum object size.
        ObjectTooLarge = 8 => "OBJECT_TOO_LARGE",
        /// No tier can make room for the object.
        NoSpace = 9 => "NO_SPACE",
        /// The server failed to read or write storage.
        IoError = 10 => "IO_ERROR",
        /// A failed fsync put the store in its safe read-only state; writes are refused.
        ReadOnly = 11 => "READ_ONLY",
        /// A server-wide resource limit was hit (connections, staged PUTs or staged bytes in
        /// total): retry later.
        Busy = 12 => "BUSY",
        /// A conditional write's precondition did not hold.
        PreconditionFailed = 13 => "PRECONDITION_FAILED",
        /// The requested range lies outside the object.
        RangeNotSatisfiable = 14 => "RANGE_NOT_SATISFIABLE",
        /// The server is shutting down and takes no new work.
        ShuttingDown = 15 => "SHUTTING_DOWN",
        /// HELLO asked for a protocol version this server does not speak.
        VersionUnsupported = 16 => "VERSION_UNSUPPORTED",
        /// The metadata section is larger than MAX_META_LEN bytes.
        MetadataTooLarge = 17 => "METADATA_TOO_LARGE",
        /// The server hit a bug; the message says what.
        Internal = 18 => "INTERNAL",
        /// The op is not available on this transport (UDP serves GET, HEAD and PING only).
        OpUnsupported = 19 => "OP_UNSUPPORTED",
        /// The response would exceed the transport's maximum (UDP); use a stream transport.
        ResponseTooLarge = 20 => "RESPONSE_TOO_LARGE",
        /// The peer may not do this: its uid/gid lacks the permission (read, write), or
        /// has none at all (then the connection is closed after this reply).
        Forbidden = 21 => "FORBIDDEN",
        /// A per-connection limit was hit (staged PUTs or staged bytes on this
        /// connection): finish (COMMIT/ABORT) some of this connection's work first.
        TooManyRequests = 22 => "TOO_MANY_REQUESTS",
    }
}

/// Request flag bits (the `flags` field of a request header).
pub mod req_flags {
    /// PUT/COMMIT/DELETE: acknowledge only once the change is fsynced to disk.
    pub const DURABLE: u16 = 0x0001;
    /// PUT/COMMIT: keep the object in the memory tier only; it is never written to disk
    /// and is lost on eviction or reboot. Contradicts DURABLE (BAD_REQUEST).
    pub const EPHEMERAL: u16 = 0x0002;
    /// PUT/COMMIT: the object is pinned (never evicted) from the moment it is published.
    pub const PIN: u16 = 0x0004;
    /// PUT/COMMIT/DELETE: compare-and-swap: apply only if the key's current version
    /// equals the request's `offset` field; otherwise PRECONDITION_FAILED.
    pub const IF_VERSION: u16 = 0x0008;
    /// PUT/COMMIT: apply only if the key has no live object; otherwise PRECONDITION_FAILED.
    pub const IF_ABSENT: u16 = 0x0010;
    /// V2 with OUT_OF_ORDER: reply to this request only after every earlier request has
    /// been answered, and answer no later request before it.
    pub const ORDERED: u16 = 0x0020;
    /// Every bit this version defines; any other bit gets BAD_REQUEST.
    pub const KNOWN: u16 = DURABLE | EPHEMERAL | PIN | IF_VERSION | IF_ABSENT | ORDERED;
    /// The bits PUT and COMMIT accept.
    pub const PUT_FLAGS: u16 = DURABLE | EPHEMERAL | PIN | IF_VERSION | IF_ABSENT | ORDERED;
    /// The bits DELETE accepts.
    pub const DELETE_FLAGS: u16 = DURABLE | IF_VERSION | ORDERED;
    /// The bits every other op accepts.
    pub const OTHER_FLAGS: u16 = ORDERED;
}

/// Response flag bits (the `flags` field of a response header).
pub mod resp_flags {
    /// Exactly one fd arrived as SCM_RIGHTS on the same sendmsg as this header.
    pub const FD_ATTACHED: u16 = 0x0001;
    /// `length` bytes of object content follow the metadata section inline.
    pub const BODY: u16 = 0x0002;
    /// Every bit this version defines.
    pub const KNOWN: u16 = FD_ATTACHED | BODY;
}
