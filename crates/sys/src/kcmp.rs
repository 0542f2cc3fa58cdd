//! kcmp(2): whether two processes share a kernel object, and a total order
//! of such objects (by hand: nix lacks it).
//!
//! The kernel compares the objects' obfuscated addresses, so the answer is
//! an ordering that stays stable while both objects exist: objects can be
//! sorted with it and equal ones found in n log n comparisons.

use crate::{last_os, Pid, Result};
use std::cmp::Ordering;

/// What kcmp compares (linux/kcmp.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Open file descriptions: `idx1`/`idx2` are fd numbers.
    File,
    /// Address spaces (CLONE_VM, vfork).
    Vm,
    /// Fd tables (CLONE_FILES).
    Files,
    /// cwd/root/umask (CLONE_FS).
    Fs,
    /// Signal handlers (CLONE_SIGHAND).
    Sighand,
    /// I/O contexts (CLONE_IO).
    Io,
    /// SysV semaphore undo lists (CLONE_SYSVSEM).
    Sysvsem,
}

impl Kind {
    fn raw(self) -> libc::c_long {
        match self {
            Kind::File => 0,
            Kind::Vm => 1,
            Kind::Files => 2,
            Kind::Fs => 3,
            Kind::Sighand => 4,
            Kind::Io => 5,
            Kind::Sysvsem => 6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::File => "kcmp(KCMP_FILE)",
            Kind::Vm => "kcmp(KCMP_VM)",
            Kind::Files => "kcmp(KCMP_FILES)",
            Kind::Fs => "kcmp(KCMP_FS)",
            Kind::Sighand => "kcmp(KCMP_SIGHAND)",
            Kind::Io => "kcmp(KCMP_IO)",
            Kind::Sysvsem => "kcmp(KCMP_SYSVSEM)",
        }
    }
}

/// The kernel's order of the `kind` objects of `pid1` and `pid2` (for
/// [`Kind::File`], of their fds `idx1` and `idx2`): `Equal` when they are
/// the same object. Needs ptrace access to both processes; `ENOSYS` means
/// the kernel has no kcmp.
pub fn kcmp(kind: Kind, pid1: Pid, pid2: Pid, idx1: i32, idx2: i32) -> Result<Ordering> {
    // SAFETY: kcmp with these types takes only integer arguments and
    // touches no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            kind.raw(),
            idx1 as libc::c_long,
            idx2 as libc::c_long,
        )
    };
    match r {
        0 => Ok(Ordering::Equal),
        1 => Ok(Ordering::Less),
        2 => Ok(Ordering::Greater),
        _ if r < 0 => Err(last_os(kind.name(), pid1)),
        // 3 means "not comparable": never for the kinds above.
        _ => Err(crate::Error::Unexpected {
            tid: pid1,
            what: format!("{} answered {r}", kind.name()),
        }),
    }
}

/// kcmp(KCMP_FILE) as an ordering of open file descriptions: `Equal` when
/// fd `fd1` of `pid1` and fd `fd2` of `pid2` are the same description.
pub fn kcmp_file_order(pid1: Pid, pid2: Pid, fd1: i32, fd2: i32) -> Result<Ordering> {
    kcmp(Kind::File, pid1, pid2, fd1, fd2)
}

/// Whether fd `fd1` of `pid1` and fd `fd2` of `pid2` are the same open file
/// description (kcmp(KCMP_FILE)).
pub fn kcmp_same_file(pid1: Pid, pid2: Pid, fd1: i32, fd2: i32) -> Result<bool> {
    Ok(kcmp_file_order(pid1, pid2, fd1, fd2)? == Ordering::Equal)
}

const KCMP_EPOLL_TFD: libc::c_long = 7;

/// kcmp(KCMP_EPOLL_TFD): the kernel's order of the open file description
/// of fd `fd1` of `pid1` and the file that epoll instance `epfd` of `pid2`
/// watches under fd number `tfd` (`toff`: which of several watches with
/// that number, in the order /proc/PID/fdinfo lists them). `Equal`: the
/// epoll watches that very description, whatever fd it is at now. ENOENT:
/// no such watch.
pub fn kcmp_epoll_target(
    pid1: Pid,
    fd1: i32,
    pid2: Pid,
    epfd: i32,
    tfd: i32,
    toff: u32,
) -> Result<Ordering> {
    // struct kcmp_epoll_slot { __u32 efd; __u32 tfd; __u32 toff; }
    let slot: [u32; 3] = [epfd as u32, tfd as u32, toff];
    // SAFETY: the kernel reads one struct kcmp_epoll_slot from the pointer,
    // which points at a live array of that layout for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_EPOLL_TFD,
            fd1 as libc::c_long,
            slot.as_ptr() as libc::c_long,
        )
    };
    match r {
        0 => Ok(Ordering::Equal),
        1 => Ok(Ordering::Less),
        2 => Ok(Ordering::Greater),
        _ if r < 0 => Err(last_os("kcmp(KCMP_EPOLL_TFD)", pid1)),
        _ => Err(crate::Error::Unexpected {
            tid: pid1,
            what: format!("kcmp(KCMP_EPOLL_TFD) answered {r}"),
        }),
    }
}
