//! signalfds, with their signal mask.

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::SignalFd;
use ckpt_sys::fds::signalfd;
use std::os::fd::IntoRawFd;

pub(super) fn plan(b: &mut Builder, g: usize, sf: &SignalFd) {
    let (what, flags) = (b.what(g), b.flags(g));
    let s = b.slot();
    b.op(
        &what,
        FdOp::SignalFd {
            slot: s,
            mask: sf.mask,
            flags: flags & libc::O_NONBLOCK,
        },
    );
    b.slot_of[g] = Some(s);
}

/// FdOp::SignalFd.
pub(super) fn make(c: &mut Child<'_>, slot: usize, mask: u64, flags: i32) -> ckpt_sys::Result<()> {
    c.new_fd(slot, signalfd::signalfd(mask, flags)?.into_raw_fd())?;
    Ok(())
}
