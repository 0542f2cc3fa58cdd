//! Threads: the other threads are created at their saved tids (clone3
//! set_tid) and each gets its kernel state (tid address, robust list, rseq,
//! alternate stack, name, scheduling), then its registers (with the
//! syscall-restart fixup, planned here, pure), FPU state and signal mask,
//! and every thread is let go.

use super::signals::{first_handler, set_altstack};
use crate::error::{Error, Result, SysContext};
use crate::mem::layout::Layout;
use crate::remote::{u64s, Allow, Batcher, Remote};
use crate::stub::holder_of;
use ckpt_image::{Process, Registers, SigAction, Thread};
use ckpt_sys::proc::sched;
use ckpt_sys::ptrace::{self, Stop};

pub const ERESTARTSYS: i64 = -512;
pub const ERESTARTNOINTR: i64 = -513;
pub const ERESTARTNOHAND: i64 = -514;
pub const ERESTART_RESTARTBLOCK: i64 = -516;

/// Indices into the 27 general registers (user_regs_struct order).
pub mod idx {
    pub const RAX: usize = 10;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
}

const SA_RESTART: u64 = 0x1000_0000;
const EINTR: i64 = -(libc::EINTR as i64);
const RSEQ_FLAG_UNREGISTER: u64 = 1;
/// The top of the scratch area is the (never used) stack of new threads.
const THREAD_STACK: u64 = 4096;
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

/// Turn the registers a thread had when it was stopped into the registers
/// to resume it with, doing what the kernel does with a system call that was
/// interrupted by the stop: restart it, or fail it with EINTR when a handler
/// runs first and the call may not be restarted across it.
///
/// ERESTART_RESTARTBLOCK re-executes the original call rather than
/// `restart_syscall`: the kernel's restart block (e.g. the remaining time of
/// a nanosleep) lives in the old task and does not survive; a fresh task's
/// restart_syscall would fail with EINTR, which programs without handlers
/// never expect. Timeouts are therefore restarted in full.
///
/// `orig_rax` is always set to -1 so that the kernel does not apply its own
/// restart logic a second time.
pub fn restart_fixup(gprs: &mut [u64; 27], handler: Option<&SigAction>) {
    let orig = gprs[idx::ORIG_RAX] as i64;
    if orig >= 0 {
        let rax = gprs[idx::RAX] as i64;
        let restart = match rax {
            ERESTARTNOINTR => true,
            ERESTARTSYS => handler.is_none_or(|h| h.flags & SA_RESTART != 0),
            ERESTARTNOHAND | ERESTART_RESTARTBLOCK => handler.is_none(),
            _ => {
                gprs[idx::ORIG_RAX] = u64::MAX;
                return;
            }
        };
        if restart {
            gprs[idx::RAX] = orig as u64;
            gprs[idx::RIP] = gprs[idx::RIP].wrapping_sub(2);
        } else {
            gprs[idx::RAX] = EINTR as u64;
        }
    }
    gprs[idx::ORIG_RAX] = u64::MAX;
}

/// The 64-bit user code and stack segment selectors (GDT entries 6 and 5,
/// RPL 3): any other code segment would fault at the first instruction.
const USER_CS: u64 = 0x33;
const USER_DS: u64 = 0x2b;
/// Offsets in an XSAVE area: MXCSR (legacy area), XSTATE_BV and XCOMP_BV
/// (header), the header's reserved bytes.
const XSAVE_MXCSR: usize = 24;
const XSAVE_HEADER: usize = 512;
const XSAVE_HEADER_END: usize = 576;
/// MXCSR bits that may be set (bit 6, DAZ, on every CPU with SSE2+).
const MXCSR_MASK: u32 = 0xffff;

