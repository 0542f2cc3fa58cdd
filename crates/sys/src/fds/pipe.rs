//! Pipes: creation, capacity, and their buffered bytes (read without
//! consuming them).

use super::borrow;
use crate::{last_os, OsResult, Result};
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
use std::os::fd::{AsRawFd, OwnedFd};

/// pipe2(2) with `flags` (O_CLOEXEC, O_NONBLOCK, O_DIRECT): (read end,
/// write end).
pub fn pipe2(flags: i32) -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::from_bits_retain(flags)).op("pipe2")
}

/// fcntl(F_GETPIPE_SZ): the capacity of a pipe, bytes.
pub fn pipe_size(fd: impl AsRawFd) -> Result<u32> {
    const OP: &str = "fcntl(F_GETPIPE_SZ)";
    let fd = borrow(OP, fd)?;
    let n = nix::fcntl::fcntl(&*fd, FcntlArg::F_GETPIPE_SZ).op(OP)?;
    Ok(n as u32)
}

/// fcntl(F_SETPIPE_SZ): resize a pipe; returns the new capacity (the
/// kernel rounds the size up).
pub fn set_pipe_size(fd: impl AsRawFd, size: u32) -> Result<u32> {
    const OP: &str = "fcntl(F_SETPIPE_SZ)";
    let fd = borrow(OP, fd)?;
    let arg = FcntlArg::F_SETPIPE_SZ(size as libc::c_int);
    let n = nix::fcntl::fcntl(&*fd, arg).op(OP)?;
    Ok(n as u32)
}

/// tee(2): duplicate up to `len` bytes buffered in pipe `from` into pipe
/// `to` without consuming them. Non-blocking (SPLICE_F_NONBLOCK). Returns the
/// number of bytes duplicated (0 when `from` is empty).
pub fn tee(from: impl AsRawFd, to: impl AsRawFd, len: usize) -> Result<usize> {
    let from = borrow("tee", from)?;
    let to = borrow("tee", to)?;
    match nix::fcntl::tee(&*from, &*to, len, SpliceFFlags::SPLICE_F_NONBLOCK) {
        Err(nix::errno::Errno::EAGAIN) => Ok(0),
        r => r.op("tee"),
    }
}

/// ioctl(FIONREAD): bytes ready to read (buffered in a pipe). By hand: nix
/// only has macros that generate unsafe ioctl functions.
pub fn bytes_readable(fd: impl AsRawFd) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at a
    // live local; the fd is a number only.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(last_os("ioctl(FIONREAD)", 0));
    }
    Ok(n.max(0) as usize)
}

/// Whether no process holds the other end of the pipe that `fd` is one
/// end of: no writer left for a read end (POLLHUP), no reader for a write
/// end (POLLERR). `fd` must be the process's own description (pidfd_getfd):
/// one opened again through /proc counts as a reader or writer itself.
pub fn peer_closed(fd: impl AsRawFd, write_end: bool) -> Result<bool> {
    let events = super::tty::poll_one(fd, 0, 0)?;
    let gone = if write_end {
        libc::POLLERR
    } else {
        libc::POLLHUP
    };
    Ok(events & gone != 0)
}
