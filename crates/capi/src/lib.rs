//! libobjmapper: the C API of objmapper, built over the Rust client
//! ([`objmapper_client`]).
//!
//! This crate builds `libobjmapper.so` and `libobjmapper.a`; C code includes
//! `include/objmapper.h` (in this crate's directory). The API keeps the shape of the
//! seed's `objm_*` client API: connect, create a connection, fill an [`objm_request_t`],
//! send it, receive an [`objm_response_t`], free it. Two things differ on purpose:
//!
//! - requests name their operation explicitly in `.op` (`OBJM_OP_GET` is 0, so a request
//!   written in the seed's style, without `.op`, is a GET);
//! - [`objm_response_take_fd`] hands a response's fd over to the caller, instead of the
//!   seed's "set `resp->fd = -1` before `objm_response_free()`" (which still works).
//!
//! # The header is generated
//!
//! `include/objmapper.h` is generated from this crate's source by cbindgen, doc comments
//! included, and checked in. The test `header.rs` regenerates it and fails if the checked
//! in file differs (`OBJM_BLESS_HEADER=1 cargo test -p objmapper-capi --test header`
//! rewrites it). Generating was chosen over a hand-written header plus layout asserts
//! because it keeps *everything* in sync, function signatures included, which static
//! asserts on struct layouts and constants cannot check; and the docs a C programmer
//! reads are the same text rustdoc shows. The examples in `examples/c/` are compiled
//! with `-Wall -Werror` against the header, so the generated C is checked by a compiler
//! too.
//!
//! # Conventions (repeated in the header)
//!
//! - Functions that can fail return 0 on success and -1 on failure; functions that
//!   produce an fd return it, or -1; functions that produce an object return it, or
//!   NULL. On failure, [`objm_last_error`] says why (thread-local) and
//!   [`objm_last_status`] gives the server's status when the server refused.
//! - No Rust panic crosses the boundary: it is caught and becomes a -1 / NULL return.
//! - Null pointers and impossible lengths are refused with an error, never dereferenced.
//! - Every fd the library hands out is close-on-exec and owned by exactly one party,
//!   stated on each function.
//!
//! # Safety
//!
//! This is the one crate of the workspace with `extern "C"`. Its `unsafe` lives in one
//! module, `ffi`: the readers and writers of what crosses the C boundary (pointers,
//! handles, fds handed over), each stating under `# Safety` what the C caller promises.
//! Every pointer a C caller passes is checked for NULL and its length bounded there
//! before it is read. The rest of the crate has `unsafe_code` denied (the workspace
//! lint); the exported functions allow it for their declaration only (`#[no_mangle]`,
//! `unsafe extern "C" fn`), and their bodies reach C memory only through `ffi` calls,
//! each in its own `unsafe` block with a `// SAFETY:` comment (`tests/unsafe_boundary.rs`
//! checks this).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_camel_case_types)] // the C types keep their C names: objm_request_t, ...

mod conn;
mod convenience;
mod error;
// The C boundary: the only module allowed `unsafe` (see its docs).
#[allow(unsafe_code)]
mod ffi;
mod types;

pub use conn::close::*;
pub use conn::objm_connection_t;
pub use conn::open::*;
pub use conn::receive::*;
pub use conn::request::*;
pub use conn::response::*;
pub use conn::status::*;
pub use convenience::*;
pub use error::{objm_last_error, objm_last_status};
pub use types::*;