/// What PTRACE_SETREGS and PTRACE_SETREGSET(NT_X86_XSTATE) would refuse in
/// a thread's saved registers, or what would kill the thread at once: a
/// code or stack segment other than the 64-bit user ones, a data segment
/// selector that is not a user one (RPL 3), an FS/GS base above the user
/// address limit `task_size`, and an XSAVE area the kernel rejects
/// (components this CPU lacks, the compacted format, reserved header
/// bytes, reserved MXCSR bits). `xcr0`: this CPU's user features.
pub(crate) fn check_registers(t: &Thread, xcr0: u64, task_size: u64, errors: &mut Vec<String>) {
    let Registers::X8664(x) = &t.regs else {
        return;
    };
    let tid = t.tid;
    let mut bad = |what: String| errors.push(format!("thread {tid}: {what}"));
    if x.cs != USER_CS {
        bad(format!(
            "its code segment {:#x} is not the 64-bit user one ({USER_CS:#x})",
            x.cs
        ));
    }
    if x.ss != USER_DS {
        bad(format!(
            "its stack segment {:#x} is not the user one ({USER_DS:#x})",
            x.ss
        ));
    }
    for (name, v) in [("ds", x.ds), ("es", x.es), ("fs", x.fs), ("gs", x.gs)] {
        if v > 0xffff || (v != 0 && v & 3 != 3) {
            bad(format!("its {name} selector {v:#x} is not a user one"));
        }
    }
    for (name, v) in [("FS", x.fs_base), ("GS", x.gs_base)] {
        if v >= task_size {
            bad(format!(
                "its {name} base {v:#x} is above the user address limit {task_size:#x}"
            ));
        }
    }
    if let Some(why) = xsave_problem(&x.xsave, xcr0) {
        bad(format!("its XSAVE area {why}"));
    }
}

/// Why the kernel would refuse this XSAVE area (after [`fit_xsave`]).
fn xsave_problem(xs: &[u8], xcr0: u64) -> Option<String> {
    if xs.is_empty() {
        return None;
    }
    let u64_at = |o: usize| {
        xs.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0)
    };
    let xstate_bv = u64_at(XSAVE_HEADER);
    if xstate_bv & !xcr0 != 0 {
        return Some(format!(
            "holds components {:#x} this CPU lacks (XSTATE_BV {xstate_bv:#x})",
            xstate_bv & !xcr0
        ));
    }
    if u64_at(XSAVE_HEADER + 8) != 0 {
        return Some("is in the compacted format (XCOMP_BV set)".into());
    }
    let end = xs.len().min(XSAVE_HEADER_END);
    if end > XSAVE_HEADER + 16 && xs[XSAVE_HEADER + 16..end].iter().any(|&b| b != 0) {
        return Some("has reserved header bytes set".into());
    }
    // MXCSR counts when FP, SSE or AVX state is present.
    if xstate_bv & 0b111 != 0 {
        let mxcsr = xs
            .get(XSAVE_MXCSR..XSAVE_MXCSR + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .unwrap_or(0);
        if mxcsr & !MXCSR_MASK != 0 {
            return Some(format!("has reserved MXCSR bits set ({mxcsr:#x})"));
        }
    }
    None
}

const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_DEADLINE: u32 = 6;
/// The I/O priority class in the top bits of an ioprio value.
const IOPRIO_CLASS_SHIFT: u32 = 13;
const IOPRIO_CLASS_RT: u32 = 1;

/// An I/O priority for messages: "realtime 4", "best-effort 6", "idle".
pub(crate) fn ioprio_name(ioprio: u32) -> String {
    let level = ioprio & ((1 << IOPRIO_CLASS_SHIFT) - 1);
    match ioprio >> IOPRIO_CLASS_SHIFT {
        0 => "none".into(),
        IOPRIO_CLASS_RT => format!("realtime {level}"),
        2 => format!("best-effort {level}"),
        3 => "idle".into(),
        c => format!("class {c} level {level}"),
    }
}

