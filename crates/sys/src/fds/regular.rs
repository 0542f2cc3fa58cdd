//! Regular files: positional writes, size and mode, data and holes,
//! writeback.

use super::borrow;
use crate::{last_os, os_errno, OsResult, Result};
use nix::sys::stat::Mode;
use nix::unistd::Whence;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Write all of `data` at `off` (pwrite(2), retrying short writes and EINTR).
pub fn pwrite_all(fd: impl AsRawFd, data: &[u8], off: u64) -> Result<()> {
    let fd = borrow("pwrite", fd)?;
    let mut done = 0usize;
    while done < data.len() {
        let at = (off + done as u64) as libc::off_t;
        match nix::sys::uio::pwrite(&*fd, &data[done..], at) {
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(os_errno("pwrite", 0, e as i32)),
        }
    }
    Ok(())
}

/// ftruncate(2).
pub fn ftruncate(fd: impl AsRawFd, len: u64) -> Result<()> {
    let fd = borrow("ftruncate", fd)?;
    nix::unistd::ftruncate(&*fd, len as libc::off_t).op("ftruncate")
}

/// fchmod(2).
pub fn fchmod(fd: impl AsRawFd, mode: u32) -> Result<()> {
    let fd = borrow("fchmod", fd)?;
    nix::sys::stat::fchmod(&*fd, Mode::from_bits_retain(mode as libc::mode_t)).op("fchmod")
}

/// lseek(2) with SEEK_DATA (`hole == false`) or SEEK_HOLE: the next offset
/// at or after `off` that holds data (or is a hole). `None` when there is no
/// more data (ENXIO: at or past the end).
pub fn seek_data_or_hole(fd: impl AsRawFd, off: u64, hole: bool) -> Result<Option<u64>> {
    const OP: &str = "lseek(SEEK_DATA/SEEK_HOLE)";
    let whence = if hole {
        Whence::SeekHole
    } else {
        Whence::SeekData
    };
    let fd = borrow(OP, fd)?;
    match nix::unistd::lseek(&*fd, off as libc::off_t, whence) {
        Ok(r) => Ok(Some(r as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(os_errno(OP, 0, e as i32)),
    }
}

/// Turn O_DIRECT on or off for the open file description of `fd`
/// (fcntl(F_SETFL), keeping its other status flags). With it on, writes go
/// to the device without passing through the page cache: the buffer, the
/// file offset and the length must be aligned to the device's logical block
/// size. Fails (EINVAL) on a file system without direct I/O.
pub fn set_direct(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    const OP: &str = "fcntl(F_SETFL, O_DIRECT)";
    let flags = fcntl(fd, FcntlArg::F_GETFL).op(OP)?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_DIRECT, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).op(OP)?;
    Ok(())
}

/// Start writing back the dirty pages of `fd` in `offset..offset+len`
/// (sync_file_range(2) with SYNC_FILE_RANGE_WRITE, which nix lacks): the
/// disk works while the caller goes on, so a later fsync has little left
/// to wait for. Does not wait for the writes, and guarantees nothing
/// about durability.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<()> {
    // SAFETY: integer arguments only; `fd` is a live descriptor for the
    // duration of the call.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r < 0 {
        return Err(last_os("sync_file_range", 0));
    }
    Ok(())
}
