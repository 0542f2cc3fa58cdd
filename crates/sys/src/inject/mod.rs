//! Running system calls inside a stopped thread.
//!
//! The thread must be in a ptrace stop. Its registers are loaded with the
//! call's number and arguments, it executes one `syscall` instruction of
//! its own address space, and the result is read back. `orig_rax = -1`
//! keeps the kernel from applying syscall-restart fixups meant for the
//! call the thread was interrupted in. While injecting, every blockable
//! signal is blocked (PTRACE_SETSIGMASK) so that no handler runs in the
//! middle; the original mask and registers come back with
//! [`Injector::finish`].
//!
//! Three ways to make the thread execute the call:
//!
//! - [`Injector::new`]: PTRACE_SINGLESTEP over a `syscall` instruction (in
//!   the vdso, or a trampoline the caller mapped). One stop per call. If
//!   the tracer dies meanwhile, the thread runs on with foreign registers
//!   (and the single-step flag set): the caller sets PTRACE_O_EXITKILL.
//!   Restore uses it, on a process that is not yet anyone's.
//! - [`Injector::new_safe`]: for a process that must survive its tracer's
//!   death. The call is made at a system call entry stop (PTRACE_SYSCALL)
//!   of an `rt_sigreturn` sequence of the process (libc's signal
//!   restorer), and returns to it, with the stack pointer at a signal
//!   frame holding the thread's own state ([`frame`]): at any instant, a
//!   vanished tracer leaves a thread that completes the call it is in,
//!   then returns through `rt_sigreturn` to exactly where it was. Two
//!   stops per call. The caller must have seized the thread with
//!   PTRACE_O_TRACESYSGOOD.
//! - [`Injector::new_stops`]: the same stops over a `syscall` instruction,
//!   without the frame (when the process has no `rt_sigreturn` sequence):
//!   no single-step flag is left behind, but a vanished tracer leaves
//!   foreign registers, as with `new`.

pub mod frame;

use crate::mm::ProcMem;
use crate::ptrace::{self, reg, Regs, Stop};
use crate::{Error, Pid, Result};

/// The bytes of `syscall; int3`, for a trampoline page.
pub const TRAMPOLINE_CODE: [u8; 3] = [0x0f, 0x05, 0xcc];

/// Code that runs a table of system calls in one stop of the thread
/// ([`Injector::batch`], [`Injector::syscall_batch`]). With r15 at the
/// table of 64-byte entries `[number, a0..a5, result]` (a negative number
/// ends it), each call's result is stored in its entry, then the thread
/// stops on `int3`. The result word holds a flag before the call: 0 goes
/// on whatever the call returned; not 0 stops after a failing call
/// (-4095..-1).
///
/// ```text
/// 0:  mov rax,[r15]; test rax,rax; js end
/// 8:  mov rdi/rsi/rdx/r10/r8/r9,[r15+8..48]; mov r12,[r15+56]
/// 36: syscall; mov [r15+56],rax; add r15,64
/// 46: test r12,r12; jz 0; cmp rax,-4095; jb 0
/// 59: end: int3
/// ```
pub const BATCH_CODE: [u8; 60] = [
    0x49, 0x8b, 0x07, 0x48, 0x85, 0xc0, 0x78, 0x33, 0x49, 0x8b, 0x7f, 0x08, 0x49, 0x8b, 0x77, 0x10,
    0x49, 0x8b, 0x57, 0x18, 0x4d, 0x8b, 0x57, 0x20, 0x4d, 0x8b, 0x47, 0x28, 0x4d, 0x8b, 0x4f, 0x30,
    0x4d, 0x8b, 0x67, 0x38, 0x0f, 0x05, 0x49, 0x89, 0x47, 0x38, 0x49, 0x83, 0xc7, 0x40, 0x4d, 0x85,
    0xe4, 0x74, 0xcd, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x72, 0xc5, 0xcc,
];

/// Bytes of one entry of a batch table.
pub const BATCH_ENTRY: usize = 64;