/// Scheduling that only privilege gives, for a process of uid `u` (not
/// root): a real-time priority above U's RLIMIT_RTPRIO, a nice value
/// below what U's RLIMIT_NICE allows (20 - limit), SCHED_DEADLINE, the
/// realtime I/O class. U's
/// limits: the saved hard limits, at most the restorer's (what the
/// restored process could raise itself to).
pub(crate) fn check_priorities(p: &Process, u: u32, bad: &mut dyn FnMut(String)) {
    let limit = |res: u32| {
        let saved = p
            .rlimits
            .iter()
            .find(|l| l.resource == res)
            .map(|l| l.hard)
            .unwrap_or(u64::MAX);
        let mine = ckpt_sys::proc::prlimit(0, res, None)
            .map(|(_, h)| h)
            .unwrap_or(0);
        saved.min(mine)
    };
    let (rtprio, nice) = (limit(libc::RLIMIT_RTPRIO), limit(libc::RLIMIT_NICE));
    for t in &p.threads {
        let s = &t.sched;
        let tid = t.tid;
        match s.policy {
            SCHED_FIFO | SCHED_RR if u64::from(s.priority) > rtprio => bad(format!(
                "thread {tid}: real-time priority {} ({}) is above uid {u}'s RLIMIT_RTPRIO ({rtprio})",
                s.priority,
                if s.policy == SCHED_FIFO { "SCHED_FIFO" } else { "SCHED_RR" }
            )),
            SCHED_DEADLINE => bad(format!(
                "thread {tid}: SCHED_DEADLINE needs CAP_SYS_NICE"
            )),
            _ => {}
        }
        if s.ioprio >> IOPRIO_CLASS_SHIFT == IOPRIO_CLASS_RT {
            bad(format!(
                "thread {tid}: the I/O priority {} needs CAP_SYS_NICE or CAP_SYS_ADMIN",
                ioprio_name(s.ioprio)
            ));
        }
        if s.nice < 0 && (20 - i64::from(s.nice)) as u64 > nice {
            bad(format!(
                "thread {tid}: nice {} is below what uid {u}'s RLIMIT_NICE ({nice}) allows ({})",
                s.nice,
                20 - nice.min(40) as i64
            ));
        }
    }
}

/// Fit a saved XSAVE area to the size this kernel's regset has: pad with
/// zeros (components the image lacks are in their init state) or cut bytes
/// past the end (check() made sure the image uses no component we lack).
pub fn fit_xsave(saved: &[u8], size: usize) -> Vec<u8> {
    let mut v = saved.to_vec();
    v.resize(size, 0);
    v
}

/// The stub inherited the restorer's rseq registration: the kernel would
/// write into memory about to be unmapped. The arguments of the rseq call
/// that unregisters it (made with the unmapping), if it has one.
pub(crate) fn stub_rseq(pid: i32) -> Result<Option<[u64; 4]>> {
    let rseq = ckpt_sys::rseq::get_rseq(pid).ctx(|| format!("pid {pid}: reading rseq"))?;
    Ok((rseq.address != 0).then(|| {
        [
            rseq.address,
            u64::from(rseq.length),
            RSEQ_FLAG_UNREGISTER,
            u64::from(rseq.signature),
        ]
    }))
}

