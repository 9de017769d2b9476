//! Responses: the heap `objm_response_t` built for each reply (and everything it points
//! to), taking its fd, and freeing it.

use std::ffi::{c_char, c_int, CString};
use std::os::fd::IntoRawFd;

use objmapper_client::{Error, GetReply, Metadata, Reply};

use crate::error::{guard, Failure};
use crate::ffi;
use crate::types::*;

/// A response and everything it points to, in one allocation that `objm_response_free`
/// releases. `public` comes first so a pointer to it is a pointer to the whole.
#[repr(C)]
struct OwnedResponse {
    public: objm_response_t,
    message: CString,
    data: Vec<u8>,
    names: Vec<CString>,
    values: Vec<Vec<u8>>,
    pairs: Vec<objm_meta_pair_t>,
}

pub(crate) fn empty_meta() -> objm_meta_t {
    objm_meta_t {
        size: 0,
        version: 0,
        mtime_ns: 0,
        checksum: 0,
        expires_at: 0,
        tier: OBJM_TIER_UNKNOWN,
        state: 0,
        content_type: [0; 256],
    }
}

/// Copies wire metadata into the C struct.
pub(crate) fn fill_meta(out: &mut objm_meta_t, m: &Metadata) {
    out.size = m.size.unwrap_or(0);
    out.version = m.version.unwrap_or(0);
    out.mtime_ns = m.mtime_ns.unwrap_or(0);
    out.checksum = m.checksum.unwrap_or(0);
    out.expires_at = m.expires_at.unwrap_or(0);
    out.tier = m.tier.map_or(OBJM_TIER_UNKNOWN, |t| t.as_u8());
    out.state = m.state.map_or(0, |s| s.bits());
    out.content_type = [0; 256];
    if let Some(ct) = &m.content_type {
        // At most 255 bytes on the wire; cut at a NUL so C sees all of what fits.
        let b = ct.as_bytes();
        let n = b
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(b.len())
            .min(OBJM_MAX_CONTENT_TYPE_LEN);
        for (d, s) in out.content_type.iter_mut().zip(&b[..n]) {
            *d = *s as c_char;
        }
    }
}

/// Builds a heap response for a request's outcome.
pub(crate) fn build_response(
    id: u32,
    op: u8,
    outcome: Result<Reply, Error>,
) -> *mut objm_response_t {
    let mut r = Box::new(OwnedResponse {
        public: objm_response_t {
            id,
            status: OBJM_STATUS_OK,
            op,
            mode: OBJM_MODE_DEFAULT,
            reserved: 0,
            fd: -1,
            offset: 0,
            length: 0,
            data: std::ptr::null(),
            data_len: 0,
            handle: 0,
            meta: empty_meta(),
            custom: std::ptr::null(),
            custom_count: 0,
            message: std::ptr::null(),
        },
        message: CString::default(),
        data: Vec::new(),
        names: Vec::new(),
        values: Vec::new(),
        pairs: Vec::new(),
    });
    let mut meta = None;
    let not_found = |r: &mut OwnedResponse| {
        r.public.status = OBJM_STATUS_NOT_FOUND;
        r.message = CString::from(c"no object under that key");
    };
    match outcome {
        Ok(Reply::Get(GetReply::Fd(o))) => {
            r.public.mode = OBJM_MODE_FDPASS;
            r.public.offset = o.offset;
            r.public.length = o.length;
            r.public.fd = o.fd.into_raw_fd();
            meta = Some(o.meta);
        }
        Ok(Reply::Get(GetReply::Bytes(b, m))) => {
            r.public.mode = OBJM_MODE_COPY;
            r.public.length = b.len() as u64;
            r.data = b;
            meta = Some(m);
        }
        Ok(Reply::Head(m) | Reply::Put(m) | Reply::Commit(m) | Reply::Ban(m)) => meta = Some(m),
        Ok(Reply::Staged(s)) => {
            r.public.mode = OBJM_MODE_FDPASS;
            r.public.handle = s.handle;
            r.public.fd = s.fd.into_raw_fd();
        }
        Ok(Reply::Delete(true) | Reply::Pin(true) | Reply::Ping | Reply::Abort) => {}
        Ok(Reply::Delete(false) | Reply::Pin(false)) => not_found(&mut r),
        Ok(other) => {
            // `Reply` is non_exhaustive: a reply kind this library does not know yet.
            r.public.status = OBJM_STATUS_INTERNAL;
            r.message = cstring(format!("libobjmapper cannot represent the reply {other:?}"));
        }
        Err(e) => {
            r.public.status = e.status().map_or(OBJM_STATUS_INTERNAL, |s| s.as_u8());
            r.message = cstring(match e {
                Error::Server { message, .. } => message,
                e => e.to_string(),
            });
        }
    }
    if let Some(m) = meta {
        fill_meta(&mut r.public.meta, &m);
        for (name, value) in m.custom {
            r.names.push(cstring(name));
            r.values.push(value);
        }
    }
    let pairs: Vec<objm_meta_pair_t> = r
        .names
        .iter()
        .zip(&r.values)
        .map(|(n, v)| objm_meta_pair_t {
            name: n.as_ptr(),
            value: v.as_ptr().cast(),
            value_len: v.len(),
        })
        .collect();
    r.pairs = pairs;
    // Pointers into heap buffers owned by `r`: they stay put when the Box is moved.
    r.public.custom = if r.pairs.is_empty() {
        std::ptr::null()
    } else {
        r.pairs.as_ptr()
    };
    r.public.custom_count = r.pairs.len();
    if !r.data.is_empty() {
        r.public.data = r.data.as_ptr().cast();
    }
    r.public.data_len = r.data.len();
    r.public.message = r.message.as_ptr();
    ffi::into_handle(r).cast::<objm_response_t>()
}

