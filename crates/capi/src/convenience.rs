//! One-call helpers for the common paths. Each is a whole round trip on the connection,
//! so none may be called while requests sent with `objm_client_send_request()` are still
//! waiting to be received (that is refused with an error).

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::IntoRawFd;

use objmapper_client::{DeleteOptions, GetOptions, GetReply, Status};

use crate::conn::request::put_flags;
use crate::conn::response::{empty_meta, fill_meta};
use crate::conn::{live, objm_connection_t};
use crate::error::{guard, Failure, Res};
use crate::ffi;
use crate::types::*;

/// The flags a convenience PUT/COMMIT accepts: no IF_VERSION (there is no argument for
/// the version; use a request) and no ORDERED (nothing else is in flight).
fn convenience_put_flags(flags: u16, what: &str) -> Res<objmapper_client::PutOptions> {
    let allowed = OBJM_FLAG_DURABLE | OBJM_FLAG_EPHEMERAL | OBJM_FLAG_PIN | OBJM_FLAG_IF_ABSENT;
    if flags & OBJM_FLAG_IF_VERSION != 0 {
        return Err(Failure::local(format!(
            "{what} has no version argument for OBJM_FLAG_IF_VERSION: send an \
             objm_request_t with .if_version instead"
        )));
    }
    if flags & !allowed != 0 {
        return Err(Failure::local(format!(
            "flags 0x{:04x} do not apply to {what} (it accepts 0x{allowed:04x})",
            flags & !allowed
        )));
    }
    put_flags(flags)
}

/// Fetches an object as a read-only fd (fd mode; Unix sockets only).
///
/// Returns the fd (close-on-exec; the object's bytes from offset 0; a snapshot that
/// later PUTs or DELETEs do not change), and writes the object's size to `*size` if
/// `size` is not NULL. Returns -1 on failure: a missing key sets `objm_last_status()`
/// to `OBJM_STATUS_NOT_FOUND`; see `objm_last_error()`.
///
/// Ownership: the caller owns the fd and closes it.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `uri` points to `uri_len` bytes (or is NULL
/// with 0); `size` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_get_fd(
    conn: *mut objm_connection_t,
    uri: *const c_char,
    uri_len: usize,
    size: *mut u64,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `uri` points to `uri_len` bytes.
        let k = unsafe { ffi::key(uri, uri_len) }?;
        let o = c.client()?.get_fd(k)?;
        if o.offset != 0 {
            return Err(Failure::local(format!(
                "the server answered a whole-object GET with bytes from offset {}",
                o.offset
            )));
        }
        // SAFETY: the function's contract: `size` is NULL or writable.
        if let Some(s) = unsafe { ffi::out(size) } {
            *s = o.length;
        }
        Ok(o.fd.into_raw_fd())
    })
}

/// Fetches an object's bytes into memory: into the caller's buffer, or into one the
/// library allocates.
///
/// - `*buf != NULL`: a buffer of `*len` bytes. On success the object is in it and
///   `*len` is its size. If the object is larger, nothing is copied, `*len` is set to
///   the size needed, and -1 is returned (`objm_last_status()` is `OBJM_STATUS_LOCAL`).
/// - `*buf == NULL`: the library allocates exactly the object's size (at least 1 byte),
///   stores the pointer in `*buf` and the size in `*len`; free it with
///   `objm_buffer_free()`.
///
/// Over a Unix socket the bytes come as an fd and are read straight into the buffer;
/// over TCP they come inline (copy mode).
///
/// Returns 0, or -1 (see `objm_last_error()`; a missing key: `OBJM_STATUS_NOT_FOUND`).
/// On failure `*buf` is left as it was.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `uri` points to `uri_len` bytes; `buf` and `len`
/// are NULL or writable, and a non-NULL `*buf` points to `*len` writable bytes.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_get_copy(
    conn: *mut objm_connection_t,
    uri: *const c_char,
    uri_len: usize,
    buf: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `uri` points to `uri_len` bytes.
        let k = unsafe { ffi::key(uri, uri_len) }?;
        // SAFETY: the function's contract: `buf` is NULL or writable.
        let buf = unsafe { ffi::out(buf) };
        // SAFETY: the function's contract: `len` is NULL or writable.
        let len = unsafe { ffi::out(len) };
        let (Some(buf), Some(len)) = (buf, len) else {
            return Err(Failure::local("buf and len must not be NULL"));
        };
        let reply = c.client()?.get_with(k, &GetOptions::default())?;
        let size = usize::try_from(reply.len())
            .map_err(|_| Failure::local("the object is larger than this address space"))?;
        let caller = !buf.is_null();
        if caller && size > *len {
            let msg = format!(
                "buffer of {} bytes is too small for the object's {size} bytes (*len now \
                 says how many are needed)",
                *len
            );
            *len = size;
            return Err(Failure::local(msg));
        }
        let theirs = *buf;
        let mut ours = None;
        let out = if caller {
            // SAFETY: the function's contract: a non-NULL `*buf` points to `*len` writable
            // bytes, and `size <= *len`.
            unsafe { ffi::bytes_mut(theirs, size, "buf") }?
        } else {
            let b = ffi::CBuffer::alloc(size)
                .ok_or_else(|| Failure::local(format!("cannot allocate {size} bytes")))?;
            ours.insert(b).as_mut_slice()
        };
        // On failure our buffer is freed as it drops; the caller's is left as it was.
        fill(reply, out)?;
        *buf = ours.map_or(theirs, ffi::CBuffer::into_raw);
        *len = size;
        Ok(0)
    })
}

