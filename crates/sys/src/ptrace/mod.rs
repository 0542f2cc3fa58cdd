//! ptrace: seizing threads, waiting for their stops, and their state
//! (general registers, the XSAVE area, signal masks and siginfos).
//!
//! Built on nix where it has the request. By hand: PTRACE_CONT and
//! PTRACE_DETACH (they take any signal number, and nix's `Signal` enum has
//! no realtime signals), the wait for stops (nix's `WaitStatus` cannot
//! report a realtime signal either), PTRACE_GETSIGMASK/SETSIGMASK,
//! PTRACE_PEEKSIGINFO and the NT_X86_XSTATE register set (nix has none of
//! them).

mod regs;
pub mod seccomp;
mod siginfo;
mod xstate;

pub use regs::{get_regs, reg, set_regs, Regs};
pub use siginfo::{get_siginfo, get_sigmask, peek_siginfo, set_sigmask, SIGINFO_SIZE};
pub use xstate::{get_xstate, set_xstate, xsave_info};

use crate::{nix_pid, Error, OsResult, Pid, Result};
use nix::sys::ptrace::Options;

pub const PTRACE_O_TRACESYSGOOD: u32 = libc::PTRACE_O_TRACESYSGOOD as u32;
pub const PTRACE_O_TRACECLONE: u32 = libc::PTRACE_O_TRACECLONE as u32;
pub const PTRACE_O_EXITKILL: u32 = libc::PTRACE_O_EXITKILL as u32;
/// Seccomp filters do not apply to the tracee while it is traced with this
/// option (needs CAP_SYS_ADMIN).
pub const PTRACE_O_SUSPEND_SECCOMP: u32 = 1 << 21;

pub const PTRACE_O_TRACEFORK: u32 = libc::PTRACE_O_TRACEFORK as u32;
pub const PTRACE_O_TRACEVFORK: u32 = libc::PTRACE_O_TRACEVFORK as u32;

pub const PTRACE_EVENT_CLONE: i32 = libc::PTRACE_EVENT_CLONE;
pub const PTRACE_EVENT_FORK: i32 = libc::PTRACE_EVENT_FORK;
pub const PTRACE_EVENT_VFORK: i32 = libc::PTRACE_EVENT_VFORK;
pub const PTRACE_EVENT_STOP: i32 = libc::PTRACE_EVENT_STOP;

/// What `waitpid` reported for a traced thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A ptrace event stop (`PTRACE_EVENT_*`), e.g. the stop after `PTRACE_INTERRUPT`.
    Event { sig: i32, event: i32 },
    /// Signal-delivery-stop (or group-stop) with this signal.
    Signal(i32),
    /// Exited with a status.
    Exited(i32),
    /// Killed by a signal.
    Killed(i32),
}

/// A ptrace request nix does not make, failing on -1 (none of the
/// requests used here are PEEKDATA-style, where -1 can be a value).
///
/// # Safety
///
/// `addr` and `data` must be what request `req` expects: plain integers,
/// or addresses of memory that is valid (and writable where the kernel
/// writes) for the size that request uses, for the duration of the call.
/// ptrace never keeps the pointers.
pub(crate) unsafe fn ptrace_raw(
    op: &'static str,
    req: libc::c_uint,
    tid: Pid,
    addr: usize,
    data: usize,
) -> Result<libc::c_long> {
    // SAFETY: the caller guarantees that `addr`/`data` are what `req`
    // expects (see above).
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        return Err(crate::last_os(op, tid));
    }
    Ok(r)
}

/// Attach to a thread without stopping it.
pub fn seize(tid: Pid, options: u32) -> Result<()> {
    let options = Options::from_bits_retain(options as libc::c_int);
    nix::sys::ptrace::seize(nix_pid(tid), options).op_tid("PTRACE_SEIZE", tid)
}