/// Where the batch code loops back after each call: the instruction
/// after its `syscall` (see [`BATCH_CODE`]).
const BATCH_AFTER_SYSCALL: u64 = 38;
/// Where [`BATCH_CODE`] ends (its `int3`).
const BATCH_END: usize = 59;
/// `mov $15, %eax; syscall`: rt_sigreturn.
const SIGRETURN_TAIL: [u8; 7] = [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
/// Bytes of code (and the signal set) before the table of a safe batch.
const SAFE_BATCH_CODE_ROOM: u64 = 128;
/// Offset of the signal set a safe batch unblocks, in its code room.
const SAFE_BATCH_SIGSET: usize = 120;
/// Calls a safe batch adds to the caller's: tkill and rt_sigprocmask.
const SAFE_BATCH_EXTRA: usize = 2;

/// Bytes [`Injector::safe_batch_start`] needs at its address for `n`
/// calls: the code, then the table.
pub fn safe_batch_len(n: usize) -> u64 {
    SAFE_BATCH_CODE_ROOM + BATCH_ENTRY as u64 * (n + SAFE_BATCH_EXTRA + 1) as u64
}

/// The code of a safe batch: [`BATCH_CODE`], ending in rt_sigreturn
/// instead of `int3`.
fn safe_batch_code() -> Vec<u8> {
    let mut c = BATCH_CODE[..BATCH_END].to_vec();
    c.extend_from_slice(&SIGRETURN_TAIL);
    c
}

/// Bytes [`Injector::batch`] needs at its address for `n` calls: the code
/// (padded to 64 bytes), then the table.
pub fn batch_len(n: usize) -> u64 {
    64 + BATCH_ENTRY as u64 * (n as u64 + 1)
}

/// One call of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCall {
    pub nr: i64,
    pub args: [u64; 6],
    /// A failure does not stop the batch (the caller looks at the result).
    pub may_fail: bool,
}

/// The table of `calls` (and its end), each entry's flag word `stop` or 0.
fn batch_table(calls: impl Iterator<Item = (i64, [u64; 6], bool)>, out: &mut Vec<u8>) {
    for (nr, args, stop) in calls {
        out.extend_from_slice(&nr.to_ne_bytes());
        for a in args {
            out.extend_from_slice(&a.to_ne_bytes());
        }
        out.extend_from_slice(&u64::from(stop).to_ne_bytes());
    }
    out.extend_from_slice(&(-1i64).to_ne_bytes());
    out.resize(out.len() + BATCH_ENTRY - 8, 0);
}