/// A CString of `s` up to its first NUL.
pub(crate) fn cstring(s: String) -> CString {
    let mut b = s.into_bytes();
    if let Some(i) = b.iter().position(|&c| c == 0) {
        b.truncate(i);
    }
    CString::new(b).unwrap_or_default()
}

/// Takes the fd out of a response: returns it and leaves -1 in `resp->fd`, so that
/// `objm_response_free()` does not close it.
///
/// Returns the fd, or -1 if `resp` is NULL or carries no fd (see `objm_last_error()`).
///
/// Ownership: the caller owns the returned fd and must close it.
///
/// Thread-safety: a response may be used from any thread, by one at a time.
///
/// # Safety
/// `resp` is NULL or a live response from this library.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_response_take_fd(resp: *mut objm_response_t) -> c_int {
    guard(-1, || {
        // SAFETY: the function's contract: `resp` is NULL or a live response, ours for the
        // call.
        let r = unsafe { ffi::object_mut(resp, "resp") }?;
        if r.fd < 0 {
            return Err(Failure::local(
                "the response carries no fd (not an fd-mode reply, or it was already taken)",
            ));
        }
        Ok(std::mem::replace(&mut r.fd, -1))
    })
}

/// Frees a response: closes `resp->fd` if it is still >= 0 (take it first with
/// `objm_response_take_fd()` to keep it), and frees `data`, `custom` and `message`.
/// NULL is ignored. A response must be freed exactly once.
///
/// Thread-safety: any thread may free a response.
///
/// # Safety
/// `resp` is NULL or a response from this library not freed yet.
#[no_mangle]
#[allow(unsafe_code)] // exported: see `ffi`
pub unsafe extern "C" fn objm_response_free(resp: *mut objm_response_t) {
    guard((), || {
        let resp = resp.cast::<OwnedResponse>();
        // SAFETY: the function's contract: `resp` is NULL or came from `build_response`
        // (`into_handle` of a boxed `OwnedResponse`, whose first field it points to:
        // repr(C), so at offset 0), and is not freed yet.
        let Some(owned) = (unsafe { ffi::take_box(resp) }) else {
            return Ok(());
        };
        let fd = owned.public.fd;
        if fd >= 0 {
            // SAFETY: a response owns its fd until taken (the caller sets -1 if taken).
            drop(unsafe { ffi::own_fd(fd) });
        }
        drop(owned);
        Ok(())
    })
}
