//! File descriptors: the calls common to every kind of fd (open, close,
//! dup, status flags, offsets, read and write), and one module per kind.
//!
//! Built on nix. The calls restore's stub makes after its fork take raw
//! fd numbers (as `impl AsRawFd`) and allocate nothing.

pub mod epoll;
pub mod eventfd;
pub mod fanotify;
pub mod inet;
pub mod inotify;
pub mod memfd;
pub mod pipe;
pub mod regular;
pub mod signalfd;
pub mod socket;
pub mod sockopt;
pub mod tcp_repair;
pub mod timerfd;
pub mod tty;
pub mod unix;

use crate::{os_errno, OsResult, Result};
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::Whence;
use std::ffi::CStr;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// The fd number `fd`, which the caller owns and keeps, wrapped by `wrap`
/// in one of nix's fd types for the length of one call: the result is
/// never dropped, so the fd is never closed here. A negative number is
/// `EBADF` (as the kernel would say), not a panic.
pub(crate) fn view<T>(
    op: &'static str,
    fd: impl AsRawFd,
    wrap: impl FnOnce(OwnedFd) -> T,
) -> Result<ManuallyDrop<T>> {
    let fd = fd.as_raw_fd();
    if fd < 0 {
        return Err(os_errno(op, 0, libc::EBADF));
    }
    // SAFETY: `fd` is not -1 (from_raw_fd's precondition on the number).
    // The OwnedFd does not take the fd over: it goes straight into
    // ManuallyDrop (through `wrap`, which only moves it into a struct), is
    // never dropped, and so never closes the caller's fd. It only lends the
    // number to nix's system calls; if the fd is not open they fail with
    // EBADF, and no memory depends on which file it is.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(ManuallyDrop::new(wrap(owned)))
}

/// [`view`] as a plain fd.
pub(crate) fn borrow(op: &'static str, fd: impl AsRawFd) -> Result<ManuallyDrop<OwnedFd>> {
    view(op, fd, |o| o)
}

/// open(2), retrying on EINTR.
pub fn open(path: &CStr, flags: i32, mode: u32) -> Result<OwnedFd> {
    loop {
        match nix::fcntl::open(
            path,
            OFlag::from_bits_retain(flags),
            Mode::from_bits_retain(mode),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.op("open"),
        }
    }
}

/// close(2) of an fd number.
pub fn close(fd: RawFd) -> Result<()> {
    nix::unistd::close(fd).op("close")
}

/// Close every fd in `first..=last` (close_range(2), which nix lacks).
pub fn close_range(first: u32, last: u32) -> Result<()> {
    // SAFETY: integer arguments only; closing fds touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r < 0 {
        return Err(crate::last_os("close_range", 0));
    }
    Ok(())
}

/// dup3(2): make fd number `new` refer to the open file description of `old`.
pub fn dup3(old: impl AsRawFd, new: RawFd, cloexec: bool) -> Result<()> {
    let flags = if cloexec {
        OFlag::O_CLOEXEC
    } else {
        OFlag::empty()
    };
    let old = borrow("dup3", old)?;
    // SAFETY: dup3_raw's contract is that the returned OwnedFd be the only
    // owner of `new`: it is turned back into a plain number at once, and
    // `new` stays the caller's, as with dup3(2) itself.
    let r = unsafe { nix::unistd::dup3_raw(&*old, new, flags) };
    r.map(IntoRawFd::into_raw_fd).op("dup3").map(drop)
}

/// fcntl(F_DUPFD_CLOEXEC): a duplicate of `fd` at the lowest free number >= `min`.
pub fn dup_at_least(fd: impl AsRawFd, min: RawFd) -> Result<OwnedFd> {
    const OP: &str = "fcntl(F_DUPFD_CLOEXEC)";
    let fd = borrow(OP, fd)?;
    let new = nix::fcntl::fcntl(&*fd, FcntlArg::F_DUPFD_CLOEXEC(min)).op(OP)?;
    // SAFETY: fcntl succeeded: `new` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// fcntl(F_GETFL).
pub fn get_fl(fd: impl AsRawFd) -> Result<i32> {
    let fd = borrow("fcntl(F_GETFL)", fd)?;
    nix::fcntl::fcntl(&*fd, FcntlArg::F_GETFL).op("fcntl(F_GETFL)")
}

/// fcntl(F_SETFL): status flags (O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME).
pub fn set_fl(fd: impl AsRawFd, flags: i32) -> Result<()> {
    const OP: &str = "fcntl(F_SETFL)";
    let fd = borrow(OP, fd)?;
    let arg = FcntlArg::F_SETFL(OFlag::from_bits_retain(flags));
    nix::fcntl::fcntl(&*fd, arg).op(OP).map(drop)
}

/// lseek(fd, off, SEEK_SET).
pub fn seek(fd: impl AsRawFd, off: u64) -> Result<()> {
    let fd = borrow("lseek", fd)?;
    nix::unistd::lseek(&*fd, off as libc::off_t, Whence::SeekSet)
        .op("lseek")
        .map(drop)
}

/// The file position of `fd` (lseek(fd, 0, SEEK_CUR)).
pub fn position(fd: impl AsRawFd) -> Result<u64> {
    let fd = borrow("lseek", fd)?;
    nix::unistd::lseek(&*fd, 0, Whence::SeekCur)
        .op("lseek")
        .map(|p| p as u64)
}

/// read(2) into `buf`, retrying on EINTR; 0 at end of file.
pub fn read(fd: impl AsRawFd, buf: &mut [u8]) -> Result<usize> {
    let fd = borrow("read", fd)?;
    loop {
        match nix::unistd::read(&*fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.op("read"),
        }
    }
}

/// write(2) of a whole buffer, retrying short writes and EINTR
/// (async-signal-safe).
pub fn write_fd(fd: impl AsRawFd, data: &[u8]) -> Result<()> {
    let fd = borrow("write", fd)?;
    let mut off = 0;
    while off < data.len() {
        match nix::unistd::write(&*fd, &data[off..]) {
            Ok(n) => off += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(os_errno("write", 0, e as i32)),
        }
    }
    Ok(())
}

/// fcntl(F_SETFD): set or clear the fd's close-on-exec flag.
pub fn set_cloexec(fd: impl AsRawFd, on: bool) -> Result<()> {
    const OP: &str = "fcntl(F_SETFD)";
    let fd = borrow(OP, fd)?;
    let flags = if on {
        nix::fcntl::FdFlag::FD_CLOEXEC
    } else {
        nix::fcntl::FdFlag::empty()
    };
    nix::fcntl::fcntl(&*fd, FcntlArg::F_SETFD(flags))
        .op(OP)
        .map(drop)
}

/// Wait up to `timeout_ms` (-1: no limit) until `fd` is readable (or at
/// its end, or in error): true when it is, false on timeout. Retries on
/// EINTR with the whole timeout.
pub fn wait_readable(fd: impl AsRawFd, timeout_ms: i32) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one live pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(crate::Error::Os {
                op: "poll",
                tid: 0,
                source: e,
            });
        }
    }
}
