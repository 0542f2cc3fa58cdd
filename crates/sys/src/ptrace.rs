//! ptrace: seizing threads, waiting for their stops, and their state.

use crate::{last_os, Error, Pid, Result};

pub const PTRACE_O_TRACESYSGOOD: u32 = 0x1;
pub const PTRACE_O_TRACECLONE: u32 = 0x8;
pub const PTRACE_O_EXITKILL: u32 = 0x100000;

pub const PTRACE_EVENT_CLONE: i32 = 3;
pub const PTRACE_EVENT_STOP: i32 = 128;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const NT_X86_XSTATE: usize = 0x202;

/// Size of a kernel siginfo.
pub const SIGINFO_SIZE: usize = 128;

/// The 27 general registers of `struct user_regs_struct`, in its order
/// (r15, r14, ..., rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs).
pub type Regs = [u64; 27];

/// Register indices into [`Regs`].
pub mod reg {
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const RSP: usize = 19;
    pub const FS_BASE: usize = 21;
}

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

// SAFETY helper: every ptrace request below passes pointers to live, correctly
// sized local buffers, as each request's documentation requires.
fn ptrace_raw(
    op: &'static str,
    req: libc::c_uint,
    tid: Pid,
    addr: usize,
    data: usize,
) -> Result<libc::c_long> {
    // SAFETY: the caller guarantees that `addr`/`data` are either plain
    // integers or pointers to memory valid for this request for the duration
    // of the call. ptrace never retains the pointers.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        // PEEK* requests may legitimately return -1 with errno 0; none of the
        // requests used here are PEEKDATA-style, so -1 is always an error.
        return Err(Error::Os { op, tid, source: e });
    }
    Ok(r)
}

