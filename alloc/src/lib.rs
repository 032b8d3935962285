//! The gateway's global allocator: mimalloc, called the way C calls `malloc` whenever the
//! layout allows it.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned`. That function's fast
//! path only serves blocks of up to 1 KiB that happen to be aligned already; every larger
//! buffer (Pingora's header and body buffers, about 20 per proxied request) took its slow
//! path at about 160 instructions each. Every mimalloc block is at least word-aligned
//! (block sizes are whole words, pages are aligned), so a layout whose alignment is at most
//! a word needs no alignment request: it goes to `mi_malloc`, as `malloc` would. Larger
//! alignments still go through the aligned functions.
//!
//! This is the gateway's only `unsafe` code, kept in a crate of its own so that the
//! `gatehouse` crates can keep `#![forbid(unsafe_code)]`.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as ffi;

/// The alignment of every block mimalloc returns.
const WORD: usize = core::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator]`).
pub struct MiMalloc;

// SAFETY: every function returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()`: mimalloc's blocks are word-aligned, and a larger alignment is asked of
// mimalloc explicitly. A block is freed and resized by the mimalloc functions that match how
// it was allocated: `realloc` receives the layout it was allocated with (GlobalAlloc's
// contract), so the alignment test picks the same family again.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size and alignment; a bad
        // alignment only yields null.
        unsafe {
            if layout.align() <= WORD {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if layout.align() <= WORD {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` is a live block from this allocator (the caller's contract), and
        // `mi_free` frees blocks of either family.
        unsafe { ffi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block allocated with `layout` (the caller's contract);
        // both functions keep the contents up to the smaller size and free the old block
        // only on success.
        unsafe {
            if layout.align() <= WORD {
                ffi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 14] = [
        1,
        7,
        8,
        9,
        24,
        100,
        1000,
        1024,
        1025,
        4096,
        8193,
        65536,
        70_001,
        5 << 20,
    ];
    const ALIGNS: [usize; 8] = [1, 2, 4, 8, 16, 64, 4096, 1 << 16];

    fn layouts() -> impl Iterator<Item = Layout> {
        SIZES.iter().flat_map(|&size| {
            ALIGNS
                .iter()
                .map(move |&align| Layout::from_size_align(size, align).expect("layout"))
        })
    }

    #[test]
    fn blocks_have_the_layouts_size_and_alignment() {
        for layout in layouts() {
            // SAFETY: the layouts have non-zero sizes; each block is written within its size
            // and freed once with its own layout.
            unsafe {
                let p = MiMalloc.alloc(layout);
                assert!(!p.is_null(), "{layout:?}");
                assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
                p.write_bytes(0xa5, layout.size());
                assert_eq!(*p.add(layout.size() - 1), 0xa5);
                MiMalloc.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        for layout in layouts() {
            // SAFETY: as above; a dirty block of the same layout is freed first so the zeroed
            // one is likely to reuse it.
            unsafe {
                let dirty = MiMalloc.alloc(layout);
                dirty.write_bytes(0xff, layout.size());
                MiMalloc.dealloc(dirty, layout);
                let p = MiMalloc.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
                let bytes = core::slice::from_raw_parts(p, layout.size());
                assert!(bytes.iter().all(|&b| b == 0), "{layout:?}");
                MiMalloc.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_and_alignment() {
        for layout in layouts() {
            for new_size in [1, layout.size() / 2 + 1, layout.size() * 3 + 5] {
                // SAFETY: as above; after `realloc` the old pointer is not used and the new
                // block is freed with the layout of its new size.
                unsafe {
                    let p = MiMalloc.alloc(layout);
                    for i in 0..layout.size() {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = MiMalloc.realloc(p, layout, new_size);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % layout.align(), 0, "{layout:?} -> {new_size}");
                    for i in 0..layout.size().min(new_size) {
                        assert_eq!(
                            *q.add(i),
                            (i % 251) as u8,
                            "{layout:?} -> {new_size} at {i}"
                        );
                    }
                    let grown = Layout::from_size_align(new_size, layout.align()).expect("layout");
                    MiMalloc.dealloc(q, grown);
                }
            }
        }
    }
}
