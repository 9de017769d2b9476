//! The constants and plain structs of the C API. Values are written out as literals so
//! that cbindgen can copy them into the header; `tests/constants.rs` checks each one
//! against the protocol crate.

use std::ffi::{c_char, c_int, c_void};

/// Protocol V1: no handshake, one reply per request, strictly in request order.
pub const OBJM_PROTO_V1: c_int = 1;
/// Protocol V2: a HELLO handshake, then pipelining and out-of-order replies matched by id.
pub const OBJM_PROTO_V2: c_int = 2;

/// GET: fetch an object (an fd or inline bytes, per `.mode`). 0, so that a request
/// written without `.op` (the seed's style) is a GET.
pub const OBJM_OP_GET: u8 = 0;
/// HEAD: fetch an object's metadata only.
pub const OBJM_OP_HEAD: u8 = 1;
/// PUT: store an object. Copy/splice mode: the bytes travel in `.data`. Fd mode: the
/// response carries a writable fd and a `.handle`; write the object into the fd, then
/// send a COMMIT (or ABORT) with that handle.
pub const OBJM_OP_PUT: u8 = 2;
/// COMMIT: publish a staged fd-mode PUT (`.handle`, `.length` = bytes written).
pub const OBJM_OP_COMMIT: u8 = 3;
/// ABORT: discard a staged fd-mode PUT (`.handle`).
pub const OBJM_OP_ABORT: u8 = 4;
/// DELETE: remove an object (flags DURABLE, IF_VERSION).
pub const OBJM_OP_DELETE: u8 = 5;
/// PING: check the server answers; no key.
pub const OBJM_OP_PING: u8 = 6;
/// PIN: the object is never evicted until UNPIN.
pub const OBJM_OP_PIN: u8 = 7;
/// UNPIN: the object may be evicted again.
pub const OBJM_OP_UNPIN: u8 = 8;
/// BAN: the key (`.uri`) carries a ban expression, e.g. `key ^ "varnish:example.com/"`;
/// every object committed before it that the expression matches is gone from then on.
/// The response's `meta.version` is the ban's stamp. A bad expression answers
/// `OBJM_STATUS_BAD_REQUEST` with a message naming the problem and its byte offset.
pub const OBJM_OP_BAN: u8 = 9;

/// No mode given: GET uses fd mode where fds can travel (a Unix socket, and FD_PASSING
/// in a V2 session), copy elsewhere; PUT uses copy. In a response: no bytes came.
pub const OBJM_MODE_DEFAULT: u8 = 0;
/// Fd mode: the object travels as a read-only fd (SCM_RIGHTS; Unix sockets only).
pub const OBJM_MODE_FDPASS: u8 = 1;
/// Same as `OBJM_MODE_FDPASS`.
pub const OBJM_MODE_FD: u8 = 1;
/// Copy mode: the bytes travel inline on the socket.
pub const OBJM_MODE_COPY: u8 = 2;
/// Splice mode: inline, but the server moves the bytes inside its kernel.
pub const OBJM_MODE_SPLICE: u8 = 3;
/// Auto mode (GET only): the server picks fd or inline per object; the response's
/// `.mode` says which.
pub const OBJM_MODE_AUTO: u8 = 4;

/// PUT/COMMIT/DELETE: acknowledge only once the change is fsynced to disk.
pub const OBJM_FLAG_DURABLE: u16 = 0x0001;
/// PUT/COMMIT: memory tier only, never written to disk. Contradicts DURABLE.
pub const OBJM_FLAG_EPHEMERAL: u16 = 0x0002;
/// PUT/COMMIT: publish the object pinned (never evicted).
pub const OBJM_FLAG_PIN: u16 = 0x0004;
/// PUT/COMMIT/DELETE: compare-and-swap: apply only if the current VERSION equals the
/// request's `.if_version`; otherwise the response says PRECONDITION_FAILED.
pub const OBJM_FLAG_IF_VERSION: u16 = 0x0008;
/// PUT/COMMIT: apply only if the key holds no live object; otherwise PRECONDITION_FAILED.
pub const OBJM_FLAG_IF_ABSENT: u16 = 0x0010;
/// V2 with out-of-order replies: answer this request after every earlier one and before
/// any later one.
pub const OBJM_FLAG_ORDERED: u16 = 0x0020;

