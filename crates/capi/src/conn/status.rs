//! Status names.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

use objmapper_client::Status;

use super::response::cstring;
use crate::error::guard;
use crate::types::*;

fn status_names() -> &'static [CString] {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut v = Vec::new();
        for s in Status::ALL {
            let i = usize::from(s.as_u8());
            if v.len() <= i {
                v.resize(i + 1, CString::from(c"UNKNOWN"));
            }
            v[i] = cstring(s.name().to_owned());
        }
        v
    })
}

/// Returns the name of a status (`OBJM_STATUS_*`), e.g. "NOT_FOUND"; "LOCAL" for
/// `OBJM_STATUS_LOCAL`; "UNKNOWN" for a value no status has.
///
/// Ownership: a static string; never free it. Never NULL.
///
/// Thread-safety: safe from any thread.
#[no_mangle]
#[allow(unsafe_code)] // exported (#[no_mangle]): see `ffi`
pub extern "C" fn objm_status_name(status: c_int) -> *const c_char {
    guard(c"UNKNOWN".as_ptr(), || {
        if status == OBJM_STATUS_LOCAL {
            return Ok(c"LOCAL".as_ptr());
        }
        let name = usize::try_from(status)
            .ok()
            .and_then(|i| status_names().get(i))
            .map_or(c"UNKNOWN".as_ptr(), |n| n.as_ptr());
        Ok(name)
    })
}
