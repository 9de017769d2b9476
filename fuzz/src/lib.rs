//! Shared by the fuzz targets: a global allocator that aborts (with a message) on any
//! single allocation larger than [`MAX_ALLOC`], so "no allocation beyond the declared
//! limits" is checked on every input, not hoped for.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a decoder may make: the largest frame a decoder may
/// buffer, times two for a re-encoding, plus slack for the fuzzer's own bookkeeping of
/// the input (capped by -max_len).
pub const MAX_ALLOC: usize = 2 * objmapper_proto::check::MAX_FRAME + (1 << 20);

/// The limiting allocator; install with `#[global_allocator]`.
pub struct Limited;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the only addition is a size check before allocating.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: `ptr`/`layout` come from a previous allocation by `System`; the caller
        // upholds realloc's contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > MAX_ALLOC {
        // No allocation here: write a fixed message and abort (libFuzzer records a crash).
        let msg = b"allocation larger than MAX_ALLOC\n";
        // SAFETY: writing a valid buffer of its own length to stderr (fd 2).
        unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
        std::process::abort();
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}
