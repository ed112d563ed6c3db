//! The process's allocator: mimalloc for the server; for compute workers, polars' out-of-core
//! allocator (the system allocator, counted).
//!
//! The serving path allocates heavily from several threads, where glibc malloc showed up in
//! profiles (~6% of serving CPU) and mimalloc does better. A compute worker is a fresh process
//! that runs one polars query; there mimalloc made the streaming group-by of 10M rows 1.5-2x
//! slower than glibc malloc (measured side by side, alternating, the same job: 4.8-6.1 s
//! against 2.7-3.4 s). And polars spills a query's state to disk past
//! `POLARS_OOC_MEMORY_BUDGET_MB` only when its own allocator counts what is allocated. The
//! server starts workers with `WORKER_ALLOCATOR_VARIABLE` set; the choice is made once, at the
//! first allocation, from the environment (`getenv` does not allocate), so every allocation of
//! a process goes through the same allocator.
//!
//! mimalloc keeps its default purge delay (1 s): freed pages are returned to the system only
//! when the allocator is next called after it, so what tokio's blocking threads free (Delta
//! commits run there) can stay resident once they go idle. 120 small JSON ingests leave the
//! server at 164-285 MiB against 112-136 MiB with a purge delay of 0 (four runs each,
//! 2026-12-05), and that stays about as much above at 480 ingests (242 against 185 MiB). A
//! delay of 0 made every freed page an `madvise` and its next use a page fault, with TLB
//! shootdowns across cores: batch serving took 24% more CPU a request and ran 13-23% slower
//! for it. A delay of 10 ms cost serving 3-6% of its CPU with no clear gain in memory, and a
//! thread forcing `mi_collect` every second made no measurable difference (docs/performance.md).

use std::alloc::{GlobalAlloc, Layout};

use polars_ooc::Allocator as System;
use std::sync::atomic::{AtomicU8, Ordering};

/// Set (to anything) in a worker's environment to give it the system allocator.
pub const WORKER_ALLOCATOR_VARIABLE: &str = "FEATURE_STORE_SYSTEM_ALLOCATOR";

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOSEN: AtomicU8 = AtomicU8::new(UNDECIDED);

pub struct Allocator;

#[inline]
fn system() -> bool {
    match CHOSEN.load(Ordering::Relaxed) {
        MIMALLOC => false,
        SYSTEM => true,
        _ => {
            // SAFETY: the name is a NUL-terminated constant; getenv only reads the environment.
            let set =
                unsafe { !libc::getenv(c"FEATURE_STORE_SYSTEM_ALLOCATOR".as_ptr()).is_null() };
            CHOSEN.store(if set { SYSTEM } else { MIMALLOC }, Ordering::Relaxed);
            set
        }
    }
}

// SAFETY: every call goes to the allocator chosen once for the whole process, so a block is
// always freed by the allocator that made it.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if system() {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if system() {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if system() {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if system() {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_variable_named_in_the_docs_is_the_one_read() {
        assert_eq!(
            super::WORKER_ALLOCATOR_VARIABLE,
            "FEATURE_STORE_SYSTEM_ALLOCATOR"
        );
    }
}
