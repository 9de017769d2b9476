//! The C boundary: the one module of this crate that may use `unsafe`.
//!
//! Everything that trusts a C caller lives here: reading and writing through the pointers
//! it passes, turning handles back into the boxes they came from, taking ownership of the
//! fds it hands over, and the libc calls on raw memory. Each function states, under
//! `# Safety`, what the C caller promises for it; those promises are the ones the header
//! (`include/objmapper.h`, generated from the exported functions' doc comments) asks of
//! C code, so an exported function meets them by forwarding its own contract.
//!
//! The rest of the crate is compiled with `unsafe_code` denied. An exported function
//! carries `#[allow(unsafe_code)]` only because `#[no_mangle]` and `unsafe extern "C" fn`
//! count as unsafe code; its body touches C memory only through one of these functions,
//! each call in its own `unsafe { ffi::...(...) }` block with a `// SAFETY:` comment
//! (`tests/unsafe_boundary.rs` checks both rules).
//!
//! What is checked here rather than trusted: NULL (refused, or the empty slice when the
//! length is 0), lengths that no allocation can have (over `isize::MAX` bytes), keys over
//! `OBJM_MAX_KEY_LEN` (refused before anything is read), and strings, which are never
//! read past their bound.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Failure, Res};
use crate::types::{objm_meta_pair_t, objm_request_t, OBJM_MAX_KEY_LEN};

/// `len` bytes at `ptr`: the empty slice when `len` is 0 (whatever `ptr` is); refused
/// when `ptr` is NULL with `len` > 0 or `len` is over `isize::MAX`.
///
/// # Safety
/// If `ptr` is non-NULL and `len` > 0, `ptr` points to `len` readable bytes that stay
/// valid and unchanged for `'a` (the header: "`data` points to `len` bytes (or is NULL
/// with 0)").
pub(crate) unsafe fn bytes<'a>(ptr: *const c_void, len: usize, what: &str) -> Res<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::local(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::local(format!("{what} length {len} is impossible")));
    }
    // SAFETY: non-NULL, at most isize::MAX bytes, and readable and unchanged for `'a` by
    // the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// `len` writable bytes at `ptr`, with the checks of [`bytes`].
///
/// # Safety
/// If `ptr` is non-NULL and `len` > 0, `ptr` points to `len` writable bytes that nothing
/// else reads or writes during `'a` (the header: "a non-NULL `*buf` points to `*len`
/// writable bytes").
pub(crate) unsafe fn bytes_mut<'a>(ptr: *mut c_void, len: usize, what: &str) -> Res<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(Failure::local(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::local(format!("{what} length {len} is impossible")));
    }
    // SAFETY: non-NULL, at most isize::MAX bytes, writable and not aliased for `'a` by the
    // caller's promise.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
}

/// A key (or ban expression) the caller passed: `len` bytes at `ptr`. `len` is bounded
/// by `OBJM_MAX_KEY_LEN` before anything is trusted; an empty key is passed on (the
/// client refuses it with its reason).
///
/// # Safety
/// If `len` is within the bound and `ptr` is non-NULL, `ptr` points to `len` readable
/// bytes that stay valid and unchanged for `'a` (the header: "`uri` points to `uri_len`
/// bytes").
pub(crate) unsafe fn key<'a>(ptr: *const c_char, len: usize) -> Res<&'a [u8]> {
    if len > OBJM_MAX_KEY_LEN {
        return Err(Failure::local(format!(
            "uri_len {len} exceeds OBJM_MAX_KEY_LEN ({OBJM_MAX_KEY_LEN})"
        )));
    }
    // SAFETY: the caller's promise, for a length within the bound.
    unsafe { bytes(ptr.cast(), len, "uri") }
}

/// A NUL-terminated string argument, read at most to its bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text<'a> {
    /// The pointer was NULL.
    Null,
    /// No NUL within the bound: longer than allowed (or not terminated).
    TooLong,
    /// The bytes before the NUL (no NUL among them; not checked for UTF-8).
    Bytes(&'a [u8]),
}

