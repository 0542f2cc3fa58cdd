//! Terminals.

use super::borrow;
use std::os::fd::AsRawFd;

/// Whether `fd` of this process is a terminal (false for an fd that is not
/// open, too).
pub fn isatty(fd: impl AsRawFd) -> bool {
    borrow("isatty", fd).is_ok_and(|fd| nix::unistd::isatty(&*fd).unwrap_or(false))
}