/// HELLO capability: several requests in flight.
pub const OBJM_CAP_PIPELINE: u32 = 0x0000_0001;
/// HELLO capability: replies in any order, matched by request id.
pub const OBJM_CAP_OUT_OF_ORDER: u32 = 0x0000_0002;
/// HELLO capability: fd mode (Unix sockets only).
pub const OBJM_CAP_FD_PASSING: u32 = 0x0000_0004;
/// HELLO promise (granted only with `OBJM_CAP_FD_PASSING`): every fd this connection
/// receives is used only positionally (pread/preadv, sendfile/splice/copy_file_range
/// with an explicit offset, mmap, fstat), never with read/readv/write/lseek or
/// fcntl(F_SETFL), so the server may hand out one open file description per version,
/// shared with the other clients that promised the same (no open/close per GET). Ask
/// for it only if every piece of code that touches those fds keeps the promise:
/// offset and status flags are shared. See docs/PROTOCOL.md, "Shared descriptions".
pub const OBJM_CAP_POSITIONAL_READS: u32 = 0x0000_0008;

/// Success.
pub const OBJM_STATUS_OK: u8 = 0;
/// No live object under that key.
pub const OBJM_STATUS_NOT_FOUND: u8 = 1;
/// The server could not parse the byte stream and closed the connection.
pub const OBJM_STATUS_PROTOCOL_ERROR: u8 = 2;
/// The key is longer than OBJM_MAX_KEY_LEN bytes.
pub const OBJM_STATUS_KEY_TOO_LONG: u8 = 3;
/// Well framed but invalid (empty key, unknown flag, bad metadata, ...).
pub const OBJM_STATUS_BAD_REQUEST: u8 = 4;
/// The mode cannot work on this transport or for this op.
pub const OBJM_STATUS_MODE_UNSUPPORTED: u8 = 5;
/// COMMIT or ABORT named a handle this connection does not hold.
pub const OBJM_STATUS_UNKNOWN_HANDLE: u8 = 6;
/// COMMIT's length differs from the bytes written to the staging fd.
pub const OBJM_STATUS_LENGTH_MISMATCH: u8 = 7;
/// The object exceeds the server's maximum object size.
pub const OBJM_STATUS_OBJECT_TOO_LARGE: u8 = 8;
/// No tier can make room for the object.
pub const OBJM_STATUS_NO_SPACE: u8 = 9;
/// The server failed to read or write storage.
pub const OBJM_STATUS_IO_ERROR: u8 = 10;
/// The store is read-only after a failed fsync; writes are refused.
pub const OBJM_STATUS_READ_ONLY: u8 = 11;
/// A server-wide limit was hit (connections, staged PUTs or bytes in total).
pub const OBJM_STATUS_BUSY: u8 = 12;
/// A conditional write's precondition did not hold; nothing changed.
pub const OBJM_STATUS_PRECONDITION_FAILED: u8 = 13;
/// The range starts at or past the end of the object.
pub const OBJM_STATUS_RANGE_NOT_SATISFIABLE: u8 = 14;
/// The server is shutting down.
pub const OBJM_STATUS_SHUTTING_DOWN: u8 = 15;
/// HELLO asked for a protocol version the server does not speak.
pub const OBJM_STATUS_VERSION_UNSUPPORTED: u8 = 16;
/// The metadata section is too large.
pub const OBJM_STATUS_METADATA_TOO_LARGE: u8 = 17;
/// The server hit a bug; the message says what.
pub const OBJM_STATUS_INTERNAL: u8 = 18;
/// The op is not available on this transport.
pub const OBJM_STATUS_OP_UNSUPPORTED: u8 = 19;
/// The response would exceed the transport's maximum.
pub const OBJM_STATUS_RESPONSE_TOO_LARGE: u8 = 20;
/// The peer's uid/gid lacks the permission this op needs (see SECURITY.md).
pub const OBJM_STATUS_FORBIDDEN: u8 = 21;
/// A per-connection limit was hit (staged PUTs or bytes): commit or abort some first.
pub const OBJM_STATUS_TOO_MANY_REQUESTS: u8 = 22;

/// `objm_last_status()` after a failure that did not come from the server (a local
/// refusal, a broken connection, a NULL pointer).
pub const OBJM_STATUS_LOCAL: c_int = -1;