/// The NUL-terminated string at `ptr`, if it is at most `max` bytes long. Reads at most
/// `max + 1` bytes, so an unterminated string is refused, not overrun.
///
/// # Safety
/// If `ptr` is non-NULL it points to a NUL-terminated string, or to at least `max + 1`
/// readable bytes, which stay valid and unchanged for `'a` (the header: "`path` is NULL
/// or a NUL-terminated string").
pub(crate) unsafe fn text<'a>(ptr: *const c_char, max: usize) -> Text<'a> {
    if ptr.is_null() {
        return Text::Null;
    }
    // SAFETY: strnlen reads at most `max + 1` bytes, and stops at the first NUL: all
    // readable by the caller's promise.
    let len = unsafe { libc::strnlen(ptr, max.saturating_add(1)) };
    if len > max {
        return Text::TooLong;
    }
    // SAFETY: the `len` bytes before the NUL were just read, so they are readable, and
    // they stay unchanged for `'a` by the promise.
    Text::Bytes(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// `len` values of `T` at `ptr`: the empty slice when `len` is 0; `None` when `ptr` is
/// NULL with `len` > 0 or the length is impossible (callers word the error).
///
/// # Safety
/// If `ptr` is non-NULL and `len` > 0, `ptr` is aligned and points to `len` initialised
/// values of `T` that stay valid and unchanged for `'a`.
pub(crate) unsafe fn slice_of<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() || len.checked_mul(std::mem::size_of::<T>())? > isize::MAX as usize {
        return None;
    }
    // SAFETY: non-NULL, the total size fits isize, and the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The object behind a handle or struct pointer the caller passed, to use and change;
/// NULL is refused ("`what` is NULL").
///
/// # Safety
/// `ptr` is NULL or points to a live, initialised `T` that nothing else reads or writes
/// during `'a` (the header: "a connection is used by one thread at a time").
pub(crate) unsafe fn object_mut<'a, T>(ptr: *mut T, what: &str) -> Res<&'a mut T> {
    // SAFETY: the caller's promise.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::local(format!("{what} is NULL")))
}

/// An out-parameter: where to write a result, or `None` for NULL (the callers decide
/// whether NULL is allowed).
///
/// # Safety
/// `ptr` is NULL or points to memory valid for writing a `T` (and reading it back), that
/// nothing else touches during `'a`. `T` has no drop glue, or the pointee is initialised
/// (every `T` used here is plain C data).
pub(crate) unsafe fn out<'a, T>(ptr: *mut T) -> Option<&'a mut T> {
    // SAFETY: the caller's promise.
    unsafe { ptr.as_mut() }
}

/// A request the caller passed, whose pointers are trusted for its documented lengths.
/// Its fields are read lazily, by the methods, so a field an op does not use is never
/// read (as the request's documentation says: unused fields "must stay 0/NULL", but a
/// caller that leaves garbage there is not punished for it).
#[derive(Clone, Copy)]
pub(crate) struct Request<'a>(&'a objm_request_t);

/// Borrows the request at `ptr`; NULL is refused ("req is NULL").
///
/// # Safety
/// `ptr` is NULL or points to an initialised `objm_request_t`, valid and unchanged for
/// `'a`, whose pointer fields each point to what their lengths say (`uri`: `uri_len`
/// bytes; `data`: `data_len` bytes; `content_type`: NULL or NUL-terminated; `custom`:
/// `custom_count` pairs, each with a NUL-terminated `name` and `value_len` bytes at
/// `value`), all valid and unchanged for `'a`: the header's contract of
/// `objm_client_send_request()`.
pub(crate) unsafe fn request<'a>(ptr: *const objm_request_t) -> Res<Request<'a>> {
    // SAFETY: the caller's promise.
    let r = unsafe { ptr.as_ref() }.ok_or_else(|| Failure::local("req is NULL"))?;
    Ok(Request(r))
}

impl<'a> Request<'a> {
    /// The request's plain fields.
    pub(crate) fn fields(&self) -> &'a objm_request_t {
        self.0
    }

    /// The key (`uri`, `uri_len`), as [`key`] reads it.
    pub(crate) fn key(&self) -> Res<&'a [u8]> {
        // SAFETY: promised by whoever made this `Request` (see `request`).
        unsafe { key(self.0.uri, self.0.uri_len) }
    }

    /// The inline bytes (`data`, `data_len`), as [`bytes`] reads them.
    pub(crate) fn data(&self) -> Res<&'a [u8]> {
        // SAFETY: as in `key`.
        unsafe { bytes(self.0.data, self.0.data_len, "data") }
    }

    /// The content type, read to at most `max` bytes.
    pub(crate) fn content_type(&self, max: usize) -> Text<'a> {
        // SAFETY: as in `key`.
        unsafe { text(self.0.content_type, max) }
    }

    /// The custom pairs (`custom`, `custom_count`), or `None` when `custom` is NULL with
    /// a non-zero count. Callers bound `custom_count` first.
    pub(crate) fn custom(&self) -> Option<impl Iterator<Item = Pair<'a>>> {
        // SAFETY: as in `key`; `objm_meta_pair_t` is repr(C) plain data.
        let pairs = unsafe { slice_of(self.0.custom, self.0.custom_count) }?;
        Some(pairs.iter().map(Pair))
    }
}

/// One custom pair of a [`Request`], trusted as its request is.
#[derive(Clone, Copy)]
pub(crate) struct Pair<'a>(&'a objm_meta_pair_t);

impl<'a> Pair<'a> {
    /// The name, read to at most `max` bytes.
    pub(crate) fn name(&self, max: usize) -> Text<'a> {
        // SAFETY: the pair belongs to a `Request`, whose maker promised its pointers.
        unsafe { text(self.0.name, max) }
    }

    /// The value, as [`bytes`] reads it.
    pub(crate) fn value(&self, what: &str) -> Res<&'a [u8]> {
        // SAFETY: as in `name`.
        unsafe { bytes(self.0.value, self.0.value_len, what) }
    }
}

/// Hands a boxed object to C as an opaque handle (taken back by [`take_box`]).
pub(crate) fn into_handle<T>(b: Box<T>) -> *mut T {
    Box::into_raw(b)
}

