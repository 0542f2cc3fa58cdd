//! Plain system calls that std does not wrap, as safe functions.

use crate::{last_os, Pid, Result};

fn check(op: &'static str, r: libc::c_long) -> Result<libc::c_long> {
    if r < 0 {
        Err(last_os(op, 0))
    } else {
        Ok(r)
    }
}

/// kill(2).
pub fn kill(pid: Pid, sig: i32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::kill(pid, sig) };
    if r < 0 {
        return Err(last_os("kill", pid));
    }
    Ok(())
}

/// tgkill(2): a signal to one thread.
pub fn tgkill(tgid: Pid, tid: Pid, sig: i32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    if r < 0 {
        return Err(last_os("tgkill", tid));
    }
    Ok(())
}

/// Close every fd in `first..=last` (close_range(2)).
pub fn close_range(first: u32, last: u32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments; closing fds is memory-safe.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    check("close_range", r).map(drop)
}

/// Sleep until a signal arrives (pause(2)).
pub fn pause() {
    // SAFETY: no arguments.
    unsafe { libc::pause() };
}

/// _exit(2): leave at once, without running atexit handlers or destructors
/// (the right way out of a forked child).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: terminates the calling process.
    unsafe { libc::_exit(code) }
}

/// prctl(PR_SET_PDEATHSIG).
pub fn set_parent_death_signal(sig: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    check("prctl(PR_SET_PDEATHSIG)", r as libc::c_long).map(drop)
}

/// getpid(2), straight from the kernel.
pub fn getpid() -> Pid {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) as Pid }
}

/// write(2) of a whole small buffer to a raw fd (async-signal-safe).
pub fn write_fd(fd: i32, data: &[u8]) -> Result<()> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: the pointer and length describe a live slice.
        let r = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(crate::Error::Os {
                op: "write",
                tid: 0,
                source: e,
            });
        }
        off += r as usize;
    }
    Ok(())
}

/// The size of the XSAVE area for the features enabled by the OS, and XCR0
/// itself, from CPUID leaf 0xD (x86_64).
pub fn xsave_info() -> (u64, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 0xD, sub-leaf 0: EBX = XSAVE area size for the
        // currently enabled XCR0.
        let leaf = std::arch::x86_64::__cpuid_count(0xd, 0);
        let xcr0 = xgetbv0();
        (xcr0, leaf.ebx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0, 0)
    }
}

#[cfg(target_arch = "x86_64")]
fn xgetbv0() -> u64 {
    let l1 = std::arch::x86_64::__cpuid(1);
    if l1.ecx & (1 << 27) == 0 {
        return 0;
    }
    // SAFETY: XGETBV only faults when OSXSAVE is clear, checked above;
    // it touches no memory.
    unsafe {
        let eax: u32;
        let edx: u32;
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") edx, options(nomem, nostack, preserves_flags));
        (u64::from(edx) << 32) | u64::from(eax)
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Exited(i32),
    Signaled(i32),
}

/// Wait for a child process to end (not for stops), retrying on EINTR.
pub fn wait_child_exit(pid: Pid) -> Result<ExitKind> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(crate::Error::Os {
                op: "waitpid",
                tid: pid,
                source: e,
            });
        }
        if libc::WIFEXITED(status) {
            return Ok(ExitKind::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(ExitKind::Signaled(libc::WTERMSIG(status)));
        }
    }
}

/// Whether `fd` of this process is a terminal.
pub fn isatty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the fd number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Make the calling process a child subreaper: orphaned descendants are
/// reparented to it instead of init (tests use it to reap detached restores).
pub fn set_child_subreaper() -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    check("prctl(PR_SET_CHILD_SUBREAPER)", r as libc::c_long).map(drop)
}

/// Reap any ended child without blocking; returns its pid.
pub fn reap_any() -> Option<Pid> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (r > 0).then_some(r)
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
            return Err(crate::Error::Os {
                op: "wait4",
                tid: pid,
                source: e,
            });
        }
        let kind = if libc::WIFSIGNALED(status) {
            ExitKind::Signaled(libc::WTERMSIG(status))
        } else {
            ExitKind::Exited(libc::WEXITSTATUS(status))
        };
        return Ok((kind, ru.ru_maxrss as u64));
    }
}

/// Reap child `pid` if it has ended, without blocking; true if it was reaped
/// (or is not our child at all).
pub fn try_reap(pid: Pid) -> bool {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
    r == pid || r < 0
}

/// Start writing back the dirty pages of `fd` in `offset..offset+len`
/// (sync_file_range(2) with SYNC_FILE_RANGE_WRITE): the disk works while
/// the caller goes on, so a later fsync has little left to wait for. Does
/// not wait for the writes, and guarantees nothing about durability.
pub fn start_writeback(fd: std::os::fd::BorrowedFd<'_>, offset: u64, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integer arguments only; `fd` is a live descriptor for the
    // duration of the call.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    check("sync_file_range", r as libc::c_long).map(drop)
}