/// The longest key (`uri_len`) the server accepts.
pub const OBJM_MAX_KEY_LEN: usize = 4096;
/// The longest content type, in bytes (without the terminating NUL).
pub const OBJM_MAX_CONTENT_TYPE_LEN: usize = 255;
/// The most custom metadata pairs one request may carry (the metadata section is also
/// limited to 64 KiB as a whole).
pub const OBJM_MAX_CUSTOM_PAIRS: usize = 1024;

/// `meta.tier`: not reported.
pub const OBJM_TIER_UNKNOWN: u8 = 0;
/// `meta.tier`: only in the memory tier.
pub const OBJM_TIER_MEMORY: u8 = 1;
/// `meta.tier`: only in the disk tier.
pub const OBJM_TIER_DISK: u8 = 2;
/// `meta.tier`: in both tiers.
pub const OBJM_TIER_BOTH: u8 = 3;

/// `meta.state` bit: pinned (never evicted).
pub const OBJM_STATE_PINNED: u8 = 0x01;
/// `meta.state` bit: ephemeral (memory only).
pub const OBJM_STATE_EPHEMERAL: u8 = 0x02;
/// `meta.state` bit: not yet written to disk.
pub const OBJM_STATE_DIRTY: u8 = 0x04;

/// One custom metadata pair: a NUL-terminated UTF-8 name (1..=255 bytes) and a value of
/// `value_len` bytes.
///
/// In a request the caller owns the memory and it is read during the call only. In a
/// response the pairs belong to the response and live until `objm_response_free()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct objm_meta_pair_t {
    /// NUL-terminated UTF-8 name.
    pub name: *const c_char,
    /// The value's bytes (may be NULL when `value_len` is 0).
    pub value: *const c_void,
    /// Length of `value` in bytes.
    pub value_len: usize,
}

/// A request. Zero-initialise it (`objm_request_t req = {0};` or designated
/// initialisers) and set what the op needs; fields an op does not use must stay 0/NULL.
///
/// | op | fields used |
/// | --- | --- |
/// | GET | `uri`, `uri_len`, `mode`; a range with `offset`/`length` |
/// | HEAD, PIN, UNPIN | `uri`, `uri_len` |
/// | PUT copy/splice | `uri`, `uri_len`, `mode`, `data`, `data_len`, `flags`, metadata |
/// | PUT fd | `uri`, `uri_len`, `mode = OBJM_MODE_FDPASS`, `length` (size hint, 0 = unknown), `flags`, metadata |
/// | COMMIT | `handle`, `length` (bytes written), `flags`; metadata replaces the PUT's if given |
/// | ABORT | `handle` |
/// | DELETE | `uri`, `uri_len`, `flags` (DURABLE, IF_VERSION) |
/// | PING | nothing |
///
/// Metadata fields: `content_type`, `expires_at`, `custom`/`custom_count`. With
/// `OBJM_FLAG_IF_VERSION`, `if_version` is the version the object must have.
///
/// The library only reads a request, during the call that takes it; the caller keeps
/// ownership of every pointer in it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct objm_request_t {
    /// The caller's tag for this request, echoed in the response's `id` (any value; 0 is
    /// fine when replies are taken in order). `objm_client_recv_response_for()` matches
    /// on it.
    pub id: u32,
    /// `OBJM_FLAG_*` bits.
    pub flags: u16,
    /// `OBJM_MODE_*`.
    pub mode: u8,
    /// `OBJM_OP_*`; 0 = GET.
    pub op: u8,
    /// The key: `uri_len` bytes, opaque (not a path; need not be NUL-terminated).
    pub uri: *const c_char,
    /// Length of `uri` in bytes, 1..=OBJM_MAX_KEY_LEN.
    pub uri_len: usize,
    /// GET: first byte of the range. 0 with `length` 0 = the whole object.
    pub offset: u64,
    /// GET: bytes of the range from `offset` (0 = to the end). PUT in fd mode: size hint
    /// (0 = unknown). COMMIT: the exact number of bytes written to the staging fd.
    pub length: u64,
    /// PUT in copy/splice mode: the object's bytes.
    pub data: *const c_void,
    /// Length of `data` in bytes (0 stores an empty object).
    pub data_len: usize,
    /// COMMIT/ABORT: the handle from the fd-mode PUT's response.
    pub handle: u64,
    /// With `OBJM_FLAG_IF_VERSION`: the VERSION the current object must have.
    pub if_version: u64,
    /// PUT/COMMIT: absolute expiry in Unix seconds (0 = never).
    pub expires_at: u64,
    /// PUT/COMMIT: NUL-terminated content type, at most 255 bytes (NULL = none).
    pub content_type: *const c_char,
    /// PUT/COMMIT: custom metadata pairs (NULL when `custom_count` is 0).
    pub custom: *const objm_meta_pair_t,
    /// Number of pairs in `custom`, at most OBJM_MAX_CUSTOM_PAIRS.
    pub custom_count: usize,
}

