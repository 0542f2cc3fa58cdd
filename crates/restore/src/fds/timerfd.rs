//! timerfds, with their unread expiration count, their settime flags
//! (TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET) and their exact expiry:
//! the saved absolute expiry where the clock is comparable (a real-time
//! clock, or the same boot: see [`Arm`]), else the time that was left.
//! Expirations that fell between the dump and the restore count as ticks,
//! as they would have had the process run on.

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::TimerFd;
use ckpt_sys::fds::timerfd;
use std::os::fd::IntoRawFd;

const TFD_TIMER_ABSTIME: i32 = 1;
const TFD_TIMER_CANCEL_ON_SET: i32 = 2;

/// How to arm a timerfd again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arm {
    /// The next expiry as an absolute time of the clock (0: use `value_ns`).
    pub expiry_ns: i64,
    /// Time left at the dump (used without an absolute expiry).
    pub value_ns: u64,
    pub interval_ns: u64,
    pub ticks: u64,
    /// Saved settime flags (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET).
    pub settime: i32,
}

/// Whether absolute times of `clock` saved on boot `saved_boot` mean the
/// same now: real-time clocks always; monotonic and boot-time clocks on
/// the same boot only.
fn comparable(clock: i32, saved_boot: &str) -> bool {
    match clock {
        libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_ALARM => true,
        _ => !saved_boot.is_empty() && saved_boot == crate::check::boot_id(),
    }
}

pub(super) fn plan(b: &mut Builder, g: usize, t: &TimerFd) {
    let (what, flags) = (b.what(g), b.flags(g));
    let s = b.slot();
    let absolute = t.expiry_ns != 0 && comparable(t.clock, &b.image.host.boot_id);
    if t.value_ns != 0 && !absolute {
        b.warning(format!(
            "{what}: re-armed with the time it had left at the dump (its expiry on clock {} is not known here: another boot, or an image without it)",
            t.clock
        ));
    }
    b.op(
        &what,
        FdOp::TimerFd {
            slot: s,
            clock: t.clock,
            flags: flags & libc::O_NONBLOCK,
            timer: Arm {
                expiry_ns: if absolute { t.expiry_ns } else { 0 },
                value_ns: t.value_ns,
                interval_ns: t.interval_ns,
                ticks: t.ticks,
                settime: t.settime_flags as i32 & (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET),
            },
        },
    );
    b.slot_of[g] = Some(s);
}

/// The next expiry after `now` of a timer due at `expiry` with period
/// `interval` (0: once), and how many expirations were missed by `now`.
/// (0, n): a one-shot timer that fired.
pub(crate) fn catch_up(expiry: i64, interval: u64, now: i64) -> (i64, u64) {
    if expiry > now {
        return (expiry, 0);
    }
    if interval == 0 {
        return (0, 1);
    }
    let missed = ((now - expiry) as u64) / interval + 1;
    (expiry + (missed * interval) as i64, missed)
}

/// FdOp::TimerFd.
pub(super) fn make(
    c: &mut Child<'_>,
    slot: usize,
    clock: i32,
    flags: i32,
    a: &Arm,
) -> ckpt_sys::Result<()> {
    let fd = c.new_fd(slot, timerfd::timerfd_create(clock, flags)?.into_raw_fd())?;
    let mut ticks = a.ticks;
    if a.expiry_ns != 0 {
        let now = ckpt_sys::fds::timerfd::clock_now_ns(clock)?;
        let (next, missed) = catch_up(a.expiry_ns, a.interval_ns, now);
        ticks += missed;
        if next != 0 {
            if a.settime & TFD_TIMER_ABSTIME != 0 {
                timerfd::timerfd_settime(fd, a.settime, next as u64, a.interval_ns)?;
            } else {
                // Relative as saved: the time left now (the settime flags
                // of the timer stay as they were).
                let now = ckpt_sys::fds::timerfd::clock_now_ns(clock)?;
                let left = (next - now).max(1) as u64;
                timerfd::timerfd_settime(fd, 0, left, a.interval_ns)?;
            }
        }
    } else if a.value_ns != 0 {
        timerfd::timerfd_settime(fd, 0, a.value_ns, a.interval_ns)?;
    }
    if ticks != 0 {
        timerfd::timerfd_set_ticks(fd, ticks)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_expirations_become_ticks() {
        assert_eq!(catch_up(100, 0, 50), (100, 0));
        assert_eq!(catch_up(100, 0, 100), (0, 1));
        assert_eq!(catch_up(100, 10, 100), (110, 1));
        assert_eq!(catch_up(100, 10, 125), (130, 3));
        assert_eq!(catch_up(100, 10, 99), (100, 0));
    }
}
