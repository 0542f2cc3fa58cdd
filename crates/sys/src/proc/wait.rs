//! Waiting for child processes to end, and reaping them.
//!
//! By hand: nix's `WaitStatus` names a terminating or stopping signal
//! with its `Signal` enum, which has no realtime signals (nix fails the
//! wait with EINVAL after the kernel has reaped the child), and nix has
//! no wait4.

use crate::{Error, Pid, Result};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Exited(i32),
    Signaled(i32),
}

fn wait_error(op: &'static str, pid: Pid, source: std::io::Error) -> Error {
    Error::Os {
        op,
        tid: pid,
        source,
    }
}

/// waitpid(2) retrying on EINTR: (pid reported or 0, raw status).
pub(crate) fn waitpid(pid: Pid, flags: i32) -> std::io::Result<(Pid, i32)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r >= 0 {
            return Ok((r, status));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Wait for a child process to end (not for stops), retrying on EINTR.
pub fn wait_child_exit(pid: Pid) -> Result<ExitKind> {
    loop {
        let (_, status) = waitpid(pid, 0).map_err(|e| wait_error("waitpid", pid, e))?;
        if libc::WIFEXITED(status) {
            return Ok(ExitKind::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(ExitKind::Signaled(libc::WTERMSIG(status)));
        }
    }
}

/// Wait for a child to end and return how, with its peak resident set size
/// in KiB (wait4's ru_maxrss), for benchmarks.
pub fn wait_child_rusage(pid: Pid) -> Result<(ExitKind, u64)> {
    loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid `rusage` (plain integers).
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both out-pointers point at live locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(wait_error("wait4", pid, e));
        }
        let kind = if libc::WIFSIGNALED(status) {
            ExitKind::Signaled(libc::WTERMSIG(status))
        } else {
            ExitKind::Exited(libc::WEXITSTATUS(status))
        };
        return Ok((kind, ru.ru_maxrss as u64));
    }
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Exited(i32),
    Killed(i32),
    /// Not an exit: the child stopped or continued (not reported with WEXITED only).
    Other,
}

/// Wait until `pid` (a child or tracee of ours) has exited, WITHOUT reaping it
/// (waitid with WEXITED | WNOWAIT | __WALL): it stays a zombie for whoever reaps it.
pub fn wait_exit_nowait(pid: Pid) -> Result<Exit> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (plain integers).
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `si` is a live, correctly sized out-parameter.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut si,
                libc::WEXITED | libc::WNOWAIT | libc::__WALL,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(wait_error("waitid(WNOWAIT)", pid, e));
        }
        // SAFETY: waitid filled `si` for an exited child: si_status is valid.
        let status = unsafe { si.si_status() };
        return Ok(match si.si_code {
            libc::CLD_EXITED => Exit::Exited(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Killed(status),
            _ => Exit::Other,
        });
    }
}

/// One waitpid(2) without blocking: the pid reaped, 0 (nothing yet) or
/// -1 (an error).
fn waitpid_nohang(pid: Pid, flags: i32) -> Pid {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | flags) }
}

/// Reap any ended child without blocking; returns its pid.
pub fn reap_any() -> Option<Pid> {
    let r = waitpid_nohang(-1, 0);
    (r > 0).then_some(r)
}

/// Reap child `pid` if it has ended, without blocking; true if it was reaped
/// (or is not our child at all).
pub fn try_reap(pid: Pid) -> bool {
    let r = waitpid_nohang(pid, libc::__WALL);
    r == pid || r < 0
}

/// waitpid(pid, WNOHANG | __WALL) for a child that is not (or no longer) traced
/// by us: reaps it if it is gone. Returns true when something was reaped.
pub fn reap_nohang(pid: Pid) -> bool {
    waitpid_nohang(pid, libc::__WALL) == pid
}

/// waitpid(pid, __WALL), blocking until the child (or traced thread) ends.
/// Stops are skipped. Errors (ECHILD) end the wait.
pub fn reap_blocking(pid: Pid) {
    while let Ok((_, status)) = waitpid(pid, libc::__WALL) {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return;
        }
    }
}
