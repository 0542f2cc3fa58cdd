//! fanotify: groups and their marks (by hand: the nix feature is not
//! built). Both calls need CAP_SYS_ADMIN.

use crate::{last_os, Result};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// fanotify_init(2).
pub fn fanotify_init(flags: u32, event_flags: u32) -> Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fanotify_init(flags, event_flags) };
    if r < 0 {
        return Err(last_os("fanotify_init", 0));
    }
    // SAFETY: a new fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// fanotify_mark(2) of `path` (relative to the working directory).
pub fn fanotify_mark(fd: impl AsRawFd, flags: u32, mask: u64, path: &CStr) -> Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call;
    // the other arguments are integers.
    let r =
        unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, path.as_ptr()) };
    if r < 0 {
        return Err(last_os("fanotify_mark", 0));
    }
    Ok(())
}
