//! The thread-local last error, and the guard every exported function runs in.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use objmapper_client::Error;

use crate::types::OBJM_STATUS_LOCAL;

/// Why a call failed: the text for `objm_last_error()` and the server status, if any.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) status: c_int,
}

impl Failure {
    /// A failure that did not come from the server.
    pub(crate) fn local(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: OBJM_STATUS_LOCAL,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            status: e
                .status()
                .map_or(OBJM_STATUS_LOCAL, |s| c_int::from(s.as_u8())),
            message: e.to_string(),
        }
    }
}

pub(crate) type Res<T> = Result<T, Failure>;

struct Last {
    message: CString,
    status: c_int,
}

thread_local! {
    static LAST: RefCell<Last> = RefCell::new(Last {
        message: CString::from(c"no error"),
        status: OBJM_STATUS_LOCAL,
    });
}

thread_local! {
    /// The poison flag of the connection the current call is working on (set by
    /// `conn::live`), so that a panic can mark it unusable.
    static CURRENT_CONN: Cell<Option<Arc<AtomicBool>>> = const { Cell::new(None) };
}

/// Records that the current call works on the connection with this poison flag (see
/// [`guard`]).
pub(crate) fn enter_conn(poisoned: Option<Arc<AtomicBool>>) {
    let _ = CURRENT_CONN.try_with(|c| c.set(poisoned));
}

fn set_last(f: Failure) {
    // A message with a NUL in it (server text is arbitrary) is cut there.
    let bytes: Vec<u8> = f
        .message
        .into_bytes()
        .into_iter()
        .take_while(|&b| b != 0)
        .collect();
    let message = CString::new(bytes).unwrap_or_default();
    // try_with: during thread teardown the slot may be gone; then there is no one to tell.
    let _ = LAST.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.message = message;
            l.status = f.status;
        }
    });
}

/// Runs `f`, turning an error or a panic into `fail` and recording why. A panic while
/// working on a connection also marks that connection unusable: its state may be
/// half-updated, so every later call on it fails until it is destroyed.
pub(crate) fn guard<T>(fail: T, f: impl FnOnce() -> Res<T>) -> T {
    enter_conn(None);
    let r = catch_unwind(AssertUnwindSafe(f));
    let conn = CURRENT_CONN.try_with(Cell::take).ok().flatten();
    if let (Err(_), Some(poisoned)) = (&r, conn) {
        poisoned.store(true, Ordering::Relaxed);
    }
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last(e);
            fail
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            set_last(Failure::local(format!(
                "internal error in libobjmapper (a bug; please report it): panic: {what}"
            )));
            fail
        }
    }
}

/// Returns the reason the last failing libobjmapper call **on this thread** failed, as
/// a NUL-terminated string (for a server refusal: the status name, a colon, and the
/// server's message).
///
/// Ownership: the string belongs to the library; it stays valid until the next failing
/// call on the same thread. Copy it to keep it. Successful calls do not change it (like
/// errno). Never NULL: "no error" before any failure.
///
/// Thread-safety: safe from any thread; each thread has its own last error.
#[no_mangle]
#[allow(unsafe_code)] // exported (#[no_mangle]): see `ffi`
pub extern "C" fn objm_last_error() -> *const c_char {
    LAST.try_with(|l| match l.try_borrow() {
        Ok(l) => l.message.as_ptr(),
        Err(_) => c"libobjmapper: last error unavailable".as_ptr(),
    })
    .unwrap_or(c"libobjmapper: last error unavailable (thread exiting)".as_ptr())
}

/// Returns the server status (`OBJM_STATUS_*`) behind the last failing call on this
/// thread, or
/// `OBJM_STATUS_LOCAL` (-1) if that failure did not come from the server (a local
/// refusal, a NULL pointer, a broken connection). Same lifetime rules as
/// `objm_last_error()`.
///
/// Thread-safety: safe from any thread; each thread has its own.
#[no_mangle]
#[allow(unsafe_code)] // exported (#[no_mangle]): see `ffi`
pub extern "C" fn objm_last_status() -> c_int {
    LAST.try_with(|l| l.try_borrow().map_or(OBJM_STATUS_LOCAL, |l| l.status))
        .unwrap_or(OBJM_STATUS_LOCAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `objm_last_error()` returns on this thread (read without its pointer).
    fn last() -> String {
        LAST.with(|l| l.borrow().message.to_string_lossy().into_owned())
    }

    #[test]
    fn a_panic_becomes_a_failure_with_its_message() {
        let r: c_int = guard(-1, || panic!("boom {}", 42));
        assert_eq!(r, -1);
        assert!(last().contains("panic: boom 42"), "{}", last());
        assert_eq!(objm_last_status(), OBJM_STATUS_LOCAL);
        let r: *const u8 = guard(std::ptr::null(), || panic!("static text"));
        assert!(r.is_null());
        assert!(last().contains("panic: static text"), "{}", last());
    }

    #[test]
    fn errors_are_per_thread_and_survive_success() {
        let r: c_int = guard(-1, || Err(Failure::local("first thread's error")));
        assert_eq!(r, -1);
        std::thread::spawn(|| {
            assert_eq!(last(), "no error", "a new thread starts clean");
            let _: c_int = guard(-1, || Err(Failure::local("other thread")));
            assert_eq!(last(), "other thread");
        })
        .join()
        .unwrap();
        assert_eq!(last(), "first thread's error");
        let ok: c_int = guard(-1, || Ok(0));
        assert_eq!(ok, 0);
        assert_eq!(
            last(),
            "first thread's error",
            "success leaves it, like errno"
        );
    }

    #[test]
    fn a_server_status_is_kept_and_nul_bytes_are_cut() {
        let e = Error::Server {
            status: objmapper_client::Status::NotFound,
            message: "gone\0hidden".into(),
        };
        let _: c_int = guard(-1, || Err(e.into()));
        assert_eq!(last(), "NOT_FOUND: gone");
        assert_eq!(objm_last_status(), 1);
    }
}