/// Ask a seized thread to stop; it reports `Stop::Event{event: PTRACE_EVENT_STOP}`.
pub fn interrupt(tid: Pid) -> Result<()> {
    nix::sys::ptrace::interrupt(nix_pid(tid)).op_tid("PTRACE_INTERRUPT", tid)
}

/// Detach, optionally delivering a signal (any signal number; 0: none).
pub fn detach(tid: Pid, sig: i32) -> Result<()> {
    // SAFETY: PTRACE_DETACH takes no address and a signal number as data.
    unsafe { ptrace_raw("PTRACE_DETACH", libc::PTRACE_DETACH, tid, 0, sig as usize) }.map(drop)
}

/// Resume a stopped thread, optionally delivering a signal (any signal
/// number; 0: none).
pub fn cont(tid: Pid, sig: i32) -> Result<()> {
    // SAFETY: PTRACE_CONT takes no address and a signal number as data.
    unsafe { ptrace_raw("PTRACE_CONT", libc::PTRACE_CONT, tid, 0, sig as usize) }.map(drop)
}

/// Let a thread in a group-stop stay stopped, but report what happens to
/// it (PTRACE_LISTEN): it goes on at SIGCONT like an untraced one.
pub fn listen(tid: Pid) -> Result<()> {
    // SAFETY: PTRACE_LISTEN takes no address and no data.
    unsafe { ptrace_raw("PTRACE_LISTEN", libc::PTRACE_LISTEN, tid, 0, 0) }.map(drop)
}

/// Execute one instruction.
pub fn singlestep(tid: Pid) -> Result<()> {
    nix::sys::ptrace::step(nix_pid(tid), None).op_tid("PTRACE_SINGLESTEP", tid)
}

/// Resume a stopped thread until its next system call entry or exit
/// (PTRACE_SYSCALL), without delivering a signal.
pub fn syscall_resume(tid: Pid) -> Result<()> {
    nix::sys::ptrace::syscall(nix_pid(tid), None).op_tid("PTRACE_SYSCALL", tid)
}

/// The stop status of a system call entry or exit stop, with
/// PTRACE_O_TRACESYSGOOD.
pub const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

/// Set ptrace options on an attached thread.
pub fn set_options(tid: Pid, options: u32) -> Result<()> {
    let options = Options::from_bits_retain(options as libc::c_int);
    nix::sys::ptrace::setoptions(nix_pid(tid), options).op_tid("PTRACE_SETOPTIONS", tid)
}

/// The message of the last ptrace event (the new tid for PTRACE_EVENT_CLONE).
pub fn event_msg(tid: Pid) -> Result<u64> {
    let msg = nix::sys::ptrace::getevent(nix_pid(tid)).op_tid("PTRACE_GETEVENTMSG", tid)?;
    Ok(msg as u64)
}

/// Wait for the next state change of one traced thread (`__WALL`).
pub fn wait(tid: Pid) -> Result<Stop> {
    wait_flags(tid, 0).map(|s| s.expect("blocking wait returns a status"))
}

/// Like [`wait`] but returns `None` at once when nothing happened yet.
pub fn try_wait(tid: Pid) -> Result<Option<Stop>> {
    wait_flags(tid, libc::WNOHANG)
}

/// The next state change of any traced thread or child, without waiting:
/// (its tid, what happened), or None.
pub fn try_wait_any() -> Result<Option<(Pid, Stop)>> {
    let (r, status) =
        crate::proc::wait::waitpid(-1, libc::__WALL | libc::WNOHANG).map_err(|source| {
            Error::Os {
                op: "waitpid",
                tid: -1,
                source,
            }
        })?;
    if r == 0 {
        return Ok(None);
    }
    Ok(Some((r, decode_status(r, status)?)))
}

fn wait_flags(tid: Pid, flags: i32) -> Result<Option<Stop>> {
    let (r, status) =
        crate::proc::wait::waitpid(tid, libc::__WALL | flags).map_err(|source| Error::Os {
            op: "waitpid",
            tid,
            source,
        })?;
    if r == 0 {
        return Ok(None);
    }
    decode_status(tid, status).map(Some)
}

