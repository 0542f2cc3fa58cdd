//! Calls common to every kind of socket.

use crate::{last_os, os_errno, OsResult, Result};
use nix::sys::socket::MsgFlags;
use std::os::fd::{AsRawFd, OwnedFd};

/// The bytes queued for reading on a stream socket, without taking them
/// (recv with MSG_PEEK | MSG_DONTWAIT), at most `max`.
pub fn peek_stream(fd: impl AsRawFd, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, flags) {
        Ok(n) => buf.truncate(n),
        Err(nix::errno::Errno::EAGAIN) => buf.clear(),
        Err(e) => return Err(os_errno("recv(MSG_PEEK)", 0, e as i32)),
    }
    Ok(buf)
}

/// listen(2) with the saved `backlog` (capped at `i32::MAX`; the kernel
/// caps it at net.core.somaxconn). By hand: nix's `Backlog` refuses values
/// above its own SOMAXCONN constant (4096), below what a host may allow.
pub(crate) fn listen(fd: &OwnedFd, backlog: u32) -> Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    // SAFETY: integer arguments only; `fd` is borrowed, hence open.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(last_os("listen", 0));
    }
    Ok(())
}

/// bind(2) to a socket address nix describes.
pub(crate) fn bind(fd: &OwnedFd, addr: &dyn nix::sys::socket::SockaddrLike) -> Result<()> {
    nix::sys::socket::bind(fd.as_raw_fd(), addr).op("bind")
}
