//! Receiving replies: blocking, for one request, or without blocking for event loops;
//! and what an event loop needs (the socket, the count of outstanding requests).

use std::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd};

use super::response::build_response;
use super::{live, objm_connection_t};
use crate::error::{guard, Failure, Res};
use crate::ffi;
use crate::types::*;

impl objm_connection_t {
    /// The next reply if a whole one has arrived, without blocking.
    fn try_recv(&mut self) -> Res<Option<*mut objm_response_t>> {
        if self.tags.is_empty() {
            return Err(nothing_outstanding());
        }
        if !self.settle_hello(false)? {
            return Ok(None);
        }
        let Some((wire, outcome)) = self.pipe()?.try_collect()? else {
            return Ok(None);
        };
        let i = self
            .tags
            .iter()
            .position(|t| t.wire == wire)
            .ok_or_else(|| Failure::local(format!("internal: reply to unknown request {wire}")))?;
        let tag = self.tags.remove(i).expect("index from position");
        Ok(Some(build_response(tag.user, tag.op, outcome)))
    }

    fn recv(&mut self, id: Option<u32>) -> Res<*mut objm_response_t> {
        if self.tags.is_empty() {
            return Err(nothing_outstanding());
        }
        self.settle_hello(true)?;
        let (tag, outcome) = match id {
            None => {
                let (wire, outcome) = self.pipe()?.collect()?;
                let i = self
                    .tags
                    .iter()
                    .position(|t| t.wire == wire)
                    .ok_or_else(|| {
                        Failure::local(format!("internal: reply to unknown request {wire}"))
                    })?;
                (self.tags.remove(i).expect("index from position"), outcome)
            }
            Some(id) => {
                let i =
                    self.tags.iter().position(|t| t.user == id).ok_or_else(|| {
                        Failure::local(format!("no outstanding request has id {id}"))
                    })?;
                let wire = self.tags[i].wire;
                let outcome = self.pipe()?.collect_for(wire)?;
                (self.tags.remove(i).expect("index checked"), outcome)
            }
        };
        Ok(build_response(tag.user, tag.op, outcome))
    }
}

/// The failure of a receive with no request outstanding.
fn nothing_outstanding() -> Failure {
    Failure::local(
        "no request is outstanding: send one with objm_client_send_request() first (the \
         answer to a HELLO from objm_client_send_hello() is read with the first reply)",
    )
}

/// Receives the next reply to a sent request: on V1 (and V2 without out-of-order
/// replies) the oldest request's; on V2 with out-of-order replies, whichever arrives
/// first (match it by `resp->id`). Blocks until it arrives.
///
/// Returns 0 with `*resp` set to a response whatever its status (check
/// `resp->status`: NOT_FOUND and the like are answers, not failures), or -1 with
/// `*resp` set to NULL when no request is outstanding or the connection failed (see
/// `objm_last_error()`).
///
/// Ownership: the caller owns `*resp` and frees it with `objm_response_free()`.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `resp` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_recv_response(
    conn: *mut objm_connection_t,
    resp: *mut *mut objm_response_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `resp` is NULL or writable.
        let resp = unsafe { ffi::out(resp) }.ok_or_else(|| Failure::local("resp is NULL"))?;
        *resp = std::ptr::null_mut();
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        *resp = c.recv(None)?;
        Ok(0)
    })
}

/// Receives the reply to the outstanding request whose `id` is `id` (the oldest such
/// request, if several share it), keeping replies to other requests that arrive first
/// for later receives. Blocks until it arrives.
///
/// Returns 0 with `*resp` set (any status), or -1 with `*resp` NULL: no outstanding
/// request has this id, or the connection failed (see `objm_last_error()`).
///
/// Ownership: the caller owns `*resp` and frees it with `objm_response_free()`.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `resp` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_recv_response_for(
    conn: *mut objm_connection_t,
    id: u32,
    resp: *mut *mut objm_response_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `resp` is NULL or writable.
        let resp = unsafe { ffi::out(resp) }.ok_or_else(|| Failure::local("resp is NULL"))?;
        *resp = std::ptr::null_mut();
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        *resp = c.recv(Some(id))?;
        Ok(0)
    })
}

/// Receives the next reply, as `objm_client_recv_response()`, **without blocking**: for
/// event loops. Wait until `objm_client_socket()` is readable (poll, epoll), then call
/// this until it returns 1.
///
/// Returns 0 with `*resp` set to a response whatever its status, 1 with `*resp` NULL
/// when no whole reply has arrived yet (the part that did stays buffered in the
/// connection for the next call; with edge-triggered readiness, every byte available was
/// read, so wait for the next edge), or -1 with `*resp` NULL when no request is
/// outstanding or the connection failed (see `objm_last_error()`; the server closing the
/// connection is a failure).
///
/// After `objm_client_send_hello()`, the HELLO's answer is read first and recorded, never
/// returned (`objm_client_session()` reports it): 1 while it has not arrived; -1 with
/// the server's status in `objm_last_status()` if the server refused the HELLO.
///
/// Sending stays a blocking call: `objm_client_send_request()` returns once the request
/// is in the socket's buffer, at once unless that buffer is full (several large requests
/// sent without reading the replies).
///
/// Ownership: the caller owns `*resp` and frees it with `objm_response_free()`.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection; `resp` is NULL or writable.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_try_recv_response(
    conn: *mut objm_connection_t,
    resp: *mut *mut objm_response_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `resp` is NULL or writable.
        let resp = unsafe { ffi::out(resp) }.ok_or_else(|| Failure::local("resp is NULL"))?;
        *resp = std::ptr::null_mut();
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        match c.try_recv()? {
            Some(r) => {
                *resp = r;
                Ok(0)
            }
            None => Ok(1),
        }
    })
}

/// Returns the connection's socket, to wait on with poll(2) or epoll (for
/// `objm_client_try_recv_response()`), or -1 (NULL, or closed by `objm_client_close()`).
///
/// Ownership: the connection keeps it: never read, write or close it; it is closed by
/// `objm_client_close()` or `objm_client_destroy()` (remove it from an epoll set first).
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_socket(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        Ok(c.pipe()?.as_fd().as_raw_fd())
    })
}

/// How many sent requests have not been received yet.
///
/// Returns the count, or -1 if `conn` is NULL.
///
/// Thread-safety: as for every call on a connection.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_outstanding(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        Ok(c_int::try_from(c.tags.len()).unwrap_or(c_int::MAX))
    })
}
