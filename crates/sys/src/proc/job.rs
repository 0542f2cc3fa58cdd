//! Job control: process groups and sessions, this thread's blocked signals
//! and waiting for one of them, a child's stops and continues, and ending
//! the way a child ended (the same exit code, or death by the same
//! signal).
//!
//! Signal sets are bit masks, bit `signo - 1` (the kernel's layout), so
//! that any signal number fits; by hand: nix's `SigSet` has no realtime
//! signals, and nix has no rt_sigtimedwait with a timeout.

use crate::{last_os, nix_pid, OsResult, Pid, Result};
use std::time::Duration;

pub use super::signals::bit;

/// getpgrp(2).
pub fn getpgrp() -> Pid {
    nix::unistd::getpgrp().as_raw()
}

/// setpgid(2): move process `pid` (0: the caller) into group `pgid` (0: a
/// new group led by `pid`).
pub fn setpgid(pid: Pid, pgid: Pid) -> Result<()> {
    nix::unistd::setpgid(nix_pid(pid), nix_pid(pgid)).op_tid("setpgid", pid)
}

/// setsid(2): a new session (and group) led by the caller.
pub fn setsid() -> Result<Pid> {
    nix::unistd::setsid().op("setsid").map(|p| p.as_raw())
}

/// rt_sigprocmask(how, set): the previous mask.
fn sigprocmask(how: i32, set: u64) -> Result<u64> {
    let mut old = 0u64;
    // SAFETY: the kernel reads 8 bytes at `set` and writes 8 at `old`, both
    // live locals of that size (the size passed).
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            &set as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    };
    if r < 0 {
        return Err(last_os("rt_sigprocmask", 0));
    }
    Ok(old)
}

/// Block the signals of `mask` in the calling thread (threads it starts
/// afterwards, and processes it forks, inherit the mask); the previous mask.
pub fn block_signals(mask: u64) -> Result<u64> {
    sigprocmask(libc::SIG_BLOCK, mask)
}

/// Unblock the signals of `mask` in the calling thread.
pub fn unblock_signals(mask: u64) -> Result<u64> {
    sigprocmask(libc::SIG_UNBLOCK, mask)
}

/// Take one pending signal of `mask` (signals the caller blocks), waiting
/// up to `timeout` (None: for ever): the signal, or None on timeout.
pub fn wait_signal(mask: u64, timeout: Option<Duration>) -> Result<Option<i32>> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: the kernel reads the 8-byte set and the timespec (or
        // NULL), both live locals; no siginfo is asked for (NULL).
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &mask as *const u64,
                std::ptr::null_mut::<libc::siginfo_t>(),
                tsp,
                8usize,
            )
        };
        if r > 0 {
            return Ok(Some(r as i32));
        }
        let e = last_os("rt_sigtimedwait", 0);
        match e.errno() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// A change of a child's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEvent {
    /// Ended with this exit code (reaped).
    Exited(i32),
    /// Killed by this signal (reaped).
    Signaled(i32),
    /// Stopped by this signal.
    Stopped(i32),
    /// Continued (SIGCONT).
    Continued,
}

/// The next state change of child `pid`, without waiting (WUNTRACED |
/// WCONTINUED | WNOHANG): None when there is none.
pub fn child_event(pid: Pid) -> Result<Option<ChildEvent>> {
    let flags = libc::WUNTRACED | libc::WCONTINUED | libc::WNOHANG;
    let (r, st) = super::wait::waitpid(pid, flags).map_err(|source| crate::Error::Os {
        op: "waitpid",
        tid: pid,
        source,
    })?;
    if r == 0 {
        return Ok(None);
    }
    Ok(Some(if libc::WIFEXITED(st) {
        ChildEvent::Exited(libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        ChildEvent::Signaled(libc::WTERMSIG(st))
    } else if libc::WIFSTOPPED(st) {
        ChildEvent::Stopped(libc::WSTOPSIG(st))
    } else {
        ChildEvent::Continued
    }))
}

/// Put signal `sig` back to its default action (SIG_DFL).
pub fn default_action(sig: i32) -> Result<()> {
    // SAFETY: an all-zero sigaction with sa_handler = SIG_DFL is valid; the
    // pointers point at a live local or are NULL.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r < 0 {
        return Err(last_os("sigaction", 0));
    }
    Ok(())
}

/// Stop the calling process the way a terminal stop does (SIGTSTP with
/// its default action, unblocked for the moment): returns once it is
/// continued, or at once when the kernel discards the stop (an orphaned
/// process group).
pub fn stop_self() -> Result<()> {
    default_action(libc::SIGTSTP)?;
    let old = unblock_signals(bit(libc::SIGTSTP))?;
    let r = super::kill(super::getpid(), libc::SIGTSTP);
    if old & bit(libc::SIGTSTP) != 0 {
        block_signals(bit(libc::SIGTSTP))?;
    }
    r
}

/// End the calling process by signal `sig` with its default action (no
/// core file), as a child killed by it would; exit code 128 + `sig` if
/// that does not end it (a signal that is ignored or stops by default).
pub fn die_of(sig: i32) -> ! {
    let _ = super::prlimit(0, libc::RLIMIT_CORE, Some((0, 0)));
    let _ = default_action(sig);
    let _ = unblock_signals(bit(sig));
    let _ = super::kill(super::getpid(), sig);
    super::exit_now(128 + sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_waits_to_be_taken() {
        let mask = bit(libc::SIGUSR2);
        let old = block_signals(mask).unwrap();
        assert_eq!(
            wait_signal(mask, Some(Duration::from_millis(1))).unwrap(),
            None
        );
        crate::proc::tgkill(
            crate::proc::getpid(),
            nix::unistd::gettid().as_raw(),
            libc::SIGUSR2,
        )
        .unwrap();
        assert_eq!(
            wait_signal(mask, Some(Duration::ZERO)).unwrap(),
            Some(libc::SIGUSR2)
        );
        if old & mask == 0 {
            unblock_signals(mask).unwrap();
        }
    }
}