/// Takes back the box behind a handle, to free it; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or came from [`into_handle`] with this same `T`, and is not taken back
/// twice nor used afterwards (the header: "a response must be freed exactly once").
pub(crate) unsafe fn take_box<T>(ptr: *mut T) -> Option<Box<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: from Box::into_raw with the same type, and this is its only taking back.
    Some(unsafe { Box::from_raw(ptr) })
}

/// Takes ownership of an fd the caller hands over (closed when the result drops).
///
/// # Safety
/// `fd` is open and owned by the caller, who gives it up: nothing else closes or uses it
/// afterwards (the header: "whenever `fd >= 0`, it passes to the library").
pub(crate) unsafe fn own_fd(fd: c_int) -> OwnedFd {
    // SAFETY: the caller's promise.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The socket's `SO_TYPE` (`SOCK_STREAM`, ...), or why it has none (not a socket).
pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> std::io::Result<c_int> {
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `fd` is open for the call (borrowed); `ty`/`len` are valid out-pointers of
    // the sizes getsockopt(SO_TYPE) writes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(ty)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A zeroed buffer from the C allocator, for C to free with `objm_buffer_free()`; freed
/// on drop unless handed over with [`CBuffer::into_raw`].
pub(crate) struct CBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl CBuffer {
    /// Allocates `len` bytes (at least 1, so the pointer is never NULL), zeroed; `None`
    /// when the allocator says no or `len` is over `isize::MAX`.
    pub(crate) fn alloc(len: usize) -> Option<CBuffer> {
        if len > isize::MAX as usize {
            return None;
        }
        // SAFETY: plain calloc of a non-zero size; the result is checked for NULL.
        let p = unsafe { libc::calloc(len.max(1), 1) }.cast::<u8>();
        Some(CBuffer {
            ptr: NonNull::new(p)?,
            len,
        })
    }

    /// The buffer's bytes.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` zeroed (so initialised) bytes allocated above, owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Hands the buffer to C, which frees it with `objm_buffer_free()`.
    pub(crate) fn into_raw(self) -> *mut c_void {
        let p = self.ptr.as_ptr().cast();
        std::mem::forget(self);
        p
    }
}

impl Drop for CBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by calloc in `alloc` and not handed out (`into_raw` forgets).
        unsafe { libc::free(self.ptr.as_ptr().cast()) }
    }
}

/// Frees a buffer that [`CBuffer::into_raw`] handed to C; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or came from [`CBuffer::into_raw`] and is not freed yet nor used
/// afterwards (the header: "a buffer from `objm_get_copy()` not freed yet").
pub(crate) unsafe fn free_buffer(ptr: *mut c_void) {
    // SAFETY: from calloc (through CBuffer), by the caller's promise; free(NULL) is a no-op.
    unsafe { libc::free(ptr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_empty_only_with_length_zero() {
        // SAFETY: NULL pointers, or lengths 0: nothing is read.
        unsafe {
            assert_eq!(bytes(std::ptr::null(), 0, "data").unwrap(), b"");
            let e = bytes(std::ptr::null(), 3, "data").unwrap_err();
            assert_eq!(e.message, "data is NULL but its length is 3");
            assert!(slice_of::<u64>(std::ptr::null(), 2).is_none());
            assert!(out::<u64>(std::ptr::null_mut()).is_none());
            let e = object_mut::<u64>(std::ptr::null_mut(), "conn").unwrap_err();
            assert_eq!(e.message, "conn is NULL");
        }
    }

    #[test]
    fn keys_are_bounded_before_they_are_read() {
        // A length over the bound is refused without looking at the pointer.
        // SAFETY: nothing is read: the length is refused first.
        let e = unsafe { key(std::ptr::NonNull::dangling().as_ptr(), OBJM_MAX_KEY_LEN + 1) }
            .unwrap_err();
        assert!(
            e.message.contains("exceeds OBJM_MAX_KEY_LEN"),
            "{}",
            e.message
        );
    }

    #[test]
    fn text_never_reads_past_its_bound() {
        let unterminated = [b'a'; 4];
        // SAFETY: `max + 1` (4) bytes are readable.
        let t = unsafe { text(unterminated.as_ptr().cast(), 3) };
        assert!(matches!(t, Text::TooLong));
        // SAFETY: a NUL-terminated literal.
        let t = unsafe { text(c"abc".as_ptr(), 3) };
        assert!(matches!(t, Text::Bytes(b"abc")));
        // SAFETY: NULL is not read.
        assert!(matches!(unsafe { text(std::ptr::null(), 3) }, Text::Null));
    }

    #[test]
    fn a_c_buffer_is_zeroed_and_never_null() {
        let mut b = CBuffer::alloc(0).unwrap();
        assert!(b.as_mut_slice().is_empty());
        let mut b2 = CBuffer::alloc(16).unwrap();
        assert_eq!(b2.as_mut_slice(), &[0u8; 16]);
        let p = b.into_raw();
        assert!(!p.is_null());
        // SAFETY: from `into_raw`, freed once.
        unsafe { free_buffer(p) };
    }
}
