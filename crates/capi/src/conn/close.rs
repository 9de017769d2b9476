//! Closing a connection's socket, and freeing the connection.

use std::ffi::c_int;

use super::{live, objm_connection_t};
use crate::error::guard;
use crate::ffi;

/// Closes the connection's socket. Replies not received yet are discarded (their fds
/// closed). The handle stays valid, and every later call on it fails, until
/// `objm_client_destroy()`.
///
/// Returns 0, or -1 if `conn` is NULL.
///
/// Thread-safety: as for every call on a connection; no other thread may be using it.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_close(conn: *mut objm_connection_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `conn` is NULL or live, and ours for the call.
        let c = live(unsafe { ffi::object_mut(conn, "conn") }?)?;
        c.pipe = None;
        c.tags.clear();
        Ok(0)
    })
}

/// Frees a connection, closing its socket first if `objm_client_close()` did not.
/// Replies not received are discarded (their fds closed). Responses already received
/// stay valid. NULL is ignored.
///
/// Thread-safety: no other thread may be using the connection, during the call or after.
///
/// # Safety
/// `conn` is NULL or a live connection, not used afterwards.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_client_destroy(conn: *mut objm_connection_t) {
    guard((), || {
        // SAFETY: the function's contract: `conn` is NULL or a live connection (from
        // `into_handle` in objm_client_create/open), not used afterwards.
        drop(unsafe { ffi::take_box(conn) });
        Ok(())
    })
}
