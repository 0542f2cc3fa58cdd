//! A global allocator that can keep what one thread allocates for a while
//! out of the processes this one forks ([`fork_private`]).
//!
//! A restore forks one stub per process of the image, and each stub
//! copies the page table entries of the restorer's resident memory at its
//! fork and unmaps all of it when it is built: a tree of 100 processes
//! spends much of its time on the restorer's decoded image, which no stub
//! ever reads. Allocations made inside [`fork_private`] come from one
//! region marked MADV_DONTFORK: a fork neither copies nor shares them,
//! and the child must never touch them (their addresses are unmapped
//! there).
//!
//! The region is a bump allocator: memory freed in it is not reused,
//! except by the last block, which grows and shrinks in place (as a `Vec`
//! being filled does); so it suits data made once and kept, such as a
//! decoded image.
//! When it is full, or cannot be made, allocations go to the system
//! allocator as everywhere else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Address space reserved for the region (MAP_NORESERVE: only what is
/// used counts).
const REGION_LEN: usize = 1 << 32;

/// The alignment of every block of the region (glibc malloc's).
const MIN_ALIGN: usize = 16;

/// The region: [base, end), allocated up to `next` (0: not made yet; 1:
/// could not be made).
static BASE: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// The end of the highest block ever handed out (0: none): the region
/// above it was never written, and reads as zeros (a fresh mapping).
static TOUCHED: AtomicUsize = AtomicUsize::new(0);
/// This process is a fork of the one that made the region, which it does
/// not have: nothing more is allocated there (blocks inherited from
/// before the fork are still recognised, and never touched).
static LOST: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread is inside [`fork_private`].
    static PRIVATE: Cell<bool> = const { Cell::new(false) };
}

/// The global allocator of the `ckpt` binary: the system allocator, but
/// inside [`fork_private`] the region left out of forks.
pub struct Allocator;

fn in_region(p: *mut u8) -> bool {
    let base = BASE.load(Ordering::Acquire);
    let a = p as usize;
    base > 1 && a >= base && a < base + REGION_LEN
}

/// Whether `p` points into the region left out of forks.
pub fn is_fork_private(p: *const u8) -> bool {
    in_region(p.cast_mut())
}

fn private() -> bool {
    PRIVATE.try_with(Cell::get).unwrap_or(false)
}

/// `layout` from the region, or None when it is full or not made; with
/// the end of what was handed out before (what may not be zero).
fn bump(layout: Layout) -> Option<(*mut u8, usize)> {
    let base = BASE.load(Ordering::Acquire);
    if base <= 1 || LOST.load(Ordering::Relaxed) {
        return None;
    }
    let end = base + REGION_LEN;
    let mut cur = NEXT.load(Ordering::Relaxed);
    loop {
        // At least malloc's alignment: readers of byte buffers (capnp)
        // count on it.
        let start = cur.checked_next_multiple_of(layout.align().max(MIN_ALIGN))?;
        let stop = start.checked_add(layout.size().max(1))?;
        if stop > end {
            return None;
        }
        match NEXT.compare_exchange_weak(cur, stop, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some((start as *mut u8, TOUCHED.fetch_max(stop, Ordering::AcqRel))),
            Err(now) => cur = now,
        }
    }
}

