//! This process's own signal mask, pending signals, and waiting for a
//! child or a signal: how a command cancels cleanly on SIGINT/SIGTERM.
//!
//! Masks are bit sets, bit `signo - 1` (the kernel's layout), so that any
//! signal number can be used. By hand: rt_sigprocmask, rt_sigpending and
//! rt_sigtimedwait with such a set (nix's `SigSet` has no realtime
//! signals).

use crate::{last_os, Pid, Result};
use std::os::fd::{AsRawFd, OwnedFd};

/// The bit of `sig` in a mask.
pub const fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// SIGINT, SIGTERM and SIGHUP: how a user (Ctrl-C), `timeout` or a service
/// manager ask a job to stop. ckpt's dump and restore take them as "cancel".
pub const CANCEL: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// [`CANCEL`] as a mask.
pub const CANCEL_MASK: u64 = bit(libc::SIGINT) | bit(libc::SIGTERM) | bit(libc::SIGHUP);

/// rt_sigprocmask(how, set): the previous mask.
fn sigprocmask(how: i32, set: u64) -> Result<u64> {
    let mut old = 0u64;
    // SAFETY: the kernel reads 8 bytes at `set` and writes 8 at `old`,
    // both live locals of that size (the size passed).
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

/// Signals of `mask` blocked in the calling thread until this is dropped
/// (then the thread's previous mask is back). A thread forked meanwhile
/// inherits the blocked mask.
pub struct Blocked {
    old: u64,
}

/// Block the signals of `mask` in the calling thread.
pub fn block(mask: u64) -> Result<Blocked> {
    Ok(Blocked {
        old: sigprocmask(libc::SIG_BLOCK, mask)?,
    })
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = sigprocmask(libc::SIG_SETMASK, self.old);
    }
}

/// The signals pending for the calling thread or its process (blocked
/// ones, since the others are delivered).
pub fn pending() -> Result<u64> {
    let mut set = 0u64;
    // SAFETY: the kernel writes 8 bytes (the size passed) at `set`.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut set as *mut u64, 8usize) };
    if r < 0 {
        return Err(last_os("rt_sigpending", 0));
    }
    Ok(set)
}

/// Take one pending signal of `mask` (blocked), without waiting.
pub fn take_pending(mask: u64) -> Option<i32> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel reads the 8-byte set and the timespec, both live
    // locals; no siginfo is asked for (NULL).
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            &mask as *const u64,
            std::ptr::null_mut::<libc::siginfo_t>(),
            &zero as *const libc::timespec,
            8usize,
        )
    };
    (r > 0).then_some(r as i32)
}

/// Every caught signal back to its default action (rt_sigaction), in a
/// freshly forked child whose parent's handlers must not run in it (they
/// would write to fds of the parent's that are now other files).
/// Allocates nothing.
pub fn reset_handlers() -> Result<()> {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = [0u64; 4];
        // SAFETY: reads the current action into `old`, a live local of the
        // size of the kernel's struct sigaction (handler, flags, restorer,
        // mask); no new action (NULL).
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8usize,
            )
        };
        if r < 0 {
            continue; // a number the kernel does not take
        }
        let (dfl, ign) = (libc::SIG_DFL as u64, libc::SIG_IGN as u64);
        if old[0] != dfl && old[0] != ign {
            let new = [dfl, 0u64, 0, 0];
            // SAFETY: the kernel reads the new action from `new`, a live
            // local of the size of its struct sigaction.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    new.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
            if r < 0 {
                return Err(last_os("rt_sigaction", 0));
            }
        }
    }
    Ok(())
}

/// What [`wait_child_or_signal`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The child exited (not reaped yet).
    ChildExited,
    /// This signal of the mask arrived (it is taken).
    Signal(i32),
}

/// Wait until the child of `pidfd` exits or a signal of `sigfd` (a
/// signalfd of signals the caller blocks) arrives.
pub fn wait_child_or_signal(pidfd: &OwnedFd, sigfd: &OwnedFd, pid: Pid) -> Result<Woken> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two pollfds of the live array,
        // whose length is passed.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = last_os("poll", pid);
            if e.errno() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            let mut info = [0u8; 128];
            let n = nix::unistd::read(sigfd, &mut info)
                .map_err(|e| crate::os_errno("read of a signalfd", pid, e as i32))?;
            if n == info.len() {
                let sig = u32::from_ne_bytes(info[..4].try_into().expect("4 bytes"));
                return Ok(Woken::Signal(sig as i32));
            }
        }
        if fds[0].revents != 0 {
            return Ok(Woken::ChildExited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_signals_are_pending_then_taken() {
        let mask = bit(libc::SIGUSR2);
        let b = block(mask).unwrap();
        assert_eq!(pending().unwrap() & mask, 0);
        crate::proc::tgkill(
            crate::proc::getpid(),
            nix::unistd::gettid().as_raw(),
            libc::SIGUSR2,
        )
        .unwrap();
        assert_eq!(pending().unwrap() & mask, mask);
        assert_eq!(take_pending(mask), Some(libc::SIGUSR2));
        assert_eq!(take_pending(mask), None);
        drop(b);
    }
}
