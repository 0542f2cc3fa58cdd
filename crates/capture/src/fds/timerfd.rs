//! timerfds: clock, remaining time and absolute expiry, interval, ticks
//! not yet read, settime flags (TFD_TIMER_ABSTIME, CANCEL_ON_SET).

use super::{Ctx, FdInfo, RawFd};
use crate::error::Result;
use crate::procfs::{self, parse_timespec_pair};
use ckpt_image::{FileKind, TimerFd};

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[timerfd]"
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let clock = f.info.num("clockid", 10)?;
    let clock = i32::try_from(clock).map_err(|_| f.info.err(0, format!("clockid {clock}")))?;
    // The timer runs on while the process is frozen: its time left, and
    // the ticks, are read again now, between two reads of its clock, so
    // that the absolute expiry is known to the microsecond.
    let now = || {
        ckpt_sys::fds::timerfd::clock_now_ns(clock).map_err(|e| {
            f.info
                .err(0, format!("reading clock {clock} of the timerfd: {e}"))
        })
    };
    let path = format!("/proc/{}/fdinfo/{}", cx.pid, f.fd);
    let before = now()?;
    let info = FdInfo::parse(cx.pid, &path, procfs::read_string(cx.pid, &path)?)?;
    let after = now()?;
    let time = |key: &str| {
        let (n, v) = info.get(key)?;
        parse_timespec_pair(v)
            .ok_or_else(|| info.err(n, format!("{key}: {v:?} is not \"(sec, nsec)\"")))
    };
    let value_ns = time("it_value")?;
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
        interval_ns: time("it_interval")?,
        expiry_ns,
    })))
}