/// Offset of the first `syscall` instruction (0f 05) in `code`.
pub fn find_syscall_insn(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

/// How the injected calls are executed (see the module doc).
enum Mode {
    Step,
    Stops,
    Safe(Safe),
}

/// The frame of a [`Mode::Safe`] injector.
struct Safe {
    layout: frame::Layout,
    /// What the frame's region held before (put back at finish).
    saved_bytes: Vec<u8>,
}

pub struct Injector {
    tid: Pid,
    ip: u64,
    saved_regs: Regs,
    saved_mask: u64,
    mem: ProcMem,
    count: u64,
    mode: Mode,
    /// In a system call entry stop (modes Stops and Safe): the stops
    /// alternate between entry and exit.
    at_entry: bool,
    /// Signals that got dequeued for delivery while we were injecting
    /// (only unblockable ones can): raw siginfos, to be re-queued or saved.
    pub deferred: Vec<[u8; ptrace::SIGINFO_SIZE]>,
    /// A safe batch started and not waited for yet: its address, number
    /// of calls and signal (see [`Injector::safe_batch_start`]).
    batch: Option<(u64, usize, i32)>,
    /// [`Injector::finish_start`] started the thread to its exit stop.
    finishing: bool,
    /// [`Injector::finish_start_calling`] made a call on the way out.
    last_call: bool,
}

impl Injector {
    /// Prepare to inject into `tid` (already in a ptrace stop), executing
    /// system calls at `syscall_ip`, the address of a `syscall` instruction,
    /// by single steps.
    pub fn new(tid: Pid, syscall_ip: u64) -> Result<Self> {
        Self::with_mode(tid, syscall_ip, Mode::Step)
    }

    /// Like [`Injector::new`], with system call stops instead of single
    /// steps (the thread must have been seized with PTRACE_O_TRACESYSGOOD).
    pub fn new_stops(tid: Pid, syscall_ip: u64) -> Result<Self> {
        Self::with_mode(tid, syscall_ip, Mode::Stops)
    }

    /// From now on, run each call by system call stops instead of single
    /// steps (the thread must have been seized with
    /// PTRACE_O_TRACESYSGOOD): no trap signal is forced on the thread,
    /// which would unblock a SIGTRAP queued for it, reset its handler to
    /// the default and have it dequeued. No effect on a [`Mode::Safe`]
    /// injector (it uses system call stops already).
    pub fn use_syscall_stops(&mut self) {
        if matches!(self.mode, Mode::Step) {
            self.mode = Mode::Stops;
        }
    }

    fn with_mode(tid: Pid, syscall_ip: u64, mode: Mode) -> Result<Self> {
        let saved_regs = ptrace::get_regs(tid)?;
        let saved_mask = ptrace::get_sigmask(tid)?;
        let mem = ProcMem::open(tid)?;
        ptrace::set_sigmask(tid, !0u64)?;
        Ok(Injector {
            tid,
            ip: syscall_ip,
            saved_regs,
            saved_mask,
            mem,
            count: 0,
            mode,
            at_entry: false,
            deferred: Vec::new(),
            batch: None,
            finishing: false,
            last_call: false,
        })
    }

    /// Prepare to inject into `tid` (in a ptrace stop, seized with
    /// PTRACE_O_TRACESYSGOOD) so that the thread survives our death at
    /// any instant: `sigreturn_ip` is the address of an `rt_sigreturn`
    /// sequence in its address space ([`frame::find_sigreturn`]), and the
    /// frame goes on its stack below the red zone, in a region
    /// ([`frame::region`]) that `fits` must accept (mapped and writable;
    /// what it holds is put back at [`Injector::finish`]). `Ok(None)` when
    /// it does not fit: nothing was changed.
    pub fn new_safe(
        tid: Pid,
        sigreturn_ip: u64,
        fits: &dyn Fn(u64, u64) -> bool,
    ) -> Result<Option<Self>> {
        let Some(mut inj) = Self::new_safe_start(tid, sigreturn_ip, fits)? else {
            return Ok(None);
        };
        match inj.started() {
            Ok(()) => Ok(Some(inj)),
            Err(e) => {
                let _ = inj.finish();
                Err(e)
            }
        }
    }

    /// [`Injector::new_safe`] in two steps, so that a tracer can have
    /// several threads get ready at once: this one starts the thread to
    /// the rt_sigreturn; [`Injector::started`] waits for it there (after
    /// its error, only [`Injector::finish`]).
    pub fn new_safe_start(
        tid: Pid,
        sigreturn_ip: u64,
        fits: &dyn Fn(u64, u64) -> bool,
    ) -> Result<Option<Self>> {
        let saved_regs = ptrace::get_regs(tid)?;
        let saved_mask = ptrace::get_sigmask(tid)?;
        let xstate = ptrace::get_xstate(tid)?;
        let layout = frame::Layout::new(saved_regs[reg::RSP], xstate.len());
        if layout.scratch >= layout.end || !fits(layout.scratch, layout.end) {
            return Ok(None);
        }
        let mem = ProcMem::open(tid)?;
        let len = (layout.end - layout.scratch) as usize;
        let Ok(saved_bytes) = mem.read_vec(layout.scratch, len) else {
            return Ok(None);
        };
        mem.write(
            layout.scratch,
            &frame::build(&layout, &saved_regs, saved_mask, &xstate),
        )?;
        let inj = Injector {
            tid,
            ip: sigreturn_ip,
            saved_regs,
            saved_mask,
            mem,
            count: 0,
            mode: Mode::Safe(Safe {
                layout,
                saved_bytes,
            }),
            at_entry: false,
            deferred: Vec::new(),
            batch: None,
            finishing: false,
            last_call: false,
        };
        // From here on, our death sends the thread through rt_sigreturn.
        let started = (|| {
            ptrace::set_sigmask(tid, !0u64)?;
            let mut r = saved_regs;
            r[reg::RIP] = sigreturn_ip;
            r[reg::RSP] = layout.sigreturn_sp();
            r[reg::ORIG_RAX] = u64::MAX;
            ptrace::set_regs(tid, &r)?;
            // To the entry stop of the rt_sigreturn: each call replaces it.
            ptrace::syscall_resume(tid)
        })();
        match started {
            Ok(()) => Ok(Some(inj)),
            Err(e) => {
                let _ = inj.finish();
                Err(e)
            }
        }
    }

    /// See [`Injector::new_safe_start`].
    pub fn started(&mut self) -> Result<()> {
        self.wait_syscall_stop(-1)
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
    /// Not for an injector made with [`Injector::new_safe`].
    pub fn set_syscall_ip(&mut self, ip: u64) {
        if !matches!(self.mode, Mode::Safe(_)) {
            self.ip = ip;
        }
    }
    pub fn syscall_ip(&self) -> u64 {
        self.ip
    }

    /// With [`Injector::new_safe`]: the address of [`frame::SCRATCH_LEN`]
    /// bytes of the thread's stack, below the frame, for the calls'
    /// arguments and results.
    pub fn scratch(&self) -> Option<u64> {
        match &self.mode {
            Mode::Safe(s) => Some(s.layout.scratch),
            _ => None,
        }
    }

    /// Number of system calls injected so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The target's memory, through /proc/TID/mem (ignores page protections).
    pub fn mem(&self) -> &ProcMem {
        &self.mem
    }

    /// The registers of one call: number and arguments.
    fn call_regs(&self, nr: i64, args: &[u64]) -> Regs {
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
        r
    }

    /// Run one system call; returns the raw result (negative errno on failure).
    pub fn syscall_raw(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        let r = match &self.mode {
            Mode::Step => self.step_call(nr, args)?,
            Mode::Stops => {
                ptrace::set_regs(self.tid, &self.call_regs(nr, args))?;
                self.run_to_syscall_stop(nr)?; // entry
                self.run_to_syscall_stop(nr)?; // exit
                ptrace::get_regs(self.tid)?[reg::RAX] as i64
            }
            Mode::Safe(_) => {
                self.call_start(nr, args)?;
                let rax = self.call_result(nr)?;
                self.call_end(nr)?;
                return Ok(rax);
            }
        };
        self.count += 1;
        Ok(r)
    }

    /// A call of a safe injector ([`Injector::new_safe`]) in three steps,
    /// so that a tracer can have calls run in several threads at once
    /// (each step of each thread before the next step of any): start the
    /// call (the thread runs it); [`Injector::call_result`] waits for it
    /// to end and starts the thread back to the rt_sigreturn;
    /// [`Injector::call_end`] waits for it there. After an error of any
    /// step, only [`Injector::finish`].
    pub fn call_start(&mut self, nr: i64, args: &[u64]) -> Result<()> {
        let Mode::Safe(s) = &self.mode else {
            return Err(Error::Unexpected {
                tid: self.tid,
                what: "a call in steps through an injector that is not safe".into(),
            });
        };
        // At the entry stop of the rt_sigreturn: make it this call,
        // returning to the rt_sigreturn again.
        let mut r = self.call_regs(nr, args);
        r[reg::RSP] = s.layout.sigreturn_sp();
        r[reg::ORIG_RAX] = nr as u64;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::syscall_resume(self.tid)
    }

    /// See [`Injector::call_start`]: the call's raw result (negative
    /// errno on failure).
    pub fn call_result(&mut self, nr: i64) -> Result<i64> {
        self.wait_syscall_stop(nr)?; // exit of the call
        let rax = ptrace::get_regs(self.tid)?[reg::RAX] as i64;
        ptrace::syscall_resume(self.tid)?;
        Ok(rax)
    }

    /// See [`Injector::call_start`].
    pub fn call_end(&mut self, nr: i64) -> Result<()> {
        self.wait_syscall_stop(nr)?; // entry of the rt_sigreturn
        self.count += 1;
        Ok(())
    }

    /// Run `calls` (number, arguments) in one go through a safe injector
    /// ([`Injector::new_safe`]) standing at its rt_sigreturn entry stop
    /// (as after [`Injector::call_end`]), in three steps like a call (so
    /// that a tracer can have batches run in several threads at once):
    /// start it; [`Injector::safe_batch_result`] waits for its end and
    /// starts the thread back to the rt_sigreturn;
    /// [`Injector::safe_batch_end`] waits for it there.
    ///
    /// `at` is [`safe_batch_len`] bytes of memory the thread may execute
    /// and write (mapped for the batch by the caller; the calls' output
    /// places may be there too). The thread runs [`BATCH_CODE`] over the
    /// table, with PTRACE_CONT: no stop per call. After the calls it sends
    /// itself `sig` (tkill) and unblocks it (rt_sigprocmask), and stops on
    /// its delivery. `sig` must be a signal the thread neither catches nor
    /// blocks nor has pending, whose default action is to ignore it
    /// (SIGURG, SIGWINCH, SIGCHLD), and the thread must have no seccomp
    /// filter: should the tracer vanish at any instant, the thread ends
    /// the calls, the signal is dropped at its delivery, and the code ends
    /// in the rt_sigreturn of the frame, back where the thread was (the
    /// memory at `at` stays the caller's mapping).
    pub fn safe_batch_start(&mut self, at: u64, calls: &[(i64, [u64; 6])], sig: i32) -> Result<()> {
        let Mode::Safe(s) = &self.mode else {
            return Err(Error::Unexpected {
                tid: self.tid,
                what: "a safe batch through an injector that is not safe".into(),
            });
        };
        if !self.at_entry || self.batch.is_some() || !(1..=64).contains(&sig) {
            return Err(Error::Unexpected {
                tid: self.tid,
                what: "a safe batch started out of turn".into(),
            });
        }
        let sp = s.layout.sigreturn_sp();
        let mut buf = safe_batch_code();
        buf.resize(SAFE_BATCH_CODE_ROOM as usize, 0xcc);
        let set = 1u64 << (sig - 1);
        buf[SAFE_BATCH_SIGSET..SAFE_BATCH_SIGSET + 8].copy_from_slice(&set.to_ne_bytes());
        let sigset = at + SAFE_BATCH_SIGSET as u64;
        let tail = [
            (libc::SYS_tkill, [self.tid as u64, sig as u64, 0, 0, 0, 0]),
            (
                libc::SYS_rt_sigprocmask,
                [libc::SIG_UNBLOCK as u64, sigset, 0, 8, 0, 0],
            ),
        ];
        let table = calls.iter().chain(&tail).map(|&(nr, a)| (nr, a, false));
        batch_table(table, &mut buf);
        self.mem.write(at, &buf)?;
        // At the rt_sigreturn's entry stop: skip it (orig_rax -1), and go
        // on in the code, the stack pointer at the frame.
        let mut r = self.saved_regs;
        r[reg::RIP] = at;
        r[reg::R15] = at + SAFE_BATCH_CODE_ROOM;
        r[reg::RSP] = sp;
        r[reg::ORIG_RAX] = u64::MAX;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::cont(self.tid, 0)?;
        self.at_entry = false;
        self.batch = Some((at, calls.len(), sig));
        Ok(())
    }

    /// See [`Injector::safe_batch_start`]: the raw results of its calls
    /// (negative errno on failure). A thread that faults in the batch is
    /// left in that stop (only [`Injector::finish`] then).
    pub fn safe_batch_result(&mut self) -> Result<Vec<i64>> {
        let Some((at, n, sig)) = self.batch.take() else {
            return Err(Error::Unexpected {
                tid: self.tid,
                what: "no safe batch to wait for".into(),
            });
        };
        let end = at + BATCH_AFTER_SYSCALL;
        self.wait_batch_signal(sig, end)?;
        let table = self
            .mem
            .read_vec(at + SAFE_BATCH_CODE_ROOM, BATCH_ENTRY * n)?;
        // Back to the rt_sigreturn's entry stop, every signal blocked
        // again (the one of the batch was let through).
        ptrace::set_sigmask(self.tid, !0u64)?;
        let mut r = self.saved_regs;
        if let Mode::Safe(s) = &self.mode {
            r[reg::RSP] = s.layout.sigreturn_sp();
        }
        r[reg::RIP] = self.ip;
        r[reg::ORIG_RAX] = u64::MAX;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::syscall_resume(self.tid)?;
        self.count += n as u64;
        Ok(table
            .chunks_exact(BATCH_ENTRY)
            .map(|e| i64::from_ne_bytes(e[56..64].try_into().expect("8 bytes")))
            .collect())
    }

    /// See [`Injector::safe_batch_start`].
    pub fn safe_batch_end(&mut self) -> Result<()> {
        self.wait_syscall_stop(-1) // entry of the rt_sigreturn
    }

    /// Wait for the stop on the delivery of `sig` at `end` that ends a
    /// safe batch; other signals are held back (kept in `deferred`).
    fn wait_batch_signal(&mut self, sig: i32, end: u64) -> Result<()> {
        for _ in 0..1000 {
            match ptrace::wait(self.tid)? {
                Stop::Signal(s) if s == sig => {
                    let rip = ptrace::get_regs(self.tid)?[reg::RIP];
                    if rip == end {
                        return Ok(());
                    }
                    return Err(Error::Unexpected {
                        tid: self.tid,
                        what: format!(
                            "injected system calls: signal {s} at {rip:#x}, not at {end:#x}"
                        ),
                    });
                }
                Stop::Signal(
                    s
                    @ (libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP),
                ) => {
                    let rip = ptrace::get_regs(self.tid)?[reg::RIP];
                    return Err(Error::Unexpected {
                        tid: self.tid,
                        what: format!("injected system calls: signal {s} at {rip:#x}"),
                    });
                }
                Stop::Signal(_) => {
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
        Err(Error::Unexpected {
            tid: self.tid,
            what: "injected system calls: the thread keeps stopping".into(),
        })
    }

    /// PTRACE_SYSCALL until the next system call stop. Signals dequeued on
    /// the way are held back (kept in `deferred`); other stops are passed.
    fn run_to_syscall_stop(&mut self, nr: i64) -> Result<()> {
        ptrace::syscall_resume(self.tid)?;
        self.wait_syscall_stop(nr)
    }

    /// Wait for the next system call stop of the resumed thread (see
    /// [`Injector::run_to_syscall_stop`]).
    fn wait_syscall_stop(&mut self, nr: i64) -> Result<()> {
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Signal(ptrace::SYSCALL_STOP) => {
                    self.at_entry = !self.at_entry;
                    return Ok(());
                }
                Stop::Signal(_) => {
                    self.deferred.push(ptrace::get_siginfo(self.tid)?);
                    ptrace::syscall_resume(self.tid)?;
                }
                Stop::Event { .. } => ptrace::syscall_resume(self.tid)?,
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
    }

    /// One call by a single step over the `syscall` instruction.
    fn step_call(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        ptrace::set_regs(self.tid, &self.call_regs(nr, args))?;
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
        Ok(ptrace::get_regs(self.tid)?[reg::RAX] as i64)
    }

    /// Run `calls` (number, arguments) one after the other in one stop of
    /// the thread, and return their raw results (negative errno on
    /// failure). `at` is where the code and the table go: [`batch_len`]
    /// bytes of memory the thread may execute and write (the results are
    /// stored in the table). The calls must not block; each runs whatever
    /// the others returned. A fault while it runs is an error.
    ///
    /// Not for an injector made with [`Injector::new_safe`]: the thread
    /// would run code of ours, which a vanished tracer leaves it in (and
    /// its stack is not executable); use [`Injector::syscall_raw`] there.
    pub fn batch(&mut self, at: u64, calls: &[(i64, [u64; 6])]) -> Result<Vec<i64>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(self.mode, Mode::Safe(_)) {
            return Err(Error::Unexpected {
                tid: self.tid,
                what: "a batch of system calls through a safe injector".into(),
            });
        }
        let mut buf = Vec::with_capacity(batch_len(calls.len()) as usize);
        buf.extend_from_slice(&BATCH_CODE);
        buf.resize(64, 0xcc);
        batch_table(calls.iter().map(|&(nr, a)| (nr, a, false)), &mut buf);
        self.mem.write(at, &buf)?;
        self.run_batch(at, at + 64, calls.len())
    }

    /// Run `calls` in one go through [`BATCH_CODE`] already placed at
    /// `code` in the thread's address space (executable), with the table
    /// written at `table` (writable, `(calls.len() + 1) * BATCH_ENTRY`
    /// bytes). Returns the results of the calls made, in order: all of
    /// them, or up to and including the first failing one that may not
    /// fail (the batch stops there).
    pub fn syscall_batch(
        &mut self,
        code: u64,
        table: u64,
        calls: &[BatchCall],
    ) -> Result<Vec<i64>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(self.mode, Mode::Safe(_)) {
            return Err(Error::Unexpected {
                tid: self.tid,
                what: "a batch of system calls through a safe injector".into(),
            });
        }
        let mut t = Vec::with_capacity((calls.len() + 1) * BATCH_ENTRY);
        batch_table(calls.iter().map(|c| (c.nr, c.args, !c.may_fail)), &mut t);
        self.mem.write(table, &t)?;
        let mut out = self.run_batch(code, table, calls.len())?;
        // The calls after a failing one that may not fail did not run.
        if let Some(i) = out
            .iter()
            .zip(calls)
            .position(|(&r, c)| !c.may_fail && (-4095..0).contains(&r))
        {
            out.truncate(i + 1);
        }
        self.count -= (calls.len() - out.len()) as u64;
        Ok(out)
    }

    /// Run the batch code at `code` over the `n` calls of the table at
    /// `table` (written): the result words of the table.
    fn run_batch(&mut self, code: u64, table: u64, n: usize) -> Result<Vec<i64>> {
        let mut r = self.saved_regs;
        r[reg::RIP] = code;
        r[reg::R15] = table;
        r[reg::ORIG_RAX] = u64::MAX;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::cont(self.tid, 0)?;
        let end = code + BATCH_CODE.len() as u64;
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
                            "injected system calls: signal {sig} at {rip:#x} (code at {code:#x})"
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
        let back = self.mem.read_vec(table, BATCH_ENTRY * n)?;
        self.count += n as u64;
        Ok(back
            .chunks_exact(BATCH_ENTRY)
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

    /// The first step of [`Injector::finish`], so that a tracer can have
    /// several threads finish at once: a thread in a system call entry
    /// stop is started to the exit stop, which `finish` waits for.
    pub fn finish_start(&mut self) -> Result<()> {
        if !self.at_entry || self.finishing {
            return Ok(());
        }
        // Skip the call about to be made (the rt_sigreturn would lose
        // the restart block of an interrupted call): our registers are
        // only set at the exit stop. After new_safe, the thread still
        // returns to the rt_sigreturn should we die before then.
        let mut r = ptrace::get_regs(self.tid)?;
        r[reg::ORIG_RAX] = u64::MAX;
        if let Mode::Safe(s) = &self.mode {
            r[reg::RIP] = self.ip;
            r[reg::RSP] = s.layout.sigreturn_sp();
        }
        ptrace::set_regs(self.tid, &r)?;
        ptrace::syscall_resume(self.tid)?;
        self.finishing = true;
        Ok(())
    }

    /// [`Injector::finish_start`] of a safe injector at its rt_sigreturn
    /// entry stop, making the call `nr` (arguments `args`) on the way out
    /// instead of skipping the rt_sigreturn: a last call that costs no
    /// stop of its own. [`Injector::finish_wait`] tells its result.
    pub fn finish_start_calling(&mut self, nr: i64, args: &[u64]) -> Result<()> {
        let sp = match &self.mode {
            Mode::Safe(s) if self.at_entry && !self.finishing && self.batch.is_none() => {
                s.layout.sigreturn_sp()
            }
            _ => {
                return Err(Error::Unexpected {
                    tid: self.tid,
                    what: "a last call made out of turn".into(),
                })
            }
        };
        let mut r = self.call_regs(nr, args);
        r[reg::RSP] = sp;
        r[reg::ORIG_RAX] = nr as u64;
        ptrace::set_regs(self.tid, &r)?;
        ptrace::syscall_resume(self.tid)?;
        self.finishing = true;
        self.last_call = true;
        Ok(())
    }

    /// Wait for the exit stop [`Injector::finish_start`] (or
    /// [`Injector::finish_start_calling`]) started the thread to: the raw
    /// result of the last call, if one was made. Then [`Injector::finish`].
    pub fn finish_wait(&mut self) -> Result<Option<i64>> {
        if !self.finishing {
            return Ok(None);
        }
        self.wait_syscall_stop(-1)?;
        self.finishing = false;
        if !std::mem::take(&mut self.last_call) {
            return Ok(None);
        }
        self.count += 1;
        Ok(Some(ptrace::get_regs(self.tid)?[reg::RAX] as i64))
    }

    /// Put back the registers and signal mask the thread had at `new`
    /// (and, after [`Injector::new_safe`], the memory the frame took). The
    /// thread is left in a ptrace stop with its own registers: after
    /// `new_safe` or `new_stops`, a system call exit stop, from which it
    /// resumes as from the stop it was in (the kernel's restart of an
    /// interrupted call included).
    pub fn finish(self) -> Result<Vec<[u8; ptrace::SIGINFO_SIZE]>> {
        let mut me = self;
        if !me.finishing {
            me.finish_start()?;
        }
        if me.finishing {
            me.wait_syscall_stop(-1)?;
        }
        ptrace::set_regs(me.tid, &me.saved_regs)?;
        ptrace::set_sigmask(me.tid, me.saved_mask)?;
        if let Mode::Safe(s) = &me.mode {
            me.mem.write(s.layout.scratch, &s.saved_bytes)?;
        }
        Ok(me.deferred)
    }
}