/// An object's metadata, as the server reported it. A field the server did not report
/// is 0 (`content_type` is then the empty string). Versions start at 1, so `version` 0
/// always means "not reported".
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct objm_meta_t {
    /// The whole object's size in bytes (also for a range GET).
    pub size: u64,
    /// The object's version (an ETag: never reused for this key).
    pub version: u64,
    /// Commit time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// xxh3-64 of the object's bytes.
    pub checksum: u64,
    /// Absolute expiry in Unix seconds (0 = never).
    pub expires_at: u64,
    /// `OBJM_TIER_*`.
    pub tier: u8,
    /// `OBJM_STATE_*` bits.
    pub state: u8,
    /// NUL-terminated content type ("" = none).
    pub content_type: [c_char; 256],
}

/// A response, allocated by the library. Read its fields; free it with
/// `objm_response_free()`. The caller may set `fd` to -1 (after taking it, as the seed
/// did) and must change nothing else.
///
/// Ownership: the response owns `fd` (until `objm_response_take_fd()` or `resp->fd = -1`),
/// `data`, `custom` and `message`; `objm_response_free()` closes `fd` if it is still >= 0
/// and frees the rest. A response is independent of its connection: it may outlive it
/// and be freed from any thread.
#[repr(C)]
#[derive(Debug)]
pub struct objm_response_t {
    /// The request's `id`, as the caller set it.
    pub id: u32,
    /// `OBJM_STATUS_*`: OK, or why the server refused (see `message`).
    pub status: u8,
    /// The request's `OBJM_OP_*`.
    pub op: u8,
    /// How content came: `OBJM_MODE_FDPASS` (in `fd`), `OBJM_MODE_COPY` (in `data`), or
    /// `OBJM_MODE_DEFAULT` (no content: HEAD, DELETE, COMMIT, ..., or an error).
    pub mode: u8,
    /// Reserved, 0.
    pub reserved: u8,
    /// GET in fd mode: a read-only fd holding the object: read `length` bytes from
    /// `offset` with pread(), mmap() or sendfile() with an explicit offset. Its open file
    /// description is private unless the connection was granted
    /// `OBJM_CAP_POSITIONAL_READS`: then it may be shared with the other clients that
    /// promised positional reads, offset and status flags included. PUT in fd mode: the
    /// writable staging fd. Otherwise -1. Close-on-exec.
    pub fd: c_int,
    /// GET in fd mode: where the requested bytes start in `fd` (0 for a whole object).
    pub offset: u64,
    /// GET: how many bytes were delivered (in `data`) or are to be read from `fd`.
    pub length: u64,
    /// GET in copy/splice mode (or auto when inline): the bytes. NULL otherwise.
    pub data: *const c_void,
    /// Length of `data`.
    pub data_len: usize,
    /// PUT in fd mode: the handle to COMMIT or ABORT. 0 otherwise.
    pub handle: u64,
    /// The object's metadata (GET, HEAD, PUT, COMMIT).
    pub meta: objm_meta_t,
    /// Custom metadata pairs (NULL when `custom_count` is 0).
    pub custom: *const objm_meta_pair_t,
    /// Number of pairs in `custom`.
    pub custom_count: usize,
    /// NUL-terminated: the server's message for a non-OK status ("" when OK). Never NULL.
    pub message: *const c_char,
}

/// What the server granted in the V2 handshake (`objm_client_hello()`, or
/// `objm_client_send_hello()` and `objm_client_session()`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct objm_hello_t {
    /// The protocol version: 2.
    pub version: u16,
    /// Requests that may be in flight at once.
    pub depth: u16,
    /// `OBJM_CAP_*` bits granted.
    pub capabilities: u32,
}
