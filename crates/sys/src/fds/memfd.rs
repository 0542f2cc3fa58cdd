//! memfd: creation and seals.

use super::borrow;
use crate::{OsResult, Result};
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::MFdFlags;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};

/// memfd_create(2).
pub fn memfd_create(name: &CStr, flags: u32) -> Result<OwnedFd> {
    nix::sys::memfd::memfd_create(name, MFdFlags::from_bits_retain(flags)).op("memfd_create")
}

/// fcntl(F_ADD_SEALS).
pub fn add_seals(fd: impl AsRawFd, seals: u32) -> Result<()> {
    const OP: &str = "fcntl(F_ADD_SEALS)";
    let fd = borrow(OP, fd)?;
    let arg = FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals as libc::c_int));
    nix::fcntl::fcntl(&*fd, arg).op(OP).map(drop)
}

/// fcntl(F_GET_SEALS) of a memfd (or any shmem file).
pub fn get_seals(fd: impl AsRawFd) -> Result<u32> {
    const OP: &str = "fcntl(F_GET_SEALS)";
    let fd = borrow(OP, fd)?;
    let r = nix::fcntl::fcntl(&*fd, FcntlArg::F_GET_SEALS).op(OP)?;
    Ok(r as u32)
}

/// Write `data` at the start of the hugetlb file open in `fd` (hugetlbfs
/// has no write(2)): through a shared mapping of it, made and unmapped
/// here; only the huge pages (`huge` bytes) that are not all zeros are
/// touched, so the others stay holes. Allocates nothing (restore's stub
/// calls it after a fork).
pub fn write_hugetlb(fd: impl AsRawFd, data: &[u8], huge: u64) -> Result<()> {
    const OP: &str = "mmap of a hugetlb file";
    if data.is_empty() {
        return Ok(());
    }
    let huge = huge.max(1) as usize;
    let len = data.len().next_multiple_of(huge);
    // SAFETY: a fresh shared mapping of the file at an address the kernel
    // picks; only written through the pointer below, then unmapped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(crate::last_os(OP, 0));
    }
    for (i, chunk) in data.chunks(huge).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        // SAFETY: `chunk` lies within the `len` bytes mapped at `p` (the
        // chunks of `data` from offset 0); the mapping is ours alone.
        unsafe {
            std::ptr::copy_nonoverlapping(
                chunk.as_ptr(),
                p.cast::<u8>().add(i * huge),
                chunk.len(),
            );
        }
    }
    // SAFETY: the mapping made above, no reference into it outlives this.
    unsafe {
        libc::munmap(p, len);
    }
    Ok(())
}
