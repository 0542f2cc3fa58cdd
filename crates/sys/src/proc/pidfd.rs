//! pidfds: another process's fds (pidfd_open, pidfd_getfd; by hand: nix
//! lacks both).

use crate::{last_os, Pid, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// pidfd_open(2) of `pid`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    pidfd_open_flags(pid, 0)
}

/// pidfd_open(2) of `pid` with `flags` (PIDFD_NONBLOCK, PIDFD_THREAD).
/// Allocates nothing.
pub fn pidfd_open_flags(pid: Pid, flags: u32) -> Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if r < 0 {
        return Err(last_os("pidfd_open", pid));
    }
    // SAFETY: the fd was just returned to us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// pidfd_getfd(2): a duplicate of fd `fd` of the process of `pidfd` in
/// this process (needs ptrace access to it). `pid` only names it in errors.
pub fn pidfd_getfd(pidfd: &OwnedFd, pid: Pid, fd: i32) -> Result<OwnedFd> {
    // SAFETY: integer arguments only; `pidfd` is borrowed, hence open.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(last_os("pidfd_getfd", pid));
    }
    // SAFETY: a new fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A duplicate of fd `fd` of process `pid` in this process
/// (pidfd_open + pidfd_getfd; needs ptrace access to `pid`).
pub fn fd_of(pid: Pid, fd: i32) -> Result<OwnedFd> {
    pidfd_getfd(&pidfd_open(pid)?, pid, fd)
}
