//! Threads: the other threads are created at their saved tids (clone3
//! set_tid) and each gets its kernel state (tid address, robust list, rseq,
//! alternate stack, name, scheduling), then its registers (with the
//! syscall-restart fixup, planned here, pure), FPU state and signal mask,
//! and every thread is let go.

use super::signals::{first_handler, set_altstack};
use crate::error::{Error, Result, SysContext};
use crate::mem::layout::Layout;
use crate::remote::{u64s, Remote};
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

/// Fit a saved XSAVE area to the size this kernel's regset has: pad with
/// zeros (components the image lacks are in their init state) or cut bytes
/// past the end (check() made sure the image uses no component we lack).
pub fn fit_xsave(saved: &[u8], size: usize) -> Vec<u8> {
    let mut v = saved.to_vec();
    v.resize(size, 0);
    v
}

/// The stub inherited the restorer's rseq registration: the kernel would
/// write into memory about to be unmapped.
pub(crate) fn unregister_stub_rseq(main: &mut Remote) -> Result<()> {
    let pid = main.tid;
    let rseq = ckpt_sys::rseq::get_rseq(pid).ctx(|| format!("pid {pid}: reading rseq"))?;
    if rseq.address != 0 {
        main.call(
            "rseq(unregister)",
            libc::SYS_rseq,
            &[
                rseq.address,
                u64::from(rseq.length),
                RSEQ_FLAG_UNREGISTER,
                u64::from(rseq.signature),
            ],
        )?;
    }
    Ok(())
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
                source: std::io::Error::from_raw_os_error(-r as i32),
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
    r.call(
        "set_tid_address",
        libc::SYS_set_tid_address,
        &[t.clear_child_tid],
    )?;
    let len = if t.robust_list.len != 0 {
        t.robust_list.len
    } else {
        24
    };
    r.call(
        "set_robust_list",
        libc::SYS_set_robust_list,
        &[t.robust_list.head, len],
    )?;
    if t.rseq.address != 0 {
        r.call(
            "rseq",
            libc::SYS_rseq,
            &[
                t.rseq.address,
                u64::from(t.rseq.length),
                0,
                u64::from(t.rseq.signature),
            ],
        )?;
    }
    set_altstack(r, t, scratch)?;
    let comm = if t.comm.is_empty() { &p.comm } else { &t.comm };
    if !comm.is_empty() {
        let mut c = comm.clone();
        c.truncate(15);
        r.write_cstr(scratch, &c)?;
        r.call(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, scratch],
        )?;
    }
    set_sched(r.tid, t)
}

/// Scheduling, from outside, where it differs.
fn set_sched(tid: i32, t: &Thread) -> Result<()> {
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
        ptrace::detach(tid, 0).ctx(|| format!("thread {tid}: detaching"))?;
    }
    Ok(())
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