/// Copies a GET reply's bytes into `out` (exactly their length).
fn fill(reply: GetReply, out: &mut [u8]) -> Res<()> {
    match reply {
        GetReply::Bytes(b, _) => {
            out.copy_from_slice(&b);
            Ok(())
        }
        GetReply::Fd(o) => {
            let mut done = 0;
            while done < out.len() {
                match rustix::io::pread(&o.fd, &mut out[done..], o.offset + done as u64) {
                    Ok(0) => {
                        return Err(Failure::local(format!(
                            "the object's fd ended after {done} of {} bytes",
                            out.len()
                        )))
                    }
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(Failure::local(format!("reading the object's fd: {e}"))),
                }
            }
            Ok(())
        }
    }
}

/// Frees a buffer that `objm_get_copy()` allocated. NULL is ignored.
///
/// Thread-safety: any thread may free a buffer.
///
/// # Safety
/// `buf` is NULL or a buffer from `objm_get_copy()` not freed yet.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_buffer_free(buf: *mut c_void) {
    // SAFETY: the function's contract: `buf` is NULL or from objm_get_copy (through
    // `CBuffer::into_raw`), not freed yet.
    unsafe { ffi::free_buffer(buf) }
}

/// Stores `len` bytes at `data` under the key, in one round trip (copy mode). `flags`:
/// `OBJM_FLAG_DURABLE`, `_EPHEMERAL`, `_PIN`, `_IF_ABSENT` (for `_IF_VERSION`, send a
/// request with `.if_version`).
///
/// Returns 0 once the object is published, or -1 (see `objm_last_error()`; a failed
/// IF_ABSENT: `OBJM_STATUS_PRECONDITION_FAILED`).
///
/// Ownership: `data` is read during the call only.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `uri` points to `uri_len` bytes; `data` points
/// to `len` bytes (or is NULL with 0).
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_put(
    conn: *mut objm_connection_t,
    uri: *const c_char,
    uri_len: usize,
    data: *const c_void,
    len: usize,
    flags: u16,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `uri` points to `uri_len` bytes.
        let k = unsafe { ffi::key(uri, uri_len) }?;
        // SAFETY: the function's contract: `data` points to `len` bytes (or is NULL with 0).
        let d = unsafe { ffi::bytes(data, len, "data") }?;
        let opts = convenience_put_flags(flags, "objm_put")?;
        c.client()?.put(k, d, &opts)?;
        Ok(0)
    })
}

/// Starts an fd-mode PUT: returns a writable fd to write the object into and stores the
/// staging handle in `*handle`. Finish with `objm_put_commit()` (or `objm_put_abort()`)
/// on the same connection. `size_hint` may be 0 (unknown). `flags` as for `objm_put()`;
/// they are remembered and or-ed with the commit's.
///
/// Returns the fd, or -1 (see `objm_last_error()`).
///
/// Ownership: the caller owns the fd and closes it (before or after committing; what was
/// written before the commit is what is published, and the fd cannot change the
/// published object afterwards).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `uri` points to `uri_len` bytes; `handle` is
/// NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_put_fd_begin(
    conn: *mut objm_connection_t,
    uri: *const c_char,
    uri_len: usize,
    size_hint: u64,
    flags: u16,
    handle: *mut u64,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `uri` points to `uri_len` bytes.
        let k = unsafe { ffi::key(uri, uri_len) }?;
        // SAFETY: the function's contract: `handle` is NULL or writable.
        let handle = unsafe { ffi::out(handle) }.ok_or_else(|| Failure::local("handle is NULL"))?;
        let opts = convenience_put_flags(flags, "objm_put_fd_begin")?;
        let s = c.client()?.begin_put(k, size_hint, &opts)?;
        *handle = s.handle;
        Ok(s.fd.into_raw_fd())
    })
}

