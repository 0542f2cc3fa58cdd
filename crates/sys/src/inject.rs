//! Running system calls inside a stopped thread.
//!
//! The thread must be in a ptrace stop. We point its instruction pointer at
//! a `syscall` instruction in its own address space (one found in its vdso,
//! or a trampoline we mapped), load the syscall number and arguments, execute
//! exactly that instruction with PTRACE_SINGLESTEP, and read the result.
//! `orig_rax = -1` keeps the kernel from applying syscall-restart fixups meant
//! for the call the thread was interrupted in. While injecting, every
//! blockable signal is blocked (PTRACE_SETSIGMASK) so that no handler runs in
//! the middle; the original mask and registers come back with [`Injector::finish`].

use crate::mm::ProcMem;
use crate::ptrace::{self, reg, Regs, Stop};
use crate::{Error, Pid, Result};

/// The bytes of `syscall; int3`, for a trampoline page.
pub const TRAMPOLINE_CODE: [u8; 3] = [0x0f, 0x05, 0xcc];

/// Offset of the first `syscall` instruction (0f 05) in `code`.
pub fn find_syscall_insn(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

pub struct Injector {
    tid: Pid,
    ip: u64,
    saved_regs: Regs,
    saved_mask: u64,
    mem: ProcMem,
    count: u64,
    /// Signals that got dequeued for delivery while we were injecting
    /// (only unblockable ones can): raw siginfos, to be re-queued or saved.
    pub deferred: Vec<[u8; ptrace::SIGINFO_SIZE]>,
}

impl Injector {
    /// Prepare to inject into `tid` (already in a ptrace stop), executing
    /// system calls at `syscall_ip`, the address of a `syscall` instruction.
    pub fn new(tid: Pid, syscall_ip: u64) -> Result<Self> {
        let saved_regs = ptrace::get_regs(tid)?;
        let saved_mask = ptrace::get_sigmask(tid)?;
        ptrace::set_sigmask(tid, !0u64)?;
        Ok(Injector {
            tid,
            ip: syscall_ip,
            saved_regs,
            saved_mask,
            mem: ProcMem::open(tid)?,
            count: 0,
            deferred: Vec::new(),
        })
    }

    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Registers and signal mask the thread had when the injector was made.
    pub fn saved_regs(&self) -> &Regs {
        &self.saved_regs
    }
    pub fn saved_mask(&self) -> u64 {
        self.saved_mask
    }

    /// Use another `syscall` instruction from now on (e.g. a trampoline).
    pub fn set_syscall_ip(&mut self, ip: u64) {
        self.ip = ip;
    }
    pub fn syscall_ip(&self) -> u64 {
        self.ip
    }

    /// Number of system calls injected so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The target's memory, through /proc/TID/mem (ignores page protections).
    pub fn mem(&self) -> &ProcMem {
        &self.mem
    }

    /// Run one system call; returns the raw result (negative errno on failure).
    pub fn syscall_raw(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        let mut r = self.saved_regs;
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        r[reg::RIP] = self.ip;
        r[reg::RAX] = nr as u64;
        r[reg::ORIG_RAX] = u64::MAX;
        r[reg::RDI] = arg(0);
        r[reg::RSI] = arg(1);
        r[reg::RDX] = arg(2);
        r[reg::R10] = arg(3);
        r[reg::R8] = arg(4);
        r[reg::R9] = arg(5);
        ptrace::set_regs(self.tid, &r)?;
        ptrace::singlestep(self.tid)?;
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Signal(libc::SIGTRAP) => break,
                Stop::Signal(_) => {
                    // A signal we could not block was dequeued before or after
                    // the instruction: keep it, and finish the single step if
                    // the syscall did not run yet.
                    self.deferred.push(ptrace::get_siginfo(self.tid)?);
                    let now = ptrace::get_regs(self.tid)?;
                    if now[reg::RIP] == self.ip {
                        ptrace::singlestep(self.tid)?;
                    } else {
                        break;
                    }
                }
                Stop::Event { event, .. } if event == ptrace::PTRACE_EVENT_STOP => {
                    // A late group/interrupt stop: step again.
                    ptrace::singlestep(self.tid)?;
                }
                Stop::Event { .. } => {
                    // e.g. PTRACE_EVENT_CLONE when we injected a clone: the
                    // syscall has run; the trap follows.
                    ptrace::singlestep(self.tid)?;
                }
                Stop::Exited(c) => {
                    return Err(Error::Gone {
                        tid: self.tid,
                        how: format!("exit status {c} during injected syscall {nr}"),
                    })
                }
                Stop::Killed(s) => {
                    return Err(Error::Gone {
                        tid: self.tid,
                        how: format!("killed by signal {s} during injected syscall {nr}"),
                    })
                }
            }
        }
        self.count += 1;
        Ok(ptrace::get_regs(self.tid)?[reg::RAX] as i64)
    }

    /// Run one system call; a failure becomes [`Error::Injected`] naming it.
    pub fn syscall(&mut self, name: &str, nr: i64, args: &[u64]) -> Result<u64> {
        let r = self.syscall_raw(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::Injected {
                name: name.to_string(),
                tid: self.tid,
                source: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r as u64)
    }

    /// Put back the registers and signal mask the thread had at `new`.
    pub fn finish(self) -> Result<Vec<[u8; ptrace::SIGINFO_SIZE]>> {
        ptrace::set_regs(self.tid, &self.saved_regs)?;
        ptrace::set_sigmask(self.tid, self.saved_mask)?;
        Ok(self.deferred)
    }
}