/// Grow or shrink the region's last allocation `p` (of `old` bytes) in
/// place to `new` bytes: true when done.
fn resize_last(p: *mut u8, old: usize, new: usize) -> bool {
    if LOST.load(Ordering::Relaxed) {
        return false;
    }
    let base = BASE.load(Ordering::Acquire);
    let a = p as usize;
    let Some(stop) = a.checked_add(new.max(1)) else {
        return false;
    };
    if stop > base + REGION_LEN {
        return false;
    }
    let done = NEXT
        .compare_exchange(a + old.max(1), stop, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok();
    if done {
        TOUCHED.fetch_max(stop, Ordering::AcqRel);
    }
    done
}

/// Called in the child of a fork (crate::clone does): the region is not
/// mapped here. Async-signal-safe.
pub fn forked_child() {
    LOST.store(true, Ordering::Relaxed);
}

/// Make the region (once): reserved, private, left out of forks.
fn make_region() {
    if BASE.load(Ordering::Acquire) != 0 || LOST.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: a fresh anonymous mapping at an address the kernel picks;
    // nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let _ = BASE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed);
        return;
    }
    // SAFETY: the mapping just made, which holds no data yet.
    let r = unsafe { libc::madvise(p, REGION_LEN, libc::MADV_DONTFORK) };
    let base = p as usize;
    if r != 0
        || BASE
            .compare_exchange(0, base, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        // SAFETY: our own mapping, not published (another thread made the
        // region first, or it could not be left out of forks).
        unsafe { libc::munmap(p, REGION_LEN) };
        let _ = BASE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed);
        return;
    }
    // No huge pages: the region is filled once, a few MiB at a time, and a
    // huge page's fault zeroes 2 MiB and may compact memory first (a tree
    // of 100 restored then took 95 ms instead of 60, one run in three).
    // SAFETY: advice on our own mapping; it changes no data.
    let _ = unsafe { libc::madvise(p, REGION_LEN, libc::MADV_NOHUGEPAGE) };
    NEXT.store(base, Ordering::Release);
}

/// Run `f` with this thread's allocations in the region left out of forks
/// (when [`Allocator`] is the global allocator, and this process is no
/// fork of the one that made the region; otherwise it only runs `f`).
/// Whatever it allocates must never be touched by a forked child.
pub fn fork_private<T>(f: impl FnOnce() -> T) -> T {
    make_region();
    let was = PRIVATE.with(|c| c.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = PRIVATE.try_with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(was);
    f()
}

/// Bytes allocated in the region so far (freed ones included).
pub fn fork_private_bytes() -> usize {
    let base = BASE.load(Ordering::Acquire);
    if base <= 1 {
        0
    } else {
        NEXT.load(Ordering::Relaxed) - base
    }
}

// SAFETY: every block comes from the system allocator or from the region
// (where no two live blocks overlap: only the room after the last block
// is handed out), and is given back to where it came from.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if private() {
            if let Some((p, _)) = bump(layout) {
                return p;
            }
        }
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if private() {
            if let Some((p, touched)) = bump(layout) {
                // Room given back by the last block (freed or shrunk) is
                // handed out again: not necessarily zero any more. Above
                // `touched` it is (and stays untouched: no page faults).
                let dirty = touched.saturating_sub(p as usize).min(layout.size());
                // SAFETY: p is a fresh block of layout.size() bytes.
                unsafe { p.write_bytes(0, dirty) };
                return p;
            }
        }
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_region(ptr) {
            // The last allocation gives its room back; others stay.
            resize_last(ptr, layout.size(), 0);
            return;
        }
        // SAFETY: a block of the system allocator with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_region(ptr) {
            // SAFETY: a block of the system allocator with its layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if resize_last(ptr, layout.size(), new_size) {
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: a valid layout (checked above); the old block stays
        // readable for the copy (region blocks are never unmapped).
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_blocks_grow_in_place_and_copy_out() {
        make_region();
        let a = Allocator;
        let l = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: layouts are valid; blocks are used within their sizes.
        unsafe {
            let p = fork_private(|| a.alloc(l));
            assert!(in_region(p));
            p.write_bytes(7, 64);
            let q = a.realloc(p, l, 4096);
            assert_eq!(p, q, "the last block grows in place");
            let r = fork_private(|| a.alloc(l));
            let s = a.realloc(q, Layout::from_size_align(4096, 8).unwrap(), 8192);
            assert_ne!(s, q, "a block that is not the last moves");
            assert_eq!(*s.add(63), 7);
            a.dealloc(r, l);
            // The room r gave back, handed out zeroed.
            let z = fork_private(|| {
                let p = a.alloc(l);
                p.write_bytes(9, 64);
                a.dealloc(p, l);
                a.alloc_zeroed(l)
            });
            assert!(in_region(z));
            assert!((0..64).all(|i| *z.add(i) == 0));
            let outside = a.alloc(l);
            assert!(!in_region(outside));
            a.dealloc(outside, l);
        }
    }
}
