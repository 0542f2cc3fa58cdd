//! timerfds: clock, remaining time, interval, ticks not yet read.

use super::{Ctx, RawFd};
use crate::error::Result;
use crate::procfs::parse_timespec_pair;
use ckpt_image::{FileKind, TimerFd};

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[timerfd]"
}

pub(super) fn save(_cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let time = |key: &str| {
        let (n, v) = f.info.get(key)?;
        parse_timespec_pair(v).ok_or_else(|| {
            f.info
                .err(n, format!("{key}: {v:?} is not \"(sec, nsec)\""))
        })
    };
    let clock = f.info.num("clockid", 10)?;
    Ok(Some(FileKind::TimerFd(TimerFd {
        clock: i32::try_from(clock).map_err(|_| f.info.err(0, format!("clockid {clock}")))?,
        ticks: f.info.num("ticks", 10)?,
        settime_flags: f.info.num("settime flags", 8)? as u32,
        value_ns: time("it_value")?,
        interval_ns: time("it_interval")?,
        ..Default::default()
    })))
}
