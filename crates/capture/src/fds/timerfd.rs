//! timerfds: clock, remaining time and absolute expiry, interval, ticks
//! not yet read, settime flags (TFD_TIMER_ABSTIME, CANCEL_ON_SET).

use super::{Ctx, FdInfo, RawFd};
use crate::error::Result;
use crate::procfs;
use ckpt_image::{FileKind, TimerFd};
use std::os::fd::AsFd;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[timerfd]"
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let clock = f.info.num("clockid", 10)?;
    let clock = i32::try_from(clock).map_err(|_| f.info.err(0, format!("clockid {clock}")))?;
    // The timer runs on while the process is frozen: a periodic one that
    // expired is left expired, unread, showing no time left, until
    // someone reads it or asks its time. Asking it (through a dup of the
    // fd) brings it up to date as a read would, without consuming: the
    // missed expirations go to its ticks and it is armed for its next
    // period. Its time left is read between two reads of its clock, so
    // that the absolute expiry is known to the microsecond, then the
    // ticks.
    let now = || {
        ckpt_sys::fds::timerfd::clock_now_ns(clock).map_err(|e| {
            f.info
                .err(0, format!("reading clock {clock} of the timerfd: {e}"))
        })
    };
    let dup = ckpt_sys::proc::pidfd::fd_of(cx.pid, f.fd)
        .map_err(super::fd_sys(f.fd, "taking a copy of the timerfd"))?;
    let before = now()?;
    let (value_ns, interval_ns) = ckpt_sys::fds::timerfd::timerfd_gettime(dup.as_fd())
        .map_err(super::fd_sys(f.fd, "timerfd_gettime"))?;
    let after = now()?;
    let path = format!("/proc/{}/fdinfo/{}", cx.pid, f.fd);
    let info = FdInfo::parse(cx.pid, &path, procfs::read_string(cx.pid, &path)?)?;
    let expiry_ns = if value_ns == 0 {
        0
    } else {
        (before + (after - before) / 2)
            .saturating_add(value_ns as i64)
            .max(1)
    };
    Ok(Some(FileKind::TimerFd(TimerFd {
        clock,
        ticks: info.num("ticks", 10)?,
        settime_flags: info.num("settime flags", 8)? as u32,
        value_ns,
        interval_ns,
        expiry_ns,
    })))
}