/// Attach to a thread without stopping it.
pub fn seize(tid: Pid, options: u32) -> Result<()> {
    ptrace_raw("PTRACE_SEIZE", libc::PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

/// Ask a seized thread to stop; it reports `Stop::Event{event: PTRACE_EVENT_STOP}`.
pub fn interrupt(tid: Pid) -> Result<()> {
    ptrace_raw("PTRACE_INTERRUPT", libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// Detach, optionally delivering a signal.
pub fn detach(tid: Pid, sig: i32) -> Result<()> {
    ptrace_raw("PTRACE_DETACH", libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// Resume a stopped thread, optionally delivering a signal.
pub fn cont(tid: Pid, sig: i32) -> Result<()> {
    ptrace_raw("PTRACE_CONT", libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// Execute one instruction.
pub fn singlestep(tid: Pid) -> Result<()> {
    ptrace_raw("PTRACE_SINGLESTEP", libc::PTRACE_SINGLESTEP, tid, 0, 0).map(drop)
}

/// Set ptrace options on an attached thread.
pub fn set_options(tid: Pid, options: u32) -> Result<()> {
    ptrace_raw(
        "PTRACE_SETOPTIONS",
        libc::PTRACE_SETOPTIONS,
        tid,
        0,
        options as usize,
    )
    .map(drop)
}

/// The message of the last ptrace event (the new tid for PTRACE_EVENT_CLONE).
pub fn event_msg(tid: Pid) -> Result<u64> {
    let mut msg: libc::c_ulong = 0;
    ptrace_raw(
        "PTRACE_GETEVENTMSG",
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut _ as usize,
    )?;
    Ok(msg)
}

/// Wait for the next state change of one traced thread (`__WALL`).
pub fn wait(tid: Pid) -> Result<Stop> {
    wait_flags(tid, 0).map(|s| s.expect("blocking wait returns a status"))
}

/// Like [`wait`] but returns `None` at once when nothing happened yet.
pub fn try_wait(tid: Pid) -> Result<Option<Stop>> {
    wait_flags(tid, libc::WNOHANG)
}

fn wait_flags(tid: Pid, flags: i32) -> Result<Option<Stop>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | flags) };
        if r == -1 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Os {
                op: "waitpid",
                tid,
                source: e,
            });
        }
        if r == 0 {
            return Ok(None);
        }
        break;
    }
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
    Ok(Some(s))
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

/// The siginfo of the signal a thread is stopped for.
pub fn get_siginfo(tid: Pid) -> Result<[u8; SIGINFO_SIZE]> {
    let mut si = [0u8; SIGINFO_SIZE];
    ptrace_raw(
        "PTRACE_GETSIGINFO",
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        si.as_mut_ptr() as usize,
    )?;
    Ok(si)
}

/// General registers.
pub fn get_regs(tid: Pid) -> Result<Regs> {
    let mut r = [0u64; 27];
    debug_assert_eq!(std::mem::size_of::<libc::user_regs_struct>(), 27 * 8);
    ptrace_raw(
        "PTRACE_GETREGS",
        libc::PTRACE_GETREGS,
        tid,
        0,
        r.as_mut_ptr() as usize,
    )?;
    Ok(r)
}

/// Set general registers.
pub fn set_regs(tid: Pid, r: &Regs) -> Result<()> {
    ptrace_raw(
        "PTRACE_SETREGS",
        libc::PTRACE_SETREGS,
        tid,
        0,
        r.as_ptr() as usize,
    )
    .map(drop)
}

/// The XSAVE area (NT_X86_XSTATE).
pub fn get_xstate(tid: Pid) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace_raw(
        "PTRACE_GETREGSET(NT_X86_XSTATE)",
        libc::PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut _ as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Load an XSAVE area (NT_X86_XSTATE).
pub fn set_xstate(tid: Pid, xstate: &[u8]) -> Result<()> {
    let mut b = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    };
    ptrace_raw(
        "PTRACE_SETREGSET(NT_X86_XSTATE)",
        libc::PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

/// Blocked signal mask.
pub fn get_sigmask(tid: Pid) -> Result<u64> {
    let mut m: u64 = 0;
    ptrace_raw(
        "PTRACE_GETSIGMASK",
        PTRACE_GETSIGMASK,
        tid,
        8,
        &mut m as *mut u64 as usize,
    )?;
    Ok(m)
}

/// Set the blocked signal mask.
pub fn set_sigmask(tid: Pid, mask: u64) -> Result<()> {
    ptrace_raw(
        "PTRACE_SETSIGMASK",
        PTRACE_SETSIGMASK,
        tid,
        8,
        &mask as *const u64 as usize,
    )
    .map(drop)
}

/// All queued signals of a thread (`shared == false`) or of its thread
/// group (`shared == true`), in queue order, as raw 128-byte siginfos.
pub fn peek_siginfo(tid: Pid, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        let n = ptrace_raw(
            "PTRACE_PEEKSIGINFO",
            PTRACE_PEEKSIGINFO,
            tid,
            &args as *const PeekArgs as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        // The kernel queue is bounded by RLIMIT_SIGPENDING; stop at a short read.
        if n < BATCH || out.len() > 1 << 20 {
            return Ok(out);
        }
    }
}

/// rseq registration of a thread: (address, length, signature, flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub address: u64,
    pub length: u32,
    pub signature: u32,
    pub flags: u32,
}

pub fn get_rseq(tid: Pid) -> Result<RseqConfig> {
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        ptr: u64,
        size: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    let mut c = Conf::default();
    ptrace_raw(
        "PTRACE_GET_RSEQ_CONFIGURATION",
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<Conf>(),
        &mut c as *mut Conf as usize,
    )?;
    Ok(RseqConfig {
        address: c.ptr,
        length: c.size,
        signature: c.sig,
        flags: c.flags,
    })
}

/// The robust futex list of a thread: (head, len). Works from outside.
pub fn get_robust_list(tid: Pid) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers point at live locals of the right size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    if r < 0 {
        return Err(last_os("get_robust_list", tid));
    }
    Ok((head, len as u64))
}
