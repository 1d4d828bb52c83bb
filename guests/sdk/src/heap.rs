//! The allocator a handler gets without the standard library.
//!
//! Blocks come in power-of-two size classes from 16 bytes up, each class with
//! its own free list, so allocating and freeing are a few loads and stores.
//! New blocks are carved from the memory the module starts with, past its
//! static data, and only then from `memory.grow`: growing a linear memory
//! costs the host a change of page protections, which for a fresh instance
//! per delivery is dearer than everything else the allocator does.
//!
//! A freed block serves the next allocation of its class, so an instance that
//! serves many deliveries (`isolation = "reuse"`) stops growing once each
//! class holds as many blocks as one delivery needs at a time. The price of
//! no headers and constant time: a block can be up to twice the size asked
//! for, and memory given to one class is not given back to another.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const PAGE: usize = 65536;

/// The smallest block, as a power of two: 16 bytes, room for the free list's
/// link and the alignment of every primitive.
const MIN_CLASS: u32 = 4;

/// One free list per power of two a 32-bit address space can hold.
const CLASSES: usize = 32;

unsafe extern "C" {
    /// Where the linker put the end of static data: free memory starts here.
    static __heap_base: u8;
}

/// The head of each class's free list; 0 when empty. A free block holds the
/// address of the next one in its first word.
static FREE: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];

/// The first byte never handed out; 0 until the first allocation.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The global allocator [`handler!`](crate::handler) installs without std.
pub struct Heap;

/// The size class of a layout: the power of two its blocks have.
fn class(layout: Layout) -> Option<u32> {
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    Some(size.checked_next_power_of_two()?.trailing_zeros())
}

/// Carves a new block off the end of the heap, growing memory if it must.
fn carve(size: usize, align: usize) -> *mut u8 {
    let mut next = NEXT.load(Relaxed);
    if next == 0 {
        next = &raw const __heap_base as usize;
    }
    let Some(start) = next.checked_next_multiple_of(align) else {
        return null_mut();
    };
    let Some(end) = start.checked_add(size) else {
        return null_mut();
    };
    let have = wasm32::memory_size(0) * PAGE;
    if end > have && wasm32::memory_grow(0, (end - have).div_ceil(PAGE)) == usize::MAX {
        return null_mut();
    }
    NEXT.store(end, Relaxed);
    start as *mut u8
}

// SAFETY: WebAssembly components run single-threaded, so the relaxed atomics
// are plain loads and stores with no other thread to race; each block is
// handed out once until it is freed.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            return null_mut();
        };
        let list = &FREE[class as usize];
        let head = list.load(Relaxed);
        // Free blocks are 16-byte aligned; a stricter request may not fit the head.
        if head != 0 && head.is_multiple_of(layout.align()) {
            // SAFETY: `head` is a free block of this class, whose first word
            // `dealloc` set to the next free block.
            list.store(unsafe { *(head as *const usize) }, Relaxed);
            return head as *mut u8;
        }
        carve(1 << class, layout.align().max(1 << MIN_CLASS))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class(layout) else { return };
        let list = &FREE[class as usize];
        // SAFETY: `ptr` is a block of this class (at least 16 bytes, 16-byte
        // aligned) that the caller no longer uses.
        unsafe { (ptr as *mut usize).write(list.load(Relaxed)) };
        list.store(ptr as usize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class(layout) == class(new_layout) {
            return ptr;
        }
        // SAFETY: as for `alloc`, `dealloc` and the copy between two live blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// The canonical ABI's allocator, through which the host writes each message
/// into the instance. With std, the C runtime exports it.
///
/// # Safety
///
/// Called by the host only, with the arguments the canonical ABI defines: a
/// power-of-two `align`, and `old` a live block of `old_len` bytes from an
/// earlier call with the same `align`, or `old_len` 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: see the function's contract.
    let new = unsafe {
        if old_len == 0 {
            Heap.alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            Heap.realloc(
                old,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if new.is_null() {
        wasm32::unreachable();
    }
    new
}
