//! signalfd.

use crate::{last_os, Result};
use std::os::fd::{FromRawFd, OwnedFd};

/// signalfd(2) for a new fd with the mask (bit signo-1). By hand: nix's
/// `SigSet` can only be built from its `Signal` enum, which has no
/// realtime signals.
pub fn signalfd(mask: u64, flags: i32) -> Result<OwnedFd> {
    // SAFETY: the kernel reads exactly 8 bytes (the size passed) of the
    // mask, a live local.
    let r = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) };
    if r < 0 {
        return Err(last_os("signalfd", 0));
    }
    // SAFETY: signalfd4 succeeded: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}
