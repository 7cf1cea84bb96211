//! The global allocator of the `gateway` binary and of its benches: mimalloc, asked for a plain
//! block wherever a plain block is aligned enough, and through its aligned API only for the
//! rare request that needs more than a machine word's alignment.
//!
//! Why not the `mimalloc` crate's allocator: it sends every request, even a `String`'s
//! (alignment 1), through `mi_malloc_aligned`. mimalloc 3 serves that from the size's own
//! page only while the page's free list holds a block; when the list runs dry it falls back to
//! over-allocating (size + alignment - 1, a larger size class), which never refills the page.
//! From then on every request of that size takes the slow path into a larger block
//! (mimalloc issue #889; mimalloc_rust pull request #170). Counted on the gateway: 19 of the
//! 108 allocations of a passthrough request took that path, and the plain calls cut S1's
//! instructions per request by 3 % and ALL's by 2 % (benches/README.md, issue 13, fourteenth
//! part).
//!
//! Every mimalloc block is a whole number of machine words from a page start aligned to 16
//! bytes, so `mi_malloc` always answers a request aligned to a word or less.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::mem::size_of;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The largest alignment every mimalloc block has: one machine word (`MI_INTPTR_SIZE`).
const PLAIN_ALIGN: usize = size_of::<usize>();

/// mimalloc as a Rust global allocator (`#[global_allocator] static A: Mimalloc = Mimalloc;`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mimalloc;

/// Whether a block of mimalloc's plain API is aligned enough for `align`.
#[inline]
fn plain(align: usize) -> bool {
    align <= PLAIN_ALIGN
}

// SAFETY: each method hands the request to mimalloc, which returns a block of at least the
// size asked (or null) that stays valid until `mi_free`. The plain calls are taken only for an
// alignment of at most a word, which every mimalloc block has (module docs); larger alignments
// go to the aligned API. A block keeps the alignment of the layout it was allocated with, so
// `realloc` takes the same branch as the `alloc` that made the block.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and a power-of-two alignment,
        // which `Layout` guarantees.
        unsafe {
            if plain(layout.align()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned, so one mimalloc made;
        // `mi_free` takes blocks of the plain and the aligned API alike.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block of this allocator made for `layout`; the new block
        // keeps its alignment, and mimalloc copies the contents and frees the old block.
        unsafe {
            if plain(layout.align()) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    // The test binary runs on it too: the harness's own allocations exercise it as well.
    #[global_allocator]
    static GLOBAL: Mimalloc = Mimalloc;

    /// The sizes tried: every small size class and its neighbours, then medium and large.
    fn sizes() -> Vec<usize> {
        let mut sizes: Vec<usize> = (1..=130).collect();
        sizes.extend([
            255,
            256,
            257,
            1023,
            1024,
            1025,
            4095,
            4096,
            13_720,
            65_536,
            1 << 20,
        ]);
        sizes
    }

    fn fill(ptr: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: `ptr` is a live block of at least `len` bytes.
            unsafe { ptr.add(i).write(seed.wrapping_add(i as u8)) }
        }
    }

    fn holds(ptr: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: `ptr` is a live block of at least `len` initialised bytes.
        (0..len).all(|i| unsafe { ptr.add(i).read() } == seed.wrapping_add(i as u8))
    }

    #[test]
    fn every_block_has_the_alignment_asked_and_keeps_its_bytes_through_realloc() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in sizes() {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // enough blocks of one size to run a page's free list dry
                let count = if size <= 1024 { 200 } else { 4 };
                let mut blocks = Vec::with_capacity(count);
                for n in 0..count {
                    // SAFETY: the layout's size is not zero.
                    let ptr = unsafe { Mimalloc.alloc(layout) };
                    assert!(!ptr.is_null(), "size {size} align {align}");
                    assert_eq!(ptr as usize % align, 0, "size {size} align {align}");
                    fill(ptr, size, n as u8);
                    blocks.push(ptr);
                }
                for (n, ptr) in blocks.into_iter().enumerate() {
                    let seed = n as u8;
                    assert!(holds(ptr, size, seed), "size {size} align {align}");
                    // grow, then shrink below the first size: the prefix survives each move
                    let grown = size * 3 + 5;
                    // SAFETY: `ptr` is live, made for `layout`; `grown` is not zero.
                    let ptr = unsafe { Mimalloc.realloc(ptr, layout, grown) };
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % align, 0, "grown {size} align {align}");
                    assert!(holds(ptr, size, seed), "grown {size} align {align}");
                    let grown_layout = Layout::from_size_align(grown, align).expect("valid");
                    let shrunk = size.div_ceil(2);
                    // SAFETY: as above, for the grown block.
                    let ptr = unsafe { Mimalloc.realloc(ptr, grown_layout, shrunk) };
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % align, 0, "shrunk {size} align {align}");
                    assert!(holds(ptr, shrunk, seed), "shrunk {size} align {align}");
                    let shrunk_layout = Layout::from_size_align(shrunk, align).expect("valid");
                    // SAFETY: the live block and the layout it now has.
                    unsafe { Mimalloc.dealloc(ptr, shrunk_layout) };
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_where_freed_blocks_were_dirty() {
        for align in [1, 8, 16, 64] {
            for size in sizes() {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // dirty blocks of this size and give them back, so the zeroed ones reuse them
                let dirty: Vec<*mut u8> = (0..16)
                    .map(|_| {
                        // SAFETY: the layout's size is not zero.
                        let ptr = unsafe { Mimalloc.alloc(layout) };
                        fill(ptr, size, 0xA5);
                        ptr
                    })
                    .collect();
                for ptr in dirty {
                    // SAFETY: live blocks made for `layout`.
                    unsafe { Mimalloc.dealloc(ptr, layout) };
                }
                for _ in 0..16 {
                    // SAFETY: the layout's size is not zero.
                    let ptr = unsafe { Mimalloc.alloc_zeroed(layout) };
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % align, 0);
                    // SAFETY: a live block of `size` bytes, zeroed, so initialised.
                    let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
                    assert!(bytes.iter().all(|&b| b == 0), "size {size} align {align}");
                    // SAFETY: the live block and its layout.
                    unsafe { Mimalloc.dealloc(ptr, layout) };
                }
            }
        }
    }

    /// The defect this crate exists for: a word-aligned request must be served from its own
    /// size class (the block `mi_malloc` gives that size) however many blocks of that size are
    /// live, never from a larger class after its page's free list ran dry.
    #[test]
    fn word_aligned_requests_stay_in_their_size_class_past_a_full_page() {
        for (size, align) in [(48, 8), (24, 8), (40, 4), (56, 1), (160, 8)] {
            let layout = Layout::from_size_align(size, align).expect("a valid layout");
            // 5,000 blocks span several 64 KiB pages of the class, so pages fill up
            let blocks: Vec<*mut u8> = (0..5_000)
                // SAFETY: the layout's size is not zero.
                .map(|_| unsafe { Mimalloc.alloc(layout) })
                .collect();
            // SAFETY: a query of mimalloc's size classes, no memory involved.
            let class = unsafe { libmimalloc_sys::mi_good_size(size) };
            let oversized = blocks
                .iter()
                // SAFETY: each is a live mimalloc block.
                .filter(|&&p| unsafe { libmimalloc_sys::mi_usable_size(p.cast()) } != class)
                .count();
            for ptr in blocks {
                // SAFETY: live blocks made for `layout`.
                unsafe { Mimalloc.dealloc(ptr, layout) };
            }
            assert_eq!(
                oversized, 0,
                "{oversized} of 5000 blocks of {size} bytes were not of its {class}-byte class"
            );
        }
    }
}
