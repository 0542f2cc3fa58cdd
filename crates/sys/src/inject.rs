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

/// Code that runs a table of system calls in one go ([`Injector::batch`]):
/// with r15 at the table of 64-byte entries (number, six arguments,
/// result; number -1 ends it), each call's result is stored in its entry,
/// then the thread stops on `int3`. (mov rax,\[r15\]; cmp rax,-1; je done;
/// mov rdi/rsi/rdx/r10/r8/r9,[r15+8..48]; syscall; mov [r15+56],rax;
/// add r15,64; jmp start; done: int3)
pub const BATCH_CODE: [u8; 46] = [
    0x49, 0x8b, 0x07, 0x48, 0x83, 0xf8, 0xff, 0x74, 0x24, 0x49, 0x8b, 0x7f, 0x08, 0x49, 0x8b, 0x77,
    0x10, 0x49, 0x8b, 0x57, 0x18, 0x4d, 0x8b, 0x57, 0x20, 0x4d, 0x8b, 0x47, 0x28, 0x4d, 0x8b, 0x4f,
    0x30, 0x0f, 0x05, 0x49, 0x89, 0x47, 0x38, 0x49, 0x83, 0xc7, 0x40, 0xeb, 0xd3, 0xcc,
];

/// Bytes [`Injector::batch`] needs at its address for `n` calls: the code,
/// then the table.
pub fn batch_len(n: usize) -> u64 {
    64 + 64 * (n as u64 + 1)
}

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

    /// Run `calls` (number, arguments) one after the other in one stop of
    /// the thread, and return their raw results (negative errno on
    /// failure). `at` is where the code and the table go: [`batch_len`]
    /// bytes of memory the thread may execute and write (the results are
    /// stored in the table). The calls must not block; each runs whatever
    /// the others returned. A fault while it runs is an error.
    pub fn batch(&mut self, at: u64, calls: &[(i64, [u64; 6])]) -> Result<Vec<i64>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut buf = Vec::with_capacity(batch_len(calls.len()) as usize);
        buf.extend_from_slice(&BATCH_CODE);
        buf.resize(64, 0xcc);
        for (nr, args) in calls {
            buf.extend_from_slice(&nr.to_ne_bytes());
            for a in args {
                buf.extend_from_slice(&a.to_ne_bytes());
            }
            buf.extend_from_slice(&[0u8; 8]);
        }
        buf.extend_from_slice(&(-1i64).to_ne_bytes());
        buf.resize(batch_len(calls.len()) as usize, 0);
        self.mem.write(at, &buf)?;
        let mut r = self.saved_regs;
        r[reg::RIP] = at;
        r[reg::R15] = at + 64;
        r[reg::ORIG_RAX] = u64::MAX;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::cont(self.tid, 0)?;
        let end = at + BATCH_CODE.len() as u64;
        for stops in 0.. {
            if stops > 1000 {
                return Err(Error::Unexpected {
                    tid: self.tid,
                    what: "injected system calls: the thread keeps stopping".into(),
                });
            }
            match ptrace::wait(self.tid)? {
                Stop::Signal(libc::SIGTRAP) if ptrace::get_regs(self.tid)?[reg::RIP] == end => {
                    break
                }
                Stop::Signal(
                    sig @ (libc::SIGSEGV
                    | libc::SIGBUS
                    | libc::SIGILL
                    | libc::SIGFPE
                    | libc::SIGTRAP),
                ) => {
                    let rip = ptrace::get_regs(self.tid)?[reg::RIP];
                    return Err(Error::Unexpected {
                        tid: self.tid,
                        what: format!(
                            "injected system calls: signal {sig} at {rip:#x} (code at {at:#x})"
                        ),
                    });
                }
                Stop::Signal(_) => {
                    // A signal we could not block: keep it for later.
                    self.deferred.push(ptrace::get_siginfo(self.tid)?);
                    ptrace::cont(self.tid, 0)?;
                }
                Stop::Event { .. } => ptrace::cont(self.tid, 0)?,
                Stop::Exited(c) => {
                    return Err(Error::Gone {
                        tid: self.tid,
                        how: format!("exit status {c} during injected system calls"),
                    })
                }
                Stop::Killed(s) => {
                    return Err(Error::Gone {
                        tid: self.tid,
                        how: format!("killed by signal {s} during injected system calls"),
                    })
                }
            }
        }
        let table = self.mem.read_vec(at + 64, 64 * calls.len())?;
        self.count += calls.len() as u64;
        Ok(table
            .chunks_exact(64)
            .map(|e| i64::from_ne_bytes(e[56..64].try_into().expect("8 bytes")))
            .collect())
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
