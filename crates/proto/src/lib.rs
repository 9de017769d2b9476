//! The objmapper wire protocol: frames, ops, statuses, metadata and the V2 handshake.
//!
//! Pure encode/decode over byte buffers, no sockets and no I/O. Decoders report "need
//! more bytes" as [`Decoded::Incomplete`], never as an error, never panic on any input,
//! and never allocate more than the limits below allow. docs/PROTOCOL.md is the normative
//! description; its hex test vectors are decoded by this crate's tests.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[doc(hidden)]
pub mod check;
mod frame;
pub mod hello;
mod meta;
mod types;
pub mod udp;

pub use frame::{
    decode_request, decode_response, encode_request, encode_response, validate_request, Decoded,
    FrameError, Request, RequestHeader, Response, ResponseHeader, Version, MAGIC_REQ_V1,
    MAGIC_REQ_V2, MAGIC_RESP_V1, MAGIC_RESP_V2, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
};
pub use hello::{Hello, HelloError};
pub use meta::{
    MetaError, MetaFields, Metadata, ObjectState, Tier, MAX_CONTENT_TYPE_LEN, TAG_CHECKSUM,
    TAG_CONTENT_TYPE, TAG_CUSTOM, TAG_EXPIRES, TAG_MTIME, TAG_SIZE, TAG_STATE, TAG_TIER,
    TAG_VERSION,
};
pub use types::{req_flags, resp_flags, Mode, Op, Status};

/// Longest key, in bytes. Keys are opaque bytes of length 1..=MAX_KEY_LEN.
pub const MAX_KEY_LEN: usize = 4096;
/// Longest metadata section, in bytes.
pub const MAX_META_LEN: usize = 65536;
/// Longest error message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
