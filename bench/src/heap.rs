//! The bench's allocator: mimalloc, as the relay (see relay-server/src/main.rs), counting the
//! bytes each thread has allocated and not freed. The memory of a document is what its
//! building left live on the thread that built it: the process's RSS says nothing useful
//! under mimalloc, which keeps freed pages for reuse (after the network benchmarks, a 100k-op
//! document's RSS growth read 8 MiB of its ~30).
//!
//! A thread-local count costs an add per allocation (no atomic, no lock), so the apply
//! timings stay the allocator's own.

use std::{
    alloc::{GlobalAlloc, Layout},
    cell::Cell,
};

use mimalloc::MiMalloc;

pub(crate) struct CountingMimalloc;

thread_local! {
    /// Bytes allocated on this thread less bytes freed on it.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // A const-initialized `Cell` has no destructor, so this holds even while a thread ends.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

/// Bytes allocated and not yet freed on this thread, since it started.
pub(crate) fn live_bytes() -> isize {
    LIVE.try_with(Cell::get).unwrap_or_default()
}

// SAFETY: every call is passed to mimalloc unchanged; only a thread-local count is added.
unsafe impl GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: as `alloc`.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as `alloc`.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as `alloc`.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}
