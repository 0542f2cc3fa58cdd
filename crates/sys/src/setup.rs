//! Old home of restore's calls; each item here says where it moved.
//! Shim kept while callers migrate: it goes once they use the new paths.
//!
//! The calls that made a new fd returned its number here; they now return
//! an `OwnedFd` (`.into_raw_fd()` gives the number, as these shims do).

use crate::Result;
use std::ffi::CStr;
use std::os::fd::{IntoRawFd, RawFd};

/// Moved to [`crate::fds`]; shim kept while callers migrate.
pub use crate::fds::{close, dup3, get_fl, read, seek, set_fl};

/// Moved to [`crate::fds::regular`]; shim kept while callers migrate.
pub use crate::fds::regular::{fchmod, ftruncate, pwrite_all};

/// Moved to [`crate::fds::pipe::pipe_size`]; shim kept while callers migrate.
pub use crate::fds::pipe::pipe_size;

/// Moved to [`crate::fds::timerfd`]; shim kept while callers migrate.
pub use crate::fds::timerfd::{timerfd_set_ticks, timerfd_settime};

/// Moved to [`crate::fds::epoll::epoll_add`]; shim kept while callers migrate.
pub use crate::fds::epoll::epoll_add;

/// Moved to [`crate::fds::inotify::inotify_add_watch`]; shim kept while callers migrate.
pub use crate::fds::inotify::inotify_add_watch;

/// Moved to [`crate::fds::unix::clear_stale_socket`]; shim kept while callers migrate.
pub use crate::fds::unix::clear_stale_socket;

/// Moved to [`crate::fds::memfd::add_seals`]; shim kept while callers migrate.
pub use crate::fds::memfd::add_seals;

/// Moved to [`crate::fs::chdir`]; shim kept while callers migrate.
pub use crate::fs::chdir;

/// Moved to [`crate::proc`]; shim kept while callers migrate.
pub use crate::proc::{getppid, prlimit, Limit};

/// Moved to [`crate::proc::sched`]; shim kept while callers migrate.
pub use crate::proc::sched::{
    get_nice, sched_getaffinity, sched_getscheduler, sched_setaffinity, sched_setscheduler,
    set_nice,
};

/// Moved to [`crate::proc::wait`]; shim kept while callers migrate.
pub use crate::proc::wait::{reap_blocking, reap_nohang};

/// Moved to [`crate::proc::pidfd::fd_of`]; shim kept while callers migrate.
pub use crate::proc::pidfd::fd_of;

/// Moved to [`crate::mm`] (`RemoteIov` is now [`crate::mm::RemoteRange`],
/// the same fields); shim kept while callers migrate.
pub use crate::mm::{page_size, vm_writev, RemoteRange as RemoteIov};

/// Moved to [`crate::userfaultfd`]; shim kept while callers migrate.
pub use crate::userfaultfd::{uffd_copy, UFFDIO_COPY_MODE_DONTWAKE};

/// Moved to [`crate::fds::open`] (which returns an `OwnedFd`); shim kept
/// while callers migrate.
pub fn open(path: &CStr, flags: i32, mode: u32) -> Result<RawFd> {
    crate::fds::open(path, flags, mode).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::dup_at_least`] (which returns an `OwnedFd`);
/// shim kept while callers migrate.
pub fn dup_at_least(fd: RawFd, min: RawFd) -> Result<RawFd> {
    crate::fds::dup_at_least(fd, min).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::pipe::pipe2`] (which returns `OwnedFd`s); shim
/// kept while callers migrate.
pub fn pipe2(flags: i32) -> Result<(RawFd, RawFd)> {
    let (r, w) = crate::fds::pipe::pipe2(flags)?;
    Ok((r.into_raw_fd(), w.into_raw_fd()))
}

/// Moved to [`crate::fds::pipe::set_pipe_size`] (which returns the new
/// capacity); shim kept while callers migrate.
pub fn set_pipe_size(fd: RawFd, size: u32) -> Result<()> {
    crate::fds::pipe::set_pipe_size(fd, size).map(drop)
}

/// Moved to [`crate::fds::eventfd::eventfd`] (which returns an `OwnedFd`);
/// shim kept while callers migrate.
pub fn eventfd(flags: i32) -> Result<RawFd> {
    crate::fds::eventfd::eventfd(flags).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::timerfd::timerfd_create`] (which returns an
/// `OwnedFd`); shim kept while callers migrate.
pub fn timerfd_create(clock: i32, flags: i32) -> Result<RawFd> {
    crate::fds::timerfd::timerfd_create(clock, flags).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::signalfd::signalfd`] (which returns an
/// `OwnedFd`); shim kept while callers migrate.
pub fn signalfd(mask: u64, flags: i32) -> Result<RawFd> {
    crate::fds::signalfd::signalfd(mask, flags).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::epoll::epoll_create1`] (which returns an
/// `OwnedFd`); shim kept while callers migrate.
pub fn epoll_create1(flags: i32) -> Result<RawFd> {
    crate::fds::epoll::epoll_create1(flags).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::inotify::inotify_init1`] (which returns an
/// `OwnedFd`); shim kept while callers migrate.
pub fn inotify_init1(flags: i32) -> Result<RawFd> {
    crate::fds::inotify::inotify_init1(flags).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::unix::socketpair`] (which returns `OwnedFd`s);
/// shim kept while callers migrate.
pub fn socketpair(sock_type: i32) -> Result<(RawFd, RawFd)> {
    let (a, b) = crate::fds::unix::socketpair(sock_type)?;
    Ok((a.into_raw_fd(), b.into_raw_fd()))
}

/// Moved to [`crate::fds::unix::unix_socket`] (which returns an
/// `OwnedFd`); shim kept while callers migrate.
pub fn unix_socket(sock_type: i32, name: &[u8], backlog: u32) -> Result<RawFd> {
    crate::fds::unix::unix_socket(sock_type, name, backlog).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::inet::tcp_listen`] (which returns an `OwnedFd`);
/// shim kept while callers migrate.
pub fn tcp_listen(addr: &[u8], port: u16, backlog: u32, flags: i32) -> Result<RawFd> {
    crate::fds::inet::tcp_listen(addr, port, backlog, flags).map(IntoRawFd::into_raw_fd)
}

/// Moved to [`crate::fds::memfd::memfd_create`] (which returns an
/// `OwnedFd`); shim kept while callers migrate.
pub fn memfd_create(name: &CStr, flags: u32) -> Result<RawFd> {
    crate::fds::memfd::memfd_create(name, flags).map(IntoRawFd::into_raw_fd)
}
