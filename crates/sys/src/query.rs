//! Old home of capture's calls; each item here says where it moved.
//! Shim kept while callers migrate: it goes once they use the new paths.

use crate::Result;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Moved to [`crate::kcmp`]; shim kept while callers migrate.
pub use crate::kcmp::{kcmp_file_order, kcmp_same_file};

/// Moved to [`crate::fds::pipe`]; shim kept while callers migrate.
pub use crate::fds::pipe::{bytes_readable, tee};

/// Moved to [`crate::fds::memfd::get_seals`]; shim kept while callers migrate.
pub use crate::fds::memfd::get_seals;

/// Moved to [`crate::proc::wait`]; shim kept while callers migrate.
pub use crate::proc::wait::{wait_exit_nowait, Exit};

/// Moved to [`crate::fs::getxattr`]; shim kept while callers migrate.
pub use crate::fs::getxattr;

/// Moved to [`crate::fds::inotify::open_by_handle`]; shim kept while callers migrate.
pub use crate::fds::inotify::open_by_handle;

/// Moved to [`crate::fds::regular::seek_data_or_hole`]; shim kept while callers migrate.
pub use crate::fds::regular::seek_data_or_hole;

/// Moved to [`crate::sock_diag`]; shim kept while callers migrate.
pub use crate::sock_diag::{tcp_listeners, unix_diag, TcpListener, UnixDiag};

/// Moved to [`crate::fds::socket::peek_stream`]; shim kept while callers migrate.
pub use crate::fds::socket::peek_stream;

/// Moved to [`crate::fds::pipe::pipe2`] (with `O_NONBLOCK | O_CLOEXEC`);
/// shim kept while callers migrate.
pub fn pipe_nonblock() -> Result<(OwnedFd, OwnedFd)> {
    crate::fds::pipe::pipe2(libc::O_NONBLOCK | libc::O_CLOEXEC)
}

/// Moved to [`crate::fds::pipe::pipe_size`] (which returns a `u32`);
/// shim kept while callers migrate.
pub fn pipe_capacity(fd: BorrowedFd<'_>) -> Result<usize> {
    crate::fds::pipe::pipe_size(fd).map(|n| n as usize)
}

/// Moved to [`crate::fds::pipe::set_pipe_size`] (which takes and returns
/// a `u32`); shim kept while callers migrate.
pub fn set_pipe_capacity(fd: BorrowedFd<'_>, size: usize) -> Result<usize> {
    let size = u32::try_from(size).unwrap_or(u32::MAX);
    crate::fds::pipe::set_pipe_size(fd, size).map(|n| n as usize)
}

/// Moved to [`crate::mm::page_size`] (which returns a `u64`); shim kept
/// while callers migrate.
pub fn page_size() -> u32 {
    crate::mm::page_size() as u32
}