fn decode_status(tid: Pid, status: i32) -> Result<Stop> {
    let s = if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed(libc::WTERMSIG(status))
    } else if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        if event != 0 {
            Stop::Event { sig, event }
        } else {
            Stop::Signal(sig)
        }
    } else {
        return Err(Error::Unexpected {
            tid,
            what: format!("unknown wait status {status:#x}"),
        });
    };
    Ok(s)
}

/// Seize a thread and bring it to a ptrace stop.
///
/// Signals that arrive while we wait for the stop are not lost: a
/// signal-delivery-stop is answered by re-injecting the signal later through
/// the returned list (the caller decides; usually it is left pending by
/// resuming with it after the dump).
pub fn seize_and_stop(tid: Pid, options: u32) -> Result<Vec<[u8; SIGINFO_SIZE]>> {
    seize(tid, options)?;
    interrupt(tid)?;
    wait_interrupt_stop(tid)
}

/// After `interrupt`, one look (without blocking) at whether the thread
/// reached its interrupt stop: `Ok(Some(sig))` when it did (`sig` is the
/// signal that stopped the process when it is in a group-stop, SIGSTOP,
/// SIGTSTP, SIGTTIN or SIGTTOU, else SIGTRAP), `Ok(None)` when not yet.
/// What happens on the way is handled as [`wait_interrupt_stop`] does
/// (signals held back into `deferred`, other events resumed), so callers
/// can bound the wait: a thread that never stops (uninterruptible sleep)
/// is then seen, not waited for forever.
pub fn poll_interrupt_stop(
    tid: Pid,
    deferred: &mut Vec<[u8; SIGINFO_SIZE]>,
) -> Result<Option<i32>> {
    loop {
        match try_wait(tid)? {
            None => return Ok(None),
            Some(Stop::Event { event, sig }) if event == PTRACE_EVENT_STOP => return Ok(Some(sig)),
            Some(Stop::Event { .. }) => cont(tid, 0)?,
            Some(Stop::Signal(_)) => {
                deferred.push(get_siginfo(tid)?);
                cont(tid, 0)?;
            }
            Some(Stop::Exited(c)) => {
                return Err(Error::Gone {
                    tid,
                    how: format!("exit status {c}"),
                })
            }
            Some(Stop::Killed(s)) => {
                return Err(Error::Gone {
                    tid,
                    how: format!("killed by signal {s}"),
                })
            }
        }
    }
}

/// After `interrupt`, wait for the interrupt stop. Signals whose delivery
/// stop is seen on the way have already been dequeued by the kernel: they are
/// suppressed and their siginfos returned, so that the caller can queue them
/// again (or save them as pending) and nothing is lost.
pub fn wait_interrupt_stop(tid: Pid) -> Result<Vec<[u8; SIGINFO_SIZE]>> {
    let mut deferred = Vec::new();
    loop {
        match wait(tid)? {
            Stop::Event { event, .. } if event == PTRACE_EVENT_STOP => return Ok(deferred),
            Stop::Event { .. } => {
                // Another event (e.g. a clone the thread just made): the
                // thread is stopped; interrupt again will be reported next.
                cont(tid, 0)?;
            }
            Stop::Signal(_) => {
                // Signal-delivery-stop: hold the signal back (keeping its
                // siginfo) and let the pending interrupt take effect.
                deferred.push(get_siginfo(tid)?);
                cont(tid, 0)?;
            }
            Stop::Exited(c) => {
                return Err(Error::Gone {
                    tid,
                    how: format!("exit status {c}"),
                })
            }
            Stop::Killed(s) => {
                return Err(Error::Gone {
                    tid,
                    how: format!("killed by signal {s}"),
                })
            }
        }
    }
}