/// Publishes an fd-mode PUT started by `objm_put_fd_begin()` (or by a PUT request in fd
/// mode): `len` must be exactly the number of bytes written to its fd
/// (`OBJM_STATUS_LENGTH_MISMATCH` otherwise, and nothing is published). `flags` as for
/// `objm_put()`. The handle is used up whether or not this succeeds.
///
/// Returns 0 once the object is published, or -1 (see `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_put_commit(
    conn: *mut objm_connection_t,
    handle: u64,
    len: u64,
    flags: u16,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        let opts = convenience_put_flags(flags, "objm_put_commit")?;
        c.client()?.commit(handle, len, &opts)?;
        Ok(0)
    })
}

/// Discards an fd-mode PUT started by `objm_put_fd_begin()`; nothing is published.
///
/// Returns 0, or -1 (see `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_put_abort(conn: *mut objm_connection_t, handle: u64) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        c.client()?.abort(handle)?;
        Ok(0)
    })
}

/// Removes the object under the key. `flags`: `OBJM_FLAG_DURABLE` (return once the
/// removal is on disk); for `_IF_VERSION` send a request with `.if_version`.
///
/// Returns 0 if an object was removed, -1 otherwise: nothing under the key
/// (`objm_last_status()` is `OBJM_STATUS_NOT_FOUND`) or another failure (see
/// `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `uri` points to `uri_len` bytes.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_delete(
    conn: *mut objm_connection_t,
    uri: *const c_char,
    uri_len: usize,
    flags: u16,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `uri` points to `uri_len` bytes.
        let k = unsafe { ffi::key(uri, uri_len) }?;
        if flags & !OBJM_FLAG_DURABLE != 0 {
            return Err(Failure::local(format!(
                "flags 0x{flags:04x}: objm_delete accepts only OBJM_FLAG_DURABLE (for \
                 IF_VERSION send a DELETE request with .if_version)"
            )));
        }
        let opts = DeleteOptions {
            durable: flags & OBJM_FLAG_DURABLE != 0,
            if_version: None,
        };
        if c.client()?.delete_with(k, &opts)? {
            Ok(0)
        } else {
            Err(Failure {
                message: "NOT_FOUND: no object under that key".into(),
                status: c_int::from(Status::NotFound.as_u8()),
            })
        }
    })
}

/// Adds a ban (op BAN): `expr` holds `expr_len` bytes (1 to `OBJM_MAX_KEY_LEN`, no NUL
/// needed) of a ban expression, e.g. `key ^ "varnish:example.com/a\n"` or
/// `meta.tags has "product-42" && key ^ "varnish:"` (grammar: docs/STORAGE.md, "Bans").
/// From the moment this returns 0, the server never serves an object committed before
/// the ban that the expression matches. Needs the write permission.
///
/// Returns 0, or -1 with `objm_last_error()` and `objm_last_status()` set:
/// `OBJM_STATUS_BAD_REQUEST` for an expression that does not parse (the message names
/// the problem and its byte offset), `OBJM_STATUS_FORBIDDEN` without the write
/// permission, `OBJM_STATUS_BUSY` when the server's ban list is full.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `expr` points to `expr_len` bytes.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_ban(
    conn: *mut objm_connection_t,
    expr: *const c_char,
    expr_len: usize,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        if expr_len == 0 {
            return Err(Failure::local("the ban expression is empty"));
        }
        // SAFETY: the function's contract: `expr` points to `expr_len` bytes; `key` bounds
        // the length before trusting it.
        let e = unsafe { ffi::key(expr, expr_len) }?;
        c.client()?.ban(e)?;
        Ok(0)
    })
}

/// Fetches an object's metadata into `*meta` (every field set; unreported ones 0).
///
/// Returns 0, or -1 (see `objm_last_error()`; a missing key: `OBJM_STATUS_NOT_FOUND`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `uri` points to `uri_len` bytes; `meta` is NULL
/// or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_head(
    conn: *mut objm_connection_t,
    uri: *const c_char,
    uri_len: usize,
    meta: *mut objm_meta_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        // SAFETY: the function's contract: `uri` points to `uri_len` bytes.
        let k = unsafe { ffi::key(uri, uri_len) }?;
        // SAFETY: the function's contract: `meta` is NULL or writable.
        let out = unsafe { ffi::out(meta) }.ok_or_else(|| Failure::local("meta is NULL"))?;
        let m = c.client()?.head(k)?;
        let mut filled = empty_meta();
        fill_meta(&mut filled, &m);
        *out = filled;
        Ok(0)
    })
}

/// Checks that the server answers.
///
/// Returns 0, or -1 (see `objm_last_error()`).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_ping(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        c.client()?.ping()?;
        Ok(0)
    })
}
