//! timerfds: re-armed relative to now (TFD_TIMER_ABSTIME and
//! CANCEL_ON_SET are not kept), with their unread expiration count.

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::TimerFd;
use ckpt_sys::setup;

pub(super) fn plan(b: &mut Builder, g: usize, t: &TimerFd) {
    let (what, flags) = (b.what(g), b.flags(g));
    let s = b.slot();
    b.op(
        &what,
        FdOp::TimerFd {
            slot: s,
            clock: t.clock,
            flags: flags & libc::O_NONBLOCK,
            value_ns: t.value_ns,
            interval_ns: t.interval_ns,
            ticks: t.ticks,
        },
    );
    b.slot_of[g] = Some(s);
}

/// FdOp::TimerFd: the timer, armed with `[value_ns, interval_ns, ticks]`.
pub(super) fn make(
    c: &mut Child<'_>,
    slot: usize,
    clock: i32,
    flags: i32,
    [value_ns, interval_ns, ticks]: [u64; 3],
) -> ckpt_sys::Result<()> {
    let fd = c.new_fd(slot, setup::timerfd_create(clock, flags)?)?;
    if value_ns != 0 {
        setup::timerfd_settime(fd, 0, value_ns, interval_ns)?;
    }
    if ticks != 0 {
        setup::timerfd_set_ticks(fd, ticks)?;
    }
    Ok(())
}