/// Create the other threads (at their saved tids with `same_ids`), each
/// stopped at its first stop; `made` gets each tid as soon as it exists.
/// Returns every tid, the leader's (`main`) first.
pub(crate) fn create(
    main: &mut Remote,
    p: &Process,
    l: &Layout,
    scratch: u64,
    same_ids: bool,
    made: &mut Vec<i32>,
) -> Result<Vec<i32>> {
    let pid = main.tid;
    let stack_top = l.tramp + l.tramp_len;
    let mut tids = vec![pid];
    for t in p.threads.iter().skip(1) {
        let want = if same_ids { t.tid } else { 0 };
        let tid_at = scratch + 0x200;
        main.write(tid_at, &want.to_ne_bytes())?;
        let args = [
            CLONE_THREAD_FLAGS,
            0,
            0,
            0,
            0,
            stack_top - THREAD_STACK,
            THREAD_STACK,
            0,
            if same_ids { tid_at } else { 0 },
            u64::from(same_ids),
            0,
        ];
        main.write(scratch, &u64s(&args))?;
        let r = main.raw(
            &format!("clone3 of thread {}", t.tid),
            libc::SYS_clone3,
            &[scratch, 88],
        )?;
        if r == -(libc::EEXIST as i64) {
            let holder = holder_of(t.tid)
                .map(|h| h.0)
                .unwrap_or_else(|| "another task".into());
            return Err(Error::PidInUse { pid: t.tid, holder });
        }
        if r < 0 {
            return Err(Error::Io {
                context: format!("thread {pid}: clone3 of thread {}", t.tid),
                error: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        let tid = r as i32;
        made.push(tid);
        wait_first_stop(pid, tid)?;
        tids.push(tid);
    }
    tracing::debug!(threads = tids.len(), "threads created");
    Ok(tids)
}

/// Wait for a new thread's first stop (letting other signals through).
fn wait_first_stop(pid: i32, tid: i32) -> Result<()> {
    loop {
        match ptrace::wait(tid).ctx(|| format!("thread {tid}: waiting for its first stop"))? {
            Stop::Event { .. } | Stop::Signal(libc::SIGSTOP) => return Ok(()),
            Stop::Signal(_) => ptrace::cont(tid, 0).ctx(|| format!("thread {tid}: resuming"))?,
            other => {
                return Err(Error::Stub {
                    pid,
                    what: format!("new thread {tid} ended: {other:?}"),
                })
            }
        }
    }
}

/// Per-thread kernel state, injected in the thread itself (scheduling from
/// outside).
pub(crate) fn set_state(r: &mut Remote, p: &Process, t: &Thread, scratch: u64) -> Result<()> {
    // In one round trip where the thread runs batches.
    let mut b = r.batcher();
    push_state(r, &mut b, p, t, scratch)?;
    b.flush(r)?;
    set_sched(r.tid, t)
}

/// The calls of [`set_state`] made in the thread, into `b` (the caller
/// flushes it; [`set_sched`] is left to it too).
pub(crate) fn push_state(
    r: &mut Remote,
    b: &mut Batcher,
    p: &Process,
    t: &Thread,
    scratch: u64,
) -> Result<()> {
    b.push(
        r,
        "set_tid_address".into(),
        libc::SYS_set_tid_address,
        &[t.clear_child_tid],
        Allow::Nothing,
    )?;
    let len = if t.robust_list.len != 0 {
        t.robust_list.len
    } else {
        24
    };
    b.push(
        r,
        "set_robust_list".into(),
        libc::SYS_set_robust_list,
        &[t.robust_list.head, len],
        Allow::Nothing,
    )?;
    if t.rseq.address != 0 {
        b.push(
            r,
            "rseq".into(),
            libc::SYS_rseq,
            &[
                t.rseq.address,
                u64::from(t.rseq.length),
                0,
                u64::from(t.rseq.signature),
            ],
            Allow::Nothing,
        )?;
    }
    set_altstack(r, b, t, scratch)?;
    let comm = if t.comm.is_empty() { &p.comm } else { &t.comm };
    if !comm.is_empty() {
        let mut c = comm.clone();
        c.truncate(15);
        c.push(0);
        let at = b.data(r, &c, scratch + 0x100)?;
        b.push(
            r,
            "prctl(PR_SET_NAME)".into(),
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, at],
            Allow::Nothing,
        )?;
    }
    Ok(())
}

/// Scheduling, from outside, where it differs.
pub(crate) fn set_sched(tid: i32, t: &Thread) -> Result<()> {
    let s = &t.sched;
    if sched::sched_getscheduler(tid).ok() != Some((s.policy, s.priority)) {
        sched::sched_setscheduler(tid, s.policy, s.priority).ctx(|| {
            format!(
                "thread {tid}: sched_setscheduler({}, {})",
                s.policy, s.priority
            )
        })?;
    }
    if sched::get_nice(tid).ok() != Some(s.nice) {
        sched::set_nice(tid, s.nice).ctx(|| format!("thread {tid}: setting nice {}", s.nice))?;
    }
    // Also to none (0): a thread gets the I/O priority of the one that
    // cloned it.
    if sched::ioprio_get(tid).ok() != Some(s.ioprio) {
        sched::ioprio_set(tid, s.ioprio).ctx(|| {
            format!(
                "thread {tid}: setting the I/O priority {}",
                ioprio_name(s.ioprio)
            )
        })?;
    }
    if t.cpu_affinity.is_empty() {
        return Ok(());
    }
    let Ok(allowed) = sched::sched_getaffinity(0) else {
        return Ok(());
    };
    let want: Vec<u64> = t
        .cpu_affinity
        .iter()
        .enumerate()
        .map(|(i, w)| w & allowed.get(i).copied().unwrap_or(0))
        .collect();
    let cur = sched::sched_getaffinity(tid).unwrap_or_default();
    let trim = |v: &[u64]| -> Vec<u64> {
        let mut v = v.to_vec();
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    if want.iter().any(|&w| w != 0) && trim(&want) != trim(&cur) {
        sched::sched_setaffinity(tid, &want).ctx(|| format!("thread {tid}: sched_setaffinity"))?;
    }
    Ok(())
}

/// Registers, FPU state and signal masks of every thread (`tids`, in the
/// image's order). They run once let go ([`detach_all`]).
pub(crate) fn set_registers(pid: i32, p: &Process, tids: &[i32]) -> Result<()> {
    for (t, &tid) in p.threads.iter().zip(tids) {
        let Registers::X8664(x) = &t.regs else {
            return Err(Error::Stub {
                pid,
                what: format!("thread {}: no registers in the image", t.tid),
            });
        };
        let mut g = x.gprs();
        restart_fixup(&mut g, first_handler(p, t).as_ref());
        ptrace::set_regs(tid, &g).ctx(|| format!("thread {tid}: setting registers"))?;
        if !x.xsave.is_empty() {
            let cur =
                ptrace::get_xstate(tid).ctx(|| format!("thread {tid}: reading the XSAVE area"))?;
            ptrace::set_xstate(tid, &fit_xsave(&x.xsave, cur.len()))
                .ctx(|| format!("thread {tid}: setting the XSAVE area"))?;
        }
        ptrace::set_sigmask(tid, t.blocked)
            .ctx(|| format!("thread {tid}: setting the signal mask"))?;
    }
    Ok(())
}

/// Let every thread of a process go (`tids`, the leader first), the leader
/// last.
pub(crate) fn detach_all(tids: &[i32]) -> Result<()> {
    for &tid in tids.iter().skip(1).chain(tids.first()) {
        let sig = into_next_syscall(tid);
        ptrace::detach(tid, sig).ctx(|| format!("thread {tid}: detaching"))?;
    }
    Ok(())
}

/// A thread whose next instruction is `syscall` (a system call it was in
/// when saved, restarted) is let into it before it is let go: a signal
/// that comes right after the restore then interrupts the call, as it
/// would have interrupted the saved one, instead of running its handler
/// just before the call starts again (a program that sleeps in pause()
/// until a handler sets a flag would sleep on). The signal to detach with:
/// one that the thread met first (pending, or a stop signal), else 0.
fn into_next_syscall(tid: i32) -> i32 {
    let Ok(regs) = ptrace::get_regs(tid) else {
        return 0;
    };
    let mut insn = [0u8; 2];
    let range = [ckpt_sys::mm::RemoteRange {
        addr: regs[ptrace::reg::RIP],
        len: 2,
    }];
    if !matches!(ckpt_sys::mm::read_vm(tid, &mut insn, &range), Ok(2)) || insn != [0x0f, 0x05] {
        return 0;
    }
    if ptrace::syscall_resume(tid).is_err() {
        return 0;
    }
    match ptrace::wait(tid) {
        // At the entry of the call: detached, it goes on into it.
        Ok(Stop::Signal(ptrace::SYSCALL_STOP)) => 0,
        // A signal first (a pending one, a stop): delivered at the detach.
        Ok(Stop::Signal(sig)) => sig,
        _ => 0,
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;
    use ckpt_image::X8664Regs;

    fn thread(f: impl FnOnce(&mut X8664Regs)) -> Vec<String> {
        let mut x = X8664Regs {
            cs: USER_CS,
            ss: USER_DS,
            xsave: vec![0u8; 576],
            ..Default::default()
        };
        x.xsave[XSAVE_HEADER] = 3;
        x.xsave[XSAVE_MXCSR..XSAVE_MXCSR + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        f(&mut x);
        let t = Thread {
            tid: 7,
            regs: Registers::X8664(x),
            ..Default::default()
        };
        let mut e = Vec::new();
        check_registers(&t, 0x7, 0x7fff_ffff_f000, &mut e);
        e
    }

    #[test]
    fn registers_the_kernel_refuses() {
        assert!(thread(|_| {}).is_empty());
        assert!(thread(|x| x.cs = 0x23)[0].contains("code segment 0x23"));
        assert!(thread(|x| x.ss = 0)[0].contains("stack segment"));
        assert!(thread(|x| x.fs = 0x10)[0].contains("fs selector 0x10"));
        assert!(thread(|x| x.gs = 0x2b).is_empty());
        assert!(thread(|x| x.fs_base = 1 << 47)[0].contains("FS base"));
        assert!(thread(|x| x.xsave[XSAVE_HEADER] = 0x20)[0].contains("components 0x20"));
        assert!(thread(|x| x.xsave[XSAVE_HEADER + 15] = 0x80)[0].contains("compacted"));
        assert!(thread(|x| x.xsave[560] = 1)[0].contains("reserved header"));
        assert!(thread(|x| x.xsave[XSAVE_MXCSR + 2] = 1)[0].contains("MXCSR"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(orig: i64, rax: i64) -> [u64; 27] {
        let mut r = [0u64; 27];
        r[idx::ORIG_RAX] = orig as u64;
        r[idx::RAX] = rax as u64;
        r[idx::RIP] = 0x1002;
        r
    }

    #[test]
    fn interrupted_calls_restart_without_handlers() {
        for rax in [
            ERESTARTSYS,
            ERESTARTNOINTR,
            ERESTARTNOHAND,
            ERESTART_RESTARTBLOCK,
        ] {
            let mut r = regs(230, rax);
            restart_fixup(&mut r, None);
            assert_eq!(r[idx::RAX], 230, "rax {rax}");
            assert_eq!(r[idx::RIP], 0x1000);
            assert_eq!(r[idx::ORIG_RAX], u64::MAX);
        }
    }

    #[test]
    fn handlers_decide_between_restart_and_eintr() {
        let restart = SigAction {
            handler: 0x5000,
            flags: SA_RESTART,
            ..Default::default()
        };
        let plain = SigAction {
            handler: 0x5000,
            ..Default::default()
        };
        let cases = [
            (ERESTARTSYS, &restart, true),
            (ERESTARTSYS, &plain, false),
            (ERESTARTNOINTR, &plain, true),
            (ERESTARTNOHAND, &restart, false),
            (ERESTART_RESTARTBLOCK, &restart, false),
        ];
        for (rax, h, restarted) in cases {
            let mut r = regs(0, rax);
            restart_fixup(&mut r, Some(h));
            if restarted {
                assert_eq!((r[idx::RAX], r[idx::RIP]), (0, 0x1000), "rax {rax}");
            } else {
                assert_eq!(
                    (r[idx::RAX] as i64, r[idx::RIP]),
                    (EINTR, 0x1002),
                    "rax {rax}"
                );
            }
        }
    }

    #[test]
    fn finished_calls_and_user_code_are_left_alone() {
        let mut r = regs(0, 5);
        restart_fixup(&mut r, None);
        assert_eq!(
            (r[idx::RAX], r[idx::RIP], r[idx::ORIG_RAX]),
            (5, 0x1002, u64::MAX)
        );
        let mut r = regs(-1, ERESTARTSYS);
        restart_fixup(&mut r, None);
        assert_eq!((r[idx::RAX] as i64, r[idx::RIP]), (ERESTARTSYS, 0x1002));
    }
}
