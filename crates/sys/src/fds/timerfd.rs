//! timerfd: creation, arming, and the count of expirations not yet read.

use super::view;
use crate::{last_os, os_errno, OsResult, Result};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::os::fd::{AsRawFd, OwnedFd};

/// timerfd_create(2) on clock `clock` (CLOCK_REALTIME, CLOCK_MONOTONIC,
/// CLOCK_BOOTTIME, CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM; another is
/// EINVAL, as the kernel says).
pub fn timerfd_create(clock: i32, flags: i32) -> Result<OwnedFd> {
    let clock = match clock {
        libc::CLOCK_REALTIME => ClockId::CLOCK_REALTIME,
        libc::CLOCK_MONOTONIC => ClockId::CLOCK_MONOTONIC,
        libc::CLOCK_BOOTTIME => ClockId::CLOCK_BOOTTIME,
        libc::CLOCK_REALTIME_ALARM => ClockId::CLOCK_REALTIME_ALARM,
        libc::CLOCK_BOOTTIME_ALARM => ClockId::CLOCK_BOOTTIME_ALARM,
        _ => return Err(os_errno("timerfd_create", 0, libc::EINVAL)),
    };
    let t = TimerFd::new(clock, TimerFlags::from_bits_retain(flags)).op("timerfd_create")?;
    Ok(t.into())
}

fn timespec(ns: u64) -> TimeSpec {
    TimeSpec::new(
        (ns / 1_000_000_000) as libc::time_t,
        (ns % 1_000_000_000) as libc::c_long,
    )
}

/// timerfd_settime(2) with a value and an interval in nanoseconds (a
/// value of 0 disarms the timer).
pub fn timerfd_settime(
    fd: impl AsRawFd,
    flags: i32,
    value_ns: u64,
    interval_ns: u64,
) -> Result<()> {
    const OP: &str = "timerfd_settime";
    let expiration = if interval_ns == 0 {
        Expiration::OneShot(timespec(value_ns))
    } else {
        Expiration::IntervalDelayed(timespec(value_ns), timespec(interval_ns))
    };
    // SAFETY: from_owned_fd's contract (the fd is a timerfd) only matters
    // to TimerFd's system calls, which the kernel checks (EINVAL for
    // another kind of fd).
    let t = view(OP, fd, |o| unsafe { TimerFd::from_owned_fd(o) })?;
    t.set(expiration, TimerSetTimeFlags::from_bits_retain(flags))
        .op(OP)
}

/// ioctl(TFD_IOC_SET_TICKS): set the number of expirations not yet read
/// (by hand: nix has no such call).
pub fn timerfd_set_ticks(fd: impl AsRawFd, ticks: u64) -> Result<()> {
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from the pointer, which is live; the
    // fd is a number only.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) };
    if r < 0 {
        return Err(last_os("ioctl(TFD_IOC_SET_TICKS)", 0));
    }
    Ok(())
}

/// clock_gettime(2) of `clock` in nanoseconds (CLOCK_REALTIME,
/// CLOCK_MONOTONIC, CLOCK_BOOTTIME and their alarm variants, whose time
/// is that of their base clock). Allocates nothing.
pub fn clock_now_ns(clock: i32) -> Result<i64> {
    let base = match clock {
        libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
        libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
        c => c,
    };
    let ts = nix::time::clock_gettime(nix::time::ClockId::from_raw(base)).op("clock_gettime")?;
    Ok(ts.tv_sec() as i64 * 1_000_000_000 + ts.tv_nsec() as i64)
}

/// timerfd_gettime(2): (time to the next expiry, interval) in
/// nanoseconds; (0, 0) when disarmed. As a side effect the kernel brings a
/// periodic timer that expired without being read up to date: the
/// expirations missed meanwhile are added to its unread ticks and it is
/// armed for its next period (what a read would do, without consuming).
pub fn timerfd_gettime(fd: impl AsRawFd) -> Result<(u64, u64)> {
    const OP: &str = "timerfd_gettime";
    // SAFETY: as in timerfd_settime: the kernel checks the fd's kind.
    let t = view(OP, fd, |o| unsafe { TimerFd::from_owned_fd(o) })?;
    let ns = |ts: &TimeSpec| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64;
    Ok(match t.get().op(OP)? {
        None => (0, 0),
        Some(Expiration::OneShot(v)) => (ns(&v), 0),
        Some(Expiration::IntervalDelayed(v, i)) => (ns(&v), ns(&i)),
        Some(Expiration::Interval(i)) => (ns(&i), ns(&i)),
    })
}
