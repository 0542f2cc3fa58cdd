//! epoll.

use super::{borrow, view};
use crate::{OsResult, Result};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::os::fd::{AsRawFd, OwnedFd};

/// epoll_create1(2).
pub fn epoll_create1(flags: i32) -> Result<OwnedFd> {
    let ep = Epoll::new(EpollCreateFlags::from_bits_retain(flags)).op("epoll_create1")?;
    Ok(ep.0)
}

/// epoll_ctl(EPOLL_CTL_ADD) of `fd` to `epfd`, with `events` and `data`.
pub fn epoll_add(epfd: impl AsRawFd, fd: impl AsRawFd, events: u32, data: u64) -> Result<()> {
    const OP: &str = "epoll_ctl(EPOLL_CTL_ADD)";
    let ep = view(OP, epfd, Epoll)?;
    let fd = borrow(OP, fd)?;
    let ev = EpollEvent::new(EpollFlags::from_bits_retain(events as i32), data);
    ep.add(&*fd, ev).op(OP)
}
