//! userfaultfd: filling the pages of a registered range (by hand: nix has
//! no userfaultfd). Restore makes the userfaultfd itself inside the
//! target, by an injected system call.

use crate::Result;
use std::os::fd::AsRawFd;

/// UFFDIO_COPY_MODE_DONTWAKE: do not wake threads waiting on the range.
pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;

/// ioctl(UFFDIO_COPY) on userfaultfd `fd`: copy `src` to `dst` in the
/// address space the userfaultfd belongs to (`dst` and the length
/// page-aligned, the range registered with it). Returns the bytes copied
/// (the kernel may copy part of it, even on failure) and the result of the
/// call (EAGAIN: try the rest again).
pub fn uffd_copy(fd: impl AsRawFd, dst: u64, src: &[u8], mode: u64) -> (u64, Result<()>) {
    const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
    #[repr(C)]
    struct UffdioCopy {
        dst: u64,
        src: u64,
        len: u64,
        mode: u64,
        copy: i64,
    }
    let mut c = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode,
        copy: 0,
    };
    // SAFETY: `c` is a valid uffdio_copy the kernel reads and updates; its
    // source range is `src`, a live slice the kernel only reads; `dst` is
    // in the userfaultfd's address space, validated by the kernel.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_COPY, &mut c as *mut UffdioCopy) };
    let result = if r < 0 {
        Err(crate::last_os("ioctl(UFFDIO_COPY)", 0))
    } else {
        Ok(())
    };
    (c.copy.max(0) as u64, result)
}
