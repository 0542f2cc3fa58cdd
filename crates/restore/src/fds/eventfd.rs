//! eventfds, with their counter and semaphore mode.

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::EventFd;
use ckpt_sys::fds::{self, eventfd};
use std::os::fd::IntoRawFd;

pub(super) fn plan(b: &mut Builder, g: usize, e: &EventFd) {
    let (what, flags) = (b.what(g), b.flags(g));
    let s = b.slot();
    let mut fl = flags & libc::O_NONBLOCK;
    if e.semaphore {
        fl |= libc::EFD_SEMAPHORE;
    }
    b.op(
        &what,
        FdOp::EventFd {
            slot: s,
            count: e.count,
            flags: fl,
        },
    );
    b.slot_of[g] = Some(s);
}

/// FdOp::EventFd: the eventfd, its counter written back.
pub(super) fn make(c: &mut Child<'_>, slot: usize, count: u64, flags: i32) -> ckpt_sys::Result<()> {
    let fd = c.new_fd(slot, eventfd::eventfd(flags)?.into_raw_fd())?;
    if count != 0 {
        fds::write_fd(fd, &count.to_ne_bytes())?;
    }
    Ok(())
}
