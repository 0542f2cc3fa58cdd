//! Creating a process with a chosen pid (clone3 with set_tid), optionally
//! sharing kernel tables with its parent (CLONE_FILES, CLONE_FS,
//! CLONE_SYSVSEM).

use crate::{Error, Pid, Result};

/// Flags [`fork_with`] accepts: tables a child may share with its parent
/// without sharing its memory.
pub const SHARE_FLAGS: u64 = (libc::CLONE_FILES | libc::CLONE_FS | libc::CLONE_SYSVSEM) as u64;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    Child,
    Parent(Pid),
}

/// fork(), optionally with the child's pid chosen (`Some(pid)`: clone3 with
/// set_tid, which needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the pid
/// namespace). The pid being in use gives `EEXIST`.
///
/// In the child only async-signal-safe work is allowed if the caller has
/// other threads; the child must end with `_exit` or exec, never return into
/// the caller's normal flow.
pub fn fork_with_pid(pid: Option<Pid>) -> Result<Forked> {
    fork_with(pid, 0)
}

/// [`fork_with_pid`], the child sharing the tables of `share` (a subset of
/// [`SHARE_FLAGS`]; other bits are refused with `EINVAL`) with the caller.
/// Allocates nothing (callable from a forked child).
pub fn fork_with(pid: Option<Pid>, share: u64) -> Result<Forked> {
    let op = if pid.is_some() {
        "clone3(set_tid)"
    } else {
        "clone3"
    };
    if share & !SHARE_FLAGS != 0 {
        return Err(crate::os_errno(op, pid.unwrap_or(0), libc::EINVAL));
    }
    let tid_arr: [libc::pid_t; 1] = [pid.unwrap_or(0)];
    let args = CloneArgs {
        flags: share,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if pid.is_some() {
            tid_arr.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(pid.is_some()),
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork
    // (the flags allowed above share kernel tables only, never memory): the
    // child gets a copy of the address space and continues here. `args` and
    // `tid_arr` outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(Error::Os {
            op,
            tid: pid.unwrap_or(0),
            source: std::io::Error::last_os_error(),
        }),
        0 => {
            crate::heap::forked_child();
            Ok(Forked::Child)
        }
        child => Ok(Forked::Parent(child as Pid)),
    }
}

/// A pidfd of a process that has exited and been reaped: a child is made
/// (at `pid` when given, see [`fork_with_pid`]) with CLONE_PIDFD, exits at
/// once with status 0, and is reaped. The pidfd then says "no process"
/// as the pidfd of any dead process does. `flags`: PIDFD_NONBLOCK is set
/// on the result (CLONE_PIDFD pidfds are blocking). Async-signal-safe.
pub fn dead_pidfd(pid: Option<Pid>, nonblock: bool) -> Result<std::os::fd::OwnedFd> {
    dead_pidfd_with(pid, nonblock, &mut |_| Ok(()))
}

/// [`dead_pidfd`], calling `more` with the child's pid once it has exited
/// and before it is reaped (a zombie still has its pid: pidfd_open of it
/// gives more pidfds of the same process). The child is reaped whatever
/// `more` returns; its error is returned. Async-signal-safe if `more` is.
pub fn dead_pidfd_with(
    pid: Option<Pid>,
    nonblock: bool,
    more: &mut dyn FnMut(Pid) -> Result<()>,
) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const CLONE_PIDFD: u64 = 0x1000;
    let tid_arr: [libc::pid_t; 1] = [pid.unwrap_or(0)];
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if pid.is_some() {
            tid_arr.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(pid.is_some()),
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork; the child only
    // calls _exit. `args`, `tid_arr` and `pidfd` outlive the call (the
    // kernel writes the pidfd number into `pidfd` in the parent).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(crate::last_os("clone3(CLONE_PIDFD)", pid.unwrap_or(0))),
        // SAFETY: the child leaves at once without touching anything.
        0 => unsafe { libc::_exit(0) },
        child => {
            // SAFETY: CLONE_PIDFD gave us this new fd, owned by nothing else.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) };
            let extra =
                crate::proc::wait::wait_exit_nowait(child as Pid).and_then(|_| more(child as Pid));
            crate::proc::wait::reap_blocking(child as Pid);
            extra?;
            if nonblock {
                crate::fds::set_fl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::O_NONBLOCK)?;
            }
            Ok(fd)
        }
    }
}
